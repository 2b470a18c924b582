# SPDX-License-Identifier: LGPL-2.1-or-later
"""``<disk type='volume'><source pool='P' volume='V'/>`` resolved to the volume's file, as libvirt's
virDomainStorageSourceTranslateSourcePool does when a domain starts (and for domxml-to-native).

The QEMU driver calls :func:`resolve_volume_disks` on the live copy of the definition before it
checks disk sources: the disk becomes a ``file`` (or ``dir``) disk on the volume's path, so the
rest of the start path sees an ordinary local disk. A missing pool or volume, or an inactive pool,
fails the start with libvirt's errors before anything is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.xml.domain import Domain

__all__ = ["resolve_volume_disks"]


def resolve_volume_disks(qemu: QemuDriver, dom: Domain) -> None:
    """Turn the volume disks of ``dom`` (a live copy: it is changed in place) into file disks."""
    disks = [d for d in dom.disks if d.type == "volume" and d.source is not None]
    if not disks:
        return  # no storage driver is loaded for domains without volume disks
    from pyvirt.storage.driver import VOL_DIR, driver_for

    storage = driver_for(qemu)
    for disk in disks:
        src = disk.source
        assert src is not None
        pool, volume = src.pool, src.volume
        target = disk.target.dev if disk.target is not None else "?"
        if not pool or not volume:
            raise PyvirtError(f"XML error: disk '{target}' of type 'volume' needs <source pool='POOL' "
                              "volume='VOLUME'/>", code=codes.VIR_ERR_XML_ERROR, domain=codes.VIR_FROM_DOMAIN)
        storage.lookup_name(pool)  # "Storage pool not found: no storage pool with matching name"
        if not storage.is_active(pool):
            raise PyvirtError(f"Requested operation is not valid: storage pool '{pool}' containing volume "
                              f"'{volume}' referenced by disk '{target}' is not active; start it with "
                              f"'pool-start {pool}'", code=codes.VIR_ERR_OPERATION_INVALID,
                              domain=codes.VIR_FROM_STORAGE)
        ref = storage.lookup_volume(pool, volume)  # "Storage volume not found: ..."
        kind = storage.vol_info(ref)[0]
        src.pool = src.volume = None
        if kind == VOL_DIR:
            disk.type, src.dir = "dir", ref.key
        else:
            disk.type, src.file = "file", ref.key
