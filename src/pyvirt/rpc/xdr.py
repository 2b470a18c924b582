# SPDX-License-Identifier: LGPL-2.1-or-later
"""XDR (RFC 4506) codecs, declared once as small composable objects, plus libvirt's shared types.

A codec packs a Python value into a ``bytearray`` and unpacks it from a :class:`Reader`. Types are
built by composition, the way the ``.x`` files declare them::

    NONNULL_DOMAIN = Struct("NonnullDomain", [("name", NONNULL_STRING), ("uuid", UUID), ("id", INT)])

Decoding never trusts a length field: every length is checked against the type's declared maximum
and against the bytes actually left *before* anything is allocated, so a hostile 4-byte count cannot
make the decoder reserve gigabytes. Anything malformed raises :class:`ProtocolError`, and only that.

Value mapping: integers are ``int``; ``bool`` is ``bool``; strings are ``str`` (UTF-8, with
``surrogateescape`` so bytes that are not UTF-8 survive a round trip, as libvirt passes C strings
through unchecked); opaque data and ``char`` arrays are ``bytes`` (or ``str`` for the text
variants); optional data is the value or ``None``; arrays are lists; a struct decodes to an instance
of a dataclass made for it (encoding also accepts any mapping with the same keys); a union decodes
to :class:`UnionValue`.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

__all__ = [
    "ProtocolError", "Reader", "Codec", "Integer", "SmallInt", "Bool", "Double", "Void",
    "String", "Opaque", "FixedOpaque", "Chars", "Optional", "Array", "FixedArray", "Struct",
    "Union", "UnionValue",
    "INT", "UINT", "HYPER", "UHYPER", "CHAR", "UCHAR", "SHORT", "USHORT", "BOOL", "DOUBLE", "VOID",
    "STRING_MAX", "UUID_LEN", "NONNULL_STRING", "REMOTE_STRING", "UUID", "NONNULL_DOMAIN",
    "REMOTE_DOMAIN", "NONNULL_NETWORK", "REMOTE_NETWORK", "REMOTE_ERROR", "TypedParamType",
    "TYPED_PARAM_VALUE", "TYPED_PARAM",
]

T = TypeVar("T")

#: REMOTE_STRING_MAX / VIR_NET_MESSAGE_STRING_MAX: the longest string either side accepts.
STRING_MAX = 4 * 1024 * 1024
#: VIR_UUID_BUFLEN
UUID_LEN = 16

_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class ProtocolError(PyvirtError):
    """Bytes that do not follow libvirt's RPC protocol, or a value that cannot be encoded in it.

    libvirt reports these as VIR_ERR_RPC in the RPC domain; so does pyvirt, so that a peer's
    garbage surfaces as the same error a libvirt client would show.
    """

    code = codes.VIR_ERR_RPC
    domain = codes.VIR_FROM_RPC


def _pad_len(n: int) -> int:
    return (4 - n % 4) % 4


class Reader:
    """A cursor over one received payload; every read is bounds-checked first."""

    __slots__ = ("_buf", "_pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview, start: int = 0,
                 end: int | None = None) -> None:
        self._buf = bytes(data) if not isinstance(data, bytes) else data
        self._pos = start
        self._end = len(self._buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    @property
    def offset(self) -> int:
        return self._pos

    def need(self, n: int, what: str) -> None:
        if n > self._end - self._pos:
            raise ProtocolError(f"XDR data truncated: {what} needs {n} bytes at offset {self._pos}, "
                                f"only {self._end - self._pos} left")

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        self.need(fmt.size, what)
        values = fmt.unpack_from(self._buf, self._pos)
        self._pos += fmt.size
        return values

    def take(self, n: int, what: str) -> bytes:
        """``n`` bytes followed by the XDR padding to a multiple of 4, which is skipped."""
        total = n + _pad_len(n)
        self.need(total, what)
        data = self._buf[self._pos:self._pos + n]
        self._pos += total
        return data

    def length(self, limit: int, what: str, unit: int = 1) -> int:
        """A u32 count, refused when above ``limit`` or when ``count * unit`` bytes cannot be left.

        ``unit`` is the smallest wire size of one element: checking it here is what keeps a lying
        count from allocating before the truncation is noticed.
        """
        (n,) = self.unpack(_U32, what + " length")
        if n > limit:
            raise ProtocolError(f"{what}: length {n} exceeds the maximum {limit}")
        if n * unit > self._end - self._pos:
            raise ProtocolError(f"{what}: length {n} needs at least {n * unit} bytes, "
                                f"only {self._end - self._pos} left")
        return int(n)

    def finish(self, what: str) -> None:
        if self._pos != self._end:
            raise ProtocolError(f"{what}: {self._end - self._pos} unexpected trailing bytes")


_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")


class Codec(Generic[T]):
    """One XDR type. ``min_size`` is its smallest encoding, used to bound array counts."""

    min_size: int = 0
    name: str = "value"

    def pack(self, value: T, out: bytearray) -> None:
        raise NotImplementedError

    def unpack(self, reader: Reader) -> T:
        raise NotImplementedError

    def encode(self, value: T) -> bytes:
        out = bytearray()
        self.pack(value, out)
        return bytes(out)

    def decode(self, data: bytes | bytearray | memoryview) -> T:
        """Decode a whole payload: trailing bytes are an error, since layouts are fixed."""
        reader = Reader(data)
        value = self.unpack(reader)
        reader.finish(self.name)
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _encode_error(codec: Codec[Any], value: object, why: str) -> ProtocolError:
    return ProtocolError(f"cannot encode {value!r:.80} as XDR {codec.name}: {why}")


class Integer(Codec[int]):
    """int, unsigned int, hyper, unsigned hyper."""

    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self._fmt = struct.Struct(fmt)
        self.min_size = self._fmt.size
        bits = self._fmt.size * 8
        signed = fmt[-1].islower()
        self._lo = -(1 << (bits - 1)) if signed else 0
        self._hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1

    def pack(self, value: int, out: bytearray) -> None:
        # the common case first: a plain int in range (bool's type is bool, never int)
        if type(value) is not int or not self._lo <= value <= self._hi:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _encode_error(self, value, "not an integer")
            if not self._lo <= value <= self._hi:
                raise _encode_error(self, value, f"outside {self._lo}..{self._hi}")
        out += self._fmt.pack(value)

    def unpack(self, reader: Reader) -> int:
        fmt = self._fmt
        pos = reader._pos
        if fmt.size > reader._end - pos:
            reader.need(fmt.size, self.name)  # raises
        reader._pos = pos + fmt.size
        return int(fmt.unpack_from(reader._buf, pos)[0])


class SmallInt(Codec[int]):
    """char, unsigned char, short, unsigned short: XDR widens each to one 4-byte int."""

    min_size = 4

    def __init__(self, name: str, lo: int, hi: int) -> None:
        self.name = name
        self._lo, self._hi = lo, hi
        self._fmt = _I32 if lo < 0 else _U32

    def pack(self, value: int, out: bytearray) -> None:
        if type(value) is not int or not self._lo <= value <= self._hi:
            if isinstance(value, bool) or not isinstance(value, int) or not self._lo <= value <= self._hi:
                raise _encode_error(self, value, f"not an integer in {self._lo}..{self._hi}")
        out += self._fmt.pack(value)

    def unpack(self, reader: Reader) -> int:
        (value,) = reader.unpack(self._fmt, self.name)
        if not self._lo <= value <= self._hi:
            raise ProtocolError(f"XDR {self.name} value {value} outside {self._lo}..{self._hi}")
        return int(value)


class Bool(Codec[bool]):
    """RFC 4506 bool: exactly 0 or 1 (a strict reading; libvirt only ever sends these)."""

    name = "bool"
    min_size = 4

    def pack(self, value: bool, out: bytearray) -> None:
        if value not in (True, False):
            raise _encode_error(self, value, "not a boolean")
        out += _U32.pack(1 if value else 0)

    def unpack(self, reader: Reader) -> bool:
        (value,) = reader.unpack(_U32, self.name)
        if value > 1:
            raise ProtocolError(f"XDR bool value {value} is neither 0 nor 1")
        return value == 1


class Double(Codec[float]):
    name = "double"
    min_size = 8
    _fmt = struct.Struct(">d")

    def pack(self, value: float, out: bytearray) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _encode_error(self, value, "not a number")
        out += self._fmt.pack(value)

    def unpack(self, reader: Reader) -> float:
        return float(reader.unpack(self._fmt, self.name)[0])


class Void(Codec[None]):
    """No data at all: the payload of procedures without arguments or results."""

    name = "void"

    def pack(self, value: None, out: bytearray) -> None:
        if value is not None and value != {}:
            raise _encode_error(self, value, "void takes no value")

    def unpack(self, reader: Reader) -> None:
        return None


class String(Codec[str]):
    """string<max>: u32 length, the bytes, zero padding to 4. No terminating NUL on the wire."""

    min_size = 4

    def __init__(self, max_len: int = STRING_MAX, name: str = "string") -> None:
        self.max_len = max_len
        self.name = f"{name}<{max_len}>"

    def pack(self, value: str, out: bytearray) -> None:
        if not isinstance(value, str):
            raise _encode_error(self, value, "not a str")
        data = value.encode("utf-8", "surrogateescape")
        n = len(data)
        if n > self.max_len:
            raise _encode_error(self, value, f"{n} bytes exceed the maximum {self.max_len}")
        out += _U32.pack(n)
        out += data
        if n % 4:
            out += _PAD[n % 4]

    def unpack(self, reader: Reader) -> str:
        n = reader.length(self.max_len, self.name)
        return reader.take(n, self.name).decode("utf-8", "surrogateescape")


class Opaque(Codec[bytes]):
    """opaque<max>: variable-length bytes."""

    min_size = 4

    def __init__(self, max_len: int, name: str = "opaque") -> None:
        self.max_len = max_len
        self.name = f"{name}<{max_len}>"

    def pack(self, value: bytes, out: bytearray) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise _encode_error(self, value, "not bytes")
        if len(value) > self.max_len:
            raise _encode_error(self, value, f"{len(value)} bytes exceed the maximum {self.max_len}")
        out += _U32.pack(len(value))
        out += value
        out += _PAD[len(value) % 4]

    def unpack(self, reader: Reader) -> bytes:
        n = reader.length(self.max_len, self.name)
        return reader.take(n, self.name)


class FixedOpaque(Codec[bytes]):
    """opaque[n]: exactly ``n`` bytes, padded to 4, no length word."""

    def __init__(self, size: int, name: str = "opaque") -> None:
        self.size = size
        self.min_size = size + _pad_len(size)
        self.name = f"{name}[{size}]"

    def pack(self, value: bytes, out: bytearray) -> None:
        if type(value) is not bytes or len(value) != self.size:
            if not isinstance(value, bytes | bytearray | memoryview) or len(value) != self.size:
                raise _encode_error(self, value, f"needs exactly {self.size} bytes")
        out += value
        if self.size % 4:
            out += _PAD[self.size % 4]

    def unpack(self, reader: Reader) -> bytes:
        return reader.take(self.size, self.name)


class Chars(Codec[Any]):
    """``char x[N]`` / ``char x<N>``: rpcgen sends every character as its own 4-byte int.

    Bytes above 127 travel as negative ints (C's ``char`` is signed); both signs are accepted on
    decode. With ``text=True`` the value is a ``str`` holding a C string: encoding appends the NUL
    (libvirt sends ``strlen + 1`` characters for labels and pads fixed buffers with NULs), decoding
    stops at the first NUL.
    """

    def __init__(self, size: int, *, fixed: bool = False, text: bool = False,
                 name: str = "char") -> None:
        self.size, self.fixed, self.text = size, fixed, text
        self.min_size = 4 * size if fixed else 4
        self.name = f"{name}[{size}]" if fixed else f"{name}<{size}>"

    def pack(self, value: Any, out: bytearray) -> None:
        if self.text:
            if not isinstance(value, str):
                raise _encode_error(self, value, "not a str")
            data = value.encode("utf-8", "surrogateescape")
            if b"\0" in data:
                raise _encode_error(self, value, "a C string cannot hold NUL")
            data += b"\0"
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        else:
            raise _encode_error(self, value, "not bytes")
        if self.fixed:
            if len(data) > self.size:
                raise _encode_error(self, value, f"longer than {self.size} characters")
            data = data.ljust(self.size, b"\0")
        else:
            if len(data) > self.size:
                raise _encode_error(self, value, f"longer than {self.size} characters")
            out += _U32.pack(len(data))
        out += struct.pack(f">{len(data)}i", *(b - 256 if b > 127 else b for b in data))

    def unpack(self, reader: Reader) -> Any:
        n = self.size if self.fixed else reader.length(self.size, self.name, unit=4)
        reader.need(4 * n, self.name)
        ints = reader.unpack(struct.Struct(f">{n}i"), self.name)
        if any(not -128 <= c <= 255 for c in ints):
            raise ProtocolError(f"XDR {self.name}: a character is outside -128..255")
        data = bytes(c & 0xFF for c in ints)
        if not self.text:
            return data
        return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


class Optional(Codec[Any]):
    """``T *x``: a bool, then the value when it is 1. ``None`` stands for NULL."""

    min_size = 4

    def __init__(self, inner: Codec[Any]) -> None:
        self.inner = inner
        self.name = f"{inner.name}*"

    def pack(self, value: Any, out: bytearray) -> None:
        if value is None:
            out += _U32.pack(0)
        else:
            out += _U32.pack(1)
            self.inner.pack(value, out)

    def unpack(self, reader: Reader) -> Any:
        (present,) = reader.unpack(_U32, self.name)
        if present == 0:
            return None
        if present != 1:
            raise ProtocolError(f"XDR optional {self.name}: discriminant {present} is neither 0 nor 1")
        return self.inner.unpack(reader)


class Array(Codec[list[Any]]):
    """``T x<max>``: a u32 count, then the items."""

    min_size = 4

    def __init__(self, item: Codec[Any], max_len: int) -> None:
        self.item, self.max_len = item, max_len
        self.name = f"{item.name}<{max_len}>"

    def pack(self, value: Sequence[Any], out: bytearray) -> None:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise _encode_error(self, value, "not a sequence")
        if len(value) > self.max_len:
            raise _encode_error(self, value, f"{len(value)} items exceed the maximum {self.max_len}")
        out += _U32.pack(len(value))
        for item in value:
            self.item.pack(item, out)

    def unpack(self, reader: Reader) -> list[Any]:
        n = reader.length(self.max_len, self.name, unit=self.item.min_size)
        return [self.item.unpack(reader) for _ in range(n)]


class FixedArray(Codec[list[Any]]):
    """``T x[n]``: exactly ``n`` items, no count."""

    def __init__(self, item: Codec[Any], size: int) -> None:
        self.item, self.size = item, size
        self.min_size = item.min_size * size
        self.name = f"{item.name}[{size}]"

    def pack(self, value: Sequence[Any], out: bytearray) -> None:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != self.size:
            raise _encode_error(self, value, f"needs exactly {self.size} items")
        for item in value:
            self.item.pack(item, out)

    def unpack(self, reader: Reader) -> list[Any]:
        reader.need(self.min_size, self.name)
        return [self.item.unpack(reader) for _ in range(self.size)]


_CLASS_LOCK = threading.Lock()


class Struct(Codec[Any]):
    """A struct: its fields in declaration order. Calling it builds a value: ``DOM(name=...)``."""

    def __init__(self, name: str, fields: Sequence[tuple[str, Codec[Any]]]) -> None:
        self.name = name
        self.fields = tuple(fields)
        self.min_size = sum(codec.min_size for _, codec in self.fields)
        # Its value class is made when first needed: a daemon uses a few dozen of the hundreds of
        # structs, and each dataclass costs some 5 KiB of code and tables.
        self._cls: type | None = None
        # Every call of the daemon packs and unpacks structs: the per-field work is prepared
        # once here (the getters take all fields in one C call).
        names = tuple(f for f, _ in self.fields)
        self._names = names
        self._name_set = frozenset(names)
        self._codecs = tuple(codec for _, codec in self.fields)
        if len(names) == 1:
            one_attr, one_item = operator.attrgetter(names[0]), operator.itemgetter(names[0])
            self._attrs: Callable[[Any], tuple[Any, ...]] = lambda v: (one_attr(v),)
            self._items: Callable[[Any], tuple[Any, ...]] = lambda v: (one_item(v),)
        elif names:
            self._attrs = operator.attrgetter(*names)
            self._items = operator.itemgetter(*names)
        else:
            self._attrs = self._items = lambda v: ()
        self._calls = 0

    @property
    def cls(self) -> type:
        """The class of decoded values (a slotted dataclass)."""
        cls = self._cls
        if cls is None:
            with _CLASS_LOCK:  # one class per struct, whichever thread asks first
                cls = self._cls
                if cls is None:
                    cls = dataclasses.make_dataclass(self.name, [(f, Any) for f in self._names],
                                                     slots=True)
                    cls.__module__ = __name__
                    self._cls = cls
        return cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cls(*args, **kwargs)

    @property
    def field_names(self) -> tuple[str, ...]:
        return self._names

    def pack(self, value: Any, out: bytearray) -> None:
        self._count()
        self._pack_any(value, out)

    def unpack(self, reader: Reader) -> Any:
        self._count()
        return self._unpack_any(reader)

    def _count(self) -> None:
        # Once a struct proves busy, its pack and unpack are replaced by code made for it
        # (_compile_struct), which the instance's own attributes then shadow these with.
        if _compile_after:
            self._calls += 1
            if self._calls == _compile_after and self._codecs:
                pack, unpack = _compile_struct(self)
                self.__dict__["pack"], self.__dict__["unpack"] = pack, unpack

    def _pack_any(self, value: Any, out: bytearray) -> None:
        cls = self._cls  # (None: no value of this struct exists yet)
        if cls is not None and type(value) is cls:
            items = self._attrs(value)
        elif type(value) is dict or isinstance(value, Mapping):
            if not self._name_set.issuperset(value):
                unknown = ", ".join(sorted(set(value) - self._name_set))
                raise _encode_error(self, value, f"unknown fields: {unknown}")
            try:
                items = self._items(value)
            except KeyError:
                missing = next(f for f in self._names if f not in value)
                raise _encode_error(self, value, f"missing field '{missing}'") from None
        elif cls is not None and isinstance(value, cls):
            items = self._attrs(value)
        else:
            raise _encode_error(self, value, f"expected a {self.name} or a mapping of its fields")
        for codec, item in zip(self._codecs, items, strict=True):
            codec.pack(item, out)

    def _unpack_any(self, reader: Reader) -> Any:
        return self.cls(*[codec.unpack(reader) for codec in self._codecs])


#: Calls of a struct's pack and unpack after which they are compiled; 0: never (see
#: :func:`compile_busy_structs`).
_compile_after = 0


def compile_busy_structs(after: int = 16) -> None:
    """From now on, give a struct packed or unpacked ``after`` times code made for it, which
    does the same several times faster. Compiling one costs about as much as a thousand calls
    save: a server turns this on, a short-lived client does not."""
    global _compile_after
    _compile_after = after


class _Emitter:
    """Python source for one struct's pack or unpack, with the objects it refers to."""

    def __init__(self, fail: str) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"_U32": _U32, "_PAD": _PAD}
        self.fail = fail
        self._n = 0

    def var(self) -> str:
        self._n += 1
        return f"v{self._n}"

    def const(self, obj: Any) -> str:
        name = f"k{len(self.env)}"
        self.env[name] = obj
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def check(self, indent: int, condition: str) -> None:
        self.emit(indent, f"if {condition}: {self.fail}")

    def function(self, name: str, params: str) -> Callable[..., Any]:
        source = f"def {name}({params}):\n" + "\n".join(self.lines) + "\n"
        namespace = dict(self.env)
        exec(compile(source, f"<xdr {name}>", "exec"), namespace)  # noqa: S102 - our own code
        fn: Callable[..., Any] = namespace[name]
        return fn


def _fixed_field(codec: Codec[Any]) -> tuple[str, int, int, str] | None:
    """(struct format character, lo, hi, kind) of a fixed-size scalar field, else None."""
    if isinstance(codec, Integer):
        return codec._fmt.format[-1], codec._lo, codec._hi, "int"
    if isinstance(codec, SmallInt):
        return codec._fmt.format[-1], codec._lo, codec._hi, "small"
    if isinstance(codec, Bool):
        return "I", 0, 1, "bool"
    if isinstance(codec, Double):
        return "d", 0, 0, "double"
    return None


def _fixed_run(codecs: Sequence[Codec[Any]], i: int) -> list[tuple[str, int, int, str]]:
    run = []
    while i < len(codecs) and (spec := _fixed_field(codecs[i])) is not None:
        run.append(spec)
        i += 1
    return run


def _emit_unpack(g: _Emitter, st: Struct, indent: int) -> str:
    """Statements decoding ``st`` at ``pos``; the name of the variable that holds it."""
    values: list[str] = []
    codecs = st._codecs
    i = 0
    while i < len(codecs):
        codec = codecs[i]
        run = _fixed_run(codecs, i)
        if run:
            fmt = struct.Struct(">" + "".join(spec[0] for spec in run))
            names = [g.var() for _ in run]
            g.check(indent, f"end - pos < {fmt.size}")
            g.emit(indent, f"({', '.join(names)},) = {g.const(fmt)}.unpack_from(buf, pos)")
            g.emit(indent, f"pos += {fmt.size}")
            for name, (_, lo, hi, kind) in zip(names, run, strict=True):
                if kind == "small":
                    g.check(indent, f"not {lo} <= {name} <= {hi}")
                elif kind == "bool":
                    g.check(indent, f"{name} > 1")
                    g.emit(indent, f"{name} = {name} == 1")
            values += names
            i += len(run)
            continue
        name = g.var()
        if isinstance(codec, String | Opaque):
            g.check(indent, "end - pos < 4")
            g.emit(indent, "(_n,) = _U32.unpack_from(buf, pos)")
            g.emit(indent, "_t = _n + (-_n & 3)")
            g.check(indent, f"_n > {codec.max_len} or _t > end - pos - 4")
            g.emit(indent, f"{name} = buf[pos + 4:pos + 4 + _n]"
                   + (".decode('utf-8', 'surrogateescape')" if isinstance(codec, String) else ""))
            g.emit(indent, "pos += 4 + _t")
        elif isinstance(codec, FixedOpaque):
            g.check(indent, f"end - pos < {codec.min_size}")
            g.emit(indent, f"{name} = buf[pos:pos + {codec.size}]")
            g.emit(indent, f"pos += {codec.min_size}")
        elif isinstance(codec, Struct):
            name = _emit_unpack(g, codec, indent)
        elif isinstance(codec, Optional) and isinstance(codec.inner, Struct):
            g.check(indent, "end - pos < 4")
            g.emit(indent, "(_n,) = _U32.unpack_from(buf, pos)")
            g.emit(indent, "pos += 4")
            g.emit(indent, "if _n == 1:")
            g.emit(indent + 1, f"{name} = {_emit_unpack(g, codec.inner, indent + 1)}")
            g.emit(indent, "elif _n == 0:")
            g.emit(indent + 1, f"{name} = None")
            g.emit(indent, f"else: {g.fail}")
        else:  # the codec's own unpack, from where this code got to
            g.emit(indent, "reader._pos = pos")
            g.emit(indent, f"{name} = {g.const(codec)}.unpack(reader)")
            g.emit(indent, "pos = reader._pos")
        values.append(name)
        i += 1
    result = g.var()
    g.emit(indent, f"{result} = {g.const(st.cls)}({', '.join(values)})")
    return result


def _emit_fields_of(g: _Emitter, st: Struct, value: str, indent: int) -> list[str]:
    """Statements taking the fields of ``value`` (the struct's record or an exact mapping of its
    fields); the names of the variables that hold them."""
    names = [g.var() for _ in st._names]
    g.emit(indent, f"if type({value}) is {g.const(st.cls)}:")
    for name, field in zip(names, st._names, strict=True):
        g.emit(indent + 1, f"{name} = {value}.{field}")
    g.emit(indent, f"elif type({value}) is dict and len({value}) == {len(names)}:")
    g.emit(indent + 1, "try:")
    for name, field in zip(names, st._names, strict=True):
        g.emit(indent + 2, f"{name} = {value}[{field!r}]")
    g.emit(indent + 1, f"except KeyError: {g.fail}")
    g.emit(indent, f"else: {g.fail}")
    return names


def _emit_pack(g: _Emitter, st: Struct, value: str, indent: int) -> None:
    names = _emit_fields_of(g, st, value, indent)
    _emit_pack_fields(g, st, names, indent)


def _emit_pack_fields(g: _Emitter, st: Struct, names: list[str], indent: int) -> None:
    codecs = st._codecs
    i = 0
    while i < len(codecs):
        codec = codecs[i]
        run = _fixed_run(codecs, i)
        if run:
            fmt = struct.Struct(">" + "".join(spec[0] for spec in run))
            for name, (_, lo, hi, kind) in zip(names[i:], run, strict=False):
                if kind in ("int", "small"):
                    g.check(indent, f"type({name}) is not int or not {lo} <= {name} <= {hi}")
                elif kind == "bool":
                    g.emit(indent, f"if {name} is True: {name} = 1")
                    g.emit(indent, f"elif {name} is False: {name} = 0")
                    g.emit(indent, f"else: {g.fail}")
                else:
                    g.check(indent, f"type({name}) is not float")
            g.emit(indent, f"out += {g.const(fmt)}.pack({', '.join(names[i:i + len(run)])})")
            i += len(run)
            continue
        name = names[i]
        if isinstance(codec, String):
            g.check(indent, f"type({name}) is not str")
            g.emit(indent, f"_d = {name}.encode('utf-8', 'surrogateescape')")
            g.emit(indent, "_n = len(_d)")
            g.check(indent, f"_n > {codec.max_len}")
            g.emit(indent, "out += _U32.pack(_n)")
            g.emit(indent, "out += _d")
            g.emit(indent, "out += _PAD[_n & 3]")
        elif isinstance(codec, Opaque):
            g.check(indent, f"type({name}) is not bytes or len({name}) > {codec.max_len}")
            g.emit(indent, f"out += _U32.pack(len({name}))")
            g.emit(indent, f"out += {name}")
            g.emit(indent, f"out += _PAD[len({name}) & 3]")
        elif isinstance(codec, FixedOpaque):
            g.check(indent, f"type({name}) is not bytes or len({name}) != {codec.size}")
            g.emit(indent, f"out += {name}")
            if codec.size % 4:
                g.emit(indent, f"out += {_PAD[codec.size % 4]!r}")
        elif isinstance(codec, Struct):
            _emit_pack(g, codec, name, indent)
        elif isinstance(codec, Optional) and isinstance(codec.inner, Struct):
            g.emit(indent, f"if {name} is None:")
            g.emit(indent + 1, "out += b'\\0\\0\\0\\0'")
            g.emit(indent, "else:")
            g.emit(indent + 1, "out += b'\\0\\0\\0\\1'")
            _emit_pack(g, codec.inner, name, indent + 1)
        else:
            g.emit(indent, f"{g.const(codec)}.pack({name}, out)")
        i += 1


def _compile_struct(st: Struct) -> tuple[Callable[[Any, bytearray], None], Callable[[Reader], Any]]:
    """A pack and an unpack made for ``st``: the fields' work inlined, runs of fixed-size scalars
    packed by one ``struct`` call. They handle the common values (the struct's record, or a dict
    of exactly its fields, of the exact types); anything else, and anything wrong, goes to the
    general code from the start, so that results and errors are the same."""
    g = _Emitter("reader._pos = start; return slow(reader)")
    g.env["slow"] = st._unpack_any
    g.emit(1, "buf = reader._buf")
    g.emit(1, "pos = start = reader._pos")
    g.emit(1, "end = reader._end")
    result = _emit_unpack(g, st, 1)
    g.emit(1, "reader._pos = pos")
    g.emit(1, f"return {result}")
    unpack = g.function(f"unpack_{st.name}", "reader")

    g = _Emitter("del out[start:]; return slow(value, out)")
    g.env["slow"] = st._pack_any
    g.emit(1, "start = len(out)")
    names = _emit_fields_of(g, st, "value", 1)
    _emit_pack_fields(g, st, names, 1)
    pack = g.function(f"pack_{st.name}", "value, out")
    return pack, unpack


class UnionValue(NamedTuple):
    discriminant: int
    value: Any


class Union(Codec[UnionValue]):
    """A discriminated union over an int discriminant; ``arms`` maps each case to its codec."""

    min_size = 4

    def __init__(self, name: str, arms: Mapping[int, Codec[Any]],
                 default: Codec[Any] | None = None) -> None:
        self.name = name
        self.arms = dict(arms)
        self.default = default

    def _arm(self, disc: int) -> Codec[Any]:
        arm = self.arms.get(disc, self.default)
        if arm is None:
            raise ProtocolError(f"XDR union {self.name}: no arm for discriminant {disc}")
        return arm

    def pack(self, value: UnionValue, out: bytearray) -> None:
        if not isinstance(value, tuple) or len(value) != 2:
            raise _encode_error(self, value, "expected (discriminant, value)")
        disc, inner = value
        INT.pack(disc, out)
        self._arm(disc).pack(inner, out)

    def unpack(self, reader: Reader) -> UnionValue:
        disc = INT.unpack(reader)
        return UnionValue(disc, self._arm(disc).unpack(reader))


INT = Integer("int", ">i")
UINT = Integer("unsigned int", ">I")
HYPER = Integer("hyper", ">q")
UHYPER = Integer("unsigned hyper", ">Q")
CHAR = SmallInt("char", -128, 127)
UCHAR = SmallInt("unsigned char", 0, 255)
SHORT = SmallInt("short", -32768, 32767)
USHORT = SmallInt("unsigned short", 0, 65535)
BOOL = Bool()
DOUBLE = Double()
VOID = Void()

# ---- libvirt's shared types (remote_protocol.x / virnetprotocol.x) ----

NONNULL_STRING = String(STRING_MAX, "remote_nonnull_string")
REMOTE_STRING = Optional(NONNULL_STRING)
UUID = FixedOpaque(UUID_LEN, "remote_uuid")
NONNULL_DOMAIN = Struct("NonnullDomain", [("name", NONNULL_STRING), ("uuid", UUID), ("id", INT)])
REMOTE_DOMAIN = Optional(NONNULL_DOMAIN)
NONNULL_NETWORK = Struct("NonnullNetwork", [("name", NONNULL_STRING), ("uuid", UUID)])
REMOTE_NETWORK = Optional(NONNULL_NETWORK)

REMOTE_ERROR = Struct("RemoteError", [
    ("code", INT), ("domain", INT), ("message", REMOTE_STRING), ("level", INT),
    ("dom", REMOTE_DOMAIN),  # unused by libvirt since 0.x, kept for the wire layout
    ("str1", REMOTE_STRING), ("str2", REMOTE_STRING), ("str3", REMOTE_STRING),
    ("int1", INT), ("int2", INT),
    ("net", REMOTE_NETWORK),  # unused, as dom
])


class TypedParamType:
    """virTypedParameterType: the discriminant of remote_typed_param_value (public ABI)."""

    INT = 1
    UINT = 2
    LLONG = 3
    ULLONG = 4
    DOUBLE = 5
    BOOLEAN = 6
    STRING = 7


TYPED_PARAM_VALUE = Union("remote_typed_param_value", {
    TypedParamType.INT: INT,
    TypedParamType.UINT: UINT,
    TypedParamType.LLONG: HYPER,
    TypedParamType.ULLONG: UHYPER,
    TypedParamType.DOUBLE: DOUBLE,
    TypedParamType.BOOLEAN: INT,  # an int on the wire, not an XDR bool
    TypedParamType.STRING: NONNULL_STRING,
})
TYPED_PARAM = Struct("TypedParam", [("field", NONNULL_STRING), ("value", TYPED_PARAM_VALUE)])
