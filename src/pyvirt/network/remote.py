# SPDX-License-Identifier: LGPL-2.1-or-later
"""The network methods of pyvirt's RPC client: :class:`pyvirt.remote.RemoteConnect` inherits them from
:class:`RemoteNetworkMethods`; they return :class:`RemoteNetwork` handles.

As libvirt's remote driver, the client keeps what ``remote_nonnull_network`` carries (name and UUID)
and sends it back with each call on the handle; the server decides everything else. A malformed UUID
string is refused here, before any call, as libvirt's public API does.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

__all__ = ["RemoteNetworkMethods", "RemoteNetwork"]

_LIST_INACTIVE, _LIST_ACTIVE = 1, 2


class RemoteNetworkMethods:
    """RemoteConnect's network methods (a mixin over RemoteConnect._call)."""

    def _call(self, proc: str, api: str, **fields: Any) -> Any:  # provided by RemoteConnect
        raise NotImplementedError

    def _network(self, wire: Any) -> RemoteNetwork:
        return RemoteNetwork(self, wire)

    def networkDefineXML(self, xml: str) -> RemoteNetwork:  # noqa: N802
        return self._network(self._call("NETWORK_DEFINE_XML", "virNetworkDefineXML", xml=xml).net)

    def networkCreateXML(self, xml: str) -> RemoteNetwork:  # noqa: N802
        return self._network(self._call("NETWORK_CREATE_XML", "virNetworkCreateXML", xml=xml).net)

    def networkLookupByName(self, name: str) -> RemoteNetwork:  # noqa: N802
        return self._network(self._call("NETWORK_LOOKUP_BY_NAME", "virNetworkLookupByName", name=name).net)

    def networkLookupByUUID(self, uuid: bytes) -> RemoteNetwork:  # noqa: N802
        if not isinstance(uuid, bytes | bytearray) or len(uuid) != 16:
            raise PyvirtError("invalid argument: uuid in virNetworkLookupByUUID must be 16 bytes (a UUID's "
                              "raw form; use networkLookupByUUIDString for its text)",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_NETWORK)
        return self._network(self._call("NETWORK_LOOKUP_BY_UUID", "virNetworkLookupByUUID",
                                        uuid=bytes(uuid)).net)

    def networkLookupByUUIDString(self, uuidstr: str) -> RemoteNetwork:  # noqa: N802
        try:
            raw = uuidlib.UUID(hex=uuidstr.replace("-", "")).bytes
        except (ValueError, TypeError, AttributeError):
            raise PyvirtError("uuidstr in virNetworkLookupByUUIDString must be a valid UUID",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_NETWORK) from None
        return self._network(self._call("NETWORK_LOOKUP_BY_UUID", "virNetworkLookupByUUIDString",
                                        uuid=raw).net)

    def listAllNetworks(self, flags: int = 0) -> list[RemoteNetwork]:  # noqa: N802
        r = self._call("CONNECT_LIST_ALL_NETWORKS", "virConnectListAllNetworks", need_results=1, flags=flags)
        return [self._network(n) for n in r.nets]

    def listNetworks(self) -> list[str]:  # noqa: N802
        count = self.numOfNetworks()
        if count <= 0:
            return []
        return list(self._call("CONNECT_LIST_NETWORKS", "virConnectListNetworks", maxnames=count).names)

    def listDefinedNetworks(self) -> list[str]:  # noqa: N802
        count = self.numOfDefinedNetworks()
        if count <= 0:
            return []
        return list(self._call("CONNECT_LIST_DEFINED_NETWORKS", "virConnectListDefinedNetworks",
                               maxnames=count).names)

    def numOfNetworks(self) -> int:  # noqa: N802
        return int(self._call("CONNECT_NUM_OF_NETWORKS", "virConnectNumOfNetworks").num)

    def networkEventRegisterAny(self, net: RemoteNetwork | None, eventID: int,  # noqa: N802, N803
                                cb: Any, opaque: Any) -> int:
        """Lifecycle events ``cb(conn, net, event, detail, opaque)`` of ``net`` (None: every network),
        registered with the server (REMOTE_PROC_CONNECT_NETWORK_EVENT_REGISTER_ANY)."""
        from pyvirt.object_events import check_network_event_id

        check_network_event_id(eventID)
        wire = {"name": net._name, "uuid": net._uuid} if net is not None else None
        return self._register_remote("network", "CONNECT_NETWORK_EVENT_REGISTER_ANY",  # type: ignore[attr-defined]
                                     "virConnectNetworkEventRegisterAny", eventID, cb, opaque, net=wire)

    def networkEventDeregisterAny(self, callbackID: int) -> None:  # noqa: N802, N803
        self._deregister_remote("network", "CONNECT_NETWORK_EVENT_DEREGISTER_ANY",  # type: ignore[attr-defined]
                                "virConnectNetworkEventDeregisterAny", callbackID)

    def numOfDefinedNetworks(self) -> int:  # noqa: N802
        return int(self._call("CONNECT_NUM_OF_DEFINED_NETWORKS", "virConnectNumOfDefinedNetworks").num)


class RemoteNetwork:
    """A network handle of a remote connection: name and UUID as the server gave them."""

    def __init__(self, conn: RemoteNetworkMethods, wire: Any) -> None:
        self._conn = conn
        self._name = str(wire.name)
        self._uuid = bytes(wire.uuid)

    def _call(self, proc: str, api: str, **fields: Any) -> Any:
        return self._conn._call(proc, api, net={"name": self._name, "uuid": self._uuid}, **fields)

    def __repr__(self) -> str:
        return f"<pyvirt.RemoteNetwork {self._name}>"

    def connect(self) -> Any:
        return self._conn

    def name(self) -> str:
        return self._name

    def UUID(self) -> bytes:  # noqa: N802
        return self._uuid

    def UUIDString(self) -> str:  # noqa: N802
        return str(uuidlib.UUID(bytes=self._uuid))

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return str(self._call("NETWORK_GET_XML_DESC", "virNetworkGetXMLDesc", flags=flags).xml)

    def bridgeName(self) -> str:  # noqa: N802
        return str(self._call("NETWORK_GET_BRIDGE_NAME", "virNetworkGetBridgeName").name)

    def isActive(self) -> int:  # noqa: N802
        return int(self._call("NETWORK_IS_ACTIVE", "virNetworkIsActive").active)

    def isPersistent(self) -> int:  # noqa: N802
        return int(self._call("NETWORK_IS_PERSISTENT", "virNetworkIsPersistent").persistent)

    def autostart(self) -> int:
        return int(self._call("NETWORK_GET_AUTOSTART", "virNetworkGetAutostart").autostart)

    def setAutostart(self, autostart: int) -> int:  # noqa: N802
        self._call("NETWORK_SET_AUTOSTART", "virNetworkSetAutostart", autostart=int(autostart))
        return 0

    def create(self) -> int:
        self._call("NETWORK_CREATE", "virNetworkCreate")
        return 0

    def destroy(self) -> int:
        self._call("NETWORK_DESTROY", "virNetworkDestroy")
        return 0

    def undefine(self) -> int:
        self._call("NETWORK_UNDEFINE", "virNetworkUndefine")
        return 0

    def DHCPLeases(self, mac: str | None = None, flags: int = 0) -> list[dict[str, Any]]:  # noqa: N802
        r = self._call("NETWORK_GET_DHCP_LEASES", "virNetworkGetDHCPLeases", mac=mac, need_results=1,
                       flags=flags)
        return [{"iface": le.iface, "expirytime": le.expirytime, "type": le.type, "mac": le.mac,
                 "iaid": le.iaid, "ipaddr": le.ipaddr, "prefix": le.prefix, "hostname": le.hostname,
                 "clientid": le.clientid} for le in r.leases]
