# SPDX-License-Identifier: LGPL-2.1-or-later
"""The host programs the fs and logical pool backends run (mkfs, mount, blkid, LVM), and the checks
of the values that reach their command lines.

Every command is an argv list run without a shell; a value from pool XML reaches it only after
:func:`check_device` or :func:`check_vg_name` accepted it (absolute paths, LVM's name alphabet), so
no value can be read as an option. A failure is libvirt's "Child process (...) unexpected exit
status" error (VIR_ERR_INTERNAL_ERROR), with the program's stderr.

LVM runs with ``DM_DISABLE_UDEV=1`` (libdevmapper makes the /dev nodes itself instead of waiting
for udev, which containers and minimal hosts do not run) and ``LVM_SUPPRESS_FD_WARNINGS=1``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

__all__ = ["storage_error", "run", "check_build_flags", "check_absolute", "check_device", "check_vg_name",
           "probe_signature", "device_size"]

BUILD_NO_OVERWRITE, BUILD_OVERWRITE = 4, 8

_LVM_ENV = {"DM_DISABLE_UDEV": "1", "LVM_SUPPRESS_FD_WARNINGS": "1"}
_TIMEOUT = 300
#: LVM's alphabet for volume group and logical volume names (lvm(8), "VALID NAMES")
_LVM_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")


def storage_error(code: int, message: str, **kw: object) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_STORAGE, **kw)  # type: ignore[arg-type]


def run(argv: list[str], *, lvm: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host program (found in PATH, /sbin and /usr/sbin) with C locale output."""
    path = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    binary = shutil.which(argv[0], path=path)
    if binary is None:
        package = "lvm2" if lvm else {"mkfs": "util-linux", "mount": "mount", "umount": "mount",
                                      "blkid": "util-linux"}.get(argv[0], argv[0])
        raise storage_error(codes.VIR_ERR_INTERNAL_ERROR,
                            f"internal error: {argv[0]} is not installed: install the {package} package")
    env = {"PATH": path, "LC_ALL": "C", **(_LVM_ENV if lvm else {})}
    full = [binary, *argv[1:]]
    try:
        proc = subprocess.run(full, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                              timeout=_TIMEOUT, close_fds=True)
    except subprocess.TimeoutExpired:
        raise storage_error(codes.VIR_ERR_INTERNAL_ERROR,
                            f"internal error: Child process ({' '.join(full)}) did not finish within "
                            f"{_TIMEOUT} s") from None
    if check and proc.returncode != 0:
        raise storage_error(codes.VIR_ERR_INTERNAL_ERROR,
                            f"internal error: Child process ({' '.join(full)}) unexpected exit status "
                            f"{proc.returncode}: {proc.stderr.strip()}")
    return proc


def check_build_flags(flags: int) -> None:
    if flags & BUILD_OVERWRITE and flags & BUILD_NO_OVERWRITE:
        raise storage_error(codes.VIR_ERR_INVALID_ARG,
                            "invalid argument: Flags 'VIR_STORAGE_POOL_BUILD_OVERWRITE' and "
                            "'VIR_STORAGE_POOL_BUILD_NO_OVERWRITE' are mutually exclusive")


def check_absolute(pool_name: str | None, device: str) -> None:
    """A source device named by an absolute path (so no value can be read as an option)."""
    if not device.startswith("/") or "\0" in device or "\n" in device:
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            f"unsupported configuration: source device '{device}' of storage pool "
                            f"'{pool_name}' is not an absolute path: name it as /dev/...")


def check_device(pool_name: str, device: str | None) -> str:
    """The pool's source device: an existing block device named by an absolute path."""
    if not device:
        raise storage_error(codes.VIR_ERR_INTERNAL_ERROR, "internal error: missing source device")
    check_absolute(pool_name, device)
    try:
        st = os.stat(device)
    except OSError as e:
        raise storage_error(codes.VIR_ERR_OPERATION_INVALID,
                            f"Requested operation is not valid: source device '{device}' of storage pool "
                            f"'{pool_name}': {e.strerror}", int1=e.errno or errno.ENOENT) from None
    if not stat.S_ISBLK(st.st_mode):
        raise storage_error(codes.VIR_ERR_OPERATION_INVALID,
                            f"Requested operation is not valid: source device '{device}' of storage pool "
                            f"'{pool_name}' is not a block device; for an image file, attach it to a "
                            "loop device first (losetup -f --show FILE) and name that /dev/loopN")
    return device


def check_vg_name(name: str | None, what: str = "volume group") -> str:
    """A volume group or logical volume name LVM accepts (so it is never read as an option or path)."""
    if not name or name in (".", "..") or len(name) > 127 or not _LVM_NAME.fullmatch(name):
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            f"unsupported configuration: {what} name '{name or ''}' is not valid for LVM: "
                            "use letters, digits and + _ . - (not starting with '-', no '/')")
    return name


def probe_signature(device: str) -> tuple[str, str] | None:
    """What blkid's low-level probe finds on the device: ("TYPE", fs type) for a file system or
    an LVM physical volume, ("PTTYPE", table type) for a partition table, None for nothing."""
    proc = run(["blkid", "-p", "-o", "export", device], check=False)
    if proc.returncode == 2:  # nothing found
        return None
    if proc.returncode != 0:
        raise storage_error(codes.VIR_ERR_STORAGE_PROBE_FAILED,
                            f"Storage pool probe failed: Failed to probe device '{device}': "
                            f"{proc.stderr.strip() or f'blkid exit status {proc.returncode}'}")
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    for key in ("TYPE", "PTTYPE"):
        if values.get(key):
            return key, values[key]
    return None


def device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
