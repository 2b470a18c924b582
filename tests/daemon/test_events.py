# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain events over pyvirtd, compared with a real libvirtd 9.0 (tests/libvirtd_oracle.py).

Debian's virsh 9.0 (``event --loop --all``) and python3-libvirt 9.0 (with libvirt's default event
loop) watch while another client drives a domain through define, start --paused, reset, resume,
suspend, destroy, start, destroy, undefine: what they print or receive must be the same from both
daemons. Raw-socket tests check what no real client shows directly: the wire layout of the
callback, legacy and QEMU monitor registrations, one delivery per registration in order, a client
that never reads not delaying another, and a disconnected client's registrations being dropped
(the latter with pyvirtd run in this process, to look at its registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lifecycle_support import qemu_workdir

from pyvirt.rpc import procedures
from pyvirt.rpc.protocol import MessageType, Program
from pyvirt.testing import guest as tg

from . import test_domains as td
from .test_domains import XML, Side
from .testlib import (
    SYSTEM_PYTHON,
    VIRSH,
    Libvirtd,
    Pyvirtd,
    Raw,
    is_error,
    own_pyvirtd,
    short_tmpdir,
)

pytestmark = [pytest.mark.oracle, pytest.mark.slow]



# ---- fixtures (as tests/daemon/test_domains.py has them) ------------------------------------

@pytest.fixture(scope="module")
def daemon() -> Iterator[Pyvirtd]:
    with own_pyvirtd() as d:
        yield d


@pytest.fixture
def workdir() -> Iterator[Path]:
    with qemu_workdir("pvde-") as path:
        yield path


@pytest.fixture
def name() -> str:
    return f"pve{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sides(daemon: Pyvirtd, libvirtd: Libvirtd, workdir: Path, guest: tg.Guest,
          name: str) -> Iterator[tuple[Side, Side, str]]:
    """pyvirtd and libvirtd, each with its XML file for the same domain (not yet defined)."""
    dom_uuid = str(uuid.uuid4())
    pair = tuple(Side(label, uri, workdir, td.guest_xml(name, dom_uuid, guest,
                                                        workdir / f"{label}-serial.log"))
                 for label, uri in (("pyvirtd", daemon.uri()), ("libvirtd", libvirtd.uri())))
    try:
        yield pair[0], pair[1], dom_uuid
    finally:
        for side in pair:
            for n in (name, f"{name}p"):
                with contextlib.suppress(AssertionError):
                    side.python(td._CLEANUP.replace("NAME", repr(n)))


_ENV = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}

#: The sequence both daemons go through, as virsh commands (the domain's name appended).
_SEQUENCE = [("define", XML), ("start", "--paused"), ("reset",), ("resume",), ("suspend",),
             ("destroy",), ("start",), ("destroy",), ("undefine",)]


def _drive(side: Side, name: str) -> None:
    for step in _SEQUENCE:
        args = step if step == ("define", XML) else (*step, name)
        code, out, err = side.virsh(*args)
        assert code == 0, f"{side.label}: virsh {' '.join(args)}: {out} {err}"


class EventWatcher:
    """``virsh event --loop ...`` running, its stdout read line by line (stdbuf: virsh's stdio
    would otherwise hold the lines until exit)."""

    def __init__(self, uri: str, *args: str, command: str = "event") -> None:
        self.proc = subprocess.Popen(["stdbuf", "-oL", VIRSH, "-c", uri, command, "--loop", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=_ENV)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}; stderr: "
                                     f"{self.stderr()}")
            time.sleep(0.05)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> list[str]:
        """Interrupt virsh as a user would (^C) and return what it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        return self.lines


def _watch_registered(watcher: EventWatcher, side: Side, name: str) -> None:
    """Wait until the watcher has registered: define and undefine a probe domain until its
    events show (virsh prints nothing before the first event)."""
    probe = f"{name}p"
    xml = (f"<domain type='qemu'><name>{probe}</name><memory>65536</memory>"
           "<os><type arch='x86_64'>hvm</type></os></domain>")
    path = side.xml_path.with_name(f"{side.label}-probe.xml")
    path.write_text(xml)
    deadline = time.monotonic() + 30
    while True:
        assert side.virsh("define", str(path))[0] == 0
        assert side.virsh("undefine", probe)[0] == 0
        try:
            watcher.wait_for(rf"'{probe}': Undefined", timeout=1.5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def _for(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if f"for domain '{name}'" in line]


def test_virsh_event_loop_all_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, _ = sides
    seen: dict[str, list[str]] = {}
    for side in (ours, theirs):
        watcher = EventWatcher(side.uri, "--all", "--timeout", "120")
        try:
            _watch_registered(watcher, side, name)
            _drive(side, name)
            watcher.wait_for(rf"'{name}': Undefined Removed")
        finally:
            lines = watcher.stop()
        seen[side.label] = _for(lines, name)
    assert seen["pyvirtd"] == seen["libvirtd"]
    assert seen["pyvirtd"][0] == f"event 'lifecycle' for domain '{name}': Defined Added"
    assert f"event 'reboot' for domain '{name}'" in seen["pyvirtd"]
    assert seen["pyvirtd"][-1] == f"event 'lifecycle' for domain '{name}': Undefined Removed"


def test_virsh_event_for_one_domain_same_as_libvirtd(sides: tuple[Side, Side, str],
                                                    name: str) -> None:
    """``--domain X --event lifecycle``: the registration filtered by domain on the server."""
    ours, theirs, _ = sides
    seen: dict[str, list[str]] = {}
    for side in (ours, theirs):
        assert side.virsh("define", XML)[0] == 0
        watcher = EventWatcher(side.uri, "--domain", name, "--event", "lifecycle",
                               "--timeout", "120")
        try:
            time.sleep(1.0)  # no probe possible: other domains' events are filtered out
            for step in _SEQUENCE[1:]:
                assert side.virsh(*step, name)[0] == 0
            watcher.wait_for(rf"'{name}': Undefined Removed")
        finally:
            lines = watcher.stop()
        seen[side.label] = lines
    assert seen["pyvirtd"] == seen["libvirtd"]
    assert len([line for line in seen["pyvirtd"] if line.startswith("event '")]) == 11
    assert all(f"for domain '{name}'" in line for line in seen["pyvirtd"]
               if line.startswith("event '"))


# ---- libvirt-python ------------------------------------------------------------------------------

_PY_WATCH = """
import json, sys, threading, time, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
libvirt.virEventRegisterDefaultImpl()
conn = libvirt.open(sys.argv[1])
got = []
def lifecycle(c, dom, event, detail, opaque):
    got.append([opaque, dom.name(), dom.ID() > 0, event, detail])
def reboot(c, dom, opaque):
    got.append([opaque, dom.name(), dom.ID() > 0])
ids = [conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, "all"),
       conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, reboot, "reboot")]
print("ready", flush=True)
deadline = time.monotonic() + 90
while time.monotonic() < deadline and not any(g[-2:] == [1, 0] and g[0] == "all" for g in got):
    libvirt.virEventRunDefaultImpl()
for i in ids:
    conn.domainEventDeregisterAny(i)
conn.close()
print(json.dumps(got))
"""


def test_python_libvirt_events_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, _ = sides
    got: dict[str, Any] = {}
    for side in (ours, theirs):
        proc = subprocess.Popen([SYSTEM_PYTHON, "-c", _PY_WATCH, side.uri], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", proc.stderr and proc.stderr.read()
            _drive(side, name)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        got[side.label] = [g for g in json.loads(out) if g[1] == name]
    assert got["pyvirtd"] == got["libvirtd"]
    assert got["pyvirtd"][0] == ["all", name, False, 0, 0]  # DEFINED ADDED


# ---- the wire ----------------------------------------------------------------------------------

def _raw_open(path: str) -> Raw:
    raw = Raw.unix(path)
    raw.open()
    assert raw.call("CONNECT_SUPPORTS_FEATURE", feature=14).supported == 1
    return raw


def _events(raw: Raw, count: int, timeout: float = 60) -> list[Any]:
    """The next ``count`` MESSAGEs (replies to nothing: none are pending), decoded."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < count:
        msg = raw.recv(max(0.1, deadline - time.monotonic()))
        assert msg is not None, "connection closed"
        assert msg.header.type == MessageType.MESSAGE, msg.header.describe()
        if msg.header.prog == Program.KEEPALIVE:
            continue
        assert msg.header.serial == 1
        proc = procedures.get(msg.header.prog, msg.header.proc)
        assert proc is not None and proc.event
        out.append((proc.full_name, proc.args.decode(msg.payload)))
    return out


def _tiny(name: str, dom_uuid: str | None = None) -> str:
    u = f"<uuid>{dom_uuid}</uuid>" if dom_uuid else ""
    return (f"<domain type='qemu'><name>{name}</name>{u}<memory>65536</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>")


def _py(uri: str, script: str) -> None:
    prog = f"import libvirt, sys\nconn = libvirt.open(sys.argv[1])\n{script}\nconn.close()\n"
    out = subprocess.run([SYSTEM_PYTHON, "-c", prog, uri], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr


def _lifecycle(msg: tuple[str, Any]) -> tuple[str, int | None, str, int]:
    name, body = msg
    inner = body.msg if hasattr(body, "msg") else body
    return (name.removeprefix("REMOTE_PROC_"), getattr(body, "callbackID", None), inner.dom.name,
            inner.event)


@pytest.mark.parametrize("server", ["pyvirtd", "libvirtd"])
def test_wire_callback_and_legacy_registrations(daemon: Pyvirtd, libvirtd: Libvirtd,
                                                server: str, name: str) -> None:
    """Two callback registrations on one connection (all domains, and one domain), a legacy one
    on another: each event once per registration, in order, in libvirtd's layout and words."""
    sock, uri = ((daemon.socket, daemon.uri()) if server == "pyvirtd"
                 else (libvirtd.socket, libvirtd.uri()))
    dom_uuid = str(uuid.uuid4())
    other = name + "x"
    with _raw_open(sock) as raw, _raw_open(sock) as old:
        ids = [raw.call("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", eventID=0, dom=None)
               .callbackID]
        bad = raw.call("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", eventID=27, dom=None)
        assert is_error(bad) and bad.message == "internal error: unsupported event ID 27"
        _py(uri, f"conn.defineXML({_tiny(name, dom_uuid)!r})")
        (proc, body), = _events(raw, 1)
        assert proc == "REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE"
        dom = body.msg.dom
        assert (body.callbackID, dom.name, str(uuid.UUID(bytes=dom.uuid)), dom.id,
                body.msg.event, body.msg.detail) == (ids[0], name, dom_uuid, -1, 0, 0)
        ids.append(raw.call("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", eventID=0,
                            dom={"name": name, "uuid": dom.uuid, "id": -1}).callbackID)
        assert old.call("CONNECT_DOMAIN_EVENT_REGISTER_ANY", eventID=0) is None
        again = old.call("CONNECT_DOMAIN_EVENT_REGISTER_ANY", eventID=0)
        assert is_error(again) and (again.code, again.domain, again.message) == (
            8, 0, "invalid argument: event callback already tracked")
        assert old.call("CONNECT_DOMAIN_EVENT_REGISTER_ANY", eventID=1) is None  # reboot
        _py(uri, f"conn.defineXML({_tiny(other)!r})\nconn.lookupByName({other!r}).undefine()\n"
                 f"conn.lookupByName({name!r}).undefine()")
        cb = "DOMAIN_EVENT_CALLBACK_LIFECYCLE"
        assert [_lifecycle(m) for m in _events(raw, 4)] == [
            (cb, ids[0], other, 0), (cb, ids[0], other, 1), (cb, ids[0], name, 1),
            (cb, ids[1], name, 1)]
        assert [_lifecycle(m) for m in _events(old, 3)] == [
            ("DOMAIN_EVENT_LIFECYCLE", None, other, 0), ("DOMAIN_EVENT_LIFECYCLE", None, other, 1),
            ("DOMAIN_EVENT_LIFECYCLE", None, name, 1)]
        for i in ids:
            assert raw.call("CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY", callbackID=i) is None
        assert old.call("CONNECT_DOMAIN_EVENT_DEREGISTER_ANY", eventID=0) is None
        gone = old.call("CONNECT_DOMAIN_EVENT_DEREGISTER_ANY", eventID=0)
        assert is_error(gone) and gone.message == "internal error: domain event 0 not registered"
        assert old.call("CONNECT_DOMAIN_EVENT_DEREGISTER_ANY", eventID=1) is None
        _py(uri, f"conn.defineXML({_tiny(name)!r}).undefine()")
        for r in (raw, old):
            with pytest.raises(TimeoutError):
                _events(r, 1, timeout=1.0)


def test_slow_client_does_not_delay_others(daemon: Pyvirtd, name: str) -> None:
    """One client registers many times and never reads, so that its events overflow the socket
    buffers; another gets every event, in order, meanwhile; the first one still gets all of its
    own once it reads."""
    pairs, copies = 300, 20
    with _raw_open(daemon.socket) as slow, _raw_open(daemon.socket) as fast:
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(copies):
            slow.call("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", eventID=0, dom=None)
        fast.call("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", eventID=0, dom=None)
        xml = _tiny(name)
        script = (f"for i in range({pairs}):\n"
                  f"    conn.defineXML({xml!r}).undefine()\n")
        driver = threading.Thread(target=_py, args=(daemon.uri(), script))
        driver.start()
        try:
            got = [b.msg.event for n, b in _events(fast, 2 * pairs, timeout=240)
                   if b.msg.dom.name == name]
        finally:
            driver.join()
        assert got == [0, 1] * pairs  # DEFINED, UNDEFINED, in order, each once
        slow_got = [(b.callbackID, b.msg.event) for n, b in _events(slow, 2 * pairs * copies)
                    if b.msg.dom.name == name]
        assert len(slow_got) == 2 * pairs * copies  # ~0.9 MB: more than the socket buffers hold
        for cb in {c for c, _ in slow_got}:
            assert [e for c, e in slow_got if c == cb] == [0, 1] * pairs


# ---- registrations of a client that goes away ---------------------------------------------------

@pytest.fixture
def in_process() -> Iterator[Any]:
    """pyvirtd's Daemon run on a thread of this process, so that its registry can be read."""
    from pyvirt.daemon.config import DaemonConfig
    from pyvirt.daemon.instance import served_instance
    from pyvirt.daemon.server import Daemon, DaemonOptions

    parent = short_tmpdir()
    root = parent / "r"
    root.mkdir()
    loop = asyncio.new_event_loop()
    d = Daemon(DaemonOptions(served_instance(root), DaemonConfig()))
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        async def main() -> None:
            try:
                await d.start(handle_signals=False)
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                ready.set()
            await d.serve()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(60)
    if failure:
        raise failure[0]
    try:
        yield d, loop
    finally:
        loop.call_soon_threadsafe(d.stop)
        thread.join(30)
        loop.close()
        shutil.rmtree(parent, ignore_errors=True)


def _registrations(d: Any, loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    async def read() -> dict[str, int]:
        return dict(d.event_registrations())
    return asyncio.run_coroutine_threadsafe(read(), loop).result(10)


_PY_HOLD = """
import os, sys, time, libvirt, libvirt_qemu
libvirt.virEventRegisterDefaultImpl()
conn = libvirt.open(sys.argv[1])
conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lambda *a: None, None)
conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, lambda *a: None, None)
libvirt_qemu.qemuMonitorEventRegister(conn, None, None, lambda *a: None, None, 0)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("how", ["killed", "closed"])
def test_disconnect_drops_registrations(in_process: Any, how: str) -> None:
    d, loop = in_process
    sock = str(d.instance.run_dir / "libvirt-sock")
    uri = f"qemu+unix:///system?socket={sock}"
    bus = d._conn.driver.events
    if how == "killed":
        proc = subprocess.Popen([SYSTEM_PYTHON, "-c", _PY_HOLD, uri], stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            assert sorted(_registrations(d, loop).values()) == [3]
            assert bus.has_listeners(0) and bus.has_listeners(1) and bus.has_listeners(-1)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        raw = Raw.unix(sock)
        raw.open()
        raw.call("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", eventID=0, dom=None)
        raw.call("CONNECT_DOMAIN_EVENT_REGISTER_ANY", eventID=1)
        assert sorted(_registrations(d, loop).values()) == [2]
        assert raw.call("CONNECT_CLOSE") is None
        raw.close()
    deadline = time.monotonic() + 10
    while _registrations(d, loop) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _registrations(d, loop) == {}
    assert not any(bus.has_listeners(i) for i in (-1, 0, 1))


def test_events_need_the_event_callback_feature(daemon: Pyvirtd) -> None:
    """pyvirtd now says it has callback ids (feature 14), so virsh and libvirt-python use them."""
    with _raw_open(daemon.socket) as raw:
        assert raw.call("CONNECT_SUPPORTS_FEATURE", feature=14).supported == 1
