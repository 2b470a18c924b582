# SPDX-License-Identifier: LGPL-2.1-or-later
"""The cgroup layer's pure parts: the device ACL of a domain, group naming, instance tags, status
records, hierarchy discovery and the cgroup v2 file writes.

Device nodes are real (made with mknod in a temporary directory, so root is needed for those tests);
no cgroup is created here (tests/integration/test_cgroup.py does that on the host's hierarchies).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from pyvirt.conf.instance import embed_paths, session_paths, system_paths
from pyvirt.conf.qemu_conf import DEFAULT_CGROUP_DEVICE_ACL
from pyvirt.errors import OperationFailed, PyvirtError, codes
from pyvirt.security import cgroup
from pyvirt.security.cgroup import (
    CgroupHost,
    DeviceRule,
    DomainCgroup,
    Hierarchy,
    apply_settings,
    device_acl,
    devices_enforcement,
    group_dir_name,
    instance_tag,
)
from pyvirt.xml.domain import Domain, parse_domain

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of device nodes needs root")

PTY = DeviceRule("c", 136, None, "rw")


def domain(devices: str = "", name: str = "vm", extra: str = "") -> Domain:
    return parse_domain(f"<domain type='qemu'><name>{name}</name><memory>65536</memory>{extra}"
                        f"<os><type>hvm</type></os><devices>{devices}</devices></domain>")


def block_node(d: Path, name: str, major: int, minor: int) -> str:
    path = d / name
    os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
    return str(path)


def char_node(d: Path, name: str, major: int, minor: int) -> str:
    path = d / name
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
    return str(path)


# --- the device ACL ---------------------------------------------------------------------------------

@root_only
def test_acl_disks_readonly_cdrom_and_backing(tmp_path: Path) -> None:
    rw = block_node(tmp_path, "rw", 7, 200)
    ro = block_node(tmp_path, "ro", 7, 201)
    cd = block_node(tmp_path, "cd", 7, 202)
    base = block_node(tmp_path, "base", 7, 203)
    asfile = block_node(tmp_path, "asfile", 7, 204)
    regular = tmp_path / "image.raw"
    regular.write_bytes(b"\0" * 512)
    dom = domain(f"""
      <disk type='block' device='disk'><source dev='{rw}'/><target dev='vda'/>
        <backingStore type='block'><format type='raw'/><source dev='{base}'/></backingStore></disk>
      <disk type='block' device='disk'><source dev='{ro}'/><target dev='vdb'/><readonly/></disk>
      <disk type='block' device='cdrom'><source dev='{cd}'/><target dev='hdc'/></disk>
      <disk type='file' device='disk'><source file='{asfile}'/><target dev='vdc'/></disk>
      <disk type='file' device='disk'><source file='{regular}'/><target dev='vdd'/></disk>
      <disk type='block' device='disk'><source dev='{tmp_path}/missing'/><target dev='vde'/></disk>
      <disk type='network' device='disk'><source protocol='nbd' name='x'><host name='h'/></source>
        <target dev='vdf'/></disk>""")
    rules = device_acl(dom, ())
    assert [str(r) for r in rules] == ["b 7:200 rw", "b 7:203 r", "b 7:201 r", "b 7:202 r",
                                       "b 7:204 rw", "c 136:* rw"]
    assert rules[0].path == rw


@root_only
def test_acl_chardev_rng_and_conf_list(tmp_path: Path) -> None:
    tty = char_node(tmp_path, "tty", 4, 70)
    rng = char_node(tmp_path, "hwrng", 10, 183)
    dom = domain(f"""
      <serial type='dev'><source path='{tty}'/><target port='0'/></serial>
      <serial type='pty'><target port='1'/></serial>
      <rng model='virtio'><backend model='random'>{rng}</backend></rng>""")
    custom = char_node(tmp_path, "custom", 1, 3)
    rules = device_acl(dom, (custom, str(tmp_path / "absent"), str(tmp_path)))
    # the conf list replaces libvirt's default (no /dev/zero etc.); absent paths and non-devices
    # (a directory) are skipped
    assert [str(r) for r in rules] == ["c 4:70 rw", "c 10:183 rw", "c 136:* rw", "c 1:3 rw"]


def test_acl_default_list_is_libvirts_and_has_pty() -> None:
    rules = device_acl(domain(), DEFAULT_CGROUP_DEVICE_ACL)
    expected = [PTY]
    for path in DEFAULT_CGROUP_DEVICE_ACL:
        if os.path.exists(path):
            st = os.stat(path)
            expected.append(DeviceRule("c", os.major(st.st_rdev), os.minor(st.st_rdev), "rw"))
    assert rules == expected
    assert DeviceRule("c", 1, 3, "rw") in rules  # /dev/null


def test_acl_same_device_twice_is_listed_once() -> None:
    rules = device_acl(domain(), ("/dev/null", "/dev/null", "/dev/zero"))
    assert [str(r) for r in rules] == ["c 136:* rw", "c 1:3 rw", "c 1:5 rw"]


# --- naming -----------------------------------------------------------------------------------------

SAFE = re.compile(r"dom-[A-Za-z0-9_+.\\x-]+")


@pytest.mark.parametrize("name", ["vm", "../x", "..", ".", "a/b", "a\nb", "/etc", "tasks",
                                  "cgroup.procs", "a\\x2fb", "é", "x" * 400, "\udcff"])
def test_group_dir_name_stays_inside(name: str) -> None:
    d = group_dir_name(name)
    assert SAFE.fullmatch(d), d
    assert len(d.encode()) <= 255
    inst = "/sys/fs/cgroup/devices/pyvirt/system"
    assert os.path.dirname(os.path.normpath(os.path.join(inst, d))) == inst


def test_group_dir_name_is_injective_on_tricky_names() -> None:
    names = ["a/b", "a\\x2fb", "a_b", "a b", "a\nb", "a\x2fb", "x" * 400, "x" * 399 + "y"]
    dirs = [group_dir_name(n) for n in names]
    # "a/b" and "a\x2fb" (a Python escape: the same string) are equal; everything else differs
    assert len(set(dirs)) == len(set(names))
    assert group_dir_name("vm-1.test_A+") == "dom-vm-1.test_A+"
    assert group_dir_name("a b") == "dom-a\\x20b"
    assert group_dir_name("a\\b") == "dom-a\\x5cb"  # the escape character itself is escaped


def test_instance_tags_differ_between_instances(tmp_path: Path) -> None:
    a, b = instance_tag(embed_paths(tmp_path / "a")), instance_tag(embed_paths(tmp_path / "b"))
    assert a.startswith("embed-") and b.startswith("embed-") and a != b
    # the same root named through a symlink is the same instance
    (tmp_path / "a").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert instance_tag(embed_paths(tmp_path / "link")) == a
    assert instance_tag(system_paths({})) == "system"
    prefixed = instance_tag(system_paths({"PYVIRT_PREFIX": str(tmp_path)}))
    assert prefixed.startswith("system-") and prefixed != "system"
    s1 = instance_tag(session_paths({"HOME": str(tmp_path)}, uid=1000), uid=1000)
    s2 = instance_tag(session_paths({"HOME": str(tmp_path)}, uid=1001), uid=1001)
    assert s1.startswith("session-1000-") and s2.startswith("session-1001-")
    for tag in (a, b, prefixed, s1, s2):
        assert re.fullmatch(r"[a-z][a-z0-9-]*", tag)


def test_bad_instance_tag_is_refused() -> None:
    with pytest.raises(OperationFailed, match="invalid cgroup instance tag"):
        cgroup.create(domain(), instance="../escape", host=CgroupHost([]))


# --- status records ---------------------------------------------------------------------------------

def _record(name: str = "a\nb") -> DomainCgroup:
    d = group_dir_name(name)
    return DomainCgroup(name, "embed-0123456789ab", [
        cgroup.Group(1, f"/sys/fs/cgroup/devices/pyvirt/embed-0123456789ab/{d}", ("devices",)),
        cgroup.Group(1, f"/sys/fs/cgroup/cpu,cpuacct/x/pyvirt/embed-0123456789ab/{d}",
                      ("cpu", "cpuacct")),
    ], [DeviceRule("b", 7, 3, "r"), PTY], True, "")


def test_status_round_trip_through_json() -> None:
    import json

    cg = _record()
    back = DomainCgroup.from_status(json.loads(json.dumps(cg.to_status())))
    assert back == cg
    assert back.procs_paths() == [g.path + "/cgroup.procs" for g in cg.groups]
    assert back.path_of("cpuacct") == cg.groups[1].path
    assert back.path_of("memory") is None


@pytest.mark.parametrize("change", [
    lambda s: s["groups"][0].update(path="/sys/fs/cgroup/devices"),
    lambda s: s["groups"][0].update(path="/sys/fs/cgroup/devices/pyvirt/embed-0123456789ab/../x"),
    lambda s: s["groups"][0].update(path="/sys/fs/cgroup/devices/pyvirt/other/dom-a\\x0ab"),
    lambda s: s["groups"][0].update(path="relative/pyvirt/embed-0123456789ab/dom-a\\x0ab"),
    lambda s: s["groups"][0].update(cgroup=3),
    lambda s: s.update(version=99),
    lambda s: s.update(instance="../.."),
    lambda s: s.update(devices=["a *:* rwm"]),
    lambda s: s.pop("groups"),
])
def test_damaged_status_is_refused(change: object) -> None:
    status = _record().to_status()
    change(status)  # type: ignore[operator]
    with pytest.raises(OperationFailed, match="invalid cgroup record") as e:
        DomainCgroup.from_status(status)
    assert e.value.domain == codes.VIR_FROM_CGROUP


def test_wrap_command() -> None:
    assert cgroup.wrap_command(["/usr/bin/qemu", "-S"], []) == ["/usr/bin/qemu", "-S"]
    cmd = cgroup.wrap_command(["/usr/bin/qemu", "-S"], ["/g/cgroup.procs"], {"A": "1"})
    assert cmd[:2] == ["/bin/sh", "-c"] and cmd[2].startswith("unset PWD; ")
    assert cmd[3:] == ["pyvirt-cgroup-join", "/g/cgroup.procs", "--", "/usr/bin/qemu", "-S"]
    # a PWD the command is to have stays
    assert not cgroup.wrap_command(["/q"], ["/g/cgroup.procs"], {"PWD": "/x"})[2].startswith("unset")
    with pytest.raises(OperationFailed, match="absolute path"):
        cgroup.wrap_command(["qemu"], ["/g/cgroup.procs"])


def test_probe_hybrid_and_subtree_mounts(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "31 25 0:27 /lxc/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 25 0:28 / /sys/fs/cgroup/sys\\040temd rw - cgroup cgroup rw,xattr,name=systemd\n"
        f"33 25 0:29 / {unified} rw - cgroup2 cgroup2 rw\n"
        "34 25 0:30 / /mnt/other rw - cgroup cgroup rw,cpu,cpuacct\n"  # a second mount: skipped
        "35 25 0:31 / /proc rw - proc proc rw\n")
    own = tmp_path / "cgroup"
    own.write_text("3:cpu,cpuacct:/a\n2:memory:/lxc/c1/b\n1:name=systemd:/\n0::/u\n")
    host = CgroupHost.probe(str(mountinfo), str(own))
    assert host.hierarchies == (
        Hierarchy(1, "/sys/fs/cgroup/cpu,cpuacct", ("cpu", "cpuacct"), "/a"),
        Hierarchy(1, "/sys/fs/cgroup/memory", ("memory",), "/b"),
        Hierarchy(1, "/sys/fs/cgroup/sys temd", ("name=systemd",), "/"),
        Hierarchy(2, str(unified), ("hugetlb",), "/u"),
    )
    assert host.hierarchies[1].base == "/sys/fs/cgroup/memory/b"
    chosen = host.select(None)
    assert [c for _h, c in chosen] == [("cpu", "cpuacct"), ("memory",), ("name=systemd",)]
    assert [c for _h, c in host.select(["memory"])] == [("memory",)]
    assert host.select([]) == []
    assert devices_enforcement(chosen)[0] is False  # no devices controller mounted


def test_probe_pure_v2_host(tmp_path: Path) -> None:
    mnt = tmp_path / "cg2"
    mnt.mkdir()
    (mnt / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"30 25 0:26 / {mnt} rw - cgroup2 cgroup2 rw,nsdelegate\n")
    own = tmp_path / "cgroup"
    own.write_text("0::/user.slice/x.scope\n")
    host = CgroupHost.probe(str(mountinfo), str(own))
    chosen = host.select(None)
    assert [(h.version, c) for h, c in chosen] == [(2, ("cpuset", "cpu", "memory"))]
    assert chosen[0][0].base == f"{mnt}/user.slice/x.scope"
    enforced, reason = devices_enforcement(chosen)
    assert not enforced and "eBPF" in reason


V2_FILES = {"memory.max": "max", "memory.high": "max", "memory.swap.max": "max", "cpu.weight": "100",
            "cpu.max": "max 100000", "cgroup.procs": ""}


def v2_group(tmp_path: Path) -> Path:
    """A directory laid out like a cgroup2 group (this host has no v2 controllers to test on)."""
    g = tmp_path / "g"
    g.mkdir()
    for name, value in V2_FILES.items():
        (g / name).write_text(value + "\n")
    return g


def test_v2_limits_written(tmp_path: Path) -> None:
    g = v2_group(tmp_path)
    dom = domain(extra="<vcpu>2</vcpu><memtune><hard_limit unit='MiB'>512</hard_limit>"
                       "<soft_limit unit='MiB'>256</soft_limit><swap_hard_limit unit='MiB'>768"
                       "</swap_hard_limit></memtune><cputune><shares>300</shares><period>10000</period>"
                       "<quota>5000</quota></cputune>")
    apply_settings(dom, str(g), 2, ("memory", "cpu"))
    got = {n: (g / n).read_text().strip() for n in V2_FILES}
    assert got == {"memory.max": str(512 << 20), "memory.high": str(256 << 20),
                   "memory.swap.max": str(256 << 20), "cpu.weight": "300",
                   "cpu.max": "10000 10000",  # quota 5000 per vCPU, 2 vCPUs
                   "cgroup.procs": ""}


def test_v2_unlimited_and_global_quota(tmp_path: Path) -> None:
    g = v2_group(tmp_path)
    dom = domain(extra=f"<memtune><hard_limit>{cgroup.MEMORY_UNLIMITED_KIB}</hard_limit></memtune>"
                       "<cputune><global_quota>-1</global_quota><quota>5000</quota></cputune>")
    apply_settings(dom, str(g), 2, ("memory", "cpu"))
    assert (g / "memory.max").read_text() == "max"
    assert (g / "cpu.max").read_text() == "max 100000"


def test_v2_shares_out_of_weight_range(tmp_path: Path) -> None:
    g = v2_group(tmp_path)
    dom = domain(extra="<cputune><shares>20000</shares></cputune>")
    with pytest.raises(PyvirtError, match="cpu.weight takes 1 to 10000") as e:
        apply_settings(dom, str(g), 2, ("cpu",))
    assert e.value.code == codes.VIR_ERR_CONFIG_UNSUPPORTED


def test_write_error_names_file_and_value(tmp_path: Path) -> None:
    dom = domain(extra="<cputune><shares>300</shares></cputune>")
    with pytest.raises(OperationFailed, match=rf"cannot write '300' to {tmp_path}/cpu.weight: "
                                              "No such file"):
        apply_settings(dom, str(tmp_path), 2, ("cpu",))


def test_tunables_without_controller_are_refused() -> None:
    dom = domain(extra="<memtune><hard_limit>1048576</hard_limit></memtune>")
    with pytest.raises(PyvirtError, match="memory cgroup controller is not available") as e:
        cgroup.create(dom, instance="system", controllers=(), host=CgroupHost([]))
    assert e.value.code == codes.VIR_ERR_CONFIG_UNSUPPORTED
    assert cgroup.create(domain(), instance="system", controllers=(), host=CgroupHost([])) is None


def test_swap_below_hard_limit_is_refused() -> None:
    dom = domain(extra="<memtune><hard_limit>2048</hard_limit><swap_hard_limit>1024</swap_hard_limit>"
                       "</memtune>")
    host = CgroupHost([Hierarchy(1, "/nonexistent", ("memory",), "/")])
    with pytest.raises(PyvirtError, match="must be lower than or equal to swap_hard_limit"):
        cgroup.create(dom, instance="system", host=host)
