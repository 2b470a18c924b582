# SPDX-License-Identifier: LGPL-2.1-or-later
"""The live XML of a domain QEMU was started for: what libvirt 9.0's ``virsh dumpxml`` of a running
domain shows beyond its definition.

:func:`status_xml` turns the copy of the definition a start worked on (``live`` in
:func:`pyvirt.qemu.process.start`: id, taps, VNC port, labels filled in, volume disks resolved to
their files) into the XML kept in the status file and shown by ``dumpxml``:

* ``<resource><partition>/machine</partition></resource>`` when QEMU runs in a cgroup;
* every device gets its alias, named as libvirt's qemuAssignDeviceAliases names them (they are
  the ``id=`` of the devices on QEMU's command line); user aliases (``ua-``) stay;
* ``<disk type='volume'>`` stays a volume disk (``<source pool=... volume=.../>``): libvirt
  resolves the volume for QEMU and keeps the definition's form in the live XML;
* taps' names (``<target dev='vnetN'/>``) stay: :meth:`pyvirt.qemu.domains.DomainStore.parse_live`
  reads it back without dropping them, where a definition does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.xml.domain import Domain
    from pyvirt.xml.domain_devices import DiskSource

__all__ = ["VolumeDisk", "volume_disks", "status_xml", "assign_device_aliases", "resolved_live"]


@dataclass
class VolumeDisk:
    """A ``<disk type='volume'>`` as the definition gave it, before its volume was resolved."""

    index: int  #: its position in <devices>' disks
    type: str
    source: DiskSource


def volume_disks(dom: Domain) -> list[VolumeDisk]:
    """The volume disks of ``dom``, to be put back into the live XML after they were resolved."""
    disks = dom.devices.disks if dom.devices is not None else []
    return [VolumeDisk(i, d.type or "volume", copy.deepcopy(d.source))
            for i, d in enumerate(disks) if d.type == "volume" and d.source is not None]


def status_xml(live: Domain, volumes: list[VolumeDisk], *, cgroups: bool = False) -> str:
    """The live XML of the domain ``live`` runs (see the module's doc); ``live`` is not changed.

    ``cgroups``: QEMU runs in a control group of this (privileged) instance, in the partition
    libvirt's qemuInitCgroup names ``/machine`` when the definition gives none.
    """
    from pyvirt.xml.domain import Resource

    out = copy.deepcopy(live)
    if cgroups and out.resource is None:
        out.resource = Resource(partition="/machine")
    disks = out.devices.disks if out.devices is not None else []
    for vol in volumes:
        if vol.index < len(disks):
            disk = disks[vol.index]
            disk.type, disk.source = vol.type, copy.deepcopy(vol.source)
    assign_device_aliases(out)
    return out.to_xml(inactive=False, secure=True)


def resolved_live(driver: QemuDriver, dom: Domain) -> Domain:
    """``dom`` (a live definition read back from its status) with its volume disks resolved to the
    files QEMU has open, for the queries that name disks by path; unchanged when a volume cannot be
    looked up any more (its pool stopped meanwhile)."""
    if not any(d.type == "volume" for d in (dom.devices.disks if dom.devices is not None else [])):
        return dom
    from pyvirt.errors import PyvirtError
    from pyvirt.storage.translate import resolve_volume_disks

    resolved = copy.deepcopy(dom)
    try:
        resolve_volume_disks(driver, resolved)
    except PyvirtError:
        return dom
    return resolved


# --- aliases (libvirt's qemu_alias.c) -------------------------------------------------------------

def _index(alias: str | None, prefix: str) -> int:
    """The number after ``prefix`` in ``alias`` (qemuDomainDeviceAliasIndex); -1 if none."""
    if alias is None or not alias.startswith(prefix):
        return -1
    rest = alias[len(prefix):]
    return int(rest) if rest.isdigit() else -1


def _alias_of(dev: object) -> str | None:
    alias = getattr(dev, "alias", None)
    return alias.name if alias is not None else None


def _set(dev: object, name: str) -> None:
    from pyvirt.xml.domain_devices import Alias

    if _alias_of(dev) is None:
        dev.alias = Alias(name=name)  # type: ignore[attr-defined]


def _next(devs: list[object], prefix: str) -> int:
    return max((_index(_alias_of(d), prefix) + 1 for d in devs), default=0)


def assign_device_aliases(dom: Domain) -> None:
    """Give every device of ``dom`` without an alias libvirt's (qemuAssignDeviceAliases)."""
    from pyvirt.qemu.domain_address import is_q35
    from pyvirt.qemu.postparse import disk_name_to_index

    devs = dom.devices
    if devs is None:
        return
    q35 = is_q35(dom)
    machine = dom.os.type.machine if dom.os is not None and dom.os.type is not None else None
    builtin_ide = not q35 and machine is not None and machine.startswith("pc")
    for disk in devs.disks:
        tgt, a = disk.target, disk.address
        bus = (tgt.bus if tgt is not None else None) or "ide"
        if a is not None and a.type == "drive":
            model = next((c.model for c in devs.controllers
                          if c.type == "scsi" and (c.index or 0) == (a.controller or 0)), None)
            if bus != "scsi" or model == "lsilogic":
                _set(disk, f"{bus}{a.controller or 0}-{a.bus or 0}-{a.unit or 0}")
            else:
                _set(disk, f"{bus}{a.controller or 0}-{a.bus or 0}-{a.target or 0}-{a.unit or 0}")
        else:
            _set(disk, f"{bus}-disk{disk_name_to_index(tgt.dev or '') if tgt is not None else -1}")
    for net in devs.interfaces:
        if net.type == "hostdev":
            _set(net, f"hostdev{_next([*devs.hostdevs, *devs.interfaces], 'hostdev')}")
        else:
            _set(net, f"net{_next(list(devs.interfaces), 'net')}")
    for fs in devs.filesystems:
        _set(fs, f"fs{_next(list(devs.filesystems), 'fs')}")
    for i, sound in enumerate(devs.sounds):
        _set(sound, f"sound{i}")
    for hostdev in devs.hostdevs:
        _set(hostdev, f"hostdev{_next([*devs.hostdevs, *devs.interfaces], 'hostdev')}")
    for i, redir in enumerate(devs.redirdevs):
        _set(redir, f"redir{i}")
    for i, video in enumerate(devs.videos):
        _set(video, f"video{i}")
    for ctrl in devs.controllers:
        _set(ctrl, _controller_alias(ctrl.type or "ide", ctrl.index or 0, ctrl.model, q35, builtin_ide))
    for i, inp in enumerate(devs.inputs):
        _set(inp, f"input{i}")
    for kind, chrs in (("parallel", devs.parallels), ("serial", devs.serials), ("channel", devs.channels)):
        for i, chr_ in enumerate(chrs):
            _set(chr_, f"{kind}{i}")
    for i, con in enumerate(devs.consoles):
        if i == 0 and devs.serials and con.target is not None and con.target.type == "serial":
            # the first serial console is the first serial port: libvirt shows that port's alias
            _set(con, _alias_of(devs.serials[0]) or "serial0")
        else:
            _set(con, f"console{i}")
    for i, hub in enumerate(devs.hubs):
        _set(hub, f"hub{i}")
    for i, shmem in enumerate(devs.shmems):
        _set(shmem, f"shmem{i}")
    for i, card in enumerate(devs.smartcards):
        _set(card, f"smartcard{i}")
    for i, wd in enumerate(devs.watchdogs):
        _set(wd, f"watchdog{i}")
    if devs.memballoon is not None and devs.memballoon.model != "none":
        _set(devs.memballoon, "balloon0")
    for rng in devs.rngs:
        _set(rng, f"rng{_next(list(devs.rngs), 'rng')}")
    for i, tpm in enumerate(devs.tpms):
        _set(tpm, f"tpm{i}")
    if devs.vsock is not None:
        _set(devs.vsock, "vsock0")
    if devs.iommu is not None:
        _set(devs.iommu, "iommu0")


def _controller_alias(ctype: str, index: int, model: str | None, q35: bool, builtin_ide: bool) -> str:
    """qemuAssignDeviceControllerAlias: the names QEMU's built-in controllers have, else TYPEINDEX."""
    if ctype == "pci":
        return f"pcie.{index}" if model == "pcie-root" else f"pci.{index}"
    if index == 0:
        if (ctype == "ide" and builtin_ide) or (ctype == "sata" and q35):
            return "ide"
        if ctype == "usb":
            return "usb"
        if ctype == "scsi" and model == "ncr53c90":
            return "scsi"
    return f"{ctype}{index}"
