# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's ``libvirt_qemu`` module: monitor passthrough and the (removed) attach.

Reached as ``from pyvirt import qemu as libvirt_qemu`` (the names are loaded lazily by
:mod:`pyvirt.qemu`, so that importing the driver package stays cheap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.connection import virConnect, virDomain

__all__ = ["qemuMonitorCommand", "qemuAttach", "qemuMonitorEventRegister", "qemuMonitorEventDeregister",
           "VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT", "VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP",
           "VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX",
           "VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_NOCASE"]

VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT = 0
VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP = 1
VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX = 1
VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_NOCASE = 2


def qemuMonitorCommand(domain: virDomain, cmd: str, flags: int = 0) -> str:  # noqa: N802
    """Send ``cmd`` to the domain's QEMU monitor and return QEMU's answer as text.

    flags 0: ``cmd`` is a QMP command as JSON text ({"execute": ..., "arguments": {...}}) and
    the whole reply object comes back as JSON text ({"return": ..., "id": ...}, or with "error"
    when QEMU refused the command). VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP: ``cmd`` is a human
    monitor command line, run through human-monitor-command, and its output comes back.
    """
    from pyvirt.qemu import queries

    remote = getattr(domain, "qemuMonitorCommand", None)
    if remote is not None:  # a pyvirt.remote domain: the QEMU program over the wire
        return str(remote(cmd, flags))
    if flags & ~VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP:
        raise PyvirtError(f"unsupported flags (0x{flags & ~VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP:x}) in "
                          "function qemuDomainQemuMonitorCommandWithFiles",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_QEMU,
                          str1="qemuDomainQemuMonitorCommandWithFiles", str2="flags")
    domain.connect()._check_writable("virDomainQemuMonitorCommand", codes.VIR_FROM_NONE)
    rd = domain._running()
    rd.taint("custom-monitor")  # as libvirt: the domain's state may now differ from what it knows
    return queries.monitor_command(rd, cmd, hmp=bool(flags & VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP))


def qemuAttach(conn: virConnect, pid_value: int, flags: int = 0) -> virDomain:  # noqa: N802
    """Refused in libvirt 9.0's words: attaching to a QEMU started outside libvirt was removed."""
    raise PyvirtError("this function is not supported by the connection driver: virDomainQemuAttach",
                      code=codes.VIR_ERR_NO_SUPPORT, domain=codes.VIR_FROM_NONE)


def qemuMonitorEventRegister(conn: virConnect, dom: virDomain | None, event: str | None,  # noqa: N802
                             cb: Callable[..., object], opaque: object, flags: int = 0) -> int:
    """Receive the QMP events of one domain (or all) as QEMU sends them:
    ``cb(conn, dom, event, seconds, microseconds, details_json_or_None, opaque)``. ``event`` filters
    by name (None: all; a regular expression with ..._REGEX; case-insensitive with ..._NOCASE).
    Delivered on pyvirt's event thread, like the lifecycle events."""
    from pyvirt import _events_api

    conn._check_writable("virConnectDomainQemuMonitorEventRegister", codes.VIR_FROM_NONE)
    return _events_api.register_monitor(conn, dom, event, cb, opaque, flags)


def qemuMonitorEventDeregister(conn: virConnect, callbackID: int) -> int:  # noqa: N802, N803
    from pyvirt import _events_api

    return _events_api.deregister_any(conn, callbackID)
