# SPDX-License-Identifier: LGPL-2.1-or-later
"""Files written so that a crash never leaves half of one behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pyvirt.errors import OperationFailed


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o600,
                      durable: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8); see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, durable=durable)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                       error_domain: int | None = None, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a crash leaves either the old file or the new one.

    The content goes to a temporary file in the same directory, is fsync'ed and renamed over
    ``path``; then the directory is fsync'ed so that the rename itself survives a power cut.
    On any error the temporary file is removed and ``path`` is left as it was; the error
    (:class:`OperationFailed`, of ``error_domain`` if given) names the file.

    ``durable=False`` leaves out both fsyncs, for run-time state that a power cut makes moot
    anyway (what it describes -- processes, bridges -- does not survive one either): the file is
    still replaced whole, never seen half-written.
    """
    p = Path(path)

    def failed(e: OSError) -> OperationFailed:
        err = OperationFailed(f"cannot write {p}: {e.strerror or e}")
        if error_domain is not None:
            err.domain = error_domain
        return err

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)  # mode 0600
    except OSError as e:
        raise failed(e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise failed(e) from e
    if durable:
        fsync_dir(p.parent)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the entries of ``directory`` (a rename, a new file) survive a power cut."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
