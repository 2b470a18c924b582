# SPDX-License-Identifier: LGPL-2.1-or-later
"""Files written so that a crash never leaves half of one behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pyvirt.errors import OperationFailed


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text``: a crash leaves either the old file or the new one.

    The content goes to a temporary file in the same directory, is fsync'ed and renamed over
    ``path``; then the directory is fsync'ed so that the rename itself survives a power cut.
    On any error the temporary file is removed and ``path`` is left as it was.
    """
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)  # mode 0600
    except OSError as e:
        raise OperationFailed(f"cannot write {p}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OperationFailed(f"cannot write {p}: {e.strerror or e}") from e
    dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
