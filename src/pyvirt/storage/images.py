# SPDX-License-Identifier: LGPL-2.1-or-later
"""What a disk image file is: its format, virtual size, backing file and encryption, read from its
header (as libvirt's virStorageFileProbe does, without running anything), and the qemu-img
commands that make, copy and resize images.

Header facts: qcow2 (magic ``QFI\\xfb``: version, backing file name and the backing-format header
extension, virtual size, LUKS encryption, lazy refcounts), LUKS (magic ``LUKS\\xba\\xbe``: the
payload offset) and raw (the file's size). The tests compare these with ``qemu-img info``.

Passphrases reach qemu-img through a 0600 file in the storage driver's private state directory,
named on the command line only by its path (``--object secret,file=``), never by value.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

__all__ = ["ImageInfo", "probe", "qemu_img", "QEMU_IMG"]

QEMU_IMG = "qemu-img"
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
    for attempt in range(3):
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"})
        if proc.returncode == 0:
            return
        # QEMU's PBKDF benchmark sometimes reads a CPU time of zero and gives up: run it again
        if "Unable to get accurate CPU usage" not in proc.stderr or attempt == 2:
            break
    detail = proc.stderr.strip()
    raise PyvirtError(f"internal error: Child process ({' '.join(argv)}) unexpected exit status "
                      f"{proc.returncode}: {detail} (while {what})",
                      code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_STORAGE)


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
