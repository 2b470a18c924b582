# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver's defaults for a parsed domain, as libvirt 9.0 fills them on define.

What the driver needs to know about the emulator comes in a :class:`PostParseContext` (built by the
capability prober); :class:`QemuDomainConfig` is the callback object handed to
:func:`pyvirt.xml.domain.parse_domain`.  The order of the steps matters: libvirt's output order of
implied devices and the PCI slots they get follow from it, so each step says which libvirt phase
it stands for.
"""

from __future__ import annotations

import random
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any

from pyvirt.errors import XMLError
from pyvirt.qemu.domain_address import assign_pci_addresses, is_q35
from pyvirt.qemu.validate import validate_domain
from pyvirt.xml.domain import Devices, Domain
from pyvirt.xml.domain_chardev import (
    Channel,
    CharDevice,
    CharProtocol,
    CharTarget,
    CharTargetModel,
    Console,
    Serial,
)
from pyvirt.xml.domain_devices import Address, Controller, Disk, DiskDriver, Mac, NetModel
from pyvirt.xml.domain_os import CPU, OS, Boot, Clock, CPUModel, NumaTune, NumaTuneMemory, OSType, Vcpu
from pyvirt.xml.domain_peripherals import Audio, GraphicsListen, Input, MemBalloon, Video, VideoModel

__all__ = ["PostParseContext", "QemuDomainConfig", "disk_name_to_index", "DEFAULT_X86_64_CONTEXT"]


@dataclass
class PostParseContext:
    """What post-parse needs to know about the emulator (from capability probing)."""

    machine_aliases: dict[str, str]
    default_machine: str
    max_cpus: dict[str, int]
    arch: str = "x86_64"
    emulator: str = "/usr/bin/qemu-system-x86_64"
    default_cpu_model: str = "qemu64"
    # Emulators and default CPU models of the other architectures one binary family serves.
    emulators: dict[str, str] = field(default_factory=lambda: {"i686": "/usr/bin/qemu-system-i386"})
    cpu_models: dict[str, str] = field(default_factory=lambda: {"/usr/bin/qemu-system-i386": "qemu32"})
    # Random source for generated UUIDs and MACs; tests pass a seeded one.
    rng: random.Random = field(default_factory=random.SystemRandom)

    def resolve_machine(self, machine: str | None) -> str:
        name = machine or self.default_machine
        return self.machine_aliases.get(name, name)


# QEMU 7.2 on x86_64, as probed on Debian 12: used by tests until the prober provides it.
DEFAULT_X86_64_CONTEXT = PostParseContext(
    machine_aliases={"pc": "pc-i440fx-7.2", "q35": "pc-q35-7.2"},
    default_machine="pc",
    max_cpus={"pc-i440fx-7.2": 255, "pc-q35-7.2": 288},
)


def disk_name_to_index(name: str) -> int:
    """The drive index encoded in a target name (hda -> 0, sdb -> 1, vdaa -> 26); -1 if none."""
    for prefix in ("fd", "hd", "vd", "sd", "xvd", "ubd"):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            break
    else:
        return -1
    idx = -1
    letters = 0
    for ch in rest:
        if not ("a" <= ch <= "z"):
            break
        idx = (idx + 1) * 26 + (ord(ch) - ord("a")) if letters else ord(ch) - ord("a")
        letters += 1
    if letters == 0 or (len(rest) > letters and not rest[letters:].isdigit()):
        return -1
    return idx


_BUS_BY_PREFIX = (("hd", "ide"), ("sd", "scsi"), ("vd", "virtio"), ("xvd", "xen"), ("ubd", "uml"),
                  ("fd", "fdc"))

_DISK_BUS_ORDER = ("ide", "fdc", "scsi", "virtio", "xen", "usb", "uml", "sata", "sd")


def _bus_and_index(disk: Disk) -> tuple[str | None, int]:
    tgt = disk.target
    if tgt is None:
        return None, -1
    return tgt.bus, disk_name_to_index(tgt.dev) if tgt.dev else -1


def insert_disk(disks: list[Disk], disk: Disk, keys: dict[int, tuple[str | None, int]] | None = None) -> None:
    """libvirt's disk insertion: next to disks of the same bus, in order of drive index."""
    keys = {} if keys is None else keys
    key = keys.get(id(disk))
    if key is None:
        key = keys[id(disk)] = _bus_and_index(disk)
    bus, idx = key
    insert_at = -1
    for i in range(len(disks) - 1, -1, -1):
        other = disks[i]
        okey = keys.get(id(other))
        if okey is None:
            okey = keys[id(other)] = _bus_and_index(other)
        obus, oidx = okey
        if obus != bus:
            continue
        if oidx > idx:
            insert_at = i
        elif insert_at == -1:
            insert_at = i + 1
    if insert_at == -1:
        disks.append(disk)
    else:
        disks.insert(insert_at, disk)


def insert_controller(ctrls: list[Controller], ctrl: Controller) -> None:
    """libvirt's controller insertion: next to controllers of the same type, in index order."""
    insert_at = -1
    for i in range(len(ctrls) - 1, -1, -1):
        other = ctrls[i]
        if other.type != ctrl.type:
            continue
        if (other.index or 0) > (ctrl.index or 0):
            insert_at = i
        elif insert_at == -1:
            insert_at = i + 1
    if insert_at == -1:
        ctrls.append(ctrl)
    else:
        ctrls.insert(insert_at, ctrl)


#: the prefixes of the interface names libvirt generates (tap, macvtap, macvlan devices)
GENERATED_NET_PREFIXES = ("vnet", "macvtap", "macvlan")


def _gen_mac(rng: random.Random) -> str:
    return "52:54:00:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))


class QemuDomainConfig:
    """The QEMU driver's :class:`~pyvirt.xml.domain.DomainParserConfig`."""

    def __init__(self, ctx: PostParseContext, *, status: bool = False) -> None:
        self.ctx = ctx
        #: parsing a running domain's live XML (libvirt's VIR_DOMAIN_DEF_PARSE_STATUS, without
        #: ..._PARSE_INACTIVE): runtime names such as the tap devices' are kept
        self.status = status
        self._late: set[int] = set()
        self._status_config: QemuDomainConfig | None = None

    def for_status(self) -> QemuDomainConfig:
        """The same hooks for parsing live (status) XML rather than a definition."""
        if self.status:
            return self
        if self._status_config is None:
            self._status_config = QemuDomainConfig(self.ctx, status=True)
        return self._status_config

    def validate(self, dom: Domain) -> None:
        validate_domain(dom, self.ctx)

    def post_parse(self, dom: Domain) -> None:
        self._late = set()
        if dom.devices is None:
            dom.devices = Devices()
        devs = dom.devices
        # Which disks named their bus: controllers implied only by guessed buses are placed later.
        self._explicit_bus = {id(d) for d in devs.disks if d.target is not None and d.target.bus}
        # The parser inserts disks and controllers sorted by bus/type (virDomainDiskInsert): do the
        # same with the buses the XML gave.
        disks: list[Disk] = []
        keys: dict[int, tuple[str | None, int]] = {}
        for d in devs.disks:
            insert_disk(disks, d, keys)
        devs.disks = disks
        ctrls: list[Controller] = []
        for c in devs.controllers:
            insert_controller(ctrls, c)
        # The parser itself adds the SCSI controller a SCSI host device sits on.
        for hd in devs.hostdevs:
            if hd.type == "scsi":
                idx = hd.address.controller if hd.address is not None and hd.address.type == "drive" else 0
                if not any(c.type == "scsi" and c.index == (idx or 0) for c in ctrls):
                    insert_controller(ctrls, Controller(type="scsi", index=idx or 0))
        devs.controllers = ctrls

        self._domain_defaults(dom)
        self._device_defaults(dom)
        self._implied_devices(dom)
        self._implied_controllers(dom)
        assign_pci_addresses(dom, q35=is_q35(dom))
        self._assign_usb_ports(dom)
        self._assign_virtio_serial_ports(dom)
        # Controllers implied by disks whose bus libvirt had to guess end up sorted in among the
        # others, after the PCI controllers added for addresses (observed on libvirt 9.0).
        late = [c for c in devs.controllers if id(c) in self._late]
        ctrls = [c for c in devs.controllers if id(c) not in self._late]
        for c in late:
            insert_controller(ctrls, c)
        devs.controllers = ctrls

    # --- domain-wide --------------------------------------------------------------------------------

    def _domain_defaults(self, dom: Domain) -> None:
        ctx = self.ctx
        if dom.uuid is None:
            dom.uuid = str(_uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
        if dom.os is None:
            dom.os = OS()
        if dom.os.type is None:
            dom.os.type = OSType(value="hvm")
        if dom.os.type.arch is None:
            dom.os.type.arch = ctx.arch
        dom.os.type.machine = ctx.resolve_machine(dom.os.type.machine)
        cells = dom.cpu.numa.cells if dom.cpu is not None and dom.cpu.numa is not None else []
        if cells and all(c.memory is not None for c in cells):
            # With NUMA cells the domain's memory is their total, whatever <memory> says.
            dom.memory = sum(c.memory or 0 for c in cells)
        if (not cells and dom.current_memory is not None and dom.memory is not None
                and dom.current_memory > dom.memory):
            # libvirt silently lowers currentMemory to memory; pyvirt refuses, so that a typo in
            # either value does not go unnoticed (with NUMA cells, memory is derived: clamp below).
            raise XMLError(f"<currentMemory> ({dom.current_memory} KiB) is larger than <memory> "
                           f"({dom.memory} KiB): lower currentMemory or raise memory")
        if dom.current_memory is None or dom.current_memory == 0 or (
                dom.memory is not None and dom.current_memory > dom.memory):
            dom.current_memory = dom.memory
        if dom.vcpu is None:
            dom.vcpu = Vcpu(count=1)
        if dom.vcpu.count is None:
            dom.vcpu.count = 1
        if dom.vcpu.placement is None:
            dom.vcpu.placement = "auto" if dom.vcpu.cpuset is None and False else "static"
        if dom.vcpu.current is not None and dom.vcpu.current == dom.vcpu.count:
            dom.vcpu.current = None
        if dom.devices is not None and dom.devices.emulator is None:
            dom.devices.emulator = ctx.emulators.get(dom.os.type.arch or "", ctx.emulator)
        self._cpu_defaults(dom)
        if dom.clock is None:
            dom.clock = Clock()
        if dom.clock.offset is None:
            dom.clock.offset = "utc"
        # Attributes of the other offsets are ignored.
        if dom.clock.offset != "timezone":
            dom.clock.timezone = None
        if dom.clock.offset != "variable":
            dom.clock.adjustment = None
            dom.clock.basis = None
        if dom.on_poweroff is None:
            dom.on_poweroff = "destroy"
        if dom.on_reboot is None:
            dom.on_reboot = "restart"
        if dom.on_crash is None:
            dom.on_crash = "destroy"
        devs = dom.devices
        assert devs is not None
        if devs.emulator is None:
            devs.emulator = ctx.emulators.get(dom.os.type.arch or "", ctx.emulator)
        if dom.genid == "":
            dom.genid = str(_uuid.UUID(int=ctx.rng.getrandbits(128), version=4))
        if dom.features is not None:
            for name in ("hap", "pmu", "vmport", "pvspinlock", "vmcoreinfo"):
                feat = getattr(dom.features, name)
                if feat is not None and feat.state is None:
                    feat.state = True
        if dom.vcpu.placement == "auto" and (dom.numatune is None or dom.numatune.memory is None):
            if dom.numatune is None:
                dom.numatune = NumaTune()
            dom.numatune.memory = NumaTuneMemory(mode="strict", placement="auto")
        if not dom.os.boot and not _has_device_boot(dom):
            dom.os.boot = [Boot(dev="hd")]

    def _cpu_defaults(self, dom: Domain) -> None:
        cpu = dom.cpu
        arch = dom.os.type.arch if dom.os and dom.os.type else None
        emulator = dom.devices.emulator if dom.devices is not None else None
        default_model = self.ctx.cpu_models.get(emulator or "", self.ctx.default_cpu_model)
        if cpu is None:
            if arch in ("x86_64", "i686"):
                dom.cpu = CPU(mode="custom", match="exact", check="none",
                              model=CPUModel(fallback="forbid", name=default_model))
            return
        if cpu.topology is not None and cpu.topology.dies is None:
            cpu.topology.dies = 1
        if cpu.mode is None and cpu.model is not None and cpu.model.name:
            cpu.mode = "custom"
        if cpu.mode in ("host-passthrough", "maximum"):
            if cpu.check is None:
                cpu.check = "none"
            if cpu.migratable is None:
                cpu.migratable = True
        elif cpu.mode == "host-model":
            if cpu.check is None:
                cpu.check = "partial"
        if cpu.mode is None:
            cpu.mode = "custom"
        if cpu.mode == "custom":
            if cpu.model is not None and cpu.model.name:
                if cpu.match is None:
                    cpu.match = "exact"
                if cpu.check is None:
                    cpu.check = "partial"
                if cpu.model.fallback is None:
                    cpu.model.fallback = "allow"
            elif cpu.model is None and arch in ("x86_64", "i686"):
                # Topology or NUMA only: libvirt adds its default model.
                cpu.model = CPUModel(fallback="forbid", name=default_model)
                if cpu.match is None:
                    cpu.match = "exact"
                if cpu.check is None:
                    cpu.check = "none"
        for feat in cpu.features:
            if feat.policy is None:
                feat.policy = "require"

    # --- per device ---------------------------------------------------------------------------------

    def _device_defaults(self, dom: Domain) -> None:
        devs = dom.devices
        assert devs is not None
        for disk in devs.disks:
            self._disk_defaults(dom, disk)
        for ctrl in devs.controllers:
            self._controller_defaults(dom, ctrl)
        for net in devs.interfaces:
            if net.mac is None:
                net.mac = Mac()
            if net.mac.address is None:
                net.mac.address = _gen_mac(self.ctx.rng)
            else:
                net.mac.address = net.mac.address.lower()
            if net.model is None and net.type not in ("hostdev", "vdpa"):
                net.model = NetModel(type="virtio" if net.type == "vhostuser" else "rtl8139")
        for g in devs.graphics:
            if g.type in ("vnc", "spice"):
                first = g.listens[0] if g.listens else None
                if g.type == "vnc" and first is not None and first.type == "socket" and g.socket is None:
                    g.socket = first.socket
                no_port = g.socket is not None or (first is not None and first.type == "none")
                if g.type == "vnc" and not no_port and g.port is None and g.autoport is None:
                    g.port = -1
                if g.autoport and g.port is None and g.type == "vnc":
                    g.port = -1
                if g.autoport is None and g.port == -1:
                    g.autoport = True
                if g.port is not None and g.port > 0 and g.autoport is None:
                    g.autoport = False
                if not g.listens:
                    if g.listen is not None:
                        g.listens = [GraphicsListen(type="address", address=g.listen)]
                    elif g.socket is not None:
                        g.listens = [GraphicsListen(type="socket", socket=g.socket)]
                    elif g.type == "vnc" or g.autoport or (g.port is not None and g.port != 0):
                        g.listens = [GraphicsListen(type="address")]
                    else:
                        g.listens = [GraphicsListen(type="none")]
                elif g.listen is None and g.listens[0].type == "address" and g.listens[0].address:
                    g.listen = g.listens[0].address
        for i, v in enumerate(devs.videos):
            if v.model is None:
                v.model = VideoModel()
            m = v.model
            if m.type is None or m.type == "default":
                m.type = "cirrus"
            if m.type in ("cirrus", "vga", "vmvga", "bochs") and m.vram is None:
                m.vram = 16384
            if m.type == "qxl":
                if m.ram is None:
                    m.ram = 65536
                if m.vram is None:
                    m.vram = 65536
                if m.vgamem is None:
                    m.vgamem = 16384
            if m.heads is None and m.type != "none":
                m.heads = 1
            if i == 0 and m.primary is None and len(devs.videos) > 1:
                m.primary = True
            if len(devs.videos) == 1 and m.type != "none":
                m.primary = True
        self._chardev_defaults(dom)
        self._hostdev_defaults(dom)
        for fs in devs.filesystems:
            # A virtiofsd started by someone else (a socket) has its own access mode.
            external = fs.source is not None and fs.source.socket is not None
            if fs.type in (None, "mount") and fs.accessmode is None and not external:
                fs.accessmode = "passthrough"
            if fs.type is None:
                fs.type = "mount"
        for net in devs.interfaces:
            if net.type != "hostdev":
                net.managed = None
            if net.type == "direct" and net.source is not None and net.source.mode is None:
                net.source.mode = "vepa"
            # Target names with these prefixes are generated by libvirt: a definition drops them
            # (libvirt does so when parsing without VIR_DOMAIN_DEF_PARSE_STATUS), the live XML keeps
            # the tap the domain runs with.
            if not self.status and net.target is not None and net.target.dev and \
                    net.target.managed is not False and net.target.dev.startswith(GENERATED_NET_PREFIXES):
                net.target = None
        for g in devs.graphics:
            if g.default_mode == "any":
                g.default_mode = None
            g.channels = [c for c in g.channels if c.mode != "any"]
        for panic in devs.panics:
            if panic.model is None:
                panic.model = "isa"  # x86's default, as libvirt
        for wd in devs.watchdogs:
            if wd.action is None:
                wd.action = "reset"
        if devs.memballoon is not None and devs.memballoon.model is None:
            devs.memballoon.model = "virtio"
        for inp in devs.inputs:
            if inp.bus is None and inp.type != "evdev":
                inp.bus = "usb" if inp.type == "tablet" else "ps2"

    def _disk_defaults(self, dom: Domain, disk: Disk) -> None:
        tgt = disk.target
        assert tgt is not None and tgt.dev is not None
        if tgt.bus is None:
            if disk.device == "floppy":
                tgt.bus = "fdc"
            else:
                for prefix, bus in _BUS_BY_PREFIX:
                    if tgt.dev.startswith(prefix):
                        tgt.bus = bus
                        break
                else:
                    tgt.bus = "ide"
        if disk.type is None:
            disk.type = "file"
        if disk.device is None:
            disk.device = "disk"
        if disk.device == "cdrom" and not disk.readonly:
            disk.readonly = True
        if disk.driver is None:
            disk.driver = DiskDriver()
        if disk.driver.name is None:
            disk.driver.name = "qemu"
        if disk.driver.type is None and disk.type != "network" and disk.type != "volume":
            disk.driver.type = "raw"
        elif disk.driver.type is None and disk.type == "network":
            disk.driver.type = "raw"
        for enc in (disk.encryption, disk.source.encryption if disk.source else None):
            if enc is not None and enc.format in ("luks", "luks2", "luks-any") and enc.engine is None:
                enc.engine = "qemu"
        if disk.address is None:
            addr = _drive_address(tgt.bus, tgt.dev)
            if addr is not None:
                disk.address = addr

    def _controller_defaults(self, dom: Domain, ctrl: Controller) -> None:
        if ctrl.type is None:
            ctrl.type = "ide"  # libvirt's default controller type
        if ctrl.index is None:
            same = [c.index for c in dom.devices.controllers  # type: ignore[union-attr]
                    if c.type == ctrl.type and c is not ctrl and c.index is not None]
            ctrl.index = max(same, default=-1) + 1
        if ctrl.type == "usb" and ctrl.model is None:
            ctrl.model = "qemu-xhci" if is_q35(dom) else "piix3-uhci"
        elif ctrl.type == "scsi" and ctrl.model is None:
            ctrl.model = "lsilogic"

    def _chardev_defaults(self, dom: Domain) -> None:
        devs = dom.devices
        assert devs is not None
        for i, s in enumerate(devs.serials):
            if s.target is None:
                s.target = CharTarget()
            if s.target.type is None:
                s.target.type = "isa-serial"
            if s.target.port is None:
                s.target.port = str(i)
            if s.target.model is None and s.target.type in _SERIAL_MODELS:
                s.target.model = CharTargetModel(name=_SERIAL_MODELS[s.target.type])
        for i, c in enumerate(devs.consoles):
            if c.target is None:
                c.target = CharTarget()
            if c.target.type is None:
                c.target.type = "serial"
            # libvirt numbers virtio consoles by their position, whatever port the XML gave.
            if c.target.port is None or c.target.type == "virtio":
                c.target.port = str(i)
        # The first console, when it is a serial console, is the first serial port
        # (virDomainDefAddConsoleCompat): it mirrors that port, or creates it.
        first = devs.consoles[0] if devs.consoles else None
        if first is not None and first.target is not None and first.target.type == "serial":
            if devs.serials:
                _mirror(first, devs.serials[0])
            else:
                ser = Serial(target=CharTarget(type="isa-serial", port="0",
                                               model=CharTargetModel(name="isa-serial")))
                _mirror(ser, first)
                devs.serials.append(ser)
        elif devs.serials:
            con = Console(target=CharTarget(type="serial", port="0"))
            _mirror(con, devs.serials[0])
            devs.consoles.insert(0, con)
        backends: list[Any] = [*devs.serials, *devs.parallels, *devs.consoles, *devs.channels,
                               *devs.redirdevs, *devs.smartcards,
                               *(r.backend for r in devs.rngs if r.backend is not None)]
        for chr_ in (*devs.serials, *devs.parallels, *devs.consoles, *devs.channels):
            if chr_.type is None:
                chr_.type = "pty"  # libvirt's default character device
        for backend in backends:
            if backend.type == "tcp" and backend.protocol is None:
                backend.protocol = CharProtocol(type="raw")
        for ch in devs.channels:
            if ch.target is None:
                ch.target = CharTarget(type="virtio")
            # A unix channel without a path gets one generated when the domain starts.
            if ch.type == "unix" and all(s.path is None for s in ch.sources):
                ch.sources = []

    def _hostdev_defaults(self, dom: Domain) -> None:
        devs = dom.devices
        assert devs is not None
        used: set[tuple[int, int, int, int]] = set()
        for d in devs.disks:
            a = d.address
            if a is not None and a.type == "drive" and d.target is not None and d.target.bus == "scsi":
                used.add((a.controller or 0, a.bus or 0, a.target or 0, a.unit or 0))
        for hd in devs.hostdevs:
            if hd.mode is None:
                hd.mode = "subsystem"
            if hd.mode == "subsystem" and hd.managed is None:
                hd.managed = False
            if hd.type != "mdev":
                hd.display = None
            if hd.type == "scsi" and hd.address is None:
                unit = 0
                while (0, 0, 0, unit) in used:
                    unit += 1
                hd.address = Address.drive(0, 0, 0, unit)
                used.add((0, 0, 0, unit))

    # --- devices libvirt adds -----------------------------------------------------------------------

    def _implied_devices(self, dom: Domain) -> None:
        devs = dom.devices
        assert devs is not None
        q35 = is_q35(dom)
        # qemuDomainDefAddDefaultDevices: USB controller, the chipset's SATA (q35), the PCI root.
        if not any(c.type == "usb" for c in devs.controllers):
            devs.controllers.append(Controller(type="usb", index=0,
                                               model="qemu-xhci" if q35 else "piix3-uhci"))
        if q35 and not any(c.type == "sata" and c.index == 0 for c in devs.controllers):
            devs.controllers.append(Controller(type="sata", index=0))
        if not any(c.type == "pci" and c.index == 0 for c in devs.controllers):
            devs.controllers.append(Controller(type="pci", index=0, model="pcie-root" if q35 else "pci-root"))
        if devs.memballoon is None:
            devs.memballoon = MemBalloon(model="virtio")
        # virDomainDefAddImplicitDevices: PS/2 mouse and keyboard of the x86 chipsets.
        if not any(i.type == "mouse" and i.bus == "ps2" for i in devs.inputs):
            devs.inputs.append(Input(type="mouse", bus="ps2"))
        if not any(i.type == "keyboard" and i.bus == "ps2" for i in devs.inputs):
            devs.inputs.append(Input(type="keyboard", bus="ps2"))
        if devs.graphics and not devs.videos:
            devs.videos.append(Video(model=VideoModel(type="cirrus", vram=16384, heads=1, primary=True)))
        if not devs.audios:
            # The audio backend follows the first graphics; headless-only graphics get none at all.
            audio_type: str | None = "none"
            if devs.graphics:
                audio_type = {"spice": "spice", "vnc": "none", "sdl": "sdl"}.get(devs.graphics[0].type or "")
            if audio_type is not None:
                devs.audios.append(Audio(id=1, type=audio_type))

    def _implied_controllers(self, dom: Domain) -> None:
        """virDomainDefAddImplicitControllers: one per drive controller in use, then virtio-serial."""
        devs = dom.devices
        assert devs is not None

        def need(ctype: str, idx: int, model: str | None = None, late: bool = False) -> None:
            if not any(c.type == ctype and c.index == idx for c in devs.controllers):
                ctrl = Controller(type=ctype, index=idx, model=model)
                devs.controllers.append(ctrl)
                if late:
                    self._late.add(id(ctrl))

        for bus, ctype in (("scsi", "scsi"), ("fdc", "fdc"), ("ide", "ide"), ("sata", "sata")):
            # Every index up to the highest one in use gets a controller.
            top = top_explicit = -1
            for disk in devs.disks:
                if disk.target and disk.target.bus == bus and disk.address and disk.address.type == "drive":
                    top = max(top, disk.address.controller or 0)
                    if id(disk) in self._explicit_bus or disk.device == "floppy":
                        top_explicit = max(top_explicit, disk.address.controller or 0)
            if bus == "scsi":
                for hd in devs.hostdevs:
                    if hd.type == "scsi" and hd.address is not None and hd.address.type == "drive":
                        top = top_explicit = max(top, hd.address.controller or 0)
            for idx in range(top + 1):
                need(ctype, idx, "lsilogic" if ctype == "scsi" else None, late=idx > top_explicit)
        virtio_chr = [c for c in (*devs.channels, *devs.consoles)
                      if c.target is not None and c.target.type == "virtio"]
        for chr_ in virtio_chr:
            ctl = chr_.address.controller if chr_.address and chr_.address.type == "virtio-serial" else 0
            need("virtio-serial", ctl or 0)
        if any(s.mode == "host" or s.mode == "passthrough" or s.mode == "host-certificates"
               for s in devs.smartcards):
            need("ccid", 0)

    # --- addresses on non-PCI buses -----------------------------------------------------------------

    def _assign_usb_ports(self, dom: Domain) -> None:
        """USB ports: hubs first, then devices, each on the first free port, depth first."""
        devs = dom.devices
        assert devs is not None
        usb = next((c for c in devs.controllers if c.type == "usb" and c.index == 0), None)
        if usb is None or usb.model == "none":
            return
        nports = usb.ports or _USB_PORTS.get(usb.model or "", 2)
        if usb.model in ("ich9-uhci1", "ich9-uhci2", "ich9-uhci3"):
            nports = 6
        taken: set[str] = set()
        hubs: set[str] = set()
        for dev in (*devs.hubs, *_usb_devices(devs)):
            a = dev.address
            if a is not None and a.type == "usb" and a.port:
                taken.add(a.port)
        for hub in devs.hubs:
            if hub.address is not None and hub.address.port:
                hubs.add(hub.address.port)

        def first_free(prefix: str, count: int) -> str | None:
            # Free ports of this hub first, then those of the hubs plugged into it.
            for i in range(1, count + 1):
                port = f"{prefix}{i}"
                if port not in hubs and port not in taken:
                    return port
            for i in range(1, count + 1):
                port = f"{prefix}{i}"
                if port in hubs:
                    found = first_free(port + ".", _USB_HUB_PORTS)
                    if found is not None:
                        return found
            return None

        for hub in devs.hubs:
            if hub.address is None:
                port = first_free("", nports)
                if port is None:
                    return
                hub.address = Address(type="usb", usb_bus=0, port=port)
                taken.add(port)
                hubs.add(port)
        for dev in _usb_devices(devs):
            if dev.address is not None:
                continue
            port = first_free("", nports)
            if port is None:
                return
            dev.address = Address(type="usb", usb_bus=0, port=port)
            taken.add(port)
        for i, card in enumerate(devs.smartcards):
            if card.address is None:
                card.address = Address(type="ccid", controller=0, ccid_slot=i)

    def _assign_virtio_serial_ports(self, dom: Domain) -> None:
        devs = dom.devices
        assert devs is not None
        used: set[tuple[int, int]] = set()
        for ch in (*devs.channels, *devs.consoles):
            a = ch.address
            if a is not None and a.type == "virtio-serial" and a.port is not None:
                used.add((a.controller or 0, int(a.port)))
        for ch in (*devs.consoles, *devs.channels):
            if ch.target is None or ch.target.type != "virtio":
                continue
            is_console = isinstance(ch, Console)
            if ch.address is not None and ch.address.port is not None:
                continue
            ctl = ch.address.controller if ch.address is not None else 0
            # Port 0 of the first controller is kept for a virtio console.
            port = 0 if is_console else 1
            while (ctl or 0, port) in used:
                port += 1
            if is_console:
                continue  # libvirt gives virtio consoles no address element
            ch.address = Address(type="virtio-serial", controller=ctl or 0, bus=0, port=str(port))
            used.add((ctl or 0, port))
        _ = Channel


_SERIAL_MODELS = {"isa-serial": "isa-serial", "pci-serial": "pci-serial", "usb-serial": "usb-serial"}


def _mirror(dst: CharDevice, src: CharDevice) -> None:
    """Make a console the same character device as a serial port (type and backend)."""
    dst.type = src.type
    dst.alias = src.alias
    dst.sources = list(src.sources)
    dst.protocol = src.protocol
    dst.log = src.log


_USB_PORTS = {"piix3-uhci": 2, "piix4-uhci": 2, "ehci": 6, "ich9-ehci1": 6, "vt82c686b-uhci": 2,
              "pci-ohci": 3, "nec-xhci": 4, "qusb1": 4, "qusb2": 4, "qemu-xhci": 15}
_USB_HUB_PORTS = 8


def _usb_devices(devs: Devices) -> list[Any]:
    """USB devices in the order libvirt gives them ports."""
    out: list[Any] = [c for c in devs.controllers if c.type == "ccid"]
    out.extend(d for d in devs.disks if d.target and d.target.bus == "usb")
    out.extend(i for i in devs.inputs if i.bus == "usb")
    out.extend(s for s in devs.sounds if s.model == "usb")
    out.extend(h for h in devs.hostdevs if h.type == "usb")
    out.extend(devs.redirdevs)
    out.extend(s for s in devs.serials if s.target is not None and s.target.type == "usb-serial")
    return out


def _has_device_boot(dom: Domain) -> bool:
    devs = dom.devices
    if devs is None:
        return False
    return any(getattr(d, "boot", None) is not None
               for d in (*devs.disks, *devs.interfaces, *devs.hostdevs, *devs.redirdevs, *devs.filesystems))


def _drive_address(bus: str, dev: str) -> Address | None:
    """virDomainDiskDefAssignAddress: the drive address implied by a target name."""
    idx = disk_name_to_index(dev)
    if idx < 0:
        return None
    if bus == "ide":
        return Address.drive(idx // 4, (idx % 4) // 2, 0, idx % 2)
    if bus == "scsi":
        return Address.drive(idx // 7, 0, 0, idx % 7)
    if bus == "sata":
        return Address.drive(idx // 6, 0, 0, idx % 6)
    if bus == "fdc":
        return Address.drive(0, 0, 0, idx % 2)
    return None
