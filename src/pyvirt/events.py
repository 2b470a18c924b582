# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain events: the driver emits, registered callbacks receive, on a thread of pyvirt's own.

libvirt delivers events from an event loop the application must register and run, and forbids
calling back into an embedded driver from that loop. pyvirt needs neither: :class:`EventBus` queues
each event as it happens and one dispatcher thread per driver hands them to the callbacks, in the
order they happened, each exactly once per registration. Emitting never waits for a callback and
never holds a lock while one runs, so a callback may call any API, including ones that change the
domain whose event it is handling (their own events are queued behind it).

Events are what this process's driver observes (its API calls and the monitors it holds), as with
libvirt's embedded driver; the daemon serves them to remote clients from the same bus.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DomainEvent", "EventBus", "LIFECYCLE", "REBOOT", "QEMU_MONITOR"]

log = logging.getLogger(__name__)

#: libvirt's virDomainEventID values for the events pyvirt emits
LIFECYCLE = 0
REBOOT = 1
#: not a virDomainEventID: the raw QMP events of libvirt-qemu's qemuMonitorEventRegister
QEMU_MONITOR = -1


@dataclass(frozen=True)
class DomainEvent:
    """One event of one domain. ``args`` are the event's own values: (event, detail) for
    LIFECYCLE, () for REBOOT, (qmp event name, seconds, microseconds, details JSON text or None)
    for QEMU_MONITOR."""

    event_id: int
    name: str
    uuid: str
    domain_id: int
    args: tuple[Any, ...] = ()


@dataclass
class _Registration:
    owner: object
    event_id: int
    uuid: str | None  # None: every domain
    callback: Callable[[DomainEvent], None]
    matches_name: Callable[[str], bool] | None = None
    active: bool = field(default=True)


_STOP = object()


class EventBus:
    """The events of one driver and the callbacks registered for them."""

    def __init__(self, name: str = "pyvirt-events") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._registrations: dict[int, _Registration] = {}
        self._next_id = 1
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    # --- registrations ------------------------------------------------------------------------------

    def register(self, owner: object, event_id: int, uuid: str | None,
                 callback: Callable[[DomainEvent], None],
                 matches_name: Callable[[str], bool] | None = None) -> int:
        """Deliver events ``event_id`` (of the domain ``uuid``, or all) to ``callback``; returns
        the registration's id (libvirt's callbackID, counting from 1)."""
        with self._lock:
            reg_id = self._next_id
            self._next_id += 1
            self._registrations[reg_id] = _Registration(owner, event_id, _norm(uuid), callback, matches_name)
            return reg_id

    def deregister(self, owner: object, reg_id: int) -> bool:
        """Forget registration ``reg_id`` of ``owner``; False when it has none by that id."""
        with self._lock:
            reg = self._registrations.get(reg_id)
            if reg is None or reg.owner is not owner:
                return False
            reg.active = False  # an event already being delivered to it is dropped from here on
            del self._registrations[reg_id]
            return True

    def deregister_owner(self, owner: object) -> None:
        with self._lock:
            for reg_id in [i for i, r in self._registrations.items() if r.owner is owner]:
                self._registrations.pop(reg_id).active = False

    def has_listeners(self, event_id: int) -> bool:
        with self._lock:
            return any(r.event_id == event_id for r in self._registrations.values())

    # --- emitting -----------------------------------------------------------------------------------

    def emit(self, event: DomainEvent) -> None:
        """Queue ``event`` for its callbacks; returns at once and never raises."""
        with self._lock:
            if not any(r.event_id == event.event_id for r in self._registrations.values()):
                return
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put(event)

    def lifecycle(self, name: str, uuid: str, domain_id: int, event: int, detail: int) -> None:
        self.emit(DomainEvent(LIFECYCLE, name, uuid, domain_id, (event, detail)))

    def reboot(self, name: str, uuid: str, domain_id: int) -> None:
        self.emit(DomainEvent(REBOOT, name, uuid, domain_id))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every event queued so far has been delivered (for close and for tests)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._registrations.clear()
        if thread is not None:
            self._queue.put(_STOP)
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    # --- the dispatcher -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, DomainEvent)
            try:
                self._deliver(item)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, event: DomainEvent) -> None:
        uuid = _norm(event.uuid)
        with self._lock:
            regs = sorted(self._registrations.items())
        for _, reg in regs:
            if not reg.active or reg.event_id != event.event_id:
                continue
            if reg.uuid is not None and reg.uuid != uuid:
                continue
            name = str(event.args[0]) if event.args else ""
            if reg.matches_name is not None and not reg.matches_name(name):
                continue
            try:
                reg.callback(event)
            except Exception:  # noqa: BLE001 - one broken callback must not starve the others
                log.exception("domain event callback %r failed", reg.callback)


def _norm(uuid: str | None) -> str | None:
    return uuid.replace("-", "").lower() if uuid is not None else None
