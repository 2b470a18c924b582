# SPDX-License-Identifier: LGPL-2.1-or-later
"""Models and formatters of libvirt's capabilities XML (``virsh capabilities``) and domain
capabilities XML (``virsh domcapabilities``).

Pure data: nothing here knows QEMU; :mod:`pyvirt.qemu.caps_xml` fills the models. The documents
are only ever written, never parsed, and ``virsh capabilities`` is on the hot path of every
client, so the formatters build text with plain string code (lxml's import alone would cost more
than the whole warm call). Records are small slotted classes (see :class:`_Record`); every text and
attribute value goes through :func:`escape`.

Layout follows libvirt's (two-space indent, attributes in single quotes, element order), so that
diffs against libvirt's output show real differences only.
"""

from __future__ import annotations

__all__ = [
    "escape",
    "HostCpu",
    "HostTopologyCpu",
    "NumaCell",
    "CacheBank",
    "SecModel",
    "Host",
    "GuestMachine",
    "GuestFeature",
    "Guest",
    "Capabilities",
    "format_capabilities",
    "Enum",
    "Supported",
    "Loader",
    "OsCaps",
    "HostModel",
    "CustomCpuModel",
    "CpuCaps",
    "SevCaps",
    "DomainCaps",
    "format_domain_capabilities",
]

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;"})


class _Record:
    """Base of the records: slotted classes, because a NamedTuple or a dataclass costs ten to fifty
    times more to define at import, which every ``virsh capabilities`` pays."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


def escape(value: object) -> str:
    """Text or attribute value -> XML (attributes are single-quoted, so quotes are escaped too)."""
    return str(value).translate(_ESCAPES)


def _attrs(pairs: list[tuple[str, object | None]]) -> str:
    return "".join(f" {k}='{escape(v)}'" for k, v in pairs if v is not None)


# -- capabilities ---------------------------------------------------------------------------------


class HostTopologyCpu(_Record):
    __slots__ = ("id", "socket_id", "die_id", "core_id", "siblings")

    def __init__(self, id: int, socket_id: int, die_id: int, core_id: int, siblings: str) -> None:
        self.id = id
        self.socket_id = socket_id
        self.die_id = die_id
        self.core_id = core_id
        self.siblings = siblings  # cpuset syntax, e.g. '0,4'


class HostCpu(_Record):
    __slots__ = (
        "arch",
        "model",
        "vendor",
        "microcode",
        "signature",
        "topology",
        "maxphysaddr_bits",
        "features",
        "pages",
    )

    def __init__(
        self,
        arch: str,
        model: str | None = None,
        vendor: str | None = None,
        microcode: int | None = None,
        signature: tuple[int, int, int] | None = None,
        topology: tuple[int, int, int, int] | None = None,
        maxphysaddr_bits: int | None = None,
        features: list[str] | None = None,
        pages: list[int] | None = None,
    ) -> None:
        self.arch = arch
        self.model = model
        self.vendor = vendor
        self.microcode = microcode
        self.signature = signature  # family, model, stepping
        self.topology = topology  # sockets, dies, cores, threads
        self.maxphysaddr_bits = maxphysaddr_bits
        self.features: list[str] = features if features is not None else []
        self.pages: list[int] = pages if pages is not None else []  # page sizes in KiB


class NumaCell(_Record):
    __slots__ = ("id", "memory_kib", "pages", "distances", "cpus")

    def __init__(
        self,
        id: int,
        memory_kib: int,
        pages: list[tuple[int, int]],
        distances: list[tuple[int, int]],
        cpus: list[HostTopologyCpu],
    ) -> None:
        self.id = id
        self.memory_kib = memory_kib
        self.pages = pages  # (size KiB, count)
        self.distances = distances  # (cell id, distance)
        self.cpus = cpus


class CacheBank(_Record):
    __slots__ = ("id", "level", "type", "size_kib", "cpus")

    def __init__(self, id: int, level: int, type: str, size_kib: int, cpus: str) -> None:
        self.id = id
        self.level = level
        self.type = type  # both, code, data
        self.size_kib = size_kib
        self.cpus = cpus  # cpuset syntax


class SecModel(_Record):
    __slots__ = ("model", "doi", "baselabels")

    def __init__(self, model: str, doi: str, baselabels: dict[str, str] | None = None) -> None:
        self.model = model
        self.doi = doi
        self.baselabels: dict[str, str] = baselabels if baselabels is not None else {}  # domain type -> label


class Host(_Record):
    __slots__ = (
        "cpu",
        "uuid",
        "power_management",
        "iommu",
        "migration_live",
        "migration_transports",
        "cells",
        "cache",
        "secmodels",
    )

    def __init__(
        self,
        cpu: HostCpu,
        uuid: str | None = None,
        power_management: list[str] | None = None,
        iommu: bool | None = None,
        migration_live: bool = False,
        migration_transports: list[str] | None = None,
        cells: list[NumaCell] | None = None,
        cache: list[CacheBank] | None = None,
        secmodels: list[SecModel] | None = None,
    ) -> None:
        self.cpu = cpu
        self.uuid = uuid
        self.power_management: list[str] = (
            power_management if power_management is not None else []
        )  # suspend_mem, suspend_disk, suspend_hybrid
        self.iommu = iommu
        self.migration_live = migration_live
        self.migration_transports: list[str] = (
            migration_transports if migration_transports is not None else []
        )
        self.cells: list[NumaCell] = cells if cells is not None else []
        self.cache: list[CacheBank] = cache if cache is not None else []
        self.secmodels: list[SecModel] = secmodels if secmodels is not None else []


class GuestMachine(_Record):
    __slots__ = ("name", "canonical", "max_cpus", "deprecated")

    def __init__(
        self, name: str, canonical: str | None = None, max_cpus: int | None = None, deprecated: bool = False
    ) -> None:
        self.name = name
        self.canonical = canonical
        self.max_cpus = max_cpus
        self.deprecated = deprecated


class GuestFeature(_Record):
    __slots__ = ("name", "default", "toggle")

    def __init__(self, name: str, default: bool | None = None, toggle: bool | None = None) -> None:
        self.name = name
        self.default = default  # <acpi default='on'>; None: no attributes
        self.toggle = toggle


class Guest(_Record):
    __slots__ = ("os_type", "arch", "wordsize", "emulator", "machines", "domains", "features")

    def __init__(
        self,
        os_type: str,
        arch: str,
        wordsize: int,
        emulator: str | None,
        machines: list[GuestMachine],
        domains: list[str],
        features: list[GuestFeature] | None = None,
    ) -> None:
        self.os_type = os_type
        self.arch = arch
        self.wordsize = wordsize
        self.emulator = emulator
        self.machines = machines
        self.domains = domains  # domain types: qemu, kvm
        self.features: list[GuestFeature] = features if features is not None else []


class Capabilities(_Record):
    __slots__ = ("host", "guests")

    def __init__(self, host: Host, guests: list[Guest]) -> None:
        self.host = host
        self.guests = guests


def _unit_size(kib: int) -> tuple[int, str]:
    """The largest unit that expresses ``kib`` exactly, as libvirt prints cache sizes."""
    for unit, factor in (("TiB", 1 << 30), ("GiB", 1 << 20), ("MiB", 1 << 10)):
        if kib and kib % factor == 0:
            return kib // factor, unit
    return kib, "KiB"


def _format_host_cpu(cpu: HostCpu, out: list[str]) -> None:
    out.append("    <cpu>")
    out.append(f"      <arch>{escape(cpu.arch)}</arch>")
    if cpu.model is not None:
        out.append(f"      <model>{escape(cpu.model)}</model>")
    if cpu.vendor is not None:
        out.append(f"      <vendor>{escape(cpu.vendor)}</vendor>")
    if cpu.microcode is not None:
        out.append(f"      <microcode version='{cpu.microcode}'/>")
    if cpu.signature is not None:
        fam, model, stepping = cpu.signature
        out.append(f"      <signature family='{fam}' model='{model}' stepping='{stepping}'/>")
    if cpu.topology is not None:
        s, d, c, t = cpu.topology
        out.append(f"      <topology sockets='{s}' dies='{d}' cores='{c}' threads='{t}'/>")
    if cpu.maxphysaddr_bits is not None:
        out.append(f"      <maxphysaddr mode='emulate' bits='{cpu.maxphysaddr_bits}'/>")
    for name in cpu.features:
        out.append(f"      <feature name='{escape(name)}'/>")
    for size in cpu.pages:
        out.append(f"      <pages unit='KiB' size='{size}'/>")
    out.append("    </cpu>")


def _format_topology(cells: list[NumaCell], out: list[str]) -> None:
    out.append("    <topology>")
    out.append(f"      <cells num='{len(cells)}'>")
    for cell in cells:
        out.append(f"        <cell id='{cell.id}'>")
        out.append(f"          <memory unit='KiB'>{cell.memory_kib}</memory>")
        for size, count in cell.pages:
            out.append(f"          <pages unit='KiB' size='{size}'>{count}</pages>")
        if cell.distances:
            out.append("          <distances>")
            for other, value in cell.distances:
                out.append(f"            <sibling id='{other}' value='{value}'/>")
            out.append("          </distances>")
        out.append(f"          <cpus num='{len(cell.cpus)}'>")
        for c in cell.cpus:
            out.append(
                f"            <cpu id='{c.id}' socket_id='{c.socket_id}' die_id='{c.die_id}' "
                f"core_id='{c.core_id}' siblings='{escape(c.siblings)}'/>"
            )
        out.append("          </cpus>")
        out.append("        </cell>")
    out.append("      </cells>")
    out.append("    </topology>")


def _format_host(host: Host, out: list[str]) -> None:
    out.append("  <host>")
    if host.uuid is not None:
        out.append(f"    <uuid>{escape(host.uuid)}</uuid>")
    _format_host_cpu(host.cpu, out)
    if host.power_management:
        out.append("    <power_management>")
        out.extend(f"      <{escape(pm)}/>" for pm in host.power_management)
        out.append("    </power_management>")
    else:
        out.append("    <power_management/>")
    if host.iommu is not None:
        out.append(f"    <iommu support='{'yes' if host.iommu else 'no'}'/>")
    if host.migration_live or host.migration_transports:
        out.append("    <migration_features>")
        if host.migration_live:
            out.append("      <live/>")
        if host.migration_transports:
            out.append("      <uri_transports>")
            out.extend(
                f"        <uri_transport>{escape(t)}</uri_transport>" for t in host.migration_transports
            )
            out.append("      </uri_transports>")
        out.append("    </migration_features>")
    if host.cells:
        _format_topology(host.cells, out)
    if host.cache:
        out.append("    <cache>")
        for b in host.cache:
            size, unit = _unit_size(b.size_kib)
            out.append(
                f"      <bank id='{b.id}' level='{b.level}' type='{escape(b.type)}' size='{size}' "
                f"unit='{unit}' cpus='{escape(b.cpus)}'/>"
            )
        out.append("    </cache>")
    for sec in host.secmodels:
        out.append("    <secmodel>")
        out.append(f"      <model>{escape(sec.model)}</model>")
        out.append(f"      <doi>{escape(sec.doi)}</doi>")
        for dtype, label in sec.baselabels.items():
            out.append(f"      <baselabel type='{escape(dtype)}'>{escape(label)}</baselabel>")
        out.append("    </secmodel>")
    out.append("  </host>")


def _format_guest(guest: Guest, out: list[str]) -> None:
    out.append("  <guest>")
    out.append(f"    <os_type>{escape(guest.os_type)}</os_type>")
    out.append(f"    <arch name='{escape(guest.arch)}'>")
    out.append(f"      <wordsize>{guest.wordsize}</wordsize>")
    if guest.emulator is not None:
        out.append(f"      <emulator>{escape(guest.emulator)}</emulator>")
    for m in guest.machines:
        attrs = _attrs(
            [
                ("canonical", m.canonical),
                ("maxCpus", m.max_cpus),
                ("deprecated", "yes" if m.deprecated else None),
            ]
        )
        out.append(f"      <machine{attrs}>{escape(m.name)}</machine>")
    for dtype in guest.domains:
        out.append(f"      <domain type='{escape(dtype)}'/>")
    out.append("    </arch>")
    if guest.features:
        out.append("    <features>")
        for f in guest.features:
            attrs = ""
            if f.default is not None:
                attrs += f" default='{'on' if f.default else 'off'}'"
            if f.toggle is not None:
                attrs += f" toggle='{'yes' if f.toggle else 'no'}'"
            out.append(f"      <{escape(f.name)}{attrs}/>")
        out.append("    </features>")
    out.append("  </guest>")


def format_capabilities(caps: Capabilities) -> str:
    out = ["<capabilities>", ""]
    _format_host(caps.host, out)
    out.append("")
    for guest in caps.guests:
        _format_guest(guest, out)
        out.append("")
    out.append("</capabilities>")
    return "\n".join(out) + "\n"


# -- domain capabilities --------------------------------------------------------------------


class Enum(_Record):
    __slots__ = ("name", "values")

    def __init__(self, name: str, values: list[str]) -> None:
        self.name = name
        self.values = values


class Supported(_Record):
    """An element with supported='yes|no' and enums: <disk>, <graphics>, <hyperv>..."""

    __slots__ = ("name", "supported", "enums")

    def __init__(self, name: str, supported: bool, enums: list[Enum] | None = None) -> None:
        self.name = name
        self.supported = supported
        self.enums: list[Enum] = enums if enums is not None else []


class Loader(_Record):
    __slots__ = ("supported", "values", "enums")

    def __init__(
        self, supported: bool, values: list[str] | None = None, enums: list[Enum] | None = None
    ) -> None:
        self.supported = supported
        self.values: list[str] = values if values is not None else []  # firmware paths
        self.enums: list[Enum] = enums if enums is not None else []


class OsCaps(_Record):
    __slots__ = ("supported", "enums", "loader")

    def __init__(
        self, supported: bool, enums: list[Enum] | None = None, loader: Loader | None = None
    ) -> None:
        self.supported = supported
        self.enums: list[Enum] = enums if enums is not None else []
        self.loader = loader


class HostModel(_Record):
    __slots__ = ("supported", "model", "fallback", "vendor", "features")

    def __init__(
        self,
        supported: bool,
        model: str | None = None,
        fallback: str = "forbid",
        vendor: str | None = None,
        features: list[tuple[str, str]] | None = None,
    ) -> None:
        self.supported = supported
        self.model = model
        self.fallback = fallback
        self.vendor = vendor
        self.features: list[tuple[str, str]] = features if features is not None else []  # (policy, name)


class CustomCpuModel(_Record):
    __slots__ = ("name", "usable", "vendor", "deprecated")

    def __init__(self, name: str, usable: str, vendor: str = "unknown", deprecated: bool = False) -> None:
        self.name = name
        self.usable = usable  # yes, no, unknown
        self.vendor = vendor
        self.deprecated = deprecated


class CpuCaps(_Record):
    __slots__ = ("host_passthrough", "maximum", "host_model", "custom_supported", "custom_models")

    def __init__(
        self,
        host_passthrough: Supported,
        maximum: Supported,
        host_model: HostModel,
        custom_supported: bool,
        custom_models: list[CustomCpuModel],
    ) -> None:
        self.host_passthrough = host_passthrough
        self.maximum = maximum
        self.host_model = host_model
        self.custom_supported = custom_supported
        self.custom_models = custom_models


class SevCaps(_Record):
    __slots__ = ("supported", "cbitpos", "reduced_phys_bits", "max_guests", "max_es_guests")

    def __init__(
        self,
        supported: bool,
        cbitpos: int = 0,
        reduced_phys_bits: int = 0,
        max_guests: int = 0,
        max_es_guests: int = 0,
    ) -> None:
        self.supported = supported
        self.cbitpos = cbitpos
        self.reduced_phys_bits = reduced_phys_bits
        self.max_guests = max_guests
        self.max_es_guests = max_es_guests


class DomainCaps(_Record):
    # in libvirt's order; <sev> carries details, the others only supported=
    __slots__ = (
        "path",
        "domain",
        "arch",
        "machine",
        "vcpu_max",
        "iothreads",
        "os",
        "cpu",
        "memory_backing",
        "devices",
        "features",
    )

    def __init__(
        self,
        path: str,
        domain: str,
        arch: str,
        machine: str | None = None,
        vcpu_max: int | None = None,
        iothreads: bool | None = None,
        os: OsCaps | None = None,
        cpu: CpuCaps | None = None,
        memory_backing: Supported | None = None,
        devices: list[Supported] | None = None,
        features: list[Supported | SevCaps] | None = None,
    ) -> None:
        self.path = path
        self.domain = domain
        self.arch = arch
        self.machine = machine
        self.vcpu_max = vcpu_max
        self.iothreads = iothreads
        self.os = os
        self.cpu = cpu
        self.memory_backing = memory_backing
        self.devices: list[Supported] = devices if devices is not None else []
        self.features: list[Supported | SevCaps] = features if features is not None else []


def _supported(flag: bool) -> str:
    return "yes" if flag else "no"


def _format_enums(enums: list[Enum], indent: str, out: list[str]) -> None:
    for e in enums:
        if not e.values:
            out.append(f"{indent}<enum name='{escape(e.name)}'/>")
            continue
        out.append(f"{indent}<enum name='{escape(e.name)}'>")
        out.extend(f"{indent}  <value>{escape(v)}</value>" for v in e.values)
        out.append(f"{indent}</enum>")


def _format_supported(el: Supported, indent: str, out: list[str], extra: str = "") -> None:
    head = f"{indent}<{el.name}{extra} supported='{_supported(el.supported)}'"
    if not el.enums:
        out.append(head + "/>")
        return
    out.append(head + ">")
    _format_enums(el.enums, indent + "  ", out)
    out.append(f"{indent}</{el.name}>")


def _format_cpu(cpu: CpuCaps, out: list[str]) -> None:
    out.append("  <cpu>")
    for mode, el in (("host-passthrough", cpu.host_passthrough), ("maximum", cpu.maximum)):
        _format_supported(Supported("mode", el.supported, el.enums), "    ", out, f" name='{mode}'")
    hm = cpu.host_model
    if hm.model is None:
        out.append(f"    <mode name='host-model' supported='{_supported(hm.supported)}'/>")
    else:
        out.append(f"    <mode name='host-model' supported='{_supported(hm.supported)}'>")
        out.append(f"      <model fallback='{escape(hm.fallback)}'>{escape(hm.model)}</model>")
        if hm.vendor is not None:
            out.append(f"      <vendor>{escape(hm.vendor)}</vendor>")
        for policy, name in hm.features:
            out.append(f"      <feature policy='{escape(policy)}' name='{escape(name)}'/>")
        out.append("    </mode>")
    if not cpu.custom_models:
        out.append(f"    <mode name='custom' supported='{_supported(cpu.custom_supported)}'/>")
    else:
        out.append(f"    <mode name='custom' supported='{_supported(cpu.custom_supported)}'>")
        for m in cpu.custom_models:
            dep = " deprecated='yes'" if m.deprecated else ""
            out.append(
                f"      <model usable='{escape(m.usable)}'{dep} vendor='{escape(m.vendor)}'>"
                f"{escape(m.name)}</model>"
            )
        out.append("    </mode>")
    out.append("  </cpu>")


def format_domain_capabilities(dc: DomainCaps) -> str:
    out = ["<domainCapabilities>"]
    out.append(f"  <path>{escape(dc.path)}</path>")
    out.append(f"  <domain>{escape(dc.domain)}</domain>")
    if dc.machine is not None:
        out.append(f"  <machine>{escape(dc.machine)}</machine>")
    out.append(f"  <arch>{escape(dc.arch)}</arch>")
    if dc.vcpu_max is not None:
        out.append(f"  <vcpu max='{dc.vcpu_max}'/>")
    if dc.iothreads is not None:
        out.append(f"  <iothreads supported='{_supported(dc.iothreads)}'/>")
    if dc.os is not None:
        os_ = dc.os
        if not os_.enums and os_.loader is None:
            out.append(f"  <os supported='{_supported(os_.supported)}'/>")
        else:
            out.append(f"  <os supported='{_supported(os_.supported)}'>")
            _format_enums(os_.enums, "    ", out)
            if os_.loader is not None:
                ld = os_.loader
                out.append(f"    <loader supported='{_supported(ld.supported)}'>")
                out.extend(f"      <value>{escape(v)}</value>" for v in ld.values)
                _format_enums(ld.enums, "      ", out)
                out.append("    </loader>")
            out.append("  </os>")
    if dc.cpu is not None:
        _format_cpu(dc.cpu, out)
    if dc.memory_backing is not None:
        _format_supported(dc.memory_backing, "  ", out)
    if dc.devices:
        out.append("  <devices>")
        for dev in dc.devices:
            _format_supported(dev, "    ", out)
        out.append("  </devices>")
    if dc.features:
        out.append("  <features>")
        for feat in dc.features:
            if isinstance(feat, SevCaps):
                if not feat.supported:
                    out.append("    <sev supported='no'/>")
                    continue
                out.append("    <sev supported='yes'>")
                out.append(f"      <cbitpos>{feat.cbitpos}</cbitpos>")
                out.append(f"      <reducedPhysBits>{feat.reduced_phys_bits}</reducedPhysBits>")
                out.append(f"      <maxGuests>{feat.max_guests}</maxGuests>")
                out.append(f"      <maxESGuests>{feat.max_es_guests}</maxESGuests>")
                out.append("    </sev>")
            else:
                _format_supported(feat, "    ", out)
        out.append("  </features>")
    out.append("</domainCapabilities>")
    return "\n".join(out) + "\n"
