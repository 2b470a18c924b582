# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's network API on an in-process connection: the methods :class:`pyvirt.connection.virConnect`
inherits from :class:`NetworkConnectMethods` (networkDefineXML, networkLookupByName, listAllNetworks...),
and ``virNetwork``.

As libvirt's public API layer (libvirt-network.c): a read-only connection may look networks up, list
them and read their XML and leases, but not change them; a malformed UUID string is an invalid
argument. Errors are in VIR_FROM_NETWORK. The first call of a privileged instance's network API
defines the 'default' network (:mod:`pyvirt.network.driver`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.network.driver import NetworkDriver, NetworkRef

__all__ = ["NetworkConnectMethods", "virNetwork"]


def _driver(conn: Any) -> NetworkDriver:
    from pyvirt.network.driver import driver_for

    drv = driver_for(conn.driver)
    drv.api_used()
    return drv


def _writable(conn: Any, function: str) -> None:
    conn._check_writable(function, codes.VIR_FROM_NETWORK)


class virNetwork:  # noqa: N801 - libvirt-python's name
    """A handle on a network: its name and UUID; other calls reach the driver and fail once the
    network is gone (libvirt finds it again by UUID)."""

    def __init__(self, conn: virConnect, ref: NetworkRef) -> None:
        self._conn = conn
        self._ref = ref

    def __repr__(self) -> str:
        return f"<pyvirt.virNetwork {self._ref.name}>"

    def connect(self) -> virConnect:
        return self._conn

    def name(self) -> str:
        return self._ref.name

    def UUID(self) -> bytes:  # noqa: N802
        import uuid as _uuid  # lazily: this mixin loads with every connection
        return _uuid.UUID(self._ref.uuid).bytes

    def UUIDString(self) -> str:  # noqa: N802
        return self._ref.uuid

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return _driver(self._conn).xml_desc(self._ref, flags)

    def bridgeName(self) -> str:  # noqa: N802
        return _driver(self._conn).bridge_name(self._ref)

    def isActive(self) -> int:  # noqa: N802
        return int(_driver(self._conn).info(self._ref)["active"])

    def isPersistent(self) -> int:  # noqa: N802
        return int(_driver(self._conn).info(self._ref)["persistent"])

    def autostart(self) -> int:
        return int(_driver(self._conn).info(self._ref)["autostart"])

    def setAutostart(self, autostart: int) -> int:  # noqa: N802
        _writable(self._conn, "virNetworkSetAutostart")
        _driver(self._conn).set_autostart(self._ref, bool(autostart))
        return 0

    def create(self) -> int:
        _writable(self._conn, "virNetworkCreate")
        _driver(self._conn).create(self._ref)
        return 0

    def destroy(self) -> int:
        _writable(self._conn, "virNetworkDestroy")
        _driver(self._conn).destroy(self._ref)
        return 0

    def undefine(self) -> int:
        _writable(self._conn, "virNetworkUndefine")
        _driver(self._conn).undefine(self._ref)
        return 0

    def DHCPLeases(self, mac: str | None = None, flags: int = 0) -> list[dict[str, Any]]:  # noqa: N802
        from pyvirt.network.driver import check_flags

        check_flags(flags, 0, "networkGetDHCPLeases")
        return _driver(self._conn).dhcp_leases(self._ref, mac)


def _canonical_uuid(uuidstr: Any) -> str:
    try:
        import uuid as _uuid  # lazily: this mixin loads with every connection
        return str(_uuid.UUID(hex=uuidstr.replace("-", ""))) if isinstance(uuidstr, str) else ""
    except ValueError:
        return ""


class NetworkConnectMethods:
    """virConnect's network methods (a mixin: no state of its own; imports stay lazy)."""

    def networkDefineXML(self, xml: str) -> virNetwork:  # noqa: N802
        return self.networkDefineXMLFlags(xml, 0)

    def networkDefineXMLFlags(self, xml: str, flags: int = 0) -> virNetwork:  # noqa: N802
        _writable(self, "virNetworkDefineXML")
        return virNetwork(self, _driver(self).define_xml(xml, flags))  # type: ignore[arg-type]

    def networkCreateXML(self, xml: str) -> virNetwork:  # noqa: N802
        return self.networkCreateXMLFlags(xml, 0)

    def networkCreateXMLFlags(self, xml: str, flags: int = 0) -> virNetwork:  # noqa: N802
        _writable(self, "virNetworkCreateXML")
        return virNetwork(self, _driver(self).create_xml(xml, flags))  # type: ignore[arg-type]

    def networkLookupByName(self, name: str) -> virNetwork:  # noqa: N802
        return virNetwork(self, _driver(self).lookup_name(name))  # type: ignore[arg-type]

    def networkLookupByUUIDString(self, uuidstr: str) -> virNetwork:  # noqa: N802
        canonical = _canonical_uuid(uuidstr)
        if not canonical:
            raise PyvirtError("uuidstr in virNetworkLookupByUUIDString must be a valid UUID",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_NETWORK)
        return virNetwork(self, _driver(self).lookup_uuid(canonical))  # type: ignore[arg-type]

    def networkLookupByUUID(self, uuid: bytes) -> virNetwork:  # noqa: N802
        if not isinstance(uuid, bytes | bytearray) or len(uuid) != 16:
            raise PyvirtError("uuid in virNetworkLookupByUUID must be 16 bytes (a UUID's raw form; use "
                              "networkLookupByUUIDString for its text)", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_NETWORK)
        import uuid as _uuid  # lazily: this mixin loads with every connection
        return virNetwork(self, _driver(self).lookup_uuid(str(_uuid.UUID(bytes=bytes(uuid)))))  # type: ignore[arg-type]

    def listAllNetworks(self, flags: int = 0) -> list[virNetwork]:  # noqa: N802
        return [virNetwork(self, ref) for ref in _driver(self).list_all(flags)]  # type: ignore[arg-type]

    def listNetworks(self) -> list[str]:  # noqa: N802
        from pyvirt.network.driver import LIST_ACTIVE

        return [ref.name for ref in _driver(self).list_all(LIST_ACTIVE)]

    def listDefinedNetworks(self) -> list[str]:  # noqa: N802
        from pyvirt.network.driver import LIST_INACTIVE

        return [ref.name for ref in _driver(self).list_all(LIST_INACTIVE)]

    def networkEventRegisterAny(self, net: virNetwork | None, eventID: int,  # noqa: N802, N803
                                cb: Any, opaque: Any) -> int:
        """Lifecycle events ``cb(conn, net, event, detail, opaque)`` of ``net`` (None: every
        network), delivered on pyvirt's event thread (:mod:`pyvirt.object_events`)."""
        from pyvirt import object_events

        object_events.check_network_event_id(eventID)  # a bad id changes nothing, even here
        _driver(self)  # the first use of the network API defines 'default' before, not after
        return object_events.register_network(self, net, eventID, cb, opaque)  # type: ignore[arg-type]

    def networkEventDeregisterAny(self, callbackID: int) -> None:  # noqa: N802, N803
        """None, as libvirt-python's."""
        from pyvirt import object_events

        object_events.deregister(self, "network", callbackID)  # type: ignore[arg-type]

    def numOfNetworks(self) -> int:  # noqa: N802
        return len(self.listNetworks())

    def numOfDefinedNetworks(self) -> int:  # noqa: N802
        return len(self.listDefinedNetworks())
