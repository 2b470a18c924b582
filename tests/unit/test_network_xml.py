# SPDX-License-Identifier: LGPL-2.1-or-later
"""The network XML model (pyvirt.xml.network) and the network driver's definitions, without touching
the host: libvirt 9.0's parse, defaults, format and errors.

The expected documents and messages are what libvirt 9.0's network driver prints for the same input
(checked against the real one by tests/compat/test_network_compat.py). The driver here is an
unprivileged one in a temporary tree: it defines, lists and refuses to start, never creating a
bridge.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.network import host
from pyvirt.network.driver import (
    LIST_ACTIVE,
    LIST_AUTOSTART,
    LIST_INACTIVE,
    LIST_NO_AUTOSTART,
    NetworkDriver,
    NetworkPaths,
)
from pyvirt.xml.base import record_parsed_fields
from pyvirt.xml.network import Network, parse_network

ROUTED = ("<network><name>n2</name><forward mode='route'/><bridge stp='off' delay='2'/>"
          "<mac address='52:54:00:AA:bb:cc'/><domain name='example.org' localOnly='yes'/>"
          "<dns enable='yes'><forwarder addr='10.0.0.53'/>"
          "<host ip='10.1.0.5'><hostname>h5</hostname></host></dns>"
          "<ip address='10.1.0.1' prefix='24'><tftp root='/srv/tftp'/>"
          "<dhcp><range start='10.1.0.10' end='10.1.0.20'/>"
          "<host mac='52:54:00:00:00:01' name='g1' ip='10.1.0.11'/><bootp file='pxe.0'/>"
          "</dhcp></ip></network>")


def test_round_trip_in_libvirts_order_and_form() -> None:
    net = parse_network(ROUTED)
    assert net.to_xml() == (
        "<network>\n"
        "  <name>n2</name>\n"
        "  <forward mode='route'/>\n"
        "  <bridge stp='off' delay='2'/>\n"
        "  <mac address='52:54:00:aa:bb:cc'/>\n"
        "  <domain name='example.org' localOnly='yes'/>\n"
        "  <dns enable='yes'>\n"
        "    <forwarder addr='10.0.0.53'/>\n"
        "    <host ip='10.1.0.5'>\n"
        "      <hostname>h5</hostname>\n"
        "    </host>\n"
        "  </dns>\n"
        "  <ip address='10.1.0.1' prefix='24'>\n"
        "    <tftp root='/srv/tftp'/>\n"
        "    <dhcp>\n"
        "      <range start='10.1.0.10' end='10.1.0.20'/>\n"
        "      <host mac='52:54:00:00:00:01' name='g1' ip='10.1.0.11'/>\n"
        "      <bootp file='pxe.0'/>\n"
        "    </dhcp>\n"
        "  </ip>\n"
        "</network>\n")


def test_every_declared_field_is_exercised() -> None:
    with record_parsed_fields() as seen:
        parse_network(ROUTED)
        parse_network("<network ipv6='yes'><name>x</name><uuid>11111111-2222-3333-4444-555555555555</uuid>"
                      "<forward mode='bridge' dev='eth0'/><bridge name='br0'/>"
                      "<dns forwardPlainNames='no'><forwarder domain='d' addr='1.1.1.1'/></dns>"
                      "<ip family='ipv4' address='10.0.0.1' netmask='255.255.255.0'><dhcp>"
                      "<host id='0:1' name='n' ip='10.0.0.2'/><bootp file='f' server='10.0.0.9'/></dhcp>"
                      "</ip></network>")
    from pyvirt.xml import network as model

    declared = {(cls, f.name) for cls in vars(model).values()
                if isinstance(cls, type) and issubclass(cls, model.XMLObject)
                and cls.__module__ == model.__name__
                for f in cls._fields}
    assert declared - seen == set()


def test_empty_ip_is_printed_open_and_closed_as_libvirt_does() -> None:
    doc = "<network><name>iso</name><ip address='10.2.0.1' prefix='24'/></network>"
    assert parse_network(doc).to_xml() == (
        "<network>\n  <name>iso</name>\n  <ip address='10.2.0.1' prefix='24'>\n  </ip>\n</network>\n")


def test_empty_forward_means_nat_and_no_forward_is_isolated() -> None:
    assert parse_network("<network><name>a</name><forward/></network>").forward_mode == "nat"
    assert parse_network("<network><name>a</name></network>").forward_mode == "none"


def test_prefix_netmask_and_classful_defaults() -> None:
    def iface(attrs: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        ip = parse_network(f"<network><name>a</name><ip {attrs}/></network>").ipv4()
        assert ip is not None
        return ip.interface()

    assert str(iface("address='192.168.5.1' netmask='255.255.255.0'").network) == "192.168.5.0/24"
    assert str(iface("address='10.1.2.3' prefix='16'").network) == "10.1.0.0/16"
    assert str(iface("address='10.1.2.3'").network) == "10.0.0.0/8"


# (document, code, start of libvirt 9.0's message) -- the messages go on with where and how to fix
BAD = [
    ("<network><ip address='10.9.0.1' prefix='24'/></network>", codes.VIR_ERR_NO_NAME,
     "missing name information"),
    ("<network><name>a/b</name></network>", codes.VIR_ERR_XML_DETAIL, "invalid char in name: /"),
    ("<network><name>b1</name><ip address='10.9.0.300' prefix='24'/></network>", codes.VIR_ERR_XML_ERROR,
     "XML error: Invalid address '10.9.0.300' in network 'b1'"),
    ("<network><name>b2</name><ip address='10.9.0.1' prefix='40'/></network>",
     codes.VIR_ERR_CONFIG_UNSUPPORTED,
     "unsupported configuration: Invalid IPv4 prefix '40' in network 'b2'"),
    ("<network><name>b3</name><ip address='10.9.0.1' prefix='24'><dhcp>"
     "<range start='10.8.0.2' end='10.8.0.9'/>"
     "</dhcp></ip></network>", codes.VIR_ERR_INTERNAL_ERROR,
     "internal error: range 10.8.0.2 - 10.8.0.9 is not entirely within network 10.9.0.1/24"),
    ("<network><name>b4</name><ip address='10.9.0.1' prefix='24'><dhcp>"
     "<range start='10.9.0.9' end='10.9.0.2'/></dhcp></ip></network>", codes.VIR_ERR_INTERNAL_ERROR,
     "internal error: range 10.9.0.9 - 10.9.0.2 is reversed"),
    ("<network><name>b5</name><forward mode='bogus'/></network>", codes.VIR_ERR_CONFIG_UNSUPPORTED,
     "unsupported configuration: unknown forwarding type 'bogus'"),
    ("<network><name>b6</name>", codes.VIR_ERR_XML_DETAIL, "(network_definition)"),
    ("<domain/>", codes.VIR_ERR_XML_ERROR, "XML error: expecting root element of 'network', not 'domain'"),
    ("<network><name>b8</name><mac address='zz'/></network>", codes.VIR_ERR_XML_ERROR,
     "XML error: Invalid bridge mac address 'zz' in network 'b8'"),
    ("<network><name>b9</name><mac address='01:00:00:00:00:01'/></network>", codes.VIR_ERR_XML_ERROR,
     "XML error: Invalid multicast bridge mac address '01:00:00:00:00:01' in network 'b9'"),
    ("<network><name>b10</name><ip address='10.9.0.1' prefix='24'><dhcp><host ip='10.9.0.5'/></dhcp></ip>"
     "</network>", codes.VIR_ERR_XML_ERROR,
     "XML error: Static host definition in IPv4 network 'b10' must have mac or name attribute"),
    ("<network><name>b13</name><ip address='10.9.0.1' netmask='255.255.255.0' prefix='24'/></network>",
     codes.VIR_ERR_CONFIG_UNSUPPORTED,
     "unsupported configuration: Network 'b13' IP address cannot have both a prefix and a netmask"),
]


@pytest.mark.parametrize(("doc", "code", "message"), BAD, ids=[b[2][:40] for b in BAD])
def test_bad_documents_get_libvirts_errors(doc: str, code: int, message: str) -> None:
    with pytest.raises(PyvirtError) as info:
        parse_network(doc)
    assert info.value.code == code
    assert info.value.domain == codes.VIR_FROM_NETWORK
    assert str(info.value).startswith(message), str(info.value)


def _driver(tmp_path: Path) -> NetworkDriver:
    paths = NetworkPaths(tmp_path / "etc" / "networks", tmp_path / "etc" / "networks" / "autostart",
                         tmp_path / "run" / "network", tmp_path / "lib" / "dnsmasq")
    return NetworkDriver(paths, privileged=False)


def test_define_adds_libvirts_defaults(tmp_path: Path) -> None:
    drv = _driver(tmp_path)
    a = drv.define_xml("<network><name>a</name><forward/><ip address='10.3.0.1' prefix='24'/></network>")
    b = drv.define_xml("<network><name>b</name></network>")
    c = drv.define_xml("<network><name>c</name><forward mode='bridge'/><bridge name='br0'/></network>")
    xml_a = drv.xml_desc(a)
    assert re.fullmatch(
        r"<network>\n  <name>a</name>\n  <uuid>[0-9a-f-]{36}</uuid>\n  <forward mode='nat'/>\n"
        r"  <bridge name='virbr0' stp='on' delay='0'/>\n  <mac address='52:54:00(:[0-9a-f]{2}){3}'/>\n"
        r"  <ip address='10.3.0.1' prefix='24'>\n  </ip>\n</network>\n", xml_a), xml_a
    assert "<bridge name='virbr1' stp='on' delay='0'/>" in drv.xml_desc(b)
    # a bridge-mode network names a host bridge: nothing generated
    assert drv.xml_desc(c).endswith("  <forward mode='bridge'/>\n  <bridge name='br0'/>\n</network>\n")
    # stored as printed, and read back by a new driver
    assert (tmp_path / "etc" / "networks" / "a.xml").read_text() == xml_a
    assert _driver(tmp_path).xml_desc(a) == xml_a
    # redefining needs the UUID (a document without one gets a new one, as in libvirt); the MAC stays
    with pytest.raises(PyvirtError) as info:
        drv.define_xml("<network><name>a</name><forward/><ip address='10.3.0.1' prefix='24'/></network>")
    assert str(info.value).startswith(f"operation failed: network 'a' already exists with uuid {a.uuid}")
    drv.define_xml(f"<network><name>a</name><uuid>{a.uuid}</uuid><forward/><ip address='10.3.0.1' "
                   "prefix='24'/></network>")
    assert drv.xml_desc(a) == xml_a


def test_uniqueness_and_bridge_clashes(tmp_path: Path) -> None:
    drv = _driver(tmp_path)
    u = "11111111-2222-3333-4444-555555555555"
    drv.define_xml(f"<network><name>ok1</name><uuid>{u}</uuid><bridge name='virbr5'/></network>")
    cases = [
        (f"<network><name>ok2</name><uuid>{u}</uuid></network>",
         f"operation failed: network 'ok1' is already defined with uuid {u}"),
        ("<network><name>ok1</name><uuid>11111111-2222-3333-4444-555555555556</uuid></network>",
         f"operation failed: network 'ok1' already exists with uuid {u}"),
        ("<network><name>ok3</name><bridge name='virbr5'/></network>",
         "internal error: bridge name 'virbr5' already in use."),
        ("<network><name>ok4</name><bridge name='x;rm -rf'/></network>", "XML error: invalid bridge name"),
    ]
    for doc, message in cases:
        with pytest.raises(PyvirtError) as info:
            drv.define_xml(doc)
        assert str(info.value).startswith(message)
        assert info.value.domain == codes.VIR_FROM_NETWORK
    assert [r.name for r in drv.list_all()] == ["ok1"]
    assert sorted(p.name for p in (tmp_path / "etc" / "networks").iterdir()) == ["ok1.xml"]


def test_list_filters_autostart_and_undefine(tmp_path: Path) -> None:
    drv = _driver(tmp_path)
    a = drv.define_xml("<network><name>a</name></network>")
    drv.define_xml("<network><name>b</name></network>")
    drv.set_autostart(a, True)
    assert (tmp_path / "etc" / "networks" / "autostart" / "a.xml").resolve() == \
        tmp_path / "etc" / "networks" / "a.xml"
    assert [r.name for r in drv.list_all(LIST_AUTOSTART)] == ["a"]
    assert [r.name for r in drv.list_all(LIST_NO_AUTOSTART)] == ["b"]
    assert drv.list_all(LIST_ACTIVE) == []
    assert len(drv.list_all(LIST_INACTIVE)) == 2
    with pytest.raises(PyvirtError) as info:
        drv.list_all(1 << 10)
    assert info.value.code == codes.VIR_ERR_INVALID_ARG
    drv.undefine(a)
    assert not (tmp_path / "etc" / "networks" / "autostart" / "a.xml").is_symlink()
    with pytest.raises(PyvirtError) as info:
        drv.lookup_name("a")
    assert str(info.value) == "Network not found: no network with matching name 'a'"
    assert info.value.code == codes.VIR_ERR_NO_NETWORK


def test_unprivileged_instance_refuses_to_start_and_says_what_to_use(tmp_path: Path) -> None:
    drv = _driver(tmp_path)
    ref = drv.define_xml("<network><name>a</name><ip address='10.4.0.1' prefix='24'/></network>")
    with pytest.raises(PyvirtError) as info:
        drv.create(ref)
    assert info.value.code == codes.VIR_ERR_OPERATION_INVALID
    assert "<interface type='user'>" in str(info.value)
    with pytest.raises(PyvirtError):
        drv.create_xml("<network><name>t</name></network>")
    assert [r.name for r in drv.list_all()] == ["a"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "lib").exists()


def test_dnsmasq_config_is_libvirts_layout(tmp_path: Path) -> None:
    conf = host.dnsmasq_config(name="default", bridge="virbr0", pid_file=tmp_path / "default.pid",
                               lease_file=tmp_path / "default.leases",
                               ip=ipaddress.IPv4Interface("192.168.122.1/24"),
                               ranges=[("192.168.122.2", "192.168.122.254")],
                               dhcp_hosts=[("52:54:00:AA:00:01", "vm1", "192.168.122.10"),
                                           (None, "vm2", None)],
                               dns_hosts=[("192.168.122.99", ["a", "b.example"])], forwarders=["10.0.0.53"],
                               domain=None)
    body = [line for line in conf.splitlines() if not line.startswith("##")]
    assert body == ["strict-order", "server=10.0.0.53", f"pid-file={tmp_path}/default.pid",
                    "except-interface=lo", "bind-dynamic", "interface=virbr0",
                    "dhcp-range=192.168.122.2,192.168.122.254,255.255.255.0",
                    "dhcp-no-override", "dhcp-authoritative", "dhcp-lease-max=253",
                    f"dhcp-leasefile={tmp_path}/default.leases",
                    "dhcp-host=52:54:00:aa:00:01,vm1,192.168.122.10", "dhcp-host=vm2",
                    "host-record=a,b.example,192.168.122.99"]


@pytest.mark.parametrize(("kw", "bad"), [
    ({"dhcp_hosts": [("52:54:00:00:00:01", "vm\ninterface=eth0", None)]}, "vm\ninterface=eth0"),
    ({"dns_hosts": [("10.0.0.5", ["x y"])]}, "x y"),
    ({"forwarders": ["8.8.8.8\nserver=1.1.1.1"]}, "8.8.8.8"),
])
def test_no_xml_value_adds_a_line_to_dnsmasqs_configuration(tmp_path: Path, kw: dict[str, object],
                                                            bad: str) -> None:
    args: dict[str, object] = {"name": "n", "bridge": "virbr0", "pid_file": tmp_path / "p",
                               "lease_file": tmp_path / "l", "ip": ipaddress.IPv4Interface("10.0.0.1/24"),
                               "ranges": [], "dhcp_hosts": [], "dns_hosts": [], "forwarders": [],
                               "domain": None, **kw}
    with pytest.raises((PyvirtError, ValueError)):
        host.dnsmasq_config(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["virbr0\ninterface=eth0", "a b", "x" * 16, "", "../x"])
def test_interface_names_that_could_escape_are_refused(name: str) -> None:
    with pytest.raises(PyvirtError):
        host.check_ifname(name)


def test_dnsmasq_lease_file_is_read_as_libvirt_reports_leases(tmp_path: Path) -> None:
    leases = tmp_path / "x.leases"
    leases.write_text("1795852820 52:54:00:12:34:56 192.168.122.76 * 01:52:54:00:12:34:56\n"
                      "1795852821 52:54:00:12:34:57 192.168.122.77 guest2 *\nduid 00:01\n")
    assert host.read_leases(leases) == [
        {"expirytime": 1795852820, "mac": "52:54:00:12:34:56", "ipaddr": "192.168.122.76", "hostname": None,
         "clientid": "01:52:54:00:12:34:56"},
        {"expirytime": 1795852821, "mac": "52:54:00:12:34:57", "ipaddr": "192.168.122.77",
         "hostname": "guest2",
         "clientid": None}]
    assert host.read_leases(tmp_path / "missing") == []


def test_model_knows_no_policy() -> None:
    net = parse_network("<network><name>a</name><forward/></network>")
    assert isinstance(net, Network)
    assert net.uuid is None and net.bridge is None and net.mac is None


def test_validate_refuses_unknown_xml_that_a_plain_parse_drops() -> None:
    doc = "<network><name>v</name><bogus/><bridge name='virbr3' colour='red'/></network>"
    assert "bogus" not in parse_network(doc).to_xml()
    with pytest.raises(PyvirtError) as info:
        parse_network(doc, validate=True)
    assert info.value.code == codes.VIR_ERR_XML_INVALID_SCHEMA
    assert "unknown attribute 'colour' on element 'bridge' (in /network/bridge)" in str(info.value)
