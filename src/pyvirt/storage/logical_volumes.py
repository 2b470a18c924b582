# SPDX-License-Identifier: LGPL-2.1-or-later
"""The volume calls of a running ``logical`` pool (the storage driver hands them over here).

Volumes are read afresh from lvs on every call, as a dir pool's are from its directory. A volume
that a defined or running domain uses is not deleted, wiped, resized nor uploaded to (the
driver's check, as for dir pools). Upload and download open the LV's device.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from pyvirt import _errcodes as codes
from pyvirt.storage import backend_logical as lvm
from pyvirt.storage import images
from pyvirt.storage.hosttools import storage_error
from pyvirt.xml.storage import Permissions, Scaled, Volume, VolumeTarget, format_volume, parse_volume

if TYPE_CHECKING:
    from pyvirt.storage.driver import StorageDriver, VolRef, _PoolObj, _VolFacts

__all__ = ["LogicalVolumes"]

_VOL_BLOCK = 1
_RESIZE_DELTA, _RESIZE_SHRINK = 2, 4


class LogicalVolumes:
    """The volumes of one active logical pool."""

    def __init__(self, driver: StorageDriver, obj: _PoolObj) -> None:
        self._driver = driver
        self._obj = obj

    def _ref(self, vol: lvm.LogicalVolume) -> VolRef:
        from pyvirt.storage.driver import VolRef

        return VolRef(self._obj.name, vol.name, vol.key)

    def _all(self) -> list[lvm.LogicalVolume]:
        return lvm.volumes(self._obj.pool)

    def _get(self, name: str) -> lvm.LogicalVolume:
        for vol in self._all():
            if vol.name == name:
                return vol
        detail = f"no storage vol with matching name '{name}'"
        raise storage_error(codes.VIR_ERR_NO_STORAGE_VOL, f"Storage volume not found: {detail}",
                            str1="Storage volume not found: %s", str2=detail)

    def _facts(self, vol: lvm.LogicalVolume) -> _VolFacts:
        from pyvirt.storage.driver import _VolFacts

        try:
            st = os.stat(vol.path)
        except OSError as e:
            raise storage_error(codes.VIR_ERR_SYSTEM_ERROR, f"cannot stat file '{vol.path}': {e.strerror}",
                                int1=e.errno or 0) from e
        return _VolFacts(vol.name, vol.path, _VOL_BLOCK, st, images.ImageInfo("raw", vol.capacity))

    def refs(self) -> list[VolRef]:
        return [self._ref(v) for v in self._all()]

    def lookup(self, name: str) -> VolRef:
        return self._ref(self._get(name))

    def find(self, path: str) -> VolRef | None:
        """The volume whose path or key is ``path``."""
        for vol in self._all():
            if path in (vol.key, vol.path) or os.path.realpath(path) == os.path.realpath(vol.path):
                return self._ref(vol)
        return None

    def info(self, name: str) -> list[int]:
        vol = self._get(name)
        return [_VOL_BLOCK, vol.capacity, vol.allocation]

    def xml(self, name: str) -> str:
        from pyvirt.storage.driver import _timestamps

        vol = self._get(name)
        target = VolumeTarget(path=vol.path)
        try:
            st = os.stat(vol.path)
            target.permissions = Permissions.make(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            target.timestamps = _timestamps(st)
        except OSError:
            pass
        model = Volume(type="block", name=vol.name, key=vol.key, capacity=Scaled.of(vol.capacity),
                       allocation=Scaled.of(vol.allocation), physical=Scaled.of(vol.capacity), target=target)
        return format_volume(model)

    def create(self, xml: str | bytes) -> VolRef:
        vol = parse_volume(xml)
        assert vol.name is not None
        if any(v.name == vol.name for v in self._all()):
            raise storage_error(codes.VIR_ERR_STORAGE_VOL_EXIST,
                                f"storage volume '{vol.name}' exists already")
        if vol.type not in (None, "block"):
            raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                                f"unsupported configuration: volume type '{vol.type}' in pool "
                                f"'{self._obj.name}' of type 'logical': its volumes are block devices "
                                "(type='block')")
        if vol.target is not None and vol.target.encryption is not None:
            raise storage_error(codes.VIR_ERR_NO_SUPPORT,
                                "this function is not supported by the connection driver: encrypted "
                                "volumes in a logical pool")
        if vol.backing is not None and vol.backing.path:
            raise storage_error(codes.VIR_ERR_NO_SUPPORT,
                                "this function is not supported by the connection driver: LVM snapshot "
                                "volumes (a <backingStore> in a logical pool)")
        lvm.create_volume(self._obj.pool, vol.name, vol.capacity_bytes, vol.allocation_bytes,
                          vol.format_type or "raw")
        path = f"{self._obj.pool.path}/{vol.name}"
        perms = vol.target.permissions if vol.target is not None else None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                uid = int(perms.owner) if perms is not None and perms.owner is not None else -1
                gid = int(perms.group) if perms is not None and perms.group is not None else -1
                os.fchown(fd, uid, gid)
                os.fchmod(fd, int(perms.mode, 8) if perms is not None and perms.mode else 0o600)
            finally:
                os.close(fd)
            return self.lookup(vol.name)
        except BaseException:
            lvm.delete_volume(path)
            raise

    def delete(self, name: str) -> None:
        vol = self._get(name)
        self._driver._refuse_in_use(self._obj.name, self._facts(vol), "delete")
        lvm.delete_volume(vol.path)

    def wipe(self, name: str, algorithm: int) -> None:
        from pyvirt.storage.driver import _zero

        vol = self._get(name)
        if algorithm != 0:  # VIR_STORAGE_VOL_WIPE_ALG_ZERO
            raise storage_error(codes.VIR_ERR_NO_SUPPORT,
                                f"this function is not supported by the connection driver: wipe algorithm "
                                f"{algorithm} (pyvirt writes zeros only: use --algorithm zero)")
        if vol.sparse:
            raise storage_error(codes.VIR_ERR_NO_SUPPORT,
                                f"this function is not supported by the connection driver: logical volume "
                                f"'{vol.path}' is sparse, volume wipe not supported")
        self._driver._refuse_in_use(self._obj.name, self._facts(vol), "wipe")
        try:
            _zero(vol.path, vol.capacity)
        except OSError as e:
            raise storage_error(codes.VIR_ERR_SYSTEM_ERROR,
                                f"failed to wipe volume '{vol.path}': {e.strerror}", int1=e.errno or 0) from e

    def resize(self, name: str, capacity: int, flags: int) -> None:
        vol = self._get(name)
        current = vol.capacity
        if flags & _RESIZE_DELTA:
            new = current - min(capacity, current) if flags & _RESIZE_SHRINK else current + capacity
        else:
            new = capacity
        if new < current and not flags & _RESIZE_SHRINK:
            raise storage_error(codes.VIR_ERR_INVALID_ARG,
                                "invalid argument: Can't shrink capacity below current capacity unless "
                                "shrink flag explicitly specified")
        self._driver._refuse_in_use(self._obj.name, self._facts(vol), "resize")
        lvm.resize_volume(vol.path, new, new < current)

    def open(self, name: str, *, write: bool) -> tuple[int, str]:
        vol = self._get(name)
        if write:
            self._driver._refuse_in_use(self._obj.name, self._facts(vol), "upload to")
        try:
            fd = os.open(vol.path, (os.O_WRONLY if write else os.O_RDONLY) | os.O_CLOEXEC)
        except OSError as e:
            raise storage_error(codes.VIR_ERR_SYSTEM_ERROR, f"cannot open volume '{vol.path}': {e.strerror}",
                                int1=e.errno or 0) from e
        return fd, vol.path
