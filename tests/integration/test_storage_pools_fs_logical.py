# SPDX-License-Identifier: LGPL-2.1-or-later
"""``fs`` and ``logical`` storage pools on real loop devices (sparse files in the test's directory):
real mkfs, mount, blkid and LVM, through pyvirsh and the API, and side by side with libvirt 9.0's
storage driver (a private libvirtd, tests/storage_oracle.py) on a loop device of its own.

Every test undoes what it made on the host whatever happens: mounts below its directory, its
volume groups (vgremove, pvremove) and its loop devices (losetup -d). Tests skip, saying why, where
``losetup -f`` finds no free loop device or the tools are missing.

This host's kernel may have no device-mapper (no /dev/mapper/control): LVM can then make volume
groups but activate no logical volume, and lvcreate fails for libvirt too. The logical tests check
the volume calls where LVs can exist and, where they cannot, pyvirt's VIR_ERR_NO_SUPPORT error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyvirt import _errcodes as codes
from pyvirt.connection import open as open_conn
from pyvirt.errors import PyvirtError
from pyvirt.storage import backend_logical

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
MiB = 1024 * 1024
LVM_ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1", "DM_DISABLE_UDEV": "1"}
HAS_DM = backend_logical.device_mapper_problem() is None


def _loop_problem() -> str | None:
    if os.geteuid() != 0:
        return "loop devices, mount and LVM need root"
    for tool in ("losetup", "mkfs.ext4", "blkid", "pvcreate", "vgcreate"):
        if shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
            return f"{tool} is missing: run scripts/setup.sh"
    proc = subprocess.run(["losetup", "-f"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"losetup -f finds no free loop device here: {proc.stderr.strip()}"
    return None


pytestmark = pytest.mark.skipif(_loop_problem() is not None, reason=str(_loop_problem()))


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, env=LVM_ENV, timeout=120)


def mounts_below(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(prefix)]


def vgs() -> list[str]:
    return sh("vgs", "--noheadings", "-o", "vg_name").stdout.split()


@dataclass
class Host:
    """What a test made on the host, undone at its end."""

    work: Path
    loops: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)

    def loop(self, size: int = 64 * MiB) -> str:
        image = self.work / f"disk{len(self.loops)}.img"
        with open(image, "wb") as f:
            f.truncate(size)  # sparse
        dev = sh("losetup", "-f", "--show", str(image)).stdout.strip()
        self.loops.append(dev)
        return dev

    def vg_name(self) -> str:
        name = f"pyvt{uuid.uuid4().hex[:10]}"
        self.groups.append(name)
        return name

    def cleanup(self) -> None:
        for target in sorted(mounts_below(self.work), key=len, reverse=True):
            sh("umount", "-l", target, check=False)
        existing = vgs()
        for vg in self.groups:
            if vg in existing:
                sh("vgremove", "-f", vg, check=False)
        for dev in self.loops:
            sh("pvremove", "-ff", "-y", dev, check=False)
            sh("losetup", "-d", dev, check=False)


@pytest.fixture
def host(root: Path) -> Iterator[Host]:
    h = Host(root.parent)
    try:
        yield h
    finally:
        h.cleanup()


def pyvirsh(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYVIRSH, "-c", f"qemu:///embed?root={root}", *args], capture_output=True,
                          text=True, timeout=120)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def fs_xml(name: str, device: str, target: Path, fmt: str = "ext4") -> str:
    return (f"<pool type='fs'><name>{name}</name><source><device path='{device}'/><format type='{fmt}'/>"
            f"</source><target><path>{target}</path></target></pool>")


def lvm_xml(name: str, device: str, vg: str) -> str:
    return (f"<pool type='logical'><name>{name}</name><source><device path='{device}'/><name>{vg}</name>"
            f"<format type='lvm2'/></source><target><path>/dev/{vg}</path></target></pool>")


def define(root: Path, work: Path, xml: str) -> None:
    f = work / "pool.xml"
    f.write_text(xml)
    ok(pyvirsh(root, "pool-define", str(f)))


def blkid_type(dev: str) -> str:
    return sh("blkid", "-p", "-o", "value", "-s", "TYPE", dev, check=False).stdout.strip()


# ---- fs -------------------------------------------------------------------------------------------

def test_fs_pool_lifecycle(root: Path, host: Host) -> None:
    dev = host.loop()
    target = host.work / "mnt"
    define(root, host.work, fs_xml("fsp", dev, target))
    assert ok(pyvirsh(root, "pool-build", "fsp", "--no-overwrite")) == "Pool fsp built\n\n"
    assert target.is_dir() and blkid_type(dev) == "ext4"
    again = pyvirsh(root, "pool-build", "fsp", "--no-overwrite")
    assert again.returncode == 1
    assert f"Storage pool already built: Device '{dev}' already formatted using 'ext4'" in again.stderr
    ok(pyvirsh(root, "pool-start", "fsp"))
    assert mounts_below(host.work) == [str(target)]
    info = ok(pyvirsh(root, "pool-info", "fsp"))
    assert "State:          running" in info
    ok(pyvirsh(root, "vol-create-as", "fsp", "v1", "8M"))
    assert (target / "v1").stat().st_size == 8 * MiB
    listing = ok(pyvirsh(root, "vol-list", "fsp"))
    assert f"{target}/v1" in listing and "lost+found" in listing
    vinfo = ok(pyvirsh(root, "vol-info", "v1", "--pool", "fsp"))
    assert "Capacity:       8.00 MiB" in vinfo and "Type:           file" in vinfo
    ok(pyvirsh(root, "vol-delete", "v1", "--pool", "fsp"))
    assert not (target / "v1").exists()
    ok(pyvirsh(root, "pool-destroy", "fsp"))
    assert mounts_below(host.work) == []
    ok(pyvirsh(root, "pool-delete", "fsp"))
    assert not target.exists()
    ok(pyvirsh(root, "pool-undefine", "fsp"))
    assert blkid_type(dev) == "ext4"  # pool-delete removes the directory, never the file system


def test_fs_pool_found_unmounted_is_inactive(root: Path, host: Host) -> None:
    """A pool whose device was unmounted behind its back is inactive at the next refresh (as
    libvirt's checkPool finds it), and at the next open of the embed root; a transient pool made
    with WITH_BUILD_NO_OVERWRITE is built, mounted and, once destroyed, gone."""
    dev = host.loop()
    target = host.work / "mnt"
    conn = open_conn(f"qemu:///embed?root={root}")
    try:
        pool = conn.storagePoolCreateXML(fs_xml("fsp", dev, target), 4)  # WITH_BUILD_NO_OVERWRITE
        assert blkid_type(dev) == "ext4" and mounts_below(host.work) == [str(target)]
        assert not pool.isPersistent()
        pool.destroy()
        assert mounts_below(host.work) == [] and conn.listAllStoragePools() == []
        pool = conn.storagePoolDefineXML(fs_xml("fsp", dev, target))
        pool.create()
        sh("umount", str(target))
        with pytest.raises(PyvirtError, match="its source device is not mounted on") as exc:
            pool.refresh()
        assert exc.value.get_error_code() == codes.VIR_ERR_OPERATION_INVALID
        assert not pool.isActive()
        pool.create()
        assert mounts_below(host.work) == [str(target)]
    finally:
        conn.close()
    sh("umount", str(target))
    listing = pyvirsh(root, "pool-list", "--all")
    assert re.search(r"fsp\s+inactive", listing.stdout), listing


def test_fs_pool_bad_input_changes_nothing(root: Path, host: Host) -> None:
    conn = open_conn(f"qemu:///embed?root={root}")
    try:
        # a device that is not a block device
        image = host.work / "plain.img"
        image.write_bytes(bytes(MiB))
        target = host.work / "t1"
        pool = conn.storagePoolDefineXML(fs_xml("notblk", str(image), target))
        with pytest.raises(PyvirtError) as exc:
            pool.build(4)  # NO_OVERWRITE
        assert exc.value.get_error_code() == codes.VIR_ERR_OPERATION_INVALID
        assert "is not a block device" in str(exc.value) and "losetup" in str(exc.value)
        assert not target.exists()
        target.mkdir()
        with pytest.raises(PyvirtError, match="is not a block device"):
            pool.create()
        assert not pool.isActive() and mounts_below(host.work) == []

        # NO_OVERWRITE on a device holding a file system: refused, the file system untouched
        dev = host.loop()
        sh("mkfs.ext4", "-q", "-F", dev)
        before = sh("blkid", "-p", "-o", "value", "-s", "UUID", dev).stdout
        target2 = host.work / "t2"
        pool2 = conn.storagePoolDefineXML(fs_xml("hasfs", dev, target2, fmt="vfat"))
        with pytest.raises(PyvirtError) as exc:
            pool2.build(4)
        assert exc.value.get_error_code() == codes.VIR_ERR_STORAGE_POOL_BUILT
        assert f"Format of device '{dev}' does not match the expected format 'vfat'" in str(exc.value)
        assert not target2.exists()
        assert sh("blkid", "-p", "-o", "value", "-s", "UUID", dev).stdout == before

        pool2.undefine()
        # a file system whose mkfs is not installed (xfsprogs is not among pyvirt's packages)
        pool_xfs = conn.storagePoolDefineXML(fs_xml("xfs", dev, target2, fmt="xfs"))
        if shutil.which("mkfs.xfs", path="/usr/sbin:/sbin") is None:
            with pytest.raises(PyvirtError, match="mkfs.xfs is not installed; install xfsprogs") as exc:
                pool_xfs.build(8)  # OVERWRITE
            assert exc.value.get_error_code() == codes.VIR_ERR_NO_SUPPORT
            assert not target2.exists() and blkid_type(dev) == "ext4"
        pool_xfs.undefine()
        # the mount point is busy: something else is mounted there
        target2.mkdir()
        sh("mount", "-t", "tmpfs", "pyvirt-test", str(target2))
        pool3 = conn.storagePoolDefineXML(fs_xml("busy", dev, target2))
        with pytest.raises(PyvirtError) as exc:
            pool3.create()
        assert exc.value.get_error_code() == codes.VIR_ERR_OPERATION_INVALID
        assert f"target directory '{target2}'" in str(exc.value) and "is busy" in str(exc.value)
        assert mounts_below(host.work) == [str(target2)] and not pool3.isActive()
        sh("umount", str(target2))
        # the device mounted elsewhere
        other = host.work / "other"
        other.mkdir()
        sh("mount", dev, str(other))
        with pytest.raises(PyvirtError, match=f"is already mounted on '{other}'"):
            pool3.create()
        assert mounts_below(host.work) == [str(other)]
    finally:
        conn.close()


# ---- logical --------------------------------------------------------------------------------------

def test_logical_pool_lifecycle(root: Path, host: Host) -> None:
    dev = host.loop()
    vg = host.vg_name()
    define(root, host.work, lvm_xml("lvp", dev, vg))
    start = pyvirsh(root, "pool-start", "lvp")
    assert start.returncode == 1
    assert f"unsupported configuration: cannot find logical volume group name '{vg}'" in start.stderr
    ok(pyvirsh(root, "pool-build", "lvp", "--no-overwrite"))
    assert vg in vgs() and blkid_type(dev) == "LVM2_member"
    again = pyvirsh(root, "pool-build", "lvp", "--no-overwrite")
    assert f"Device '{dev}' already formatted using 'LVM2_member'" in again.stderr
    ok(pyvirsh(root, "pool-start", "lvp"))
    size, free = sh("vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_size,vg_free",
                    vg).stdout.split()
    xml = ok(pyvirsh(root, "pool-dumpxml", "lvp"))
    assert f"<capacity unit='bytes'>{size}</capacity>" in xml
    assert f"<available unit='bytes'>{free}</available>" in xml
    assert ok(pyvirsh(root, "vol-list", "lvp")).count("\n") == 3  # the header only: no LV yet
    made = pyvirsh(root, "vol-create-as", "lvp", "v1", "8M")
    if HAS_DM:
        ok(made)
        assert f"/dev/{vg}/v1" in ok(pyvirsh(root, "vol-list", "lvp"))
        assert "Type:           block" in ok(pyvirsh(root, "vol-info", "v1", "--pool", "lvp"))
        key = sh("lvs", "--noheadings", "-o", "lv_uuid", f"{vg}/v1").stdout.strip()
        assert ok(pyvirsh(root, "vol-key", "v1", "--pool", "lvp")).strip() == key
        ok(pyvirsh(root, "vol-delete", "v1", "--pool", "lvp"))
    else:
        assert made.returncode == 1
        assert "device-mapper" in made.stderr and "cannot create logical volume 'v1'" in made.stderr
    assert sh("lvs", "--noheadings", vg).stdout.strip() == ""
    qcow = pyvirsh(root, "vol-create-as", "lvp", "v2", "8M", "--format", "qcow2")
    assert qcow.returncode == 1 and "use format raw" in qcow.stderr
    ok(pyvirsh(root, "pool-destroy", "lvp"))
    ok(pyvirsh(root, "pool-delete", "lvp"))
    assert vg not in vgs() and blkid_type(dev) == ""
    ok(pyvirsh(root, "pool-undefine", "lvp"))


def test_logical_pool_bad_input_changes_nothing(root: Path, host: Host) -> None:
    conn = open_conn(f"qemu:///embed?root={root}")
    try:
        dev = host.loop()
        with pytest.raises(PyvirtError) as exc:
            conn.storagePoolDefineXML(lvm_xml("slash", dev, "a/b"))
        assert exc.value.get_error_code() == codes.VIR_ERR_CONFIG_UNSUPPORTED
        assert "volume group name 'a/b' is not valid" in str(exc.value)
        with pytest.raises(PyvirtError, match="volume group name '-v' is not valid"):
            conn.storagePoolDefineXML(lvm_xml("dash", dev, "-v"))
        assert conn.listAllStoragePools() == []

        # NO_OVERWRITE on a device holding a file system
        sh("mkfs.ext4", "-q", "-F", dev)
        vg = host.vg_name()
        pool = conn.storagePoolDefineXML(lvm_xml("hasfs", dev, vg))
        with pytest.raises(PyvirtError) as exc:
            pool.build(4)
        assert exc.value.get_error_code() == codes.VIR_ERR_STORAGE_POOL_BUILT
        assert "does not match the expected format 'LVM2_member', forced overwrite" in str(exc.value)
        assert blkid_type(dev) == "ext4" and vg not in vgs()
        with pytest.raises(PyvirtError, match="Storage source conflict with pool: 'hasfs'"):
            conn.storagePoolDefineXML(lvm_xml("samevg", dev, vg))

        # a regular file as the device
        image = host.work / "plain.img"
        image.write_bytes(bytes(MiB))
        pool2 = conn.storagePoolDefineXML(lvm_xml("notblk", str(image), host.vg_name()))
        with pytest.raises(PyvirtError, match="is not a block device"):
            pool2.build(8)  # even with OVERWRITE
        assert image.read_bytes() == bytes(MiB)
    finally:
        conn.close()


def test_lvs_output_is_read_as_libvirt_reads_it() -> None:
    """libvirt's own sample of lvs output: inactive LVs and thin pools are no volumes; an LV of two
    segments is one volume; an origin in brackets (a --virtualsize LV's) is no backing store."""
    out = ("  RootLV##06UgP5-2rhb-w3Bo-3mdR-WeoL-pytO-SAa2ky#/dev/hda2(0)#linear#1#5234491392#33554432#"
           "5234491392#-wi-ao\n"
           "  Test3##UB5hFw-kmlm-LSoX-EI1t-ioVd-h7GL-M0W8Ht#/dev/hda2(251)#linear#1#2181038080#33554432#"
           "2181038080#-wi-a-\n"
           "  Test3#Test2#UB5hFw-kmlm-LSoX-EI1t-ioVd-h7GL-M0W8Ht#/dev/hda2(187)#linear#1#1040187392#"
           "33554432#1040187392#swi-a-\n"
           "  Off##aaaaaa-kmlm-LSoX-EI1t-ioVd-h7GL-M0W8Ht#/dev/hda2(300)#linear#1#4194304#4194304#4194304#"
           "-wi---\n"
           "  thin##bbbbbb-kmlm-LSoX-EI1t-ioVd-h7GL-M0W8Ht#thin_tdata(0)#thin-pool#1#4194304#4194304#"
           "4194304#twi-a-tz--\n"
           "  Sparse#[Sparse_vorigin]#cccccc-kmlm-LSoX-EI1t-ioVd-h7GL-M0W8Ht#/dev/hda2(9)#linear#1#4194304#"
           "4194304#4194304#swi-a-s---\n")
    vols = backend_logical.parse_lvs(out, "/dev/HostVG-none")
    assert [(v.name, v.key, v.path, v.allocation, v.origin, v.sparse) for v in vols] == [
        ("RootLV", "06UgP5-2rhb-w3Bo-3mdR-WeoL-pytO-SAa2ky", "/dev/HostVG-none/RootLV", 5234491392, None,
         False),
        ("Sparse", "cccccc-kmlm-LSoX-EI1t-ioVd-h7GL-M0W8Ht", "/dev/HostVG-none/Sparse", 4194304, None, True),
        ("Test3", "UB5hFw-kmlm-LSoX-EI1t-ioVd-h7GL-M0W8Ht", "/dev/HostVG-none/Test3", 2181038080, None,
         False),
    ]


# ---- against libvirt 9.0 --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def libvirtd() -> Iterator[str]:
    from storage_oracle import storage_libvirtd_uri

    with storage_libvirtd_uri() as uri:
        yield uri


def run_steps(binary: str, uri: str, steps: list[list[str]]) -> list[tuple[str, int, str, str]]:
    results = []
    for step in steps:
        p = subprocess.run([binary, "-c", uri, *step], capture_output=True, text=True, timeout=120)
        results.append((" ".join(step), p.returncode, p.stdout, p.stderr))
    return results


def normalise(text: str, subst: dict[str, str]) -> str:
    for old, new in sorted(subst.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "UUID", text)
    return re.sub(r"<(atime|mtime|ctime)>[0-9.]+</", r"<\1>T</", text)


def compare(ours: list[tuple[str, int, str, str]], theirs: list[tuple[str, int, str, str]],
            subst_ours: dict[str, str], subst_theirs: dict[str, str]) -> list[str]:
    differ = []
    for (step, rc1, out1, err1), (_, rc2, out2, err2) in zip(ours, theirs, strict=True):
        a, b = normalise(out1, subst_ours), normalise(out2, subst_theirs)
        if rc1 != rc2 or a != b:
            differ.append(f"{step}: rc {rc1} vs {rc2}\n--- pyvirsh\n{a}{err1}--- virsh\n{b}{err2}")
    return differ


@pytest.mark.oracle
def test_fs_pool_matches_libvirt(root: Path, host: Host, libvirtd: str) -> None:
    from oracle import VIRSH

    sides = {}
    for side in ("theirs", "ours"):
        dev = host.loop()
        target = host.work / f"mnt-{side[0]}"
        xml = host.work / f"{side}.xml"
        xml.write_text(fs_xml("fsp", dev, target))
        steps = [["pool-define", str(xml)], ["pool-build", "fsp", "--overwrite"], ["pool-start", "fsp"],
                 ["pool-info", "fsp"], ["pool-dumpxml", "fsp"],
                 ["vol-create-as", "fsp", "v1", "8M"], ["vol-list", "fsp", "--details"],
                 ["vol-info", "v1", "--pool", "fsp"], ["vol-dumpxml", "v1", "--pool", "fsp"],
                 ["vol-info", "lost+found", "--pool", "fsp"], ["vol-dumpxml", "lost+found", "--pool", "fsp"],
                 ["pool-start", "fsp"], ["vol-delete", "v1", "--pool", "fsp"], ["pool-destroy", "fsp"],
                 ["pool-delete", "fsp"], ["pool-undefine", "fsp"]]
        binary, uri = (VIRSH, libvirtd) if side == "theirs" else (PYVIRSH, f"qemu:///embed?root={root}")
        sides[side] = (run_steps(binary, uri, steps), {dev: "DEV", str(target): "TARGET", str(xml): "XML"})
        assert not target.exists()
    ours, theirs = sides["ours"], sides["theirs"]
    differ = compare(ours[0], theirs[0], ours[1], theirs[1])
    assert not differ, "\n".join(differ)
    assert mounts_below(host.work) == []


@pytest.mark.oracle
def test_logical_pool_matches_libvirt(root: Path, host: Host, libvirtd: str) -> None:
    from oracle import VIRSH

    sides = {}
    for side in ("theirs", "ours"):
        dev = host.loop()
        vg = host.vg_name()
        xml = host.work / f"{side}.xml"
        xml.write_text(lvm_xml("lvp", dev, vg))
        steps = [["pool-define", str(xml)], ["pool-start", "lvp"], ["pool-build", "lvp"],
                 ["pool-start", "lvp"], ["pool-info", "lvp"], ["pool-dumpxml", "lvp"],
                 ["vol-list", "lvp", "--details"], ["pool-refresh", "lvp"], ["pool-destroy", "lvp"],
                 ["pool-delete", "lvp"], ["pool-undefine", "lvp"]]
        binary, uri = (VIRSH, libvirtd) if side == "theirs" else (PYVIRSH, f"qemu:///embed?root={root}")
        sides[side] = (run_steps(binary, uri, steps), {dev: "DEV", vg: "VG", str(xml): "XML"})
        assert vg not in vgs()
    ours, theirs = sides["ours"], sides["theirs"]
    differ = compare(ours[0], theirs[0], ours[1], theirs[1])
    assert not differ, "\n".join(differ)
