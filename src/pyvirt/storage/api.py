# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's storage API on an in-process connection: the methods :class:`pyvirt.connection.virConnect`
inherits from :class:`StorageConnectMethods` (storagePoolDefineXML, storageVolLookupByPath...).
"""

from __future__ import annotations

__all__ = ["StorageConnectMethods"]


class StorageConnectMethods:
    """virConnect's storage methods (a mixin: no state of its own; imports stay lazy)."""
