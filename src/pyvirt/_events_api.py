# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's event registration calls over the driver's :class:`~pyvirt.events.EventBus`.

virConnect and pyvirt.qemu's qemuMonitorEventRegister delegate here: each callback is wrapped so
that it receives libvirt-python's arguments (the connection it was registered on, a virDomain of
that connection, the event's values, the opaque object).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.events import LIFECYCLE, QEMU_MONITOR, REBOOT, DomainEvent

if TYPE_CHECKING:
    from pyvirt.connection import virConnect, virDomain

#: libvirt 9.0's VIR_DOMAIN_EVENT_ID_LAST: every id below it may be registered (pyvirt emits
#: LIFECYCLE and REBOOT; the others are accepted, as libvirt accepts them, and never fire)
EVENT_ID_LAST = 27
#: VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX / _NOCASE
MONITOR_EVENT_REGEX = 1
MONITOR_EVENT_NOCASE = 2


def _invalid(message: str) -> PyvirtError:
    return PyvirtError(f"invalid argument: {message}", code=codes.VIR_ERR_INVALID_ARG,
                       domain=codes.VIR_FROM_DOMAIN)


def _handle(conn: virConnect, event: DomainEvent) -> virDomain:
    from pyvirt.connection import virDomain

    return virDomain._from_ids(conn, event.name, event.uuid)


def register_any(conn: virConnect, dom: virDomain | None, event_id: int, cb: Callable[..., object],
                 opaque: object) -> int:
    if not 0 <= event_id < EVENT_ID_LAST:
        raise _invalid(f"unsupported event ID {event_id}")
    if event_id == LIFECYCLE:
        def deliver(ev: DomainEvent) -> None:
            cb(conn, _handle(conn, ev), ev.args[0], ev.args[1], opaque)
    elif event_id == REBOOT:
        def deliver(ev: DomainEvent) -> None:
            cb(conn, _handle(conn, ev), opaque)
    else:
        def deliver(ev: DomainEvent) -> None:  # never emitted by pyvirt yet
            cb(conn, _handle(conn, ev), *ev.args, opaque)
    uuid = dom.UUIDString() if dom is not None else None
    return conn.driver.events.register(conn, event_id, uuid, deliver)


def deregister_any(conn: virConnect, callback_id: int) -> int:
    # (a network or storage pool registration is not a domain one: pyvirt.object_events)
    if (callback_id in conn.__dict__.get("_object_event_ids", {})
            or not conn.driver.events.deregister(conn, callback_id)):
        raise _invalid(f"could not find event callback {callback_id} for deletion")
    return 0


def register_legacy(conn: virConnect, cb: Callable[..., object], opaque: object) -> int:
    """virConnectDomainEventRegister: lifecycle events of every domain; one registration per cb."""
    legacy: dict[Any, int] = conn.__dict__.setdefault("_legacy_event_ids", {})
    if cb in legacy:
        raise PyvirtError("operation failed: event callback already tracked",
                          code=codes.VIR_ERR_OPERATION_FAILED, domain=codes.VIR_FROM_NONE)
    legacy[cb] = register_any(conn, None, LIFECYCLE, cb, opaque)
    return 0


def deregister_legacy(conn: virConnect, cb: Callable[..., object]) -> int:
    legacy: dict[Any, int] = conn.__dict__.setdefault("_legacy_event_ids", {})
    if cb not in legacy:
        raise _invalid("could not find event callback for removal")
    return deregister_any(conn, legacy.pop(cb))


def register_monitor(conn: virConnect, dom: virDomain | None, event: str | None,
                     cb: Callable[..., object], opaque: object, flags: int = 0) -> int:
    """libvirt-qemu's virConnectDomainQemuMonitorEventRegister."""
    if flags & ~(MONITOR_EVENT_REGEX | MONITOR_EVENT_NOCASE):
        raise _invalid(f"unsupported flags (0x{flags & ~3:x}) in function "
                       "virConnectDomainQemuMonitorEventRegister")
    matches: Callable[[str], bool] | None = None
    if event is not None:
        if flags & MONITOR_EVENT_REGEX:
            try:
                pattern = re.compile(event, re.IGNORECASE if flags & MONITOR_EVENT_NOCASE else 0)
            except re.error as e:
                raise _invalid(f"failed to compile regex '{event}': {e}") from None
            def matches(name: str) -> bool:
                return pattern.search(name) is not None
        elif flags & MONITOR_EVENT_NOCASE:
            def matches(name: str) -> bool:
                return name.casefold() == event.casefold()
        else:
            def matches(name: str) -> bool:
                return name == event

    def deliver(ev: DomainEvent) -> None:
        name, seconds, micros, details = ev.args
        cb(conn, _handle(conn, ev), name, seconds, micros, details, opaque)

    uuid = dom.UUIDString() if dom is not None else None
    return conn.driver.events.register(conn, QEMU_MONITOR, uuid, deliver, matches)
