# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's data streams: raw bytes both ways on the serial of the call that opened them.

A procedure marked ``stream`` in :mod:`pyvirt.rpc.procedures` (DOMAIN_OPEN_CONSOLE; storage volume
upload and download later) opens a stream from its handler with :func:`open_stream`, giving the
local end as a :class:`StreamEndpoint`: a non-blocking file descriptor the event loop watches
(:class:`FdEndpoint` for a plain descriptor, :class:`VirStreamEndpoint` for a stream of the
embedded driver, such as a guest console). The stream starts once the call's REPLY is out, so the
client sees the reply before any data (libvirtd does not promise that: its dispatch thread starts the
stream before the reply is queued, and data can overtake it; libvirt's clients register the stream
before the call and take either order). The wire follows libvirt's daemon (remote_daemon_stream.c):

* data, either way: STREAM / CONTINUE frames with the call's prog, proc and serial; the server
  reads at most VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX bytes per frame;
* end of the local data (EOF, a pty whose QEMU went away): one empty STREAM / CONTINUE;
* the client's finish: STREAM / OK, handled after the data it sent before it reached the endpoint;
  answered with an empty STREAM / OK, or STREAM / ERROR when finishing the endpoint fails;
* the client's abort: STREAM / ERROR, answered with an empty STREAM / OK at once (data still
  queued for the endpoint is dropped, that is what aborting means);
* a failure of the endpoint: STREAM / ERROR carrying ``remote_error``, after which the stream is
  gone; the local end taken away (a console forced over by another session) is libvirt's
  "stream had I/O failure" (VIR_ERR_RPC, VIR_FROM_STREAMS);
* frames for a serial with no stream are dropped, as libvirtd drops late stream data.

Flow control, so that no client makes the daemon buffer without bound. Towards the client: the
endpoint is read only while the client's socket takes our output (the transport is below its
high-water mark); when it is past it, reading stops until the client drains, so at most one frame
per stream waits in the daemon, as with libvirtd's one message in flight. From the client: its data
queues per stream until the endpoint takes it; past :data:`RX_LIMIT` bytes (or
:data:`RX_FRAMES` frames) the client's socket is not read any more, which pushes back on that client
only (libvirtd counts such frames against max_client_requests).

When the client goes away, each of its streams is aborted (the console's device is free again for
another session). Everything here runs on the event loop; :meth:`StreamEndpoint.revoke` is the one
entry point safe from other threads: it waits until the loop has let go of the descriptor, and an
endpoint taken away before its stream even started makes the stream start as failed.

Descriptors the loop cannot poll (regular files and block devices, as volume upload and download
will stream) are served one chunk per turn of the loop instead, with the same push-back.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import dataclasses
import errno
import logging
import os
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.rpc.protocol import (
    Header,
    Message,
    MessageType,
    Status,
    encode_message,
    remote_error_record,
)
from pyvirt.rpc.xdr import REMOTE_ERROR

if TYPE_CHECKING:
    from pyvirt.daemon.dispatch import ClientSession, PendingCall
    from pyvirt.stream import virStream

__all__ = ["StreamEndpoint", "FdEndpoint", "VirStreamEndpoint", "ClientStreams", "ServerStream",
           "StreamSlot", "open_stream", "CHUNK", "RX_LIMIT", "RX_FRAMES"]

log = logging.getLogger("pyvirt.daemon")

#: libvirt's VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX: the most the daemon reads for one data frame.
CHUNK = 256 * 1024 - 24
#: Bytes of a client's data queued for one stream's endpoint past which its socket is not read.
RX_LIMIT = 1024 * 1024
#: Frames queued for one stream's endpoint past which the client's socket is not read.
RX_FRAMES = 64
#: How long a thread taking an endpoint away waits for the event loop to let go of it.
_REVOKE_WAIT = 10.0


def _stream_error(message: str, code: int = codes.VIR_ERR_RPC) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_STREAMS)


# ---- the local end ----------------------------------------------------------------------------

class StreamEndpoint(abc.ABC):
    """The daemon's end of a stream: a non-blocking descriptor, read when the client may take
    more, written with what the client sent. ``readable``/``writable`` say which ways data flows
    (a console both; a volume download only out, an upload only in)."""

    readable = True
    writable = True
    #: Whether the event loop can wait for the descriptor (pipes, ptys, sockets: yes; regular
    #: files and block devices, which epoll refuses and which never block for long: no).
    pollable = True

    def __init__(self) -> None:
        self._revoke: Callable[[PyvirtError], None] | None = None
        self._revoked: PyvirtError | None = None
        self._revoke_lock = threading.Lock()

    @abc.abstractmethod
    def fileno(self) -> int:
        """The descriptor the event loop watches."""

    @abc.abstractmethod
    def read(self, size: int) -> bytes | None:
        """Up to ``size`` bytes; b"" at the end of the data; None when none is there yet."""

    @abc.abstractmethod
    def write(self, data: memoryview) -> int | None:
        """How many bytes were taken; None when none can be now."""

    @abc.abstractmethod
    def finish(self) -> None:
        """The client is done: complete the transfer and release the endpoint; a PyvirtError when
        it cannot be completed."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Release the endpoint, discarding what is unfinished; never raises."""

    def describe(self) -> str:
        return f"fd {self.fileno()}"

    # The stream that owns the endpoint installs this; whoever takes the endpoint away (from any
    # thread) calls revoke() first, and the stream stops watching it before it is closed.

    def on_revoke(self, callback: Callable[[PyvirtError], None] | None) -> PyvirtError | None:
        """Install the owner's callback; the error if the endpoint was taken away before."""
        with self._revoke_lock:
            self._revoke = callback
            return self._revoked

    def revoke(self, error: PyvirtError) -> None:
        with self._revoke_lock:
            if self._revoked is None:
                self._revoked = error
            callback = self._revoke
        if callback is not None:
            callback(error)


class FdEndpoint(StreamEndpoint):
    """A file descriptor the endpoint owns (a file, a block device, a pipe, a pty), non-blocking
    where the loop can poll it; a pty whose other side is gone (EIO) reads as the end of the data.
    Finishing closes it (a volume upload would sync first: a subclass's finish)."""

    def __init__(self, fd: int, name: str, *, readable: bool = True, writable: bool = True) -> None:
        super().__init__()
        mode = os.fstat(fd).st_mode
        self.pollable = not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))
        if self.pollable:
            os.set_blocking(fd, False)
        self._fd: int | None = fd
        self.name = name
        self.readable, self.writable = readable, writable

    def fileno(self) -> int:
        if self._fd is None:
            raise _stream_error("internal error: stream is not open", codes.VIR_ERR_INTERNAL_ERROR)
        return self._fd

    def describe(self) -> str:
        return self.name

    def read(self, size: int) -> bytes | None:
        try:
            return os.read(self.fileno(), size)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise _stream_error(f"cannot read from {self.name}: {exc.strerror}",
                                codes.VIR_ERR_SYSTEM_ERROR) from None

    def write(self, data: memoryview) -> int | None:
        try:
            return os.write(self.fileno(), data)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise _stream_error(f"cannot write to {self.name}: {exc.strerror}",
                                codes.VIR_ERR_SYSTEM_ERROR) from None

    def finish(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                raise _stream_error(f"cannot close {self.name}: {exc.strerror}",
                                    codes.VIR_ERR_SYSTEM_ERROR) from None

    def abort(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class VirStreamEndpoint(StreamEndpoint):
    """A non-blocking stream of the embedded driver (:class:`pyvirt.stream.virStream`) already
    attached, such as a guest console; taking its device over from another session revokes it."""

    def __init__(self, stream: virStream, name: str) -> None:
        super().__init__()
        self.stream = stream
        self.name = name
        self._fd = stream.fileno()
        stream.set_takeover_hook(self._taken_over)

    def _taken_over(self) -> None:
        self.revoke(_stream_error("stream had I/O failure"))

    def fileno(self) -> int:
        return self._fd

    def describe(self) -> str:
        return self.name

    def read(self, size: int) -> bytes | None:
        data = self.stream.recv(size)
        return None if isinstance(data, int) else data

    def write(self, data: memoryview) -> int | None:
        sent = self.stream.send(bytes(data))
        return None if sent == -2 else sent

    def finish(self) -> None:
        self.stream.set_takeover_hook(None)
        self.stream.finish()

    def abort(self) -> None:
        self.stream.set_takeover_hook(None)
        try:
            self.stream.abort()
        except PyvirtError:
            pass


# ---- opening a stream from a handler ------------------------------------------------------------

@dataclasses.dataclass
class StreamSlot:
    """Where the handler of one stream call leaves its endpoint for the connection to start."""

    header: Header
    endpoint: StreamEndpoint | None = None


_current = threading.local()


def open_stream(session: ClientSession, endpoint: StreamEndpoint) -> None:
    """From the handler of a stream procedure, as its last step: the call's stream runs over
    ``endpoint`` once the reply is out. (The endpoint is released if the reply is an error or the
    client is gone by then.)"""
    slot: StreamSlot | None = getattr(_current, "slot", None)
    if slot is None:
        endpoint.abort()
        raise PyvirtError("internal error: a stream can only be opened by the handler of a stream "
                          "procedure", code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_RPC)
    if slot.endpoint is not None:
        endpoint.abort()
        raise PyvirtError("internal error: this call already opened its stream",
                          code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_RPC)
    slot.endpoint = endpoint


# ---- one stream ---------------------------------------------------------------------------------

_FINISH = object()


class ServerStream:
    """One open stream of one client (see the module docstring for the protocol)."""

    def __init__(self, owner: ClientStreams, header: Header, endpoint: StreamEndpoint) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.header = header
        self.serial = header.serial
        self.endpoint = endpoint
        self.fd = endpoint.fileno()
        #: Data from the client not yet taken by the endpoint (memoryviews), then maybe _FINISH.
        self.rx: collections.deque[Any] = collections.deque()
        self.rx_bytes = 0
        self.eof_sent = False
        self.closed = False
        self._reading = False
        self._writing = False
        #: For an endpoint the loop cannot poll: the pending turn of reading or writing.
        self._turns: dict[str, asyncio.Handle] = {}
        #: Taken away between the handler and now (its descriptor is closed, maybe reused).
        self._lost = endpoint.on_revoke(self.revoke_threadsafe)

    def __repr__(self) -> str:
        return f"<stream serial={self.serial} {self.endpoint.describe()}>"

    # ---- frames ----

    def _frame(self, status: Status, payload: bytes = b"") -> bytes:
        h = self.header
        return encode_message(Header(h.prog, h.vers, h.proc, MessageType.STREAM, h.serial, status),
                              payload)

    def _send_error(self, exc: BaseException) -> None:
        self.owner.write(self._frame(Status.ERROR, REMOTE_ERROR.encode(remote_error_record(exc))))

    # ---- lifecycle ----

    def start(self) -> None:
        if self._lost is not None:
            self._revoked(self._lost)
        else:
            self.update()

    def update(self) -> None:
        """Watch the descriptor for what the stream can do now."""
        if self.closed:
            return
        want_read = (self.endpoint.readable and not self.eof_sent and self.owner.can_send())
        if want_read != self._reading:
            self._reading = want_read
            self._watch("read", want_read)
        want_write = bool(self.rx) and self.rx[0] is not _FINISH
        if want_write != self._writing:
            self._writing = want_write
            self._watch("write", want_write)

    def _watch(self, way: str, on: bool) -> None:
        if self.endpoint.pollable:
            if way == "read":
                if on:
                    self.loop.add_reader(self.fd, self._on_readable)
                else:
                    self.loop.remove_reader(self.fd)
            elif on:
                self.loop.add_writer(self.fd, self._flush)
            else:
                self.loop.remove_writer(self.fd)
        elif on:
            # a regular file or a block device is always ready: one chunk per turn of the loop,
            # so that other clients are served in between
            self._turns[way] = self.loop.call_soon(self._turn, way)
        else:
            turn = self._turns.pop(way, None)
            if turn is not None:
                turn.cancel()

    def _turn(self, way: str) -> None:
        self._turns.pop(way, None)
        if way == "read" and self._reading:
            self._on_readable()
        elif way == "write" and self._writing:
            self._flush()
        if not self.closed and way not in self._turns and (
                self._reading if way == "read" else self._writing):
            self._turns[way] = self.loop.call_soon(self._turn, way)

    def _unwatch(self) -> None:
        if self._reading:
            self._reading = False
            self._watch("read", False)
        if self._writing:
            self._writing = False
            self._watch("write", False)

    def _close(self) -> None:
        """Stop watching and leave the client's table; the endpoint is released by the caller."""
        if self.closed:
            return
        self.closed = True
        self._unwatch()
        self.endpoint.on_revoke(None)
        backlogged = self.backlogged()
        self.rx.clear()
        self.rx_bytes = 0
        self.owner._forget(self)
        if backlogged:
            self.owner.wake()

    def abort(self) -> None:
        """The client is gone (or the daemon stops): release the endpoint, tell nobody."""
        self._close()
        self.endpoint.abort()

    def fail(self, exc: BaseException) -> None:
        """The endpoint failed: STREAM/ERROR to the client, and the stream is gone."""
        if self.closed:
            return
        log.info("client %s: stream %s failed: %s", self.owner.peer, self, exc)
        self._close()
        self.endpoint.abort()
        self._send_error(exc)

    def revoke_threadsafe(self, error: PyvirtError) -> None:
        """The endpoint is being taken away (by another thread, usually): stop watching its
        descriptor before the caller closes it, and tell the client with ``error``."""
        if self.closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self._revoked(error)
            return

        async def revoke() -> None:
            self._revoked(error)
        try:
            asyncio.run_coroutine_threadsafe(revoke(), self.loop).result(_REVOKE_WAIT)
        except (RuntimeError, TimeoutError, asyncio.CancelledError):
            log.warning("stream %s: the event loop did not let go of it in time", self)

    def _revoked(self, error: PyvirtError) -> None:
        if self.closed:
            return
        log.info("client %s: stream %s taken away: %s", self.owner.peer, self, error.message)
        self._close()  # the endpoint's owner (the taker) closes it
        self._send_error(error)

    # ---- towards the client ----

    def _on_readable(self) -> None:
        if self.closed or not self.owner.can_send():
            self.update()
            return
        try:
            data = self.endpoint.read(CHUNK)
        except Exception as exc:  # noqa: BLE001 - any failure of the endpoint ends the stream
            self.fail(exc)
            return
        if data is None:
            return
        if not data:
            self.eof_sent = True  # libvirt's "read EOF": an empty CONTINUE, then wait for finish
        self.owner.write(self._frame(Status.CONTINUE, data))
        self.update()

    # ---- from the client ----

    def on_message(self, msg: Message) -> None:
        h = msg.header
        if h.type == MessageType.STREAM_HOLE:
            self.fail(_stream_error("Unexpected stream hole"))
        elif h.status == Status.CONTINUE:
            if msg.payload:
                if not self.endpoint.writable:
                    self.fail(_stream_error("stream does not accept data from the client",
                                            codes.VIR_ERR_OPERATION_INVALID))
                    return
                self.rx.append(memoryview(msg.payload))
                self.rx_bytes += len(msg.payload)
                self._flush()
        elif h.status == Status.OK:
            self.rx.append(_FINISH)
            self._flush()
        elif h.status == Status.ERROR:
            self._close()
            self.endpoint.abort()
            self.owner.write(self._frame(Status.OK))  # the abort is confirmed, as by libvirtd
        else:
            self.fail(_stream_error(f"stream aborted with unexpected status {h.status}"))

    def _flush(self) -> None:
        """Give the endpoint what the client sent, in order, as far as it takes it."""
        was_backlogged = self.backlogged()
        while self.rx and not self.closed:
            head = self.rx[0]
            if head is _FINISH:
                self.rx.popleft()
                self._finish()
                break
            try:
                n = self.endpoint.write(head)
            except Exception as exc:  # noqa: BLE001
                self.fail(exc)
                break
            if n is None:
                break
            self.rx_bytes -= n
            if n < len(head):
                self.rx[0] = head[n:]
            else:
                self.rx.popleft()
        self.update()
        if was_backlogged and not self.backlogged():
            self.owner.wake()

    def _finish(self) -> None:
        self._close()
        try:
            self.endpoint.finish()
        except Exception as exc:  # noqa: BLE001
            self.endpoint.abort()
            self._send_error(exc)
            return
        self.owner.write(self._frame(Status.OK))

    def backlogged(self) -> bool:
        return self.rx_bytes >= RX_LIMIT or len(self.rx) >= RX_FRAMES


# ---- one client's streams -------------------------------------------------------------------------

class ClientStreams:
    """The streams of one client connection.

    ``write`` queues a frame on the client's socket; ``can_send`` says whether the socket takes
    more now (below its high-water mark); ``wake`` asks the connection to read again once a
    backlog is gone. Call :meth:`resume_output` when the socket drained, :meth:`close_all` when the
    client is gone.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, peer: str, *, write: Callable[[bytes], None],
                 can_send: Callable[[], bool], wake: Callable[[], object]) -> None:
        self.loop = loop
        self.peer = peer
        self.write = write
        self.can_send = can_send
        self.wake = wake
        self.streams: dict[int, ServerStream] = {}
        self.closed = False

    def __len__(self) -> int:
        return len(self.streams)

    def bind(self, call: PendingCall) -> tuple[PendingCall, StreamSlot]:
        """``call`` (of a stream procedure) made to run its handler with a slot for its endpoint."""
        slot = StreamSlot(call.header)
        fn = call.handler.fn

        def run(session: ClientSession, args: Any) -> Any:
            _current.slot = slot
            try:
                return fn(session, args)
            finally:
                _current.slot = None
        bound = dataclasses.replace(call, handler=dataclasses.replace(call.handler, fn=run))
        return bound, slot

    def opened(self, slot: StreamSlot, reply: bytes | None) -> None:
        """After the reply to a stream call was written: start its stream, unless the reply was
        an error or the client is gone (then the endpoint is released)."""
        endpoint, slot.endpoint = slot.endpoint, None
        if endpoint is None:
            return
        ok = reply is not None and int.from_bytes(reply[24:28], "big", signed=True) == Status.OK
        if not ok or self.closed:
            endpoint.abort()
            return
        stream = ServerStream(self, slot.header, endpoint)
        old = self.streams.get(stream.serial)
        if old is not None:
            old.abort()  # a serial reused while its stream was still open: the client forgot it
        self.streams[stream.serial] = stream
        log.debug("client %s: stream %s opened", self.peer, stream)
        stream.start()

    def _forget(self, stream: ServerStream) -> None:
        if self.streams.get(stream.serial) is stream:
            del self.streams[stream.serial]

    def deliver(self, msg: Message) -> None:
        """A STREAM or STREAM_HOLE frame from the client."""
        h = msg.header
        stream = self.streams.get(h.serial)
        if stream is None or (h.prog, h.vers, h.proc) != (stream.header.prog, stream.header.vers,
                                                          stream.header.proc):
            # late data for a stream already closed: dropped, as libvirtd does
            log.debug("client %s: no stream for %s, dropped", self.peer, h.describe())
            return
        stream.on_message(msg)

    def backlogged(self) -> bool:
        """Whether some stream holds as much of the client's data as it may."""
        return any(s.backlogged() for s in self.streams.values()) if self.streams else False

    def resume_output(self) -> None:
        for stream in list(self.streams.values()):
            stream.update()

    def close_all(self) -> None:
        """The client is gone: abort its streams, and let go of its connection (the callbacks
        refer back to it: freed with its last reference, not by the cycle collector)."""
        self.closed = True
        for stream in list(self.streams.values()):
            stream.abort()
        self.write, self.can_send, self.wake = _discard, _never, _never


def _discard(frame: bytes) -> None:
    pass


def _never() -> bool:
    return False
