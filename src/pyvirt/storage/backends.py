# SPDX-License-Identifier: LGPL-2.1-or-later
"""The storage driver's hook into the backends of pool types other than ``dir``: the checks at
define, and start/stop/delete of ``fs`` (:mod:`pyvirt.storage.backend_fs`) and ``logical``
(:mod:`pyvirt.storage.backend_logical`). Backends are imported on first use only (CLI start-up)."""

from __future__ import annotations

import logging

from pyvirt.errors import PyvirtError
from pyvirt.xml.storage import Pool

__all__ = ["build_flags", "validate", "call"]

log = logging.getLogger("pyvirt.storage")

# libvirt's values (include/libvirt/libvirt-storage.h)
_CREATE_WITH_BUILD_OVERWRITE, _CREATE_WITH_BUILD_NO_OVERWRITE = 2, 4
_BUILD_NO_OVERWRITE, _BUILD_OVERWRITE = 4, 8


def build_flags(create_flags: int) -> int:
    """virStoragePoolCreate's WITH_BUILD flags as the build flags libvirt passes on."""
    if create_flags & _CREATE_WITH_BUILD_OVERWRITE:
        return _BUILD_OVERWRITE
    if create_flags & _CREATE_WITH_BUILD_NO_OVERWRITE:
        return _BUILD_NO_OVERWRITE
    return 0


def validate(pool: Pool) -> None:
    """The checks of the values a backend will put on command lines, at define time."""
    if pool.type == "logical":
        from pyvirt.storage import backend_logical

        backend_logical.validate(pool)


def call(pool: Pool, action: str, *, quiet: bool = False) -> None:
    """start/stop/delete of the fs and logical backends (a dir pool has nothing to do; an fs
    pool's delete is the dir pool's). ``quiet``: a failure is logged, not raised (undoing)."""
    if pool.type == "fs" and action != "delete":
        from pyvirt.storage import backend_fs as backend
    elif pool.type == "logical":
        from pyvirt.storage import backend_logical as backend  # type: ignore[no-redef]
    else:
        return
    try:
        getattr(backend, action)(pool)
    except PyvirtError as exc:
        if not quiet:
            raise
        log.warning("storage pool '%s': %s failed: %s", pool.name, action, exc)
