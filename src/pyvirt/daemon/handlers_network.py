# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's handlers for the network procedures (:mod:`pyvirt.rpc.procedures_network`), each a call
on pyvirt's public network API (:mod:`pyvirt.network.api`) of the client's connection.

A network arrives as ``remote_nonnull_network``; as in libvirtd, the daemon finds it again by its
UUID, and one that is gone is libvirt's "Network not found" error. Starting a network (bridge,
dnsmasq, nft) runs on a worker; lookups and lists may run inline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.dispatch import ClientSession
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.rpc.procedures_network import DHCP_LEASES_MAX, NETWORK_LIST_MAX
from pyvirt.rpc.protocol import RemoteError

if TYPE_CHECKING:
    from pyvirt.network.api import virNetwork

__all__: list[str] = []

_h = HANDLERS.register


def wire_network(net: virNetwork) -> dict[str, Any]:
    """A virNetwork of the API as remote_nonnull_network."""
    return {"name": net.name(), "uuid": net.UUID()}


def _net(session: ClientSession, wire: Any) -> virNetwork:
    return session.require_conn().networkLookupByUUID(bytes(wire.uuid))


def _too_many(what: str, limit: str) -> RemoteError:
    return RemoteError(f"{what} > {limit}", code=codes.VIR_ERR_RPC, domain=codes.VIR_FROM_RPC,
                       level=codes.VIR_ERR_ERROR, str1="%s", str2=f"{what} > {limit}")


@_h("CONNECT_NUM_OF_NETWORKS", inline_when_idle=True)
def num_of_networks(session: ClientSession, args: None) -> Any:
    return {"num": session.require_conn().numOfNetworks()}


@_h("CONNECT_NUM_OF_DEFINED_NETWORKS", inline_when_idle=True)
def num_of_defined_networks(session: ClientSession, args: None) -> Any:
    return {"num": session.require_conn().numOfDefinedNetworks()}


def _names(names: list[str], maxnames: int) -> Any:
    if maxnames > NETWORK_LIST_MAX:
        raise _too_many("maxnames", "REMOTE_NETWORK_LIST_MAX")
    return {"names": names[:max(maxnames, 0)]}


@_h("CONNECT_LIST_NETWORKS", inline_when_idle=True)
def list_networks(session: ClientSession, args: Any) -> Any:
    return _names(session.require_conn().listNetworks(), args.maxnames)


@_h("CONNECT_LIST_DEFINED_NETWORKS", inline_when_idle=True)
def list_defined_networks(session: ClientSession, args: Any) -> Any:
    return _names(session.require_conn().listDefinedNetworks(), args.maxnames)


@_h("CONNECT_LIST_ALL_NETWORKS", inline_when_idle=True)
def list_all_networks(session: ClientSession, args: Any) -> Any:
    found = session.require_conn().listAllNetworks(args.flags)
    return {"nets": [wire_network(n) for n in found] if args.need_results else [], "ret": len(found)}


@_h("NETWORK_LOOKUP_BY_NAME", inline_when_idle=True)
def lookup_by_name(session: ClientSession, args: Any) -> Any:
    return {"net": wire_network(session.require_conn().networkLookupByName(args.name))}


@_h("NETWORK_LOOKUP_BY_UUID", inline_when_idle=True)
def lookup_by_uuid(session: ClientSession, args: Any) -> Any:
    return {"net": wire_network(session.require_conn().networkLookupByUUID(bytes(args.uuid)))}


@_h("NETWORK_DEFINE_XML")
def define_xml(session: ClientSession, args: Any) -> Any:
    return {"net": wire_network(session.require_conn().networkDefineXML(args.xml))}


@_h("NETWORK_CREATE_XML")
def create_xml(session: ClientSession, args: Any) -> Any:
    return {"net": wire_network(session.require_conn().networkCreateXML(args.xml))}


@_h("NETWORK_CREATE")
def create(session: ClientSession, args: Any) -> Any:
    _net(session, args.net).create()
    return None


@_h("NETWORK_DESTROY")
def destroy(session: ClientSession, args: Any) -> Any:
    _net(session, args.net).destroy()
    return None


@_h("NETWORK_UNDEFINE")
def undefine(session: ClientSession, args: Any) -> Any:
    _net(session, args.net).undefine()
    return None


@_h("NETWORK_GET_XML_DESC", inline_when_idle=True)
def get_xml_desc(session: ClientSession, args: Any) -> Any:
    return {"xml": _net(session, args.net).XMLDesc(args.flags)}


@_h("NETWORK_GET_AUTOSTART", inline_when_idle=True)
def get_autostart(session: ClientSession, args: Any) -> Any:
    return {"autostart": _net(session, args.net).autostart()}


@_h("NETWORK_SET_AUTOSTART")
def set_autostart(session: ClientSession, args: Any) -> Any:
    _net(session, args.net).setAutostart(args.autostart)
    return None


@_h("NETWORK_GET_BRIDGE_NAME", inline_when_idle=True)
def get_bridge_name(session: ClientSession, args: Any) -> Any:
    return {"name": _net(session, args.net).bridgeName()}


@_h("NETWORK_IS_ACTIVE", inline_when_idle=True)
def is_active(session: ClientSession, args: Any) -> Any:
    return {"active": _net(session, args.net).isActive()}


@_h("NETWORK_IS_PERSISTENT", inline_when_idle=True)
def is_persistent(session: ClientSession, args: Any) -> Any:
    return {"persistent": _net(session, args.net).isPersistent()}


@_h("NETWORK_GET_DHCP_LEASES")
def get_dhcp_leases(session: ClientSession, args: Any) -> Any:
    leases = _net(session, args.net).DHCPLeases(args.mac, args.flags)
    if len(leases) > DHCP_LEASES_MAX:
        raise _too_many("Number of leases", "REMOTE_NETWORK_DHCP_LEASES_MAX")
    return {"leases": leases if args.need_results else [], "ret": len(leases)}
