# SPDX-License-Identifier: LGPL-2.1-or-later
"""The DAC driver on real files, real owners, real extended attributes and a real unprivileged user.

Runs as root (the system instance's situation). Files live in a fresh directory under /var/tmp
(ext4 here; the fixture checks that it takes trusted.* attributes) and are removed afterwards.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvirt.conf.qemu_conf import parse_qemu_conf
from pyvirt.errors import OperationFailed, OperationInvalid, codes
from pyvirt.security.dac import DACDriver, may_access
from pyvirt.security.manager import SecurityStack, build_security_stack
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind

OWNER = "trusted.pyvirt.security.dac"
REF = "trusted.pyvirt.security.ref_dac"
BOOT = "trusted.pyvirt.security.boot_dac"
ORIG = (1234, 5678)  # an owner no user has, so that restoring it is unmistakable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the DAC driver's system case needs root")


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pyvirt-dac-", dir="/var/tmp"))
    d.chmod(0o755)
    probe = d / "probe"
    probe.touch()
    try:
        os.setxattr(probe, "trusted.pyvirt.probe", b"1")
    except OSError as e:
        shutil.rmtree(d)
        pytest.fail(f"/var/tmp does not take trusted.* extended attributes ({e.strerror})")
    probe.unlink()
    try:
        yield d
    finally:
        for p in d.rglob("*"):  # chattr +i would stop rmtree
            if p.is_file() and not p.is_symlink():
                subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        shutil.rmtree(d)


def image(d: Path, name: str, owner: tuple[int, int] = ORIG, mode: int = 0o644) -> Path:
    p = d / name
    p.write_bytes(b"disk image bytes\n")
    os.chown(p, *owner)
    p.chmod(mode)
    return p


def ctx_for(uid_gid: tuple[int, int], *resources: Resource, name: str = "vm1") -> DomainSecurityContext:
    return DomainSecurityContext(name=name, uuid=f"00000000-0000-0000-0000-{abs(hash(name)) % 10**12:012d}",
                                 uid=uid_gid[0], gid=uid_gid[1], resources=resources)


def owner(p: Path | str) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_uid, st.st_gid


def xattrs(p: Path | str) -> dict[str, bytes]:
    return {n: os.getxattr(p, n) for n in os.listxattr(p) if n.startswith("trusted.")}


def boot_id() -> bytes:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip().encode()


def stack(*, dynamic_ownership: bool = True, remember_owner: bool = True) -> SecurityStack:
    return build_security_stack(("none",), DACDriver(dynamic_ownership=dynamic_ownership,
                                                     remember_owner=remember_owner))


# --- labelling and giving back ---------------------------------------------------------------------

def test_start_chowns_every_file_and_stop_restores_the_remembered_owner(
        workdir: Path, qemu_user: tuple[int, int]) -> None:
    disk = image(workdir, "disk.qcow2")
    cdrom = image(workdir, "install.iso", owner=(0, 0))
    kernel = image(workdir, "vmlinuz", owner=(42, 43))
    initrd = image(workdir, "initrd.img")
    nvram = image(workdir, "VARS.fd", mode=0o600)
    log = workdir / "serial.log"  # missing: created
    ctx = ctx_for(qemu_user, Resource(str(disk)), Resource(str(cdrom), ResourceKind.CDROM),
                  Resource(str(kernel), ResourceKind.KERNEL), Resource(str(initrd), ResourceKind.INITRD),
                  Resource(str(nvram), ResourceKind.NVRAM), Resource(str(log), ResourceKind.SERIAL_LOG))
    s = stack()
    s.set_all(ctx)
    for p in (disk, cdrom, kernel, initrd, nvram, log):
        assert owner(p) == qemu_user, p
        assert set(xattrs(p)) == {OWNER, REF, BOOT}, p
        assert xattrs(p)[REF] == b"1" and xattrs(p)[BOOT] == boot_id()
    assert xattrs(disk)[OWNER] == b"+1234:+5678"
    assert xattrs(kernel)[OWNER] == b"+42:+43"
    assert xattrs(cdrom)[OWNER] == b"+0:+0"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert not any(n.startswith("trusted.libvirt.") for n in os.listxattr(disk))  # never libvirt's

    assert s.restore_all(ctx) == []
    assert owner(disk) == owner(initrd) == owner(nvram) == ORIG
    assert owner(kernel) == (42, 43)
    assert owner(cdrom) == owner(log) == (0, 0)
    for p in (disk, cdrom, kernel, initrd, nvram, log):
        assert xattrs(p) == {}, p
    assert disk.read_bytes() == b"disk image bytes\n"  # content untouched


def test_two_domains_sharing_a_readonly_image_restore_it_at_the_last_stop(
        workdir: Path, qemu_user: tuple[int, int]) -> None:
    base = image(workdir, "base.img")
    r = Resource(str(base), readonly=True)
    a, b = ctx_for(qemu_user, r, name="a"), ctx_for(qemu_user, r, name="b")
    s = stack()
    s.set_all(a)
    assert owner(base) == qemu_user and xattrs(base)[REF] == b"1"
    s.set_all(b)
    assert owner(base) == qemu_user and xattrs(base)[REF] == b"2"
    assert xattrs(base)[OWNER] == b"+1234:+5678"  # still the true original, not QEMU's
    assert s.restore_all(a) == []
    assert owner(base) == qemu_user and xattrs(base)[REF] == b"1"  # b still runs
    assert s.restore_all(b) == []
    assert owner(base) == ORIG and xattrs(base) == {}


def test_a_file_in_use_is_not_given_to_another_owner(workdir: Path, qemu_user: tuple[int, int]) -> None:
    shared = image(workdir, "shared.raw")
    other = image(workdir, "other.raw")
    r = Resource(str(shared), shared=True)
    s = stack()
    s.set_all(ctx_for(qemu_user, r, name="a"))
    before = xattrs(shared)
    intruder = ctx_for((0, 0), Resource(str(other)), r, name="b")  # runs as root:root
    uid, gid = qemu_user
    with pytest.raises(OperationInvalid, match=rf"domain 'b': disk '.*shared.raw' \(shareable\): .* in "
                                               rf"use by 1 other running domain\(s\) as {uid}:{gid}, and "
                                               r"giving it to 0:0 would cut them off"):
        s.set_all(intruder)
    assert owner(shared) == qemu_user and xattrs(shared) == before
    assert owner(other) == ORIG and xattrs(other) == {}  # rolled back


def test_libvirt_attributes_are_read_never_written(workdir: Path, qemu_user: tuple[int, int]) -> None:
    """A file a libvirt domain of this boot uses as another owner is refused; a stale one is not."""
    f = image(workdir, "libvirt-owned.img", owner=(107, 107))
    btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                 if line.startswith("btime "))
    os.setxattr(f, "trusted.libvirt.security.ref_dac", b"1")
    os.setxattr(f, "trusted.libvirt.security.timestamp_dac", str(btime).encode())
    os.setxattr(f, "trusted.libvirt.security.dac", b"+0:+0")
    with pytest.raises(OperationInvalid, match=r"in use by 1 domain\(s\) of libvirt"):
        stack().set_all(ctx_for(qemu_user, Resource(str(f))))
    assert owner(f) == (107, 107) and OWNER not in xattrs(f)

    os.setxattr(f, "trusted.libvirt.security.timestamp_dac", str(btime - 86400).encode())  # older boot
    s = stack()
    ctx = ctx_for(qemu_user, Resource(str(f)))
    s.set_all(ctx)
    s.restore_all(ctx)
    assert owner(f) == (107, 107)
    assert {k: v for k, v in xattrs(f).items() if "libvirt" in k} == {
        "trusted.libvirt.security.ref_dac": b"1",
        "trusted.libvirt.security.timestamp_dac": str(btime - 86400).encode(),
        "trusted.libvirt.security.dac": b"+0:+0"}


def test_remembered_owner_from_an_earlier_boot_is_discarded(workdir: Path,
                                                            qemu_user: tuple[int, int]) -> None:
    f = image(workdir, "crashed.img")
    os.setxattr(f, OWNER, b"+1:+1")
    os.setxattr(f, REF, b"3")
    os.setxattr(f, BOOT, b"00000000-0000-0000-0000-000000000000")
    s = stack()
    ctx = ctx_for(qemu_user, Resource(str(f)))
    s.set_all(ctx)
    assert xattrs(f) == {OWNER: b"+1234:+5678", REF: b"1", BOOT: boot_id()}
    s.restore_all(ctx)
    assert owner(f) == ORIG and xattrs(f) == {}


def test_remember_owner_off_restores_root_like_libvirt(workdir: Path, qemu_user: tuple[int, int]) -> None:
    disk = image(workdir, "disk.img")
    ro = image(workdir, "ro.img")
    ctx = ctx_for(qemu_user, Resource(str(disk)), Resource(str(ro), readonly=True))
    conf = parse_qemu_conf("remember_owner = 0\n", privileged=True)
    s = build_security_stack(conf.security_driver, DACDriver.from_conf(conf))
    s.set_all(ctx)
    assert owner(disk) == owner(ro) == qemu_user
    assert xattrs(disk) == xattrs(ro) == {}
    assert s.restore_all(ctx) == []
    assert owner(disk) == (0, 0)       # libvirt's default owner
    assert owner(ro) == qemu_user      # read-only without a count: other domains may use it


def test_dynamic_ownership_off_touches_nothing(workdir: Path, qemu_user: tuple[int, int]) -> None:
    disk = image(workdir, "disk.img", mode=0o666)
    log = workdir / "serial.log"
    ctx = ctx_for(qemu_user, Resource(str(disk)))
    s = stack(dynamic_ownership=False)
    s.set_all(ctx)
    assert owner(disk) == ORIG and xattrs(disk) == {}
    assert s.restore_all(ctx) == []
    assert owner(disk) == ORIG and xattrs(disk) == {}
    assert not log.exists()

    private = image(workdir, "private.img", mode=0o600)
    with pytest.raises(OperationInvalid, match=r"cannot read and write .*private.img \(mode 0600, owner "
                                               r"1234:5678\) and dynamic_ownership is off in qemu.conf; "
                                               rf"fix: chown {qemu_user[0]}:{qemu_user[1]} "):
        s.set_all(ctx_for(qemu_user, Resource(str(private))))
    assert owner(private) == ORIG


# --- refusals --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/etc/passwd", "/dev/null", "/usr/bin/qemu-system-x86_64", "/",
                                  "/etc", "/boot"])
def test_system_paths_are_refused(path: str, qemu_user: tuple[int, int]) -> None:
    before = os.stat(path)
    attrs = xattrs(path)
    with pytest.raises(OperationInvalid, match=r"refusing to change the owner of the system path "
                                               + re.escape(path) + r" or to let QEMU write to "
                                               r"it; copy the file"):
        stack().set_all(ctx_for(qemu_user, Resource(path)))
    after = os.stat(path)
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
    assert xattrs(path) == attrs


def test_readonly_system_file_is_left_alone(qemu_user: tuple[int, int]) -> None:
    before = owner("/etc/passwd")
    ctx = ctx_for(qemu_user, Resource("/etc/passwd", ResourceKind.KERNEL))
    s = stack()
    s.set_all(ctx)
    assert owner("/etc/passwd") == before and xattrs("/etc/passwd") == {}
    assert s.restore_all(ctx) == []
    assert owner("/etc/passwd") == before
    with pytest.raises(OperationInvalid, match=r"cannot read /etc/shadow .* fix: chown"):
        s.set_all(ctx_for(qemu_user, Resource("/etc/shadow", ResourceKind.INITRD)))


def test_symlink_into_the_system_is_refused(workdir: Path, qemu_user: tuple[int, int]) -> None:
    link = workdir / "innocent.img"
    link.symlink_to("/etc/passwd")
    with pytest.raises(OperationInvalid, match=r"system path .*innocent.img \(which is /etc/passwd\)"):
        stack().set_all(ctx_for(qemu_user, Resource(str(link))))
    assert owner("/etc/passwd") == (0, 0)


def test_hard_link_is_refused(workdir: Path, qemu_user: tuple[int, int]) -> None:
    f = image(workdir, "a.img")
    os.link(f, workdir / "b.img")
    with pytest.raises(OperationInvalid, match=r"a.img has 2 hard links"):
        stack().set_all(ctx_for(qemu_user, Resource(str(f))))
    assert owner(f) == ORIG


def test_not_a_regular_file_is_refused(workdir: Path, qemu_user: tuple[int, int]) -> None:
    (workdir / "dir").mkdir()
    os.mkfifo(workdir / "fifo")
    os.mknod(workdir / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 250))
    os.mknod(workdir / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    cases = [(Resource(str(workdir / "dir")), "a directory"),
             (Resource(str(workdir / "fifo")), "a FIFO"),
             (Resource(str(workdir / "chr")), "a character device"),
             (Resource(str(workdir / "blk"), ResourceKind.KERNEL), "a block device, but a kernel must be "
                                                                  "a regular file;")]
    for res, what in cases:
        with pytest.raises(OperationInvalid, match=f"is {what}"):
            stack().set_all(ctx_for(qemu_user, res))
        assert owner(res.path) == (0, 0)
    with pytest.raises(OperationInvalid, match=r"missing.img does not exist; create it or correct"):
        stack().set_all(ctx_for(qemu_user, Resource(str(workdir / "missing.img"))))
    assert not (workdir / "missing.img").exists()

    # a block device is a fine disk
    ctx = ctx_for(qemu_user, Resource(str(workdir / "blk")))
    s = stack()
    s.set_all(ctx)
    assert owner(workdir / "blk") == qemu_user
    s.restore_all(ctx)
    assert owner(workdir / "blk") == (0, 0)


def test_parent_without_search_permission_names_the_directory_and_the_fix(
        workdir: Path, qemu_user: tuple[int, int]) -> None:
    home = workdir / "home" / "alice"
    home.mkdir(parents=True)
    home.chmod(0o700)  # the usual $HOME
    f = image(home, "vm.qcow2")
    ctx = ctx_for(qemu_user, Resource(str(f)))
    with pytest.raises(OperationInvalid) as e:
        stack().set_all(ctx)
    msg = str(e.value)
    assert f"directory {home} (mode 0700, owner 0:0) denies it search permission" in msg
    assert f"fix: chmod o+x {home}" in msg
    user = pwd.getpwuid(qemu_user[0]).pw_name
    assert f"QEMU (uid {qemu_user[0]} '{user}', gid {qemu_user[1]}) cannot reach {f}" in msg
    assert e.value.get_error_domain() == codes.VIR_FROM_SECURITY
    assert owner(f) == ORIG and xattrs(f) == {}
    # the kernel agrees that QEMU's user could not have opened it
    probe = subprocess.run(["/usr/bin/test", "-r", str(f)], user=qemu_user[0], group=qemu_user[1],
                           extra_groups=[])
    assert probe.returncode == 1

    home.chmod(0o701)  # the fix
    s = stack()
    s.set_all(ctx)
    assert owner(f) == qemu_user
    s.restore_all(ctx)


# --- transactions ----------------------------------------------------------------------------------

@pytest.mark.parametrize("through", ["stack", "driver"])
def test_failure_at_the_third_of_four_files_rolls_everything_back(
        workdir: Path, qemu_user: tuple[int, int], through: str) -> None:
    files = [image(workdir, f"d{i}.img") for i in range(4)]
    subprocess.run(["chattr", "+i", str(files[2])], check=True)  # even root cannot chown it now
    ctx = ctx_for(qemu_user, *(Resource(str(f)) for f in files))
    with pytest.raises(OperationFailed, match=rf"disk '.*d2.img': cannot change its owner to "
                                              rf"{ctx.uid}:{ctx.gid}, and QEMU .* could not read and "
                                              r"write it otherwise \(.*d2.img: Operation not permitted\)"):
        (stack() if through == "stack" else DACDriver()).set_all(ctx)
    for f in files:
        assert owner(f) == ORIG and xattrs(f) == {}, f


def test_failure_on_a_readonly_mount_rolls_everything_back(workdir: Path, qemu_user: tuple[int, int]) -> None:
    ro = workdir / "ro"
    ro.mkdir()
    inside = image(ro, "c.img")
    files = [image(workdir, "a.img"), image(workdir, "b.img"), inside, image(workdir, "d.img")]
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        ctx = ctx_for(qemu_user, *(Resource(str(f)) for f in files))
        with pytest.raises(OperationFailed, match=r"c.img: Read-only file system"):
            stack().set_all(ctx)
        for f in files:
            assert owner(f) == ORIG and xattrs(f) == {}, f

        # read-only and readable by everyone: libvirt's "leave it" case works
        ok = ctx_for(qemu_user, Resource(str(files[0])), Resource(str(inside), readonly=True))
        s = stack()
        s.set_all(ok)
        assert owner(files[0]) == qemu_user and owner(inside) == ORIG
        assert s.restore_all(ok) == []
        assert owner(files[0]) == ORIG
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_stack_transaction_undoes_labels_when_the_launch_fails(
        workdir: Path, qemu_user: tuple[int, int]) -> None:
    disk = image(workdir, "disk.img")
    extra = image(workdir, "hotplug.img")
    log = workdir / "serial.log"
    ctx = ctx_for(qemu_user, Resource(str(disk)), Resource(str(log), ResourceKind.SERIAL_LOG))
    s = stack()
    with pytest.raises(RuntimeError, match="QEMU failed"), s.transaction():
        s.set_all(ctx)
        s.set_image(ctx, Resource(str(extra), readonly=True))
        assert owner(disk) == owner(extra) == qemu_user
        raise RuntimeError("QEMU failed")
    assert owner(disk) == owner(extra) == ORIG
    assert xattrs(disk) == xattrs(extra) == {}
    assert not log.exists()  # created by the transaction, removed by its rollback
    assert not s.in_transaction


def test_hotplug_image_label_and_restore(workdir: Path, qemu_user: tuple[int, int]) -> None:
    disk = image(workdir, "hot.img")
    ctx = ctx_for(qemu_user)
    s = stack()
    s.set_image(ctx, Resource(str(disk)))
    assert owner(disk) == qemu_user and xattrs(disk)[REF] == b"1"
    assert s.restore_image(ctx, Resource(str(disk))) == []
    assert owner(disk) == ORIG and xattrs(disk) == {}


# --- access as the QEMU user, against the kernel ---------------------------------------------------

def _kernel_says(path: Path, flag: str, uid: int, gid: int) -> bool:
    return subprocess.run(["/usr/bin/test", flag, str(path)], user=uid, group=gid,
                          extra_groups=[]).returncode == 0


def _set_acl(path: Path, entries: list[tuple[int, int, int]]) -> None:
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    os.setxattr(path, "system.posix_acl_access", raw)


@pytest.mark.parametrize("mode", [0o700, 0o710, 0o701, 0o750, 0o705, 0o604, 0o640, 0o600, 0o066])
@pytest.mark.parametrize("dir_owner", ["root", "qemu-group", "qemu-user"])
def test_may_access_agrees_with_the_kernel(workdir: Path, qemu_user: tuple[int, int], mode: int,
                                           dir_owner: str) -> None:
    uid, gid = qemu_user
    p = workdir / "probe"
    p.mkdir()
    os.chown(p, *{"root": (0, 0), "qemu-group": (0, gid), "qemu-user": (uid, 0)}[dir_owner])
    p.chmod(mode)
    for flag, want in (("-x", 1), ("-r", 4), ("-w", 2)):
        assert may_access(os.stat(p), str(p), uid, gid, (gid,), want) == _kernel_says(p, flag, uid, gid), flag


def test_may_access_honours_posix_acls(workdir: Path, qemu_user: tuple[int, int]) -> None:
    uid, gid = qemu_user
    p = workdir / "acl"
    p.mkdir(mode=0o700)
    cases = [
        [(1, 7, 0xFFFFFFFF), (2, 1, uid), (4, 0, 0xFFFFFFFF), (0x10, 1, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)],
        [(1, 7, 0xFFFFFFFF), (2, 1, uid), (4, 0, 0xFFFFFFFF), (0x10, 0, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)],
        [(1, 7, 0xFFFFFFFF), (4, 0, 0xFFFFFFFF), (8, 5, gid), (0x10, 7, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)],
        [(1, 7, 0xFFFFFFFF), (4, 0, 0xFFFFFFFF), (8, 0, gid), (0x10, 7, 0xFFFFFFFF), (0x20, 1, 0xFFFFFFFF)],
    ]
    for entries in cases:
        try:
            _set_acl(p, entries)
        except OSError as e:
            assert e.errno != errno.EINVAL, entries
            pytest.fail(f"cannot set a POSIX ACL here: {e.strerror}")
        for flag, want in (("-x", 1), ("-r", 4)):
            computed = may_access(os.stat(p), str(p), uid, gid, (gid,), want)
            assert computed == _kernel_says(p, flag, uid, gid), (entries, flag)
