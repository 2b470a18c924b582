# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt: libvirt's QEMU/KVM driver in pure Python.

``import pyvirt as libvirt`` gives libvirt-python's names for what pyvirt supports: ``open``,
``openReadOnly``, ``openAuth``, ``getVersion``, ``libvirtError`` and the ``VIR_*`` constants
(:mod:`pyvirt._constants`, :mod:`pyvirt._errcodes`); ``from pyvirt import qemu as libvirt_qemu``
gives libvirt_qemu's ``qemuMonitorCommand`` and ``qemuAttach``. They are loaded on
first use, so that importing the package (as every pyvirsh run does) costs nothing.
"""

from __future__ import annotations

_CONNECTION_NAMES = frozenset({"open", "openReadOnly", "openAuth", "getVersion", "virConnect", "virDomain",
                               "virEventRegisterDefaultImpl", "virEventRunDefaultImpl"})
_STREAM_NAMES = frozenset({"virStream"})
_SECRET_NAMES = frozenset({"virSecret"})


def __getattr__(name: str) -> object:
    if name in _CONNECTION_NAMES:
        from pyvirt import connection

        return getattr(connection, name)
    if name in _STREAM_NAMES:
        from pyvirt import stream

        return getattr(stream, name)
    if name in _SECRET_NAMES:
        from pyvirt.secret import api

        return getattr(api, name)
    if name in ("virStoragePool", "virStorageVol"):
        from pyvirt.storage import api as storage_api

        return getattr(storage_api, name)
    if name == "virNetwork":
        from pyvirt.network import api as network_api

        return network_api.virNetwork
    if name == "libvirtError":
        from pyvirt.errors import PyvirtError

        return PyvirtError
    if name.startswith("VIR_"):
        from pyvirt import _constants, _errcodes, connection

        for source in (_errcodes, _constants, connection):
            if hasattr(source, name):
                return getattr(source, name)
    raise AttributeError(f"module 'pyvirt' has no attribute '{name}'")
