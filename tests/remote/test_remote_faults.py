# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's client when the server goes away or goes quiet: a killed pyvirtd or libvirtd fails the
pending and the next calls with an error naming the peer and the loss, and fires the close
callback once with libvirt's reason (the same reason Debian's python3-libvirt reports for the same
kill, and for a close() of the caller's own); keepalive answered both ways."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon.testlib import Pyvirtd, rpc_conftest, short_tmpdir, start_pyvirtd

from pyvirt import _errcodes as codes
from pyvirt._constants import (
    VIR_CONNECT_CLOSE_REASON_EOF,
    VIR_CONNECT_CLOSE_REASON_ERROR,
    VIR_CONNECT_CLOSE_REASON_KEEPALIVE,
)
from pyvirt.connection import open as open_connection
from pyvirt.errors import PyvirtError
from pyvirt.rpc.client import RPCClient

from .scriptlib import SYSTEM_PYTHON, run_script


@pytest.fixture
def own_daemon() -> Iterator[Pyvirtd]:
    """A pyvirtd for one test (it gets killed), over UNIX and TCP."""
    parent = short_tmpdir("pvrk-")
    d = start_pyvirtd(parent / "r", listen=True,
                      config="keepalive_interval = 1\nkeepalive_count = 2\n")
    try:
        yield d
    finally:
        os.kill(d.proc.pid, signal.SIGCONT) if d.alive() else None
        d.stop(signal.SIGKILL)
        shutil.rmtree(parent, ignore_errors=True)


def _wait_for(items: list[Any], count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _peer(daemon: Pyvirtd, transport: str) -> str:
    return daemon.socket if transport == "unix" else f"127.0.0.1:{daemon.tcp_port}"


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_killed_pyvirtd_fails_pending_and_next_calls(own_daemon: Pyvirtd, transport: str) -> None:
    conn = open_connection(own_daemon.uri(transport))
    fired: list[Any] = []
    assert conn.registerCloseCallback(lambda c, reason, opaque: fired.append((c is conn, reason,
                                                                               opaque)), "op") == 0
    assert conn.getHostname()
    pending: list[BaseException] = []

    def call() -> None:
        try:
            conn.getHostname()
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            pending.append(exc)

    os.kill(own_daemon.proc.pid, signal.SIGSTOP)
    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.5)  # the call is sent and waits for its reply
    assert pending == [] and worker.is_alive()
    os.kill(own_daemon.proc.pid, signal.SIGKILL)
    worker.join(timeout=15)
    assert not worker.is_alive()
    peer = _peer(own_daemon, transport)
    [exc] = pending
    assert isinstance(exc, PyvirtError)
    assert exc.get_error_domain() == codes.VIR_FROM_RPC
    assert exc.get_error_code() == codes.VIR_ERR_SYSTEM_ERROR
    msg = exc.get_error_message()
    assert msg.startswith(f"virConnectGetHostname: the connection to {peer} was lost while the "
                          "call was pending ("), msg
    # the server read our call but never answered: the kernel resets the connection
    assert "Connection reset by peer" in msg or "End of file" in msg, msg

    with pytest.raises(PyvirtError) as info:
        conn.lookupByName("anything")
    assert (info.value.get_error_code(), info.value.get_error_domain()) == (
        codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_RPC)
    assert info.value.get_error_message().startswith(
        f"virDomainLookupByName: the connection to {peer} was lost earlier ("), info.value
    assert conn.isAlive() == 0
    _wait_for(fired, 1)
    time.sleep(0.5)
    assert len(fired) == 1, fired
    assert fired[0][0] is True and fired[0][2] == "op"
    assert fired[0][1] in (VIR_CONNECT_CLOSE_REASON_ERROR, VIR_CONNECT_CLOSE_REASON_EOF)
    expected = VIR_CONNECT_CLOSE_REASON_ERROR if "reset" in msg else VIR_CONNECT_CLOSE_REASON_EOF
    assert fired[0][1] == expected
    assert conn.close() == 0


def test_idle_kill_fires_eof_and_close_does_not_fire(own_daemon: Pyvirtd) -> None:
    quiet = open_connection(own_daemon.uri())
    closed_by_us: list[Any] = []
    quiet.registerCloseCallback(lambda c, reason, opaque: closed_by_us.append(reason), None)
    assert quiet.close() == 0
    assert closed_by_us == [VIR_CONNECT_CLOSE_REASON_EOF]  # before close() returned

    conn = open_connection(own_daemon.uri())
    fired: list[Any] = []
    conn.registerCloseCallback(lambda c, reason, opaque: fired.append(reason), None)
    with pytest.raises(PyvirtError) as info:
        conn.registerCloseCallback(lambda *a: None, None)
    assert info.value.get_error_code() == codes.VIR_ERR_OPERATION_INVALID
    os.kill(own_daemon.proc.pid, signal.SIGKILL)
    _wait_for(fired, 1)
    time.sleep(0.3)
    assert fired == [VIR_CONNECT_CLOSE_REASON_EOF]
    assert closed_by_us == [VIR_CONNECT_CLOSE_REASON_EOF]
    with pytest.raises(PyvirtError) as info:
        conn.getCapabilities()
    assert own_daemon.socket in info.value.get_error_message()
    assert "End of file" in info.value.get_error_message()
    conn.close()


def test_keepalive_both_ways(own_daemon: Pyvirtd) -> None:
    """The daemon pings every second and drops a client after 2 unanswered. A connection that
    listens (a close callback registered) told it we answer, and answers, so it lives while
    idle; one that makes calls only never said so, is never pinged, and lives too (as libvirt's
    client without an event loop). Our own pings (setKeepAlive) drop a server that stopped
    answering."""
    from pyvirt.remote import RemoteConnect

    conn = open_connection(own_daemon.uri())
    quiet = open_connection(own_daemon.uri())
    assert isinstance(conn, RemoteConnect) and isinstance(quiet, RemoteConnect)
    fired: list[Any] = []
    conn.registerCloseCallback(lambda c, reason, opaque: fired.append(reason), None)
    time.sleep(4.5)
    assert conn.getType() == "QEMU" and conn.getHostname()
    assert conn._rpc().rpc.pings_received >= 2
    assert quiet.getType() == "QEMU" and quiet.getHostname()
    assert quiet._rpc().rpc.pings_received == 0
    quiet.close()
    assert fired == []
    assert conn.setKeepAlive(1, 1) == 0
    os.kill(own_daemon.proc.pid, signal.SIGSTOP)
    _wait_for(fired, 1, timeout=10)
    assert fired == [VIR_CONNECT_CLOSE_REASON_KEEPALIVE]
    with pytest.raises(PyvirtError) as info:
        conn.getHostname()
    assert "keepalive" in info.value.get_error_message()
    conn.close()


# ---- the same kill, python3-libvirt and pyvirt against a real libvirtd ----------------------

_KILL = """
quiet = libvirt.open(uri)
closed_by_us = []
quiet.registerCloseCallback(lambda c, reason, opaque: closed_by_us.append([c is quiet, reason,
                                                                           opaque]), "q")
quiet.close()
fired = []
conn.registerCloseCallback(lambda c, reason, opaque: fired.append([c is conn, reason, opaque]), "op")
out = {"before": [conn.isAlive(), conn.getType()]}
os.kill(ARGS["pid"], signal.SIGKILL)
deadline = time.monotonic() + 15
while not fired and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
out["fired"] = fired
out["closed_by_us"] = closed_by_us
out["alive"] = conn.isAlive()
e = err(conn.getHostname)
out["next_call"] = e[:2] if e else None
result = out
"""


@pytest.mark.oracle
def test_close_callback_on_libvirtd_kill_same_as_python_libvirt() -> None:
    results = {}
    for client in ("libvirt", "pyvirt"):
        daemon = rpc_conftest.start_libvirtd()
        try:
            results[client] = run_script(client, daemon.uri(), _KILL, args={"pid": daemon.pid})
        finally:
            daemon.stop()
    assert results["pyvirt"] == results["libvirt"]
    assert results["pyvirt"]["fired"] == [[True, VIR_CONNECT_CLOSE_REASON_EOF, "op"]]
    assert results["pyvirt"]["closed_by_us"] == [[True, VIR_CONNECT_CLOSE_REASON_EOF, "q"]]


def test_many_threads_and_calls_from_callbacks(own_daemon: Pyvirtd) -> None:
    """One connection shared by threads; an event callback may call the API (it runs on the
    connection's callback thread, not the RPC loop)."""
    conn = open_connection(own_daemon.uri())
    seen: list[Any] = []

    def on_life(c: Any, dom: Any, event: int, detail: int, opaque: object) -> None:
        try:
            seen.append([event, c.lookupByUUID(dom.UUID()).name() if event == 0 else dom.name()])
        except PyvirtError as exc:
            seen.append([event, exc.get_error_message()])

    cb = conn.domainEventRegisterAny(None, 0, on_life, None)
    xml = ("<domain type='qemu'><name>pvrthreads</name><memory>65536</memory>"
           "<os><type arch='x86_64'>hvm</type></os></domain>")
    dom = conn.defineXML(xml)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            for _ in range(40):
                assert conn.lookupByName("pvrthreads").UUIDString() == dom.UUIDString()
                assert conn.getType() == "QEMU" and dom.state() == [5, 0]
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    dom.undefine()
    _wait_for(seen, 2)
    conn.domainEventDeregisterAny(cb)
    conn.close()
    assert errors == []
    assert seen == [[0, "pvrthreads"], [1, "pvrthreads"]]


# ---- a connection's end without close() -------------------------------------------------------

def _established(port: int) -> int:
    """TCP connections to ``port`` on this host that are still established."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def test_dropped_connection_hangs_up(own_daemon: Pyvirtd) -> None:
    """As with libvirt-python, a connection nobody refers to any more is closed: its socket and
    its threads go. One with a callback registered stays open (the callback may still fire)
    until close()."""
    port = own_daemon.tcp_port
    threads = threading.active_count()
    for _ in range(4):
        conn = open_connection(own_daemon.uri("tcp"))
        assert conn.getHostname()
    assert _established(port) >= 1
    del conn
    deadline = time.monotonic() + 10
    while (_established(port) or threading.active_count() > threads) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert _established(port) == 0
    assert threading.active_count() == threads

    fired: list[Any] = []
    conn = open_connection(own_daemon.uri("tcp"))
    conn.registerCloseCallback(lambda c, reason, opaque: fired.append(reason), None)
    del conn
    time.sleep(0.5)
    assert _established(port) == 1  # still there, and its callback fires when the server goes
    own_daemon.stop(signal.SIGKILL)
    _wait_for(fired, 1)
    assert fired == [VIR_CONNECT_CLOSE_REASON_EOF]


_UNCLOSED = """
import json, subprocess, sys
MOD, uri = sys.argv[1], sys.argv[2]
if MOD == "libvirt":
    import libvirt
else:
    import pyvirt as libvirt
conn = libvirt.open(uri)
print(json.dumps([conn.getType(), bool(conn.getHostname())]))
"""


def test_unclosed_connection_at_exit_as_python_libvirt(own_daemon: Pyvirtd) -> None:
    """A script that never closes its connection exits cleanly, with nothing on stderr, as with
    Debian's python3-libvirt; the server sees the client go."""
    port = own_daemon.tcp_port
    results = {}
    for client, python in (("libvirt", SYSTEM_PYTHON), ("pyvirt", sys.executable)):
        out = subprocess.run([python, "-c", _UNCLOSED, client, own_daemon.uri("tcp")],
                             capture_output=True, text=True, timeout=60)
        results[client] = (out.returncode, out.stdout, out.stderr)
    assert results["pyvirt"] == results["libvirt"] == (0, '["QEMU", true]\n', "")
    assert _established(port) == 0


# ---- who runs the client's loop ---------------------------------------------------------------

def test_calls_run_in_the_callers_thread_until_a_second_thread_calls(own_daemon: Pyvirtd) -> None:
    """A connection without callbacks has no thread of its own: each call runs the loop in the
    caller's thread. A second thread calling meanwhile moves the loop to a thread of its own,
    the first call included, and both calls get their own replies."""
    from pyvirt.remote import RemoteConnect

    threads = threading.active_count()
    conn = open_connection(own_daemon.uri())
    assert isinstance(conn, RemoteConnect)
    assert conn.getType() == "QEMU"
    assert threading.active_count() == threads  # no loop thread, no callback thread
    results: dict[str, Any] = {}

    def call(name: str, method: Any) -> None:
        try:
            results[name] = method()
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            results[name] = exc

    os.kill(own_daemon.proc.pid, signal.SIGSTOP)  # the first call waits for its reply...
    try:
        first = threading.Thread(target=call, args=("hostname", conn.getHostname))
        first.start()
        time.sleep(0.3)
        assert "hostname" not in results
        # ... while a second thread calls: the loop goes to the background mid-call
        second = threading.Thread(target=call, args=("domains", conn.numOfDomains))
        second.start()
        time.sleep(0.3)
        assert results == {}
    finally:
        os.kill(own_daemon.proc.pid, signal.SIGCONT)
    first.join(timeout=10)
    second.join(timeout=10)
    assert results == {"hostname": conn.getHostname(), "domains": 0}
    assert threading.active_count() == threads + 1  # the loop's thread
    assert conn.getLibVersion() > 0
    conn.close()
    assert threading.active_count() == threads


def test_call_from_inside_a_running_event_loop(own_daemon: Pyvirtd) -> None:
    """Blocking calls made from asyncio code (its loop running in this thread) cannot run the
    client's loop here: they are handed to a thread of the client's own."""
    import asyncio

    conn = open_connection(own_daemon.uri())

    async def inside() -> str:
        return str(conn.getType())

    assert asyncio.run(inside()) == "QEMU"
    assert conn.getType() == "QEMU"
    conn.close()


def test_call_timeout_and_big_call_in_the_callers_thread(own_daemon: Pyvirtd) -> None:
    """A call made in the caller's thread (no loop thread) sends its frame, then runs the loop
    only until its reply: a timeout still ends it with VIR_ERR_OPERATION_TIMEOUT and leaves the
    connection usable (the late reply is dropped), and a frame far larger than the socket takes
    at once goes out while the caller waits, however long the server stays stopped."""
    from pyvirt.rpc.sync import Client

    threads = threading.active_count()
    client = Client.connect_unix(own_daemon.socket, background=False)
    try:
        client.open("")
        assert threading.active_count() == threads
        os.kill(own_daemon.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(PyvirtError, match="CONNECT_GET_HOSTNAME got no reply") as info:
                client.call("CONNECT_GET_HOSTNAME", timeout=0.3)
            assert info.value.code == codes.VIR_ERR_OPERATION_TIMEOUT
            # 3 MiB of XML: the stopped server reads none of it, the socket holds a fraction
            text = "0123456789abcdef" * (3 << 16)
            xml = (f"<domain type='qemu'><name>big</name><description>{text}</description>"
                   "<memory>65536</memory><os><type arch='x86_64'>hvm</type></os></domain>")
            result: dict[str, Any] = {}

            def define() -> None:
                try:
                    result["dom"] = client.call("DOMAIN_DEFINE_XML", xml=xml).dom
                except BaseException as exc:  # noqa: B036 - handed to the test thread
                    result["error"] = exc
            caller = threading.Thread(target=define)
            caller.start()
            time.sleep(0.5)
            assert caller.is_alive(), result  # waiting: for the socket, then the reply
        finally:
            os.kill(own_daemon.proc.pid, signal.SIGCONT)
        caller.join(timeout=30)
        assert not caller.is_alive()
        dom = result["dom"]
        # the whole frame arrived, and as much comes back
        back = client.call("DOMAIN_GET_XML_DESC", dom=dom, flags=0).xml
        assert f"<description>{text}</description>" in back
        client.call("DOMAIN_UNDEFINE", dom=dom)
        assert client.call("CONNECT_GET_HOSTNAME").hostname == os.uname().nodename
        assert threading.active_count() == threads  # (the other thread ran the loop itself)
    finally:
        client.close()


def test_closed_connections_leave_nothing_for_the_collector(own_daemon: Pyvirtd) -> None:
    """A closed connection's objects go with their last reference: none waits in a reference
    cycle for the garbage collector (which would keep them, and their loop, until it runs)."""
    def clients() -> set[int]:  # (other tests of this process may still hold some)
        return {id(o) for o in gc.get_objects() if isinstance(o, RPCClient)}

    gc.collect()
    gc.disable()
    try:
        before = clients()
        for _ in range(5):
            conn = open_connection(own_daemon.uri())
            assert conn.numOfDomains() == 0
            conn.close()
        del conn
        assert clients() - before == set()
    finally:
        gc.enable()
