# SPDX-License-Identifier: LGPL-2.1-or-later
"""The live XML of domains running on real QEMU: the taps of network/bridge interfaces (in a network
namespace of their own, tests/network_oracle.py), volume disks, device aliases. What libvirt 9.0
shows for the same domain is checked in tests/compat/test_live_xml_compat.py and
tests/daemon/test_domains.py; these check the behaviour around it (definitions, reconnecting
processes, queries by disk path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lifecycle_support import domain_xml
from network_oracle import in_netns

from pyvirt.connection import open as open_conn

VIR_DOMAIN_START_PAUSED = 1
VIR_DOMAIN_XML_INACTIVE = 2

_NETNS_SCRIPT = r"""
import json, shutil, subprocess, tempfile
from pathlib import Path
import pyvirt
from pyvirt.testing import guest as tg
from lifecycle_support import domain_xml

root = Path(tempfile.mkdtemp(prefix="pvl-", dir="/tmp"))
out = {}
try:
    subprocess.run("ip link add br0 type bridge && ip link set br0 up", shell=True, check=True)
    conn = pyvirt.open(f"qemu:///embed?root={root}")
    conn.networkLookupByName("default")
    nics = ("<interface type='network'><mac address='52:54:00:00:00:21'/><source network='default'/>"
            "<target dev='vnet7'/><model type='virtio'/></interface>"
            "<interface type='bridge'><mac address='52:54:00:00:00:22'/><source bridge='br0'/>"
            "<model type='e1000'/></interface>")
    dom = conn.defineXML(domain_xml("n1", tg.build(), root / "serial", extra_devices=nics))
    out["defined"] = dom.XMLDesc(2)
    dom.createWithFlags(1)
    out["live"] = dom.XMLDesc(0)
    out["inactive_running"] = dom.XMLDesc(2)
    # another process of the same root reads the live XML back from the status file
    conn.close()
    other = subprocess.run([sys.executable, "-c",
        "import sys, pyvirt; c = pyvirt.open(sys.argv[1]); print(c.lookupByName('n1').XMLDesc(0)); c.close()",
        f"qemu:///embed?root={root}"], capture_output=True, text=True)
    out["other"] = other.stdout or other.stderr
    conn = pyvirt.open(f"qemu:///embed?root={root}")
    dom = conn.lookupByName("n1")
    t = conn.createXML(domain_xml("n2", tg.build(), root / "serial2", extra_devices=nics), 1)
    out["transient_live"] = t.XMLDesc(0)
    out["transient_inactive"] = t.XMLDesc(2)
    t.destroy()
    dom.destroy()
    out["after"] = dom.XMLDesc(0)
    dom.undefine()
    conn.networkLookupByName("default").destroy()
    conn.close()
finally:
    shutil.rmtree(root, ignore_errors=True)
print(json.dumps(out))
"""


def test_live_xml_shows_the_taps_definitions_do_not(guest: Any) -> None:
    out = in_netns("import sys\n" + _NETNS_SCRIPT)
    # a user-given name with libvirt's generated prefix is dropped at define, as libvirt does
    assert "vnet" not in out["defined"]
    live = out["live"]
    assert "<source network='default' bridge='virbr0'/>\n      <target dev='vnet0'/>" in live
    assert "<source bridge='br0'/>\n      <target dev='vnet1'/>" in live
    assert "<alias name='net0'/>" in live and "<alias name='net1'/>" in live
    assert out["other"].rstrip("\n") == live.rstrip("\n")
    for inactive in (out["inactive_running"], out["after"]):
        assert "vnet" not in inactive and "<alias" not in inactive
    assert "<target dev='vnet2'/>" in out["transient_live"]
    # libvirt formats a transient domain's inactive XML without the generated names
    assert "vnet" not in out["transient_inactive"]


def test_volume_disk_stays_a_volume_in_the_live_xml(root: Path, guest: Any) -> None:
    pool = root.parent / "lxpool"
    conn = open_conn(f"qemu:///embed?root={root}")
    try:
        p = conn.storagePoolDefineXML(f"<pool type='dir'><name>p</name><target><path>{pool}</path>"
                                      "</target></pool>")
        p.build()
        p.create()
        p.createXML("<volume><name>d.raw</name><capacity unit='M'>2</capacity>"
                    "<target><format type='raw'/></target></volume>")
        disk = ("<disk type='volume' device='disk'><driver name='qemu' type='raw'/>"
                "<source pool='p' volume='d.raw'/><target dev='vda' bus='virtio'/></disk>")
        dom = conn.defineXML(domain_xml("v1", guest, root.parent / "serial", extra_devices=disk))
        dom.createWithFlags(VIR_DOMAIN_START_PAUSED)
        try:
            live = dom.XMLDesc(0)
            assert "<disk type='volume' device='disk'>" in live
            assert "<source pool='p' volume='d.raw'/>" in live and str(pool) not in live
            assert "<alias name='virtio-disk0'/>" in live
            # QEMU got the volume's file; the queries still find the disk by target and by path
            assert dom.blockInfo("vda")[0] == 2 * 1024 * 1024
            assert dom.blockInfo(str(pool / "d.raw"))[0] == 2 * 1024 * 1024
            assert len(dom.blockStats("vda")) == 5
            assert "guest=v1," in _qemu_cmdline(f'"filename":"{pool}/d.raw"')
        finally:
            dom.destroy()
        assert dom.XMLDesc(VIR_DOMAIN_XML_INACTIVE) == dom.XMLDesc(0)
        dom.undefine()
        p.destroy()
    finally:
        conn.close()


def _qemu_cmdline(marker: str) -> str:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            text = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
        except OSError:
            continue
        if text.startswith("/usr/bin/qemu-system") and marker in text:
            return text
    raise AssertionError(f"no QEMU of {marker} runs")

