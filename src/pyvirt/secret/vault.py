# SPDX-License-Identifier: LGPL-2.1-or-later
"""Secret values at rest: sealed with AES-256-GCM under a per-instance master key.

The master key is 32 random bytes in a file of its own (mode 0600, directory 0700), made on first use;
a key file that others may read, or of the wrong size, is refused rather than used. A sealed value is::

    MAGIC (16 bytes) | nonce (12 bytes) | ciphertext + GCM tag (16 bytes)

with the magic and the secret's UUID as associated data, so that a value file copied over another
secret's, or altered, fails to open instead of yielding a wrong value. libvirt 9.0 keeps values as
plain base64 (``UUID.base64``); pyvirt's files have their own suffix so that neither ever reads the
other's format.

Values are never logged and never put in an error message.
"""

from __future__ import annotations

import errno
import os
import secrets as _random
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pyvirt import _errcodes as codes
from pyvirt import fsutil
from pyvirt.errors import OperationFailed, PyvirtError

__all__ = ["KEY_BYTES", "MAGIC", "load_or_create_key", "read_key", "seal", "unseal", "atomic_write_bytes"]

KEY_BYTES = 32
MAGIC = b"pyvirt-secret/1\n"
_NONCE_BYTES = 12


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically (:func:`pyvirt.fsutil.atomic_write_bytes`)."""
    fsutil.atomic_write_bytes(path, data, mode=mode, error_domain=codes.VIR_FROM_SECRET)


def _fsync_dir(directory: Path) -> None:
    fsutil.fsync_dir(directory)


def load_or_create_key(path: Path) -> bytes:
    """The master key in ``path``, made (atomically, never over an existing one) if there is none."""
    try:
        return read_key(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise OperationFailed(f"cannot create directory {path.parent} for the secrets' master key: "
                              f"{e.strerror}", domain=codes.VIR_FROM_SECRET) from e
    key = _random.token_bytes(KEY_BYTES)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        try:
            # link, not rename: if another thread or process made a key meanwhile, theirs wins and
            # is used, rather than replaced under values already sealed with it
            os.link(tmp, path)
        except FileExistsError:
            return read_key(path)
    finally:
        os.unlink(tmp)
    _fsync_dir(path.parent)
    return key


def read_key(path: Path) -> bytes:
    """The master key in ``path``; FileNotFoundError if there is none, a clear error if it is unsafe."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise FileNotFoundError(path) from None
        raise OperationFailed(f"cannot open the secrets' master key {path}: {e.strerror}",
                              domain=codes.VIR_FROM_SECRET) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OperationFailed(f"the secrets' master key {path} is not a regular file; move it away",
                                  domain=codes.VIR_FROM_SECRET)
        if st.st_mode & 0o077:
            raise OperationFailed(
                f"the secrets' master key {path} is readable or writable by others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); it must be 0600: chmod 600 {path}, and consider the "
                "secrets exposed", domain=codes.VIR_FROM_SECRET)
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise OperationFailed(f"the secrets' master key {path} holds {len(data)} bytes instead of "
                              f"{KEY_BYTES}: it is damaged; restore it from a backup (the stored secret "
                              "values cannot be read without it)", domain=codes.VIR_FROM_SECRET)
    return data


def seal(key: bytes, uuid: str, value: bytes) -> bytes:
    nonce = _random.token_bytes(_NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, value, MAGIC + uuid.encode())


def unseal(key: bytes, uuid: str, blob: bytes, where: Path) -> bytes:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _NONCE_BYTES + 16:
        raise PyvirtError(f"internal error: {where} is not a sealed secret value of pyvirt; remove it and "
                          f"set the value of secret {uuid} again", code=codes.VIR_ERR_INTERNAL_ERROR,
                          domain=codes.VIR_FROM_SECRET)
    nonce = blob[len(MAGIC):len(MAGIC) + _NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + _NONCE_BYTES:], MAGIC + uuid.encode())
    except InvalidTag:
        raise PyvirtError(f"internal error: the value of secret {uuid} in {where} cannot be decrypted: the "
                          "file was altered, belongs to another secret, or the master key changed; set "
                          "the value again", code=codes.VIR_ERR_INTERNAL_ERROR,
                          domain=codes.VIR_FROM_SECRET) from None
