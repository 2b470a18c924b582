# SPDX-License-Identifier: LGPL-2.1-or-later
"""The domain XML model (<domain>) and its entry points.

:func:`parse_domain` reads a document into a :class:`Domain`, then lets the hypervisor driver fill
defaults and validate through a :class:`DomainParserConfig` (libvirt's ``virDomainDefParserConfig``):
the models here know no hypervisor.  :meth:`Domain.to_xml` formats like libvirt's dumpxml.
"""

from __future__ import annotations

import re
from typing import Protocol

from pyvirt.errors import XMLError
from pyvirt.xml.base import (
    Attr,
    Child,
    Children,
    Enum,
    Int,
    Node,
    OnOff,
    ParseState,
    Raw,
    Str,
    Text,
    Uuid,
    XMLObject,
    format_element,
    parse_document,
)
from pyvirt.xml.domain_chardev import Channel, Console, Parallel, Serial
from pyvirt.xml.domain_devices import Controller, Disk, Filesystem, Hostdev, Interface
from pyvirt.xml.domain_os import (
    CPU,
    OS,
    PM,
    Clock,
    CPUTune,
    Features,
    IOThreadIDs,
    MemoryBacking,
    MemTune,
    NumaTune,
    SecLabel,
    Sysinfo,
    Vcpu,
)
from pyvirt.xml.domain_peripherals import (
    IOMMU,
    RNG,
    TPM,
    Audio,
    Graphics,
    Hub,
    Input,
    MemBalloon,
    Panic,
    Redirdev,
    RedirFilter,
    Shmem,
    Smartcard,
    Sound,
    Video,
    Vsock,
    Watchdog,
)
from pyvirt.xml.units import Memory

__all__ = ["Domain", "Devices", "DomainParserConfig", "parse_domain", "QEMU_NS"]

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


def _q(tag: str) -> str:
    return f"{{{QEMU_NS}}}{tag}"


class Resource(XMLObject):
    """<resource>: the resource partition (cgroup) the domain's processes go in."""

    TAG = "resource"
    partition = Text("partition")


# --- the qemu namespace -----------------------------------------------------------------------------

class QemuArg(XMLObject):
    TAG = _q("arg")
    value = Attr("value", Str(), required=True)


class QemuEnv(XMLObject):
    TAG = _q("env")
    name = Attr("name", Str(nonempty=True))
    value = Attr("value", Str())

    def _after_parse(self, st: ParseState) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name or ""):
            raise st.error(f"invalid environment variable name '{self.name}' in qemu:env: it must start "
                           "with a letter or '_' and hold only letters, digits and '_'")


class QemuCommandline(XMLObject):
    TAG = _q("commandline")
    args = Children(QemuArg)
    envs = Children(QemuEnv)


class QemuCapability(XMLObject):
    capability = Attr("capability", Str(nonempty=True))


class QemuCapabilities(XMLObject):
    TAG = _q("capabilities")
    add = Children(QemuCapability, _q("add"))
    delete = Children(QemuCapability, _q("del"))


# --- <devices> --------------------------------------------------------------------------------------

class Devices(XMLObject):
    TAG = "devices"
    _KEEP_EMPTY = True
    # libvirt prints devices grouped by kind in this order, whatever the input order.
    emulator = Text("emulator")
    disks = Children(Disk)
    controllers = Children(Controller)
    filesystems = Children(Filesystem)
    interfaces = Children(Interface)
    smartcards = Children(Smartcard)
    serials = Children(Serial)
    parallels = Children(Parallel)
    consoles = Children(Console)
    channels = Children(Channel)
    inputs = Children(Input)
    tpms = Children(TPM)
    graphics = Children(Graphics)
    sounds = Children(Sound)
    audios = Children(Audio)
    videos = Children(Video)
    hostdevs = Children(Hostdev)
    redirdevs = Children(Redirdev)
    redirfilter = Child(RedirFilter)
    hubs = Children(Hub)
    watchdogs = Children(Watchdog)
    memballoon = Child(MemBalloon)
    rngs = Children(RNG)
    panics = Children(Panic)
    shmems = Children(Shmem)
    iommu = Child(IOMMU)
    vsock = Child(Vsock)


# --- <domain> ---------------------------------------------------------------------------------------

# The config is saved as <name>.xml, written first as <name>.xml.new, in one directory.
_NAME_MAX = 255 - len(".xml.new")


def _check_name(name: str | None, st: ParseState) -> None:
    if name is None or name == "":
        raise st.error("missing domain name: <name> is required and must not be empty")
    if "/" in name:
        raise st.error(f"invalid domain name '{name}': it must not contain '/'")
    if name.startswith("."):
        raise st.error(f"invalid domain name '{name}': it must not start with '.'")
    if re.search(r"[\x00-\x1f\x7f]", name):
        raise st.error(f"invalid domain name {name!r}: it must not contain control characters")
    if len(name.encode()) > _NAME_MAX:
        raise st.error(f"invalid domain name: {len(name.encode())} bytes long, at most {_NAME_MAX}")


class Domain(XMLObject):
    TAG = "domain"
    type = Attr("type", Enum("qemu", "kvm", "kqemu", "xen", "lxc", "uml", "openvz", "test", "vmware",
                             "hyperv", "vbox", "phyp", "parallels", "bhyve", "vz", "none"))
    id = Attr("id", Int(-1, 2**31 - 1))
    name = Text("name", keep_empty=True)
    uuid = Text("uuid", Uuid())
    genid = Text("genid", Str(strip=True), keep_empty=True)
    title = Text("title", keep_empty=True)
    description = Text("description")
    metadata = Raw("metadata")
    max_memory = Memory("maxMemory", extra=(("slots", Int()),))
    memory = Memory("memory", extra=(("dumpCore", OnOff()),), keep_zero=True)
    current_memory = Memory("currentMemory")
    memtune = Child(MemTune)
    memory_backing = Child(MemoryBacking)
    vcpu = Child(Vcpu)
    iothreads = Text("iothreads", Int(0, 2**31 - 1))
    iothreadids = Child(IOThreadIDs)
    cputune = Child(CPUTune)
    numatune = Child(NumaTune)
    resource = Child(Resource)
    sysinfo = Children(Sysinfo)
    os = Child(OS)
    features = Child(Features)
    cpu = Child(CPU)
    clock = Child(Clock)
    on_poweroff = Text("on_poweroff", Enum("destroy", "restart", "preserve", "rename-restart"))
    on_reboot = Text("on_reboot", Enum("destroy", "restart", "preserve", "rename-restart"))
    on_crash = Text("on_crash", Enum("destroy", "restart", "preserve", "rename-restart",
                                     "coredump-destroy", "coredump-restart"))
    on_lockfailure = Text("on_lockfailure", Enum("default", "poweroff", "restart", "pause", "ignore"))
    pm = Child(PM)
    devices = Child(Devices)
    seclabels = Children(SecLabel)
    qemu_commandline = Child(QemuCommandline)
    qemu_capabilities = Child(QemuCapabilities)

    def _after_parse(self, st: ParseState) -> None:
        _check_name(self.name, st)
        for info in self.sysinfo:
            if info.type == "smbios":
                _keep_known_smbios_entries(info)
        if self.type is None:
            raise st.error("missing domain type attribute")
        if self.memory is None and not (self.cpu is not None and self.cpu.numa is not None
                                        and self.cpu.numa.cells):
            raise st.error("missing <memory>: the domain's memory size is required")
        if self.os is None or self.os.type is None or self.os.type.value is None:
            raise st.error("missing <os><type>: the OS type (hvm) is required")

    @property
    def disks(self) -> list[Disk]:
        return self.devices.disks if self.devices is not None else []

    def to_xml(self, inactive: bool = True, secure: bool = False) -> str:
        """The document as libvirt's dumpxml prints it (``--inactive`` unless ``inactive`` is False).

        ``secure`` is dumpxml's --security-info: without it graphics passwords are left out.
        """
        node = self.to_node()
        assert node is not None
        devices = node.find("devices")
        for g in devices.findall("graphics") if devices is not None else []:
            if g.get("passwd") is None:
                # The expiry and the connected policy belong to a password.
                _drop(g, "passwdValidTo")
                _drop(g, "connected")
            elif not secure:
                _drop(g, "passwd")
        if inactive:
            _strip_runtime_state(node)
        nsmap = {"qemu": QEMU_NS} if (self.qemu_commandline or self.qemu_capabilities) else {}
        return format_element(node, nsmap)

    @property
    def max_memory_slots(self) -> int | None:
        return self._values.get("max_memory:slots")

    @property
    def dump_core(self) -> bool | None:
        return self._values.get("memory:dumpCore")


# The SMBIOS fields libvirt knows per block; it ignores entries with other (or no) names.
_SMBIOS_FIELDS = {
    "bios": {"vendor", "version", "date", "release"},
    "system": {"manufacturer", "product", "version", "serial", "uuid", "sku", "family"},
    "baseBoard": {"manufacturer", "product", "version", "serial", "asset", "location"},
    "chassis": {"manufacturer", "version", "serial", "asset", "sku"},
}


def _keep_known_smbios_entries(info: Sysinfo) -> None:
    blocks = [("bios", info.bios), ("system", info.system), ("chassis", info.chassis),
              *(("baseBoard", b) for b in info.baseBoard)]
    for kind, block in blocks:
        if block is not None:
            block.entries = [e for e in block.entries if e.name in _SMBIOS_FIELDS[kind]]


def _drop(el: Node, attr: str) -> None:
    el.attrib.pop(attr, None)


def _strip_runtime_state(node: Node) -> None:
    """Leave out of an inactive definition what only a running domain has."""
    _drop(node, "id")
    devices = node.find("devices")
    for dev in devices.children if devices is not None else []:
        if dev.tag in ("serial", "parallel", "console", "channel") and dev.get("type") == "pty":
            # The pty a character device got when the domain started.
            _drop(dev, "tty")
            dev.children = [c for c in dev.children
                            if not (c.tag == "source" and set(c.attrib) <= {"path"} and not c.children)]
        if dev.tag == "channel":
            for tgt in dev.findall("target"):
                _drop(tgt, "state")
    for sec in node.findall("seclabel"):
        # Labels of dynamic labelling and image labels are chosen at start.
        drop = {"imagelabel", "label"} if sec.get("type") == "dynamic" else {"imagelabel"}
        sec.children = [c for c in sec.children if c.tag not in drop]
    # Aliases (of devices) are runtime names, except those the user chose (prefix "ua-").
    for dev in devices.children if devices is not None else []:
        for c in dev.children:
            if c.tag == "alias" and not (c.get("name") or "").startswith("ua-"):
                dev.children = [k for k in dev.children if k is not c]
                break


class DomainParserConfig(Protocol):
    """What a hypervisor driver plugs into parsing (libvirt's virDomainDefParserConfig)."""

    def post_parse(self, dom: Domain) -> None:
        """Fill the driver's defaults: addresses, implied controllers, machine type..."""

    def validate(self, dom: Domain) -> None:
        """Reject what the driver cannot run; raise :class:`XMLError`."""


def parse_domain(xml: str | bytes, *, ctx: DomainParserConfig | None = None, validate: bool = False,
                 post_parse: bool = True) -> Domain:
    """Parse domain XML, fill the driver's defaults and check it.

    ``validate`` is ``virsh define --validate``: unknown elements and attributes are errors instead of
    being dropped.  Every problem raises :class:`pyvirt.errors.XMLError`.
    """
    root = parse_document(xml, "domain")
    st = ParseState(strict=validate, path="/domain")
    try:
        dom = Domain.from_node(root, st)
    except RecursionError:
        raise XMLError("domain XML is nested too deeply") from None
    if ctx is not None:
        if post_parse:
            ctx.post_parse(dom)
        ctx.validate(dom)
    return dom
