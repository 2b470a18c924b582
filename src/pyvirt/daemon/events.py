# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain events over RPC: a client's registrations and the MESSAGE frames that carry its events.

The daemon registers each remote registration on the client's own connection through pyvirt's
public API (``domainEventRegisterAny``, libvirt-qemu's ``qemuMonitorEventRegister``), so that
closing that connection -- the client hung up, or called CONNECT_CLOSE -- drops them all, as
libvirtd drops a client's callbacks with the client.

Callbacks run on pyvirt's event thread, one per driver, in the order the events happened. Each
encodes its frame there and hands it to the client's connection through ``post`` (which queues it on
the daemon's event loop without waiting): a client that does not read its socket only grows its own
output buffer, up to a cap past which the daemon drops it, and never delays another client's
events or the event thread.

Three registration protocols exist, all served:

* callback ids (libvirt >= 1.2.1, what virsh and libvirt-python 9.0 use once the server reports
  VIR_DRV_FEATURE_REMOTE_EVENT_CALLBACK): CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY returns a
  ``callbackID`` that each DOMAIN_EVENT_CALLBACK_* message carries; a client may hold several per
  event and filter by domain;
* the legacy ones (CONNECT_DOMAIN_EVENT_REGISTER_ANY by event id, CONNECT_DOMAIN_EVENT_REGISTER for
  lifecycle): at most one per event id, for every domain, messages without a callback id;
* QEMU monitor events (QEMU program): a callback id, a domain filter and an event-name filter;
* network and storage pool events (CONNECT_NETWORK_EVENT_REGISTER_ANY,
  CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY): callback ids, a network or pool filter
  (:meth:`ClientEvents.register_object`).

The callback ids are the daemon's own (one counter for all its clients, from 1), not the
driver's: a client only ever hands back the ids it was given.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.rpc.procedures import PROCEDURES, Procedure
from pyvirt.rpc.protocol import (
    PROTOCOL_VERSION,
    Header,
    MessageType,
    RemoteError,
    Status,
    encode_message,
)

if TYPE_CHECKING:
    from pyvirt.connection import virConnect, virDomain

__all__ = ["ClientEvents", "Registration", "EVENT_ID_LAST", "PostFrame", "event_frame",
           "wire_domain", "unsupported_event", "LEGACY", "CALLBACK", "MONITOR", "NETWORK", "POOL"]

log = logging.getLogger("pyvirt.daemon")

#: libvirt 9.0's VIR_DOMAIN_EVENT_ID_LAST: the event ids a client may register (0 .. 26).
EVENT_ID_LAST = 27
#: virDomainEventID values pyvirt's driver emits, and the messages that carry them.
_LIFECYCLE, _REBOOT = 0, 1

#: Registration kinds.
LEGACY, CALLBACK, MONITOR = "legacy", "callback", "monitor"
NETWORK, POOL = "network", "pool"
#: libvirt 9.0's VIR_NETWORK_EVENT_ID_LAST and VIR_STORAGE_POOL_EVENT_ID_LAST
_OBJECT_EVENT_ID_LAST = {NETWORK: 1, POOL: 2}
_OBJECT_WHAT = {NETWORK: "network", POOL: "storage pool"}

#: libvirtd sends every event with serial 1 (clients ignore the serial of a MESSAGE).
_EVENT_SERIAL = 1

PostFrame = Callable[[bytes], None]

_ids = itertools.count(1)
_ids_lock = threading.Lock()


def _next_id() -> int:
    with _ids_lock:
        return next(_ids)


def event_frame(proc: Procedure, body: Any) -> bytes:
    """One MESSAGE frame of event ``proc``."""
    header = Header(int(proc.program), PROTOCOL_VERSION, proc.number, MessageType.MESSAGE,
                    _EVENT_SERIAL, Status.OK)
    return encode_message(header, proc.args.encode(body))


def wire_domain(dom: virDomain) -> dict[str, Any]:
    """remote_nonnull_domain of an event's domain."""
    return {"name": dom.name(), "uuid": dom.UUID(), "id": dom.ID()}


def unsupported_event(event_id: int) -> RemoteError:
    """libvirtd's refusal of an event id outside 0 .. VIR_DOMAIN_EVENT_ID_LAST - 1."""
    detail = f"unsupported event ID {event_id}"
    return RemoteError(f"internal error: {detail}", code=codes.VIR_ERR_INTERNAL_ERROR,
                       domain=codes.VIR_FROM_RPC, level=codes.VIR_ERR_ERROR,
                       str1="internal error: %s", str2=detail)


def _internal(detail: str) -> RemoteError:
    return RemoteError(f"internal error: {detail}", code=codes.VIR_ERR_INTERNAL_ERROR,
                       domain=codes.VIR_FROM_RPC, level=codes.VIR_ERR_ERROR,
                       str1="internal error: %s", str2=detail)


_MSG = {
    (CALLBACK, _LIFECYCLE): PROCEDURES.lookup("DOMAIN_EVENT_CALLBACK_LIFECYCLE"),
    (CALLBACK, _REBOOT): PROCEDURES.lookup("DOMAIN_EVENT_CALLBACK_REBOOT"),
    (LEGACY, _LIFECYCLE): PROCEDURES.lookup("DOMAIN_EVENT_LIFECYCLE"),
    (LEGACY, _REBOOT): PROCEDURES.lookup("DOMAIN_EVENT_REBOOT"),
}
_MONITOR_MSG = PROCEDURES.lookup("QEMU_PROC_DOMAIN_MONITOR_EVENT")
_NETWORK_MSG = PROCEDURES.lookup("NETWORK_EVENT_LIFECYCLE")
_POOL_MSG = (PROCEDURES.lookup("STORAGE_POOL_EVENT_LIFECYCLE"),
             PROCEDURES.lookup("STORAGE_POOL_EVENT_REFRESH"))


def _uuid_text(raw: bytes) -> str:
    import uuid

    return str(uuid.UUID(bytes=bytes(raw)))


@dataclass
class Registration:
    """One remote registration: its kind, the event id (or the monitor event filter), and the
    API's registration behind it (None for an event id libvirt accepts but pyvirt's API does not
    know, which never fires)."""

    kind: str
    callback_id: int
    event_id: int
    api_id: int | None
    #: Set once the API registration exists: events before that are dropped, as libvirtd drops
    #: events of a callback whose id it has not yet returned.
    armed: bool = False


class ClientEvents:
    """A client's event registrations. Thread-safe: handlers run on worker threads, callbacks on
    the event thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._regs: dict[int, Registration] = {}
        #: Where frames go: set by the client's connection; None drops them (no socket yet/any more).
        self.post: PostFrame | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._regs)

    def snapshot(self) -> list[Registration]:
        with self._lock:
            return list(self._regs.values())

    def _send(self, reg: Registration, frame_of: Callable[[], bytes]) -> None:
        post = self.post
        if post is None or not reg.armed:
            return
        try:
            frame = frame_of()
        except PyvirtError as exc:  # an event that cannot be encoded (never expected)
            log.error("cannot encode event for callback %d: %s", reg.callback_id, exc)
            return
        post(frame)

    # ---- domain events: callback ids and legacy -----------------------------------------------

    def register(self, conn: virConnect, kind: str, event_id: int, dom: virDomain | None) -> int:
        """Register for ``event_id`` (of ``dom``, or of all domains); returns the callback id."""
        if not 0 <= event_id < EVENT_ID_LAST:
            raise unsupported_event(event_id)
        if kind == LEGACY:
            with self._lock:
                if any(r.kind == LEGACY and r.event_id == event_id for r in self._regs.values()):
                    # libvirtd's words: its event state refuses the second identical callback
                    raise RemoteError("invalid argument: event callback already tracked",
                                      code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_NONE,
                                      level=codes.VIR_ERR_ERROR, str1="invalid argument: %s",
                                      str2="event callback already tracked")
        reg = Registration(kind, _next_id(), event_id, None)
        msg = _MSG.get((kind, event_id))

        def lifecycle(c: object, d: virDomain, event: int, detail: int, opaque: object) -> None:
            assert msg is not None
            body: dict[str, Any] = {"dom": wire_domain(d), "event": event, "detail": detail}
            self._send(reg, lambda: event_frame(msg, {"callbackID": reg.callback_id, "msg": body}
                                                if kind == CALLBACK else body))

        def reboot(c: object, d: virDomain, opaque: object) -> None:
            assert msg is not None
            body = {"dom": wire_domain(d)}
            self._send(reg, lambda: event_frame(msg, {"callbackID": reg.callback_id, "msg": body}
                                                if kind == CALLBACK else body))

        def other(*args: object) -> None:
            # An event id whose MESSAGE layout the daemon does not carry yet: pyvirt's driver
            # emits none of them; say so if it ever does, rather than send a wrong frame.
            log.warning("event %d has no RPC message in pyvirtd; not sent", event_id)

        cb = lifecycle if event_id == _LIFECYCLE else reboot if event_id == _REBOOT else other
        try:
            reg.api_id = conn.domainEventRegisterAny(dom, event_id, cb, None)
        except PyvirtError as exc:
            if exc.code != codes.VIR_ERR_INVALID_ARG or event_id in (_LIFECYCLE, _REBOOT):
                raise
            # Valid for libvirt 9.0 but unknown to pyvirt's API: pyvirt emits no such event, so a
            # registration that never fires is exactly what the client would get.
            log.debug("event id %d: %s; registered without the API", event_id, exc)
        with self._lock:
            self._regs[reg.callback_id] = reg
            reg.armed = True
        return reg.callback_id

    def deregister(self, conn: virConnect, kind: str, callback_id: int) -> None:
        with self._lock:
            reg = self._regs.get(callback_id)
            if reg is None or reg.kind != kind:
                reg = None
            else:
                del self._regs[callback_id]
                reg.armed = False
        if reg is None:
            what = ("qemu monitor event" if kind == MONITOR else
                    f"{_OBJECT_WHAT[kind]} event" if kind in _OBJECT_WHAT else "domain event")
            raise _internal(f"{what} callback {callback_id} not registered")
        if reg.api_id is not None:
            if kind == NETWORK:
                conn.networkEventDeregisterAny(reg.api_id)
            elif kind == POOL:
                conn.storagePoolEventDeregisterAny(reg.api_id)
            elif kind == MONITOR:
                from pyvirt.qemu import libvirt_qemu as qemu

                qemu.qemuMonitorEventDeregister(conn, reg.api_id)
            else:
                conn.domainEventDeregisterAny(reg.api_id)

    def legacy_id(self, event_id: int) -> int:
        """The callback id of the legacy registration of ``event_id``."""
        with self._lock:
            for reg in self._regs.values():
                if reg.kind == LEGACY and reg.event_id == event_id:
                    return reg.callback_id
        raise _internal(f"domain event {event_id} not registered")

    # ---- QEMU monitor events ------------------------------------------------------------------

    def register_monitor(self, conn: virConnect, dom: virDomain | None, event: str | None,
                         flags: int) -> int:
        from pyvirt.qemu import libvirt_qemu as qemu

        reg = Registration(MONITOR, _next_id(), -1, None)

        def deliver(c: object, d: virDomain, name: str, seconds: int, micros: int,
                    details: str | None, opaque: object) -> None:
            body = {"callbackID": reg.callback_id, "dom": wire_domain(d), "event": name,
                    "seconds": seconds, "micros": micros, "details": details}
            self._send(reg, lambda: event_frame(_MONITOR_MSG, body))

        reg.api_id = qemu.qemuMonitorEventRegister(conn, dom, event, deliver, None, flags)
        with self._lock:
            self._regs[reg.callback_id] = reg
            reg.armed = True
        return reg.callback_id

    # ---- network and storage pool events -------------------------------------------------------

    def register_object(self, conn: virConnect, kind: str, event_id: int, wire: Any) -> int:
        """Register for network (``kind`` NETWORK) or storage pool (POOL) event ``event_id`` of
        the object ``wire`` (remote_network / remote_storage_pool; None for all); returns the
        callback id. As libvirtd, the object is not looked up: only its UUID filters."""
        if not 0 <= event_id < _OBJECT_EVENT_ID_LAST[kind]:
            raise _internal(f"unsupported {_OBJECT_WHAT[kind]} event ID {event_id}")
        reg = Registration(kind, _next_id(), event_id, None)
        if kind == NETWORK:
            from pyvirt.network.api import virNetwork
            from pyvirt.network.driver import NetworkRef

            net = virNetwork(conn, NetworkRef(str(wire.name), _uuid_text(wire.uuid))) if wire else None
            msg = _NETWORK_MSG

            def lifecycle(c: object, n: Any, event: int, detail: int, opaque: object) -> None:
                body = {"callbackID": reg.callback_id, "net": {"name": n.name(), "uuid": n.UUID()},
                        "event": event, "detail": detail}
                self._send(reg, lambda: event_frame(msg, body))

            reg.api_id = conn.networkEventRegisterAny(net, event_id, lifecycle, None)
        else:
            from pyvirt.storage.api import virStoragePool
            from pyvirt.storage.driver import PoolRef

            pool = virStoragePool(conn, PoolRef(str(wire.name), _uuid_text(wire.uuid))) if wire else None
            msg = _POOL_MSG[event_id]

            def wire_pool(p: Any) -> dict[str, Any]:
                return {"name": p.name(), "uuid": p.UUID()}

            def pool_lifecycle(c: object, p: Any, event: int, detail: int, opaque: object) -> None:
                body = {"callbackID": reg.callback_id, "pool": wire_pool(p), "event": event,
                        "detail": detail}
                self._send(reg, lambda: event_frame(msg, body))

            def refresh(c: object, p: Any, opaque: object) -> None:
                body = {"callbackID": reg.callback_id, "pool": wire_pool(p)}
                self._send(reg, lambda: event_frame(msg, body))

            reg.api_id = conn.storagePoolEventRegisterAny(pool, event_id,
                                                          refresh if event_id else pool_lifecycle, None)
        with self._lock:
            self._regs[reg.callback_id] = reg
            reg.armed = True
        return reg.callback_id

    def clear(self) -> None:
        """Forget every registration (the connection behind them is closed, which dropped them
        from the driver)."""
        with self._lock:
            for reg in self._regs.values():
                reg.armed = False
            self._regs.clear()
