# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver's checks of a domain definition (libvirt's qemu_validate.c and the generic
checks libvirt makes on define)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pyvirt.errors import ConfigUnsupported, XMLError

if TYPE_CHECKING:
    from pyvirt.qemu.postparse import PostParseContext
    from pyvirt.xml.base import XMLObject
    from pyvirt.xml.domain import Domain

__all__ = ["validate_domain", "check_define_conflicts"]


def validate_domain(dom: Domain, ctx: PostParseContext) -> None:
    """Reject what the QEMU driver cannot run; every error names the element and the reason."""
    if dom.type not in ("qemu", "kvm"):
        raise XMLError(f"domain type '{dom.type}' is not supported by the QEMU driver: use 'qemu' or 'kvm'")
    if dom.os is not None and dom.os.type is not None and dom.os.type.value not in (None, "hvm"):
        raise XMLError(f"OS type '{dom.os.type.value}' in <os><type> is not supported: QEMU runs 'hvm'")
    if not dom.memory:
        raise XMLError("<memory> must be larger than 0 KiB")
    if dom.max_memory is not None and dom.memory and dom.max_memory < dom.memory:
        raise XMLError("<maxMemory> must be at least <memory>")
    arch = dom.os.type.arch if dom.os is not None and dom.os.type is not None else None
    if arch is not None and arch not in (ctx.arch, *ctx.emulators):
        raise XMLError(f"architecture '{arch}' in <os><type arch=...> is not supported by this emulator "
                       f"(supported: {', '.join((ctx.arch, *ctx.emulators))})")
    _validate_vcpus(dom, ctx)
    _validate_lifecycle(dom)
    _validate_devices(dom)
    _validate_device_sources(dom)


def _validate_lifecycle(dom: Domain) -> None:
    # libvirt's texts (qemu_validate.c), each with what to use instead.
    for name in ("on_poweroff", "on_reboot"):
        if getattr(dom, name) == "preserve":
            raise ConfigUnsupported(f"unsupported configuration: qemu driver doesn't support the 'preserve' "
                                    f"action for 'on_reboot'/'on_poweroff' (in <{name}>); use 'destroy' or "
                                    "'restart'")
    for name in ("on_poweroff", "on_reboot", "on_crash"):
        if getattr(dom, name) == "rename-restart":
            raise ConfigUnsupported(f"unsupported configuration: qemu driver doesn't support the "
                                    f"'rename-restart' action for 'on_reboot'/'on_poweroff'/'on_crash' (in "
                                    f"<{name}>); use 'restart'")
    if dom.on_reboot == "destroy" and dom.on_poweroff == "restart":
        raise ConfigUnsupported("unsupported configuration: <on_reboot>destroy</on_reboot> with "
                                "<on_poweroff>restart</on_poweroff> is not supported by the QEMU driver; "
                                "use <on_reboot>restart</on_reboot> or <on_poweroff>destroy</on_poweroff>")


def _validate_vcpus(dom: Domain, ctx: PostParseContext) -> None:
    vcpu = dom.vcpu
    if vcpu is None or vcpu.count is None:
        return
    if vcpu.count == 0:
        raise XMLError("<vcpu> must be at least 1: a domain needs a virtual CPU")
    if vcpu.current is not None and vcpu.current > vcpu.count:
        raise XMLError(f"<vcpu current='{vcpu.current}'> is more than the maximum {vcpu.count}")
    machine = dom.os.type.machine if dom.os and dom.os.type else None
    limit = ctx.max_cpus.get(machine or "")
    if limit is not None and vcpu.count > limit:
        raise XMLError(f"<vcpu> {vcpu.count} is more than machine type '{machine}' allows ({limit})")
    topo = dom.cpu.topology if dom.cpu is not None else None
    if topo is not None and None not in (topo.sockets, topo.cores, topo.threads):
        total = (topo.sockets or 1) * (topo.dies or 1) * (topo.cores or 1) * (topo.threads or 1)
        if total != vcpu.count:
            raise XMLError(f"CPU topology in <cpu><topology> gives {total} vCPUs but <vcpu> is {vcpu.count}")


def _validate_devices(dom: Domain) -> None:
    devs = dom.devices
    if devs is None:
        return
    seen: dict[str, int] = {}
    for i, disk in enumerate(devs.disks, 1):
        dev = disk.target.dev if disk.target else None
        if dev is None:
            continue
        if dev in seen:
            raise XMLError(f"disk target '{dev}' is used twice (disks {seen[dev]} and {i} in <devices>): "
                           "each disk needs its own <target dev=...>")
        seen[dev] = i
        bus = disk.target.bus if disk.target else None
        if disk.readonly and disk.device == "disk" and bus in ("ide", "sata"):
            raise XMLError(f"disk '{dev}': read-only {bus} disks are not supported; use a cdrom or "
                           "another bus")
        if disk.wwn is not None and bus not in ("ide", "scsi"):
            raise XMLError(f"disk '{dev}': only ide and scsi disks can have a <wwn>")
    macs: dict[str, int] = {}
    for i, net in enumerate(devs.interfaces, 1):
        mac = net.mac.address if net.mac else None
        if mac is None:
            continue
        if mac in macs:
            raise XMLError(f"MAC address '{mac}' is used by interfaces {macs[mac]} and {i}")
        macs[mac] = i
    for g in devs.graphics:
        for name in ("port", "tls_port", "websocket"):
            val = getattr(g, name)
            if val is not None and not (val == -1 or 0 <= val <= 65535):
                raise XMLError(f"<graphics type='{g.type}'> {name} {val} is out of range "
                               "(0-65535, or -1 for automatic)")


def check_define_conflicts(new: Domain, existing: Iterable[Domain]) -> None:
    """Refuse a definition whose name or UUID belongs to another defined domain.

    Redefining a domain (same name and same UUID) is an update, not a conflict.
    """
    for dom in existing:
        if dom.name == new.name and dom.uuid != new.uuid:
            raise XMLError(f"domain '{new.name}' is already defined with UUID {dom.uuid}: "
                           "use that UUID to update it, or choose another name")
        if dom.uuid == new.uuid and dom.name != new.name:
            raise XMLError(f"UUID {new.uuid} already belongs to domain '{dom.name}': "
                           "use another UUID, or leave <uuid> out to have one generated")


def _empty(source: XMLObject | None) -> bool:
    # <source/> with nothing in it says as little as no <source> at all (and is not printed back).
    return source is None or source.to_node() is None


def _validate_device_sources(dom: Domain) -> None:
    """What libvirt requires of devices beyond its schema: sources, backends, known drive names."""
    from pyvirt.qemu.postparse import disk_name_to_index

    devs = dom.devices
    if devs is None:
        return
    for disk in devs.disks:
        dev = disk.target.dev if disk.target is not None else None
        if dev is not None and disk.address is None and disk_name_to_index(dev) < 0:
            raise XMLError(f"disk target '{dev}' is not a drive name (like vda, sdb, hdc): libvirt cannot "
                           "derive its address; give an <address> or a name such as 'vda'")
        if disk.device in (None, "disk", "lun") and _empty(disk.source) and disk.type != "network":
            raise XMLError(f"disk '{dev}' has no <source>: only cdrom and floppy drives may be empty")
        iothread = disk.driver.iothread if disk.driver is not None else None
        if iothread is not None and iothread > (dom.iothreads or 0) and not (
                dom.iothreadids is not None and any(t.id == iothread for t in dom.iothreadids.iothreads)):
            raise XMLError(f"disk '{dev}' uses iothread {iothread}, which <iothreads> does not define")
    for fs in devs.filesystems:
        if _empty(fs.source):
            where = fs.target.dir if fs.target is not None else "?"
            raise XMLError(f"filesystem '{where}' has no <source>")
    for hd in devs.hostdevs:
        if _empty(hd.source):
            raise XMLError(f"<hostdev type='{hd.type}'> has no <source>: say which host device to assign")
    for tpm in devs.tpms:
        if tpm.backend is None:
            raise XMLError("<tpm> has no <backend>: use <backend type='emulator'/> or 'passthrough'")
    for net in devs.interfaces:
        if net.type in ("bridge", "network", "direct") and _empty(net.source):
            raise XMLError(f"<interface type='{net.type}'> requires a <source> element")
    seen: set[tuple[str | None, int | None]] = set()
    for ctrl in devs.controllers:
        key = (ctrl.type, ctrl.index)
        if ctrl.type != "usb" and key in seen:
            raise XMLError(f"two <controller type='{ctrl.type}'> have index {ctrl.index}")
        seen.add(key)
