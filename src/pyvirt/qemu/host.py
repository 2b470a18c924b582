# SPDX-License-Identifier: LGPL-2.1-or-later
"""Facts about the host for the ``<host>`` section of the capabilities, read from /proc and /sys.

Read fresh on every call (free memory pages and online CPUs change); it costs a few dozen small
file reads. Nothing here knows QEMU; anything missing (a container without /sys, say) is left out
rather than failing the whole document.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from pyvirt.xml.capabilities import (
    CacheBank,
    HostCpu,
    HostTopologyCpu,
    NumaCell,
)

SYS_CPU = "/sys/devices/system/cpu"
SYS_NODE = "/sys/devices/system/node"
HUGEPAGES = "/sys/kernel/mm/hugepages"

# /proc/cpuinfo's vendor_id -> libvirt's vendor name
_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon",
            "CentaurHauls": "VIA", "  Shanghai  ": "Zhaoxin"}


class HostFacts(NamedTuple):
    uuid: str | None
    cpu: HostCpu
    cells: list[NumaCell]
    cache: list[CacheBank]
    iommu: bool


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def host_uuid() -> str | None:
    """SMBIOS's system UUID when readable, else the machine id shaped as a UUID (stable per host)."""
    for path in ("/sys/class/dmi/id/product_uuid", "/etc/machine-id"):
        text = _read(path)
        if not text:
            continue
        hexdigits = text.replace("-", "").lower()
        if re.fullmatch(r"[0-9a-f]{32}", hexdigits) and set(hexdigits) != {"0"}:
            h = hexdigits
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return None


def parse_cpulist(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]"""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def format_cpulist(cpus: list[int]) -> str:
    """[0, 1, 2, 3, 8] -> '0-3,8' (libvirt's cpuset syntax)"""
    out: list[str] = []
    cpus = sorted(set(cpus))
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def _page_sizes_kib() -> list[int]:
    sizes = [os.sysconf("SC_PAGE_SIZE") // 1024]
    try:
        names = os.listdir(HUGEPAGES)
    except OSError:
        names = []
    for name in names:
        m = re.fullmatch(r"hugepages-(\d+)kB", name)
        if m:
            sizes.append(int(m.group(1)))
    return sorted(set(sizes))


def _cpu_topology(cpu: int) -> HostTopologyCpu:
    base = f"{SYS_CPU}/cpu{cpu}/topology/"

    def num(name: str) -> int:
        text = _read(base + name)
        try:
            return max(int(text or 0), 0)
        except ValueError:
            return 0

    siblings = _read(base + "thread_siblings_list") or str(cpu)
    return HostTopologyCpu(id=cpu, socket_id=num("physical_package_id"), die_id=num("die_id"),
                           core_id=num("core_id"), siblings=siblings)


def _online_cpus() -> list[int]:
    text = _read(f"{SYS_CPU}/online")
    if text:
        return parse_cpulist(text)
    return list(range(os.cpu_count() or 1))


def host_cpu(info: dict[str, str], cpus: list[HostTopologyCpu], pages: list[int]) -> HostCpu:
    arch = os.uname().machine
    vendor = _VENDORS.get(info.get("vendor_id", ""), None)
    flags = info.get("flags", "").split()
    sockets = len({c.socket_id for c in cpus}) or 1
    dies = len({(c.socket_id, c.die_id) for c in cpus}) // sockets or 1
    cores = len({(c.socket_id, c.die_id, c.core_id) for c in cpus}) // (sockets * dies) or 1
    threads = max(len(cpus) // (sockets * dies * cores), 1)
    signature = None
    if "cpu family" in info and "model" in info and "stepping" in info:
        try:
            signature = (int(info["cpu family"]), int(info["model"]), int(info["stepping"]))
        except ValueError:
            signature = None
    microcode = None
    if "microcode" in info:
        try:
            microcode = int(info["microcode"], 0)
        except ValueError:
            microcode = None
    phys_bits = None
    m = re.search(r"(\d+) bits physical", info.get("address sizes", ""))
    if m:
        phys_bits = int(m.group(1))
    # libvirt names the host CPU after its closest model in its CPU map and lists the features
    # beyond it; pyvirt has no CPU map, so it leaves the model out and lists every feature the
    # kernel reports (the schema's feature-name pattern excludes nothing /proc/cpuinfo prints).
    features = [f for f in flags if re.fullmatch(r"[A-Za-z0-9_-]+", f)]
    return HostCpu(arch=arch, model=None, vendor=vendor, microcode=microcode or None,
                   signature=signature, topology=(sockets, dies, cores, threads),
                   maxphysaddr_bits=phys_bits, features=features, pages=pages)


def _meminfo_kib(path: str, key: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    m = re.search(rf"{key}:\s+(\d+) kB", text)
    return int(m.group(1)) if m else None


def _numa_cells(cpus: list[HostTopologyCpu], pages: list[int]) -> list[NumaCell]:
    by_id = {c.id: c for c in cpus}
    small = pages[0] if pages else 4
    try:
        nodes = sorted(int(n[4:]) for n in os.listdir(SYS_NODE) if re.fullmatch(r"node\d+", n))
    except OSError:
        nodes = []
    cells: list[NumaCell] = []
    if not nodes:
        total = _meminfo_kib("/proc/meminfo", "MemTotal") or 0
        counts = [(small, total // small)] + [(p, _hugepages("", p)) for p in pages[1:]]
        return [NumaCell(id=0, memory_kib=total, pages=counts, distances=[(0, 10)],
                         cpus=[by_id[c] for c in sorted(by_id)])]
    for node in nodes:
        base = f"{SYS_NODE}/node{node}"
        total = _meminfo_kib(f"{base}/meminfo", rf"Node {node} MemTotal") or 0
        huge = [(p, _hugepages(base, p)) for p in pages[1:]]
        huge_kib = sum(p * n for p, n in huge)
        counts = [(small, max(total - huge_kib, 0) // small)] + huge
        distances: list[tuple[int, int]] = []
        dist = (_read(f"{base}/distance") or "").split()
        for i, value in enumerate(dist):
            if i < len(nodes):
                distances.append((nodes[i], int(value)))
        node_cpus = parse_cpulist(_read(f"{base}/cpulist") or "")
        cells.append(NumaCell(id=node, memory_kib=total, pages=counts, distances=distances,
                              cpus=[by_id[c] for c in node_cpus if c in by_id]))
    return cells


def _hugepages(node_base: str, size_kib: int) -> int:
    path = (f"{node_base}/hugepages/hugepages-{size_kib}kB/nr_hugepages" if node_base
            else f"{HUGEPAGES}/hugepages-{size_kib}kB/nr_hugepages")
    text = _read(path)
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _cache_banks(online: list[int]) -> list[CacheBank]:
    """Level-3 caches, as libvirt reports them (its resctrl-independent list)."""
    banks: dict[tuple[int, int, str], CacheBank] = {}
    for cpu in online:
        base = f"{SYS_CPU}/cpu{cpu}/cache"
        try:
            indexes = [i for i in os.listdir(base) if i.startswith("index")]
        except OSError:
            continue
        for index in indexes:
            level = _read(f"{base}/{index}/level")
            if level != "3":
                continue
            ctype = {"Unified": "both", "Data": "data", "Instruction": "code"}.get(
                _read(f"{base}/{index}/type") or "", "both")
            size = _read(f"{base}/{index}/size") or ""
            m = re.fullmatch(r"(\d+)([KMG]?)", size)
            if not m:
                continue
            kib = int(m.group(1)) * {"": 1, "K": 1, "M": 1024, "G": 1024 * 1024}[m.group(2)]
            bank_id = int(_read(f"{base}/{index}/id") or 0)
            key = (bank_id, 3, ctype)
            if key in banks:
                continue
            shared = _read(f"{base}/{index}/shared_cpu_list") or str(cpu)
            banks[key] = CacheBank(id=bank_id, level=3, type=ctype, size_kib=kib, cpus=shared)
    return [banks[k] for k in sorted(banks)]


def host_facts() -> HostFacts:
    info = _cpuinfo()
    online = _online_cpus()
    topo = [_cpu_topology(c) for c in online]
    pages = _page_sizes_kib()
    try:
        iommu = bool(os.listdir("/sys/kernel/iommu_groups"))
    except OSError:
        iommu = False
    return HostFacts(uuid=host_uuid(), cpu=host_cpu(info, topo, pages), cells=_numa_cells(topo, pages),
                     cache=_cache_banks(online), iommu=iommu)
