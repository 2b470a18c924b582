# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver; also libvirt-python's ``libvirt_qemu`` names (``from pyvirt import qemu as
libvirt_qemu``), loaded on first use from :mod:`pyvirt.qemu.libvirt_qemu`."""

from __future__ import annotations

_LIBVIRT_QEMU_NAMES = frozenset({"qemuMonitorCommand", "qemuAttach", "qemuMonitorEventRegister",
                                 "qemuMonitorEventDeregister", "VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT",
                                 "VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP",
                                 "VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX",
                                 "VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_NOCASE"})


def __getattr__(name: str) -> object:
    if name in _LIBVIRT_QEMU_NAMES:
        from pyvirt.qemu import libvirt_qemu

        return getattr(libvirt_qemu, name)
    raise AttributeError(f"module 'pyvirt.qemu' has no attribute '{name}'")
