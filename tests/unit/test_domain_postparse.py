# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver's post-parse defaults, piece by piece (the corpus test compares whole documents)."""

from __future__ import annotations

import pytest

from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig, disk_name_to_index
from pyvirt.xml.domain import Domain, parse_domain

QEMU = QemuDomainConfig(DEFAULT_X86_64_CONTEXT)


def define(devices: str, machine: str = "pc") -> Domain:
    return parse_domain(f"<domain type='kvm'><name>t</name><memory>65536</memory><os>"
                        f"<type machine='{machine}'>hvm</type></os><devices>{devices}</devices></domain>",
                        ctx=QEMU)


@pytest.mark.parametrize(("name", "index"), [("hda", 0), ("hdc", 2), ("sdb", 1), ("vdz", 25), ("vdaa", 26),
                                             ("vdba", 52), ("xvdb", 1), ("fda", 0), ("sda1", 0),
                                             ("vd", -1), ("nope", -1), ("sdA", -1)])
def test_disk_name_to_index(name: str, index: int) -> None:
    assert disk_name_to_index(name) == index


@pytest.mark.parametrize(("dev", "bus", "address"), [
    ("hda", "ide", (0, 0, 0, 0)), ("hdd", "ide", (0, 1, 0, 1)), ("sdi", "scsi", (1, 0, 0, 1)),
    ("fdb", "fdc", (0, 0, 0, 1)), ("vda", "virtio", None)])
def test_bus_and_drive_address_from_target(dev: str, bus: str, address: tuple[int, ...] | None) -> None:
    device = "floppy" if dev.startswith("fd") else "disk"
    xml = f"<disk type='file' device='{device}'><source file='/x'/><target dev='{dev}'/></disk>"
    disk = define(xml).disks[0]
    assert disk.target is not None and disk.target.bus == bus
    assert disk.address is not None
    if address is None:
        assert disk.address.type == "pci"
    else:
        a = disk.address
        assert (a.type, a.controller, a.bus, a.target, a.unit) == ("drive", *address)


def test_machine_alias_resolved_and_controllers_implied() -> None:
    dom = define("<disk type='file'><source file='/x'/><target dev='sda'/></disk>", machine="q35")
    assert dom.os is not None and dom.os.type is not None and dom.os.type.machine == "pc-q35-7.2"
    assert dom.devices is not None
    kinds = [(c.type, c.index, c.model) for c in dom.devices.controllers]
    assert ("usb", 0, "qemu-xhci") in kinds and ("pci", 0, "pcie-root") in kinds
    assert ("scsi", 0, "lsilogic") in kinds and ("sata", 0, None) in kinds
    # the PCI-only lsilogic controller sits behind a pcie-to-pci-bridge
    assert any(m == "pcie-to-pci-bridge" for _, _, m in kinds)


def test_generated_mac_is_qemu_unicast() -> None:
    net = define("<interface type='user'/>").devices.interfaces[0]  # type: ignore[union-attr]
    assert net.mac is not None and net.mac.address is not None
    assert net.mac.address.startswith("52:54:00:")
    assert net.model is not None and net.model.type == "rtl8139"


def test_graphics_bring_video_input_and_audio() -> None:
    dom = define("<graphics type='vnc'/>")
    devs = dom.devices
    assert devs is not None
    assert devs.videos[0].model is not None and devs.videos[0].model.type == "cirrus"
    assert [(i.type, i.bus) for i in devs.inputs] == [("mouse", "ps2"), ("keyboard", "ps2")]
    assert devs.audios[0].type == "none"
    assert devs.graphics[0].port == -1 and devs.graphics[0].autoport is True
    assert devs.memballoon is not None and devs.memballoon.model == "virtio"


def test_pci_slots_on_i440fx_follow_libvirt_order() -> None:
    dom = define("<disk type='file'><source file='/x'/><target dev='vda'/></disk>"
                 "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>")
    devs = dom.devices
    assert devs is not None
    slots = {"net": devs.interfaces[0].address, "disk": devs.disks[0].address,
             "balloon": devs.memballoon.address if devs.memballoon else None}
    # no video: slot 2 (kept for the primary video) is free; nets come before disks, balloon last
    assert {k: a.slot for k, a in slots.items() if a is not None} == {"net": 2, "disk": 3, "balloon": 4}
