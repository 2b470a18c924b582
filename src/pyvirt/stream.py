# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's ``virStream`` over a local file descriptor, and guest consoles on it.

``conn.newStream(flags)`` makes an unattached stream; ``dom.openConsole(dev, stream, flags)``
attaches it to the host side of the guest's pty (see :func:`open_console`). Reads and writes go
straight to the pty in raw mode: there is no daemon between the caller and QEMU.

Events: ``eventAddCallback`` works without a client event loop. A watcher thread waits on the
descriptor and calls the callback with VIR_STREAM_EVENT_* bits, level-triggered as libvirt's
(readable again as long as unread data remains), until ``eventRemoveCallback``, ``finish`` or
``abort``. One console session per device: another open fails unless it passes
VIR_DOMAIN_CONSOLE_FORCE, which aborts the first session's stream (libvirt's virChrdev).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import OperationFailed, PyvirtError

if TYPE_CHECKING:
    from pyvirt.connection import virConnect

__all__ = ["virStream", "open_console", "VIR_STREAM_NONBLOCK", "VIR_DOMAIN_CONSOLE_FORCE",
           "VIR_DOMAIN_CONSOLE_SAFE"]

VIR_STREAM_NONBLOCK = 1
VIR_STREAM_EVENT_READABLE = 1
VIR_STREAM_EVENT_WRITABLE = 2
VIR_STREAM_EVENT_ERROR = 4
VIR_STREAM_EVENT_HANGUP = 8
VIR_DOMAIN_CONSOLE_FORCE = 1
VIR_DOMAIN_CONSOLE_SAFE = 2

#: how often a watcher thread looks whether it was asked to stop
_WATCH_TICK = 0.2

#: the open console sessions of this process, by pty path
_sessions: dict[str, virStream] = {}
_sessions_lock = threading.Lock()


def _not_open() -> PyvirtError:
    return PyvirtError("internal error: stream is not open", code=codes.VIR_ERR_INTERNAL_ERROR,
                       domain=codes.VIR_FROM_STREAMS)


class virStream:  # noqa: N801 - libvirt-python's name
    def __init__(self, conn: virConnect, flags: int = 0) -> None:
        if flags & ~VIR_STREAM_NONBLOCK:
            raise PyvirtError(f"unsupported flags (0x{flags & ~VIR_STREAM_NONBLOCK:x}) in function "
                              "virStreamNew", code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_STREAMS)
        self._conn = conn
        self._nonblock = bool(flags & VIR_STREAM_NONBLOCK)
        self._fd: int | None = None
        self._path: str | None = None
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._events = 0
        self._takeover_hook: Callable[[], None] | None = None

    def connect(self) -> virConnect:
        return self._conn

    def fileno(self) -> int:
        """The attached descriptor (for an event loop that watches it, such as pyvirtd's)."""
        return self._fd_or_raise()

    def set_takeover_hook(self, hook: Callable[[], None] | None) -> None:
        """Call ``hook`` (on the taker's thread) just before another console session forced over
        this one closes its descriptor: a watcher of the descriptor lets go of it first."""
        self._takeover_hook = hook

    # -- attaching ---------------------------------------------------------------------------

    def _attach(self, fd: int, path: str) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(fd)
                raise PyvirtError("invalid argument: the stream is already in use; make a new one with "
                                  "conn.newStream()", code=codes.VIR_ERR_INVALID_ARG,
                                  domain=codes.VIR_FROM_STREAMS)
            self._fd, self._path = fd, path

    def _fd_or_raise(self) -> int:
        fd = self._fd
        if fd is None:
            raise _not_open()
        return fd

    # -- data -------------------------------------------------------------------------------

    def recv(self, nbytes: int) -> bytes | int:
        """Up to ``nbytes``; b"" at the end; -2 when a non-blocking stream has nothing yet."""
        fd = self._fd_or_raise()
        while True:
            if not self._nonblock:
                try:
                    ready, _, _ = select.select([fd], [], [], _WATCH_TICK)
                except (OSError, ValueError):
                    raise _not_open() from None  # closed by another thread (abort, forced console)
                if not ready:
                    if self._fd is None:
                        raise _not_open()
                    continue
            try:
                return os.read(fd, nbytes)
            except BlockingIOError:
                if self._nonblock:
                    return -2
            except OSError as e:
                if e.errno == errno.EIO:
                    return b""  # the pty's other side (QEMU) is gone
                if e.errno == errno.EBADF:
                    raise _not_open() from None
                raise PyvirtError(f"cannot read from stream {self._path}: {e.strerror}",
                                  code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_STREAMS) from None

    def send(self, data: bytes) -> int:
        """Bytes written (-2 when a non-blocking stream cannot take any now)."""
        fd = self._fd_or_raise()
        while True:
            try:
                return os.write(fd, data)
            except BlockingIOError:
                if self._nonblock:
                    return -2
                select.select([], [fd], [], _WATCH_TICK)
            except OSError as e:
                if e.errno == errno.EBADF:
                    raise _not_open() from None
                raise PyvirtError(f"cannot write to stream {self._path}: {e.strerror}",
                                  code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_STREAMS) from None

    def finish(self) -> int:
        self._close()
        return 0

    def abort(self) -> int:
        self._close()
        return 0

    def _close(self) -> None:
        self._watch_stop.set()
        with self._lock:
            fd, path = self._fd, self._path
            self._fd = None
        if fd is not None:
            os.close(fd)
        if path is not None:
            with _sessions_lock:
                if _sessions.get(path) is self:
                    del _sessions[path]

    # -- events (no client event loop needed) ------------------------------------------------

    def eventAddCallback(self, events: int, cb: Callable[[virStream, int, Any], object],  # noqa: N802
                         opaque: Any) -> None:
        fd = self._fd_or_raise()
        if self._watch is not None and self._watch.is_alive():
            raise PyvirtError("internal error: stream already has a callback registered; remove it first",
                              code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_STREAMS)
        self._events = events
        self._watch_stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, args=(fd, cb, opaque, self._watch_stop),
                                       name="pyvirt-stream", daemon=True)
        self._watch.start()

    def eventUpdateCallback(self, events: int) -> None:  # noqa: N802
        self._fd_or_raise()
        self._events = events

    def eventRemoveCallback(self) -> None:  # noqa: N802
        self._watch_stop.set()
        watch = self._watch
        if watch is not None and watch is not threading.current_thread():
            watch.join(timeout=2 * _WATCH_TICK + 1)
        self._watch = None

    def _watch_loop(self, fd: int, cb: Callable[[virStream, int, Any], object], opaque: Any,
                    stop: threading.Event) -> None:
        while not stop.is_set():
            wanted = self._events
            poller = select.poll()
            poller.register(fd, (select.POLLIN if wanted & VIR_STREAM_EVENT_READABLE else 0)
                            | (select.POLLOUT if wanted & VIR_STREAM_EVENT_WRITABLE else 0))
            try:
                ready = poller.poll(int(_WATCH_TICK * 1000))
            except (OSError, ValueError):
                return  # the descriptor was closed
            mask = ready[0][1] if ready else 0
            if mask & select.POLLNVAL:
                return
            happened = ((VIR_STREAM_EVENT_READABLE if mask & select.POLLIN else 0)
                        | (VIR_STREAM_EVENT_WRITABLE if mask & select.POLLOUT else 0)
                        | (VIR_STREAM_EVENT_ERROR if mask & select.POLLERR else 0)
                        | (VIR_STREAM_EVENT_HANGUP if mask & select.POLLHUP else 0))
            if not happened or stop.is_set():
                continue
            cb(self, happened, opaque)
            if happened & (VIR_STREAM_EVENT_HANGUP | VIR_STREAM_EVENT_ERROR):
                return  # the other side is gone: told once, as libvirt does
            if not happened & VIR_STREAM_EVENT_READABLE:
                stop.wait(0.01)  # a pty stays writable: do not spin on it


# -- consoles ----------------------------------------------------------------------------------

def open_console(stream: virStream, pty: str, *, force: bool) -> None:
    """Attach ``stream`` to the host side ``pty`` of a guest's serial port or console."""
    import tty

    with _sessions_lock:
        holder = _sessions.get(pty)
        if holder is not None and holder._fd is not None and not force:
            raise OperationFailed("operation failed: Active console session exists for this domain; "
                                  "close it first or take it over with VIR_DOMAIN_CONSOLE_FORCE")
        _sessions[pty] = stream
    if holder is not None and holder is not stream:
        hook = holder._takeover_hook
        if hook is not None:
            hook()
        holder._close()
        with _sessions_lock:
            _sessions[pty] = stream
    try:
        fd = os.open(pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        with _sessions_lock:
            _sessions.pop(pty, None)
        raise OperationFailed(f"operation failed: cannot open console {pty}: {e.strerror}") from None
    try:
        tty.setraw(fd)  # bytes pass as they are: no echo, no line editing, no CR/LF translation
        stream._attach(fd, pty)
    except BaseException:
        with _sessions_lock:
            if _sessions.get(pty) is stream:
                del _sessions[pty]
        if stream._fd != fd:
            with contextlib.suppress(OSError):  # _attach closes it when it refuses
                os.close(fd)
        raise
