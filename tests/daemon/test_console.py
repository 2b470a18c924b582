# SPDX-License-Identifier: LGPL-2.1-or-later
"""Guest consoles through pyvirtd: REMOTE_PROC_DOMAIN_OPEN_CONSOLE and the daemon's data streams
(pyvirt.daemon.streams), driven by Debian's virsh 9.0 on a real pseudo-terminal, python3-libvirt
9.0, pyvirt's own remote client and pyvirsh, and a raw socket for what clients never send.

One test guest (pty serial console) boots once under this module's pyvirtd and once under the
private libvirtd (tests/libvirtd_oracle.py) with the same definition; every scenario that a real
client can play is played against both and what the client shows is compared, after normalising
what legitimately differs: terminal escape sequences of the guest's shell, and the advice pyvirt
appends to libvirt's error text after "; ".

The flow-control test at the end needs no guest: it runs the streams of one client on real pipes
and a real event loop, with the client's socket stood in by callbacks so that its congestion can be
switched on and off at will.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvirt.connection import open as connect
from pyvirt.errors import PyvirtError
from pyvirt.rpc.protocol import Header, Message, MessageType, Program, Status, encode_message
from pyvirt.rpc.xdr import REMOTE_ERROR
from pyvirt.testing import guest as tg

from .test_domains import python_libvirt
from .testlib import VIRSH, Libvirtd, Pyvirtd, Raw, error_fields, is_error, own_pyvirtd

PROMPT = tg.PROMPT.encode()
_ESCAPE_SEQ = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_OPEN_CONSOLE = 201
_VIRSH_ENV = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp", "TERM": "dumb"}


def _xml(guest: tg.Guest, name: str, dom_uuid: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{dom_uuid}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>
    <cmdline>{guest.cmdline}</cmdline></os>
  <features><acpi/></features>
  <devices><serial type='pty'/></devices>
</domain>
"""


def _libvirt_words(message: str) -> str:
    """libvirt's text of an error: pyvirt may add how to fix it after '; '."""
    return message.split("; ", 1)[0]


def _clean(data: bytes) -> str:
    return _ESCAPE_SEQ.sub("", data.decode(errors="replace"))


# ---- a terminal ------------------------------------------------------------------------------

class Terminal:
    """A command on a pseudo-terminal of its own, as a user at a terminal runs it."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave,
                                     env=env or _VIRSH_ENV, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            chunk = b""
        self.seen += chunk
        return bool(chunk)

    def expect(self, text: bytes, timeout: float = 30, *, after: int = 0) -> int:
        """Wait for ``text`` past offset ``after`` of the transcript; where it ends."""
        deadline = time.monotonic() + timeout
        while (at := self.seen.find(text, after)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen in {self.seen!r}"
            assert self._read(left), f"{text!r} not seen before the end: {self.seen!r}"
        return at + len(text)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def settle(self, quiet: float = 0.3, limit: float = 5) -> None:
        """Read until nothing came for ``quiet`` seconds (the shell's cursor query after its
        prompt comes in pieces)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = len(self.seen)
            if not self._read(quiet) or len(self.seen) == before:
                return

    def finish(self, timeout: float = 30) -> int:
        """Its exit status, once all it printed is read."""
        try:
            code = self.proc.wait(timeout)
            while self._read(0.2) and select.select([self.master], [], [], 0)[0]:
                pass
            return code
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.master)


def _enter(term: Terminal, after: int) -> None:
    """Press Enter until the guest's shell shows its prompt. Right after a session left the pty,
    QEMU counts it disconnected until its next check (once a second) and drops what the guest
    prints meanwhile: the prompt answering the first Enter may be lost, with libvirtd as well."""
    for _ in range(4):
        term.send(b"\r")
        with contextlib.suppress(AssertionError):
            term.expect(PROMPT, 3, after=after)
            return
    term.expect(PROMPT, 1, after=after)


def _shell(term: Terminal, command: str, output: str, after: int = 0) -> int:
    """Type ``command`` on the guest's shell; where its ``output`` line ends in the transcript."""
    term.send(command.encode() + b"\r")
    return term.expect(output.encode() + b"\r\n", after=after)


# ---- fixtures ----------------------------------------------------------------------------------

_CONSOLE_UUID = str(uuid.uuid4())
_OFF_UUID = str(uuid.uuid4())


def _boot(conn: Any, guest: tg.Guest) -> None:
    """Define 'con' (started, its shell waiting) and 'off' (never started) on ``conn``."""
    conn.defineXML(_xml(guest, "off", _OFF_UUID))
    dom = conn.defineXML(_xml(guest, "con", _CONSOLE_UUID))
    dom.create()


def _kill_qemus_in(parent: str) -> list[int]:
    """SIGKILL the QEMUs running in a directory under ``parent``: their command line need not name
    the root (the monitor comes as a descriptor), their working directory does."""
    pids = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and b"qemu-system" in open(f"/proc/{entry}/cmdline", "rb").read() \
                    and os.readlink(f"/proc/{entry}/cwd").startswith(parent + "/"):
                os.kill(int(entry), signal.SIGKILL)
                pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def served(guest: tg.Guest) -> Iterator[Pyvirtd]:
    """This module's pyvirtd, running 'con' with its guest booted to its shell."""
    with own_pyvirtd("pvc-") as daemon:
        try:
            with connect(daemon.uri()) as conn:
                _boot(conn, guest)
                # through a console of pyvirt's remote client, opened at once: QEMU drops what
                # the guest prints while nobody holds the pty
                st = conn.newStream(0)
                conn.lookupByName("con").openConsole(None, st, 0)
                seen = b""
                deadline = time.monotonic() + 90
                while tg.READY_MARKER.encode() not in seen or PROMPT not in seen:
                    assert time.monotonic() < deadline, f"the guest did not boot: {seen!r}"
                    chunk = st.recv(4096)
                    assert isinstance(chunk, bytes) and chunk, seen
                    seen += chunk
                time.sleep(0.5)  # the shell's cursor query after its prompt
                st.finish()
            yield daemon
            assert daemon.alive(), daemon.stderr()
            assert "Traceback" not in daemon.stderr(), daemon.stderr()
        finally:
            with contextlib.suppress(Exception), connect(daemon.uri()) as conn:
                conn.lookupByName("con").destroy()
            daemon.stop()
            leaked = _kill_qemus_in(str(daemon.root.parent))
            assert leaked == [], f"QEMU processes left running: {leaked}"


@pytest.fixture(scope="module")
def oracle(libvirtd: Libvirtd, guest: tg.Guest) -> Iterator[Libvirtd]:
    """The private libvirtd running the same 'con' (and 'off')."""
    script = f"""
import time
conn.defineXML({_xml(guest, 'off', _OFF_UUID)!r})
dom = conn.defineXML({_xml(guest, 'con', _CONSOLE_UUID)!r})
dom.create()
st = conn.newStream(0)
dom.openConsole(None, st, 0)
seen = b""
deadline = time.monotonic() + 90
while (b{tg.READY_MARKER!r} not in seen or b{tg.PROMPT!r} not in seen) and time.monotonic() < deadline:
    seen += st.recv(4096)
time.sleep(0.5)
st.finish()
result = {tg.READY_MARKER!r} in seen.decode(errors="replace")
"""
    try:
        assert python_libvirt(libvirtd.uri(), script) is True
        yield libvirtd
    finally:
        with contextlib.suppress(AssertionError):
            python_libvirt(libvirtd.uri(), """
for n in ("con", "off"):
    try:
        d = conn.lookupByName(n)
    except libvirt.libvirtError:
        continue
    if d.isActive():
        d.destroy()
    d.undefine()
result = None
""")


# ---- (a) Debian's virsh on a terminal, against both daemons ------------------------------------

def _virsh_console(uri: str, *extra: str) -> Terminal:
    return Terminal(VIRSH, "-c", uri, "console", "con", *extra)


_HEADER = b"Connected to domain 'con'\r\nEscape character is ^] (Ctrl + ])\r\n"


def _virsh_scenario(uri: str) -> dict[str, Any]:
    """A session, a second one refused, a forced one taking over: what virsh shows in each."""
    out: dict[str, Any] = {}
    first = _virsh_console(uri)
    try:
        start = first.expect(_HEADER)
        _enter(first, start)
        mark = first.seen.rfind(PROMPT)
        end = _shell(first, "echo console-$((6*7))", "console-42", after=mark)
        end = first.expect(PROMPT, after=end)
        # what the terminal shows from the prompt the command was typed at to the next prompt
        out["session"] = _clean(first.seen[:start]), _clean(first.seen[mark:end])

        second = _virsh_console(uri)
        code = second.finish()
        lines = _clean(second.seen).splitlines()
        out["busy"] = code, lines[:2], [_libvirt_words(line) for line in lines[2:]]

        forced = _virsh_console(uri, "--force")
        try:
            _enter(forced, forced.expect(_HEADER))
            code = first.finish()
            out["taken_over"] = code, _clean(first.seen[end:]).strip("\r\n")
            forced.expect(PROMPT, after=_shell(forced, "echo forced-$((2*3))", "forced-6"))
            forced.settle()
            forced.send(b"\x1d")  # Ctrl-]
            code = forced.finish()
            out["forced"] = code, _clean(forced.seen[forced.seen.rfind(b"forced-6"):])
        finally:
            forced.close()
    finally:
        first.close()
    return out


@pytest.mark.slow
@pytest.mark.oracle
def test_virsh_console_as_with_libvirtd(served: Pyvirtd, oracle: Libvirtd) -> None:
    ours = _virsh_scenario(served.uri())
    theirs = _virsh_scenario(oracle.uri())
    assert ours == theirs
    # and what both showed is what a console should show
    header, session = ours["session"]
    assert header == "Connected to domain 'con'\r\nEscape character is ^] (Ctrl + ])\r\n"
    assert session == f"{tg.PROMPT}echo console-$((6*7))\r\nconsole-42\r\n{tg.PROMPT}"
    assert ours["busy"] == (1, ["Connected to domain 'con'", "Escape character is ^] (Ctrl + ])"],
                            ["error: operation failed: Active console session exists for this "
                             "domain", ""])
    assert ours["forced"] == (0, f"forced-6\r\n{tg.PROMPT}\r\n"), ours
    assert ours["taken_over"] == (1, "error: stream had I/O failure"), ours


# ---- (b) python3-libvirt, against both daemons --------------------------------------------------

_PYTHON_SCENARIO = r"""
import time

def read_until(st, marker, limit=30):
    seen = b""
    deadline = time.monotonic() + limit
    while marker not in seen:
        if time.monotonic() > deadline:
            raise SystemExit(f"{marker!r} not in {seen!r}")
        chunk = st.recv(4096)
        if not chunk:
            raise SystemExit(f"end of stream before {marker!r}: {seen!r}")
        seen += chunk
    return seen

out = {}
dom = conn.lookupByName("con")
st = conn.newStream(0)
dom.openConsole(None, st, 0)
st.send(b"echo py-$((7*6))\r")
out["echo"] = b"py-42\r\n" in read_until(st, b"py-42\r\n")

other = libvirt.open(uri)
odom = other.lookupByName("con")
out["busy"] = err(lambda: odom.openConsole(None, other.newStream(0), 0))
out["nosuch"] = err(lambda: odom.openConsole("nosuch", other.newStream(0), 0))
out["badflags"] = err(lambda: odom.openConsole(None, other.newStream(0), 8))
out["inactive"] = err(lambda: other.lookupByName("off").openConsole(None, other.newStream(0), 0))

forced = other.newStream(0)
odom.openConsole("serial0", forced, 1)  # VIR_DOMAIN_CONSOLE_FORCE
def drain():
    while st.recv(4096):
        pass
out["taken_over"] = err(drain)
out["taken_over_finish"] = err(st.finish)
forced.send(b"echo forced-$((9*9))\r")
out["forced"] = b"forced-81\r\n" in read_until(forced, b"forced-81\r\n")
forced.abort()

again = other.newStream(0)
odom.openConsole(None, again, 2)  # VIR_DOMAIN_CONSOLE_SAFE: accepted, as by libvirt's QEMU driver
again.send(b"echo again-$((1+1))\r")
out["again"] = b"again-2\r\n" in read_until(again, b"again-2\r\n")
out["finish"] = err(again.finish)
other.close()
result = out
"""


@pytest.mark.slow
@pytest.mark.oracle
def test_python_libvirt_console_as_with_libvirtd(served: Pyvirtd, oracle: Libvirtd) -> None:
    def norm(result: dict[str, Any]) -> dict[str, Any]:
        return {k: [v[0], v[1], _libvirt_words(v[2])] if isinstance(v, list) else v
                for k, v in result.items()}

    ours = python_libvirt(served.uri(), _PYTHON_SCENARIO)
    theirs = python_libvirt(oracle.uri(), _PYTHON_SCENARIO)
    assert norm(ours) == norm(theirs)
    assert norm(ours) == {
        "echo": True, "forced": True, "again": True, "finish": None,
        "busy": [9, 10, "operation failed: Active console session exists for this domain"],
        "nosuch": [1, 10, "internal error: cannot find character device nosuch"],
        "badflags": [8, 10, "unsupported flags (0x8) in function qemuDomainOpenConsole"],
        "inactive": [55, 20, "Requested operation is not valid: domain is not running"],
        "taken_over": [39, 38, "stream had I/O failure"],
        "taken_over_finish": [39, 38, "stream had I/O failure"],
    }


# ---- (c) pyvirt's own client, and pyvirsh ------------------------------------------------------

@pytest.mark.slow
def test_pyvirt_remote_console(served: Pyvirtd) -> None:
    conn = connect(served.uri())
    try:
        dom = conn.lookupByName("con")
        st = conn.newStream(1)  # VIR_STREAM_NONBLOCK
        with pytest.raises(PyvirtError, match="stream is not open"):
            st.recv(10)
        dom.openConsole(None, st, 0)
        with pytest.raises(PyvirtError, match="already in use"):
            dom.openConsole(None, st, 0)
        got = bytearray()
        done = threading.Event()

        def on_event(stream: Any, events: int, _opaque: Any) -> None:
            assert events & 1  # VIR_STREAM_EVENT_READABLE
            while True:
                data = stream.recv(1024)
                if data == -2 or not data:
                    break
                got.extend(data)
            if b"remote-25\r\n" in got:
                done.set()

        st.eventAddCallback(1, on_event, None)
        assert st.send(b"echo remote-$((5*5))\r") == len(b"echo remote-$((5*5))\r")
        assert done.wait(30), bytes(got)
        st.eventRemoveCallback()
        assert st.finish() == 0
        with pytest.raises(PyvirtError, match="stream is not open"):
            st.send(b"x")
        # finished: the device is free for a session without force
        st = conn.newStream(0)
        dom.openConsole("serial0", st, 0)
        st.abort()
        with pytest.raises(PyvirtError) as exc:
            conn.lookupByName("off").openConsole(None, conn.newStream(0), 0)
        assert exc.value.get_error_message() == ("Requested operation is not valid: domain is "
                                                 "not running")
    finally:
        conn.close()


@pytest.mark.slow
def test_pyvirsh_console_through_pyvirtd(served: Pyvirtd) -> None:
    from lifecycle_support import PYVIRSH

    env = {k: v for k, v in os.environ.items() if k != "PYVIRT_DEFAULT_URI"}
    term = Terminal(PYVIRSH, "-c", served.uri(), "console", "con", env=env)
    try:
        _enter(term, term.expect(_HEADER))
        _shell(term, "echo pyvirsh-$((6*7))", "pyvirsh-42")
        term.send(b"\x1d")
        assert term.finish() == 0
    finally:
        term.close()
    # a shut-off domain, as virsh says it
    term = Terminal(PYVIRSH, "-c", served.uri(), "console", "off", env=env)
    term.expect(b"error: The domain is not running")
    assert term.finish() == 1


# ---- (d) raw frames: the stream protocol, errors, a client vanishing -------------------------

def _open_console(raw: Raw, flags: int = 0, early: list[Message] | None = None) -> int:
    """DOMAIN_OPEN_CONSOLE of 'con' on ``raw``; the call's serial, its void reply checked.

    Data of the new stream may come before the reply, as libvirt's client allows: it adds the
    stream before sending the call. libvirtd's dispatch thread starts the stream
    (daemonAddClientStream) before it queues the reply, and its event loop may already send what
    the console holds (the end of a prompt left by an aborted session). Such frames are left to be
    read after the reply, in their order, and also appended to ``early``."""
    from pyvirt.rpc.procedures import PROCEDURES

    dom = raw.call("DOMAIN_LOOKUP_BY_NAME", name="con").dom
    proc = PROCEDURES.lookup("DOMAIN_OPEN_CONSOLE")
    serial = raw.send(_OPEN_CONSOLE, proc.args.encode({"dom": dom, "dev_name": None,
                                                       "flags": flags}))
    ahead: list[Message] = []
    reply = _next(raw)
    while (reply.header.type, reply.header.serial, reply.header.status) == (
            MessageType.STREAM, serial, Status.CONTINUE):
        ahead.append(reply)
        reply = _next(raw)
    assert (reply.header.type, reply.header.serial) == (MessageType.REPLY, serial), reply
    assert reply.header.status == Status.OK, REMOTE_ERROR.decode(reply.payload)
    raw.pending[:0] = ahead
    if early is not None:
        early += ahead
    return serial


def _next(raw: Raw, timeout: float = 15) -> Any:
    msg = raw.recv(timeout)
    while msg is not None and msg.header.prog == Program.KEEPALIVE:
        msg = raw.recv(timeout)
    assert msg is not None, "the daemon hung up"
    return msg


def _stream(raw: Raw, serial: int, status: int, payload: bytes = b"",
            kind: int = MessageType.STREAM) -> None:
    raw.send(_OPEN_CONSOLE, payload, type=kind, serial=serial, status=status)


def _until(raw: Raw, serial: int, marker: bytes) -> list[Any]:
    """Stream frames of ``serial`` until the data holds ``marker``; every frame seen."""
    frames, data = [], b""
    while marker not in data:
        msg = _next(raw)
        frames.append(msg)
        assert msg.header.serial == serial and msg.header.type == MessageType.STREAM, msg
        assert msg.header.status == Status.CONTINUE, msg
        data += msg.payload
    return frames


def _raw_scenario(socket_path: str, socket_ro: str) -> dict[str, Any]:
    """What the client sees; under "early", the data frames that came before their reply."""
    out: dict[str, Any] = {}
    early: list[Message] = []
    with Raw.unix(socket_path) as raw:
        raw.open()
        serial = _open_console(raw, early=early)
        _stream(raw, serial, Status.CONTINUE, b"echo raw-$((3*3))\r")
        frames = _until(raw, serial, b"raw-9\r\n")
        out["data_frames"] = {(f.header.prog, f.header.proc, f.header.type) for f in frames}
        _stream(raw, serial, Status.ERROR)  # abort
        ack = _next(raw)
        while ack.header.status == Status.CONTINUE:  # guest output sent before the abort
            ack = _next(raw)
        out["abort_ack"] = (ack.header.type, ack.header.status, ack.header.serial == serial,
                            ack.payload)
        # a finish after data: the data reaches the guest first, then the acknowledgement
        serial = _open_console(raw, early=early)
        _stream(raw, serial, Status.CONTINUE, b"echo fin\r")
        _stream(raw, serial, Status.OK)
        msg = _next(raw)
        while msg.header.status == Status.CONTINUE:
            msg = _next(raw)
        out["finish_ack"] = (msg.header.type, msg.header.status, msg.header.serial == serial,
                             msg.payload)
        # late data for a stream that is gone is dropped; the connection carries on
        _stream(raw, serial, Status.CONTINUE, b"late")
        out["after"] = raw.call("CONNECT_GET_TYPE").type
    out["early"] = len(early)
    with Raw.unix(socket_ro) as raw:
        raw.open()
        dom = raw.call("DOMAIN_LOOKUP_BY_NAME", name="con").dom
        out["readonly"] = error_fields(raw.call("DOMAIN_OPEN_CONSOLE", dom=dom, dev_name=None,
                                                flags=0))
    return out


@pytest.mark.slow
@pytest.mark.oracle
def test_stream_frames_as_with_libvirtd(served: Pyvirtd, oracle: Libvirtd) -> None:
    ours = _raw_scenario(served.socket, served.socket_ro)
    theirs = _raw_scenario(oracle.socket, oracle.socket_ro)
    # pyvirtd starts a stream once its reply is out; libvirtd sometimes sends data first
    assert ours.pop("early") == 0
    theirs.pop("early")
    assert ours == theirs
    assert ours["abort_ack"] == ours["finish_ack"] == (MessageType.STREAM, Status.OK, True, b"")
    assert ours["data_frames"] == {(Program.REMOTE, _OPEN_CONSOLE, MessageType.STREAM)}
    assert ours["readonly"][:3] == (29, 20, "operation forbidden: read only access prevents "
                                            "virDomainOpenConsole")


@pytest.mark.slow
def test_client_vanishing_and_bad_frames(served: Pyvirtd) -> None:
    # a client that leaves mid-stream, with the guest writing to it
    with Raw.unix(served.socket) as raw:
        raw.open()
        serial = _open_console(raw)
        _stream(raw, serial, Status.CONTINUE, b"echo bye-$((4*4))\r")
        _until(raw, serial, b"bye-16\r\n")
        _stream(raw, serial, Status.CONTINUE, b"for i in 1 2 3 4 5 6 7 8; do echo $i; done\r")
    # ... leaves the daemon serving, and the console free for a session without force
    with Raw.unix(served.socket) as raw:
        raw.open()
        deadline = time.monotonic() + 10
        while True:  # the daemon notices the hang-up on its own time
            dom = raw.call("DOMAIN_LOOKUP_BY_NAME", name="con").dom
            rec = raw.call("DOMAIN_OPEN_CONSOLE", dom=dom, dev_name=None, flags=0)
            if not is_error(rec) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not is_error(rec), error_fields(rec)
        serial = raw.serial
        # a hole in a console stream: STREAM/ERROR, the stream is gone, the connection lives on
        _stream(raw, serial, Status.CONTINUE, b"\0" * 12, kind=MessageType.STREAM_HOLE)
        msg = _next(raw)
        while msg.header.status == Status.CONTINUE:  # guest output sent before the hole
            msg = _next(raw)
        assert (msg.header.type, msg.header.serial, msg.header.status) == (
            MessageType.STREAM, serial, Status.ERROR)
        err = REMOTE_ERROR.decode(msg.payload)
        assert (err.code, err.domain, err.message) == (39, 38, "Unexpected stream hole")
        assert raw.call("CONNECT_GET_TYPE").type == "QEMU"
        # a stream status no client sends
        serial = _open_console(raw)
        _stream(raw, serial, 7)
        msg = _next(raw)
        while msg.header.status == Status.CONTINUE:
            msg = _next(raw)
        assert msg.header.status == Status.ERROR
        assert REMOTE_ERROR.decode(msg.payload).message == "stream aborted with unexpected status 7"
    # a python3-libvirt client killed mid-stream
    script = ("import os, signal\nst = conn.newStream(0)\n"
              "conn.lookupByName('con').openConsole(None, st, 0)\nst.send(b'echo x\\r')\n"
              "st.recv(1)\nos.kill(os.getpid(), signal.SIGKILL)\nresult = None\n")
    with pytest.raises(AssertionError, match="libvirt-python failed"):
        python_libvirt(served.uri(), script)
    conn = connect(served.uri())
    try:
        dom = conn.lookupByName("con")
        deadline = time.monotonic() + 10
        while True:
            st = conn.newStream(0)
            try:
                dom.openConsole(None, st, 0)
                break
            except PyvirtError as exc:
                assert "Active console session" in str(exc)
                assert time.monotonic() < deadline, "the killed client's session was never freed"
                time.sleep(0.1)
        st.send(b"echo alive\r")
        seen = b""
        while b"alive\r\n" not in seen:
            chunk = st.recv(4096)
            assert isinstance(chunk, bytes) and chunk
            seen += chunk
        st.finish()
    finally:
        conn.close()
    assert served.alive()


# ---- flow control, without a guest --------------------------------------------------------------

def test_stream_flow_control_both_ways() -> None:
    from pyvirt.daemon.streams import CHUNK, RX_LIMIT, ClientStreams, FdEndpoint, StreamSlot

    def header(serial: int, kind: int = MessageType.CALL, status: int = Status.OK) -> Header:
        return Header(Program.REMOTE, 1, _OPEN_CONSOLE, kind, serial, status)

    def status_of(frame: bytes) -> int:
        return Header.unpack(frame, 4).status

    async def run() -> None:
        loop = asyncio.get_running_loop()
        frames: list[bytes] = []
        congested = [False]
        congest_on_write = [True]
        woken: list[int] = []

        def write(frame: bytes) -> None:
            # as the transport does: a frame past its high-water mark pauses the writer at once
            frames.append(frame)
            if congest_on_write[0]:
                congested[0] = True

        streams = ClientStreams(loop, "test", write=write, can_send=lambda: not congested[0],
                                wake=lambda: woken.append(1))

        # -- towards the client: a fast source, a client whose socket is full --
        src_r, src_w = os.pipe()
        streams.opened(StreamSlot(header(7), FdEndpoint(src_r, "source pipe", writable=False)),
                       encode_message(header(7, MessageType.REPLY)))
        payload = os.urandom(4 * 1024 * 1024)
        written = [0]

        def produce() -> None:
            with open(src_w, "wb", buffering=0) as f:
                for i in range(0, len(payload), 65536):
                    f.write(payload[i:i + 65536])
                    written[0] = i + 65536
        producer = threading.Thread(target=produce)
        producer.start()
        await asyncio.sleep(0.5)
        assert len(frames) == 1  # one frame read, then nothing more while the client is full ...
        assert written[0] <= 4 * 65536  # ... so the producer is held back by its pipe
        congest_on_write[0] = congested[0] = False
        streams.resume_output()
        while not frames or len(frames[-1]) != 28:  # up to the empty CONTINUE: the source's end
            await asyncio.sleep(0.01)
        producer.join(10)
        assert b"".join(f[28:] for f in frames) == payload
        assert {status_of(f) for f in frames} == {Status.CONTINUE}
        assert max(len(f) - 28 for f in frames) <= CHUNK
        frames.clear()
        streams.deliver(Message(header(7, MessageType.STREAM, Status.ERROR)))  # the client aborts
        assert [status_of(f) for f in frames] == [Status.OK] and len(streams) == 0

        # -- from the client: a sink that does not read --
        frames.clear()
        sink_r, sink_w = os.pipe()
        streams.opened(StreamSlot(header(9), FdEndpoint(sink_w, "sink pipe", readable=False)),
                       encode_message(header(9, MessageType.REPLY)))
        chunk = os.urandom(65536)
        sent = 0
        while not streams.backlogged():
            streams.deliver(Message(header(9, MessageType.STREAM, Status.CONTINUE), chunk))
            sent += len(chunk)
            assert sent <= RX_LIMIT + 4 * len(chunk), "the backlog never stopped the client"
        streams.deliver(Message(header(9, MessageType.STREAM, Status.OK)))  # finish
        await asyncio.sleep(0.2)
        assert not woken and streams.backlogged() and not frames
        got = bytearray()
        os.set_blocking(sink_r, False)
        while len(got) < sent:
            await asyncio.sleep(0.005)
            with contextlib.suppress(BlockingIOError):
                got += os.read(sink_r, 1 << 20)
        assert bytes(got) == chunk * (sent // len(chunk))
        await asyncio.sleep(0.05)
        assert woken and not streams.backlogged()
        # the finish came after the data: acknowledged once all of it was written, with the
        # endpoint closed (the sink sees its end)
        assert [status_of(f) for f in frames] == [Status.OK]
        assert os.read(sink_r, 10) == b""
        assert len(streams) == 0
        os.close(sink_r)

    asyncio.run(run())


# ---- the order of frames, without a guest ----------------------------------------------------------

def test_open_console_keeps_data_sent_before_the_reply() -> None:
    """libvirtd's order, which made test_stream_frames_as_with_libvirtd fail now and then: data of
    the new stream before the reply to DOMAIN_OPEN_CONSOLE. _open_console takes the reply and
    leaves the data to be read next, as libvirt's client does. The daemon is a socket played by
    hand, in that order every time."""
    import socket

    from pyvirt.rpc.procedures import PROCEDURES
    from pyvirt.rpc.protocol import FrameDecoder, encode_reply

    ours, theirs = socket.socketpair()
    lookup = PROCEDURES.lookup("DOMAIN_LOOKUP_BY_NAME")
    dom = {"name": "con", "uuid": uuid.UUID(_CONSOLE_UUID).bytes, "id": 1}

    def daemon() -> None:
        decoder = FrameDecoder()
        answered = 0
        while answered < 2:
            data = theirs.recv(65536)
            assert data
            for msg in decoder.feed(data):
                h = msg.header
                if h.proc == lookup.number:
                    theirs.sendall(encode_reply(h, Status.OK, lookup.ret, {"dom": dom}))
                else:  # DOMAIN_OPEN_CONSOLE: its stream's first data, then the reply
                    theirs.sendall(encode_message(Header(h.prog, h.vers, h.proc, MessageType.STREAM,
                                                         h.serial, Status.CONTINUE), b"guest# "))
                    theirs.sendall(encode_reply(h, Status.OK, PROCEDURES.lookup(
                        "DOMAIN_OPEN_CONSOLE").ret, None))
                answered += 1

    server = threading.Thread(target=daemon)
    server.start()
    try:
        with Raw(ours) as raw:
            early: list[Message] = []
            serial = _open_console(raw, early=early)
            server.join(10)
            assert [(m.header.serial, m.payload) for m in early] == [(serial, b"guest# ")]
            assert _until(raw, serial, b"guest# ") == early
    finally:
        theirs.close()
        server.join(10)


def test_stream_reply_first_and_nothing_after_abort(own_root: Path) -> None:
    """pyvirtd's order, stricter than libvirtd's: the reply to a stream call leaves before any
    frame of its stream, though the handler (on a worker thread) hands over a descriptor with data
    already waiting and takes its time to return; and once an abort is acknowledged, nothing of
    that stream follows, its endpoint being closed by then. Twice on one connection, the second
    stream's descriptor maybe reusing the first one's number."""
    from pyvirt.daemon import handlers as real
    from pyvirt.daemon.config import DaemonConfig
    from pyvirt.daemon.dispatch import ClientSession, HandlerTable
    from pyvirt.daemon.instance import served_instance
    from pyvirt.daemon.server import Daemon, DaemonOptions
    from pyvirt.daemon.streams import FdEndpoint, open_stream
    from pyvirt.rpc.procedures import PROCEDURES

    writers: list[int] = []
    table = HandlerTable()
    for name, fn, kw in (("AUTH_LIST", real.auth_list, {"needs_open": False, "blocking": False}),
                         ("CONNECT_SUPPORTS_FEATURE", real.supports_feature,
                          {"needs_open": False, "blocking": False}),
                         ("CONNECT_OPEN", real.connect_open, {"needs_open": False}),
                         ("CONNECT_GET_TYPE", real.get_type, {})):
        table.register(name, **kw)(fn)

    @table.register("DOMAIN_OPEN_CONSOLE")
    def console(session: ClientSession, args: Any) -> None:
        assert threading.current_thread() is not threading.main_thread()
        r, w = os.pipe()
        writers.append(w)
        os.write(w, b"waiting before the reply")
        open_stream(session, FdEndpoint(r, "pipe"))
        time.sleep(0.3)  # a stream started before the handler's end would send its data now
        return None

    def client(path: str) -> None:
        args = PROCEDURES.lookup("DOMAIN_OPEN_CONSOLE").args.encode(
            {"dom": {"name": "con", "uuid": bytes(16), "id": 1}, "dev_name": None, "flags": 0})
        with Raw.unix(path) as raw:
            raw.open()
            for _ in range(2):
                serial = raw.send(_OPEN_CONSOLE, args)
                reply = _next(raw)
                assert (reply.header.type, reply.header.serial, reply.header.status) == (
                    MessageType.REPLY, serial, Status.OK), reply
                data = _next(raw)
                assert (data.header.type, data.header.serial, data.header.status, data.payload) == (
                    MessageType.STREAM, serial, Status.CONTINUE, b"waiting before the reply")
                os.write(writers[-1], b"more")
                _stream(raw, serial, Status.ERROR)  # abort
                ack = _next(raw)
                while (ack.header.serial, ack.header.status) == (serial, Status.CONTINUE):
                    ack = _next(raw)  # sent before the abort arrived
                assert (ack.header.type, ack.header.serial, ack.header.status, ack.payload) == (
                    MessageType.STREAM, serial, Status.OK, b"")
                with pytest.raises(BrokenPipeError):  # the endpoint is closed: no reader left
                    os.write(writers[-1], b"after the abort")
                os.close(writers[-1])
                assert raw.call("CONNECT_GET_TYPE").type == "QEMU"  # the next message: its reply
                with pytest.raises(TimeoutError):
                    raw.recv(0.2)

    async def run() -> None:
        daemon = Daemon(DaemonOptions(served_instance(own_root), DaemonConfig()), handlers=table)
        await daemon.start(handle_signals=False)
        try:
            await asyncio.to_thread(client, str(own_root / "run" / "libvirt-sock"))
        finally:
            await daemon.shutdown()

    asyncio.run(run())


# ---- last: the domain going away under an open console ------------------------------------------

_DESTROY_SCENARIO = r"""
st = conn.newStream(0)
conn.lookupByName("con").openConsole(None, st, 0)
other = libvirt.open(uri)
other.lookupByName("con").destroy()
other.close()
def drain():
    while st.recv(4096):
        pass
result = {"recv": err(drain), "finish": err(st.finish)}
"""


@pytest.mark.slow
@pytest.mark.oracle
def test_console_of_a_destroyed_domain_as_with_libvirtd(served: Pyvirtd, oracle: Libvirtd) -> None:
    """Runs last: it stops the module's guests."""
    ours = python_libvirt(served.uri(), _DESTROY_SCENARIO)
    theirs = python_libvirt(oracle.uri(), _DESTROY_SCENARIO)
    assert ours == theirs
    assert ours == {"recv": None, "finish": None}  # the end of the data, then a clean finish
    with Raw.unix(served.socket) as raw:  # and the daemon serves on
        raw.open()
        assert raw.call("CONNECT_GET_TYPE").type == "QEMU"


def test_stream_over_regular_files(tmp_path: Path) -> None:
    """What volume download and upload will stream: regular files, which the event loop cannot
    poll, still go one chunk per turn, with the same push-back (the client stood in by callbacks,
    as above)."""
    from pyvirt.daemon.streams import CHUNK, ClientStreams, FdEndpoint, StreamSlot

    def header(serial: int, kind: int = MessageType.CALL, status: int = Status.OK) -> Header:
        return Header(Program.REMOTE, 1, _OPEN_CONSOLE, kind, serial, status)

    source, target = tmp_path / "source.img", tmp_path / "target.img"
    payload = os.urandom(3 * 1024 * 1024 + 5)
    source.write_bytes(payload)

    async def run() -> None:
        frames: list[bytes] = []
        congested = [True]

        def write(frame: bytes) -> None:
            frames.append(frame)
            congested[0] = True  # each frame fills the client's socket until it drains

        streams = ClientStreams(asyncio.get_running_loop(), "test", write=write,
                                can_send=lambda: not congested[0], wake=lambda: None)
        endpoint = FdEndpoint(os.open(source, os.O_RDONLY), str(source), writable=False)
        assert not endpoint.pollable
        streams.opened(StreamSlot(header(3), endpoint), encode_message(header(3, MessageType.REPLY)))
        await asyncio.sleep(0.1)
        assert frames == []  # nothing read while the client does not take it
        while not frames or len(frames[-1]) != 28:
            congested[0] = False  # the client drains: one more frame
            streams.resume_output()
            await asyncio.sleep(0)
        assert b"".join(f[28:] for f in frames) == payload
        assert max(len(f) - 28 for f in frames) == CHUNK
        frames.clear()
        congested[0] = False
        streams.deliver(Message(header(3, MessageType.STREAM, Status.OK)))
        assert [Header.unpack(f, 4).status for f in frames] == [Status.OK]

        frames.clear()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        streams.opened(StreamSlot(header(5), FdEndpoint(fd, str(target), readable=False)),
                       encode_message(header(5, MessageType.REPLY)))
        for i in range(0, len(payload), 65536):
            streams.deliver(Message(header(5, MessageType.STREAM, Status.CONTINUE),
                                    payload[i:i + 65536]))
        streams.deliver(Message(header(5, MessageType.STREAM, Status.OK)))
        while not frames:
            await asyncio.sleep(0.01)
        assert [Header.unpack(f, 4).status for f in frames] == [Status.OK]
        assert len(streams) == 0

    asyncio.run(run())
    assert target.read_bytes() == payload


def test_endpoint_taken_away_before_its_stream_starts() -> None:
    """A console forced over between the handler's return and its reply: the stream starts as
    failed, with libvirt's error, and never watches the descriptor (which its taker closed)."""
    from pyvirt.daemon.streams import ClientStreams, FdEndpoint, StreamSlot

    async def run() -> None:
        frames: list[bytes] = []
        streams = ClientStreams(asyncio.get_running_loop(), "test", write=frames.append,
                                can_send=lambda: True, wake=lambda: None)
        r, w = os.pipe()
        endpoint = FdEndpoint(r, "pipe")
        endpoint.revoke(PyvirtError("stream had I/O failure", code=39, domain=38))
        os.close(r)  # what the taker does
        r2, w2 = os.pipe()  # ... and a new session may get the same descriptor number
        header = Header(Program.REMOTE, 1, _OPEN_CONSOLE, MessageType.CALL, 4)
        streams.opened(StreamSlot(header, endpoint),
                       encode_message(Header(Program.REMOTE, 1, _OPEN_CONSOLE, MessageType.REPLY, 4)))
        os.write(w2, b"not for the lost stream")
        await asyncio.sleep(0.1)
        assert len(frames) == 1 and len(streams) == 0
        assert Header.unpack(frames[0], 4).status == Status.ERROR
        err = REMOTE_ERROR.decode(frames[0][28:])
        assert (err.code, err.domain, err.message) == (39, 38, "stream had I/O failure")
        for fd in (w, r2, w2):
            os.close(fd)

    asyncio.run(run())
