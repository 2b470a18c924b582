# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QMP monitor of one QEMU process, with a synchronous, thread-safe API.

Built on qemu.qmp's async core (``QMPClient``; never its GPL ``legacy`` module), which runs on
pyvirt's shared loop thread (:mod:`pyvirt.qemu.loop`). What this adds to qemu.qmp:

* a blocking API callable from any thread, so the driver needs no event loop from its user;
* a deadline per command (:class:`~pyvirt.errors.MonitorTimeout`); the connection stays up and
  QEMU's late answer is dropped by qemu.qmp (it logs "Unknown ID ... dropped");
* QEMU's errors as :class:`~pyvirt.errors.MonitorCommandError` carrying QMP's class and desc;
* typed events (:class:`ShutdownEvent`, :class:`ResetEvent`, ...; :class:`QMPEvent` otherwise)
  delivered to subscribers on a pyvirt thread, never on the loop thread, in QEMU's order;
* ``on_disconnect``, called exactly once when QEMU ends the connection (exit, crash, kill),
  after every event received before it; not called for :meth:`Monitor.close`;
* passing file descriptors (:meth:`Monitor.send_fd`: SCM_RIGHTS + ``getfd``).

States follow qemu.qmp: ``idle -> connecting -> running -> disconnecting -> idle``. A call in
the wrong state raises :class:`~pyvirt.errors.MonitorStateError`; when the connection drops,
every pending call fails with :class:`~pyvirt.errors.MonitorDisconnected`.

Threads: callbacks run on a short-lived per-monitor "events" thread, one callback at a time, so a
callback may itself call :meth:`Monitor.execute`; a slow callback delays only its own monitor's
later events. The thread exists only while there is something to deliver, so a thousand idle
domains cost no threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import enum
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from qemu.qmp import (
    ConnectError,
    ExecInterruptedError,
    ExecuteError,
    Message,
    QMPClient,
    Runstate,
    StateError,
)

from pyvirt.errors import (
    MonitorCommandError,
    MonitorDisconnected,
    MonitorError,
    MonitorStateError,
    MonitorTimeout,
)
from pyvirt.qemu.loop import get_loop

__all__ = [
    "MonitorState",
    "Monitor",
    "Disconnect",
    "Subscription",
    "EventQueue",
    "QMPEvent",
    "ShutdownEvent",
    "PowerdownEvent",
    "ResetEvent",
    "StopEvent",
    "ResumeEvent",
    "GuestPanickedEvent",
    "parse_event",
    "DEFAULT_TIMEOUT",
    "CONNECT_TIMEOUT",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds a command may take unless the caller says otherwise (None: no limit)
DEFAULT_TIMEOUT = 30.0
#: seconds for the connection, QEMU's greeting and capability negotiation
CONNECT_TIMEOUT = 30.0
#: seconds close() waits for a clean end before it drops the connection outright
CLOSE_TIMEOUT = 5.0
# The loop-side deadline is the real one; this margin only guards against a wedged loop thread.
_GUARD = 10.0


class MonitorState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    RUNNING = "running"
    DISCONNECTING = "disconnecting"


# --- events --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class QMPEvent:
    """A QMP event; the typed subclasses below add its fields, this class serves every other one."""

    name: str
    data: Mapping[str, Any]
    #: when QEMU emitted it (seconds since the epoch, QEMU's clock), None if it gave no timestamp
    timestamp: float | None

    NAME: ClassVar[str] = ""

    @classmethod
    def _from_data(cls, name: str, data: Mapping[str, Any], timestamp: float | None) -> QMPEvent:
        return cls(name=name, data=data, timestamp=timestamp)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShutdownEvent(QMPEvent):
    """QEMU is shutting the guest down; ``guest`` is true when the guest asked for it (ACPI, poweroff)."""

    guest: bool
    reason: str  # "guest-shutdown", "host-qmp-quit", "host-signal", "guest-panic", ...

    NAME: ClassVar[str] = "SHUTDOWN"

    @classmethod
    def _from_data(cls, name: str, data: Mapping[str, Any], timestamp: float | None) -> QMPEvent:
        return cls(name=name, data=data, timestamp=timestamp, guest=bool(data.get("guest", False)),
                   reason=str(data.get("reason", "")))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PowerdownEvent(QMPEvent):
    """The ACPI power button was pressed (system_powerdown); the guest may or may not react."""

    NAME: ClassVar[str] = "POWERDOWN"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResetEvent(QMPEvent):
    """The machine was reset; ``guest`` is true for a reboot from inside the guest."""

    guest: bool
    reason: str  # "guest-reset", "host-qmp-system-reset", ...

    NAME: ClassVar[str] = "RESET"

    @classmethod
    def _from_data(cls, name: str, data: Mapping[str, Any], timestamp: float | None) -> QMPEvent:
        return cls(name=name, data=data, timestamp=timestamp, guest=bool(data.get("guest", False)),
                   reason=str(data.get("reason", "")))


@dataclasses.dataclass(frozen=True, kw_only=True)
class StopEvent(QMPEvent):
    """The vCPUs stopped (``stop``, I/O error, migration, ...)."""

    NAME: ClassVar[str] = "STOP"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResumeEvent(QMPEvent):
    """The vCPUs run again (``cont``)."""

    NAME: ClassVar[str] = "RESUME"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GuestPanickedEvent(QMPEvent):
    """The guest reported a panic (pvpanic, Hyper-V crash MSRs, s390 ...)."""

    action: str  # "pause", "poweroff" or "run"
    info: Mapping[str, Any] | None

    NAME: ClassVar[str] = "GUEST_PANICKED"

    @classmethod
    def _from_data(cls, name: str, data: Mapping[str, Any], timestamp: float | None) -> QMPEvent:
        info = data.get("info")
        return cls(name=name, data=data, timestamp=timestamp, action=str(data.get("action", "")),
                   info=info if isinstance(info, Mapping) else None)


_EVENT_TYPES: dict[str, type[QMPEvent]] = {
    cls.NAME: cls for cls in (ShutdownEvent, PowerdownEvent, ResetEvent, StopEvent, ResumeEvent,
                              GuestPanickedEvent)
}


def parse_event(msg: Mapping[str, Any]) -> QMPEvent:
    """The typed event for a raw QMP event message."""
    name = str(msg["event"])
    raw_data = msg.get("data")
    data: Mapping[str, Any] = raw_data if isinstance(raw_data, Mapping) else {}
    ts = msg.get("timestamp")
    timestamp: float | None = None
    if isinstance(ts, Mapping) and isinstance(ts.get("seconds"), int):
        timestamp = ts["seconds"] + ts.get("microseconds", 0) / 1e6
    return _EVENT_TYPES.get(name, QMPEvent)._from_data(name, data, timestamp)


@dataclasses.dataclass(frozen=True)
class Disconnect:
    """Why a monitor connection ended without :meth:`Monitor.close`."""

    reason: str
    #: what qemu.qmp saw: EOFError for a clean close by QEMU, OSError for a reset, ...
    error: BaseException | None = None


EventCallback = Callable[[QMPEvent], None]
EventFilter = Callable[[QMPEvent], bool]


class Subscription:
    """A callback for some events of one monitor; :meth:`cancel` (or leaving ``with``) ends it."""

    def __init__(self, monitor: Monitor, callback: EventCallback, names: Iterable[str] | None,
                 event_filter: EventFilter | None) -> None:
        self.monitor = monitor
        self.callback = callback
        self.names = frozenset([names] if isinstance(names, str) else names or ())
        self.event_filter = event_filter
        self.active = True

    def matches(self, event: QMPEvent) -> bool:
        return (not self.names or event.name in self.names) and (
            self.event_filter is None or self.event_filter(event))

    def cancel(self) -> None:
        self.active = False
        self.monitor._unsubscribe(self)

    def _disconnected(self, info: Disconnect | None) -> None:
        """Called (on the events thread) after the last event of a connection."""

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cancel()


class EventQueue(Subscription):
    """Events collected for a thread that waits for them: ``with mon.listen("SHUTDOWN") as q``."""

    def __init__(self, monitor: Monitor, names: Iterable[str] | None,
                 event_filter: EventFilter | None) -> None:
        super().__init__(monitor, self._put, names, event_filter)
        self._queue: queue.SimpleQueue[QMPEvent | Disconnect | None] = queue.SimpleQueue()
        self._ended: Disconnect | None = None

    def _put(self, event: QMPEvent) -> None:
        self._queue.put(event)

    def _disconnected(self, info: Disconnect | None) -> None:
        self._queue.put(info)

    def __enter__(self) -> EventQueue:
        return self

    def get(self, timeout: float | None = None) -> QMPEvent:
        """The next event; raises MonitorTimeout, or MonitorDisconnected once the connection ended."""
        if self._ended is not None:
            raise self._lost()
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            wanted = ", ".join(sorted(self.names)) or "event"
            raise MonitorTimeout(f"{self.monitor.name}: no {wanted} from QEMU within {timeout} s") from None
        if isinstance(item, QMPEvent):
            return item
        self._ended = item if item is not None else Disconnect("the monitor was closed by pyvirt")
        raise self._lost()

    def _lost(self) -> MonitorDisconnected:
        assert self._ended is not None
        wanted = ", ".join(sorted(self.names)) or "events"
        return MonitorDisconnected(f"{self.monitor.name}: the monitor connection ended "
                                   f"({self._ended.reason}) while waiting for {wanted}")


class _SerialRunner:
    """Runs callables in order, one at a time, on a thread that exists only while there is work."""

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._items: collections.deque[tuple[Callable[..., object], tuple[object, ...]]] = (
            collections.deque())
        self._running = False

    def post(self, fn: Callable[..., object], *args: object) -> None:
        with self._lock:
            self._items.append((fn, args))
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._drain, name=self._thread_name, daemon=True).start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._items:
                    self._running = False
                    return
                fn, args = self._items.popleft()
            try:
                fn(*args)
            except Exception:
                # A subscriber's bug must not stop the delivery of later events to the others.
                log.exception("%s: an event callback failed", self._thread_name)


# --- the client --------------------------------------------------------------------------------

class _DebugOnly(logging.LoggerAdapter[logging.Logger]):
    """qemu.qmp logs at ERROR what the monitor raises or reports anyway (a failed connect, QEMU's
    EOF, the late answer after a timeout): keep its messages, but for debugging only."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        super().log(min(level, logging.DEBUG), msg, *args, **kwargs)


class _Client(QMPClient):
    """QMPClient handing each event straight to the monitor.

    qemu.qmp's default listener keeps every event in a queue and a history that nobody drains
    here, which would grow for as long as the domain runs; events go to the monitor instead.
    """

    def __init__(self, name: str, sink: Callable[[Message], None]) -> None:
        super().__init__(name)
        # qemu.qmp only calls the Logger methods an adapter has too.
        self.logger = _DebugOnly(logging.getLogger("pyvirt.qemu.qmp"), {"monitor": name})  # type: ignore[assignment]
        self._sink = sink

    async def _event_dispatch(self, msg: Message) -> None:
        self._sink(msg)


class Monitor:
    """The QMP monitor of one QEMU process. Every method may be called from any thread.

    ``name`` appears in every error message (e.g. "QEMU monitor of domain 'vm1'").
    """

    def __init__(self, name: str = "QEMU monitor", *,
                 on_disconnect: Callable[[Disconnect], None] | None = None) -> None:
        self.name = name
        self.on_disconnect = on_disconnect
        self._lock = threading.Lock()
        self._state = MonitorState.IDLE
        self._client: _Client | None = None
        self._subs: list[Subscription] = []
        self._events = _SerialRunner(f"pyvirt-events {name}")
        # Loop-thread state: only touched by coroutines running on the pyvirt loop.
        self._connect_task: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._teardown: asyncio.Task[None] | None = None
        self._fd_lock: asyncio.Lock | None = None
        self._closing = False
        self.greeting: Mapping[str, Any] | None = None

    def __repr__(self) -> str:
        return f"<Monitor {self.name!r} {self._state.value}>"

    @property
    def state(self) -> MonitorState:
        return self._state

    @property
    def qemu_version(self) -> tuple[int, int, int] | None:
        """QEMU's (major, minor, micro) from its greeting."""
        if self.greeting is None:
            return None
        v = self.greeting.get("version", {}).get("qemu", {})
        return (int(v.get("major", 0)), int(v.get("minor", 0)), int(v.get("micro", 0)))

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- connecting and closing ---------------------------------------------------------------

    def connect(self, target: str | os.PathLike[str] | socket.socket,
                timeout: float | None = CONNECT_TIMEOUT) -> None:
        """Connect to QEMU's monitor socket (a path, or a connected socket that the monitor takes
        over), read the greeting and negotiate capabilities."""
        with self._lock:
            if self._state is not MonitorState.IDLE:
                raise MonitorStateError(f"{self.name}: cannot connect: the monitor is already "
                                        f"{self._state.value}; close() it first")
            self._state = MonitorState.CONNECTING
            self._closing = False
        try:
            get_loop().run(self._aconnect(target, timeout), None if timeout is None else timeout + _GUARD)
        except concurrent.futures.CancelledError:
            raise MonitorDisconnected(f"{self.name}: the monitor was closed while connecting") from None
        finally:
            with self._lock:
                if self._state is MonitorState.CONNECTING:
                    self._state = MonitorState.IDLE

    async def _aconnect(self, target: str | os.PathLike[str] | socket.socket, timeout: float | None) -> None:
        where = (f"socket fd {target.fileno()}" if isinstance(target, socket.socket)
                 else os.fspath(target))
        address: str | socket.socket = target if isinstance(target, socket.socket) else os.fspath(target)
        client = _Client(self.name, self._on_event)
        self._connect_task = asyncio.current_task()
        try:
            await asyncio.wait_for(client.connect(address), timeout)
        except TimeoutError:
            raise MonitorTimeout(f"{self.name}: QEMU's monitor at {where} did not greet within {timeout} s "
                                 "(QEMU hung or still starting?)") from None
        except ConnectError as e:
            cause = e.exc if isinstance(e.exc, Exception) else e
            if isinstance(cause, FileNotFoundError | ConnectionRefusedError):
                hint = "QEMU is not running or did not create it"
            elif isinstance(cause, EOFError | ConnectionError):
                hint = "QEMU exited before answering; see its log"
            else:
                hint = "is this a QMP monitor socket?"
            raise MonitorError(f"{self.name}: cannot connect to QEMU's monitor at {where}: "
                               f"{_describe(cause)}; {hint}") from e
        finally:
            self._connect_task = None
        if self._closing:  # close() came before this coroutine could be cancelled
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise MonitorDisconnected(f"{self.name}: the monitor was closed while connecting")
        with self._lock:
            self._client = client
            self._state = MonitorState.RUNNING
        greeting = client.greeting
        self.greeting = None if greeting is None else {
            "version": dict(greeting.QMP.version), "capabilities": list(greeting.QMP.capabilities)}
        self._watcher = asyncio.create_task(self._watch(client))

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """End the connection (QEMU keeps running); pending calls fail with MonitorDisconnected.

        Returns once the monitor is idle again. No-op when it is idle already.
        """
        get_loop().run(self._aclose(timeout), timeout + _GUARD)

    async def _aclose(self, timeout: float) -> None:
        self._closing = True
        if self._connect_task is not None:
            self._connect_task.cancel()
            return
        client = self._client
        if client is not None:
            await self._end(client, requested=True, timeout=timeout)

    async def _watch(self, client: _Client) -> None:
        while client.runstate is Runstate.RUNNING:
            await client.runstate_changed()
        # DISCONNECTING: qemu.qmp saw EOF or an error, or close() started the end itself; in the
        # latter case the teardown may even be over already, and this client is history.
        if self._client is not client:
            return
        await self._end(client, requested=False, timeout=CLOSE_TIMEOUT)

    async def _end(self, client: _Client, *, requested: bool, timeout: float) -> None:
        # One teardown per connection, whoever notices first: close() and the watcher share it.
        if self._teardown is None:
            self._teardown = asyncio.create_task(self._teardown_connection(client, requested, timeout))
        await asyncio.shield(self._teardown)

    async def _teardown_connection(self, client: _Client, requested: bool, timeout: float) -> None:
        with self._lock:
            self._state = MonitorState.DISCONNECTING
        error: BaseException | None = None
        try:
            await asyncio.wait_for(client.disconnect(), timeout)
        except TimeoutError:
            # close() flushes what is queued, which a stopped QEMU never reads: drop the transport.
            log.warning("%s: QEMU did not take the last messages within %s s; dropping the connection",
                        self.name, timeout)
            writer = getattr(client, "_writer", None)
            if writer is not None:
                writer.transport.abort()
            try:
                await asyncio.wait_for(client.disconnect(), timeout)
            except Exception as e:
                error = e
        except Exception as e:  # qemu.qmp re-raises what ended its reader or writer: EOFError, OSError...
            error = e
        finally:
            with self._lock:
                self._client = None
                self._state = MonitorState.IDLE
                subs = list(self._subs)
            self._teardown = None
        info = None if requested else Disconnect(_disconnect_reason(error), error)
        # Posted after every event of this connection, so subscribers see the end last.
        self._events.post(self._deliver_end, subs, info)

    # -- commands -----------------------------------------------------------------------------

    def execute(self, command: str, args: Mapping[str, object] | None = None, *,
                timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Run a QMP command with ``args`` (its "arguments") and return its ``return`` value.

        Raises MonitorCommandError when QEMU refuses it, MonitorTimeout after ``timeout`` seconds,
        MonitorDisconnected when the connection ends first, MonitorStateError when not connected.
        """
        self._require_running(command)
        return self._run(self._aexecute(command, args, timeout), timeout)

    def execute_hmp(self, command_line: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> str:
        """Run a human monitor command through QMP (``human-monitor-command``); return its output."""
        out = self.execute("human-monitor-command", {"command-line": command_line}, timeout=timeout)
        return str(out)

    def send_fd(self, fd: int, name: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Give QEMU a duplicate of ``fd`` under ``name`` (SCM_RIGHTS, then ``getfd``).

        The caller keeps (and should close) its own ``fd``; QEMU's copy is used by name, e.g.
        ``netdev_add ... fd=NAME``, and released with ``closefd``.
        """
        self._require_running("getfd")
        self._run(self._asend_fd(fd, name, timeout), timeout)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return get_loop().run(coro, None if timeout is None else timeout + _GUARD)

    def _require_running(self, command: str) -> _Client:
        with self._lock:
            state, client = self._state, self._client
        if state is MonitorState.RUNNING and client is not None:
            return client
        if state is MonitorState.DISCONNECTING:
            raise MonitorDisconnected(f"{self.name}: cannot run '{command}': the monitor connection is "
                                      "closing")
        raise MonitorStateError(f"{self.name}: cannot run '{command}': the monitor is "
                                f"{state.value}, not connected; connect() first")

    async def _aexecute(self, command: str, args: Mapping[str, object] | None,
                        timeout: float | None) -> Any:
        client = self._require_running(command)
        try:
            return await asyncio.wait_for(client.execute(command, args), timeout)
        except ExecuteError as e:
            raise MonitorCommandError(f"unable to execute QEMU command '{command}': {e.error.error.desc}",
                                      command=command, qmp_class=e.error.error.class_,
                                      qmp_desc=e.error.error.desc) from e
        except (ExecInterruptedError, StateError) as e:
            raise self._lost(command) from e
        except TimeoutError:
            raise MonitorTimeout(f"{self.name}: QEMU did not answer '{command}' within {timeout} s "
                                 "(is the process stopped or hung?)") from None

    async def _asend_fd(self, fd: int, name: str, timeout: float | None) -> None:
        if self._fd_lock is None:
            self._fd_lock = asyncio.Lock()
        # One fd in flight at a time: QEMU's getfd takes the fd that arrived last on the socket.
        async with self._fd_lock:
            client = self._require_running("getfd")
            try:
                await asyncio.wait_for(self._send_scm(client, fd), timeout)
            except TimeoutError:
                raise MonitorTimeout(f"{self.name}: QEMU did not take file descriptor '{name}' within "
                                     f"{timeout} s") from None
            except (StateError, OSError) as e:
                raise self._lost("getfd") from e
            await self._aexecute("getfd", {"fdname": name}, timeout)

    @staticmethod
    async def _send_scm(client: _Client, fd: int) -> None:
        # send_fd_scm writes one byte beside qemu.qmp's writer, straight into the socket: it must not
        # land in the middle of a message the transport still buffers.
        writer = getattr(client, "_writer", None)
        while writer is not None and writer.transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        while True:
            try:
                client.send_fd_scm(fd)
                return
            except BlockingIOError:
                await asyncio.sleep(0.001)

    def _lost(self, command: str) -> MonitorDisconnected:
        if self._closing:
            return MonitorDisconnected(f"{self.name}: the monitor was closed while '{command}' was "
                                       "waiting for QEMU's answer")
        return MonitorDisconnected(f"{self.name}: QEMU closed the monitor connection (the process exited "
                                   f"or crashed) while '{command}' was waiting for its answer")

    # -- events -------------------------------------------------------------------------------

    def subscribe(self, callback: EventCallback, names: Iterable[str] | str | None = None,
                  event_filter: EventFilter | None = None) -> Subscription:
        """Call ``callback(event)`` on a pyvirt thread for each event named in ``names`` (all when
        None) that passes ``event_filter``. Subscriptions outlive reconnections."""
        return self._add(Subscription(self, callback, names, event_filter))

    def listen(self, names: Iterable[str] | str | None = None,
               event_filter: EventFilter | None = None) -> EventQueue:
        """A queue of events to wait on with ``get(timeout)``; use it as a context manager."""
        sub = EventQueue(self, names, event_filter)
        self._add(sub)
        return sub

    def _add(self, sub: Subscription) -> Subscription:
        with self._lock:
            self._subs.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _on_event(self, msg: Message) -> None:
        """On the loop thread: route one event; runs in qemu.qmp's reader, so it must not block."""
        try:
            event = parse_event(msg)
        except (KeyError, TypeError, ValueError):
            log.warning("%s: ignoring a malformed event: %s", self.name, msg)
            return
        with self._lock:
            subs = list(self._subs)
        if subs:
            self._events.post(self._deliver, event, subs)

    @staticmethod
    def _deliver(event: QMPEvent, subs: list[Subscription]) -> None:
        for sub in subs:
            if not sub.active:
                continue
            try:
                if sub.matches(event):
                    sub.callback(event)
            except Exception:
                log.exception("event callback %r failed on %s", sub.callback, event.name)

    def _deliver_end(self, subs: list[Subscription], info: Disconnect | None) -> None:
        for sub in subs:
            if sub.active:
                sub._disconnected(info)
        if info is not None and self.on_disconnect is not None:
            try:
                self.on_disconnect(info)
            except Exception:
                log.exception("%s: on_disconnect callback failed", self.name)


def _describe(e: BaseException) -> str:
    if isinstance(e, EOFError):
        return "QEMU closed the connection"
    return str(e) or type(e).__name__


def _disconnect_reason(error: BaseException | None) -> str:
    # A reset is what a peer that exits with unread input (our last commands) leaves behind.
    if error is None or isinstance(error, EOFError | ConnectionResetError):
        return "QEMU closed the monitor connection"
    if isinstance(error, OSError):
        return f"the monitor connection failed: {error}"
    return f"the monitor connection failed: {type(error).__name__}: {error}"
