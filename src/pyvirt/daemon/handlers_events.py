# SPDX-License-Identifier: LGPL-2.1-or-later
"""The REMOTE program's event registrations (see :mod:`pyvirt.daemon.events` for how events reach
the client): callback ids (CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY / _DEREGISTER_ANY) and the
legacy per-event-id ones (CONNECT_DOMAIN_EVENT_REGISTER_ANY / _DEREGISTER_ANY, and
CONNECT_DOMAIN_EVENT_REGISTER / _DEREGISTER for lifecycle events); and the network and storage pool
ones (CONNECT_NETWORK_EVENT_REGISTER_ANY, CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY and their
_DEREGISTER_ANY), callback ids only."""

from __future__ import annotations

from typing import Any

from pyvirt.daemon.dispatch import ClientSession
from pyvirt.daemon.events import CALLBACK, LEGACY, NETWORK, POOL
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.daemon.handlers_domain import domain_of

__all__: list[str] = []

_h = HANDLERS.register
_LIFECYCLE = 0


@_h("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY")
def callback_register_any(session: ClientSession, args: Any) -> Any:
    conn = session.require_conn()
    dom = domain_of(session, args.dom) if args.dom is not None else None
    return {"callbackID": session.events.register(conn, CALLBACK, args.eventID, dom)}


@_h("CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY")
def callback_deregister_any(session: ClientSession, args: Any) -> Any:
    session.events.deregister(session.require_conn(), CALLBACK, args.callbackID)


@_h("CONNECT_DOMAIN_EVENT_REGISTER_ANY")
def register_any(session: ClientSession, args: Any) -> Any:
    session.events.register(session.require_conn(), LEGACY, args.eventID, None)


@_h("CONNECT_DOMAIN_EVENT_DEREGISTER_ANY")
def deregister_any(session: ClientSession, args: Any) -> Any:
    events = session.events
    events.deregister(session.require_conn(), LEGACY, events.legacy_id(args.eventID))


@_h("CONNECT_DOMAIN_EVENT_REGISTER")
def register(session: ClientSession, args: None) -> Any:
    session.events.register(session.require_conn(), LEGACY, _LIFECYCLE, None)
    return {"cb_registered": 1}


@_h("CONNECT_DOMAIN_EVENT_DEREGISTER")
def deregister(session: ClientSession, args: None) -> Any:
    events = session.events
    events.deregister(session.require_conn(), LEGACY, events.legacy_id(_LIFECYCLE))
    return {"cb_registered": 0}


def _object_handlers(kind: str, noun: str, field: str) -> None:
    @_h(f"CONNECT_{noun}_EVENT_REGISTER_ANY")
    def register_object(session: ClientSession, args: Any) -> Any:
        return {"callbackID": session.events.register_object(session.require_conn(), kind, args.eventID,
                                                             getattr(args, field))}

    @_h(f"CONNECT_{noun}_EVENT_DEREGISTER_ANY")
    def deregister_object(session: ClientSession, args: Any) -> Any:
        session.events.deregister(session.require_conn(), kind, args.callbackID)


_object_handlers(NETWORK, "NETWORK", "net")
_object_handlers(POOL, "STORAGE_POOL", "pool")
