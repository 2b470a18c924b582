# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU program (0x20008087, libvirt-qemu's API): monitor command passthrough, monitor event
registrations, and the attach call libvirt 9.0 no longer supports -- each a call on pyvirt's
libvirt-qemu module (:mod:`pyvirt.qemu.libvirt_qemu`).

Monitor events reach the client as QEMU_PROC_DOMAIN_MONITOR_EVENT messages
(:mod:`pyvirt.daemon.events`). QEMU_PROC_DOMAIN_AGENT_COMMAND (no guest agent in pyvirt yet) has
no handler: the dispatcher answers it VIR_ERR_NO_SUPPORT.
"""

from __future__ import annotations

from typing import Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.dispatch import ClientSession, api_name, no_support
from pyvirt.daemon.events import MONITOR
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.daemon.handlers_domain import domain_of, wire_dom
from pyvirt.errors import PyvirtError
from pyvirt.rpc.procedures import PROCEDURES

__all__: list[str] = []

_h = HANDLERS.register


def _monitor_command(session: ClientSession, args: Any) -> Any:
    from pyvirt.qemu import libvirt_qemu as qemu

    return {"result": qemu.qemuMonitorCommand(domain_of(session, args.dom), args.cmd, args.flags)}


_h("QEMU_PROC_DOMAIN_MONITOR_COMMAND")(_monitor_command)
# The same call for a client passing no descriptors (descriptors are refused by the dispatcher).
_h("QEMU_PROC_DOMAIN_MONITOR_COMMAND_WITH_FILES")(_monitor_command)


@_h("QEMU_PROC_DOMAIN_ATTACH")
def attach(session: ClientSession, args: Any) -> Any:
    from pyvirt.qemu import libvirt_qemu as qemu

    try:
        dom = qemu.qemuAttach(session.require_conn(), args.pid_value, args.flags)
    except PyvirtError as exc:
        if exc.code != codes.VIR_ERR_NO_SUPPORT:
            raise
        # libvirt's record of "not supported" carries its format and argument (str1, str2)
        raise no_support(api_name(PROCEDURES.lookup("QEMU_PROC_DOMAIN_ATTACH")),
                         domain=exc.domain) from exc
    return {"dom": wire_dom(dom)}


@_h("QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_REGISTER")
def monitor_event_register(session: ClientSession, args: Any) -> Any:
    conn = session.require_conn()
    dom = domain_of(session, args.dom) if args.dom is not None else None
    return {"callbackID": session.events.register_monitor(conn, dom, args.event, args.flags)}


@_h("QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_DEREGISTER")
def monitor_event_deregister(session: ClientSession, args: Any) -> Any:
    session.events.deregister(session.require_conn(), MONITOR, args.callbackID)
