# SPDX-License-Identifier: LGPL-2.1-or-later
"""Frames by hand: the same requests to pyvirtd and to a real libvirtd 9.0 get the same answers
(code, domain, message, str1.. int2, header), except where pyvirt decides otherwise on purpose
(an unknown procedure is VIR_ERR_NO_SUPPORT); then what no well-behaved client sends."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pyvirt.rpc import procedures
from pyvirt.rpc.protocol import KeepaliveProc, MessageType, Program
from pyvirt.rpc.xdr import STRING_MAX

from .testlib import Pyvirtd, Raw, decode_reply, error_fields, is_error

pytestmark = pytest.mark.oracle

R = Program.REMOTE
_DOM = {"name": "x", "uuid": bytes(16), "id": -1}


def _args(proc_name: str, /, **kw: Any) -> bytes:
    return procedures.lookup(proc_name).args.encode(kw or None)


def _answer(raw: Raw, proc: int, payload: bytes = b"", **kw: Any) -> Any:
    serial = raw.send(proc, payload, **kw)
    msg = raw.recv()
    while (msg is not None and msg.header.prog == Program.KEEPALIVE
           and msg.header.proc == KeepaliveProc.PING):
        msg = raw.recv()  # the shared test libvirtd pings every second: not part of the answer
    assert msg is not None
    h = msg.header
    assert (h.serial, h.proc, h.type) == (serial, proc, MessageType.REPLY)
    rec = decode_reply(msg)
    return (h.prog, h.vers, h.status, error_fields(rec) if is_error(rec) else rec)


#: (id, opened first, socket, request) -> the answers must be equal.
CASES: list[tuple[str, bool, str, Callable[[Raw], Any]]] = [
    ("get-type-before-open", False, "rw", lambda r: _answer(r, 3)),
    ("feature-14-before-open", False, "rw",
     lambda r: _answer(r, 60, _args("CONNECT_SUPPORTS_FEATURE", feature=14))),
    ("lookup-before-open", False, "rw",
     lambda r: _answer(r, 23, _args("DOMAIN_LOOKUP_BY_NAME", name="x"))),
    ("keepalive-feature-before-open", False, "rw",
     lambda r: _answer(r, 60, _args("CONNECT_SUPPORTS_FEATURE", feature=10))),
    ("close-before-open", False, "rw", lambda r: (_answer(r, 2), r.eof())),
    ("unknown-program", True, "rw", lambda r: _answer(r, 3, prog=0x12345678)),
    ("unknown-version", True, "rw", lambda r: _answer(r, 3, vers=2)),
    ("keepalive-program-as-call", True, "rw", lambda r: _answer(r, 3, prog=Program.KEEPALIVE)),
    ("call-with-error-status", True, "rw", lambda r: _answer(r, 3, status=1)),
    ("call-with-continue-status", True, "rw", lambda r: _answer(r, 3, status=2)),
    ("truncated-arguments", True, "rw", lambda r: _answer(r, 23, b"\0\0\0\x09ab")),
    ("no-arguments", True, "rw", lambda r: _answer(r, 23)),
    ("garbage-after-void-arguments", True, "rw", lambda r: _answer(r, 3, b"\xff" * 64)),
    ("garbage-after-arguments", True, "rw",
     lambda r: _answer(r, 60, _args("CONNECT_SUPPORTS_FEATURE", feature=10) + b"junk")),
    ("oversize-string", True, "rw",
     lambda r: _answer(r, 23, struct.pack(">I", STRING_MAX + 1) + b"a" * (STRING_MAX + 4))),
    ("string-longer-than-message", True, "rw",
     lambda r: _answer(r, 23, struct.pack(">I", 1000) + b"abcd")),
    ("open-twice", True, "rw", lambda r: _answer(r, 1, _args("CONNECT_OPEN", name="", flags=0))),
    ("unknown-feature", True, "rw", lambda r: _answer(r, 60, _args("CONNECT_SUPPORTS_FEATURE",
                                                                   feature=99))),
    ("list-domains-negative", True, "rw", lambda r: _answer(r, 37, _args("CONNECT_LIST_DOMAINS",
                                                                         maxids=-1))),
    ("list-domains-huge", True, "rw", lambda r: _answer(r, 37, _args("CONNECT_LIST_DOMAINS",
                                                                     maxids=1 << 20))),
    ("list-defined-huge", True, "rw",
     lambda r: _answer(r, 21, _args("CONNECT_LIST_DEFINED_DOMAINS", maxnames=100000))),
    ("list-defined-zero", True, "rw",
     lambda r: _answer(r, 21, _args("CONNECT_LIST_DEFINED_DOMAINS", maxnames=0))),
    ("list-all-no-results", True, "rw",
     lambda r: _answer(r, 273, _args("CONNECT_LIST_ALL_DOMAINS", need_results=0, flags=0))),
    ("list-all-bad-flags", True, "rw",
     lambda r: _answer(r, 273, _args("CONNECT_LIST_ALL_DOMAINS", need_results=1,
                                     flags=0xFFFF0000))),
    ("lookup-id-negative", True, "rw", lambda r: _answer(r, 22, _args("DOMAIN_LOOKUP_BY_ID", id=-1))),
    ("lookup-uuid", True, "rw",
     lambda r: _answer(r, 24, _args("DOMAIN_LOOKUP_BY_UUID", uuid=bytes(range(16))))),
    ("lookup-name-unicode", True, "rw",
     lambda r: _answer(r, 23, _args("DOMAIN_LOOKUP_BY_NAME", name="dömäin ✓"))),
    ("secure", True, "rw", lambda r: _answer(r, 149)),
    ("security-model", True, "rw", lambda r: _answer(r, 122)),
    ("node-info", True, "rw", lambda r: _answer(r, 6)),
    ("lib-version", True, "rw", lambda r: _answer(r, 157)),
    ("close-callback", True, "rw", lambda r: [_answer(r, 360), _answer(r, 360), _answer(r, 361),
                                              _answer(r, 361)]),
    ("close", True, "rw", lambda r: (_answer(r, 2), r.eof())),
    ("ro-define", True, "ro", lambda r: _answer(r, 11, _args("DOMAIN_DEFINE_XML", xml="<domain/>"))),
    ("ro-create", True, "ro", lambda r: _answer(r, 9, _args("DOMAIN_CREATE", dom=_DOM))),
    ("ro-undefine-flags", True, "ro",
     lambda r: _answer(r, 231, _args("DOMAIN_UNDEFINE_FLAGS", dom=_DOM, flags=0))),
    ("ro-domcaps", True, "ro", lambda r: _answer(r, 342, _args(
        "CONNECT_GET_DOMAIN_CAPABILITIES", emulatorbin=None, arch=None, machine=None,
        virttype=None, flags=0))),
    ("ro-list", True, "ro",
     lambda r: _answer(r, 273, _args("CONNECT_LIST_ALL_DOMAINS", need_results=1, flags=0))),
    ("ro-lookup", True, "ro", lambda r: _answer(r, 23, _args("DOMAIN_LOOKUP_BY_NAME", name="x"))),
    ("rw-socket-ro-flag-define", True, "rw-flag",
     lambda r: _answer(r, 11, _args("DOMAIN_DEFINE_XML", xml="<domain/>"))),
]


def _connect(daemon: Any, kind: str, opened: bool) -> Raw:
    raw = Raw.unix(daemon.socket_ro if kind == "ro" else daemon.socket)
    if opened:
        raw.open(flags=1 if kind == "rw-flag" else 0)
    return raw


@pytest.mark.parametrize(("opened", "kind", "request_"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_same_answer_as_libvirtd(pyvirtd: Pyvirtd, libvirtd: Any, opened: bool, kind: str,
                                 request_: Callable[[Raw], Any]) -> None:
    with _connect(pyvirtd, kind, opened) as ours, _connect(libvirtd, kind, opened) as theirs:
        assert request_(ours) == request_(theirs)


@pytest.mark.parametrize("kind", [MessageType.REPLY, MessageType.MESSAGE, MessageType.STREAM,
                                  MessageType.STREAM_HOLE, 99])
def test_unexpected_message_types_ignored(pyvirtd: Pyvirtd, libvirtd: Any, kind: int) -> None:
    """libvirtd drops them without an answer; so does pyvirtd, and the connection stays usable."""
    for daemon in (pyvirtd, libvirtd):
        with Raw.unix(daemon.socket) as raw:
            raw.open()
            raw.send(3, type=kind)
            with pytest.raises(TimeoutError):
                raw.recv(timeout=0.3)
            assert raw.call("CONNECT_GET_TYPE").type == "QEMU"


# ---- where pyvirtd answers differently, on purpose ----------------------------------------------

@pytest.mark.parametrize(("prog", "proc", "payload", "detail"), [
    (R, 9999, b"", "unknown procedure: 9999"),
    (R, -5, b"", "unknown procedure: -5"),
    (R, 107, b"", "unknown procedure: 107"),  # an event, not a call
    (R, 8, _args("DOMAIN_ATTACH_DEVICE", dom=_DOM, xml="<disk/>"), "virDomainAttachDevice"),
    (R, 211, _args("DOMAIN_SCREENSHOT", dom=_DOM, screen=0, flags=0), "virDomainScreenshot"),
    (Program.QEMU, 3, _args("QEMU_PROC_DOMAIN_AGENT_COMMAND", dom=_DOM, cmd="{}", timeout=5,
                            flags=0), "virDomainQemuAgentCommand"),
    (Program.QEMU, 99, b"", "unknown procedure: 99"),
], ids=["9999", "negative", "event", "attach-device", "screenshot", "qemu-agent", "qemu-99"])
def test_unknown_procedure_is_no_support(pyvirtd: Pyvirtd, prog: int, proc: int, payload: bytes,
                                         detail: str) -> None:
    """VIR_ERR_NO_SUPPORT, where libvirtd says VIR_ERR_RPC: clients fall back on NO_SUPPORT."""
    with Raw.unix(pyvirtd.socket) as raw:
        raw.open()
        header_prog, vers, status, err = _answer(raw, proc, payload, prog=prog)
        assert (header_prog, vers, status) == (prog, 1, 1)
        fmt = "this function is not supported by the connection driver: %s"
        assert err[:2] == (3, 7)
        assert err[2] == fmt.replace("%s", detail)
        assert err[4:6] == (fmt, detail)
        assert raw.call("CONNECT_GET_TYPE").type == "QEMU"  # and the connection goes on


def test_supported_features(pyvirtd: Pyvirtd) -> None:
    with Raw.unix(pyvirtd.socket) as raw:
        raw.open()
        answers = {f: raw.call("CONNECT_SUPPORTS_FEATURE", feature=f).supported for f in range(0, 17)}
    assert {f for f, yes in answers.items() if yes} == {10, 14, 15}


# ---- framing errors: the offender is dropped, nobody else notices ------------------------------

@pytest.fixture
def bystander(pyvirtd: Pyvirtd) -> Any:
    raw = Raw.unix(pyvirtd.socket)
    raw.open()
    yield raw
    assert raw.call("CONNECT_GET_TYPE").type == "QEMU", "another client was affected"
    assert pyvirtd.alive()
    raw.close()


@pytest.mark.parametrize("data", [
    struct.pack(">I", 0),
    struct.pack(">I", 27) + b"\0" * 23,  # below the 28-byte minimum
    struct.pack(">I", 0xFFFFFFFF),  # 4 GiB
    struct.pack(">I", 32 * 1024 * 1024 + 5),  # just over the cap
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["zero", "short", "4GiB", "over-cap", "http"])
def test_bad_length_word_closes(pyvirtd: Pyvirtd, bystander: Raw, data: bytes) -> None:
    with Raw.unix(pyvirtd.socket) as raw:
        raw.send_raw(data)
        start = time.monotonic()
        assert raw.eof(timeout=5)
        assert time.monotonic() - start < 2  # refused on the length word, not after buffering


def test_largest_message_accepted(pyvirtd: Pyvirtd, bystander: Raw) -> None:
    """A frame of exactly 32 MiB + 4 is within libvirt's cap: read whole, then answered."""
    with Raw.unix(pyvirtd.socket) as raw:
        raw.open()
        payload = b"\0" * (32 * 1024 * 1024 - 24)
        serial = raw.send(3, payload)
        msg = raw.recv(timeout=20)
        assert msg is not None and msg.header.serial == serial
        assert decode_reply(msg).type == "QEMU"


@pytest.mark.parametrize("data", [b"\0\0\0\x40", b"\0\0\0\x40" + b"\x20\0\x80\x86\0\0",
                                  b"\0\0\0\x1c" + b"\0" * 10])
def test_truncated_frames_then_hangup(pyvirtd: Pyvirtd, bystander: Raw, data: bytes) -> None:
    with Raw.unix(pyvirtd.socket) as raw:
        raw.send_raw(data)
        raw.sock.shutdown(socket.SHUT_WR)
        assert raw.eof()


def test_stalled_client_blocks_nobody(pyvirtd: Pyvirtd, bystander: Raw) -> None:
    """Half a frame, then silence: the others are served at once."""
    assert pyvirtd.tcp_port is not None
    with Raw.unix(pyvirtd.socket) as stalled, Raw.tcp(pyvirtd.tcp_port) as stalled_tcp:
        stalled.send_raw(b"\0\0\0\x40\x20\0")
        stalled_tcp.send_raw(b"\0\0")
        for _ in range(20):
            start = time.monotonic()
            assert bystander.call("CONNECT_GET_HOSTNAME").hostname
            assert time.monotonic() - start < 1


def test_one_byte_at_a_time(pyvirtd: Pyvirtd) -> None:
    from pyvirt.rpc.protocol import Header, encode_message

    with Raw.unix(pyvirtd.socket) as raw:
        raw.open()
        frame = encode_message(Header(R, 1, 3, 0, 7, 0))
        for i in range(len(frame)):
            raw.send_raw(frame[i:i + 1])
        msg = raw.recv()
        assert msg is not None and decode_reply(msg).type == "QEMU"


def test_pipelined_calls_all_answered(pyvirtd: Pyvirtd) -> None:
    """Fifty calls in one write: more than max_client_requests, answered all the same."""
    from pyvirt.rpc.protocol import Header, encode_message

    with Raw.unix(pyvirtd.socket) as raw:
        raw.open()
        raw.send_raw(b"".join(encode_message(Header(R, 1, 3, 0, s, 0)) for s in range(1000, 1050)))
        serials = set()
        for _ in range(50):
            msg = raw.recv()
            assert msg is not None
            serials.add(msg.header.serial)
        assert serials == set(range(1000, 1050))


def test_ping_gets_pong_and_pong_is_ignored(pyvirtd: Pyvirtd) -> None:
    with Raw.unix(pyvirtd.socket) as raw:
        raw.open()
        raw.send(KeepaliveProc.PONG, prog=Program.KEEPALIVE, type=MessageType.MESSAGE, serial=0)
        raw.send(KeepaliveProc.PING, prog=Program.KEEPALIVE, type=MessageType.MESSAGE, serial=0)
        msg = raw.recv()
        assert msg is not None
        assert (msg.header.prog, msg.header.proc, msg.header.type) == (
            Program.KEEPALIVE, KeepaliveProc.PONG, MessageType.MESSAGE)
        assert raw.call("CONNECT_GET_TYPE").type == "QEMU"


def test_vanishing_clients(pyvirtd: Pyvirtd, bystander: Raw) -> None:
    """Clients that send calls and leave before the replies: the daemon shrugs."""
    for _ in range(20):
        raw = Raw.unix(pyvirtd.socket)
        raw.open()
        raw.send(7)  # capabilities: the slowest call there is
        raw.send(59)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # RST


def test_many_clients_at_once(pyvirtd: Pyvirtd) -> None:
    """200 clients connect at the same moment, open, call, and close."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(200)

    def client() -> None:
        try:
            barrier.wait(timeout=30)
            with Raw.unix(pyvirtd.socket) as raw:
                raw.open()
                assert raw.call("CONNECT_GET_TYPE").type == "QEMU"
                assert raw.call("CONNECT_LIST_ALL_DOMAINS", need_results=1, flags=0).ret == 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
