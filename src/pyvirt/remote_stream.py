# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's ``virStream`` over libvirt's RPC protocol, for :mod:`pyvirt.remote`.

``conn.newStream(flags)`` on a remote connection makes an unattached :class:`RemoteStream`;
``dom.openConsole(dev, stream, flags)`` attaches it to the stream the server opens on the call's
serial (:class:`pyvirt.rpc.client.Stream`). The methods are those of the embedded
:class:`pyvirt.stream.virStream`: ``recv(n)`` returns up to ``n`` bytes, ``b""`` at the end and
-2 when a VIR_STREAM_NONBLOCK stream has nothing yet; ``send`` takes everything it is given (the
socket's own push-back makes it wait); ``finish`` waits for the server's acknowledgement and
raises the error the server reported for the stream, if any; ``abort`` drops the stream.

Events without an event loop, as the embedded stream's: ``eventAddCallback`` starts a watcher
thread that calls ``cb(stream, events, opaque)`` level-triggered (again as long as unread data
remains) until ``eventRemoveCallback``, ``finish`` or ``abort``. The callback runs on that thread,
never on the RPC loop's, so it may call ``recv`` and ``send``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.remote import RemoteConnect
    from pyvirt.rpc.sync import SyncStream

__all__ = ["RemoteStream"]

VIR_STREAM_NONBLOCK = 1
VIR_STREAM_EVENT_READABLE = 1
VIR_STREAM_EVENT_WRITABLE = 2

#: how long the watcher sleeps when nothing happens, and after a callback at the end of the data
_WATCH_TICK = 0.2


def _not_open() -> PyvirtError:
    return PyvirtError("internal error: stream is not open", code=codes.VIR_ERR_INTERNAL_ERROR,
                       domain=codes.VIR_FROM_STREAMS)


class RemoteStream:
    """A stream of a :class:`~pyvirt.remote.RemoteConnect` (see the module docstring)."""

    def __init__(self, conn: RemoteConnect, flags: int = 0) -> None:
        if flags & ~VIR_STREAM_NONBLOCK:
            raise PyvirtError(f"unsupported flags (0x{flags & ~VIR_STREAM_NONBLOCK:x}) in function "
                              "virStreamNew", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_STREAMS)
        self._conn = conn
        self._nonblock = bool(flags & VIR_STREAM_NONBLOCK)
        self._sync: SyncStream | None = None
        self._lock = threading.Lock()
        self._leftover = b""  # the part of a received frame the caller did not ask for yet
        self._eof = False
        self._ready = threading.Event()
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._events = 0

    def connect(self) -> RemoteConnect:
        return self._conn

    # -- attaching (by RemoteDomain.openConsole) --------------------------------------------------

    def _check_unattached(self) -> None:
        if self._sync is not None:
            raise PyvirtError("invalid argument: the stream is already in use; make a new one with "
                              "conn.newStream()", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_STREAMS)

    def _attach(self, sync: SyncStream) -> None:
        self._check_unattached()
        self._sync = sync
        sync.set_on_ready(self._ready.set)

    def _sync_or_raise(self) -> SyncStream:
        sync = self._sync
        if sync is None:
            raise _not_open()
        return sync

    # -- data ----------------------------------------------------------------------------------

    def recv(self, nbytes: int) -> bytes | int:
        """Up to ``nbytes``; b"" at the end; -2 when a non-blocking stream has nothing yet."""
        sync = self._sync_or_raise()
        with self._lock:
            if not self._leftover:
                if self._eof:
                    return b""
                chunk = sync.recv_nowait() if self._nonblock else sync.recv()
                if chunk is None:
                    return -2
                if not chunk:
                    self._eof = True
                    return b""
                self._leftover = chunk
            data, self._leftover = self._leftover[:nbytes], self._leftover[nbytes:]
            return data

    def send(self, data: bytes) -> int:
        """Bytes sent: all of them."""
        self._sync_or_raise().send(bytes(data))
        return len(data)

    def finish(self) -> int:
        sync = self._sync_or_raise()
        self._stop_watch()
        try:
            sync.finish()
        finally:
            self._detach()
        return 0

    def abort(self) -> int:
        sync = self._sync_or_raise()
        self._stop_watch()
        try:
            sync.abort()
        finally:
            self._detach()
        return 0

    def _detach(self) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.set_on_ready(None)

    # -- events (no client event loop needed) -------------------------------------------------------

    def eventAddCallback(self, events: int, cb: Callable[[RemoteStream, int, Any], object],  # noqa: N802
                         opaque: Any) -> None:
        sync = self._sync_or_raise()
        if self._watch is not None and self._watch.is_alive():
            raise PyvirtError("internal error: stream already has a callback registered; remove it "
                              "first", code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_STREAMS)
        self._events = events
        self._watch_stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop,
                                       args=(sync, cb, opaque, self._watch_stop),
                                       name="pyvirt-remote-stream", daemon=True)
        self._watch.start()

    def eventUpdateCallback(self, events: int) -> None:  # noqa: N802
        self._sync_or_raise()
        self._events = events
        self._ready.set()

    def eventRemoveCallback(self) -> None:  # noqa: N802
        self._stop_watch()

    def _stop_watch(self) -> None:
        self._watch_stop.set()
        self._ready.set()
        watch = self._watch
        if watch is not None and watch is not threading.current_thread():
            watch.join(timeout=2 * _WATCH_TICK + 1)
        self._watch = None

    def _watch_loop(self, sync: SyncStream, cb: Callable[[RemoteStream, int, Any], object],
                    opaque: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            self._ready.clear()
            wanted = self._events
            happened = 0
            try:
                if wanted & VIR_STREAM_EVENT_READABLE and (self._leftover or self._eof
                                                           or sync.has_data()):
                    happened |= VIR_STREAM_EVENT_READABLE
            except (PyvirtError, RuntimeError):
                return  # the connection is gone, and its loop with it
            if wanted & VIR_STREAM_EVENT_WRITABLE:
                happened |= VIR_STREAM_EVENT_WRITABLE
            if not happened:
                self._ready.wait(_WATCH_TICK)
                continue
            cb(self, happened, opaque)
            if self._eof or not happened & VIR_STREAM_EVENT_READABLE:
                stop.wait(_WATCH_TICK if self._eof else 0.01)  # do not spin on a lasting state
