# SPDX-License-Identifier: LGPL-2.1-or-later
"""Framing, headers, the frame decoder, remote errors, and the procedure table's facts."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError, XMLError
from pyvirt.rpc import procedures
from pyvirt.rpc.procedures import PROCEDURES
from pyvirt.rpc.protocol import (
    MAX_FRAME,
    MIN_FRAME,
    FrameDecoder,
    Header,
    Message,
    MessageType,
    Program,
    ProtocolError,
    RemoteError,
    Status,
    decode_message,
    encode_message,
    error_from_remote,
    remote_error_record,
)
from pyvirt.rpc.xdr import REMOTE_ERROR


def u32(*values: int) -> bytes:
    return b"".join(struct.pack(">I", v & 0xFFFFFFFF) for v in values)


# ---- exact frames ----

def test_auth_list_call_frame() -> None:
    """The first frame virsh sends: AUTH_LIST, serial 0, header only (observed reference)."""
    frame = encode_message(Header(Program.REMOTE, 1, 66, MessageType.CALL, 0, Status.OK))
    assert frame == u32(28, 0x20008086, 1, 66, 0, 0, 0)
    assert decode_message(frame) == Message(Header(0x20008086, 1, 66, 0, 0, 0), b"")


def test_connect_open_call_frame() -> None:
    proc = procedures.lookup("CONNECT_OPEN")
    payload = proc.args.encode({"name": "qemu:///system", "flags": 1})
    frame = encode_message(Header(Program.REMOTE, 1, proc.number, MessageType.CALL, 2), payload)
    expected_payload = u32(1, 14) + b"qemu:///system\0\0" + u32(1)
    assert payload == expected_payload
    assert frame == u32(28 + len(expected_payload), 0x20008086, 1, 1, 0, 2, 0) + expected_payload


def test_error_reply_and_keepalive_frames() -> None:
    err = Header(Program.REMOTE, 1, 23, MessageType.REPLY, 7, Status.ERROR)
    assert err.pack() == u32(0x20008086, 1, 23, 1, 7, 1)
    ping = encode_message(Header(Program.KEEPALIVE, 1, 1, MessageType.MESSAGE, 0))
    assert ping == u32(28, 0x6B656570, 1, 1, 2, 0, 0)


def test_with_fds_carries_a_count_before_the_payload() -> None:
    h = Header(Program.REMOTE, 1, 309, MessageType.CALL_WITH_FDS, 3)
    frame = encode_message(h, b"\0\0\0\x05", nfds=2)
    assert frame == u32(36) + h.pack() + u32(2) + u32(5)
    assert decode_message(frame) == Message(h, u32(5), nfds=2)
    with pytest.raises(ProtocolError, match="at most 32"):
        decode_message(u32(32) + h.pack() + u32(33))
    with pytest.raises(ProtocolError, match="cannot carry descriptors"):
        encode_message(Header(Program.REMOTE, 1, 1, MessageType.CALL, 0), nfds=1)


def test_encode_refuses_oversized_message() -> None:
    with pytest.raises(ProtocolError, match="exceeds the maximum"):
        encode_message(Header(Program.REMOTE, 1, 7, MessageType.REPLY, 0),
                       bytes(MAX_FRAME - MIN_FRAME + 1))


def test_decode_message_checks_the_length_word() -> None:
    frame = encode_message(Header(Program.REMOTE, 1, 3, MessageType.CALL, 0), b"abcd")
    with pytest.raises(ProtocolError, match="frame has"):
        decode_message(frame + b"x")
    with pytest.raises(ProtocolError, match="no length word"):
        decode_message(b"\0\0")


# ---- the incremental decoder ----

def _frames(n: int) -> tuple[list[Message], bytes]:
    msgs = [Message(Header(Program.REMOTE, 1, 3 + i, MessageType.REPLY, i), bytes([i]) * (4 * i))
            for i in range(n)]
    return msgs, b"".join(encode_message(m.header, m.payload) for m in msgs)


def test_decoder_byte_by_byte() -> None:
    msgs, wire = _frames(4)
    dec = FrameDecoder()
    out: list[Message] = []
    for i in range(len(wire)):
        out += dec.feed(wire[i:i + 1])
    assert out == msgs
    assert dec.buffered == 0


def test_decoder_many_in_one_chunk_and_partial_tail() -> None:
    msgs, wire = _frames(3)
    dec = FrameDecoder()
    assert dec.feed(wire + wire[:10]) == msgs
    assert dec.buffered == 10


@pytest.mark.parametrize("length, ok", [
    (0, False), (27, False), (MIN_FRAME, True), (MAX_FRAME, True), (MAX_FRAME + 1, False),
    (0xFFFFFFFF, False),
])
def test_decoder_checks_length_on_arrival(length: int, ok: bool) -> None:
    """The length word alone decides: a bad one is refused before its body is awaited."""
    dec = FrameDecoder()
    if ok:
        assert dec.feed(u32(length)) == []
    else:
        with pytest.raises(ProtocolError, match="message length"):
            dec.feed(u32(length))


def test_decoder_stays_failed() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(u32(5))
    _, wire = _frames(1)
    with pytest.raises(ProtocolError, match="already failed"):
        dec.feed(wire)


def test_max_frame_is_32_mib_plus_length_word() -> None:
    assert MAX_FRAME == 32 * 1024 * 1024 + 4
    h = Header(Program.REMOTE, 1, 7, MessageType.REPLY, 0)
    frame = encode_message(h, bytes(MAX_FRAME - MIN_FRAME))
    assert FrameDecoder().feed(frame)[0].header == h


_headers = st.builds(Header, st.sampled_from(list(Program)), st.just(1), st.integers(-5, 500),
                     st.sampled_from([0, 1, 2, 3, 6]), st.integers(0, 0xFFFFFFFF),
                     st.sampled_from(list(Status)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_headers, st.binary(max_size=64)), max_size=6), st.data())
def test_decoder_reassembles_any_split(msgs: list[tuple[Header, bytes]], data: st.DataObject) -> None:
    wire = b"".join(encode_message(h, p) for h, p in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    dec = FrameDecoder()
    out: list[Message] = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        out += dec.feed(wire[start:end])
    assert out == [Message(h, p) for h, p in msgs]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64) | st.sampled_from([u32(28), u32(32), u32(36), u32(4)]),
                max_size=12))
def test_decoder_raises_only_protocol_errors(chunks: list[bytes]) -> None:
    dec = FrameDecoder()
    try:
        for chunk in chunks:
            for msg in dec.feed(chunk):
                assert MIN_FRAME - 4 <= len(msg.payload) + 24 + (4 if msg.nfds else 0) <= MAX_FRAME
    except ProtocolError:
        pass


# ---- remote errors ----

def test_remote_error_becomes_pyvirt_error() -> None:
    rec = REMOTE_ERROR(code=42, domain=10, message="Domain not found", level=2, dom=None,
                       str1="x", str2=None, str3=None, int1=-1, int2=-1, net=None)
    err = error_from_remote(rec)
    assert isinstance(err, PyvirtError) and isinstance(err, RemoteError)
    assert (err.get_error_code(), err.get_error_domain(), err.get_error_level()) == (42, 10, 2)
    assert str(err) == "Domain not found" and err.get_str1() == "x" and err.get_int1() == -1
    back = remote_error_record(err)
    assert REMOTE_ERROR.encode(back) == REMOTE_ERROR.encode(rec)


def test_error_without_message() -> None:
    rec = REMOTE_ERROR(code=1, domain=7, message=None, level=2, dom=None, str1=None, str2=None,
                       str3=None, int1=0, int2=0, net=None)
    assert error_from_remote(rec).message


def test_pyvirt_errors_keep_code_and_domain_on_the_wire() -> None:
    rec = remote_error_record(XMLError("bad XML: missing <name>"))
    assert (rec.code, rec.domain, rec.message) == (codes.VIR_ERR_XML_ERROR, codes.VIR_FROM_DOMAIN,
                                                   "bad XML: missing <name>")
    internal = remote_error_record(KeyError("boom"))
    assert (internal.code, internal.domain) == (codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_RPC)


# ---- the procedure table ----

# Numbers from remote_protocol.x / qemu_protocol.x / virkeepaliveprotocol.x and the observed wire.
NUMBERS = {
    "REMOTE_PROC_CONNECT_OPEN": 1, "REMOTE_PROC_CONNECT_CLOSE": 2, "REMOTE_PROC_CONNECT_GET_TYPE": 3,
    "REMOTE_PROC_CONNECT_GET_VERSION": 4, "REMOTE_PROC_NODE_GET_INFO": 6,
    "REMOTE_PROC_CONNECT_GET_CAPABILITIES": 7, "REMOTE_PROC_DOMAIN_CREATE": 9,
    "REMOTE_PROC_DOMAIN_CREATE_XML": 10, "REMOTE_PROC_DOMAIN_DEFINE_XML": 11,
    "REMOTE_PROC_DOMAIN_DESTROY": 12, "REMOTE_PROC_DOMAIN_GET_XML_DESC": 14,
    "REMOTE_PROC_DOMAIN_GET_AUTOSTART": 15, "REMOTE_PROC_DOMAIN_GET_INFO": 16,
    "REMOTE_PROC_DOMAIN_GET_MAX_MEMORY": 17, "REMOTE_PROC_DOMAIN_GET_OS_TYPE": 19,
    "REMOTE_PROC_CONNECT_LIST_DEFINED_DOMAINS": 21, "REMOTE_PROC_DOMAIN_LOOKUP_BY_ID": 22,
    "REMOTE_PROC_DOMAIN_LOOKUP_BY_NAME": 23, "REMOTE_PROC_DOMAIN_LOOKUP_BY_UUID": 24,
    "REMOTE_PROC_CONNECT_NUM_OF_DEFINED_DOMAINS": 25, "REMOTE_PROC_DOMAIN_REBOOT": 27,
    "REMOTE_PROC_DOMAIN_RESUME": 28, "REMOTE_PROC_DOMAIN_SET_AUTOSTART": 29,
    "REMOTE_PROC_DOMAIN_SHUTDOWN": 33, "REMOTE_PROC_DOMAIN_SUSPEND": 34,
    "REMOTE_PROC_DOMAIN_UNDEFINE": 35, "REMOTE_PROC_CONNECT_LIST_DOMAINS": 37,
    "REMOTE_PROC_CONNECT_NUM_OF_DOMAINS": 51, "REMOTE_PROC_CONNECT_GET_HOSTNAME": 59,
    "REMOTE_PROC_CONNECT_SUPPORTS_FEATURE": 60, "REMOTE_PROC_AUTH_LIST": 66,
    "REMOTE_PROC_AUTH_SASL_INIT": 67, "REMOTE_PROC_AUTH_SASL_START": 68,
    "REMOTE_PROC_AUTH_SASL_STEP": 69, "REMOTE_PROC_AUTH_POLKIT": 70,
    "REMOTE_PROC_DOMAIN_GET_SECURITY_LABEL": 121, "REMOTE_PROC_NODE_GET_SECURITY_MODEL": 122,
    "REMOTE_PROC_CONNECT_IS_SECURE": 149, "REMOTE_PROC_DOMAIN_IS_ACTIVE": 150,
    "REMOTE_PROC_DOMAIN_IS_PERSISTENT": 151, "REMOTE_PROC_CONNECT_GET_LIB_VERSION": 157,
    "REMOTE_PROC_DOMAIN_HAS_MANAGED_SAVE_IMAGE": 183, "REMOTE_PROC_DOMAIN_SNAPSHOT_NUM": 187,
    "REMOTE_PROC_DOMAIN_CREATE_WITH_FLAGS": 196, "REMOTE_PROC_DOMAIN_OPEN_CONSOLE": 201,
    "REMOTE_PROC_DOMAIN_IS_UPDATED": 202, "REMOTE_PROC_CONNECT_GET_SYSINFO": 203,
    "REMOTE_PROC_DOMAIN_SCREENSHOT": 211, "REMOTE_PROC_DOMAIN_GET_STATE": 212,
    "REMOTE_PROC_DOMAIN_UNDEFINE_FLAGS": 231, "REMOTE_PROC_DOMAIN_DESTROY_FLAGS": 234,
    "REMOTE_PROC_DOMAIN_RESET": 245, "REMOTE_PROC_DOMAIN_SHUTDOWN_FLAGS": 258,
    "REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS": 273,
    "REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY": 316,
    "REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY": 317,
    "REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE": 318,
    "REMOTE_PROC_CONNECT_GET_DOMAIN_CAPABILITIES": 342, "REMOTE_PROC_DOMAIN_DEFINE_XML_FLAGS": 350,
    "REMOTE_PROC_CONNECT_REGISTER_CLOSE_CALLBACK": 360,
    "REMOTE_PROC_CONNECT_UNREGISTER_CLOSE_CALLBACK": 361,
    "REMOTE_PROC_CONNECT_EVENT_CONNECTION_CLOSED": 362, "REMOTE_PROC_DOMAIN_GET_MESSAGES": 426,
    "QEMU_PROC_DOMAIN_MONITOR_COMMAND": 1, "KEEPALIVE_PROC_PING": 1, "KEEPALIVE_PROC_PONG": 2,
}


@pytest.mark.parametrize("name, number", sorted(NUMBERS.items()))
def test_procedure_numbers(name: str, number: int) -> None:
    proc = procedures.lookup(name)
    assert proc.number == number
    assert PROCEDURES.get(proc.program, number) is proc


def test_table_is_consistent() -> None:
    seen = set()
    for proc in PROCEDURES:
        assert (proc.program, proc.number) not in seen
        seen.add((proc.program, proc.number))
        assert procedures.lookup(proc.full_name) is proc
        if proc.event:
            assert proc.ret.name == "void"
    assert procedures.lookup("domain_lookup_by_name").number == 23
    with pytest.raises(KeyError, match="unknown RPC procedure"):
        procedures.lookup("DOMAIN_GET_ID")  # the id is local to the client: no such procedure


@pytest.mark.parametrize("name, fields", [
    ("REMOTE_PROC_CONNECT_OPEN", ("name", "flags")),
    ("REMOTE_PROC_CONNECT_LIST_ALL_DOMAINS", ("need_results", "flags")),
    ("REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", ("eventID", "dom")),
    ("REMOTE_PROC_DOMAIN_EVENT_CALLBACK_LIFECYCLE", ("callbackID", "msg")),
    ("QEMU_PROC_DOMAIN_MONITOR_COMMAND", ("dom", "cmd", "flags")),
    ("REMOTE_PROC_DOMAIN_OPEN_CONSOLE", ("dom", "dev_name", "flags")),
])
def test_argument_layouts(name: str, fields: tuple[str, ...]) -> None:
    assert procedures.lookup(name).args.field_names == fields  # type: ignore[attr-defined]


def test_lifecycle_event_wire_layout() -> None:
    proc = procedures.lookup("DOMAIN_EVENT_CALLBACK_LIFECYCLE")
    uuid = bytes(range(16))
    wire = u32(3) + u32(2) + b"vm\0\0" + uuid + u32(5) + u32(2, 0)
    rec = proc.args.decode(wire)
    assert (rec.callbackID, rec.msg.dom.name, rec.msg.dom.id, rec.msg.event) == (3, "vm", 5, 2)
    assert proc.args.encode(rec) == wire


def test_node_get_info_reply_layout() -> None:
    ret = procedures.lookup("NODE_GET_INFO").ret
    wire = ret.encode({"model": "x86_64", "memory": 1 << 40, "cpus": 2, "mhz": 2599, "nodes": 1,
                       "sockets": 1, "cores": 2, "threads": 1})
    assert len(wire) == 32 * 4 + 8 + 6 * 4
    assert wire[:8] == u32(ord("x"), ord("8"))
    assert wire[128:136] == struct.pack(">Q", 1 << 40)
