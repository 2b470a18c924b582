# SPDX-License-Identifier: LGPL-2.1-or-later
"""One client of pyvirtd (:class:`ClientConnection`): the asyncio protocol that decodes its frames,
runs its calls (on the spot or as tasks, within ``max_client_requests``), writes replies and
events back within its output limit, answers and sends keepalive messages, and carries its data
streams. The server (:mod:`pyvirt.daemon.server`) accepts the connection and admits the client."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, cast

from pyvirt.daemon.dispatch import ClientSession, PendingCall
from pyvirt.daemon.listen import ClientSlot
from pyvirt.daemon.streams import ClientStreams
from pyvirt.rpc.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    Header,
    KeepaliveProc,
    Message,
    MessageType,
    Program,
    ProtocolError,
    encode_message,
)

if TYPE_CHECKING:
    from pyvirt.daemon.server import Daemon

__all__ = ["ClientConnection"]

log = logging.getLogger("pyvirt.daemon")

#: Bytes of unsent output past which a client that does not read its events is dropped (libvirtd
#: would queue without bound); a reply waiting for it counts too.
_EVENT_BACKLOG_MAX = 32 * 1024 * 1024
_CALL_TYPES = frozenset({int(MessageType.CALL), int(MessageType.CALL_WITH_FDS)})

_PING = encode_message(Header(Program.KEEPALIVE, PROTOCOL_VERSION, KeepaliveProc.PING,
                              MessageType.MESSAGE, 0))
_PONG = encode_message(Header(Program.KEEPALIVE, PROTOCOL_VERSION, KeepaliveProc.PONG,
                              MessageType.MESSAGE, 0))


class ClientConnection(asyncio.Protocol):
    """One connected client: its frames are decoded as they arrive; a call that cannot block is
    answered on the spot, any other runs as a task; replies are written as they are ready.

    Push-back, per client only: while ``max_client_requests`` of its calls run, or while its
    unsent output is past the transport's high-water mark (it does not read), the messages it
    already sent wait here and its socket is not read.
    """

    def __init__(self, daemon: Daemon, slot: ClientSlot, *, readonly: bool, kind: str) -> None:
        self.daemon = daemon
        self.slot = slot
        self.readonly = readonly
        self.kind = kind
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.session: ClientSession | None = None
        self.decoder = FrameDecoder()
        self.calls: set[asyncio.Task[None]] = set()
        self.waiting: collections.deque[Message] = collections.deque()
        self.max_calls = daemon.config.max_client_requests
        self.closed = False
        self.gone = asyncio.Event()
        self.last_received = self.loop.time()
        self._keepalive: asyncio.Task[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._peer = "(connecting)"
        self._kick = daemon.busy_poll.kick
        #: Its data streams (pyvirt.daemon.streams), by the serial of the call that opened each.
        self.streams = ClientStreams(self.loop, self._peer, write=self.write,
                                     can_send=lambda: not self._write_paused,
                                     wake=lambda: self.loop.call_soon(self._process))

    @property
    def peer(self) -> str:
        return self._peer

    # ---- the transport's callbacks ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's transports are not subclasses)
        self.transport = transport
        self.session = self.daemon._admit(self, transport)
        if self.session is None:
            self.closed = True
            transport.close()
            self.daemon.release(self.slot)
            return
        self._peer = self.streams.peer = self.session.peer
        self.session.events.post = self.post_event

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_received = self.loop.time()
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as exc:
            log.warning("client %s: protocol error, closing: %s", self.peer, exc.message)
            self.close()
            return
        if (len(messages) == 1 and not self.waiting and len(self.calls) < self.max_calls
                and not self._write_paused and not self.streams.backlogged()):
            self.on_message(messages[0])  # the usual: one message, and nothing holds it back
        else:
            self.waiting.extend(messages)
            self._process()
        if self.session is not None and self.session.keepalive and self._keepalive is None:
            self.start_keepalive()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.decoder.buffered:
            log.info("client %s: disconnected with %d bytes of an incomplete message",
                     self.peer, self.decoder.buffered)
        elif exc is not None:
            log.info("client %s: connection lost: %s", self.peer, exc)
        self.closed = True
        self.gone.set()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self.streams.resume_output()
        self._process()

    # ---- calls ----

    def _process(self) -> None:
        """Handle the messages received so far, as far as the limits allow."""
        while self.waiting and not self.closed:
            if (len(self.calls) >= self.max_calls or self._write_paused
                    or self.streams.backlogged()):
                if not self._read_paused and self.transport is not None:
                    self.transport.pause_reading()
                    self._read_paused = True
                return
            self.on_message(self.waiting.popleft())
        if self._read_paused and not self.closed and self.transport is not None:
            self.transport.resume_reading()
            self._read_paused = False

    def on_message(self, msg: Message) -> None:
        # (a CALL to the keepalive program is answered "Cannot find program", as by libvirtd)
        if msg.header.type not in _CALL_TYPES:
            self._on_other(msg)
            return
        assert self.session is not None
        prepared = self.daemon.dispatcher.prepare(self.session, msg)
        if isinstance(prepared, bytes):  # answered on the spot
            self.write(prepared)
            self._kick()  # the client's next call follows within microseconds
            if self.session.hangup:
                self.close()  # the reply is out, now hang up (see handle_call)
            return
        task = self.loop.create_task(self.handle_call(prepared))
        self.calls.add(task)
        task.add_done_callback(self._call_done)

    def _on_other(self, msg: Message) -> None:
        """A message that is not a call: keepalive, stream data, or one to ignore."""
        h = msg.header
        if h.prog == Program.KEEPALIVE and h.type == MessageType.MESSAGE:
            if h.proc == KeepaliveProc.PING:
                self.write(_PONG)
            return  # a PONG only proves the client alive, which last_received already notes
        if h.type in (MessageType.STREAM, MessageType.STREAM_HOLE):
            self.streams.deliver(msg)
            return
        # libvirtd drops replies, events and stream data it did not expect, silently
        log.debug("client %s: ignoring %s", self.peer, h.describe())

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self.calls.discard(task)
        self._process()

    async def handle_call(self, call: PendingCall) -> None:
        assert self.session is not None
        slot = None
        if call.proc.stream:  # its handler may open a stream, started once the reply is out
            call, slot = self.streams.bind(call)
        frame: bytes | None = None
        try:
            frame = await self.daemon.dispatcher.finish(self.session, call)
        except Exception:
            log.exception("client %s: dispatching %s failed", self.peer, call.header.describe())
            return
        finally:
            if frame is not None:
                self.write(frame)
                self._kick()
            if slot is not None:
                self.streams.opened(slot, frame)
        if self.slot.anonymous and not self.session.auth_pending:
            self.daemon.authenticated(self.slot)  # (only AUTH_* calls reach here unauthenticated)
        if self.session.hangup:
            self.close()  # CONNECT_CLOSE: the reply is out, now hang up as libvirtd does

    # ---- output ----

    def write(self, frame: bytes) -> None:
        """Queue one whole frame (frames never interleave); never waits."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return  # the client left: the reply has nowhere to go
        transport.write(frame)

    def post_event(self, frame: bytes) -> None:
        """From pyvirt's event thread: queue an event frame for this client, without waiting."""
        try:
            self.loop.call_soon_threadsafe(self._write_event, frame)
        except RuntimeError:
            pass  # the loop is closed: the daemon is gone, and the client with it

    def _write_event(self, frame: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return
        backlog = transport.get_write_buffer_size()
        if backlog + len(frame) > _EVENT_BACKLOG_MAX:
            log.warning("client %s: %d bytes of events unread, closing", self.peer, backlog)
            self.close()
            return
        transport.write(frame)

    # ---- keepalive ----

    def start_keepalive(self) -> None:
        interval = self.daemon.config.keepalive_interval
        if interval > 0:
            self._keepalive = self.loop.create_task(
                self.keepalive(interval, self.daemon.config.keepalive_count))

    async def keepalive(self, interval: float, count: int) -> None:
        """libvirt's keepalive (virKeepAliveTimer): after ``interval`` seconds without a message
        from the client, a PING, and another after each further quiet interval; once ``count``
        PINGs went unanswered for an interval each, the client is dropped. Any message from it
        starts over. The PINGs are counted, not inferred from the quiet time: a timer that fires
        a little early never lets a client go unpinged."""
        heard = start = self.last_received
        left = count
        while not self.closed:
            if self.last_received != heard:  # heard from it: start over
                heard = start = self.last_received
                left = count
            wait = start + interval - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if left == 0:
                log.warning("client %s: no response after %d keepalive messages in %.0f s, closing",
                            self.peer, count, self.loop.time() - heard)
                self.close()
                return
            left -= 1
            start = self.loop.time()
            self.write(_PING)

    # ---- the end ----

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()  # after what is queued has been sent
        self.gone.set()

    async def lifetime(self) -> None:
        """Until the client is gone; then its calls end and its hypervisor connection closes."""
        await self.gone.wait()
        await self.finish()

    async def finish(self) -> None:
        self.close()
        self.streams.close_all()
        if self._keepalive is not None:
            self._keepalive.cancel()
        session = self.session
        if session is None:
            return
        session.events.post = None
        if self.calls:
            # Calls already on worker threads cannot be interrupted; let them end, then close
            # the client's hypervisor connection behind them.
            await asyncio.wait(set(self.calls), timeout=None)
        try:
            if session.close_blocks():
                await self.loop.run_in_executor(self.daemon.workers, session.release)
            else:
                session.release()  # in memory only: not worth a worker thread
        except Exception:
            log.exception("client %s: closing its connection failed", self.peer)
        log.debug("client %s: gone", self.peer)
