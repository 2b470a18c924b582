# SPDX-License-Identifier: LGPL-2.1-or-later
"""PCI addresses of a domain's devices, as libvirt 9.0's QEMU driver assigns them
(qemuDomainAssignPCIAddresses): the slots devices get and the controllers that must be added."""

from __future__ import annotations

from pyvirt.errors import XMLError
from pyvirt.xml.domain import Devices, Domain
from pyvirt.xml.domain_chardev import Serial
from pyvirt.xml.domain_devices import (
    Address,
    Controller,
    ControllerModelName,
    ControllerTarget,
    Disk,
    Filesystem,
    Hostdev,
    Interface,
)
from pyvirt.xml.domain_peripherals import IOMMU, RNG, Input, MemBalloon, Shmem, Sound, Video, Vsock, Watchdog

__all__ = ["assign_pci_addresses", "is_q35"]


def is_q35(dom: Domain) -> bool:
    m = dom.os.type.machine if dom.os and dom.os.type else None
    return m is not None and "q35" in m


# --- PCI addresses (qemuDomainAssignPCIAddresses) ----------------------------------------------------
#
# Two passes, as libvirt does.  A dry run finds which buses must be added (pcie-root-ports, a
# pcie-to-pci-bridge, pci-bridges), the new controllers are placed, then every device gets a slot.
# On q35 a device is either a PCIe endpoint (one per pcie-root-port) or PCI-only (on a
# pcie-to-pci-bridge); on i440fx everything plugs into the root bus.

PCIE, PCI, ROOT = "pcie", "pci", "root"  # ROOT: an endpoint built into the root bus

_PCI_ONLY_NETS = ("rtl8139", "e1000", "ne2k_pci", "pcnet", "i82551", "i82557b", "i82559er")
_PCIE_CTRL_MODELS = ("qemu-xhci", "nec-xhci", "virtio-scsi", "virtio", "virtio-non-transitional")


_ACCEPTS: dict[str, frozenset[str]] = {
    "pci-root": frozenset({PCI, PCIE, ROOT, "pci-bridge"}),
    "pcie-root": frozenset({"root-port", ROOT}),
    "pcie-root-port": frozenset({PCIE, "pcie-to-pci-bridge"}),
    "pcie-switch-downstream-port": frozenset({PCIE, "pcie-to-pci-bridge"}),
    "pci-bridge": frozenset({PCI, "pci-bridge"}),
    "pcie-to-pci-bridge": frozenset({PCI, "pci-bridge"}),
}


# Buses added for one device at most (a root port and a bridge); more means no bus can take it.
_MAX_NEW_BUSES = 3


class _Bus:
    def __init__(self, index: int, model: str) -> None:
        self.index = index
        self.model = model
        self.used: dict[int, set[int]] = {}
        self.aggregate: set[int] = set()  # slots whose functions hold auto-added root ports
        self.kinds = _ACCEPTS.get(model, frozenset())
        one_slot = model in ("pcie-root-port", "pcie-switch-downstream-port")
        self.slots = range(0, 1) if one_slot else range(1, 32)
        self.full = False  # every slot has a device (aggregated slots may still have functions)

    def accepts(self, kind: str) -> bool:
        return kind in self.kinds

    def free_slot(self, aggregate: bool = False) -> tuple[int, int] | None:
        if self.full and not (aggregate and self.aggregate):
            return None
        for slot in self.slots:
            funcs = self.used.get(slot)
            if not funcs:
                return slot, 0
            if aggregate and slot in self.aggregate and len(funcs) < 8:
                return slot, min(set(range(8)) - funcs)
        return None

    def take(self, slot: int, function: int, aggregate: bool = False) -> None:
        self.used.setdefault(slot, set()).add(function)
        if aggregate:
            self.aggregate.add(slot)
        if len(self.used) == len(self.slots) and all(s in self.used for s in self.slots):
            self.full = True


def _pci_class(dom: Domain, dev: object, q35: bool) -> str | None:
    """Whether a device wants a PCI slot, and of which kind (PCIe endpoint or PCI-only)."""
    kind = _device_kind(dev, q35)
    if kind == PCIE and not q35:
        return PCI  # a machine without PCIe has every device on conventional PCI buses
    return kind


def _device_kind(dev: object, q35: bool) -> str | None:
    virtio_kind = PCI if getattr(dev, "model", None) == "virtio-transitional" else PCIE
    if isinstance(dev, Controller):
        if dev.type == "pci" or dev.type in ("fdc", "ccid") or (dev.type == "usb" and dev.model == "none"):
            return None
        if dev.type == "ide" and dev.index == 0:
            return None
        if dev.type == "scsi" and dev.model == "ncr53c90":
            return None
        if dev.type == "usb" and dev.model == "piix3-uhci" and not q35 and dev.index == 0:
            return None  # chipset slot 1
        if dev.type == "sata" and q35 and dev.index == 0:
            return None  # chipset slot 0x1f
        return PCIE if (dev.model in _PCIE_CTRL_MODELS or dev.type == "virtio-serial") else PCI
    if isinstance(dev, Interface):
        if dev.type == "hostdev":
            return None
        model = dev.model.type if dev.model else None
        return PCI if model in _PCI_ONLY_NETS else PCIE
    if isinstance(dev, Sound):
        if dev.model in ("sb16", "pcspk", "usb"):
            return None
        return PCI if dev.model in ("ich6", "ac97", "es1370") else PCIE
    if isinstance(dev, Disk):
        return virtio_kind if dev.target is not None and dev.target.bus == "virtio" else None
    if isinstance(dev, Hostdev):
        return PCIE if dev.mode in (None, "subsystem") and dev.type in ("pci", "scsi_host", "mdev") else None
    if isinstance(dev, MemBalloon):
        return virtio_kind if dev.model in ("virtio", "virtio-transitional", "virtio-non-transitional") \
            else None
    if isinstance(dev, Watchdog):
        return PCI if dev.model == "i6300esb" else None
    if isinstance(dev, Video):
        t = dev.model.type if dev.model else None
        if t in ("none", "ramfb"):
            return None
        return PCIE if t == "virtio" else PCI
    if isinstance(dev, Input):
        return virtio_kind if dev.bus == "virtio" else None
    if isinstance(dev, Serial):
        return PCI if dev.target is not None and dev.target.type == "pci-serial" else None
    if isinstance(dev, IOMMU):
        return ROOT if dev.model == "virtio" else None
    if isinstance(dev, (RNG, Vsock, Filesystem)):
        return virtio_kind
    if isinstance(dev, Shmem):
        return PCI
    return None


def _pci_devices(dom: Domain) -> list[object]:
    """Devices in the order libvirt gives them slots (qemuDomainAssignDevicePCISlots)."""
    d = dom.devices
    assert d is not None
    out: list[object] = [c for c in d.controllers if c.type == "pci"
                         and c.model not in ("pci-root", "pcie-root")]
    out += d.filesystems
    out += d.interfaces
    out += d.sounds
    out += [c for c in d.controllers if c.type != "pci"]
    out += d.disks
    out += d.hostdevs
    if d.memballoon is not None:
        out.append(d.memballoon)
    out += d.rngs
    out += d.watchdogs
    out += d.videos
    out += d.shmems
    out += d.inputs
    out += d.serials
    if d.iommu is not None:
        out.append(d.iommu)
    if d.vsock is not None:
        out.append(d.vsock)
    return out


def _controller_kind(c: Controller) -> str:
    if c.model == "pcie-root-port" or c.model == "pcie-switch-upstream-port":
        return "root-port" if c.model == "pcie-root-port" else PCIE
    if c.model == "pcie-to-pci-bridge":
        return "pcie-to-pci-bridge"
    if c.model == "pci-bridge":
        return "pci-bridge"
    return PCIE


def _make_buses(dom: Domain) -> list[_Bus]:
    devs = dom.devices
    assert devs is not None
    pcis = sorted((c for c in devs.controllers if c.type == "pci"), key=lambda c: c.index or 0)
    buses = [_Bus(c.index or 0, c.model or "pci-bridge") for c in pcis]
    by_index = {b.index: b for b in buses}
    for dev in _all_devices(devs):
        a = getattr(dev, "address", None)
        if a is not None and a.type == "pci" and a.pci_bus in by_index:
            by_index[a.pci_bus].take(a.slot or 0, a.function or 0)
    if buses and buses[0].model == "pci-root":
        buses[0].take(1, 0)  # PIIX3: ISA, IDE, USB and PM functions
        for f in (1, 2, 3):
            buses[0].take(1, f)
    elif buses and buses[0].model == "pcie-root":
        for f in (0, 2, 3):
            buses[0].take(0x1F, f)  # ICH9: LPC, SATA, SMBus
    return buses


def _all_devices(devs: Devices) -> list[object]:
    out: list[object] = []
    for f in type(devs)._fields:
        v = devs._values.get(f.name)
        if isinstance(v, list):
            out.extend(v)
        elif v is not None and not isinstance(v, str):
            out.append(v)
    return out


def _place(buses: list[_Bus], kind: str) -> tuple[_Bus, int, int] | None:
    aggregate = kind == "root-port"
    for bus in buses:
        if kind in bus.kinds and not (bus.full and not (aggregate and bus.aggregate)):
            free = bus.free_slot(aggregate)
            if free is not None:
                bus.take(*free, aggregate=aggregate)
                return bus, free[0], free[1]
    return None


def _grow(buses: list[_Bus], kind: str, q35: bool) -> None:
    nxt = max(b.index for b in buses) + 1
    if not q35:
        buses.append(_Bus(nxt, "pci-bridge"))
        return
    if kind == PCIE or kind == "pcie-to-pci-bridge":
        buses.append(_Bus(nxt, "pcie-root-port"))
        return
    if not any(b.accepts("pcie-to-pci-bridge") and b.free_slot() for b in buses):
        buses.append(_Bus(nxt, "pcie-root-port"))
        nxt += 1
    bridge = _Bus(nxt, "pcie-to-pci-bridge")
    _place(buses, "pcie-to-pci-bridge")
    buses.append(bridge)


def _primary_video_slot(dom: Domain, buses: list[_Bus], q35: bool) -> None:
    devs = dom.devices
    assert devs is not None
    if not devs.videos or not buses:
        return
    v = devs.videos[0]
    if v.address is not None or _pci_class(dom, v, q35) is None:
        return
    slot = 1 if q35 else 2
    if not buses[0].used.get(slot):
        buses[0].take(slot, 0)
        v.address = Address.pci(0, slot, 0)


def _chipset_addresses(dom: Domain, q35: bool) -> None:
    devs = dom.devices
    assert devs is not None
    for c in devs.controllers:
        if c.address is not None:
            continue
        if not q35 and c.index == 0 and (c.type == "ide" or (c.type == "usb" and c.model == "piix3-uhci")):
            c.address = Address.pci(0, 1, 1 if c.type == "ide" else 2)
        if q35 and c.type == "sata" and c.index == 0:
            c.address = Address.pci(0, 0x1F, 2)
    if q35:
        for snd in devs.sounds:
            if isinstance(snd, Sound) and snd.model == "ich9" and snd.address is None:
                snd.address = Address.pci(0, 0x1B, 0)
                break


def assign_pci_addresses(dom: Domain, *, q35: bool) -> None:
    devs = dom.devices
    assert devs is not None
    _chipset_addresses(dom, q35)
    first = _make_buses(dom)
    if not first:
        return
    _primary_video_slot(dom, first, q35)
    wanted = [d for d in _pci_devices(dom) if getattr(d, "address", None) is None]
    # Pass 1: which buses are missing.
    buses = _make_buses(dom)
    n_user = len(buses)
    if not q35:
        _place(buses, PCI)  # one slot kept for a future pci-bridge
    usb2_groups: set[int] = set()
    for dev in wanted:
        kind = _kind_of(dom, dev, q35)
        if kind is None:
            continue
        if _is_usb2(dev):
            if dev.index in usb2_groups:  # type: ignore[attr-defined]
                continue  # companions share one slot
            usb2_groups.add(dev.index)  # type: ignore[attr-defined]
        for _ in range(_MAX_NEW_BUSES):
            if _place(buses, kind) is not None:
                break
            _grow(buses, kind, q35)
        else:
            raise XMLError(f"no PCI slot can be found for <{type(dev).__name__.lower()}>: "
                           "give the device a PCI address")
    max_user_idx = max(b.index for b in buses[:n_user])
    if q35 and max_user_idx <= 0 and len(buses) > n_user and _place(buses, PCIE) is None:
        _grow(buses, PCIE, q35)
    # The added controllers, placed in index order on a fresh view of the buses.
    for bus in buses[n_user:]:
        ctrl = Controller(type="pci", index=bus.index, model=bus.model)
        devs.controllers.append(ctrl)
    real = _make_buses(dom)
    for ctrl in devs.controllers:
        if ctrl.type != "pci" or ctrl.address is not None or ctrl.model in ("pci-root", "pcie-root"):
            continue
        spot = _place(real, _controller_kind(ctrl))
        if spot is None:
            raise XMLError(f"no free PCI slot for controller pci index {ctrl.index}")
        ctrl.address = Address.pci(spot[0].index, spot[1], spot[2])
    # Pass 2: the devices.
    for dev in wanted:
        if getattr(dev, "address", None) is not None:
            continue
        kind = _kind_of(dom, dev, q35)
        if kind is None:
            continue
        if _is_usb2(dev):
            _place_usb2(dom, dev, real)  # type: ignore[arg-type]
            continue
        spot = _place(real, kind)
        if spot is None:
            raise XMLError(f"no free PCI slot for device <{type(dev).__name__.lower()}>")
        dev.address = Address.pci(spot[0].index, spot[1], spot[2])  # type: ignore[attr-defined]
    _set_multifunction(dom)
    _pci_controller_defaults(dom)


_USB2_FUNCTION = {"ich9-ehci1": 7, "ich9-uhci1": 0, "ich9-uhci2": 1, "ich9-uhci3": 2}


def _is_usb2(dev: object) -> bool:
    return isinstance(dev, Controller) and dev.type == "usb" and dev.model in _USB2_FUNCTION


def _place_usb2(dom: Domain, ctrl: Controller, buses: list[_Bus]) -> None:
    """An EHCI controller and its UHCI companions share one slot, at fixed functions."""
    devs = dom.devices
    assert devs is not None
    func = _USB2_FUNCTION[ctrl.model or ""]
    multi = True if ctrl.model == "ich9-uhci1" else None
    for other in devs.controllers:
        if other is not ctrl and _is_usb2(other) and other.index == ctrl.index and \
                other.address is not None and other.address.type == "pci":
            a = other.address
            ctrl.address = Address.pci(a.pci_bus or 0, a.slot or 0, func, multi)
            for b in buses:
                if b.index == a.pci_bus:
                    b.take(a.slot or 0, func)
            return
    for b in buses:
        if b.accepts(PCI):
            free = b.free_slot()
            if free is not None:
                b.take(free[0], func)
                ctrl.address = Address.pci(b.index, free[0], func, multi)
                return


def _kind_of(dom: Domain, dev: object, q35: bool) -> str | None:
    if isinstance(dev, Controller) and dev.type == "pci":
        return _controller_kind(dev)
    return _pci_class(dom, dev, q35)


def _set_multifunction(dom: Domain) -> None:
    devs = dom.devices
    assert devs is not None
    addrs = [a for a in (getattr(d, "address", None) for d in _all_devices(devs))
             if a is not None and a.type == "pci"]
    slots: dict[tuple[int, int], set[int]] = {}
    for a in addrs:
        slots.setdefault((a.pci_bus, a.slot), set()).add(a.function or 0)
    for a in addrs:
        if (a.function or 0) == 0 and a.multifunction is None and len(slots[(a.pci_bus, a.slot)]) > 1:
            a.multifunction = True


_PCI_MODEL_NAMES = {"pcie-root-port": "pcie-root-port", "pcie-to-pci-bridge": "pcie-pci-bridge",
                    "pci-bridge": "pci-bridge", "dmi-to-pci-bridge": "i82801b11-bridge",
                    "pcie-switch-upstream-port": "x3130-upstream",
                    "pcie-switch-downstream-port": "xio3130-downstream",
                    "pci-expander-bus": "pxb", "pcie-expander-bus": "pxb-pcie"}


def _pci_controller_defaults(dom: Domain) -> None:
    devs = dom.devices
    assert devs is not None
    for c in devs.controllers:
        if c.type != "pci" or c.model not in _PCI_MODEL_NAMES:
            continue
        if c.model_name is None:
            c.model_name = ControllerModelName(name=_PCI_MODEL_NAMES[c.model])
        a = c.address
        if c.model == "pci-bridge":
            c.target = c.target or ControllerTarget()
            if c.target.chassisNr is None:
                c.target.chassisNr = c.index
        elif c.model in ("pcie-root-port", "pcie-switch-downstream-port"):
            c.target = c.target or ControllerTarget()
            if c.target.chassis is None:
                c.target.chassis = c.index
            if c.target.port is None and a is not None and a.type == "pci":
                c.target.port = ((a.slot or 0) << 3) + (a.function or 0) if c.model == "pcie-root-port" \
                    else (a.slot or 0)

