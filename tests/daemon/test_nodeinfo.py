# SPDX-License-Identifier: LGPL-2.1-or-later
"""NODE_GET_INFO as libvirt computes it: the real host against a real libvirtd, then made-up
sysfs trees for the rules this host does not exercise."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from pyvirt.daemon.nodeinfo import NodeInfo, node_info, parse_cpu_list

from .testlib import Raw


@pytest.mark.oracle
def test_this_host_same_as_libvirtd(libvirtd: Any) -> None:
    with Raw.unix(libvirtd.socket) as raw:
        raw.open()
        theirs = raw.call("NODE_GET_INFO")
    assert dataclasses.asdict(node_info()) == {f: getattr(theirs, f)
                                               for f in NodeInfo.__dataclass_fields__}


def test_cpu_list() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpu_list("\n") == set()


def _cpu(sysfs: Path, n: int, *, package: int, core: int, siblings: str, online: bool = True) -> None:
    topo = sysfs / "cpu" / f"cpu{n}" / "topology"
    topo.mkdir(parents=True)
    (topo / "physical_package_id").write_text(f"{package}\n")
    (topo / "core_id").write_text(f"{core}\n")
    (topo / "thread_siblings_list").write_text(f"{siblings}\n")
    if not online:
        (sysfs / "cpu" / f"cpu{n}" / "online").write_text("0\n")


def _node(sysfs: Path, node: int, cpus: list[int], mem_kib: int) -> None:
    d = sysfs / "node" / f"node{node}"
    d.mkdir(parents=True)
    (d / "meminfo").write_text(f"Node {node} MemTotal:       {mem_kib} kB\nNode {node} MemFree: 1 kB\n")
    for cpu in cpus:
        os.symlink(sysfs / "cpu" / f"cpu{cpu}", d / f"cpu{cpu}")


def _host(tmp_path: Path, present: str, online: str) -> Path:
    sysfs = tmp_path / "sys"
    (sysfs / "cpu").mkdir(parents=True)
    (sysfs / "cpu" / "present").write_text(present + "\n")
    (sysfs / "cpu" / "online").write_text(online + "\n")
    return sysfs


def _cpuinfo(tmp_path: Path, *mhz: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text("".join(f"processor\t: {i}\ncpu MHz\t\t: {m}\n\n" for i, m in enumerate(mhz)))
    return path


def test_two_sockets_two_nodes_hyperthreads(tmp_path: Path) -> None:
    sysfs = _host(tmp_path, "0-7", "0-7")
    for cpu in range(8):
        package, core = cpu // 4, (cpu % 4) // 2
        first = cpu - cpu % 2
        _cpu(sysfs, cpu, package=package, core=core, siblings=f"{first}-{first + 1}")
    _node(sysfs, 0, [0, 1, 2, 3], 1000)
    _node(sysfs, 1, [4, 5, 6, 7], 2000)
    info = node_info(sysfs, _cpuinfo(tmp_path, "2000.1", "3400.999"))
    if os.uname().machine != "x86_64":
        pytest.skip("the MHz line is x86's")
    # the last "cpu MHz" line counts, its fraction dropped
    assert info == NodeInfo(os.uname().machine, 3000, 8, 3400, 2, 1, 2, 2)


def test_topology_that_does_not_add_up_is_flattened(tmp_path: Path) -> None:
    """3 CPUs in 1 node, 2 sockets of 2 cores: 1*2*2*1 != 3, so libvirt reports 1/1/3/1."""
    sysfs = _host(tmp_path, "0-2", "0-2")
    _cpu(sysfs, 0, package=0, core=0, siblings="0")
    _cpu(sysfs, 1, package=0, core=1, siblings="1")
    _cpu(sysfs, 2, package=1, core=0, siblings="2")
    _node(sysfs, 0, [0, 1, 2], 512)
    info = node_info(sysfs, _cpuinfo(tmp_path))
    assert (info.cpus, info.nodes, info.sockets, info.cores, info.threads) == (3, 1, 1, 3, 1)


def test_offline_cpus_and_no_numa(tmp_path: Path) -> None:
    """No node directory: the CPU directory is the one node; offline CPUs count as cores when the
    topology is flattened, but not as CPUs."""
    sysfs = _host(tmp_path, "0-3", "0-1")
    for cpu in range(4):
        _cpu(sysfs, cpu, package=0, core=cpu, siblings=str(cpu), online=cpu < 2)
    info = node_info(sysfs, _cpuinfo(tmp_path))
    assert (info.cpus, info.nodes, info.sockets, info.cores, info.threads) == (2, 1, 1, 4, 1)
    assert info.memory == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024
    assert info.mhz == 0


def test_missing_topology_files_mean_zero(tmp_path: Path) -> None:
    sysfs = _host(tmp_path, "0-1", "0-1")
    for cpu in range(2):
        (sysfs / "cpu" / f"cpu{cpu}").mkdir()
    info = node_info(sysfs, tmp_path / "no-cpuinfo")
    # both CPUs in socket 0, core 0, one thread each: 1*1*1*1 != 2, flattened
    assert (info.cpus, info.sockets, info.cores, info.threads) == (2, 1, 2, 1)
