# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt.qemu.live_xml and the status parse of live XML: aliases named as the command line's device
ids, volume disks kept as the definition has them, taps' names kept live and dropped from
definitions. What libvirt 9.0 shows is checked against it in tests/compat/test_live_xml_compat.py."""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest

from pyvirt.qemu.domains import DomainStore
from pyvirt.qemu.live_xml import assign_device_aliases, status_xml, volume_disks
from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig
from pyvirt.xml.domain import Domain, parse_domain

sys.path.insert(0, str(Path(__file__).parent))
from test_command_golden import CORPUS, GOLDEN, build, parse  # noqa: E402

QEMU = QemuDomainConfig(DEFAULT_X86_64_CONTEXT)
#: the corpus documents the command builder supports (the others have a golden .err)
BUILT = [p for p in CORPUS if (GOLDEN / f"{p.stem}.args").exists()]


def _aliases(dom: Domain) -> list[tuple[object, str]]:
    devs = dom.devices
    assert devs is not None
    found = []
    for group in (devs.disks, devs.controllers, devs.filesystems, devs.interfaces, devs.smartcards,
                  devs.serials, devs.parallels, devs.channels, devs.consoles, devs.inputs, devs.tpms,
                  devs.sounds, devs.videos, devs.hostdevs, devs.redirdevs, devs.hubs, devs.watchdogs,
                  devs.rngs, devs.shmems, [devs.memballoon, devs.vsock, devs.iommu]):
        for dev in group:
            if dev is not None and dev.alias is not None:
                found.append((dev, str(dev.alias.name)))
    return found


def _built_in(dev: object) -> bool:
    """Devices of the machine itself: QEMU has them without a -device (so no id on the command line)."""
    kind, model = type(dev).__name__, getattr(dev, "model", None)
    if kind == "Controller":
        ctype = getattr(dev, "type", None)
        return (ctype == "pci" and model in ("pci-root", "pcie-root")) or ctype in ("ide", "sata") or \
            (ctype == "usb" and model == "none")
    return kind == "Input" and getattr(dev, "bus", None) == "ps2"


@pytest.mark.parametrize("doc", BUILT, ids=lambda p: p.stem)
def test_aliases_are_the_device_ids_of_the_command_line(doc: Path) -> None:
    dom = parse(doc.read_text())
    argv = " ".join(build(dom).argv)
    ids = set(re.findall(r'"id":"([^"]+)"', argv)) | set(re.findall(r"(?:^|[ ,])id=([^, ]+)", argv))
    assign_device_aliases(dom)
    named = _aliases(dom)
    assert named, "no device got an alias"
    missing = [(type(dev).__name__, alias) for dev, alias in named if alias not in ids and not _built_in(dev)]
    assert not missing


def test_alias_names_follow_libvirt() -> None:
    dom = parse_domain("""<domain type='qemu'><name>a</name><memory>65536</memory>
      <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
      <disk type='file'><source file='/x.img'/><target dev='vdb' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>
      <disk type='file'><source file='/y.img'/><target dev='sda' bus='scsi'/><alias name='ua-mine'/></disk>
      <controller type='scsi' model='virtio-scsi'/>
      <interface type='user'/><interface type='user'/>
      <serial type='pty'/><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
      <console type='pty'><target type='virtio'/></console>
      <video><model type='vga'/></video><rng model='virtio'><backend model='random'/></rng>
      <watchdog model='i6300esb'/></devices></domain>""", ctx=QEMU)
    assign_device_aliases(dom)
    devs = dom.devices
    assert devs is not None
    got = {(type(d).__name__, getattr(d, "type", None)): [] for d, _ in _aliases(dom)}
    for dev, alias in _aliases(dom):
        got[(type(dev).__name__, getattr(dev, "type", None))].append(alias)
    assert [d.alias.name for d in devs.disks if d.alias] == ["virtio-disk1", "ide0-1-0", "ua-mine"]
    assert got[("Interface", "user")] == ["net0", "net1"]
    assert got[("Controller", "scsi")] == ["scsi0"] and got[("Controller", "ide")] == ["ide"]
    assert got[("Controller", "pci")] == ["pci.0"] and got[("Controller", "usb")] == ["usb"]
    assert got[("Controller", "virtio-serial")] == ["virtio-serial0"]
    assert [c.alias.name for c in devs.consoles if c.alias] == ["serial0", "console1"]
    assert [c.alias.name for c in devs.channels if c.alias] == ["channel0"]
    assert got[("Video", None)] == ["video0"] and got[("RNG", None)] == ["rng0"]
    assert got[("Watchdog", None)] == ["watchdog0"] and got[("MemBalloon", None)] == ["balloon0"]
    # only user aliases survive into a definition
    inactive = dom.to_xml(inactive=True)
    assert "<alias name='ua-mine'/>" in inactive and "virtio-disk1" not in inactive


NICS = """<domain type='qemu'><name>n</name><memory>65536</memory><os><type arch='x86_64'>hvm</type></os>
  <devices><interface type='network'><source network='default'/><target dev='vnet3'/></interface>
  <interface type='bridge'><source bridge='br0'/><target dev='macvtap1'/></interface>
  <interface type='ethernet'><target dev='vnet4' managed='no'/></interface>
  <interface type='bridge'><source bridge='br0'/><target dev='mytap'/></interface></devices></domain>"""


def test_a_definition_drops_generated_tap_names_the_live_xml_keeps_them() -> None:
    defined = parse_domain(NICS, ctx=QEMU)
    assert [n.target.dev if n.target else None for n in defined.devices.interfaces] == \
        [None, None, "vnet4", "mytap"]  # a tap not managed by libvirt keeps its name
    live = parse_domain(NICS, ctx=QEMU.for_status())
    assert [n.target.dev if n.target else None for n in live.devices.interfaces] == \
        ["vnet3", "macvtap1", "vnet4", "mytap"]
    assert QEMU.for_status() is QEMU.for_status() and QEMU.for_status().for_status().status


def test_domain_store_parses_live_xml_as_status(tmp_path: Path) -> None:
    store = DomainStore(tmp_path, lambda: QemuDomainConfig(DEFAULT_X86_64_CONTEXT))
    assert "vnet3" in store.parse_live(NICS).to_xml(inactive=False)
    assert "vnet3" not in store.parse(NICS).to_xml(inactive=False)


VOLUME = """<domain type='qemu'><name>v</name><memory>65536</memory><os><type arch='x86_64'>hvm</type></os>
  <devices><disk type='file'><source file='/a.img'/><target dev='vda' bus='virtio'/></disk>
  <disk type='volume'><source pool='p' volume='d.raw'/><target dev='vdb' bus='virtio'/></disk>
  </devices></domain>"""


def test_status_xml_shows_volume_disks_as_defined_and_the_cgroup_partition() -> None:
    dom = parse_domain(VOLUME, ctx=QEMU)
    live = copy.deepcopy(dom)
    volumes = volume_disks(live)
    assert [v.index for v in volumes] == [1]
    # what resolve_volume_disks does to the copy QEMU is started from
    disk = live.devices.disks[1]
    disk.type = "file"
    assert disk.source is not None
    disk.source.pool = disk.source.volume = None
    disk.source.file = "/pool/d.raw"
    xml = status_xml(live, volumes, cgroups=True)
    assert "<disk type='volume' device='disk'>" in xml and "<source pool='p' volume='d.raw'/>" in xml
    assert "/pool/d.raw" not in xml
    assert "<resource>\n    <partition>/machine</partition>\n  </resource>" in xml
    assert "<alias name='virtio-disk1'/>" in xml
    assert live.devices.disks[1].type == "file" and live.devices.disks[0].alias is None  # unchanged
    assert "<resource>" not in status_xml(live, volumes, cgroups=False)
    # a partition of the definition's own stays
    dom.resource = parse_domain(VOLUME.replace("<devices>", "<resource><partition>/t</partition></resource>"
                                               "<devices>"), ctx=QEMU).resource
    assert "<partition>/t</partition>" in status_xml(dom, [], cgroups=True)
