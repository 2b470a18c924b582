# SPDX-License-Identifier: LGPL-2.1-or-later
"""Storage, controller, network and host devices of a domain, and the device address."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from pyvirt._errcodes import VIR_FROM_STORAGE
from pyvirt.xml.base import (
    Attr,
    Child,
    Children,
    Enum,
    Flag,
    Hex,
    Int,
    OnOff,
    ParseState,
    Str,
    Text,
    Uuid,
    XMLObject,
    YesNo,
)
from pyvirt.xml.domain_os import DeviceSecLabel
from pyvirt.xml.units import Memory

ON_OFF = OnOff()
YES_NO = YesNo()


def _is(attr: str, *values: str) -> Callable[[Any], bool]:
    return lambda o: o._values.get(attr) in values


# --- shared device parts ----------------------------------------------------------------------------

class Address(XMLObject):
    """Where a device sits: the attributes used depend on the address type."""

    TAG = "address"
    # The address types of x86 machines (s390 ccw, spapr-vio and dimm slots are not modelled).
    type = Attr("type", Enum("pci", "drive", "virtio-serial", "ccid", "usb", "isa", "unassigned"))
    domain = Attr("domain", Hex(4, 0xFFFF), when=_is("type", "pci"))
    pci_bus = Attr("bus", Hex(2, 0xFF), when=_is("type", "pci"))
    slot = Attr("slot", Hex(2, 0x1F), when=_is("type", "pci"))
    function = Attr("function", Hex(1, 7), when=_is("type", "pci"))
    multifunction = Attr("multifunction", ON_OFF, when=_is("type", "pci"))
    controller = Attr("controller", Int(), when=_is("type", "drive", "virtio-serial", "ccid"))
    bus = Attr("bus", Int(), when=_is("type", "drive", "virtio-serial"))
    target = Attr("target", Int(), when=_is("type", "drive"))
    unit = Attr("unit", Int(), when=_is("type", "drive"))
    usb_bus = Attr("bus", Int(), when=_is("type", "usb"))
    port = Attr("port", Str(), when=_is("type", "virtio-serial", "usb"))
    ccid_slot = Attr("slot", Int(), when=_is("type", "ccid"))
    iobase = Attr("iobase", Hex(1, 0xFFFF), when=_is("type", "isa"))

    @classmethod
    def pci(cls, bus: int, slot: int, function: int = 0, multifunction: bool | None = None) -> Address:
        return cls(type="pci", domain=0, pci_bus=bus, slot=slot, function=function,
                   multifunction=multifunction)

    @classmethod
    def drive(cls, controller: int, bus: int, target: int, unit: int) -> Address:
        return cls(type="drive", controller=controller, bus=bus, target=target, unit=unit)


class Alias(XMLObject):
    TAG = "alias"
    name = Attr("name", Str(nonempty=True))


class BootOrder(XMLObject):
    TAG = "boot"
    order = Attr("order", Int(1))


class ROM(XMLObject):
    TAG = "rom"
    bar = Attr("bar", ON_OFF)
    file = Attr("file", Str())
    enabled = Attr("enabled", YES_NO)


class ACPIIndex(XMLObject):
    TAG = "acpi"
    index = Attr("index", Int(1, 16383))


class Device(XMLObject):
    """Fields every device ends with, in libvirt's order (its virDomainDeviceInfo)."""

    _TAIL: ClassVar[tuple[str, ...]] = ("boot", "alias", "rom", "acpi", "address")

    boot = Child(BootOrder)
    alias = Child(Alias)
    rom = Child(ROM)
    acpi = Child(ACPIIndex)
    address = Child(Address)


# --- <disk> -----------------------------------------------------------------------------------------

class DiskHost(XMLObject):
    TAG = "host"
    name = Attr("name", Str())
    port = Attr("port", Int(0, 65535))
    transport = Attr("transport", Enum("tcp", "unix", "rdma"))
    socket = Attr("socket", Str())


class Secret(XMLObject):
    TAG = "secret"
    type = Attr("type", Enum("ceph", "iscsi", "passphrase", "volume", "tls", "vtpm"))
    usage = Attr("usage", Str())
    uuid = Attr("uuid", Uuid())


class Auth(XMLObject):
    TAG = "auth"
    username = Attr("username", Str(nonempty=True))
    secret = Child(Secret)


class Encryption(XMLObject):
    TAG = "encryption"
    format = Attr("format", Enum("default", "qcow", "luks", "luks2", "luks-any"))
    engine = Attr("engine", Enum("default", "qemu", "librbd"))
    secrets = Children(Secret)

    def _after_parse(self, st: ParseState) -> None:
        if self.format is None:
            # libvirt's words and error domain (virStorageEncryptionParseNode)
            err = st.error("unknown volume encryption format: give <encryption> a format, such as "
                           "format='luks'")
            err.domain = VIR_FROM_STORAGE
            raise err


class DiskSnapshotName(XMLObject):
    TAG = "snapshot"
    name = Attr("name", Str())


class DiskConfigFile(XMLObject):
    TAG = "config"
    file = Attr("file", Str())


class Reservations(XMLObject):
    TAG = "reservations"
    managed = Attr("managed", YES_NO)


class Initiator(XMLObject):
    TAG = "initiator"
    iqn = Child(lambda: IQN, "iqn")


class IQN(XMLObject):
    TAG = "iqn"
    name = Attr("name", Str())


class DiskSource(XMLObject):
    TAG = "source"
    # Which attributes apply is decided by the disk's type, which the source does not know: the
    # disk sets ``disk_type`` after parsing (see Disk._after_parse).
    protocol = Attr("protocol", Enum("nbd", "rbd", "sheepdog", "gluster", "iscsi", "http", "https", "ftp",
                                     "ftps", "tftp", "ssh", "vxhs", "nfs"))
    name = Attr("name", Str())
    tls = Attr("tls", YES_NO)
    file = Attr("file", Str())
    dev = Attr("dev", Str())
    dir = Attr("dir", Str())
    pool = Attr("pool", Str())
    volume = Attr("volume", Str())
    mode = Attr("mode", Enum("host", "direct"))
    query = Attr("query", Str())
    startup_policy = Attr("startupPolicy", Enum("mandatory", "requisite", "optional"))
    hosts = Children(DiskHost)
    snapshot = Child(DiskSnapshotName)
    config = Child(DiskConfigFile)
    auth = Child(Auth)
    encryption = Child(Encryption)
    reservations = Child(Reservations)
    initiator = Child(Initiator)
    seclabels = Children(DeviceSecLabel)


class DiskFormat(XMLObject):
    TAG = "format"
    type = Attr("type", Str())


class BackingStore(XMLObject):
    TAG = "backingStore"
    _KEEP_EMPTY = True
    type = Attr("type", Enum("file", "block", "dir", "network", "volume", "nvme", "vhostuser"))
    format = Child(DiskFormat)
    source = Child(DiskSource)
    backing = Child(lambda: BackingStore, "backingStore")


class DiskDriver(XMLObject):
    TAG = "driver"
    name = Attr("name", Str(nonempty=True))
    type = Attr("type", Str(nonempty=True))
    cache = Attr("cache", Enum("default", "none", "writethrough", "writeback", "directsync", "unsafe"))
    error_policy = Attr("error_policy", Enum("default", "stop", "report", "ignore", "enospace"))
    rerror_policy = Attr("rerror_policy", Enum("default", "stop", "report", "ignore"))
    io = Attr("io", Enum("default", "native", "threads", "io_uring"))
    ioeventfd = Attr("ioeventfd", ON_OFF)
    event_idx = Attr("event_idx", ON_OFF)
    copy_on_read = Attr("copy_on_read", ON_OFF)
    discard = Attr("discard", Enum("default", "unmap", "ignore"))
    iothread = Attr("iothread", Int(1))
    detect_zeroes = Attr("detect_zeroes", Enum("default", "off", "on", "unmap"))
    queues = Attr("queues", Int(1))
    queue_size = Attr("queue_size", Int(1))


class DiskTarget(XMLObject):
    TAG = "target"
    dev = Attr("dev", Str(nonempty=True))
    bus = Attr("bus", Enum("ide", "fdc", "scsi", "virtio", "xen", "usb", "uml", "sata", "sd"))
    tray = Attr("tray", Enum("open", "closed"))
    removable = Attr("removable", ON_OFF)
    rotation_rate = Attr("rotation_rate", Int(1, 65535))


class Geometry(XMLObject):
    TAG = "geometry"
    cyls = Attr("cyls", Int())
    heads = Attr("heads", Int())
    secs = Attr("secs", Int())
    trans = Attr("trans", Enum("auto", "none", "lba"))


class BlockIO(XMLObject):
    TAG = "blockio"
    logical_block_size = Attr("logical_block_size", Int())
    physical_block_size = Attr("physical_block_size", Int())


def _iotune_int() -> Int:
    return Int(0, 2**63 - 1)


class IOTune(XMLObject):
    TAG = "iotune"
    total_bytes_sec = Text("total_bytes_sec", _iotune_int())
    read_bytes_sec = Text("read_bytes_sec", _iotune_int())
    write_bytes_sec = Text("write_bytes_sec", _iotune_int())
    total_iops_sec = Text("total_iops_sec", _iotune_int())
    read_iops_sec = Text("read_iops_sec", _iotune_int())
    write_iops_sec = Text("write_iops_sec", _iotune_int())
    total_bytes_sec_max = Text("total_bytes_sec_max", _iotune_int())
    read_bytes_sec_max = Text("read_bytes_sec_max", _iotune_int())
    write_bytes_sec_max = Text("write_bytes_sec_max", _iotune_int())
    total_iops_sec_max = Text("total_iops_sec_max", _iotune_int())
    read_iops_sec_max = Text("read_iops_sec_max", _iotune_int())
    write_iops_sec_max = Text("write_iops_sec_max", _iotune_int())
    size_iops_sec = Text("size_iops_sec", _iotune_int())
    group_name = Text("group_name")
    total_bytes_sec_max_length = Text("total_bytes_sec_max_length", _iotune_int())
    read_bytes_sec_max_length = Text("read_bytes_sec_max_length", _iotune_int())
    write_bytes_sec_max_length = Text("write_bytes_sec_max_length", _iotune_int())
    total_iops_sec_max_length = Text("total_iops_sec_max_length", _iotune_int())
    read_iops_sec_max_length = Text("read_iops_sec_max_length", _iotune_int())
    write_iops_sec_max_length = Text("write_iops_sec_max_length", _iotune_int())


DISK_TYPES = ("file", "block", "dir", "network", "volume", "nvme", "vhostuser")
_SOURCE_ATTRS = {
    "file": ("file",), "block": ("dev",), "dir": ("dir",), "network": ("protocol", "name", "tls", "query"),
    "volume": ("pool", "volume", "mode"),
}


class Disk(Device):
    TAG = "disk"
    type = Attr("type", Enum(*DISK_TYPES))
    device = Attr("device", Enum("disk", "cdrom", "floppy", "lun"))
    model = Attr("model", Enum("virtio", "virtio-transitional", "virtio-non-transitional"))
    rawio = Attr("rawio", YES_NO)
    sgio = Attr("sgio", Enum("filtered", "unfiltered"))
    snapshot = Attr("snapshot", Enum("default", "no", "internal", "external"))
    driver = Child(DiskDriver)
    auth = Child(Auth)
    source = Child(DiskSource)
    backing_store = Child(BackingStore)
    geometry = Child(Geometry)
    blockio = Child(BlockIO)
    target = Child(DiskTarget)
    iotune = Child(IOTune)
    readonly = Flag("readonly")
    shareable = Flag("shareable")
    transient = Flag("transient")
    serial = Text("serial")
    wwn = Text("wwn")
    vendor = Text("vendor")
    product = Text("product")
    encryption = Child(Encryption)

    def _after_parse(self, st: ParseState) -> None:
        if self.target is None or not self.target.dev:
            raise st.error("missing target information for device")
        if self.wwn is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{16}", self.wwn):
            raise st.error(f"malformed wwn '{self.wwn}' of disk '{self.target.dev}'")
        if self.serial is not None and not re.fullmatch(r"[A-Za-z0-9_ .+-]*", self.serial):
            raise st.error(f"disk serial '{self.serial}' of disk '{self.target.dev}' may contain only "
                           "letters, digits, spaces and '_ .+-'")


# --- <controller> -----------------------------------------------------------------------------------

CONTROLLER_MODELS = {
    "scsi": ("auto", "buslogic", "lsilogic", "lsisas1068", "vmpvscsi", "ibmvscsi", "virtio-scsi",
             "lsisas1078", "virtio-transitional", "virtio-non-transitional", "ncr53c90", "am53c974",
             "dc390"),
    "usb": ("piix3-uhci", "piix4-uhci", "ehci", "ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3",
            "vt82c686b-uhci", "pci-ohci", "nec-xhci", "qusb1", "qusb2", "qemu-xhci", "none"),
    "pci": ("pci-root", "pcie-root", "pci-bridge", "dmi-to-pci-bridge", "pcie-root-port",
            "pcie-switch-upstream-port", "pcie-switch-downstream-port", "pci-expander-bus",
            "pcie-expander-bus", "pcie-to-pci-bridge"),
    "ide": ("piix3", "piix4", "ich6"),
    "virtio-serial": ("virtio", "virtio-transitional", "virtio-non-transitional"),
    "isa": (),
    "sata": (), "fdc": (), "ccid": (), "xenbus": (),
}


class ControllerModelName(XMLObject):
    TAG = "model"
    name = Attr("name", Str(nonempty=True))


class ControllerTarget(XMLObject):
    TAG = "target"
    chassisNr = Attr("chassisNr", Int(1, 255))
    chassis = Attr("chassis", Int(0, 255))
    port = Attr("port", Hex(1, 255))
    busNr = Attr("busNr", Int(1, 254))
    hotplug = Attr("hotplug", ON_OFF)


class ControllerDriver(XMLObject):
    TAG = "driver"
    queues = Attr("queues", Int(1))
    cmd_per_lun = Attr("cmd_per_lun", Int())
    max_sectors = Attr("max_sectors", Int())
    ioeventfd = Attr("ioeventfd", ON_OFF)
    iothread = Attr("iothread", Int(1))


class ControllerMaster(XMLObject):
    TAG = "master"
    startport = Attr("startport", Int())


class Controller(Device):
    TAG = "controller"
    type = Attr("type", Enum(*CONTROLLER_MODELS))
    index = Attr("index", Int(0, 2**31 - 1))
    model = Attr("model", Str(nonempty=True))
    ports = Attr("ports", Int(0, 2**31 - 1))
    vectors = Attr("vectors", Int(0, 2**31 - 1))
    model_name = Child(ControllerModelName)
    driver = Child(ControllerDriver)
    target = Child(ControllerTarget)
    master = Child(ControllerMaster)
    pcihole64 = Memory("pcihole64")

    def _after_parse(self, st: ParseState) -> None:
        ctype = self.type or "ide"  # libvirt's default controller type
        if self.model is not None and ctype in CONTROLLER_MODELS:
            models = CONTROLLER_MODELS[ctype]
            if self.model not in models:
                raise st.error(f"unknown model '{self.model}' of controller type '{ctype}', expected "
                               f"one of: {', '.join(models) or '(none)'}")


# --- <interface> ------------------------------------------------------------------------------------

_MAC_RE = re.compile(r"[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}")


class MacAddress(Str):
    """A MAC address, unicast only; libvirt prints it in lower case with two digits per byte."""

    def parse(self, text: str) -> str:
        if not _MAC_RE.fullmatch(text):
            raise ValueError(f"unable to parse MAC address '{text}': expected six hex bytes like "
                             "52:54:00:12:34:56")
        parts = [int(p, 16) for p in text.split(":")]
        if parts[0] & 1:
            raise ValueError(f"expected a unicast MAC address, found multicast '{text}'")
        return ":".join(f"{p:02x}" for p in parts)


class Mac(XMLObject):
    TAG = "mac"
    address = Attr("address", MacAddress())
    type = Attr("type", Enum("generated", "static"))
    check = Attr("check", YES_NO)


class NetSourceLocal(XMLObject):
    TAG = "local"
    address = Attr("address", Str())
    port = Attr("port", Int(0, 65535))


class NetSource(XMLObject):
    TAG = "source"
    network = Attr("network", Str())
    portgroup = Attr("portgroup", Str())
    bridge = Attr("bridge", Str())
    type = Attr("type", Str())
    path = Attr("path", Str())
    dev = Attr("dev", Str())
    mode = Attr("mode", Str())
    address = Attr("address", Str())
    port = Attr("port", Int(0, 65535))
    local = Child(NetSourceLocal)


class NetModel(XMLObject):
    TAG = "model"
    type = Attr("type", Str(nonempty=True))


class NetTarget(XMLObject):
    TAG = "target"
    dev = Attr("dev", Str(nonempty=True))
    managed = Attr("managed", YES_NO)


class NetDriverHost(XMLObject):
    TAG = "host"
    csum = Attr("csum", ON_OFF)
    gso = Attr("gso", ON_OFF)
    tso4 = Attr("tso4", ON_OFF)
    tso6 = Attr("tso6", ON_OFF)
    ecn = Attr("ecn", ON_OFF)
    ufo = Attr("ufo", ON_OFF)
    mrg_rxbuf = Attr("mrg_rxbuf", ON_OFF)


class NetDriverGuest(XMLObject):
    TAG = "guest"
    csum = Attr("csum", ON_OFF)
    tso4 = Attr("tso4", ON_OFF)
    tso6 = Attr("tso6", ON_OFF)
    ecn = Attr("ecn", ON_OFF)
    ufo = Attr("ufo", ON_OFF)


class NetDriver(XMLObject):
    TAG = "driver"
    name = Attr("name", Enum("qemu", "vhost"))
    txmode = Attr("txmode", Enum("iothread", "timer"))
    ioeventfd = Attr("ioeventfd", ON_OFF)
    event_idx = Attr("event_idx", ON_OFF)
    queues = Attr("queues", Int(1))
    rx_queue_size = Attr("rx_queue_size", Int(1))
    tx_queue_size = Attr("tx_queue_size", Int(1))
    rss = Attr("rss", ON_OFF)
    host = Child(NetDriverHost)
    guest = Child(NetDriverGuest)


class Link(XMLObject):
    TAG = "link"
    state = Attr("state", Enum("up", "down"))


class MTU(XMLObject):
    TAG = "mtu"
    size = Attr("size", Int(1, 65535))


class VirtualPortParams(XMLObject):
    TAG = "parameters"
    managerid = Attr("managerid", Str())
    typeid = Attr("typeid", Str())
    typeidversion = Attr("typeidversion", Str())
    instanceid = Attr("instanceid", Str())
    profileid = Attr("profileid", Str())
    interfaceid = Attr("interfaceid", Str())


class VirtualPort(XMLObject):
    TAG = "virtualport"
    type = Attr("type", Enum("802.1Qbg", "802.1Qbh", "openvswitch", "midonet"))
    parameters = Child(VirtualPortParams)


class VlanTag(XMLObject):
    TAG = "tag"
    id = Attr("id", Int(0, 4095), required=True)
    native_mode = Attr("nativeMode", Enum("tagged", "untagged"))


class Vlan(XMLObject):
    TAG = "vlan"
    trunk = Attr("trunk", YES_NO)
    tags = Children(VlanTag)


class BandwidthRate(XMLObject):
    average = Attr("average", Int())
    peak = Attr("peak", Int())
    burst = Attr("burst", Int())


class Bandwidth(XMLObject):
    TAG = "bandwidth"
    inbound = Child(BandwidthRate, "inbound")
    outbound = Child(BandwidthRate, "outbound")


class FilterParam(XMLObject):
    TAG = "parameter"
    name = Attr("name", Str())
    value = Attr("value", Str())


class FilterRef(XMLObject):
    TAG = "filterref"
    filter = Attr("filter", Str(nonempty=True))
    parameters = Children(FilterParam)


class NetIP(XMLObject):
    TAG = "ip"
    address = Attr("address", Str())
    family = Attr("family", Enum("ipv4", "ipv6"))
    prefix = Attr("prefix", Int(0, 128))


class Interface(Device):
    TAG = "interface"
    type = Attr("type", Enum("user", "ethernet", "vhostuser", "server", "client", "mcast", "network",
                             "bridge", "internal", "direct", "hostdev", "udp", "vdpa", "null", "vds"),
                required=True)
    managed = Attr("managed", YES_NO)
    trust_guest_rx_filters = Attr("trustGuestRxFilters", YES_NO)
    mac = Child(Mac)
    source = Child(NetSource)
    vlan = Child(Vlan)
    virtualport = Child(VirtualPort)
    bandwidth = Child(Bandwidth)
    ips = Children(NetIP)
    target = Child(NetTarget)
    model = Child(NetModel)
    driver = Child(NetDriver)
    filterref = Child(FilterRef)
    link = Child(Link)
    mtu = Child(MTU)


# --- <filesystem> -----------------------------------------------------------------------------------

class Octal(Int):
    """A file mode: read in octal, printed as four octal digits like libvirt does."""

    def __init__(self) -> None:
        super().__init__(0, 0o777)

    def parse(self, text: str) -> int:
        try:
            val = int(text, 8)
        except ValueError:
            raise ValueError(f"'{text}' is not an octal file mode") from None
        if not 0 <= val <= 0o777:
            raise ValueError(f"file mode '{text}' is out of range (0-0777)")
        return val

    def format(self, value: int) -> str:
        return f"{value:04o}"


class FSDriver(XMLObject):
    TAG = "driver"
    type = Attr("type", Enum("default", "path", "handle", "loop", "nbd", "ploop", "virtiofs"))
    wrpolicy = Attr("wrpolicy", Enum("immediate"))
    queue = Attr("queue", Int(1))


class FSSource(XMLObject):
    TAG = "source"
    dir = Attr("dir", Str())
    socket = Attr("socket", Str())


class FSTarget(XMLObject):
    TAG = "target"
    dir = Attr("dir", Str(nonempty=True))


class Filesystem(Device):
    TAG = "filesystem"
    # QEMU shares host directories only: libvirt's other filesystem types are for containers.
    type = Attr("type", Enum("mount"))
    accessmode = Attr("accessmode", Enum("passthrough", "mapped", "squash"))
    model = Attr("model", Enum("virtio", "virtio-transitional", "virtio-non-transitional"))
    multidevs = Attr("multidevs", Enum("default", "remap", "forbid", "warn"))
    fmode = Attr("fmode", Octal())
    dmode = Attr("dmode", Octal())
    driver = Child(FSDriver)
    source = Child(FSSource)
    target = Child(FSTarget)
    readonly = Flag("readonly")


# --- <hostdev> --------------------------------------------------------------------------------------

class HostdevVendorProduct(XMLObject):
    id = Attr("id", Hex(4, 0xFFFF), required=True)


class HostdevAdapter(XMLObject):
    TAG = "adapter"
    name = Attr("name", Str())


class HostdevSource(XMLObject):
    TAG = "source"
    protocol = Attr("protocol", Str())
    name = Attr("name", Str())
    startup_policy = Attr("startupPolicy", Enum("mandatory", "requisite", "optional"))
    guest_reset = Attr("guestReset", Enum("off", "uefi", "on"))
    hosts = Children(DiskHost)
    vendor = Child(HostdevVendorProduct, "vendor")
    product = Child(HostdevVendorProduct, "product")
    adapter = Child(HostdevAdapter)
    address = Child(lambda: HostdevSourceAddress, "address")


def _has(attr: str) -> Callable[[Any], bool]:
    # The form of a host address shows in which attributes it has (the hostdev's type is not known
    # here): read the parsed values, or the element while it is being parsed.
    def pred(o: XMLObject) -> bool:
        return attr in o._values or (o._node is not None and o._node.get(attr) is not None)
    return pred


class HostdevSourceAddress(XMLObject):
    TAG = "address"
    uuid = Attr("uuid", Uuid())
    domain = Attr("domain", Hex(4, 0xFFFF), when=_has("slot"))
    pci_bus = Attr("bus", Hex(2, 0xFF), when=_has("slot"))
    bus = Attr("bus", Int(), when=lambda o: not _has("slot")(o))
    slot = Attr("slot", Hex(2, 0x1F))
    function = Attr("function", Hex(1, 7))
    device = Attr("device", Int())
    target = Attr("target", Int())
    unit = Attr("unit", Int())


class HostdevDriver(XMLObject):
    TAG = "driver"
    name = Attr("name", Enum("default", "kvm", "vfio", "xen"))


class Hostdev(Device):
    TAG = "hostdev"
    mode = Attr("mode", Enum("subsystem", "capabilities"))
    type = Attr("type", Enum("usb", "pci", "scsi", "scsi_host", "mdev"), required=True)
    managed = Attr("managed", YES_NO)
    sgio = Attr("sgio", Enum("filtered", "unfiltered"))
    rawio = Attr("rawio", YES_NO)
    model = Attr("model", Str())
    display = Attr("display", ON_OFF)
    driver = Child(HostdevDriver)
    source = Child(HostdevSource)
    readonly = Flag("readonly")
    shareable = Flag("shareable")
