# SPDX-License-Identifier: LGPL-2.1-or-later
"""The host summary of NODE_GET_INFO (virNodeGetInfo), computed as libvirt 9.0 does on Linux.

libvirt's answer is not "what lscpu says" but the result of a particular walk over sysfs
(virhostcpu.c, virhostmem.c, capabilities.c); clients compare it with other libvirt hosts, so the
walk is reproduced step by step:

* model: the host architecture name (uname's machine);
* memory: the sum of ``MemTotal`` of every NUMA node in ``/sys/devices/system/node`` when the host
  has NUMA nodes (libvirt is built with numactl), else physical pages x page size; in KiB;
* mhz: the *last* "cpu MHz" line of /proc/cpuinfo (x86; other prefixes elsewhere, 0 on ARM),
  fraction dropped;
* per node: present and online CPUs of the node, distinct sockets, the largest number of distinct
  cores in one socket, the largest thread-sibling count; totals are the maxima over nodes;
* when nodes x sockets x cores x threads does not equal the CPUs found, libvirt gives up on the
  topology and reports 1 node, 1 socket, ``cpus`` cores and 1 thread.

POWER subcores are not modelled (pyvirt targets x86_64 and aarch64 hosts).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pyvirt.errors import OperationFailed

__all__ = ["NodeInfo", "node_info", "parse_cpu_list"]

_SYSFS = Path("/sys/devices/system")
_CPUINFO = Path("/proc/cpuinfo")

# The /proc/cpuinfo line holding the clock per architecture family (virHostCPUParseFrequency).
_MHZ_PREFIX = (
    (("x86_64", "i386", "i486", "i586", "i686"), "cpu MHz"),
    (("ppc", "ppc64", "ppc64le", "ppcle", "ppc64p7"), "clock"),
    (("s390", "s390x"), "cpu MHz dynamic"),
    (("loongarch64",), "CPU MHz"),
)


@dataclass(frozen=True)
class NodeInfo:
    model: str
    memory: int  #: KiB
    cpus: int
    mhz: int
    nodes: int
    sockets: int
    cores: int
    threads: int


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-3,8,10-11") as a set."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, dash, high = part.partition("-")
        if dash:
            cpus.update(range(int(low), int(high) + 1))
        else:
            cpus.add(int(low))
    return cpus


def _read_int(path: Path, default: int) -> int:
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise OperationFailed(f"cannot read {path}: {exc}") from exc


def _mhz(arch: str, cpuinfo: Path) -> int:
    if arch.startswith(("arm", "aarch64")):
        return 0
    prefix = next((p for arches, p in _MHZ_PREFIX if arch in arches), None)
    if prefix is None:
        return 0
    mhz = 0
    try:
        lines = cpuinfo.read_text(errors="replace").splitlines()
    except OSError:
        return 0  # libvirt only warns when the clock cannot be read
    for line in lines:
        if not line.startswith(prefix):
            continue
        rest = line[len(prefix):].lstrip()
        if not rest.startswith(":"):
            continue  # e.g. "cpu MHz dynamic" seen while looking for "cpu MHz"
        m = re.match(r"\s*(\d+)", rest[1:])
        if m:
            mhz = int(m.group(1))
    return mhz


class _Topology:
    def __init__(self, sysfs: Path) -> None:
        self.sysfs = sysfs
        cpu_dir = sysfs / "cpu"
        try:
            self.present = parse_cpu_list((cpu_dir / "present").read_text())
            self.online = parse_cpu_list((cpu_dir / "online").read_text())
        except (OSError, ValueError) as exc:
            raise OperationFailed(f"cannot read the host's CPU lists under {cpu_dir}: {exc}") from exc

    def cpu_value(self, cpu: int, name: str) -> int:
        return _read_int(self.sysfs / "cpu" / f"cpu{cpu}" / "topology" / name, 0)

    def siblings(self, cpu: int) -> int:
        path = self.sysfs / "cpu" / f"cpu{cpu}" / "topology" / "thread_siblings_list"
        try:
            return len(parse_cpu_list(path.read_text()))
        except FileNotFoundError:
            return 1
        except (OSError, ValueError) as exc:
            raise OperationFailed(f"cannot read {path}: {exc}") from exc

    def parse_node(self, directory: Path, arch: str) -> tuple[int, int, int, int, int]:
        """(processors, sockets, cores, threads, offline) of one node directory (virHostCPUParseNode)."""
        node_cpus: set[int] = set()
        for entry in os.listdir(directory):
            m = re.fullmatch(r"cpu(\d+)", entry)
            if m and int(m.group(1)) in self.present:
                node_cpus.add(int(m.group(1)))
        cores_of: dict[int, set[int]] = {}
        processors = offline = threads = 0
        for cpu in sorted(node_cpus):
            if cpu not in self.online:
                offline += 1
                continue
            processors += 1
            # physical_package_id may be -1 ("no sockets"): all one socket then
            sock = max(self.cpu_value(cpu, "physical_package_id"), 0)
            core = cpu if arch.startswith("s390") else self.cpu_value(cpu, "core_id")
            cores_of.setdefault(sock, set()).add(core)
            threads = max(threads, self.siblings(cpu))
        cores = max((len(c) for c in cores_of.values()), default=0)
        return processors, len(cores_of), cores, threads, offline


def _memory_kib(sysfs: Path) -> int:
    node_dir = sysfs / "node"
    total = 0
    found = False
    if node_dir.is_dir():
        for entry in os.listdir(node_dir):
            if not re.fullmatch(r"node\d+", entry):
                continue
            try:
                text = (node_dir / entry / "meminfo").read_text()
            except OSError:
                continue
            m = re.search(r"MemTotal:\s*(\d+)\s*kB", text)
            if m:
                total += int(m.group(1))
                found = True
    if found:
        return total
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024


def node_info(sysfs: Path = _SYSFS, cpuinfo: Path = _CPUINFO) -> NodeInfo:
    arch = os.uname().machine
    topo = _Topology(sysfs)
    mhz = _mhz(arch, cpuinfo)
    cpus = nodes = sockets = cores = threads = offline = 0
    node_dir = sysfs / "node"
    node_entries = ([e for e in os.listdir(node_dir) if re.fullmatch(r"node\d+", e)]
                    if node_dir.is_dir() else [])
    for entry in node_entries:
        nodes += 1
        n_cpus, n_sockets, n_cores, n_threads, n_offline = topo.parse_node(node_dir / entry, arch)
        cpus += n_cpus
        offline += n_offline
        sockets, cores, threads = max(sockets, n_sockets), max(cores, n_cores), max(threads, n_threads)
    if not (cpus and nodes):
        # No NUMA information: the CPUs directory is one node.
        nodes = 1
        cpus, sockets, cores, threads, offline = topo.parse_node(sysfs / "cpu", arch)
    if cpus == 0 or sockets == 0 or threads == 0:
        raise OperationFailed(f"no CPUs, sockets or threads found under {sysfs}")
    if nodes * sockets * cores * threads != cpus + offline:
        # libvirt's way of saying "see the capabilities XML for the real topology"
        nodes, sockets, cores, threads = 1, 1, cpus + offline, 1
    return NodeInfo(model=arch, memory=_memory_kib(sysfs), cpus=cpus, mhz=mhz, nodes=nodes,
                    sockets=sockets, cores=cores, threads=threads)
