# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt: libvirt's QEMU/KVM driver in pure Python.

``import pyvirt as libvirt`` gives libvirt-python's names for what pyvirt supports: ``open``,
``openReadOnly``, ``getVersion``, ``libvirtError`` and the ``VIR_*`` constants. They are loaded on
first use, so that importing the package (as every pyvirsh run does) costs nothing.
"""

from __future__ import annotations

_CONNECTION_NAMES = frozenset({"open", "openReadOnly", "getVersion", "virConnect", "virDomain"})


def __getattr__(name: str) -> object:
    if name in _CONNECTION_NAMES:
        from pyvirt import connection

        return getattr(connection, name)
    if name == "libvirtError":
        from pyvirt.errors import PyvirtError

        return PyvirtError
    if name.startswith("VIR_"):
        from pyvirt import _errcodes, connection

        for source in (_errcodes, connection):
            if hasattr(source, name):
                return getattr(source, name)
    raise AttributeError(f"module 'pyvirt' has no attribute '{name}'")
