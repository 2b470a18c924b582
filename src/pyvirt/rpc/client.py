# SPDX-License-Identifier: LGPL-2.1-or-later
"""A client of libvirt's RPC protocol: talks to a real libvirtd, or to pyvirtd.

:class:`RPCClient` is the asyncio core. It owns one connection with an explicit state
(idle -> running -> closing -> closed) and one future per serial, so replies may arrive in any
order. What arrives is decoded and dispatched in the loop's read callback (:class:`_Wire`), with no
reader task: a reply completes its call in the turn of the loop that read it. MESSAGE events go to
the registered handlers, keepalive PINGs are answered with PONGs, and when the connection drops
every pending call fails with a :class:`ConnectionClosed` and the close callbacks run once.

The synchronous facade, for callers without an event loop, is :class:`pyvirt.rpc.sync.Client`.

Values are the records of :mod:`pyvirt.rpc.procedures`: ``client.call("CONNECT_GET_TYPE").type``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import NotSupported, PyvirtError
from pyvirt.rpc.busypoll import BusyPoll, client_window
from pyvirt.rpc.procedures import PROCEDURES, Procedure, ProcedureTable
from pyvirt.rpc.protocol import (
    PROTOCOL_VERSION,
    AuthType,
    Feature,
    FrameDecoder,
    Header,
    KeepaliveProc,
    Message,
    MessageType,
    Program,
    ProtocolError,
    Status,
    encode_message,
    error_from_remote,
)
from pyvirt.rpc.xdr import REMOTE_ERROR

if TYPE_CHECKING:
    import ssl

    from pyvirt.rpc.sasl import AuthOptions

__all__ = ["RPCClient", "Stream", "ClientState", "ConnectionClosed", "CONNECT_RO",
           "DEFAULT_SOCKET", "DEFAULT_SOCKET_RO", "EventHandler", "CloseCallback"]

log = logging.getLogger(__name__)

#: VIR_CONNECT_RO, the CONNECT_OPEN flag of a read-only connection.
CONNECT_RO = 1
DEFAULT_SOCKET = "/run/libvirt/libvirt-sock"
DEFAULT_SOCKET_RO = "/run/libvirt/libvirt-sock-ro"

EventHandler = Callable[[Procedure, Any], None]
CloseCallback = Callable[[PyvirtError | None], None]

#: libvirt's VIR_NET_MESSAGE_LEGACY_PAYLOAD_MAX: the largest data frame its client sends.
_STREAM_CHUNK = 256 * 1024 - 24


class ConnectionClosed(PyvirtError):
    """The connection is gone: libvirt reports this as a system error in the RPC domain."""

    code = codes.VIR_ERR_SYSTEM_ERROR
    domain = codes.VIR_FROM_RPC


class ClientState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


class Stream:
    """A data stream opened by a call (console, screenshot): raw bytes on the call's serial."""

    def __init__(self, client: RPCClient, proc: Procedure, serial: int) -> None:
        self._client, self.proc, self.serial = client, proc, serial
        self._incoming: asyncio.Queue[bytes | PyvirtError] = asyncio.Queue()
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._eof = False
        #: Called on the client's loop whenever something arrives for the reader (data, the end,
        #: an error): what a synchronous wrapper hangs its stream events on.
        self.on_ready: Callable[[], None] | None = None

    def _ready(self) -> None:
        if self.on_ready is not None:
            try:
                self.on_ready()
            except Exception:  # a broken callback must not kill the connection
                log.exception("stream callback failed")

    def _header(self, status: Status) -> Header:
        return Header(self.proc.program, PROTOCOL_VERSION, self.proc.number, MessageType.STREAM,
                      self.serial, status)

    def _on_message(self, msg: Message) -> None:
        h = msg.header
        if h.type == MessageType.STREAM_HOLE:
            self._fail(NotSupported("sparse streams (STREAM_HOLE) are not supported yet",
                                    domain=codes.VIR_FROM_STREAMS))
        elif h.status == Status.CONTINUE:
            # An empty CONTINUE is the peer's end of data.
            self._incoming.put_nowait(msg.payload)
        elif h.status == Status.OK:
            self._incoming.put_nowait(b"")
            if not self._finished.done():
                self._finished.set_result(None)
            self._client._streams.pop(self.serial, None)
        elif h.status == Status.ERROR:
            try:
                self._fail(error_from_remote(REMOTE_ERROR.decode(msg.payload)))
            except ProtocolError as exc:
                self._fail(exc)
        else:
            self._fail(ProtocolError(f"stream message with bad status: {h.describe()}"))
        self._ready()

    def _fail(self, exc: PyvirtError) -> None:
        self._incoming.put_nowait(exc)
        if not self._finished.done():
            self._finished.set_exception(exc)
            self._finished.exception()  # retrieved here: the reader may never ask
        self._client._streams.pop(self.serial, None)
        self._ready()

    def _take(self, item: bytes | PyvirtError) -> bytes:
        if isinstance(item, PyvirtError):
            self._eof = True
            raise item
        if not item:
            self._eof = True
        return item

    def recv_nowait(self) -> bytes | None:
        """The next chunk if one has arrived (``b""`` at the end), else None."""
        if self._eof:
            return b""
        try:
            item = self._incoming.get_nowait()
        except asyncio.QueueEmpty:
            return None
        return self._take(item)

    def has_data(self) -> bool:
        """Whether :meth:`recv` would return (or raise) at once."""
        return self._eof or not self._incoming.empty()

    async def recv(self) -> bytes:
        """The next chunk; ``b""`` once the peer has sent all its data."""
        if self._eof:
            return b""
        item = await self._incoming.get()
        if isinstance(item, PyvirtError):
            self._eof = True
            raise item
        if not item:
            self._eof = True
        return item

    async def send(self, data: bytes) -> None:
        """Send ``data`` (in frames of at most libvirt's legacy payload size, as its client does);
        an error the peer reported for the stream is raised instead."""
        if self._finished.done():
            self._finished.result()  # the peer's error, if it sent one
            raise PyvirtError("internal error: the stream is finished",
                              code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_STREAMS)
        view = memoryview(data)
        for start in range(0, len(view), _STREAM_CHUNK):
            await self._client._send(encode_message(self._header(Status.CONTINUE),
                                                    bytes(view[start:start + _STREAM_CHUNK])))

    async def finish(self, timeout: float | None = None) -> None:
        """Tell the peer we are done and wait for its acknowledgement (or the error it sent)."""
        if not self._finished.done():
            await self._client._send(encode_message(self._header(Status.OK)))
        await asyncio.wait_for(asyncio.shield(self._finished), timeout)

    async def abort(self, timeout: float | None = 10.0) -> None:
        """Tell the peer to drop the stream and wait for its acknowledgement, as libvirt's client
        does; a stream the peer already ended (or failed) sends nothing."""
        try:
            if self._finished.done() or self._client.state != ClientState.RUNNING:
                return
            await self._client._send(encode_message(self._header(Status.ERROR)))
            try:
                await asyncio.wait_for(asyncio.shield(self._finished), timeout)
            except (PyvirtError, TimeoutError):
                pass
        finally:
            self._client._streams.pop(self.serial, None)


class _Wire(asyncio.Protocol):
    """The connection's socket as asyncio sees it. What arrives is decoded and dispatched by the
    loop's own read callback: no reader task and no stream buffer in between, so a reply
    completes its call in the turn of the loop that read it. Writes go straight to the
    transport; :meth:`drain` waits only while asyncio's flow control has paused us."""

    def __init__(self, client: RPCClient) -> None:
        self.client: RPCClient | None = client
        self.transport: asyncio.Transport | None = None
        #: The first byte that arrives, when asked for (:meth:`expect_first_byte`).
        self._first: asyncio.Future[bytes] | None = None
        self._want_first = False
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Why the connection was lost (None: an end of file, or our own close).
        self.lost_by: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._want_first:
            self._want_first = False
            assert self._first is not None
            self._first.set_result(data[:1])
            data = data[1:]
            if not data:
                return
        if self.client is not None:
            self.client._received(data)

    def eof_received(self) -> bool | None:
        return None  # close our side too: the connection is over

    def connection_lost(self, exc: Exception | None) -> None:
        if self._want_first:
            self._want_first = False
            assert self._first is not None
            if exc is None:
                self._first.set_result(b"")
            else:  # (for first_byte(), if it is still asked: a failed handshake is not)
                self._first.set_exception(exc)
                self._first.exception()
        self._wake(exc or ConnectionResetError("Connection lost"))
        self.lost_by = exc
        if not self.lost.done():
            self.lost.set_result(None)
        client, self.client = self.client, None  # (no cycle left for the collector)
        if client is not None:
            client._lost(exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake(None)

    def _wake(self, exc: BaseException | None) -> None:
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    async def drain(self) -> None:
        """Wait while the transport holds more than its high-water mark; OSError if the
        connection is lost meanwhile."""
        if not self._paused:
            return
        if self.lost.done():
            raise ConnectionResetError("Connection lost")
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)

    def expect_first_byte(self) -> None:
        """Keep the next byte to arrive for :meth:`first_byte` (libvirt's TLS confirmation)."""
        self._first = asyncio.get_running_loop().create_future()
        self._want_first = not self.lost.done()
        if not self._want_first:
            self._first.set_result(b"")

    async def first_byte(self, timeout: float | None) -> bytes:
        """That byte; b"" if the peer closed the connection first."""
        assert self._first is not None, "expect_first_byte() first"
        return await asyncio.wait_for(asyncio.shield(self._first), timeout)


async def _open_tcp(wire: _Wire, host: str, port: int, timeout: float | None) -> None:
    """The TCP connection of the tcp and tls transports; failures worded as libvirt's client."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.create_connection(lambda: wire, host, port), timeout)
    except (TimeoutError, OSError) as exc:
        raise ConnectionClosed(f"unable to connect to server at '{host}:{port}': "
                               f"{_why(exc)}") from exc


class RPCClient:
    """One connection to a libvirt RPC server. Create it with :meth:`connect_unix` or
    :meth:`connect_tcp`, then :meth:`open` a hypervisor connection and :meth:`call`."""

    _loop: asyncio.AbstractEventLoop  # the loop it was connected on

    def __init__(self, *, table: ProcedureTable = PROCEDURES, answer_pings: bool = True) -> None:
        self._table = table
        self._answer_pings = answer_pings
        self._state = ClientState.IDLE
        self._wire: _Wire | None = None
        self._child: _Child | None = None  # the ssh (or other) process of a command transport
        #: Once the connection is lost: what finds out why (the ssh process's last words).
        self._ending: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._decoder = FrameDecoder()
        self._pending: dict[int, tuple[Procedure, asyncio.Future[Any]]] = {}
        self._streams: dict[int, Stream] = {}
        self._next_serial = 0
        self._handlers: list[tuple[Procedure | None, EventHandler]] = []
        self._close_callbacks: list[CloseCallback] = []
        self._close_error: PyvirtError | None = None
        self._closed = asyncio.Event()
        self._opened = False
        self._goodbye = False  # CONNECT_CLOSE sent: the server hanging up is then expected
        self.peer = "(not connected)"
        #: True over TLS (virNetClientIsEncrypted).
        self.encrypted = False
        self.pings_received = 0
        self.pongs_received = 0
        self.last_received = 0.0
        #: Polling for the server's reply after each call (pyvirt.rpc.busypoll).
        self.busy_poll = BusyPoll(client_window())

    # ---- connecting ----

    @classmethod
    async def connect_unix(cls, path: str, *, timeout: float | None = 30.0,
                           **kwargs: Any) -> RPCClient:
        self = cls(**kwargs)
        wire = _Wire(self)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_unix_connection(lambda: wire, path), timeout)
        except (TimeoutError, OSError) as exc:
            raise ConnectionClosed(f"Failed to connect socket to '{path}': {_why(exc)}") from exc
        self._attach(wire, path)
        return self

    @classmethod
    async def connect_tcp(cls, host: str, port: int, *, timeout: float | None = 30.0,
                          **kwargs: Any) -> RPCClient:
        self = cls(**kwargs)
        wire = _Wire(self)
        await _open_tcp(wire, host, port, timeout)
        self._attach(wire, f"{host}:{port}")
        return self

    @classmethod
    async def connect_tls(cls, host: str, port: int, context: ssl.SSLContext, *,
                          verify: bool = True, timeout: float | None = 30.0,
                          **kwargs: Any) -> RPCClient:
        """TCP, the TLS handshake, libvirt's checks of the server's certificate (unless not
        ``verify``: ``no_verify=1``), then the server's one-byte confirmation
        (:mod:`pyvirt.rpc.tls`); errors as libvirt's client words them."""
        from pyvirt.rpc.tls import tls_handshake

        self = cls(**kwargs)
        wire = _Wire(self)
        await _open_tcp(wire, host, port, timeout)
        await tls_handshake(wire, context, host, port, verify=verify, timeout=timeout,
                            kick=self.busy_poll.kick)
        self._attach(wire, f"{host}:{port}")
        self.encrypted = True
        return self

    @classmethod
    async def connect_command(cls, argv: Sequence[str], *, env: dict[str, str] | None = None,
                              peer: str, **kwargs: Any) -> RPCClient:
        """Run ``argv`` (ssh, for qemu+ssh) with the protocol on its stdin/stdout: one end of a
        socket pair, as libvirt's virNetSocketNewConnectCommand; its stderr explains a failure."""
        import socket

        self = cls(**kwargs)
        ours, theirs = socket.socketpair()
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=theirs.fileno(), stdout=theirs.fileno(),
                    stderr=asyncio.subprocess.PIPE, env=env)
            except OSError as exc:
                raise ConnectionClosed(f"Cannot run '{argv[0]}' for {peer}: {_why(exc)}") from exc
            finally:
                theirs.close()
            self._child = _Child(proc, peer)
            wire = _Wire(self)
            await asyncio.get_running_loop().create_unix_connection(lambda: wire, sock=ours)
        except BaseException:
            ours.close()
            if self._child is not None:
                await self._child.reap()
            raise
        self._attach(wire, peer)
        return self

    def _attach(self, wire: _Wire, peer: str) -> None:
        if self._state != ClientState.IDLE:
            raise PyvirtError(f"RPC client is {self._state.value}, cannot attach a transport",
                              code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_RPC)
        self._wire, self.peer = wire, peer
        self._loop = self.busy_poll.loop = asyncio.get_running_loop()
        self._state = ClientState.RUNNING
        self.last_received = self._loop.time()
        if wire.lost.done():  # lost before we took it over
            self._lost(wire.lost_by)

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def is_open(self) -> bool:
        """True once CONNECT_OPEN succeeded and until the connection closes."""
        return self._opened and self._state == ClientState.RUNNING

    # ---- callbacks ----

    def add_event_handler(self, handler: EventHandler,
                          proc: str | Procedure | None = None) -> Callable[[], None]:
        """Call ``handler(proc, record)`` for each event (of ``proc`` only, if given).
        Returns a function that removes the handler."""
        key = self._table.lookup(proc) if isinstance(proc, str) else proc
        entry = (key, handler)
        self._handlers.append(entry)
        return lambda: self._handlers.remove(entry) if entry in self._handlers else None

    def add_close_callback(self, callback: CloseCallback) -> Callable[[], None]:
        """Call ``callback(error)`` once when the connection ends; ``error`` is None after a
        close we asked for. Registering on a closed client calls it at once."""
        if self._state == ClientState.CLOSED:
            callback(self._close_error)
            return lambda: None
        self._close_callbacks.append(callback)
        return lambda: (self._close_callbacks.remove(callback)
                        if callback in self._close_callbacks else None)

    # ---- calls ----

    def _resolve(self, proc: str | Procedure) -> Procedure:
        p = self._table.lookup(proc) if isinstance(proc, str) else proc
        if p.event:
            raise ValueError(f"{p.full_name} is an event, not a call")
        return p

    def _check_running(self) -> None:
        if self._state != ClientState.RUNNING:
            if self._close_error is not None:
                raise ConnectionClosed(f"client socket is closed: {self._close_error.message}",
                                       code=codes.VIR_ERR_INTERNAL_ERROR)
            raise ConnectionClosed("client socket is closed", code=codes.VIR_ERR_INTERNAL_ERROR)

    def _allocate_serial(self) -> int:
        # Serials are u32 and wrap; one still waiting for its reply is never reused.
        while True:
            serial = self._next_serial
            self._next_serial = (serial + 1) & 0xFFFFFFFF
            if serial not in self._pending and serial not in self._streams:
                return serial

    def _write(self, frame: bytes) -> None:
        self._check_running()
        assert self._wire is not None and self._wire.transport is not None
        self._wire.transport.write(frame)

    async def _send(self, frame: bytes) -> None:
        self._write(frame)
        await self._sent()

    def _start(self, proc: Procedure, args: Any, fields: dict[str, Any] | None,
               timeout: float | None, stream: bool = False) -> tuple[asyncio.Future[Any], int]:
        """Send a call; the future of its reply and its serial. Synchronous: the frame is
        handed to the transport, whose flow control the caller may then wait for."""
        if fields:
            if args is not None:
                raise TypeError("pass the arguments either as a record or as keywords, not both")
            args = fields
        payload = proc.args.encode(args)
        self._check_running()
        serial = self._allocate_serial()
        header = Header(proc.program, PROTOCOL_VERSION, proc.number, MessageType.CALL, serial)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[serial] = (proc, future)
        if stream:
            # Registered before sending: stream data may follow the reply immediately.
            self._streams[serial] = Stream(self, proc, serial)
        self._write(encode_message(header, payload))
        self.busy_poll.kick()  # the reply follows within microseconds
        if timeout is not None:
            timer = self._loop.call_later(timeout, self._time_out, serial, proc, timeout)
            future.add_done_callback(lambda _: timer.cancel())
        return future, serial

    def _time_out(self, serial: int, proc: Procedure, timeout: float) -> None:
        entry = self._pending.pop(serial, None)
        if entry is not None and not entry[1].done():
            entry[1].set_exception(PyvirtError(
                f"{proc.full_name} got no reply from {self.peer} within {timeout} s",
                code=codes.VIR_ERR_OPERATION_TIMEOUT, domain=codes.VIR_FROM_RPC))

    async def _sent(self, future: asyncio.Future[Any] | None = None) -> None:
        """Wait for the transport to take what it was given, when it holds too much. If the
        connection fails meanwhile, that is raised (and ``future``'s failure is nobody's)."""
        assert self._wire is not None
        try:
            await self._wire.drain()
        except OSError as exc:
            err = ConnectionClosed(f"Cannot write data to {self.peer}: {_why(exc)}")
            self._shutdown(err)
            if future is not None and future.done() and not future.cancelled():
                future.exception()
            raise err from exc

    def start_call(self, proc: str | Procedure, args: Any = None,
                   fields: dict[str, Any] | None = None, *,
                   timeout: float | None = None) -> asyncio.Future[Any]:
        """Send a call now, without waiting: the future of its decoded reply (see :meth:`call`).
        Run on the client's loop, or by the thread that runs that loop for the call."""
        p = self._resolve(proc)
        if p.stream:
            raise ValueError(f"{p.full_name} opens a stream: use call_stream()")
        return self._start(p, args, fields, timeout)[0]

    async def call(self, proc: str | Procedure, args: Any = None, /, *,
                   timeout: float | None = None, **fields: Any) -> Any:
        """Call ``proc`` and return its decoded reply (None for void).

        Arguments are a record, a mapping, or keywords. A remote error is raised as
        :class:`~pyvirt.rpc.protocol.RemoteError` with the server's code, domain and message;
        no reply within ``timeout`` seconds as VIR_ERR_OPERATION_TIMEOUT.
        """
        future = self.start_call(proc, args, fields, timeout=timeout)
        await self._sent(future)
        return await future

    async def call_stream(self, proc: str | Procedure, args: Any = None, /, *,
                          timeout: float | None = None, **fields: Any) -> tuple[Any, Stream]:
        """Call a procedure that opens a stream: its reply and the :class:`Stream`."""
        p = self._resolve(proc)
        future, serial = self._start(p, args, fields, timeout, stream=True)
        stream = self._streams[serial]
        try:
            await self._sent(future)
            return await future, stream
        except BaseException:
            self._streams.pop(serial, None)
            raise

    # ---- the connection prelude (what virsh does) ----

    async def open(self, name: str | None = "", *, readonly: bool = False,
                   keepalive_interval: float | None = None, keepalive_count: int = 5,
                   timeout: float | None = 60.0, auth_options: AuthOptions | None = None,
                   ask_keepalive: bool = True) -> None:
        """AUTH_LIST, SUPPORTS_FEATURE(keepalive), CONNECT_OPEN -- as virsh does; without
        ``ask_keepalive``, no SUPPORTS_FEATURE, as libvirt's client without an event loop: the
        server then never pings us (nobody might be reading to answer).

        ``name`` is the URI the server opens (``""`` lets it choose, None sends NULL). With
        ``keepalive_interval``, we also ping the server when it has been quiet that long and drop
        the connection after ``keepalive_count`` unanswered intervals, as libvirt's client does.
        """
        auth = await self.call("AUTH_LIST", timeout=timeout)
        if auth.types and (auth.types[0] != AuthType.NONE or auth_options is not None):
            from pyvirt.rpc.sasl import authenticate  # SASL (SCRAM), as libvirt's remote driver

            await authenticate(self, list(auth.types), auth_options, timeout=timeout)
        keepalive = ask_keepalive and (await self.call(
            "CONNECT_SUPPORTS_FEATURE", feature=Feature.PROGRAM_KEEPALIVE, timeout=timeout)).supported
        await self.call("CONNECT_OPEN", name=name, flags=CONNECT_RO if readonly else 0,
                        timeout=timeout)
        self._opened = True
        if keepalive and keepalive_interval:
            self._keepalive_task = asyncio.create_task(
                self._keepalive(keepalive_interval, keepalive_count))

    def set_keepalive(self, interval: float | None, count: int = 5) -> None:
        """(Re)start our pings with these values, or stop them with None (virConnectSetKeepAlive).
        Call on the client's loop."""
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        if interval:
            self._check_running()
            self._keepalive_task = asyncio.create_task(self._keepalive(interval, count))

    async def close(self, timeout: float | None = 10.0) -> None:
        """CONNECT_CLOSE when a hypervisor connection is open, then close the socket."""
        if self._state == ClientState.RUNNING and self._opened:
            self._goodbye = True
            try:
                await self.call("CONNECT_CLOSE", timeout=timeout)
            except PyvirtError as exc:
                log.debug("CONNECT_CLOSE to %s failed: %s", self.peer, exc)
        await self.abort()

    async def abort(self) -> None:
        """Close the socket without a goodbye; pending calls fail. Idempotent."""
        self._shutdown(None)
        tasks = [t for t in (self._ending, self._keepalive_task)
                 if t is not None and t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._wire is not None:
            await self._wire.lost
        if self._child is not None:
            await self._child.reap()

    # ---- receiving ----

    def _received(self, data: bytes) -> None:
        """What the socket delivered: each whole message is dispatched at once."""
        if self._state != ClientState.RUNNING:
            return
        self.last_received = self._loop.time()
        try:
            for msg in self._decoder.feed(data):
                self._dispatch(msg)
        except ProtocolError as exc:
            self._shutdown(ProtocolError(f"protocol error from {self.peer}: {exc.message}"))

    def _lost(self, exc: Exception | None) -> None:
        """The socket is closed: by us (a goodbye, a shutdown), by the peer, or by an error."""
        if self._state == ClientState.IDLE:
            return  # still connecting: _attach() reports it
        if self._state != ClientState.RUNNING or self._goodbye:
            self._shutdown(None)
            return
        if exc is None:
            trunc = (f", {self._decoder.buffered} bytes of an incomplete message lost"
                     if self._decoder.buffered else "")
            what, why = "End of file while reading data", "Input/output error"
            error = ConnectionClosed(f"{what}: {why} (from {self.peer}{trunc})")
        else:
            what, why = "Cannot recv data", _why(exc)
            error = ConnectionClosed(f"{what} from {self.peer}: {why}")
        child = self._child
        if child is None:
            self._shutdown(error)
            return

        async def explain() -> None:  # the ssh process usually says why it ended
            try:
                self._shutdown(await child.failure(what, why))
            finally:
                self._shutdown(error)
        self._ending = self._loop.create_task(explain(), name=f"pyvirt-rpc end {self.peer}")

    def _dispatch(self, msg: Message) -> None:
        h = msg.header
        if h.prog == Program.KEEPALIVE:
            self._on_keepalive(h)
        elif h.type in (MessageType.REPLY, MessageType.REPLY_WITH_FDS):
            self._on_reply(msg)
        elif h.type in (MessageType.STREAM, MessageType.STREAM_HOLE):
            stream = self._streams.get(h.serial)
            if stream is None:
                log.debug("stream data for unknown serial from %s: %s", self.peer, h.describe())
            else:
                stream._on_message(msg)
        elif h.type == MessageType.MESSAGE:
            self._on_event(msg)
        else:
            log.debug("ignoring unexpected message from %s: %s", self.peer, h.describe())

    def _on_keepalive(self, h: Header) -> None:
        if h.proc == KeepaliveProc.PING:
            self.pings_received += 1
            if self._answer_pings and self._state == ClientState.RUNNING:
                pong = Header(Program.KEEPALIVE, PROTOCOL_VERSION, KeepaliveProc.PONG,
                              MessageType.MESSAGE, 0)
                self._write(encode_message(pong))
        elif h.proc == KeepaliveProc.PONG:
            self.pongs_received += 1

    def _on_reply(self, msg: Message) -> None:
        h = msg.header
        entry = self._pending.pop(h.serial, None)
        if entry is None and h.status == Status.ERROR and h.serial in self._streams:
            # libvirtd answers a stream's failed finish with an error REPLY on its serial
            try:
                self._streams[h.serial]._fail(error_from_remote(REMOTE_ERROR.decode(msg.payload)))
            except ProtocolError as exc:
                self._streams[h.serial]._fail(exc)
            return
        if entry is None:
            log.debug("reply for unknown serial from %s (timed out?): %s", self.peer, h.describe())
            return
        proc, future = entry
        if future.done():
            return
        if (h.prog, h.proc) != (proc.program, proc.number):
            future.set_exception(ProtocolError(
                f"reply to {proc.full_name} serial {h.serial} names another procedure: {h.describe()}"))
        elif h.status == Status.OK:
            try:
                future.set_result(proc.ret.decode(msg.payload))
            except ProtocolError as exc:
                future.set_exception(ProtocolError(f"bad reply to {proc.full_name}: {exc.message}"))
        elif h.status == Status.ERROR:
            try:
                future.set_exception(error_from_remote(REMOTE_ERROR.decode(msg.payload)))
            except ProtocolError as exc:
                future.set_exception(ProtocolError(
                    f"bad error reply to {proc.full_name}: {exc.message}"))
        else:
            future.set_exception(ProtocolError(f"reply with bad status: {h.describe()}"))
        if h.status != Status.OK:
            self._streams.pop(h.serial, None)

    def _on_event(self, msg: Message) -> None:
        h = msg.header
        proc = self._table.get(h.prog, h.proc)
        if proc is None or not proc.event:
            log.debug("ignoring unknown event from %s: %s", self.peer, h.describe())
            return
        try:
            record = proc.args.decode(msg.payload)
        except ProtocolError as exc:
            log.warning("dropping malformed %s from %s: %s", proc.full_name, self.peer, exc)
            return
        for wanted, handler in list(self._handlers):
            if wanted is None or wanted is proc:
                try:
                    handler(proc, record)
                except Exception:  # a broken handler must not kill the connection
                    log.exception("event handler for %s failed", proc.full_name)

    async def _keepalive(self, interval: float, count: int) -> None:
        loop = asyncio.get_running_loop()
        ping = encode_message(Header(Program.KEEPALIVE, PROTOCOL_VERSION, KeepaliveProc.PING,
                                     MessageType.MESSAGE, 0))
        while self._state == ClientState.RUNNING:
            await asyncio.sleep(interval)
            quiet = loop.time() - self.last_received
            if quiet >= interval * (count + 1):
                self._shutdown(ConnectionClosed(
                    f"connection to {self.peer} closed due to keepalive timeout: no data for "
                    f"{quiet:.1f} s", code=codes.VIR_ERR_INTERNAL_ERROR))
                return
            if quiet >= interval and self._state == ClientState.RUNNING:
                self._write(ping)

    # ---- shutting down ----

    def _shutdown(self, error: PyvirtError | None) -> None:
        """Idempotent: fail what is pending, close the socket, run the close callbacks once."""
        if self._state in (ClientState.CLOSING, ClientState.CLOSED):
            return
        self._state = ClientState.CLOSING
        self._close_error = error
        failure = error or ConnectionClosed(f"connection to {self.peer} was closed by the client",
                                            code=codes.VIR_ERR_INTERNAL_ERROR)
        pending, self._pending = self._pending, {}
        for proc, future in pending.values():
            if not future.done():
                future.set_exception(type(failure)(
                    f"{proc.full_name} failed: {failure.message}", code=failure.code,
                    domain=failure.domain))
        for stream in list(self._streams.values()):
            stream._fail(failure)
        self._streams.clear()
        if self._keepalive_task is not None and self._keepalive_task is not asyncio.current_task():
            self._keepalive_task.cancel()
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.close()
        self._state = ClientState.CLOSED
        self._closed.set()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback(error)
            except Exception:
                log.exception("close callback failed")


class _Child:
    """The process behind a command transport: its stderr, kept for the error that explains a
    lost connection (libvirt words it "Cannot recv data: STDERR: Connection reset by peer"),
    and its end, waited for so that no process outlives the connection."""

    _KEEP = 4096

    def __init__(self, proc: asyncio.subprocess.Process, peer: str) -> None:
        self.proc, self.peer = proc, peer
        self._stderr = b""
        self._drain = asyncio.create_task(self._collect(), name=f"pyvirt-rpc stderr {peer}")

    async def _collect(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self._stderr = (self._stderr + chunk)[-self._KEEP:]

    async def failure(self, what: str, why: str, timeout: float = 3.0) -> ConnectionClosed:
        """The error for a connection that ended: the process usually exits right after its
        end of the socket closes, so wait briefly for its exit status and last words."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.proc.wait(), timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._drain), 1.0)
        said = self._stderr.decode("utf-8", "replace").strip()
        status = self.proc.returncode
        ended = f"exited with status {status}" if status is not None else "still running"
        return ConnectionClosed(f"{what}: {said + ': ' if said else ''}{why} ({self.peer} {ended})")

    async def reap(self) -> None:
        """Wait for the process to end (ssh does once its stdin closes and the remote command
        ends), else TERM and then KILL it, as libvirt's virProcessAbort."""
        for stop, grace in ((None, 2.0), (self.proc.terminate, 2.0), (self.proc.kill, 5.0)):
            if stop is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), grace)
                break
        self._drain.cancel()
        await asyncio.gather(self._drain, return_exceptions=True)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        # asyncio's "Connect call failed (...)" hides the cause that libvirt names
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
