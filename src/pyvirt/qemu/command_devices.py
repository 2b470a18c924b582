# SPDX-License-Identifier: LGPL-2.1-or-later
"""The device part of the QEMU command line: controllers, disks, NICs, character devices, inputs,
audio, graphics, video, watchdog, balloon and RNG, in libvirt 9.0's order and syntax.

Devices go through JSON (-device/-blockdev/-netdev/-object), so XML values cannot break out of
their member; the keyval options (-chardev, -vnc) go through :func:`keyval`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyvirt.conf.qemu_conf import QemuConf
from pyvirt.qemu.capabilities import QemuCapsFlag
from pyvirt.qemu.command_util import CommandUnsupported, escape_opt, json_arg, keyval, pci_addr_props
from pyvirt.qemu.postparse import disk_name_to_index
from pyvirt.xml.domain import Domain
from pyvirt.xml.domain_chardev import CharDevice, CharSource
from pyvirt.xml.domain_devices import Address, Controller, Disk, Interface

if TYPE_CHECKING:
    from pyvirt.qemu.command import CommandRuntime

__all__ = ["DeviceBuilder"]

# libvirt builds controllers type by type in this order (PCI first: the others plug into them).
_CONTROLLER_ORDER = ("pci", "usb", "scsi", "ide", "sata", "fdc", "virtio-serial", "ccid", "isa")
_USB_MODELS = {"piix3-uhci": "piix3-usb-uhci", "piix4-uhci": "piix4-usb-uhci", "qemu-xhci": "qemu-xhci",
               "nec-xhci": "nec-usb-xhci", "ehci": "usb-ehci"}
_SCSI_MODELS = {"lsilogic": "lsi", "virtio-scsi": "virtio-scsi-pci"}
_NIC_MODELS = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139"}
_USB_INPUTS = {"tablet": "usb-tablet", "mouse": "usb-mouse", "keyboard": "usb-kbd"}
_VIRTIO_INPUTS = {"tablet": "virtio-tablet-pci", "mouse": "virtio-mouse-pci",
                  "keyboard": "virtio-keyboard-pci"}
# Cache modes as (cache.direct, cache.no-flush, the device's write-cache).
_CACHE = {"none": (True, False, "on"), "writethrough": (False, False, "off"),
          "writeback": (False, False, "on"), "directsync": (True, False, "off"),
          "unsafe": (False, True, "on")}
_WATCHDOG_ACTIONS = {"reset": "reset", "shutdown": "shutdown", "poweroff": "poweroff", "pause": "pause",
                     "none": "none", "inject-nmi": "inject-nmi", "dump": "pause"}


def _unsupported(what: str) -> CommandUnsupported:
    return CommandUnsupported(f"{what} is not supported by pyvirt's command-line builder yet")


def device_alias(dev: Any, default: str) -> str:
    """The id a device gets on the command line: its user alias (ua-...) if it has one, else
    ``default`` (libvirt's numbering; only user aliases survive into a definition)."""
    alias = dev.alias.name if dev.alias is not None else None
    return str(alias) if alias is not None and alias.startswith("ua-") else default


class DeviceBuilder:
    """Appends the device arguments of one domain; one instance per build."""

    def __init__(self, dom: Domain, flags: frozenset[QemuCapsFlag], conf: QemuConf,
                 runtime: CommandRuntime) -> None:
        assert dom.devices is not None
        self.dom = dom
        self.devs = dom.devices
        self.flags = flags
        self.conf = conf
        self.runtime = runtime
        self.q35 = any(c.type == "pci" and c.model == "pcie-root" for c in self.devs.controllers)
        self.boot = self._boot_indices()

    def build(self, args: list[str]) -> None:
        devs = self.devs
        for what, present in (("<hostdev>", devs.hostdevs), ("<filesystem>", devs.filesystems),
                              ("<smartcard>", devs.smartcards), ("<tpm>", devs.tpms),
                              ("<redirdev>", devs.redirdevs), ("<hub>", devs.hubs),
                              ("<shmem>", devs.shmems),
                              ("<iommu>", devs.iommu), ("<vsock>", devs.vsock), ("<sound>", devs.sounds)):
            if present:
                raise _unsupported(what)
        self._controllers(args)
        self._disks(args)
        self._nets(args)
        self._chardevs(args)
        self._inputs(args)
        audio_ids = self._audio(args)
        self._graphics(args, audio_ids)
        self._videos(args)
        self._watchdogs(args)
        self._balloon(args)
        self._rngs(args)

    # --- shared helpers -----------------------------------------------------------------------------

    def _need(self, flag: QemuCapsFlag, what: str) -> None:
        if flag not in self.flags:
            raise CommandUnsupported(f"{what} needs QEMU's {flag.value}, which this emulator (or the "
                                     "domain's <qemu:capabilities>) does not offer")

    def _pci(self, addr: Address | None, what: str) -> dict[str, Any]:
        if addr is None or addr.type != "pci":
            raise CommandUnsupported(f"{what} has no PCI address: the definition was not post-parsed")
        bus = addr.pci_bus or 0
        if bus == 0:
            name = "pcie.0" if self.q35 else "pci.0"
        else:
            name = f"pci.{bus}"
        return pci_addr_props(name, addr.slot or 0, addr.function or 0, addr.multifunction)

    @staticmethod
    def _usb(addr: Address | None) -> dict[str, Any]:
        if addr is None or addr.type != "usb":
            return {}
        return {"bus": f"usb.{addr.usb_bus or 0}", "port": addr.port}

    _alias = staticmethod(device_alias)

    def _boot_indices(self) -> dict[int, int]:
        devs = self.devs
        per_device = {id(d): d.boot.order for d in (*devs.disks, *devs.interfaces)
                      if d.boot is not None and d.boot.order is not None}
        if per_device:
            return per_device
        out: dict[int, int] = {}
        index = 0
        assert self.dom.os is not None
        for b in self.dom.os.boot:
            dev: Any = None
            if b.dev == "hd":
                dev = next((d for d in devs.disks if d.device == "disk"), None)
            elif b.dev == "cdrom":
                dev = next((d for d in devs.disks if d.device == "cdrom"), None)
            elif b.dev == "fd":
                dev = next((d for d in devs.disks if d.device == "floppy"), None)
            elif b.dev == "network":
                dev = devs.interfaces[0] if devs.interfaces else None
            if dev is not None and id(dev) not in out:
                index += 1
                out[id(dev)] = index
        return out

    # --- controllers --------------------------------------------------------------------------------

    def _controllers(self, args: list[str]) -> None:
        ctrls = self.devs.controllers
        for ctype in _CONTROLLER_ORDER:
            for c in ctrls:
                if c.type == ctype:
                    props = self._controller(c)
                    if props is not None:
                        args += ["-device", json_arg(props)]
        for c in ctrls:
            if c.type not in _CONTROLLER_ORDER:
                raise _unsupported(f"controller type '{c.type}'")

    def _controller(self, c: Controller) -> dict[str, Any] | None:
        idx = c.index or 0
        if c.type == "pci":
            if c.model in ("pci-root", "pcie-root"):
                return None
            tgt = c.target
            pid = self._alias(c, f"pci.{idx}")
            if c.model == "pcie-root-port":
                return {"driver": "pcie-root-port", "port": tgt.port if tgt else None,
                        "chassis": tgt.chassis if tgt else None, "id": pid,
                        **self._pci(c.address, "a pcie-root-port")}
            if c.model == "pci-bridge":
                return {"driver": "pci-bridge", "chassis_nr": tgt.chassisNr if tgt else idx, "id": pid,
                        **self._pci(c.address, "a pci-bridge")}
            if c.model == "pcie-to-pci-bridge":
                return {"driver": "pcie-pci-bridge", "id": pid, **self._pci(c.address, "a bridge")}
            if c.model == "dmi-to-pci-bridge":
                return {"driver": "i82801b11-bridge", "id": pid, **self._pci(c.address, "a bridge")}
            raise _unsupported(f"PCI controller model '{c.model}'")
        if c.type == "usb":
            if c.model == "none":
                return None
            driver = _USB_MODELS.get(c.model or "")
            if driver is None:
                raise _unsupported(f"USB controller model '{c.model}'")
            ports = c.ports if driver == "qemu-xhci" else None
            return {"driver": driver, "p2": ports, "p3": ports,
                    "id": self._alias(c, "usb" if idx == 0 else f"usb{idx}"),
                    **self._pci(c.address, "a USB controller")}
        if c.type == "scsi":
            driver = _SCSI_MODELS.get(c.model or "")
            if driver is None:
                raise _unsupported(f"SCSI controller model '{c.model}'")
            if driver == "virtio-scsi-pci":
                self._need(QemuCapsFlag.VIRTIO_SCSI, "a virtio-scsi controller")
            drv = c.driver
            if drv is not None and (drv.iothread is not None or drv.cmd_per_lun is not None
                                    or drv.max_sectors is not None or drv.ioeventfd is not None):
                raise _unsupported("SCSI controller driver tuning")
            return {"driver": driver, "id": self._alias(c, f"scsi{idx}"),
                    "num_queues": drv.queues if drv is not None else None,
                    **self._pci(c.address, "a SCSI controller")}
        if c.type in ("ide", "fdc"):
            if idx == 0 and not self.q35:
                return None  # the PC chipset's own
            raise _unsupported(f"{c.type} controller {idx}")
        if c.type == "sata":
            if idx == 0 and self.q35:
                return None  # the Q35 chipset's own AHCI
            return {"driver": "ich9-ahci", "id": self._alias(c, f"sata{idx}"),
                    **self._pci(c.address, "a SATA controller")}
        if c.type == "virtio-serial":
            self._need(QemuCapsFlag.VIRTIO_SERIAL, "a virtio-serial controller")
            return {"driver": "virtio-serial-pci", "id": self._alias(c, f"virtio-serial{idx}"),
                    "max_ports": c.ports, **self._pci(c.address, "a virtio-serial controller")}
        raise _unsupported(f"controller type '{c.type}'")

    # --- disks --------------------------------------------------------------------------------------

    def _disks(self, args: list[str]) -> None:
        disks = self.devs.disks
        for i, disk in enumerate(disks):
            # libvirt numbers the nodes while walking the disks backwards.
            node = f"libvirt-{len(disks) - i}"
            self._disk(disk, node, args)

    def _disk(self, disk: Disk, node: str, args: list[str]) -> None:
        tgt = disk.target
        assert tgt is not None
        dev_name = tgt.dev or ""
        for what, value in (("<iotune>", disk.iotune),
                            ("<geometry>", disk.geometry), ("<blockio>", disk.blockio),
                            ("<transient/>", disk.transient), ("<wwn>", disk.wwn),
                            ("<vendor>", disk.vendor), ("<product>", disk.product)):
            if value:
                raise _unsupported(f"disk {dev_name}: {what}")
        drv = disk.driver
        if drv is not None and (drv.io not in (None, "default") or drv.iothread is not None
                                or drv.error_policy not in (None, "default")
                                or drv.rerror_policy not in (None, "default")
                                or drv.copy_on_read is not None or drv.detect_zeroes is not None
                                or drv.queues is not None):
            raise _unsupported(f"disk {dev_name}: driver tuning (io, iothread, error policies...)")
        src = disk.source
        path = None
        if src is not None:
            path = src.file if disk.type == "file" else src.dev if disk.type == "block" else None
        if disk.type not in ("file", "block"):
            raise _unsupported(f"disk {dev_name}: source type '{disk.type}'")
        if disk.backing_store is not None and disk.backing_store.type is not None:
            raise _unsupported(f"disk {dev_name}: a <backingStore> chain")
        fmt = drv.type if drv is not None and drv.type else "raw"
        if fmt not in ("raw", "qcow2"):
            raise _unsupported(f"disk {dev_name}: format '{fmt}'")
        cache = _CACHE.get(drv.cache or "") if drv is not None else None
        cache_props = {"direct": cache[0], "no-flush": cache[1]} if cache else None
        drive = None
        if path is not None:
            encryption = self._disk_encryption(disk, fmt, f"{node}-format", args)
            if disk.type == "file":
                driver = "file"
            else:
                driver = "host_cdrom" if disk.device == "cdrom" else "host_device"
            args += ["-blockdev", json_arg({"driver": driver, "filename": path,
                                            "node-name": f"{node}-storage", "cache": cache_props,
                                            "auto-read-only": True, "discard": "unmap"})]
            discard = "unmap" if drv is not None and drv.discard == "unmap" else None
            args += ["-blockdev", json_arg({"node-name": f"{node}-format", "read-only": bool(disk.readonly),
                                            "discard": discard, "cache": cache_props,
                                            "driver": fmt, **encryption, "file": f"{node}-storage"})]
            drive = f"{node}-format"
        elif disk.device not in ("cdrom", "floppy"):
            raise CommandUnsupported(f"disk {dev_name} has no source: only CD-ROMs and floppies may be "
                                     "empty")
        props = self._disk_device(disk, drive)
        props["bootindex"] = self.boot.get(id(disk))
        if cache is not None:
            props["write-cache"] = cache[2]
        if disk.serial is not None:
            props["serial"] = disk.serial
        args += ["-device", json_arg(props)]

    def _disk_encryption(self, disk: Disk, fmt: str, format_node: str, args: list[str]) -> dict[str, Any]:
        """A LUKS disk's secret object (its value encrypted with the master key by the process layer:
        pyvirt.secret.disk) and the members naming it in the format node, as libvirt 9.0 builds them."""
        from pyvirt.secret.disk import disk_encryption, secret_alias

        enc = disk_encryption(disk)
        if enc is None:
            return {}
        dev = disk.target.dev if disk.target is not None else ""
        if enc.engine == "librbd":
            raise CommandUnsupported("unsupported configuration: librbd encryption is supported only "
                                     "with RBD backed disks")
        if enc.format == "qcow":
            raise CommandUnsupported("unsupported configuration: old qcow/qcow2 encryption is not supported")
        if enc.format != "luks":
            raise CommandUnsupported(f"unsupported configuration: {enc.format} is currently not supported "
                                     f"by the qemu encryption engine (disk {dev}: use <encryption "
                                     "format='luks'>)")
        secret = self.runtime.disk_secrets.get(dev or "")
        if secret is None:
            raise CommandUnsupported(f"disk {dev}: the value of its encryption secret was not prepared")
        alias = secret_alias(format_node)
        args += ["-object", json_arg({"qom-type": "secret", "id": alias, "data": secret.data,
                                      "keyid": "masterKey0", "iv": secret.iv, "format": "base64"})]
        if fmt == "raw":
            return {"driver": "luks", "key-secret": alias}
        return {"encrypt": {"format": "luks", "key-secret": alias}}

    def _disk_device(self, disk: Disk, drive: str | None) -> dict[str, Any]:
        tgt = disk.target
        assert tgt is not None
        bus = tgt.bus
        cd = disk.device == "cdrom"
        a = disk.address
        if disk.device not in ("disk", "cdrom"):
            raise _unsupported(f"disk device '{disk.device}'")
        if bus == "virtio":
            self._need(QemuCapsFlag.VIRTIO_BLK, "a virtio disk")
            if cd:
                raise CommandUnsupported("a CD-ROM cannot sit on the virtio bus")
            if disk.model not in (None, "virtio"):
                raise _unsupported(f"disk model '{disk.model}'")
            return {"driver": "virtio-blk-pci", **self._pci(a, f"disk {tgt.dev}"), "drive": drive,
                    "id": self._alias(disk, f"virtio-disk{disk_name_to_index(tgt.dev or '')}")}
        if a is None or a.type != "drive":
            raise CommandUnsupported(f"disk {tgt.dev} has no drive address: the definition was not "
                                     "post-parsed")
        ctl, dbus, target, unit = a.controller or 0, a.bus or 0, a.target or 0, a.unit or 0
        if bus == "ide" and not self.q35:
            if ctl != 0:
                raise _unsupported(f"IDE controller {ctl}")
            return {"driver": "ide-cd" if cd else "ide-hd", "bus": f"ide.{dbus}", "unit": unit,
                    "drive": drive, "id": self._alias(disk, f"ide{ctl}-{dbus}-{unit}")}
        if bus == "sata" or (bus == "ide" and self.q35):
            # Each AHCI port is a bus of its own with one device on it.
            if ctl != 0 or not self.q35:
                raise _unsupported(f"SATA controller {ctl} on this machine")
            return {"driver": "ide-cd" if cd else "ide-hd", "bus": f"ide.{unit}", "drive": drive,
                    "id": self._alias(disk, f"sata{ctl}-{dbus}-{unit}")}
        if bus == "scsi":
            ctrl = next((c for c in self.devs.controllers if c.type == "scsi" and (c.index or 0) == ctl),
                        None)
            driver = "scsi-cd" if cd else "scsi-hd"
            if ctrl is not None and ctrl.model == "virtio-scsi":
                name = f"scsi{ctl}-{dbus}-{target}-{unit}"
                return {"driver": driver, "bus": f"scsi{ctl}.0", "channel": dbus, "scsi-id": target,
                        "lun": unit, "device_id": f"drive-{name}", "drive": drive,
                        "id": self._alias(disk, name)}
            name = f"scsi{ctl}-{dbus}-{unit}"
            return {"driver": driver, "bus": f"scsi{ctl}.0", "scsi-id": unit, "device_id": f"drive-{name}",
                    "drive": drive, "id": self._alias(disk, name)}
        raise _unsupported(f"disk bus '{bus}'")

    # --- network ------------------------------------------------------------------------------------

    def _nets(self, args: list[str]) -> None:
        for i, net in enumerate(self.devs.interfaces):
            self._net(i, net, args)

    def _net(self, i: int, net: Interface, args: list[str]) -> None:
        alias = self._alias(net, f"net{i}")
        for what, value in (("<bandwidth>", net.bandwidth), ("<vlan>", net.vlan),
                            ("<virtualport>", net.virtualport), ("<filterref>", net.filterref),
                            ("<mtu>", net.mtu), ("<driver>", net.driver), ("<link>", net.link),
                            ("<ip>", net.ips), ("<rom>", net.rom)):
            if value:
                raise _unsupported(f"interface {alias}: {what}")
        netdev_id = f"host{alias}"
        if net.type == "user":
            netdev: dict[str, Any] = {"type": "user", "id": netdev_id}
        elif net.type in ("network", "bridge", "ethernet"):
            fds = self.runtime.tap_fds.get(alias)
            if not fds:
                raise CommandUnsupported(f"interface {alias} of type '{net.type}' needs a tap device: the "
                                         "process layer must open it and pass its fd in the runtime")
            netdev = {"type": "tap", "fd": str(fds[0]) if len(fds) == 1 else None,
                      "fds": ":".join(str(f) for f in fds) if len(fds) > 1 else None, "id": netdev_id}
        else:
            raise _unsupported(f"interface type '{net.type}'")
        model = net.model.type if net.model is not None else None
        driver = _NIC_MODELS.get(model or "")
        if driver is None:
            raise _unsupported(f"NIC model '{model}'")
        if driver == "virtio-net-pci":
            self._need(QemuCapsFlag.VIRTIO_NET, "a virtio NIC")
        args += ["-netdev", json_arg(netdev)]
        args += ["-device", json_arg({"driver": driver, "netdev": netdev_id, "id": alias,
                                      "mac": net.mac.address if net.mac is not None else None,
                                      "bootindex": self.boot.get(id(net)),
                                      **self._pci(net.address, f"interface {alias}")})]

    # --- character devices --------------------------------------------------------------------------

    def _chardev(self, chr_: CharDevice | Any, cid: str, args: list[str],
                 src: CharSource | None = None) -> None:
        if getattr(chr_, "log", None) is not None:
            raise _unsupported("a character device <log>")
        if src is None:
            src = chr_.sources[0] if chr_.sources else None
        t = chr_.type
        if t == "pty":
            opt = keyval("pty", ("id", cid))
        elif t == "null":
            opt = keyval("null", ("id", cid))
        elif t == "file":
            if src is None or not src.path:
                raise CommandUnsupported(f"character device {cid} of type 'file' has no path")
            opt = keyval("file", ("id", cid), ("path", src.path), ("append", src.append))
        elif t == "unix":
            path = src.path if src is not None else None
            if not path:
                raise CommandUnsupported(f"character device {cid} of type 'unix' has no path")
            bind = src is None or src.mode != "connect"
            opt = keyval("socket", ("id", cid), ("path", path), ("server", True if bind else None),
                         ("wait", False if bind else None))
        elif t == "tcp":
            if src is None or src.reconnect is not None or src.tls is not None:
                raise _unsupported(f"character device {cid}: this TCP socket form")
            bind = src.mode == "bind"
            telnet = chr_.protocol is not None and chr_.protocol.type == "telnet"
            if chr_.protocol is not None and chr_.protocol.type not in ("raw", "telnet"):
                raise _unsupported(f"character device protocol '{chr_.protocol.type}'")
            opt = keyval("socket", ("id", cid), ("host", src.host), ("port", src.service),
                         ("telnet", True if telnet else None), ("server", True if bind else None),
                         ("wait", False if bind else None))
        else:
            raise _unsupported(f"character device type '{t}'")
        args += ["-chardev", opt]

    def _chardevs(self, args: list[str]) -> None:
        devs = self.devs
        for i, s in enumerate(devs.serials):
            ttype = s.target.type if s.target is not None else "isa-serial"
            if ttype != "isa-serial":
                raise _unsupported(f"serial target type '{ttype}'")
            alias = self._alias(s, f"serial{i}")
            self._chardev(s, f"char{alias}", args)
            args += ["-device", json_arg({"driver": "isa-serial", "chardev": f"char{alias}", "id": alias,
                                          "index": int(s.target.port or i) if s.target else i})]
        for i, p in enumerate(devs.parallels):
            alias = self._alias(p, f"parallel{i}")
            self._chardev(p, f"char{alias}", args)
            args += ["-device", json_arg({"driver": "isa-parallel", "chardev": f"char{alias}", "id": alias})]
        for i, ch in enumerate(devs.channels):
            alias = self._alias(ch, f"channel{i}")
            tgt = ch.target
            if tgt is None or tgt.type != "virtio":
                raise _unsupported(f"channel target type '{tgt.type if tgt else None}'")
            src = None
            if ch.type == "unix" and not any(s.path for s in ch.sources):
                if self.runtime.channel_dir is None or not tgt.name:
                    raise CommandUnsupported(f"channel {alias} needs a socket path: name the target or "
                                             "give the runtime a channel directory")
                # The socket libvirt generates in the domain's channel directory.
                src = CharSource(mode="bind", path=f"{self.runtime.channel_dir}/{tgt.name}")
            self._chardev(ch, f"char{alias}", args, src)
            a = ch.address
            args += ["-device", json_arg({
                "driver": "virtserialport",
                "bus": f"virtio-serial{a.controller or 0}.{a.bus or 0}" if a is not None else None,
                "nr": int(a.port) if a is not None and a.port else None,
                "chardev": f"char{alias}", "id": alias, "name": tgt.name})]
        for i, con in enumerate(devs.consoles):
            ttype = con.target.type if con.target is not None else "serial"
            if ttype == "serial" and i == 0:
                continue  # the first serial port, already built
            if ttype != "virtio":
                raise _unsupported(f"console target type '{ttype}'")
            alias = self._alias(con, f"console{i}")
            self._chardev(con, f"char{alias}", args)
            args += ["-device", json_arg({"driver": "virtconsole", "chardev": f"char{alias}", "id": alias})]

    # --- input, audio, graphics, video --------------------------------------------------------------

    def _inputs(self, args: list[str]) -> None:
        for i, inp in enumerate(self.devs.inputs):
            alias = self._alias(inp, f"input{i}")
            if inp.bus == "ps2":
                continue  # the PC chipset's own
            if inp.source is not None or inp.driver is not None:
                raise _unsupported("input <source>/<driver>")
            if inp.bus == "usb" and inp.type in _USB_INPUTS:
                args += ["-device", json_arg({"driver": _USB_INPUTS[inp.type], "id": alias,
                                              **self._usb(inp.address)})]
            elif inp.bus == "virtio" and inp.type in _VIRTIO_INPUTS:
                args += ["-device", json_arg({"driver": _VIRTIO_INPUTS[inp.type], "id": alias,
                                              **self._pci(inp.address, f"input {alias}")})]
            else:
                raise _unsupported(f"input {inp.type} on bus {inp.bus}")

    def _audio(self, args: list[str]) -> list[str]:
        ids = []
        for a in self.devs.audios:
            if a.type != "none" or a.input is not None or a.output is not None:
                raise _unsupported(f"audio backend '{a.type}'")
            aid = f"audio{a.id or 1}"
            args += ["-audiodev", json_arg({"id": aid, "driver": "none"})]
            ids.append(aid)
        return ids

    def _graphics(self, args: list[str], audio_ids: list[str]) -> None:
        gfx = self.devs.graphics
        if len(gfx) > 1:
            raise _unsupported("more than one <graphics>")
        for g in gfx:
            if g.type != "vnc":
                raise _unsupported(f"graphics type '{g.type}'")
            self._need(QemuCapsFlag.VNC, "VNC graphics")
            if g.gl is not None or g.power_control is not None or g.audio is not None:
                raise _unsupported("VNC <gl>, powerControl or <audio>")
            listen = g.listens[0] if g.listens else None
            if g.socket is not None or (listen is not None and listen.type == "socket"):
                path = g.socket or (listen.socket if listen is not None else None)
                if not path:
                    raise _unsupported("VNC on an automatic UNIX socket")
                where = keyval(("vnc", f"unix:{path}"))
            elif listen is not None and listen.type == "none":
                where = "none"
            elif listen is not None and listen.type in (None, "address"):
                addr = (listen.address or g.listen or self.conf.vnc_listen)
                if ":" in addr:
                    addr = f"[{addr}]"  # an IPv6 address
                if g.autoport or g.port in (None, -1):
                    # Pretend mode (domxml-to-native) shows the first display, like libvirt.
                    port = self.runtime.vnc_port if self.runtime.vnc_port is not None else 5900
                else:
                    port = g.port
                if port < 5900:
                    raise CommandUnsupported(f"VNC port {port} is below 5900: QEMU counts displays from "
                                             "5900")
                # QEMU's syntax puts the address first, as a bare word: escape it by hand.
                where = escape_opt(f"{addr}:{port - 5900}")
            else:
                raise _unsupported(f"VNC listen type '{listen.type if listen else None}'")
            parts: list[Any] = [where]
            if g.websocket is not None and g.websocket != 0:
                parts.append(("websocket", g.websocket))
            if g.share_policy is not None:
                parts.append(("share", g.share_policy))
            if g.passwd is not None or self.conf.vnc_password is not None:
                parts.append(("password", True))
            if audio_ids:
                parts.append(("audiodev", audio_ids[0]))
            args += ["-vnc", keyval(*parts)]
            if g.keymap is not None:
                args += ["-k", g.keymap]

    def _videos(self, args: list[str]) -> None:
        for i, v in enumerate(self.devs.videos):
            m = v.model
            mtype = m.type if m is not None else "cirrus"
            alias = self._alias(v, f"video{i}")
            primary = i == 0
            if v.driver is not None or (m is not None and (m.acceleration is not None
                                                           or m.resolution is not None)):
                raise _unsupported("video <driver>, <acceleration> or <resolution>")
            props: dict[str, Any]
            if mtype == "none":
                continue
            if mtype == "cirrus" and primary:
                self._need(QemuCapsFlag.CIRRUS_VGA, "cirrus video")
                props = {"driver": "cirrus-vga", "id": alias}
            elif mtype == "vga" and primary:
                self._need(QemuCapsFlag.VGA, "VGA video")
                props = {"driver": "VGA", "id": alias,
                         "vgamem_mb": (m.vram or 16384) // 1024 if m is not None else 16}
            elif mtype == "virtio":
                self._need(QemuCapsFlag.VIRTIO_GPU, "virtio video")
                props = {"driver": "virtio-vga" if primary else "virtio-gpu-pci", "id": alias,
                         "max_outputs": m.heads if m is not None else 1}
            elif mtype == "qxl" and m is not None:
                self._need(QemuCapsFlag.QXL, "QXL video")
                props = {"driver": "qxl-vga" if primary else "qxl", "id": alias, "max_outputs": m.heads,
                         "ram_size": (m.ram or 0) * 1024, "vram_size": (m.vram or 0) * 1024,
                         "vram64_size_mb": (m.vram64 or 0) // 1024, "vgamem_mb": (m.vgamem or 0) // 1024}
            else:
                raise _unsupported(f"video model '{mtype}'{'' if primary else ' as a secondary video'}")
            args += ["-device", json_arg({**props, **self._pci(v.address, f"video {alias}")})]

    # --- watchdog, balloon, rng, panic --------------------------------------------------------------

    def panics(self, args: list[str]) -> None:
        """The pvpanic devices; libvirt puts them after -sandbox, so build() leaves them out."""
        for p in self.devs.panics:
            if p.model not in (None, "isa"):
                raise _unsupported(f"panic model '{p.model}'")
            self._need(QemuCapsFlag.PVPANIC, "<panic model='isa'>")
            addr = p.address
            if addr is not None and addr.type != "isa":
                raise CommandUnsupported(f"<panic model='isa'> needs an ISA address, not type '{addr.type}'")
            args += ["-device", json_arg({"driver": "pvpanic",
                                          "ioport": addr.iobase if addr is not None else None})]

    def _watchdogs(self, args: list[str]) -> None:
        for i, wd in enumerate(self.devs.watchdogs):
            alias = self._alias(wd, f"watchdog{i}")
            if wd.model == "i6300esb":
                args += ["-device", json_arg({"driver": "i6300esb", "id": alias,
                                              **self._pci(wd.address, "the watchdog")})]
            elif wd.model == "ib700":
                args += ["-device", json_arg({"driver": "ib700", "id": alias})]
            else:
                raise _unsupported(f"watchdog model '{wd.model}'")
            args += ["-watchdog-action", _WATCHDOG_ACTIONS[wd.action or "reset"]]

    def _balloon(self, args: list[str]) -> None:
        b = self.devs.memballoon
        if b is None or b.model == "none":
            return
        if b.model != "virtio" or b.driver is not None:
            raise _unsupported(f"memballoon model '{b.model}' or its <driver>")
        self._need(QemuCapsFlag.VIRTIO_BALLOON, "the virtio balloon")
        args += ["-device", json_arg({"driver": "virtio-balloon-pci", "id": self._alias(b, "balloon0"),
                                      "deflate-on-oom": b.autodeflate,
                                      "free-page-reporting": b.free_page_reporting,
                                      **self._pci(b.address, "the memory balloon")})]

    def _rngs(self, args: list[str]) -> None:
        for i, rng in enumerate(self.devs.rngs):
            alias = self._alias(rng, f"rng{i}")
            backend = rng.backend
            if rng.model != "virtio" or backend is None:
                raise _unsupported(f"RNG model '{rng.model}'")
            self._need(QemuCapsFlag.VIRTIO_RNG, "a virtio RNG")
            obj = f"obj{alias}"
            if backend.model == "random":
                self._need(QemuCapsFlag.RNG_RANDOM, "a random RNG backend")
                args += ["-object", json_arg({"qom-type": "rng-random", "id": obj,
                                              "filename": backend.path or "/dev/urandom"})]
            elif backend.model == "builtin":
                self._need(QemuCapsFlag.RNG_BUILTIN, "the builtin RNG backend")
                args += ["-object", json_arg({"qom-type": "rng-builtin", "id": obj})]
            elif backend.model == "egd":
                self._need(QemuCapsFlag.RNG_EGD, "an EGD RNG backend")
                self._chardev(backend, f"char{alias}", args)
                args += ["-object", json_arg({"qom-type": "rng-egd", "id": obj, "chardev": f"char{alias}"})]
            else:
                raise _unsupported(f"RNG backend '{backend.model}'")
            rate = rng.rate
            args += ["-device", json_arg({"driver": "virtio-rng-pci", "rng": obj, "id": alias,
                                          "max-bytes": rate.bytes if rate is not None else None,
                                          "period": rate.period if rate is not None else None,
                                          **self._pci(rng.address, f"RNG {alias}")})]
