# SPDX-License-Identifier: LGPL-2.1-or-later
"""What a disk image file is: its format, virtual size, backing file and encryption, read from its
header (as libvirt's virStorageFileProbe does, without running anything), and the qemu-img
commands that make, copy and resize images.

Header facts: qcow2 (magic ``QFI\\xfb``: version, backing file name and the backing-format header
extension, virtual size, LUKS encryption, lazy refcounts), LUKS (magic ``LUKS\\xba\\xbe``: the
payload offset) and raw (the file's size). The tests compare these with ``qemu-img info``.

Passphrases reach qemu-img through a 0600 file in the storage driver's private state directory,
named on the command line only by its path (``--object secret,file=``), never by value; an
encrypted image is named by ``--image-opts`` (:func:`image_opts`), as libvirt's storage_util.c does.

Wiping with a pattern runs ``scrub -f -p PATTERN PATH`` (:func:`scrub`), libvirt's way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

__all__ = ["ImageInfo", "probe", "qemu_img", "QEMU_IMG", "SCRUB", "scrub", "image_opts", "secret_object",
           "secret_files"]

QEMU_IMG = "qemu-img"
SCRUB = "scrub"
#: QEMU times its PBKDF2 round with the thread's user CPU time, counted in scheduler ticks: a
#: round that ends within one tick reads 0 ms and fails ("Unable to get accurate CPU usage"), about
#: one run in three on this kind of host. Each retry is another independent draw.
_PBKDF_ATTEMPTS = 25
_QCOW2_MAGIC = b"QFI\xfb"
_LUKS_MAGIC = b"LUKS\xba\xbe"
_EXT_BACKING_FORMAT = 0xE2792ACA
_QCOW_CRYPT_LUKS = 2


@dataclass
class ImageInfo:
    format: str              #: raw, qcow2 (a bare LUKS image is reported as raw with encryption)
    capacity: int            #: virtual size in bytes
    backing: str | None = None
    backing_format: str | None = None
    encryption: str | None = None  #: 'luks' when the data is LUKS-encrypted
    compat: str | None = None      #: qcow2 v3 is '1.1' (v2 has none, as libvirt prints it)
    lazy_refcounts: bool = False


def probe(path: str | os.PathLike[str], size: int) -> ImageInfo:
    """The image facts of ``path`` (a regular file of ``size`` bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return ImageInfo("raw", size)
    if head.startswith(_QCOW2_MAGIC) and len(head) >= 72:
        return _qcow2(path, head)
    if head.startswith(_LUKS_MAGIC) and len(head) >= 108:
        payload_sectors = struct.unpack(">I", head[104:108])[0]
        return ImageInfo("raw", max(size - payload_sectors * 512, 0), encryption="luks")
    return ImageInfo("raw", size)


def _qcow2(path: str | os.PathLike[str], head: bytes) -> ImageInfo:
    version, backing_off, backing_len = struct.unpack(">IQI", head[4:20])
    virtual_size, crypt = struct.unpack(">QI", head[24:36])
    info = ImageInfo("qcow2", virtual_size, encryption="luks" if crypt == _QCOW_CRYPT_LUKS else None)
    header_len = 72
    if version >= 3 and len(head) >= 104:
        info.compat = "1.1"
        compatible = struct.unpack(">Q", head[80:88])[0]
        info.lazy_refcounts = bool(compatible & 1)
        header_len = struct.unpack(">I", head[100:104])[0]
    need = max(backing_off + backing_len, header_len + 8)
    if need > len(head):
        with open(path, "rb") as f:
            head = f.read(min(need + 4096, 1 << 20))
    if backing_off and backing_len:
        info.backing = head[backing_off:backing_off + backing_len].decode("utf-8", "replace")
    pos = header_len
    end = backing_off if backing_off else len(head)
    while pos + 8 <= min(end, len(head)):
        kind, length = struct.unpack(">II", head[pos:pos + 8])
        if kind == 0:
            break
        if kind == _EXT_BACKING_FORMAT:
            info.backing_format = head[pos + 8:pos + 8 + length].decode("ascii", "replace")
        pos += 8 + (length + 7) // 8 * 8
    return info


def qemu_img(args: list[str], what: str) -> None:
    """Run qemu-img; a failure is libvirt's "Child process (...) unexpected exit status" error."""
    binary = shutil.which(QEMU_IMG)
    if binary is None:
        raise PyvirtError("internal error: qemu-img is not installed: install the qemu-utils package",
                          code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_STORAGE)
    argv = [binary, *args]
    for attempt in range(_PBKDF_ATTEMPTS):
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})
        if proc.returncode == 0:
            return
        if "Unable to get accurate CPU usage" not in proc.stderr or attempt == _PBKDF_ATTEMPTS - 1:
            break
        time.sleep(0.02)
    raise _child_failed(argv, proc, f" (while {what})", codes.VIR_FROM_STORAGE)


def _child_failed(argv: list[str], proc: subprocess.CompletedProcess[str], suffix: str,
                  domain: int) -> PyvirtError:
    detail = proc.stderr.strip()
    return PyvirtError(f"internal error: Child process ({' '.join(argv)}) unexpected exit status "
                       f"{proc.returncode}: {detail}{suffix}", code=codes.VIR_ERR_INTERNAL_ERROR,
                       domain=domain)


def scrub(pattern: str, path: str) -> None:
    """Overwrite ``path`` with scrub's ``pattern`` (libvirt runs ``scrub -f -p PATTERN PATH``)."""
    binary = shutil.which(SCRUB)
    if binary is None:  # libvirt's virCommand error, reported without a driver domain
        raise PyvirtError(f"Cannot find '{SCRUB}' in path: No such file or directory",
                          code=codes.VIR_ERR_SYSTEM_ERROR,
                          domain=codes.VIR_FROM_NONE)
    argv = [binary, "-f", "-p", pattern, path]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})
    if proc.returncode != 0:
        raise _child_failed(argv, proc, "", codes.VIR_FROM_NONE)


def _escape(value: str) -> str:
    """A value inside QEMU's ``key=value,...`` syntax: a comma is doubled."""
    return value.replace(",", ",,")


def secret_object(alias: str, path: Path) -> list[str]:
    """qemu-img's arguments defining secret ``alias`` read from the file ``path``."""
    return ["--object", f"secret,id={alias},file={_escape(str(path))}"]


def image_opts(fmt: str, path: str, encrypted: bool, alias: str | None) -> str:
    """An image named by ``--image-opts``: ``driver=luks`` for a raw LUKS volume, the format's
    driver with ``encrypt.key-secret`` for an encrypted qcow2."""
    driver = "luks" if encrypted and fmt == "raw" else fmt
    opts = f"driver={driver},file.filename={_escape(path)}"
    if encrypted:
        opts += f",{'encrypt.' if fmt == 'qcow2' else ''}key-secret={alias}"
    return opts


@contextlib.contextmanager
def secret_files(state_dir: Path, values: dict[str, bytes]) -> Iterator[dict[str, Path]]:
    """A 0600 file for each named passphrase, removed on leaving (whatever happens)."""
    files: dict[str, Path] = {}
    try:
        for name, value in values.items():
            files[name] = write_secret_file(state_dir, name, value)
        yield files
    finally:
        for f in files.values():
            f.unlink(missing_ok=True)


def write_secret_file(state_dir: Path, name: str, value: bytes) -> Path:
    """A 0600 file holding ``value`` for qemu-img's ``--object secret,file=`` (remove it after)."""
    import tempfile

    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{name}.secret.", dir=state_dir)  # 0600, O_EXCL
    try:
        os.write(fd, value)
    finally:
        os.close(fd)
    return Path(tmp)
