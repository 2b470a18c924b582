# SPDX-License-Identifier: LGPL-2.1-or-later
"""XDR codecs: exact byte layouts, round trips, bounds checked before allocation."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvirt import _errcodes as codes
from pyvirt.rpc import xdr
from pyvirt.rpc.procedures import PROCEDURES
from pyvirt.rpc.xdr import (
    BOOL,
    CHAR,
    DOUBLE,
    HYPER,
    INT,
    NONNULL_DOMAIN,
    REMOTE_ERROR,
    REMOTE_STRING,
    STRING_MAX,
    TYPED_PARAM,
    UCHAR,
    UHYPER,
    UINT,
    USHORT,
    UUID,
    Array,
    Chars,
    FixedArray,
    FixedOpaque,
    Opaque,
    ProtocolError,
    String,
    Struct,
    Union,
    UnionValue,
)


def u32(*values: int) -> bytes:
    return b"".join(struct.pack(">I", v & 0xFFFFFFFF) for v in values)


# ---- exact layouts ----

@pytest.mark.parametrize("codec, value, wire", [
    (INT, -1, bytes.fromhex("ffffffff")),
    (INT, 0x01020304, bytes.fromhex("01020304")),
    (UINT, 0xFFFFFFFE, bytes.fromhex("fffffffe")),
    (HYPER, -2, bytes.fromhex("fffffffffffffffe")),
    (UHYPER, 7002022, bytes.fromhex("00000000006ad7a6")),
    (BOOL, True, bytes.fromhex("00000001")),
    (BOOL, False, bytes.fromhex("00000000")),
    (UCHAR, 255, bytes.fromhex("000000ff")),
    (CHAR, -1, bytes.fromhex("ffffffff")),
    (USHORT, 2, bytes.fromhex("00000002")),
    (DOUBLE, 1.0, bytes.fromhex("3ff0000000000000")),
    (String(), "", bytes.fromhex("00000000")),
    (String(), "abc", bytes.fromhex("00000003 61626300")),
    (String(), "abcd", bytes.fromhex("00000004 61626364")),
    (String(), "abcde", bytes.fromhex("00000005 61626364 65000000")),
    (REMOTE_STRING, None, bytes.fromhex("00000000")),
    (REMOTE_STRING, "x", bytes.fromhex("00000001 00000001 78000000")),
    (Opaque(8), b"\x01", bytes.fromhex("00000001 01000000")),
    (FixedOpaque(3), b"\x01\x02\x03", bytes.fromhex("01020300")),
    (UUID, bytes(range(16)), bytes(range(16))),
    (Array(INT, 4), [1, -2], bytes.fromhex("00000002 00000001 fffffffe")),
    (FixedArray(USHORT, 2), [1, 2], bytes.fromhex("00000001 00000002")),
    # char arrays: one 4-byte int per character, C's signed char for bytes above 127
    (Chars(4), b"a\xff", bytes.fromhex("00000002 00000061 ffffffff")),
    (Chars(3, fixed=True), b"ab\0", bytes.fromhex("00000061 00000062 00000000")),
    (Chars(8, text=True), "ok", bytes.fromhex("00000003 0000006f 0000006b 00000000")),
])
def test_layout(codec: xdr.Codec[Any], value: Any, wire: bytes) -> None:
    assert codec.encode(value) == wire
    assert codec.decode(wire) == value


def test_rfc4506_example_file() -> None:
    """RFC 4506 section 7: the 'sillyprog' file, a struct with a union arm and padded strings."""
    filekind = Union("filetype", {0: xdr.VOID, 1: String(255), 2: String(255)})
    file = Struct("file", [("filename", String(255)), ("type", filekind),
                           ("owner", String(32)), ("mode", UINT)])
    wire = bytes.fromhex("00000009 73696c6c 7970726f 67000000"
                         "00000002 00000004 6c697370"
                         "00000004 6a6f686e"
                         "000001ed")
    value = file(filename="sillyprog", type=UnionValue(2, "lisp"), owner="john", mode=0o755)
    assert file.encode(value) == wire
    assert len(wire) == 40
    assert file.decode(wire) == value


def test_nonnull_domain_layout() -> None:
    uuid = bytes.fromhex("c7a5fdbd-cdaf-9455-926a-d65c16db1809".replace("-", ""))
    wire = u32(4) + b"test" + uuid + u32(0xFFFFFFFF)
    dom = NONNULL_DOMAIN(name="test", uuid=uuid, id=-1)
    assert NONNULL_DOMAIN.encode(dom) == wire
    assert NONNULL_DOMAIN.encode({"name": "test", "uuid": uuid, "id": -1}) == wire
    assert NONNULL_DOMAIN.decode(wire) == dom


def test_remote_error_layout_of_no_domain() -> None:
    """The error virsh saw for ``dominfo nosuch`` (observed reference), field by field."""
    msg = b"Domain not found: no domain with matching name 'nosuch'"
    wire = (u32(42, 10, 1, len(msg)) + msg + b"\0" * (-len(msg) % 4) + u32(2)
            + u32(0)                 # dom: NULL
            + u32(1, 6) + b"nosuch\0\0" + u32(0, 0)  # str1 "nosuch", str2, str3 NULL
            + u32(0xFFFFFFFF, 0xFFFFFFFF)  # int1, int2
            + u32(0))                # net: NULL
    rec = REMOTE_ERROR.decode(wire)
    assert (rec.code, rec.domain, rec.level) == (codes.VIR_ERR_NO_DOMAIN, codes.VIR_FROM_QEMU, 2)
    assert rec.message == msg.decode()
    assert (rec.str1, rec.str2, rec.str3, rec.int1, rec.int2) == ("nosuch", None, None, -1, -1)
    assert REMOTE_ERROR.encode(rec) == wire


@pytest.mark.parametrize("disc, value, tail", [
    (1, -5, u32(0xFFFFFFFB)),
    (4, 2**64 - 1, bytes.fromhex("ffffffffffffffff")),
    (5, 0.5, bytes.fromhex("3fe0000000000000")),
    (6, 1, u32(1)),
    (7, "vda", u32(3) + b"vda\0"),
])
def test_typed_param_union(disc: int, value: Any, tail: bytes) -> None:
    param = TYPED_PARAM(field="f", value=UnionValue(disc, value))
    wire = u32(1) + b"f\0\0\0" + u32(disc) + tail
    assert TYPED_PARAM.encode(param) == wire
    assert TYPED_PARAM.decode(wire) == param


def test_union_unknown_arm() -> None:
    with pytest.raises(ProtocolError, match="no arm for discriminant 99"):
        TYPED_PARAM.decode(u32(1) + b"f\0\0\0" + u32(99))


def test_text_chars_stop_at_nul_and_carry_high_bytes() -> None:
    model = Chars(32, fixed=True, text=True)
    wire = model.encode("x86_64")
    assert len(wire) == 32 * 4
    assert model.decode(wire) == "x86_64"
    # both signs of a high byte are accepted: rpcgen's char is signed, u_char is not
    raw = Chars(2)
    assert raw.decode(u32(2, 0xFFFFFFFF) + u32(0xFF)) == b"\xff\xff"


# ---- refusals ----

@pytest.mark.parametrize("codec, wire, match", [
    (INT, b"\0\0\0", "truncated"),
    (BOOL, u32(2), "neither 0 nor 1"),
    (REMOTE_STRING, u32(2), "neither 0 nor 1"),
    (UCHAR, u32(256), "outside 0..255"),
    (String(3), u32(4) + b"abcd", "exceeds the maximum 3"),
    (String(), u32(STRING_MAX + 1), "exceeds the maximum"),
    (String(), u32(0xFFFFFFFF), "exceeds the maximum"),
    (String(), u32(100) + b"short", "needs at least 100 bytes"),
    (String(), u32(5) + b"abcde", "truncated"),           # the padding is missing
    (Opaque(10), u32(11), "exceeds the maximum 10"),
    (Array(INT, 2), u32(3), "exceeds the maximum 2"),
    (Array(NONNULL_DOMAIN, 16384), u32(16384) + b"\0" * 64, "needs at least"),
    (Chars(65536), u32(65536) + b"\0" * 8, "needs at least"),
    (Chars(4), u32(1, 300), "outside -128..255"),
    (INT, u32(1, 2), "trailing"),
])
def test_decode_refuses(codec: xdr.Codec[Any], wire: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        codec.decode(wire)
    assert (info.value.code, info.value.domain) == (codes.VIR_ERR_RPC, codes.VIR_FROM_RPC)


@pytest.mark.parametrize("codec, value", [
    (INT, 2**31), (UINT, -1), (INT, "1"), (INT, True), (UCHAR, 256), (BOOL, 2),
    (String(3), "abcd"), (String(), b"bytes"), (Opaque(1), b"ab"), (FixedOpaque(2), b"a"),
    (UUID, b"short"), (Array(INT, 1), [1, 2]), (FixedArray(INT, 2), [1]),
    (Chars(2, text=True), "ab"),  # the NUL makes three characters
    (Chars(4, text=True), "a\0b"), (NONNULL_DOMAIN, {"name": "x", "uuid": bytes(16)}),
    (NONNULL_DOMAIN, {"name": "x", "uuid": bytes(16), "id": 1, "extra": 2}),
    (NONNULL_DOMAIN, ("x", bytes(16), 1)), (TYPED_PARAM, {"field": "f", "value": 1}),
])
def test_encode_refuses(codec: xdr.Codec[Any], value: Any) -> None:
    with pytest.raises(ProtocolError, match="cannot encode"):
        codec.encode(value)


@pytest.mark.parametrize("codec, wire", [
    (String(), u32(STRING_MAX)),
    (Opaque(xdr.STRING_MAX), u32(STRING_MAX)),
    (Array(String(), 1 << 30), u32(1 << 30) + b"\0" * 16),
    (Array(INT, 0xFFFFFFFF), u32(0xFFFFFFFF) + b"\0" * 16),
])
def test_lying_length_allocates_nothing(codec: xdr.Codec[Any], wire: bytes) -> None:
    """A count within the cap but beyond the data is refused before anything is reserved."""
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            codec.decode(wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_surrogateescape_keeps_non_utf8_strings() -> None:
    wire = u32(2) + b"\xff\xfe\0\0"
    value = String().decode(wire)
    assert String().encode(value) == wire


# ---- properties over the whole procedure table ----

def _strategy(codec: xdr.Codec[Any]) -> st.SearchStrategy[Any]:
    """Values of any codec the table uses, kept small."""
    if isinstance(codec, xdr.Integer | xdr.SmallInt):
        lo, hi = codec._lo, codec._hi  # the test mirrors the codec's own range
        return st.integers(lo, hi)
    if isinstance(codec, xdr.Bool):
        return st.booleans()
    if isinstance(codec, xdr.Double):
        return st.floats(allow_nan=False)
    if isinstance(codec, xdr.Void):
        return st.none()
    if isinstance(codec, xdr.String):
        return st.text(max_size=20)
    if isinstance(codec, xdr.Opaque):
        return st.binary(max_size=20)
    if isinstance(codec, xdr.FixedOpaque):
        return st.binary(min_size=codec.size, max_size=codec.size)
    if isinstance(codec, xdr.Chars):
        if codec.text:
            # UTF-8 text without NUL: lone surrogates are not text and cannot be sent
            return st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                           max_size=10)
        return st.binary(min_size=codec.size if codec.fixed else 0, max_size=min(codec.size, 20))
    if isinstance(codec, xdr.Optional):
        return st.none() | _strategy(codec.inner)
    if isinstance(codec, xdr.Array):
        return st.lists(_strategy(codec.item), max_size=min(codec.max_len, 3))
    if isinstance(codec, xdr.FixedArray):
        return st.lists(_strategy(codec.item), min_size=codec.size, max_size=codec.size)
    if isinstance(codec, xdr.Struct):
        return st.builds(codec.cls, **{name: _strategy(c) for name, c in codec.fields})
    if isinstance(codec, xdr.Union):
        return st.one_of(*(st.tuples(st.just(d), _strategy(c)).map(lambda t: UnionValue(*t))
                           for d, c in codec.arms.items()))
    raise AssertionError(f"no strategy for {codec!r}")


_CODECS = sorted({id(c): c for p in PROCEDURES for c in (p.args, p.ret)}.values(),
                 key=lambda c: c.name) + [REMOTE_ERROR, TYPED_PARAM]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_layout_round_trips(data: st.DataObject) -> None:
    codec = data.draw(st.sampled_from(_CODECS))
    value = data.draw(_strategy(codec))
    assert codec.decode(codec.encode(value)) == value


# Words that steer decoders down deeper paths than uniform random bytes would.
_WORDS = st.sampled_from([0, 1, 2, 3, 4, 7, 16, 32, 255, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(
    0, 0xFFFFFFFF)


@settings(max_examples=600, deadline=None)
@given(codec=st.sampled_from(_CODECS),
       payload=st.binary(max_size=200) | st.lists(_WORDS, max_size=40).map(lambda w: u32(*w)))
def test_decoders_raise_only_protocol_errors(codec: xdr.Codec[Any], payload: bytes) -> None:
    try:
        codec.decode(payload)
    except ProtocolError:
        pass


# ---- the code compiled for busy structs behaves as the general code ----

_STRUCTS = [c for c in _CODECS if isinstance(c, Struct) and c.fields]
_BAD = [None, "x", b"x", 1.5, True, -1, 1 << 70, [], {}, {"no": 1}, 0]


def _compiled(codec: Struct) -> tuple[Any, Any]:
    return xdr._compile_struct(codec)


def _as_dicts(codec: xdr.Codec[Any], value: Any) -> Any:
    """The value with every struct record given as a dict of its fields (what handlers return)."""
    if isinstance(codec, Struct):
        return {name: _as_dicts(c, getattr(value, name)) for name, c in codec.fields}
    if isinstance(codec, xdr.Optional) and value is not None:
        return _as_dicts(codec.inner, value)
    return value


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the comparison is of the exception: its type and its words
        return (type(exc), str(exc))


def _pack_outcome(pack: Any, value: Any) -> Any:
    out = bytearray(b"head")
    result = _outcome(pack, value, out)
    return result if result[0] != "ok" else bytes(out)


def _unpack_outcome(unpack: Any, payload: bytes) -> Any:
    reader = xdr.Reader(b"\0" * 8 + payload, 8)
    result = _outcome(unpack, reader)
    return result, reader.offset if result[0] == "ok" else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_compiled_structs_encode_and_decode_as_the_general_code(data: st.DataObject) -> None:
    codec = data.draw(st.sampled_from(_STRUCTS))
    pack, unpack = _compiled(codec)
    value = data.draw(_strategy(codec))
    wire = codec.encode(value)
    for form in (value, _as_dicts(codec, value)):
        assert _pack_outcome(pack, form) == b"head" + wire
    assert _unpack_outcome(unpack, wire) == _unpack_outcome(codec._unpack_any, wire)
    assert _unpack_outcome(unpack, wire)[0] == ("ok", value)
    # every truncation fails with the same words
    for cut in range(len(wire)):
        assert _unpack_outcome(unpack, wire[:cut]) == _unpack_outcome(codec._unpack_any, wire[:cut])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_compiled_structs_refuse_bad_values_as_the_general_code(data: st.DataObject) -> None:
    codec = data.draw(st.sampled_from(_STRUCTS))
    pack, _ = _compiled(codec)
    value = _as_dicts(codec, data.draw(_strategy(codec)))
    # one field (of the struct or of a struct inside it) replaced, dropped, or one added
    target = value
    while True:
        key = data.draw(st.sampled_from(sorted(target)))
        inner = target[key]
        if isinstance(inner, dict) and inner and data.draw(st.booleans()):
            target = inner
            continue
        break
    action = data.draw(st.sampled_from(["replace", "drop", "add"]))
    if action == "replace":
        target[key] = data.draw(st.sampled_from(_BAD))
    elif action == "drop":
        del target[key]
    else:
        target["unknown_field"] = 1
    assert _pack_outcome(pack, value) == _pack_outcome(codec._pack_any, value)


@settings(max_examples=400, deadline=None)
@given(codec=st.sampled_from(_STRUCTS),
       payload=st.binary(max_size=120) | st.lists(_WORDS, max_size=30).map(lambda w: u32(*w)))
def test_compiled_structs_decode_garbage_as_the_general_code(codec: Struct, payload: bytes) -> None:
    _, unpack = _compiled(codec)
    assert _unpack_outcome(unpack, payload) == _unpack_outcome(codec._unpack_any, payload)


def test_a_busy_struct_switches_to_compiled_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # off (as for clients; a daemon started in this process may have turned it on): never compiled
    monkeypatch.setattr(xdr, "_compile_after", 0)  # restored after the test
    codec = Struct("Busy", [("name", String()), ("id", INT)])
    wire = codec.encode({"name": "a", "id": 1})
    for _ in range(20):
        assert codec.decode(wire) == codec(name="a", id=1)
    assert "unpack" not in vars(codec)
    xdr.compile_busy_structs(8)
    for _ in range(5):
        assert codec.decode(wire) == codec(name="a", id=1)
        assert codec.encode(codec(name="a", id=1)) == wire
    assert "pack" in vars(codec) and "unpack" in vars(codec)
    assert codec.unpack.__name__ == "unpack_Busy"
    with pytest.raises(ProtocolError, match="missing field 'id'"):
        codec.encode({"name": "a"})
