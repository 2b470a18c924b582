# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's network API on an in-process connection: the methods :class:`pyvirt.connection.virConnect`
inherits from :class:`NetworkConnectMethods` (networkDefineXML, networkLookupByName, listAllNetworks...).
"""

from __future__ import annotations

__all__ = ["NetworkConnectMethods"]


class NetworkConnectMethods:
    """virConnect's network methods (a mixin: no state of its own; imports stay lazy)."""
