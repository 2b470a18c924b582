# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain-wide settings: <os>, <features>, <cpu>, <clock>, <pm>, <vcpu>, <cputune>, <memoryBacking>,
<seclabel>, <sysinfo>.  Declarations only; defaults come from the hypervisor driver."""

from __future__ import annotations

import re

from pyvirt.xml.base import (
    Attr,
    Body,
    Child,
    Children,
    Conv,
    Enum,
    Flag,
    Int,
    OnOff,
    Str,
    Text,
    XMLObject,
    YesNo,
)
from pyvirt.xml.units import Memory, ScaledAttr

ON_OFF = OnOff()
YES_NO = YesNo()


class CpuSet(Conv[str]):
    """A host CPU list ('0-3,^2,8'): libvirt stores a bitmap and prints it as ranges ('0-1,3,8')."""

    def parse(self, text: str) -> str:
        cpus: set[int] = set()
        for part in text.split(","):
            part = part.strip()
            neg = part.startswith("^")
            part = part[1:] if neg else part
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None:
                raise ValueError(f"'{text}' is not a CPU list like '0-3,^2,8'")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo or hi >= 16384:
                raise ValueError(f"invalid CPU range '{part}' in '{text}'")
            rng = set(range(lo, hi + 1))
            cpus = cpus - rng if neg else cpus | rng
        if not cpus:
            raise ValueError(f"CPU list '{text}' selects no CPU")
        return self.format_set(cpus)

    @staticmethod
    def format_set(cpus: set[int]) -> str:
        out: list[str] = []
        items = sorted(cpus)
        start = prev = items[0]
        for c in items[1:] + [-2]:
            if c == prev + 1:
                prev = c
                continue
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = c
        return ",".join(out)


# --- <os> -------------------------------------------------------------------------------------------

class OSType(XMLObject):
    TAG = "type"
    arch = Attr("arch", Str(nonempty=True))
    machine = Attr("machine", Str(nonempty=True))
    value = Body(Enum("hvm", "linux", "xen", "exe", "uml"))


class FirmwareFeature(XMLObject):
    TAG = "feature"
    enabled = Attr("enabled", YES_NO)
    name = Attr("name", Str(nonempty=True))


class OSFirmware(XMLObject):
    TAG = "firmware"
    features = Children(FirmwareFeature)


class Loader(XMLObject):
    TAG = "loader"
    readonly = Attr("readonly", YES_NO)
    secure = Attr("secure", YES_NO)
    stateless = Attr("stateless", YES_NO)
    type = Attr("type", Enum("rom", "pflash"))
    path = Body(Str(strip=True))


class Nvram(XMLObject):
    TAG = "nvram"
    template = Attr("template", Str())
    path = Body(Str(strip=True))


class Boot(XMLObject):
    TAG = "boot"
    dev = Attr("dev", Enum("fd", "hd", "cdrom", "network"))


class BootMenu(XMLObject):
    TAG = "bootmenu"
    enable = Attr("enable", YES_NO)
    timeout = Attr("timeout", Int(0, 65535))


class SMBIOS(XMLObject):
    TAG = "smbios"
    mode = Attr("mode", Enum("emulate", "host", "sysinfo"))


class BIOS(XMLObject):
    TAG = "bios"
    useserial = Attr("useserial", YES_NO)
    reboot_timeout = Attr("rebootTimeout", Int(-1, 65535))


class ACPITable(XMLObject):
    TAG = "table"
    type = Attr("type", Enum("slic"))
    path = Body(Str(strip=True))


class OSACPI(XMLObject):
    TAG = "acpi"
    tables = Children(ACPITable)


class OS(XMLObject):
    TAG = "os"
    _KEEP_EMPTY = True
    firmware = Attr("firmware", Enum("bios", "efi"))
    type = Child(OSType)
    firmware_info = Child(OSFirmware)
    loader = Child(Loader)
    nvram = Child(Nvram)
    kernel = Text("kernel")
    initrd = Text("initrd")
    cmdline = Text("cmdline")
    dtb = Text("dtb")
    acpi = Child(OSACPI)
    boot = Children(Boot)
    bootmenu = Child(BootMenu)
    bios = Child(BIOS)
    smbios = Child(SMBIOS)


# --- <features> -------------------------------------------------------------------------------------

class StateFeature(XMLObject):
    """A feature switched by a ``state`` attribute (``<vmport state='off'/>``)."""

    _KEEP_EMPTY = True
    state = Attr("state", ON_OFF)


class Apic(XMLObject):
    TAG = "apic"
    _KEEP_EMPTY = True
    eoi = Attr("eoi", ON_OFF)


class IOAPIC(XMLObject):
    TAG = "ioapic"
    driver = Attr("driver", Enum("kvm", "qemu"))


class SMM(XMLObject):
    TAG = "smm"
    _KEEP_EMPTY = True
    state = Attr("state", ON_OFF)
    tseg = Child(lambda: TSeg, "tseg")


class TSeg(XMLObject):
    TAG = "tseg"
    value = Body(Int(0, None))
    unit = Attr("unit", Str())


class HyperVFeature(XMLObject):
    _KEEP_EMPTY = True
    state = Attr("state", ON_OFF)
    retries = Attr("retries", Int(4096, 2**32 - 1))
    value = Attr("value", Str())


class HyperV(XMLObject):
    TAG = "hyperv"
    mode = Attr("mode", Enum("custom", "passthrough"))
    relaxed = Child(HyperVFeature, "relaxed")
    vapic = Child(HyperVFeature, "vapic")
    spinlocks = Child(HyperVFeature, "spinlocks")
    vpindex = Child(HyperVFeature, "vpindex")
    runtime = Child(HyperVFeature, "runtime")
    synic = Child(HyperVFeature, "synic")
    stimer = Child(HyperVFeature, "stimer")
    reset = Child(HyperVFeature, "reset")
    vendor_id = Child(HyperVFeature, "vendor_id")
    frequencies = Child(HyperVFeature, "frequencies")
    reenlightenment = Child(HyperVFeature, "reenlightenment")
    tlbflush = Child(HyperVFeature, "tlbflush")
    ipi = Child(HyperVFeature, "ipi")
    evmcs = Child(HyperVFeature, "evmcs")
    avic = Child(HyperVFeature, "avic")


class KVMFeatures(XMLObject):
    TAG = "kvm"
    hidden = Child(StateFeature, "hidden")
    hint_dedicated = Child(StateFeature, "hint-dedicated")
    poll_control = Child(StateFeature, "poll-control")
    pv_ipi = Child(StateFeature, "pv-ipi")


class Features(XMLObject):
    TAG = "features"
    # libvirt prints features in the order of its feature enum.
    acpi = Flag("acpi")
    apic = Child(Apic)
    pae = Flag("pae")
    hap = Child(StateFeature, "hap")
    privnet = Flag("privnet")
    hyperv = Child(HyperV)
    kvm = Child(KVMFeatures)
    pvspinlock = Child(StateFeature, "pvspinlock")
    pmu = Child(StateFeature, "pmu")
    vmport = Child(StateFeature, "vmport")
    smm = Child(SMM)
    ioapic = Child(IOAPIC)
    vmcoreinfo = Child(StateFeature, "vmcoreinfo")


# --- <cpu> ------------------------------------------------------------------------------------------

class CPUModel(XMLObject):
    TAG = "model"
    fallback = Attr("fallback", Enum("allow", "forbid"))
    vendor_id = Attr("vendor_id", Str())
    name = Body(Str(strip=True))


class CPUTopology(XMLObject):
    TAG = "topology"
    sockets = Attr("sockets", Int(1))
    dies = Attr("dies", Int(1))
    cores = Attr("cores", Int(1))
    threads = Attr("threads", Int(1))


class CPUFeature(XMLObject):
    TAG = "feature"
    policy = Attr("policy", Enum("force", "require", "optional", "disable", "forbid"))
    name = Attr("name", Str(nonempty=True))


class CPUCache(XMLObject):
    TAG = "cache"
    level = Attr("level", Int(1, 3))
    mode = Attr("mode", Enum("emulate", "passthrough", "disable"))


class NumaCell(XMLObject):
    TAG = "cell"
    id = Attr("id", Int())
    cpus = Attr("cpus", CpuSet())
    memory = ScaledAttr("memory")
    memAccess = Attr("memAccess", Enum("shared", "private"))
    discard = Attr("discard", YES_NO)


class Numa(XMLObject):
    TAG = "numa"
    cells = Children(NumaCell)


class CPU(XMLObject):
    TAG = "cpu"
    mode = Attr("mode", Enum("custom", "host-model", "host-passthrough", "maximum"))
    match = Attr("match", Enum("minimum", "exact", "strict"))
    check = Attr("check", Enum("none", "partial", "full"))
    migratable = Attr("migratable", ON_OFF)
    model = Child(CPUModel)
    vendor = Text("vendor")
    topology = Child(CPUTopology)
    cache = Child(CPUCache)
    features = Children(CPUFeature)
    numa = Child(Numa)


# --- <clock> ----------------------------------------------------------------------------------------

class CatchUp(XMLObject):
    TAG = "catchup"
    threshold = Attr("threshold", Int())
    slew = Attr("slew", Int())
    limit = Attr("limit", Int())


class Timer(XMLObject):
    TAG = "timer"
    name = Attr("name", Enum("platform", "pit", "rtc", "hpet", "tsc", "kvmclock", "hypervclock",
                             "armvtimer"))
    present = Attr("present", YES_NO)
    tickpolicy = Attr("tickpolicy", Enum("delay", "catchup", "merge", "discard"))
    track = Attr("track", Enum("boot", "guest", "wall", "realtime"))
    frequency = Attr("frequency", Int(0, None))
    mode = Attr("mode", Enum("auto", "native", "emulate", "paravirt", "smpsafe"))
    catchup = Child(CatchUp)


class Clock(XMLObject):
    TAG = "clock"
    _KEEP_EMPTY = True
    offset = Attr("offset", Enum("utc", "localtime", "timezone", "variable", "absolute"))
    timezone = Attr("timezone", Str(nonempty=True))
    adjustment = Attr("adjustment", Str())
    basis = Attr("basis", Enum("utc", "localtime"))
    timers = Children(Timer)


# --- <pm>, <vcpu>, <iothreads>, <cputune>, <memoryBacking> ------------------------------------------

class PMState(XMLObject):
    _KEEP_EMPTY = True
    enabled = Attr("enabled", YES_NO)


class PM(XMLObject):
    TAG = "pm"
    suspend_to_mem = Child(PMState, "suspend-to-mem")
    suspend_to_disk = Child(PMState, "suspend-to-disk")


class Vcpu(XMLObject):
    TAG = "vcpu"
    placement = Attr("placement", Enum("static", "auto"))
    cpuset = Attr("cpuset", CpuSet())
    current = Attr("current", Int(1, 16384))
    count = Body(Int(0, 16384))


class VcpuPin(XMLObject):
    TAG = "vcpupin"
    vcpu = Attr("vcpu", Int())
    cpuset = Attr("cpuset", CpuSet())


class EmulatorPin(XMLObject):
    TAG = "emulatorpin"
    cpuset = Attr("cpuset", CpuSet())


class IOThreadPin(XMLObject):
    TAG = "iothreadpin"
    iothread = Attr("iothread", Int(1))
    cpuset = Attr("cpuset", CpuSet())


class CPUTune(XMLObject):
    TAG = "cputune"
    shares = Text("shares", Int(0, 262144))
    period = Text("period", Int(1000, 1000000))
    quota = Text("quota", Int(-1, 17592186044415))
    global_period = Text("global_period", Int(1000, 1000000))
    global_quota = Text("global_quota", Int(-1, 17592186044415))
    emulator_period = Text("emulator_period", Int(1000, 1000000))
    emulator_quota = Text("emulator_quota", Int(-1, 17592186044415))
    iothread_period = Text("iothread_period", Int(1000, 1000000))
    iothread_quota = Text("iothread_quota", Int(-1, 17592186044415))
    vcpupins = Children(VcpuPin)
    emulatorpin = Child(EmulatorPin)
    iothreadpins = Children(IOThreadPin)


class IOThreadID(XMLObject):
    TAG = "iothread"
    id = Attr("id", Int(1))


class IOThreadIDs(XMLObject):
    TAG = "iothreadids"
    iothreads = Children(IOThreadID)


class HugePage(XMLObject):
    TAG = "page"
    size = ScaledAttr("size")
    nodeset = Attr("nodeset", Str())


class HugePages(XMLObject):
    TAG = "hugepages"
    _KEEP_EMPTY = True
    pages = Children(HugePage)


class MemorySource(XMLObject):
    TAG = "source"
    type = Attr("type", Enum("file", "anonymous", "memfd"))


class MemoryAccess(XMLObject):
    TAG = "access"
    mode = Attr("mode", Enum("shared", "private"))


class MemoryAllocation(XMLObject):
    TAG = "allocation"
    mode = Attr("mode", Enum("immediate", "ondemand"))
    threads = Attr("threads", Int(1))


class MemoryBacking(XMLObject):
    TAG = "memoryBacking"
    hugepages = Child(HugePages)
    nosharepages = Flag("nosharepages")
    locked = Flag("locked")
    source = Child(MemorySource)
    access = Child(MemoryAccess)
    allocation = Child(MemoryAllocation)
    discard = Flag("discard")


class NumaTuneMemory(XMLObject):
    TAG = "memory"
    mode = Attr("mode", Enum("strict", "preferred", "interleave", "restrictive"))
    nodeset = Attr("nodeset", CpuSet())
    placement = Attr("placement", Enum("static", "auto"))


class NumaTuneMemNode(XMLObject):
    TAG = "memnode"
    cellid = Attr("cellid", Int())
    mode = Attr("mode", Enum("strict", "preferred", "interleave", "restrictive"))
    nodeset = Attr("nodeset", CpuSet())


class NumaTune(XMLObject):
    TAG = "numatune"
    memory = Child(NumaTuneMemory)
    memnodes = Children(NumaTuneMemNode)


class MemTune(XMLObject):
    TAG = "memtune"
    hard_limit = Memory("hard_limit", keep_zero=True)
    soft_limit = Memory("soft_limit", keep_zero=True)
    swap_hard_limit = Memory("swap_hard_limit", keep_zero=True)


# --- <seclabel> -------------------------------------------------------------------------------------

class SecLabel(XMLObject):
    TAG = "seclabel"
    type = Attr("type", Enum("dynamic", "static", "none"))
    model = Attr("model", Str(nonempty=True))
    relabel = Attr("relabel", YES_NO)
    label = Text("label")
    imagelabel = Text("imagelabel")
    baselabel = Text("baselabel")


class DeviceSecLabel(XMLObject):
    """A per-device (disk source, chardev source...) override of the domain's labelling."""

    TAG = "seclabel"
    model = Attr("model", Str(nonempty=True))
    relabel = Attr("relabel", YES_NO)
    label = Text("label")


# --- <sysinfo> --------------------------------------------------------------------------------------

class SysinfoEntry(XMLObject):
    TAG = "entry"
    name = Attr("name", Str(nonempty=True))
    file = Attr("file", Str())
    value = Body(Str())


class SysinfoBlock(XMLObject):
    entries = Children(SysinfoEntry)


class Sysinfo(XMLObject):
    TAG = "sysinfo"
    type = Attr("type", Enum("smbios", "fwcfg"), required=True)
    bios = Child(SysinfoBlock, "bios")
    system = Child(SysinfoBlock, "system")
    baseBoard = Children(SysinfoBlock, "baseBoard")
    chassis = Child(SysinfoBlock, "chassis")
    oemStrings = Child(lambda: OEMStrings, "oemStrings")
    entries = Children(SysinfoEntry)


class OEMString(XMLObject):
    TAG = "entry"
    value = Body(Str())


class OEMStrings(XMLObject):
    TAG = "oemStrings"
    entries = Children(OEMString)
