# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt 9.0's network XML (``<network>``, formatnetwork), declared with :mod:`pyvirt.xml.base`.

::

    <network ipv6='yes'>
      <name>default</name>
      <uuid>...</uuid>
      <forward mode='nat|route|open|bridge' dev='eth0'/>      (no <forward>: isolated)
      <bridge name='virbr0' stp='on' delay='0'/>
      <mac address='52:54:00:..'/>
      <domain name='example.org' localOnly='yes'/>
      <dns enable='yes'>
        <forwarder addr='8.8.8.8'/>
        <host ip='192.168.122.2'><hostname>h</hostname></host>
      </dns>
      <ip address='192.168.122.1' netmask='255.255.255.0'>     (or prefix='24')
        <tftp root='/srv/tftp'/>
        <dhcp>
          <range start='192.168.122.2' end='192.168.122.254'/>
          <host mac='52:54:00:..' name='vm1' ip='192.168.122.10'/>
          <bootp file='pxelinux.0'/>
        </dhcp>
      </ip>
    </network>

Parsing checks what libvirt's parser checks (network_conf.c), with its words and codes plus where and
how to fix; policy (generated UUID, MAC and bridge name, uniqueness) is the driver's
(:mod:`pyvirt.network.driver`). An empty ``<forward/>`` means NAT, as in libvirt.
"""

from __future__ import annotations

import ipaddress
import re

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError, XMLError
from pyvirt.xml.base import (
    Attr,
    Body,
    Child,
    Children,
    Int,
    ParseState,
    Text,
    Uuid,
    XMLObject,
    YesNo,
    format_element,
    parse_document,
)

__all__ = ["FORWARD_MODES", "Network", "NetForward", "NetBridge", "NetIP", "NetDHCP", "DHCPRange", "DHCPHost",
           "NetDNS", "parse_network", "network_error"]

#: the forward modes pyvirt starts (libvirt also has passthrough, private, vepa, hostdev: macvtap/SR-IOV)
FORWARD_MODES = ("nat", "route", "open", "bridge")
_ALL_FORWARD_MODES = ("nat", "route", "open", "bridge", "private", "vepa", "passthrough", "hostdev")
_MAC_RE = re.compile(r"[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}")


def network_error(code: int, message: str) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_NETWORK)


class NetForward(XMLObject):
    TAG = "forward"
    _KEEP_EMPTY = True
    mode = Attr("mode")
    dev = Attr("dev")


class NetBridge(XMLObject):
    TAG = "bridge"
    name = Attr("name")
    stp = Attr("stp")
    delay = Attr("delay", Int(0))


class NetMac(XMLObject):
    TAG = "mac"
    address = Attr("address")


class NetDomain(XMLObject):
    TAG = "domain"
    name = Attr("name")
    local_only = Attr("localOnly", YesNo())


class DNSForwarder(XMLObject):
    TAG = "forwarder"
    domain = Attr("domain")
    addr = Attr("addr")


class DNSHostname(XMLObject):
    TAG = "hostname"
    text = Body()


class DNSHost(XMLObject):
    TAG = "host"
    ip = Attr("ip")
    hostnames = Children(DNSHostname)


class NetDNS(XMLObject):
    TAG = "dns"
    enable = Attr("enable", YesNo())
    forward_plain_names = Attr("forwardPlainNames", YesNo())
    forwarders = Children(DNSForwarder)
    hosts = Children(DNSHost)


class DHCPRange(XMLObject):
    TAG = "range"
    start = Attr("start")
    end = Attr("end")


class DHCPHost(XMLObject):
    TAG = "host"
    mac = Attr("mac")
    id = Attr("id")
    name = Attr("name")
    ip = Attr("ip")


class DHCPBootp(XMLObject):
    TAG = "bootp"
    file = Attr("file")
    server = Attr("server")


class NetDHCP(XMLObject):
    TAG = "dhcp"
    _KEEP_EMPTY = True
    ranges = Children(DHCPRange)
    hosts = Children(DHCPHost)
    bootp = Child(DHCPBootp)


class NetTFTP(XMLObject):
    TAG = "tftp"
    root = Attr("root")


class NetIP(XMLObject):
    TAG = "ip"
    _KEEP_EMPTY = True
    family = Attr("family")
    address = Attr("address")
    netmask = Attr("netmask")
    prefix = Attr("prefix", Int(0))
    tftp = Child(NetTFTP)
    dhcp = Child(NetDHCP)

    @property
    def is_ipv6(self) -> bool:
        return self.family == "ipv6" or ":" in (self.address or "")

    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        """The address with its prefix (checked at parse time)."""
        if self.netmask:
            return ipaddress.ip_interface(f"{self.address}/{self.netmask}")
        prefix = self.prefix if self.prefix is not None else (64 if self.is_ipv6 else _classful(self.address))
        return ipaddress.ip_interface(f"{self.address}/{prefix}")


def _classful(address: str | None) -> int:
    # libvirt's virSocketAddrGetIPPrefix without a netmask or prefix: the address's class
    first = int((address or "0").split(".")[0] or 0)
    return 8 if first < 128 else 16 if first < 192 else 24


class Network(XMLObject):
    TAG = "network"
    ipv6 = Attr("ipv6", YesNo())
    name = Text("name")
    uuid = Text("uuid")
    forward = Child(NetForward)
    bridge = Child(NetBridge)
    mac = Child(NetMac)
    domain = Child(NetDomain)
    dns = Child(NetDNS)
    ips = Children(NetIP)

    @property
    def forward_mode(self) -> str:
        """'nat', 'route', 'open', 'bridge'... or 'none' (isolated: no <forward>)."""
        if self.forward is None:
            return "none"
        return self.forward.mode or "nat"

    @property
    def bridge_name(self) -> str | None:
        return self.bridge.name if self.bridge is not None else None

    def ipv4(self) -> NetIP | None:
        return next((ip for ip in self.ips if not ip.is_ipv6), None)

    def _after_parse(self, st: ParseState) -> None:
        name = self.name
        if not name:
            raise network_error(codes.VIR_ERR_NO_NAME, "missing name information: add <name>NAME</name> to "
                                "<network>")
        if "/" in name:
            raise network_error(codes.VIR_ERR_XML_DETAIL, f"invalid char in name: / ('{name}'): a network's "
                                "name is a file name, so it may not contain '/'")
        if self.uuid is not None:
            try:
                self.uuid = Uuid().parse(self.uuid)
            except ValueError:
                raise network_error(codes.VIR_ERR_INTERNAL_ERROR, f"internal error: malformed uuid element: "
                                    f"'{self.uuid}' is not a UUID (in /network/uuid)") from None
        if self.forward is not None:
            if self.forward.mode is not None and self.forward.mode not in _ALL_FORWARD_MODES:
                modes = ", ".join(_ALL_FORWARD_MODES)
                raise network_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                                    f"unsupported configuration: unknown forwarding type "
                                    f"'{self.forward.mode}' (in /network/forward); expected one of: {modes}")
            if self.forward.mode is None:
                self.forward.mode = "nat"
        if self.mac is not None and self.mac.address is not None:
            mac = self.mac.address
            if not _MAC_RE.fullmatch(mac):
                raise network_error(codes.VIR_ERR_XML_ERROR,
                                    f"XML error: Invalid bridge mac address '{mac}' in network '{name}': "
                                    "write it as six hexadecimal pairs, e.g. 52:54:00:12:34:56")
            octets = [int(p, 16) for p in mac.split(":")]
            if octets[0] & 1:
                raise network_error(codes.VIR_ERR_XML_ERROR,
                                    f"XML error: Invalid multicast bridge mac address '{mac}' in network "
                                    f"'{name}': the first octet must be even")
            self.mac.address = ":".join(f"{o:02x}" for o in octets)
        for ip in self.ips:
            _check_ip(ip, name)

    def to_xml(self) -> str:
        node = self.to_node()
        assert node is not None
        text = format_element(node)
        # libvirt prints <ip> open and closed even when it holds nothing (virNetworkIPDefFormat)
        return re.sub(r"(?m)^(\s*)<ip( [^>]*)?/>$", r"\1<ip\2>\n\1</ip>", text)


def _check_ip(ip: NetIP, name: str) -> None:
    if ip.address is None:
        # libvirt takes <ip> without an address as nothing to do; the driver has nothing to assign
        raise network_error(codes.VIR_ERR_XML_ERROR, f"XML error: Missing required address attribute in "
                            f"network '{name}': add address='...' to <ip>")
    try:
        addr = ipaddress.ip_address(ip.address)
    except ValueError:
        raise network_error(codes.VIR_ERR_XML_ERROR, f"XML error: Invalid address '{ip.address}' in network "
                            f"'{name}'") from None
    if ip.netmask is not None:
        if ip.prefix is not None:
            raise network_error(codes.VIR_ERR_CONFIG_UNSUPPORTED, f"unsupported configuration: Network "
                                f"'{name}' IP address cannot have both a prefix and a netmask: keep one")
        try:
            ipaddress.ip_network(f"0.0.0.0/{ip.netmask}")
        except ValueError:
            raise network_error(codes.VIR_ERR_XML_ERROR, f"XML error: Invalid netmask '{ip.netmask}' in "
                                f"network '{name}'") from None
    limit = 128 if addr.version == 6 else 32
    if ip.prefix is not None and ip.prefix > limit:
        raise network_error(codes.VIR_ERR_CONFIG_UNSUPPORTED, f"unsupported configuration: Invalid "
                            f"IPv{addr.version} prefix '{ip.prefix}' in network '{name}' (at most {limit})")
    net = ip.interface().network
    if ip.dhcp is None:
        return
    for rng in ip.dhcp.ranges:
        try:
            start, end = ipaddress.ip_address(rng.start or ""), ipaddress.ip_address(rng.end or "")
        except ValueError:
            raise network_error(codes.VIR_ERR_XML_ERROR, f"XML error: Invalid dhcp range '{rng.start}' to "
                                f"'{rng.end}' in network '{name}'") from None
        if start not in net or end not in net:
            raise network_error(codes.VIR_ERR_INTERNAL_ERROR,
                                f"internal error: range {rng.start} - {rng.end} is not entirely within "
                                f"network {ip.address}/{net.prefixlen}")
        if int(end) < int(start):
            raise network_error(codes.VIR_ERR_INTERNAL_ERROR,
                                f"internal error: range {rng.start} - {rng.end} is reversed")
    for host in ip.dhcp.hosts:
        if host.mac is None and host.name is None:
            raise network_error(codes.VIR_ERR_XML_ERROR, f"XML error: Static host definition in IPv4 network "
                                f"'{name}' must have mac or name attribute")
        if host.mac is not None and not _MAC_RE.fullmatch(host.mac):
            raise network_error(codes.VIR_ERR_XML_ERROR, f"XML error: Cannot parse MAC address '{host.mac}' "
                                f"in network '{name}'")
        if host.ip is not None:
            try:
                ipaddress.ip_address(host.ip)
            except ValueError:
                raise network_error(codes.VIR_ERR_XML_ERROR, f"XML error: Invalid IP address in static host "
                                    f"definition for network '{name}'") from None


def parse_network(xml: str | bytes, *, validate: bool = False) -> Network:
    """Parse network XML (no defaults added: that is :func:`pyvirt.network.driver` policy).

    ``validate`` is VIR_NETWORK_DEFINE_VALIDATE / CREATE_VALIDATE (``virsh net-define --validate``):
    unknown elements and attributes are errors, reported like libvirt's schema check."""
    try:
        root = parse_document(xml, "network")
    except XMLError as exc:
        text = str(exc)
        if text.startswith("unexpected root element"):
            found = re.search(r"<([^>]*)>", text)
            raise network_error(codes.VIR_ERR_XML_ERROR, "XML error: expecting root element of 'network', "
                                f"not '{found.group(1) if found else '?'}'") from exc
        raise network_error(codes.VIR_ERR_XML_DETAIL, f"(network_definition): {text}") from exc
    st = ParseState(strict=validate, path="/network")
    try:
        return Network.from_node(root, st)
    except PyvirtError as exc:
        if validate and isinstance(exc, XMLError):
            raise PyvirtError(f"XML document failed to validate against the network schema: {exc}",
                              code=codes.VIR_ERR_XML_INVALID_SCHEMA, domain=codes.VIR_FROM_XML) from exc
        if exc.domain in (codes.VIR_FROM_DOMAIN, codes.VIR_FROM_NONE, None):
            exc.domain = codes.VIR_FROM_NETWORK
        raise
