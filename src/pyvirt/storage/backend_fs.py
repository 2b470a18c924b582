# SPDX-License-Identifier: LGPL-2.1-or-later
"""The ``fs`` pool backend: a block device holding a file system, mounted on the pool's directory.

As libvirt 9.0's storage_backend_fs.c: build makes the directory and, only with
VIR_STORAGE_POOL_BUILD_OVERWRITE or _NO_OVERWRITE, the file system (``mkfs -t FORMAT``;
NO_OVERWRITE first probes the device with blkid and refuses one that holds a file system or a
partition table); start mounts the device on the directory (nothing to do when it is mounted
there already); stop unmounts it; a pool is active while the device is mounted there. Volumes,
refresh and delete are the dir pool's (the driver's own code, on the mounted directory).

Beyond libvirt: the device must be a block device (libvirt's mount would attach an image file to
a loop device behind the pool's back); a directory on which something else is mounted, or a
device mounted elsewhere, is refused before mount runs; the file system is probed before the
directory is made, so a refused build leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat

from pyvirt import _errcodes as codes
from pyvirt.storage.hosttools import (
    BUILD_NO_OVERWRITE,
    check_absolute,
    check_build_flags,
    check_device,
    probe_signature,
    run,
    storage_error,
)
from pyvirt.xml.storage import Pool

__all__ = ["FS_FORMATS", "validate", "check_build", "make_fs", "start", "stop", "is_mounted"]

#: libvirt's virStoragePoolFormatFileSystem
FS_FORMATS = ("auto", "ext2", "ext3", "ext4", "ufs", "iso9660", "udf", "gfs", "gfs2", "vfat", "hfs+", "xfs",
              "ocfs2", "vmfs")
#: mkfs's "do it even if something is there" option per file system (libvirt passes the same)
_FORCE = {"xfs": "-f", "ext2": "-F", "ext3": "-F", "ext4": "-F", "vfat": "-I"}
_SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"
_PACKAGE = {"ext2": "e2fsprogs", "ext3": "e2fsprogs", "ext4": "e2fsprogs", "xfs": "xfsprogs",
            "vfat": "dosfstools", "gfs2": "gfs2-utils", "ocfs2": "ocfs2-tools", "udf": "udftools"}


def _device(pool: Pool) -> str | None:
    src = pool.source
    return src.devices[0].path if src is not None and src.devices else None


def _format(pool: Pool) -> str:
    src = pool.source
    return (src.format.type if src is not None and src.format is not None else None) or "auto"


def validate(pool: Pool) -> None:
    """libvirt's virStorageBackendFileSystemIsValid, and what pyvirt needs to run mount safely."""
    src = pool.source
    count = len(src.devices) if src is not None else 0
    if count == 0:
        raise storage_error(codes.VIR_ERR_INTERNAL_ERROR, "internal error: missing source device")
    if count != 1:
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            "unsupported configuration: expected exactly 1 device for the storage pool")
    check_absolute(pool.name, _device(pool) or "")
    fmt = _format(pool)
    if fmt not in FS_FORMATS:
        raise storage_error(codes.VIR_ERR_XML_ERROR,
                            f"XML error: unknown pool format type {fmt}; expected one of: "
                            f"{', '.join(FS_FORMATS)}")
    if not pool.path.startswith("/"):
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            f"unsupported configuration: target path '{pool.path}' of storage pool "
                            f"'{pool.name}' is not an absolute path")


def check_build(pool: Pool, flags: int) -> None:
    """Everything a build checks before it changes anything (the directory comes next)."""
    check_build_flags(flags)
    validate(pool)
    if not flags:
        return  # only the directory, as libvirt
    device = _device(pool) or ""
    if not os.path.exists(device):
        raise storage_error(codes.VIR_ERR_OPERATION_INVALID,
                            f"Requested operation is not valid: Source device does not exist when "
                            f"formatting pool '{pool.name}'")
    check_device(pool.name or "", device)
    fmt = _format(pool)
    if fmt == "auto":
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            f"unsupported configuration: cannot make a file system of format 'auto' on "
                            f"'{device}': give the pool <source><format type='ext4'/> (or xfs, ...)")
    if _mounted_on(device):
        raise storage_error(codes.VIR_ERR_OPERATION_INVALID,
                            f"Requested operation is not valid: device '{device}' is mounted on "
                            f"'{_mounted_on(device)}': unmount it before making a file system on it")
    if flags & BUILD_NO_OVERWRITE:
        found = probe_signature(device)
        if found is not None and found == ("TYPE", fmt):
            raise storage_error(codes.VIR_ERR_STORAGE_POOL_BUILT,
                                f"Storage pool already built: Device '{device}' already formatted using "
                                f"'{fmt}'")
        if found is not None:
            raise storage_error(codes.VIR_ERR_STORAGE_POOL_BUILT,
                                f"Storage pool already built: Format of device '{device}' does not match "
                                f"the expected format '{fmt}', forced overwrite is necessary")
    if shutil.which(f"mkfs.{fmt}", path=_SBIN) is None:
        package = _PACKAGE.get(fmt, f"the package with mkfs.{fmt}")
        raise storage_error(codes.VIR_ERR_NO_SUPPORT,
                            f"this function is not supported by the connection driver: cannot make a '{fmt}' "
                            f"file system for storage pool '{pool.name}': mkfs.{fmt} is not installed; "
                            f"install {package}")


def make_fs(pool: Pool, flags: int) -> None:
    """mkfs, after :func:`check_build` (libvirt's virStorageBackendExecuteMKFS)."""
    if not flags:
        return
    fmt = _format(pool)
    device = _device(pool) or ""
    force = [_FORCE[fmt]] if fmt in _FORCE else []
    run(["mkfs", "-t", fmt, *force, device])


def _unescape(field: str) -> str:
    """A /proc/self/mounts field: spaces, tabs, newlines and backslashes are octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _mounts() -> list[tuple[str, str]]:
    """(source, mount point) of every mount of this mount namespace."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise storage_error(codes.VIR_ERR_SYSTEM_ERROR,
                            f"cannot read mount list '/proc/self/mounts': {e.strerror}") from e
    found = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) >= 2:
            found.append((_unescape(parts[0]), _unescape(parts[1])))
    return found


def _same_device(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return stat.S_ISBLK(sa.st_mode) and stat.S_ISBLK(sb.st_mode) and sa.st_rdev == sb.st_rdev


def _mounted_on(device: str) -> str | None:
    for source, target in _mounts():
        if source.startswith("/") and _same_device(source, device):
            return target
    return None


def is_mounted(pool: Pool) -> bool:
    """The pool's device is mounted on its directory (libvirt's virStorageBackendFileSystemIsMounted)."""
    device = _device(pool)
    target = os.path.realpath(pool.path)
    return device is not None and any(
        os.path.realpath(t) == target and _same_device(s, device) for s, t in _mounts())


def start(pool: Pool) -> None:
    validate(pool)
    if is_mounted(pool):
        return
    name = pool.name or ""
    device = check_device(name, _device(pool))
    target = pool.path
    if not os.path.isdir(target):
        raise storage_error(codes.VIR_ERR_OPERATION_INVALID,
                            f"Requested operation is not valid: target directory '{target}' of storage pool "
                            f"'{name}' does not exist: build the pool first (pool-build)")
    real = os.path.realpath(target)
    for source, mount_point in _mounts():
        if os.path.realpath(mount_point) == real:
            raise storage_error(codes.VIR_ERR_OPERATION_INVALID,
                                f"Requested operation is not valid: target directory '{target}' of storage "
                                f"pool '{name}' is busy: '{source}' is mounted on it; unmount it or give the "
                                "pool another <target><path>")
    elsewhere = _mounted_on(device)
    if elsewhere is not None:
        raise storage_error(codes.VIR_ERR_OPERATION_INVALID,
                            f"Requested operation is not valid: source device '{device}' of storage pool "
                            f"'{name}' is already mounted on '{elsewhere}'; unmount it first")
    fmt = _format(pool)
    run(["mount", *(["-t", fmt] if fmt != "auto" else []), device, target])


def stop(pool: Pool) -> None:
    if is_mounted(pool):
        run(["umount", pool.path])
