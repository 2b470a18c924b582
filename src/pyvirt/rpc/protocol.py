# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt's RPC framing: the length word, the 24-byte header, and an incremental frame decoder.

A frame on the wire is ``u32 length`` (counting its own 4 bytes) + header + payload. The header
is (prog, vers, proc, type, serial, status); ``*_WITH_FDS`` messages carry a u32 descriptor count
between header and payload (the descriptors themselves travel as SCM_RIGHTS ancillary data).

The values here are ABI facts of src/rpc/virnetprotocol.x and src/rpc/virkeepaliveprotocol.x; the
per-procedure layouts live in :mod:`pyvirt.rpc.procedures`.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Any, NamedTuple

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.rpc.xdr import HYPER, REMOTE_ERROR, UINT, Codec, ProtocolError, Struct

__all__ = [
    "ProtocolError", "RemoteError", "Program", "MessageType", "Status", "Feature", "AuthType",
    "KeepaliveProc", "Header", "Message", "FrameDecoder", "encode_message", "encode_reply",
    "decode_message",
    "error_from_remote", "remote_error_record", "STREAM_HOLE",
    "PROTOCOL_VERSION", "LEN_SIZE", "HEADER_SIZE", "MESSAGE_MAX", "MIN_FRAME", "MAX_FRAME",
    "NUM_FDS_MAX",
]


class Program(IntEnum):
    REMOTE = 0x20008086
    QEMU = 0x20008087
    LXC = 0x00545843
    KEEPALIVE = 0x6B656570


#: Every program above speaks version 1.
PROTOCOL_VERSION = 1


class MessageType(IntEnum):
    CALL = 0
    REPLY = 1
    MESSAGE = 2          # asynchronous: events, keepalive
    STREAM = 3
    CALL_WITH_FDS = 4
    REPLY_WITH_FDS = 5
    STREAM_HOLE = 6


class Status(IntEnum):
    OK = 0
    ERROR = 1
    CONTINUE = 2         # streams: more data follows


class KeepaliveProc(IntEnum):
    PING = 1
    PONG = 2


class Feature(IntEnum):
    """VIR_DRV_FEATURE_*: the argument of CONNECT_SUPPORTS_FEATURE."""

    MIGRATION_V1 = 1
    REMOTE = 2
    MIGRATION_V2 = 3
    MIGRATION_P2P = 4
    MIGRATION_DIRECT = 5
    MIGRATION_V3 = 6
    MIGRATE_CHANGE_PROTECTION = 7
    FD_PASSING = 8
    TYPED_PARAM_STRING = 9
    PROGRAM_KEEPALIVE = 10
    XML_MIGRATABLE = 11
    MIGRATION_OFFLINE = 12
    MIGRATION_PARAMS = 13
    REMOTE_EVENT_CALLBACK = 14
    REMOTE_CLOSE_CALLBACK = 15


class AuthType(IntEnum):
    NONE = 0
    SASL = 1
    POLKIT = 2


LEN_SIZE = 4
HEADER_SIZE = 24
#: VIR_NET_MESSAGE_MAX as of libvirt 9.0: the largest header + payload. The length word comes on
#: top, as libvirt checks ``length > MAX + LEN``.
MESSAGE_MAX = 32 * 1024 * 1024
MIN_FRAME = LEN_SIZE + HEADER_SIZE
MAX_FRAME = MESSAGE_MAX + LEN_SIZE
NUM_FDS_MAX = 32

_LEN = struct.Struct(">I")
_HEADER = struct.Struct(">IIiiIi")
#: The length word and the header together: what a frame starts with.
_FRAME_START = struct.Struct(">IIIiiIi")
_EMPTY_START = bytes(MIN_FRAME)

#: The payload of a STREAM_HOLE message.
STREAM_HOLE = Struct("StreamHole", [("length", HYPER), ("flags", UINT)])

_WITH_FDS = (MessageType.CALL_WITH_FDS, MessageType.REPLY_WITH_FDS)
_WITH_FDS_TYPES = frozenset(int(t) for t in _WITH_FDS)
_REPLY = int(MessageType.REPLY)


class Header(NamedTuple):
    """The 24-byte message header. Immutable; a tuple, so that the daemon makes one per message
    at the cost of a tuple (a frozen dataclass costs several times more)."""

    prog: int
    vers: int
    proc: int
    type: int
    serial: int
    status: int = Status.OK

    def pack(self) -> bytes:
        try:
            return _HEADER.pack(*self)
        except struct.error as exc:
            raise ProtocolError(f"cannot encode message header {self}: {exc}") from exc

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> Header:
        if len(data) - offset < HEADER_SIZE:
            raise ProtocolError(f"message header truncated: {len(data) - offset} of {HEADER_SIZE} bytes")
        return _new(cls, _HEADER.unpack_from(data, offset))

    def describe(self) -> str:
        """For error messages and logs: names where the numbers are known."""
        def name(enum: type[IntEnum], value: int) -> str:
            try:
                return enum(value).name
            except ValueError:
                return str(value)
        return (f"prog={name(Program, self.prog)} vers={self.vers} proc={self.proc} "
                f"type={name(MessageType, self.type)} serial={self.serial} "
                f"status={name(Status, self.status)}")


class Message(NamedTuple):
    header: Header
    payload: bytes = b""
    #: For *_WITH_FDS: how many descriptors the sender says accompany the message.
    nfds: int = 0


#: tuple.__new__: builds a Header or Message from a tuple without the keyword machinery.
_new = tuple.__new__


def encode_message(header: Header, payload: bytes = b"", nfds: int = 0) -> bytes:
    """One whole frame, length word included."""
    extra = b""
    if header.type in _WITH_FDS:
        if not 0 <= nfds <= NUM_FDS_MAX:
            raise ProtocolError(f"cannot pass {nfds} file descriptors: at most {NUM_FDS_MAX}")
        extra = _LEN.pack(nfds)
    elif nfds:
        raise ProtocolError(f"{MessageType(header.type).name} messages cannot carry descriptors")
    total = LEN_SIZE + HEADER_SIZE + len(extra) + len(payload)
    if total > MAX_FRAME:
        raise ProtocolError(f"message of {total} bytes exceeds the maximum of {MAX_FRAME} bytes "
                            f"({header.describe()})")
    return _LEN.pack(total) + header.pack() + extra + payload


def encode_reply(call: Header, status: int, codec: Codec[Any], value: Any) -> bytes:
    """The whole REPLY frame to ``call``: ``value`` packed by ``codec`` after the header, in one
    buffer (what :func:`encode_message` with ``codec.encode(value)`` gives, for less work: the
    daemon builds one for every call)."""
    out = bytearray(_EMPTY_START)
    codec.pack(value, out)
    total = len(out)
    if total > MAX_FRAME:
        raise ProtocolError(f"message of {total} bytes exceeds the maximum of {MAX_FRAME} bytes "
                            f"(reply to {call.describe()})")
    try:
        _FRAME_START.pack_into(out, 0, total, call.prog, call.vers, call.proc, _REPLY, call.serial,
                               status)
    except struct.error as exc:
        raise ProtocolError(f"cannot encode the header of the reply to {call.describe()}: "
                            f"{exc}") from exc
    return bytes(out)


def _check_length(length: int) -> None:
    if length < MIN_FRAME:
        raise ProtocolError(f"message length {length} is below the minimum {MIN_FRAME}")
    if length > MAX_FRAME:
        raise ProtocolError(f"message length {length} exceeds the maximum {MAX_FRAME}")


def _body(frame: bytes, length: int) -> Message:
    header = Header.unpack(frame, LEN_SIZE)
    start = MIN_FRAME
    nfds = 0
    if header.type in _WITH_FDS:
        if length < start + 4:
            raise ProtocolError(f"{MessageType(header.type).name} message lacks its descriptor count")
        (nfds,) = _LEN.unpack_from(frame, start)
        if nfds > NUM_FDS_MAX:
            raise ProtocolError(f"message claims {nfds} file descriptors: at most {NUM_FDS_MAX}")
        start += 4
    return Message(header, bytes(frame[start:length]), nfds)


def decode_message(frame: bytes | bytearray | memoryview) -> Message:
    """Decode exactly one frame (length word included)."""
    if len(frame) < LEN_SIZE:
        raise ProtocolError(f"frame of {len(frame)} bytes has no length word")
    (length,) = _LEN.unpack_from(frame, 0)
    _check_length(length)
    if length != len(frame):
        raise ProtocolError(f"frame length word says {length} bytes, frame has {len(frame)}")
    return _body(bytes(frame), length)


class FrameDecoder:
    """Split a byte stream fed in arbitrary chunks into messages.

    A bad length word is refused as soon as its 4 bytes arrive, before the body is buffered, so a
    peer cannot make us hold more than one maximal frame. After an error the decoder stays failed:
    the stream has lost its framing and the connection must be dropped.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: int | None = None
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message (non-zero at EOF = truncated)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        if self._failed is not None:
            raise ProtocolError(f"stream already failed: {self._failed}")
        if not self._buf and type(data) is bytes:
            # The common case of a call-and-wait client: exactly one whole frame without
            # descriptors, nothing buffered before it: decoded without a copy through the buffer
            # (anything else, errors included, takes the general way below).
            n = len(data)
            if n >= MIN_FRAME:
                start = _FRAME_START.unpack_from(data, 0)
                if start[0] == n and n <= MAX_FRAME and start[4] not in _WITH_FDS_TYPES:
                    return [_new(Message, (_new(Header, start[1:]), data[MIN_FRAME:], 0))]
        self._buf += data
        out: list[Message] = []
        try:
            while True:
                if self._need is None:
                    if len(self._buf) < LEN_SIZE:
                        break
                    (length,) = _LEN.unpack_from(self._buf, 0)
                    _check_length(length)
                    self._need = length
                if len(self._buf) < self._need:
                    break
                frame = bytes(self._buf[:self._need])
                del self._buf[:self._need]
                length, self._need = self._need, None
                out.append(_body(frame, length))
        except ProtocolError as exc:
            self._failed = exc
            self._buf.clear()
            raise
        return out


class RemoteError(PyvirtError):
    """An error the peer sent as ``remote_error``: code, domain, level, message and the extra
    fields (str1..3, int1..2) verbatim."""


#: virErrorMsg's text for an error without a message (VIR_ERR_OK's generic wording).
_NO_MESSAGE = "An error occurred, but the cause is unknown"


def error_from_remote(rec: object) -> RemoteError:
    """A decoded REMOTE_ERROR record as the exception a libvirt client would raise."""
    if not isinstance(rec, REMOTE_ERROR.cls):
        raise TypeError(f"expected a decoded RemoteError record, got {type(rec).__name__}")
    r: Any = rec
    return RemoteError(r.message if r.message is not None else _NO_MESSAGE,
                       code=r.code, domain=r.domain, level=r.level,
                       str1=r.str1, str2=r.str2, str3=r.str3, int1=r.int1, int2=r.int2)


def remote_error_record(exc: BaseException) -> Any:
    """The REMOTE_ERROR to send for ``exc``: a PyvirtError keeps its code, domain, level, message
    and extra fields; anything else becomes an internal error, as libvirtd reports a failure for
    which no error was set."""
    if isinstance(exc, PyvirtError):
        return REMOTE_ERROR(code=exc.code, domain=exc.domain, message=exc.message, level=exc.level,
                            dom=None, str1=exc.get_str1(), str2=exc.get_str2(),
                            str3=exc.get_str3(), int1=exc.get_int1(), int2=exc.get_int2(),
                            net=None)
    return REMOTE_ERROR(code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_RPC,
                        message=f"internal error: {type(exc).__name__}: {exc}",
                        level=codes.VIR_ERR_ERROR, dom=None, str1=None, str2=None, str3=None,
                        int1=-1, int2=-1, net=None)
