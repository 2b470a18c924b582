# SPDX-License-Identifier: LGPL-2.1-or-later
"""The network procedures of libvirt's REMOTE program (remote_protocol.x), declared on
:data:`pyvirt.rpc.procedures.PROCEDURES` (this module is imported at the end of that one).

A network travels as ``remote_nonnull_network`` (name and UUID). Numbers, layouts and priorities are
remote_protocol.x's; lookups, lists, XML, autostart and leases are allowed on a read-only connection,
changes are not (libvirt-network.c's virCheckReadOnly); any connection may register for network
events (lifecycle, with callback ids). NETWORK_UPDATE, the
``*_XML_FLAGS`` variants and network ports are not declared: pyvirt's network driver has none of them.
"""

from __future__ import annotations

from typing import Any

from pyvirt.rpc.procedures import PROCEDURES
from pyvirt.rpc.protocol import Program
from pyvirt.rpc.xdr import (
    HYPER,
    INT,
    NONNULL_NETWORK,
    NONNULL_STRING,
    REMOTE_NETWORK,
    REMOTE_STRING,
    UINT,
    UUID,
    Array,
    Codec,
    Struct,
)

__all__ = ["NETWORK_LIST_MAX", "DHCP_LEASES_MAX", "DHCP_LEASE"]

#: remote_protocol.x's REMOTE_NETWORK_LIST_MAX and REMOTE_NETWORK_DHCP_LEASES_MAX
NETWORK_LIST_MAX = 16384
DHCP_LEASES_MAX = 65536

DHCP_LEASE = Struct("NetworkDhcpLease", [
    ("iface", NONNULL_STRING), ("expirytime", HYPER), ("type", INT), ("mac", REMOTE_STRING),
    ("iaid", REMOTE_STRING), ("ipaddr", NONNULL_STRING), ("prefix", UINT), ("hostname", REMOTE_STRING),
    ("clientid", REMOTE_STRING)])

_NET = ("net", NONNULL_NETWORK)
_FLAGS = ("flags", UINT)
_XML = ("xml", NONNULL_STRING)
_NET_RET: list[tuple[str, Codec[Any]]] = [_NET]
_NAMES = [("names", Array(NONNULL_STRING, NETWORK_LIST_MAX))]


def _remote(number: int, name: str, args: Any = None, ret: Any = None, *, hi: bool = True,
            ro: bool = False) -> None:
    PROCEDURES.define(Program.REMOTE, number, name, args, ret, hi=hi, ro=ro)


_remote(36, "CONNECT_LIST_DEFINED_NETWORKS", [("maxnames", INT)], _NAMES, ro=True)
_remote(38, "CONNECT_LIST_NETWORKS", [("maxnames", INT)], _NAMES, ro=True)
_remote(39, "NETWORK_CREATE", [_NET], hi=False)
_remote(40, "NETWORK_CREATE_XML", [_XML], _NET_RET, hi=False)
_remote(41, "NETWORK_DEFINE_XML", [_XML], _NET_RET)
_remote(42, "NETWORK_DESTROY", [_NET])
_remote(43, "NETWORK_GET_XML_DESC", [_NET, _FLAGS], [("xml", NONNULL_STRING)], ro=True)
_remote(44, "NETWORK_GET_AUTOSTART", [_NET], [("autostart", INT)], ro=True)
_remote(45, "NETWORK_GET_BRIDGE_NAME", [_NET], [("name", NONNULL_STRING)], ro=True)
_remote(46, "NETWORK_LOOKUP_BY_NAME", [("name", NONNULL_STRING)], _NET_RET, ro=True)
_remote(47, "NETWORK_LOOKUP_BY_UUID", [("uuid", UUID)], _NET_RET, ro=True)
_remote(48, "NETWORK_SET_AUTOSTART", [_NET, ("autostart", INT)])
_remote(49, "NETWORK_UNDEFINE", [_NET])
_remote(50, "CONNECT_NUM_OF_DEFINED_NETWORKS", None, [("num", INT)], ro=True)
_remote(52, "CONNECT_NUM_OF_NETWORKS", None, [("num", INT)], ro=True)
_remote(152, "NETWORK_IS_ACTIVE", [_NET], [("active", INT)], ro=True)
_remote(153, "NETWORK_IS_PERSISTENT", [_NET], [("persistent", INT)], ro=True)
_remote(283, "CONNECT_LIST_ALL_NETWORKS", [("need_results", INT), _FLAGS],
        [("nets", Array(NONNULL_NETWORK, NETWORK_LIST_MAX)), ("ret", UINT)], ro=True)
_remote(341, "NETWORK_GET_DHCP_LEASES", [_NET, ("mac", REMOTE_STRING), ("need_results", INT), _FLAGS],
        [("leases", Array(DHCP_LEASE, DHCP_LEASES_MAX)), ("ret", UINT)], hi=False, ro=True)

# ---- events (callback ids only: libvirt added network events with them) ----
_remote(313, "CONNECT_NETWORK_EVENT_REGISTER_ANY", [("eventID", INT), ("net", REMOTE_NETWORK)],
        [("callbackID", INT)], ro=True)
_remote(314, "CONNECT_NETWORK_EVENT_DEREGISTER_ANY", [("callbackID", INT)], ro=True)
PROCEDURES.define(Program.REMOTE, 315, "NETWORK_EVENT_LIFECYCLE",
                  [("callbackID", INT), _NET, ("event", INT), ("detail", INT)], event=True)
