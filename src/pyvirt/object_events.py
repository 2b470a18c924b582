# SPDX-License-Identifier: LGPL-2.1-or-later
"""Network and storage pool events: libvirt-python's ``networkEventRegisterAny`` and
``storagePoolEventRegisterAny`` over the driver's :class:`~pyvirt.events.EventBus`.

The network and storage drivers emit through the QEMU driver of their instance (the bus domain
events use), so one dispatcher thread delivers every event of an instance in the order it
happened, and closing a connection drops its registrations of all kinds at once. On that bus the
events have ids of their own (negative, below libvirt's domain event ids); the callbacks get
libvirt-python's arguments: ``cb(conn, net, event, detail, opaque)`` for network and pool
lifecycle events, ``cb(conn, pool, opaque)`` for a pool refresh.

What emits what is libvirt 9.0's network and storage drivers' choice: define, undefine, start
(create and create-XML), destroy; for pools also build (CREATED), delete (DELETED) and refresh
(REFRESH, or STOPPED when the pool's directory has gone). A start that builds emits STARTED only;
autostart emits nothing (in libvirt it happens before any client could listen).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.events import DomainEvent

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.qemu.driver import QemuDriver

__all__ = ["NETWORK_EVENT_ID_LIFECYCLE", "NETWORK_EVENT_ID_LAST", "POOL_EVENT_ID_LIFECYCLE",
           "POOL_EVENT_ID_REFRESH", "POOL_EVENT_ID_LAST", "emit_network", "emit_pool",
           "emit_pool_refresh", "register_network", "register_pool", "deregister",
           "check_network_event_id", "check_pool_event_id"]

#: virNetworkEventID (libvirt 9.0 has lifecycle only) and virNetworkEventLifecycleType
NETWORK_EVENT_ID_LIFECYCLE = 0
NETWORK_EVENT_ID_LAST = 1
NET_DEFINED, NET_UNDEFINED, NET_STARTED, NET_STOPPED = 0, 1, 2, 3
#: virStoragePoolEventID and virStoragePoolEventLifecycleType
POOL_EVENT_ID_LIFECYCLE = 0
POOL_EVENT_ID_REFRESH = 1
POOL_EVENT_ID_LAST = 2
POOL_DEFINED, POOL_UNDEFINED, POOL_STARTED, POOL_STOPPED, POOL_CREATED, POOL_DELETED = range(6)

#: the events' ids on the bus: apart from domain events (0 ..) and QEMU monitor events (-1)
_BUS_NETWORK_LIFECYCLE = -100
_BUS_POOL = {POOL_EVENT_ID_LIFECYCLE: -200, POOL_EVENT_ID_REFRESH: -201}

QemuRef = Callable[[], "QemuDriver | None"]


# ---- emitting (the drivers) -------------------------------------------------------------------

def _emit(qemu: QemuRef | QemuDriver | None, bus_id: int, name: str, uuid: str,
          args: tuple[Any, ...]) -> None:
    driver = qemu() if isinstance(qemu, weakref.ref) else qemu
    bus = getattr(driver, "_events", None)
    if bus is not None:  # no bus yet: nobody registered for any event
        bus.emit(DomainEvent(bus_id, name, uuid, -1, args))


def emit_network(qemu: QemuRef | QemuDriver | None, name: str, uuid: str, event: int) -> None:
    """A network's lifecycle event (detail 0, as libvirt's network driver gives)."""
    _emit(qemu, _BUS_NETWORK_LIFECYCLE, name, uuid, (event, 0))


def emit_pool(qemu: QemuRef | QemuDriver | None, name: str, uuid: str, event: int) -> None:
    """A storage pool's lifecycle event (detail 0, as libvirt's storage driver gives)."""
    _emit(qemu, _BUS_POOL[POOL_EVENT_ID_LIFECYCLE], name, uuid, (event, 0))


def emit_pool_refresh(qemu: QemuRef | QemuDriver | None, name: str, uuid: str) -> None:
    _emit(qemu, _BUS_POOL[POOL_EVENT_ID_REFRESH], name, uuid, ())


# ---- registering (the API) --------------------------------------------------------------------

def _invalid(message: str, domain: int) -> PyvirtError:
    return PyvirtError(f"invalid argument: {message}", code=codes.VIR_ERR_INVALID_ARG, domain=domain,
                       str1="invalid argument: %s", str2=message)


def check_network_event_id(event_id: int) -> None:
    """libvirt's public API check (the embedded and the remote connection both make it)."""
    if not 0 <= event_id < NETWORK_EVENT_ID_LAST:
        raise _invalid(f"eventID in virConnectNetworkEventRegisterAny must be less than "
                       f"{NETWORK_EVENT_ID_LAST}", codes.VIR_FROM_NETWORK)


def check_pool_event_id(event_id: int) -> None:
    if not 0 <= event_id < POOL_EVENT_ID_LAST:
        raise _invalid(f"eventID in virConnectStoragePoolEventRegisterAny must be less than "
                       f"{POOL_EVENT_ID_LAST}", codes.VIR_FROM_STORAGE)


def _ids(conn: virConnect) -> dict[int, str]:
    """This connection's network and pool registrations: callback id -> kind."""
    ids: dict[int, str] = conn.__dict__.setdefault("_object_event_ids", {})
    return ids


def register_network(conn: virConnect, net: Any, event_id: int, cb: Callable[..., object],
                     opaque: object) -> int:
    """virConnectNetworkEventRegisterAny: ``net`` None for every network."""
    check_network_event_id(event_id)
    from pyvirt.network.api import virNetwork
    from pyvirt.network.driver import NetworkRef

    def deliver(ev: DomainEvent) -> None:
        cb(conn, virNetwork(conn, NetworkRef(ev.name, ev.uuid)), ev.args[0], ev.args[1], opaque)

    uuid = net.UUIDString() if net is not None else None
    reg_id = conn.driver.events.register(conn, _BUS_NETWORK_LIFECYCLE, uuid, deliver)
    _ids(conn)[reg_id] = "network"
    return reg_id


def register_pool(conn: virConnect, pool: Any, event_id: int, cb: Callable[..., object],
                  opaque: object) -> int:
    """virConnectStoragePoolEventRegisterAny: ``pool`` None for every pool."""
    check_pool_event_id(event_id)
    from pyvirt.storage.api import virStoragePool
    from pyvirt.storage.driver import PoolRef

    def handle(ev: DomainEvent) -> virStoragePool:
        return virStoragePool(conn, PoolRef(ev.name, ev.uuid))

    if event_id == POOL_EVENT_ID_LIFECYCLE:
        def deliver(ev: DomainEvent) -> None:
            cb(conn, handle(ev), ev.args[0], ev.args[1], opaque)
    else:
        def deliver(ev: DomainEvent) -> None:
            cb(conn, handle(ev), opaque)

    uuid = pool.UUIDString() if pool is not None else None
    reg_id = conn.driver.events.register(conn, _BUS_POOL[event_id], uuid, deliver)
    _ids(conn)[reg_id] = "pool"
    return reg_id


def deregister(conn: virConnect, kind: str, callback_id: int) -> None:
    """virConnectNetworkEventDeregisterAny (``kind`` "network") or
    virConnectStoragePoolEventDeregisterAny ("pool"): only an id of that kind of this connection."""
    ids = _ids(conn)
    if ids.get(callback_id) != kind or not conn.driver.events.deregister(conn, callback_id):
        # libvirt's words and error domain (object_event.c's, for every kind of event)
        raise _invalid(f"could not find event callback {callback_id} for deletion", codes.VIR_FROM_NONE)
    del ids[callback_id]
