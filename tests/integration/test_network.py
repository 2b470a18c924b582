# SPDX-License-Identifier: LGPL-2.1-or-later
"""Virtual networks for real: bridges, addresses, dnsmasq, nftables rules and taps, each test in a
network namespace of its own (``unshare --net``, see tests/network_oracle.py), so that nothing here
ever touches the host's interfaces, routes, addresses or firewall.

Each scenario runs in a subprocess inside its namespace and reports what it saw as JSON; the
namespace vanishes with the subprocess, once the scenario has stopped what it started. The guest
tests boot the project's test guest, whose busybox udhcpc asks pyvirt's dnsmasq for a lease.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from network_oracle import in_netns

# Helpers every scenario gets: the namespace's interfaces, addresses, nft ruleset and dnsmasq
# processes, as comparable data.
PRELUDE = r"""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout

def links():
    return sorted(l["ifname"] for l in json.loads(sh("ip -j link show")))

def addrs():
    return sorted((a["ifname"], i["local"], i["prefixlen"]) for a in json.loads(sh("ip -j addr show"))
                  for i in a.get("addr_info", []))

def ruleset():
    return sh("nft list ruleset")

def dnsmasqs(root):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = open(f"/proc/{pid}/cmdline").read()
            except OSError:
                continue
            if "dnsmasq" in cmd and str(root) in cmd:
                found.append(int(pid))
    return found

def snapshot(root):
    return {"links": links(), "addrs": addrs(), "nft": ruleset(), "dnsmasq": dnsmasqs(root)}

root = Path(tempfile.mkdtemp(prefix="pvn-", dir="/tmp"))

def _cleanup():
    # (tests/network_oracle.py kills what is left in the namespace)
    import shutil
    shutil.rmtree(root, ignore_errors=True)

import atexit
atexit.register(_cleanup)
import pyvirt
from pyvirt.errors import PyvirtError
out = {}
"""


def run(body: str, timeout: float = 120) -> Any:
    return in_netns(PRELUDE + body + "\nprint(json.dumps(out))\n", timeout=timeout)


def test_default_network_starts_and_stop_removes_exactly_what_it_added() -> None:
    out = run(r"""
before = snapshot(root)
conn = pyvirt.open(f"qemu:///embed?root={root}")
nets = conn.listAllNetworks()     # first use: 'default' is defined, marked autostart and started
net = conn.networkLookupByName("default")
out["listed"] = [(n.name(), n.isActive(), n.isPersistent(), n.autostart()) for n in nets]
out["xml"] = net.XMLDesc()
out["bridge"] = net.bridgeName()
during = snapshot(root)
out["conf"] = (root / "lib" / "dnsmasq" / "default.conf").read_text()
out["status"] = sorted(p.name for p in (root / "run" / "network").iterdir())
out["forward"] = open("/proc/sys/net/ipv4/ip_forward").read().strip()
net.destroy()
after = snapshot(root)
out["before"], out["during"], out["after"] = before, during, after
out["files_after"] = sorted(str(p.relative_to(root)) for p in (root / "lib" / "dnsmasq").iterdir())
out["status_after"] = sorted(p.name for p in (root / "run" / "network").iterdir())
out["active_after"] = net.isActive()
conn.close()
""")
    assert out["listed"] == [["default", 1, 1, 1]]
    assert "<forward mode='nat'/>" in out["xml"]
    assert "<bridge name='virbr0' stp='on' delay='0'/>" in out["xml"]
    assert "<ip address='192.168.122.1' netmask='255.255.255.0'>" in out["xml"]
    assert out["bridge"] == "virbr0"
    before, during, after = out["before"], out["during"], out["after"]
    assert set(during["links"]) - set(before["links"]) == {"virbr0"}
    assert ["virbr0", "192.168.122.1", 24] in during["addrs"]
    assert "table inet pyvirt" in during["nft"] and "masquerade" in during["nft"]
    assert 'iifname "virbr0"' in during["nft"]
    assert len(during["dnsmasq"]) == 1
    assert "interface=virbr0" in out["conf"] and "dhcp-range=192.168.122.2,192.168.122.254" in out["conf"]
    assert "default.json" in out["status"] and "default.pid" in out["status"]
    assert out["forward"] == "1"
    # stop: exactly what the start added is gone (the lease file stays, as libvirt's lease status)
    assert after == before
    assert out["files_after"] == ["lib/dnsmasq/default.leases"]
    assert out["status_after"] == ["autostarted"]
    assert out["active_after"] == 0


def test_default_network_takes_the_first_free_slash24_and_bridge_name() -> None:
    out = run(r"""
sh("ip link add dummy7 type bridge && ip addr add 192.168.122.5/24 dev dummy7 && ip link set dummy7 up")
sh("ip link add virbr0 type bridge")  # as a libvirt on the same host has it
conn = pyvirt.open(f"qemu:///embed?root={root}")
net = conn.networkLookupByName("default")
out["xml"] = net.XMLDesc()
out["active"] = net.isActive()
net.destroy()
conn.close()
""")
    assert "<ip address='192.168.123.1' netmask='255.255.255.0'>" in out["xml"]
    assert "<range start='192.168.123.2' end='192.168.123.254'/>" in out["xml"]
    assert "<bridge name='virbr1' stp='on' delay='0'/>" in out["xml"]
    assert out["active"] == 1


FAILURE = r"""
conn = pyvirt.open(f"qemu:///embed?root={root}")
conn.networkLookupByName("default").destroy()
before = snapshot(root)
def attempt(xml, start=True):
    try:
        net = conn.networkDefineXML(xml)
        if start:
            net.create()
        return None
    except PyvirtError as e:
        return [e.get_error_code(), e.get_error_domain(), str(e)]
"""


def test_failed_starts_leave_nothing_behind() -> None:
    out = run(FAILURE + r"""
sh("ip link add virbr7 type bridge")
sh("ip link add dummy8 type bridge && ip addr add 10.20.0.9/24 dev dummy8 && ip link set dummy8 up")
before = snapshot(root)
out["taken"] = attempt("<network><name>taken</name><bridge name='virbr7'/>"
                       "<ip address='10.30.0.1' prefix='24'/></network>")
out["overlap_host"] = attempt("<network><name>ov</name><forward/><ip address='10.20.0.1' prefix='24'>"
                              "<dhcp><range start='10.20.0.2' end='10.20.0.3'/></dhcp></ip></network>")
# dnsmasq cannot bind DHCP's port: something here holds it
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
s.bind(("0.0.0.0", 67))
out["dnsmasq"] = attempt("<network><name>dm</name><forward/><ip address='10.40.0.1' prefix='24'>"
                         "<dhcp><range start='10.40.0.2' end='10.40.0.9'/></dhcp></ip></network>")
s.close()
out["after_failures"] = snapshot(root)
out["before"] = before
out["status"] = sorted(p.name for p in (root / "run" / "network").iterdir())
out["dnsmasq_files"] = sorted(p.name for p in (root / "lib" / "dnsmasq").iterdir())
# an overlap with a running network
ok = conn.networkCreateXML("<network><name>a</name><ip address='10.50.0.1' prefix='24'/></network>")
out["overlap_net"] = attempt("<network><name>b</name><ip address='10.50.0.1' prefix='16'/></network>")
ok.destroy()
out["end"] = snapshot(root)
out["listed"] = sorted((n.name(), n.isActive()) for n in conn.listAllNetworks())
conn.close()
""")
    code, domain, text = out["taken"]
    assert "virbr7" in text and "another <bridge name" in text
    code, domain, text = out["overlap_host"]
    assert "already in use by interface dummy8" in text and "choose another address range" in text
    code, domain, text = out["dnsmasq"]
    assert text.startswith("internal error: dnsmasq failed to start"), text
    assert "Address already in use" in text  # dnsmasq's own stderr
    assert domain == 19
    assert out["after_failures"] == out["before"]
    assert out["status"] == ["autostarted"]
    assert out["dnsmasq_files"] in ([], ["default.leases"])
    code, domain, text = out["overlap_net"]
    assert "overlaps network 10.50.0.0/24 of running network 'a'" in text
    assert out["end"] == out["before"]
    assert out["listed"] == [["b", 0], ["default", 0], ["dm", 0], ["ov", 0], ["taken", 0]]


def test_session_instance_refuses_networks_and_taps_and_offers_user_networking(tmp_path: Path) -> None:
    out = run(rf"""
from pyvirt.testing import guest as tg
g = tg.build()  # from the shared cache, before the session's XDG directories move it
os.environ.update(HOME="{tmp_path}", XDG_CONFIG_HOME="{tmp_path}/c", XDG_CACHE_HOME="{tmp_path}/k",
                  XDG_RUNTIME_DIR="{tmp_path}/r")
before = snapshot(root)
conn = pyvirt.open("qemu:///session")
try:
    conn.networkCreateXML("<network><name>s</name><ip address='10.60.0.1' prefix='24'/></network>")
except PyvirtError as e:
    out["create"] = [e.get_error_code(), str(e)]
out["listed"] = [n.name() for n in conn.listAllNetworks()]
from lifecycle_support import domain_xml
xml = domain_xml("s1", g, root / "serial", extra_devices="<interface type='bridge'>"
                 "<source bridge='br0'/></interface>")
try:
    conn.createXML(xml)
except PyvirtError as e:
    out["bridge"] = str(e)
out["after"] = snapshot(root)
out["before"] = before
out["class"] = type(conn).__name__
conn.close()
from session_support import stop_session_daemons  # the session pyvirtd the open started
out["daemons"] = len(stop_session_daemons(Path("{tmp_path}/r")))
out["sockets"] = [str(p) for p in Path("{tmp_path}/r").rglob("*sock*")]
""")
    assert out["class"] == "RemoteConnect" and out["daemons"] == 1 and out["sockets"] == []
    code, text = out["create"]
    assert code == 55 and "<interface type='user'>" in text and "privileged" in text
    assert out["listed"] == []  # no 'default' network for the session instance
    assert "<interface type='user'>" in out["bridge"]
    assert out["after"] == out["before"]


PAUSED = 1  # VIR_DOMAIN_START_PAUSED


def test_tap_devices_join_the_bridge_and_vanish_at_stop(guest: Any) -> None:
    out = run(rf"""
from pyvirt.testing import guest as tg
from lifecycle_support import domain_xml
conn = pyvirt.open(f"qemu:///embed?root={{root}}")
conn.networkLookupByName("default")
sh("ip link add br0 type bridge && ip link set br0 up")
nics = ("<interface type='network'><mac address='52:54:00:00:00:11'/><source network='default'/>"
        "<model type='virtio'/></interface>"
        "<interface type='bridge'><mac address='52:54:00:00:00:12'/><source bridge='br0'/>"
        "<model type='e1000'/></interface>")
before = links()
dom = conn.createXML(domain_xml("t1", tg.build(), root / "serial", extra_devices=nics), {PAUSED})
out["during"] = sorted(set(links()) - set(before))
out["masters"] = {{l["ifname"]: [l.get("master"), l.get("address")] for l in json.loads(sh("ip -j link show"))
                   if l["ifname"].startswith("vnet")}}
out["xml"] = dom.XMLDesc()
out["cmdline"] = [open(f"/proc/{{p}}/cmdline").read() for p in os.listdir("/proc") if p.isdigit()
                  and open(f"/proc/{{p}}/cmdline").read().startswith("/usr/bin/qemu-system")
                  and "guest=t1," in open(f"/proc/{{p}}/cmdline").read()][0]
dom.destroy()
time.sleep(0.2)
out["after"] = sorted(set(links()) - set(before))
try:
    conn.createXML(domain_xml("t2", tg.build(), root / "serial", extra_devices=nics.replace("br0", "nobr")))
except PyvirtError as e:
    out["nobr"] = str(e)
conn.networkLookupByName("default").destroy()
try:
    conn.createXML(domain_xml("t3", tg.build(), root / "serial", extra_devices=nics))
except PyvirtError as e:
    out["inactive"] = str(e)
out["left"] = sorted(set(links()) - set(before))
conn.close()
""")
    assert out["during"] == ["vnet0", "vnet1"]
    assert out["masters"] == {"vnet0": ["virbr0", "fe:54:00:00:00:11"], "vnet1": ["br0", "fe:54:00:00:00:12"]}
    assert "<source network='default' bridge='virbr0'/>" in out["xml"]
    assert '"type":"tap","fd":"' in out["cmdline"].replace("\0", " ")
    assert out["after"] == []
    assert "Cannot get interface MTU on 'nobr': No such device" in out["nobr"]
    assert out["inactive"] == "Requested operation is not valid: network 'default' is not active"
    assert out["left"] == []


@pytest.mark.slow
def test_guest_gets_a_dhcp_lease_that_dhcpleases_reports(guest: Any) -> None:
    out = run(r"""
import dataclasses, re
from pyvirt.testing import guest as tg
from lifecycle_support import domain_xml, wait_for, serial_has
g = tg.build()
g = dataclasses.replace(g, cmdline=g.cmdline + " pyvirt.dhcp=eth0")
conn = pyvirt.open(f"qemu:///embed?root={root}")
net = conn.networkLookupByName("default")
# a static host: dnsmasq's hosts file gives this MAC its address and name
static = "<host mac='52:54:00:12:34:56' name='guest1' ip='192.168.122.50'/>"
xml = net.XMLDesc().replace("</dhcp>", static + "</dhcp>")
net.destroy()
net = conn.networkDefineXML(xml)
net.create()
out["conf"] = (root / "lib" / "dnsmasq" / "default.conf").read_text()
serial = root / "serial.log"
dom = conn.createXML(domain_xml("g1", g, serial, extra_devices=(
    "<interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/>"
    "<model type='e1000'/></interface>")))
try:
    wait_for(lambda: serial_has(serial, "PYVIRT-DHCP eth0 "), 90, "the guest's DHCP lease")
    out["guest_ip"] = re.search(r"PYVIRT-DHCP eth0 (\S+)", serial.read_text()).group(1)
    out["leases"] = net.DHCPLeases()
    out["by_mac"] = net.DHCPLeases("52:54:00:12:34:56")
    out["other_mac"] = net.DHCPLeases("52:54:00:99:99:99")
    import io
    from pyvirt.cli import pyvirsh
    buf = io.StringIO()  # in this process: it holds the instance
    pyvirsh.main(["-c", f"qemu:///embed?root={root}", "net-dhcp-leases", "default"], out=buf, err=buf)
    out["virsh"] = buf.getvalue()
finally:
    dom.destroy()
net.destroy()
conn.close()
""", timeout=180)
    ip = out["guest_ip"]
    assert ip == "192.168.122.50"
    assert "dhcp-host=52:54:00:12:34:56,guest1,192.168.122.50\n" in out["conf"]
    [lease] = out["leases"]
    assert lease["hostname"] == "guest1"
    assert lease["mac"] == "52:54:00:12:34:56" and lease["ipaddr"] == ip and lease["prefix"] == 24
    assert lease["iface"] == "virbr0" and lease["type"] == 0
    assert out["by_mac"] == out["leases"] and out["other_mac"] == []
    assert f"52:54:00:12:34:56   ipv4       {ip}/24" in out["virsh"]


CORPUS = Path(__file__).parents[1] / "data" / "domain"


@pytest.mark.slow
@pytest.mark.parametrize(("example", "name", "paths"), [
    ("drvqemu-example-qemu", "QEmu-fedora-i686", ["/home/user/boot.iso", "/home/user/fedora.img"]),
    ("drvqemu-example-kvm", "demo2", ["/var/lib/libvirt/images/demo2.img"]),
])
def test_reference_examples_start_on_the_default_network(example: str, name: str, paths: list[str]) -> None:
    """The QEMU driver page's examples as written (network='default'), with only their host paths
    changed and the kvm one run as type='qemu' (KVM cannot run guests on this host: see
    test_reference_examples.py): through pyvirsh, the default network is defined and started by the
    first use of the network API (as a package installs libvirt's; a domain start alone does not
    make it), and each NIC becomes a tap on virbr0."""
    xml = (CORPUS / f"{example}.xml").read_text().replace("<domain type='kvm'", "<domain type='qemu'")
    out = run(rf"""
import io
from pyvirt.cli import pyvirsh
xml = {xml!r}
for path in {paths!r}:
    image = root / Path(path).name
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
    xml = xml.replace(path, str(image))
(root / "dom.xml").write_text(xml)
uri = f"qemu:///embed?root={{root}}"
def virsh(*argv):
    o, e = io.StringIO(), io.StringIO()
    rc = pyvirsh.main(["-c", uri, *argv], out=o, err=e)
    return [rc, o.getvalue(), e.getvalue()]
out["define"] = virsh("define", str(root / "dom.xml"))
out["nets"] = virsh("net-list", "--all")  # the network API's first use: 'default' is made and started
out["start"] = virsh("start", {name!r})
out["state"] = virsh("domstate", "--reason", {name!r})
out["taps"] = {{l["ifname"]: l.get("master") for l in json.loads(sh("ip -j link show"))
               if l["ifname"].startswith("vnet")}}
out["mac"] = [l.get("address") for l in json.loads(sh("ip -j link show")) if l["ifname"] == "vnet0"]
out["destroy"] = virsh("destroy", {name!r})
time.sleep(0.2)
out["after"] = [l["ifname"] for l in json.loads(sh("ip -j link show")) if l["ifname"].startswith("vnet")]
out["net"] = virsh("net-destroy", "default")
""")
    assert out["nets"][1].splitlines()[2].split() == ["default", "active", "yes", "yes"]
    assert out["start"] == [0, f"Domain '{name}' started\n\n", ""], out["start"]
    assert out["state"][1] == "running (booted)\n\n"
    assert out["taps"] == {"vnet0": "virbr0"}
    assert out["mac"] == ["fe:" + {"demo2": "42:53:21:52:45"}.get(name, "54:00:6a:11:01")]
    assert out["destroy"][0] == 0 and out["after"] == []
    assert out["net"] == [0, "Network default destroyed\n\n", ""]


def test_a_running_network_is_found_again_and_stopped_by_another_process() -> None:
    """Each pyvirsh run is a process of its own: the second finds the network the first started
    (its status file) and the third removes exactly what the first made."""
    out = run(r"""
def pyvirsh(*argv):
    p = subprocess.run([sys.executable, "-m", "pyvirt.cli.pyvirsh", "-c", f"qemu:///embed?root={root}",
                        *argv],
                       capture_output=True, text=True)
    return [p.returncode, p.stdout, p.stderr]
before = snapshot(root)
out["list"] = pyvirsh("net-list", "--all")
during = snapshot(root)
out["info"] = pyvirsh("net-info", "default")
out["destroy"] = pyvirsh("net-destroy", "default")
out["again"] = pyvirsh("net-destroy", "default")
out["before"], out["during"], out["after"] = before, during, snapshot(root)
""")
    assert out["list"][1].splitlines()[2].split() == ["default", "active", "yes", "yes"]
    assert "virbr0" in out["during"]["links"] and len(out["during"]["dnsmasq"]) == 1
    assert "Active:         yes" in out["info"][1]
    assert out["destroy"] == [0, "Network default destroyed\n\n", ""]
    assert out["again"][2] == ("error: Failed to destroy network default\n"
                               "error: Requested operation is not valid: network 'default' is not active\n")
    assert out["after"] == out["before"]
