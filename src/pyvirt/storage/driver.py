# SPDX-License-Identifier: LGPL-2.1-or-later
"""The storage driver of one instance: libvirt's storage driver, embedded next to the QEMU driver.

Layout (libvirt's, with ``ROOT/etc`` and ``ROOT/run`` of an embed root; the system instance uses
``/etc/pyvirt`` and ``/run/pyvirt``)::

    CONFIG/storage/NAME.xml               a persistent pool's definition (as pool-dumpxml --inactive)
    CONFIG/storage/autostart/NAME.xml     -> ../NAME.xml: started once per boot
    RUN/storage/NAME.xml                  the pool is active (its live definition)
    RUN/storage/autostarted               this boot's autostart has run

A pool's volumes are the files of its directory, read afresh (stat and image headers,
:mod:`pyvirt.storage.images`) by every call that needs them: a file made or removed by hand is
seen at once, and nothing the driver remembers can disagree with the disk. Files are written
atomically; every change is on disk before it is in memory.

Pool types: ``dir``; ``fs`` (a block device mounted on the pool's directory: the mount is
:mod:`pyvirt.storage.backend_fs`, the volumes are the dir pool's) and ``logical`` (an LVM volume
group: :mod:`pyvirt.storage.backend_logical`, volumes in :mod:`pyvirt.storage.logical_volumes`).
``netfs`` and the others are parsed, defined, listed and formatted as libvirt does, but building,
starting or deleting them is refused with VIR_ERR_NO_SUPPORT naming what pyvirt lacks, so nothing
is half done.

Behaviour and error texts follow libvirt 9.0 (storage_driver.c, storage_backend_fs.c,
virstorageobj.c), VIR_FROM_STORAGE. Beyond libvirt: a volume that a defined or running domain
uses, as a disk or in a disk's backing chain, is not deleted nor wiped (the error names the
domain); a volume name must be a plain file name ('.', '..' and '/' are refused); a pool path
that is a file is refused at build.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pyvirt import _errcodes as codes
from pyvirt import object_events as ev
from pyvirt.errors import PyvirtError
from pyvirt.fsutil import atomic_write_text
from pyvirt.storage import backends, images
from pyvirt.xml.storage import (
    BackingStore,
    Encryption,
    EncryptionSecret,
    FormatType,
    Permissions,
    Pool,
    Scaled,
    Timestamps,
    Volume,
    VolumeFeatures,
    VolumeTarget,
    format_pool,
    format_volume,
    parse_pool,
    parse_volume,
)

if TYPE_CHECKING:
    from pyvirt.conf.instance import InstancePaths
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.storage.logical_volumes import LogicalVolumes

__all__ = ["StorageDriver", "StoragePaths", "PoolRef", "VolRef", "storage_paths", "driver_for"]

log = logging.getLogger("pyvirt.storage")

# libvirt's values (include/libvirt/libvirt-storage.h)
POOL_INACTIVE, POOL_BUILDING, POOL_RUNNING = 0, 1, 2
VOL_FILE, VOL_BLOCK, VOL_DIR = 0, 1, 2
POOL_BUILD_NEW, POOL_BUILD_REPAIR, POOL_BUILD_RESIZE = 0, 1, 2
POOL_BUILD_NO_OVERWRITE, POOL_BUILD_OVERWRITE = 4, 8
POOL_CREATE_WITH_BUILD, POOL_CREATE_WITH_BUILD_OVERWRITE, POOL_CREATE_WITH_BUILD_NO_OVERWRITE = 1, 2, 4
POOL_DEFINE_VALIDATE = 1
POOL_XML_INACTIVE = 1
VOL_CREATE_PREALLOC_METADATA, VOL_CREATE_REFLINK, VOL_CREATE_VALIDATE = 1, 2, 4
VOL_DELETE_ZEROED, VOL_DELETE_WITH_SNAPSHOTS = 1, 2
VOL_RESIZE_ALLOCATE, VOL_RESIZE_DELTA, VOL_RESIZE_SHRINK = 1, 2, 4
VOL_WIPE_ALG_ZERO, VOL_WIPE_ALG_TRIM = 0, 9
#: scrub's pattern of each virStorageVolWipeAlgorithm (ZERO and TRIM are not scrub's)
_WIPE_PATTERNS = ("zero", "nnsa", "dod", "bsi", "gutmann", "schneier", "pfitzner7", "pfitzner33", "random",
                  "trim")
VOL_DOWNLOAD_SPARSE_STREAM = VOL_UPLOAD_SPARSE_STREAM = 1
#: virConnectListAllStoragePoolsFlags
LIST_INACTIVE, LIST_ACTIVE, LIST_PERSISTENT, LIST_TRANSIENT, LIST_AUTOSTART, LIST_NO_AUTOSTART = (
    1, 2, 4, 8, 16, 32)
_LIST_TYPE_BITS = {"dir": 64, "fs": 128, "netfs": 256, "logical": 512, "disk": 1024, "iscsi": 2048,
                   "scsi": 4096, "mpath": 8192, "rbd": 16384, "sheepdog": 32768, "gluster": 65536,
                   "zfs": 131072, "vstorage": 262144, "iscsi-direct": 524288}
_LIST_ALL = 63 | sum(_LIST_TYPE_BITS.values())

#: libvirt's default modes: a pool directory it builds, a volume it creates
_DEFAULT_POOL_MODE = 0o711
_DEFAULT_VOL_MODE = 0o600
#: formats qemu-img makes for a dir pool (raw is made by the driver itself)
_QEMU_IMG_FORMATS = ("qcow2", "qed", "vmdk", "vpc", "vdi")
_BACKING_FORMATS = ("qcow2", "qed", "vmdk")
_COPY_CHUNK = 1 << 20
#: qemu-img's names of the passphrases of the volume made or changed, and of a copy's source
_SECRET_ALIAS, _SOURCE_SECRET_ALIAS = "vol_encrypt0", "src_encrypt0"
#: how deep the in-use check follows a disk's backing chain
_MAX_CHAIN = 32

_SUPPORTED_POOL_TYPES = ("dir", "fs", "logical")
_MISSING_FOR_TYPE = {
    "fs": "mounting a source device on the target directory",
    "netfs": "mounting a network file system",
    "logical": "LVM volume groups (vgcreate/lvcreate)",
}


class StoragePaths(NamedTuple):
    config_dir: Path
    autostart_dir: Path
    state_dir: Path


def storage_paths(paths: InstancePaths) -> StoragePaths:
    """Where the pools of a driver instance live (see the module's docstring)."""
    config = paths.config_dir / "storage"
    # run_dir is RUN/qemu (embed, system) or RUN/qemu/run (session)
    run = paths.run_dir.parent.parent if paths.kind == "session" else paths.run_dir.parent
    return StoragePaths(config, config / "autostart", run / "storage")


class PoolRef(NamedTuple):
    name: str
    uuid: str


class VolRef(NamedTuple):
    pool: str
    name: str
    key: str


@dataclass
class _PoolObj:
    pool: Pool
    persistent: bool
    active: bool = False
    #: the last measured sizes (kept after stop, as libvirt's inactive XML shows them)
    sizes: tuple[int, int, int] = (0, 0, 0)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def name(self) -> str:
        assert self.pool.name is not None
        return self.pool.name

    @property
    def uuid(self) -> str:
        assert self.pool.uuid is not None
        return self.pool.uuid

    def ref(self) -> PoolRef:
        return PoolRef(self.name, self.uuid)


@dataclass
class _VolFacts:
    name: str
    path: str
    type: int
    st: os.stat_result
    image: images.ImageInfo


# ---- errors ---------------------------------------------------------------------------------------

def _err(code: int, message: str, **kw: object) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_STORAGE, **kw)  # type: ignore[arg-type]


def _invalid(message: str) -> PyvirtError:
    return _err(codes.VIR_ERR_OPERATION_INVALID, f"Requested operation is not valid: {message}")


def _failed(message: str) -> PyvirtError:
    return _err(codes.VIR_ERR_OPERATION_FAILED, f"operation failed: {message}")


def _system(e: OSError, what: str) -> PyvirtError:
    return _err(codes.VIR_ERR_SYSTEM_ERROR, f"{what}: {e.strerror or os.strerror(e.errno or errno.EIO)}",
                int1=e.errno or 0)


def _no_pool(what: str, value: str) -> PyvirtError:
    detail = f"no storage pool with matching {what} '{value}'"
    return _err(codes.VIR_ERR_NO_STORAGE_POOL, f"Storage pool not found: {detail}",
                str1="Storage pool not found: %s", str2=detail)


def _no_vol(what: str, value: str) -> PyvirtError:
    detail = f"no storage vol with matching {what} '{value}'"
    return _err(codes.VIR_ERR_NO_STORAGE_VOL, f"Storage volume not found: {detail}",
                str1="Storage volume not found: %s", str2=detail)


def check_flags(flags: int, allowed: int, function: str) -> None:
    if flags & ~allowed:
        raise _err(codes.VIR_ERR_INVALID_ARG,
                   f"unsupported flags (0x{flags & ~allowed:x}) in function {function}",
                   str1=function, str2="flags")


def _unsupported_type(pool: Pool, action: str) -> PyvirtError:
    missing = _MISSING_FOR_TYPE.get(pool.type or "", f"the '{pool.type}' storage backend")
    return _err(codes.VIR_ERR_NO_SUPPORT,
                f"this function is not supported by the connection driver: cannot {action} storage pool "
                f"'{pool.name}' of type '{pool.type}': pyvirt's storage driver lacks {missing}; use a pool "
                "of type 'dir'")


def _pair(flags: int, yes: int, no: int, value: bool) -> bool:
    return not flags & (yes | no) or bool(flags & yes and value or flags & no and not value)


def check_volume_name(name: str) -> None:
    """A volume is a file directly in its pool's directory: no path separators, no '.' or '..'."""
    if "/" in name:
        raise _invalid(f"volume name '{name}' cannot contain '/'")
    if name in (".", "..") or not name or "\0" in name:
        raise _invalid(f"volume name '{name}' is not a file name: name the volume's file, e.g. disk.qcow2")


# ---- the driver -----------------------------------------------------------------------------------

class StorageDriver:
    """The pools and volumes of one driver instance."""

    def __init__(self, paths: StoragePaths, qemu: QemuDriver | None = None) -> None:
        self.paths = paths
        self._qemu = weakref.ref(qemu) if qemu is not None else None
        self._lock = threading.RLock()
        self._pools: dict[str, _PoolObj] = {}
        self._load()

    # -- files ------------------------------------------------------------------------------------

    def _config_file(self, name: str) -> Path:
        return self.paths.config_dir / f"{name}.xml"

    def _state_file(self, name: str) -> Path:
        return self.paths.state_dir / f"{name}.xml"

    def _autostart_link(self, name: str) -> Path:
        return self.paths.autostart_dir / f"{name}.xml"

    @staticmethod
    def _mkdir(path: Path) -> None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise _failed(f"cannot create directory '{path}': {e.strerror}") from e

    def _write(self, path: Path, pool: Pool) -> None:
        self._mkdir(path.parent)
        atomic_write_text(path, format_pool(pool, 0, 0, 0), mode=0o600)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise _failed(f"cannot remove '{path}': {e.strerror}") from e

    def _load(self) -> None:
        """Read the definitions and the active pools; a broken file is logged and skipped."""
        for persistent, directory in ((True, self.paths.config_dir), (False, self.paths.state_dir)):
            try:
                files = sorted(directory.glob("*.xml"))
            except OSError:
                continue
            for path in files:
                name = path.name[:-len(".xml")]
                try:
                    pool = parse_pool(path.read_bytes())
                    if pool.name != name:
                        raise _failed(f"pool name '{pool.name}' does not match file name '{path.name}'")
                except (OSError, PyvirtError) as exc:
                    log.error("Error reading storage pool %s: %s; it is left out", path, exc)
                    continue
                obj = self._pools.get(name)
                if persistent:
                    self._pools[name] = _PoolObj(pool, persistent=True)
                elif obj is None:
                    self._pools[name] = obj = _PoolObj(pool, persistent=False, active=True)
                else:  # active: its live definition is the one it was started with
                    obj.active = True
                    obj.pool = pool
        for obj in list(self._pools.values()):
            if obj.active:
                try:
                    self._check_dir(obj.pool)
                    obj.sizes = self._measure(obj.pool)
                except PyvirtError as exc:
                    # the directory went away while no process drove the instance: inactive now
                    log.error("storage pool '%s' is inactive: %s", obj.name, exc)
                    self._deactivate(obj)

    def autostart_once(self) -> None:
        """Start the pools marked for autostart, once per boot (libvirt's storage driver does at
        daemon start; an embedded instance has no daemon: its first open after boot does)."""
        marker = self.paths.state_dir / "autostarted"
        if marker.exists():
            return
        try:
            self._mkdir(self.paths.state_dir)
            marker.touch()
        except (OSError, PyvirtError) as exc:
            log.warning("%s: %s; storage pool autostart skipped", marker, exc)
            return
        for obj in list(self._pools.values()):
            if obj.persistent and not obj.active and self.autostart(obj.name):
                try:
                    self.start(obj.name)
                except PyvirtError as exc:
                    log.warning("autostart of storage pool '%s' failed: %s", obj.name, exc)

    # -- pools: lookup ----------------------------------------------------------------------------

    def _obj(self, name: str) -> _PoolObj:
        obj = self._pools.get(name)
        if obj is None:
            raise _no_pool("name", name)
        return obj

    def _active(self, name: str) -> _PoolObj:
        obj = self._obj(name)
        if not obj.active:
            raise _invalid(f"storage pool '{name}' is not active")
        return obj

    def lookup_name(self, name: str) -> PoolRef:
        with self._lock:
            return self._obj(name).ref()

    def lookup_uuid(self, uuid: str) -> PoolRef:
        with self._lock:
            for obj in self._pools.values():
                if obj.uuid == uuid:
                    return obj.ref()
        raise _no_pool("uuid", uuid)

    def list_all(self, flags: int = 0) -> list[PoolRef]:
        check_flags(flags, _LIST_ALL, "virConnectListAllStoragePools")
        type_bits = flags & ~63
        found = []
        with self._lock:
            for obj in self._pools.values():
                if not (_pair(flags, LIST_ACTIVE, LIST_INACTIVE, obj.active)
                        and _pair(flags, LIST_PERSISTENT, LIST_TRANSIENT, obj.persistent)
                        and _pair(flags, LIST_AUTOSTART, LIST_NO_AUTOSTART, self.autostart(obj.name))):
                    continue
                if type_bits and not type_bits & _LIST_TYPE_BITS.get(obj.pool.type or "", 0):
                    continue
                found.append(obj.ref())
        return sorted(found)

    def is_active(self, name: str) -> bool:
        with self._lock:
            return self._obj(name).active

    def is_persistent(self, name: str) -> bool:
        with self._lock:
            return self._obj(name).persistent

    def autostart(self, name: str) -> bool:
        return os.path.lexists(self._autostart_link(name))

    def pool_path(self, name: str) -> str:
        with self._lock:
            return self._obj(name).pool.path

    # -- pools: definition ------------------------------------------------------------------------

    def _check_duplicate(self, pool: Pool, *, allow_same: bool) -> _PoolObj | None:
        """libvirt's virStoragePoolObjIsDuplicate (name and UUID) and its check that no other pool
        uses the same target directory."""
        assert pool.name is not None
        same = self._pools.get(pool.name)
        if same is not None:
            if same.uuid != pool.uuid:
                raise _failed(f"pool '{pool.name}' already exists with uuid {same.uuid}")
            if not allow_same:
                raise _failed(f"pool '{pool.name}' already exists with uuid {same.uuid}")
        for obj in self._pools.values():
            if obj is same:
                continue
            if obj.uuid == pool.uuid:
                raise _failed(f"pool '{obj.name}' is already defined with uuid {obj.uuid}")
            if (pool.type == obj.pool.type and obj.pool.path == pool.path
                    and pool.type in ("dir", "fs", "netfs", "logical")):  # logical: /dev/VG
                raise _failed(f"Storage source conflict with pool: '{obj.name}'")
        return same

    def define_xml(self, xml: str | bytes, flags: int = 0) -> PoolRef:
        check_flags(flags, POOL_DEFINE_VALIDATE, "storagePoolDefineXML")
        pool = parse_pool(xml)
        backends.validate(pool)
        with self._lock:
            same = self._check_duplicate(pool, allow_same=True)
            self._write(self._config_file(pool.name or ""), pool)
            if same is None:
                obj = _PoolObj(pool, persistent=True)
                self._pools[obj.name] = obj
            else:
                same.persistent = True
                if not same.active:  # a running pool keeps its live definition until it stops
                    same.pool = pool
                obj = same
            log.debug("storage pool %s defined", obj.name)
            ev.emit_pool(self._qemu, obj.name, obj.uuid, ev.POOL_DEFINED)
            return obj.ref()

    def create_xml(self, xml: str | bytes, flags: int = 0) -> PoolRef:
        """A transient pool, started at once (libvirt's storagePoolCreateXML)."""
        check_flags(flags, POOL_CREATE_WITH_BUILD | POOL_CREATE_WITH_BUILD_OVERWRITE
                    | POOL_CREATE_WITH_BUILD_NO_OVERWRITE, "storagePoolCreateXML")
        pool = parse_pool(xml)
        backends.validate(pool)
        with self._lock:
            if pool.name in self._pools:
                same = self._pools[pool.name or ""]
                if same.active:
                    raise _invalid(f"storage pool '{pool.name}' is already active")
            self._check_duplicate(pool, allow_same=False)
            obj = _PoolObj(pool, persistent=False)
            if flags:
                self._build(obj, backends.build_flags(flags))
            self._start(obj)
            self._pools[obj.name] = obj
            ev.emit_pool(self._qemu, obj.name, obj.uuid, ev.POOL_STARTED)
            return obj.ref()

    def undefine(self, name: str) -> None:
        with self._lock:
            obj = self._obj(name)
            if obj.active:
                raise _invalid(f"storage pool '{name}' is still active")
            if not obj.persistent:
                raise _invalid(f"storage pool '{name}' is transient")
            self._unlink(self._autostart_link(name))
            self._unlink(self._config_file(name))
            del self._pools[name]
            ev.emit_pool(self._qemu, name, obj.uuid, ev.POOL_UNDEFINED)

    def set_autostart(self, name: str, enabled: bool) -> None:
        with self._lock:
            obj = self._obj(name)
            if not obj.persistent:
                raise _invalid("cannot set autostart for transient pool")
            link = self._autostart_link(name)
            try:
                if enabled and not os.path.lexists(link):
                    self._mkdir(self.paths.autostart_dir)
                    os.symlink(self._config_file(name), link)
                elif not enabled and os.path.lexists(link):
                    os.unlink(link)
            except OSError as e:
                raise _system(e, f"Failed to {'create' if enabled else 'delete'} symlink '{link}' to "
                                 f"'{self._config_file(name)}'") from e

    def xml_desc(self, name: str, flags: int = 0) -> str:
        check_flags(flags, POOL_XML_INACTIVE, "storagePoolGetXMLDesc")
        with self._lock:
            obj = self._obj(name)
            if obj.active:
                obj.sizes = self._measure(obj.pool)
                return format_pool(self._live_pool(obj.pool), *obj.sizes)
            return format_pool(obj.pool, *obj.sizes)

    def info(self, name: str) -> list[int]:
        """[state, capacity, allocation, available] (libvirt's virStoragePoolGetInfo)."""
        with self._lock:
            obj = self._obj(name)
            if obj.active:
                obj.sizes = self._measure(obj.pool)
            state = POOL_RUNNING if obj.active else POOL_INACTIVE
            return [state, *obj.sizes]

    # -- pools: lifecycle -------------------------------------------------------------------------

    @staticmethod
    def _check_dir(pool: Pool) -> None:
        if pool.type not in _SUPPORTED_POOL_TYPES:
            raise _unsupported_type(pool, "start")
        if pool.type == "logical":
            from pyvirt.storage import backend_logical

            return backend_logical.match_source(pool)
        if pool.type == "fs":
            from pyvirt.storage import backend_fs

            if not backend_fs.is_mounted(pool):
                raise _invalid(f"storage pool '{pool.name}': its source device is not mounted on "
                               f"'{pool.path}' (any more)")
        try:
            st = os.stat(pool.path)
        except OSError as e:
            raise _system(e, f"cannot open directory '{pool.path}'") from e
        if not stat.S_ISDIR(st.st_mode):
            raise _err(codes.VIR_ERR_SYSTEM_ERROR, f"cannot open directory '{pool.path}': Not a directory",
                       int1=errno.ENOTDIR)

    @staticmethod
    def _measure(pool: Pool) -> tuple[int, int, int]:
        """(capacity, allocation, available) of the file system holding the pool."""
        if pool.type == "logical":
            from pyvirt.storage import backend_logical

            return backend_logical.measure(pool)
        try:
            vfs = os.statvfs(pool.path)
        except OSError as e:
            raise _system(e, f"cannot statvfs path '{pool.path}'") from e
        capacity = vfs.f_frsize * vfs.f_blocks
        free = vfs.f_frsize * vfs.f_bfree  # libvirt counts the blocks reserved for root as available
        return capacity, capacity - free, free

    @staticmethod
    def _live_pool(pool: Pool) -> Pool:
        """The running pool's XML: the directory's own mode and owner, as libvirt's refresh reads them."""
        assert pool.target is not None
        if pool.type == "logical":
            return pool  # libvirt shows no permissions of /dev/VG
        try:
            st = os.stat(pool.path)
        except OSError:
            return pool
        live = Pool(type=pool.type, name=pool.name, uuid=pool.uuid, source=pool.source,
                    target=type(pool.target)(path=pool.path,
                                             permissions=Permissions.make(stat.S_IMODE(st.st_mode),
                                                                          st.st_uid, st.st_gid)))
        return live

    def _build(self, obj: _PoolObj, flags: int = 0) -> None:
        pool = obj.pool
        if pool.type not in _SUPPORTED_POOL_TYPES:
            raise _unsupported_type(pool, "build")
        if pool.type == "logical":
            from pyvirt.storage import backend_logical

            return backend_logical.build(pool, flags)
        if pool.type == "fs":
            from pyvirt.storage import backend_fs

            backend_fs.check_build(pool, flags)  # before the directory: a refusal leaves nothing
        path = Path(pool.path)
        perms = pool.target.permissions if pool.target is not None else None
        mode = int(perms.mode, 8) if perms is not None and perms.mode else _DEFAULT_POOL_MODE
        uid = int(perms.owner) if perms is not None and perms.owner is not None else -1
        gid = int(perms.group) if perms is not None and perms.group is not None else -1
        if path.exists() and not path.is_dir():
            raise _err(codes.VIR_ERR_SYSTEM_ERROR,
                       f"cannot create directory '{path}': the path exists and is not a directory; move "
                       "it out of the way or give the pool another <target><path>", int1=errno.EEXIST)
        if not path.parent.is_dir():
            raise _err(codes.VIR_ERR_SYSTEM_ERROR,
                       f"cannot create directory '{path}': its parent '{path.parent}' does not exist; "
                       "create it first", int1=errno.ENOENT)
        created = False
        try:
            if not path.exists():
                os.mkdir(path, mode)
                created = True
            os.chmod(path, mode)
            if uid != -1 or gid != -1:
                os.chown(path, uid, gid)
            if pool.type == "fs":
                backend_fs.make_fs(pool, flags)
        except (OSError, PyvirtError) as e:
            if created:
                os.rmdir(path)
            if isinstance(e, PyvirtError):
                raise
            raise _system(e, f"cannot create path '{path}'") from e

    def build(self, name: str, flags: int = 0) -> None:
        check_flags(flags, POOL_BUILD_NO_OVERWRITE | POOL_BUILD_OVERWRITE, "storagePoolBuild")
        with self._lock:
            obj = self._obj(name)
            if obj.active:
                raise _invalid(f"storage pool '{name}' is already active")
            self._build(obj, flags)
            ev.emit_pool(self._qemu, name, obj.uuid, ev.POOL_CREATED)

    def _start(self, obj: _PoolObj) -> None:
        backends.call(obj.pool, "start")  # fs: mount; logical: vgchange -aly
        try:
            self._check_dir(obj.pool)
            obj.sizes = self._measure(obj.pool)
            self._write(self._state_file(obj.name), obj.pool)
        except BaseException:
            backends.call(obj.pool, "stop", quiet=True)
            raise
        obj.active = True

    def start(self, name: str, flags: int = 0) -> None:
        check_flags(flags, POOL_CREATE_WITH_BUILD | POOL_CREATE_WITH_BUILD_OVERWRITE
                    | POOL_CREATE_WITH_BUILD_NO_OVERWRITE, "storagePoolCreate")
        with self._lock:
            obj = self._obj(name)
            if obj.active:
                raise _invalid(f"storage pool '{name}' is already active")
            if flags:
                self._build(obj, backends.build_flags(flags))
            self._start(obj)
            ev.emit_pool(self._qemu, name, obj.uuid, ev.POOL_STARTED)

    def _deactivate(self, obj: _PoolObj) -> None:
        self._unlink(self._state_file(obj.name))
        obj.active = False
        if not obj.persistent:
            self._pools.pop(obj.name, None)

    def destroy(self, name: str) -> None:
        with self._lock:
            obj = self._active(name)
            backends.call(obj.pool, "stop")  # fs: umount; logical: vgchange -aln
            self._deactivate(obj)
            # a persistent pool redefined while running takes its new definition now
            try:
                obj.pool = parse_pool(self._config_file(name).read_bytes()) if obj.persistent else obj.pool
            except (OSError, PyvirtError):
                pass  # the definition it ran with stays
            ev.emit_pool(self._qemu, name, obj.uuid, ev.POOL_STOPPED)

    def delete(self, name: str, flags: int = 0) -> None:
        check_flags(flags, 1, "storagePoolDelete")  # VIR_STORAGE_POOL_DELETE_ZEROED: nothing to zero
        with self._lock:
            obj = self._obj(name)
            if obj.active:
                raise _invalid(f"storage pool '{name}' is still active")
            if obj.pool.type not in _SUPPORTED_POOL_TYPES:
                raise _unsupported_type(obj.pool, "delete")
            if obj.pool.type == "logical":
                backends.call(obj.pool, "delete")  # vgremove, pvremove
                ev.emit_pool(self._qemu, name, obj.uuid, ev.POOL_DELETED)
                return
            try:
                os.rmdir(obj.pool.path)  # an empty directory only: volumes are never removed here
            except FileNotFoundError:
                pass
            except OSError as e:
                raise _system(e, f"failed to remove pool '{obj.pool.path}'") from e
            ev.emit_pool(self._qemu, name, obj.uuid, ev.POOL_DELETED)

    def refresh(self, name: str, flags: int = 0) -> None:
        check_flags(flags, 0, "storagePoolRefresh")
        with self._lock:
            obj = self._active(name)
            try:
                self._check_dir(obj.pool)
            except PyvirtError:
                self._deactivate(obj)
                ev.emit_pool(self._qemu, name, obj.uuid, ev.POOL_STOPPED)
                raise
            obj.sizes = self._measure(obj.pool)
            ev.emit_pool_refresh(self._qemu, name, obj.uuid)

    # -- volumes ----------------------------------------------------------------------------------

    def _facts(self, pool: Pool, name: str) -> _VolFacts | None:
        path = os.path.join(pool.path, name)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if stat.S_ISREG(st.st_mode):
            return _VolFacts(name, path, VOL_FILE, st, images.probe(path, st.st_size))
        if stat.S_ISDIR(st.st_mode):
            # libvirt gives a directory no size: capacity and allocation 0, no physical
            return _VolFacts(name, path, VOL_DIR, st, images.ImageInfo("dir", 0))
        return None  # devices, sockets, fifos are no volumes of a dir pool

    def _vol(self, pool_name: str, name: str) -> tuple[_PoolObj, _VolFacts]:
        obj = self._active(pool_name)
        facts = self._facts(obj.pool, name) if "/" not in name and name not in (".", "..", "") else None
        if facts is None:
            raise _no_vol("name", name)
        return obj, facts

    def _lvm(self, pool_name: str) -> LogicalVolumes | None:
        """The volume calls of an active logical pool; None for a pool of files."""
        obj = self._active(pool_name)
        if obj.pool.type != "logical":
            return None
        from pyvirt.storage.logical_volumes import LogicalVolumes

        return LogicalVolumes(self, obj)

    def list_volumes(self, pool_name: str) -> list[VolRef]:
        with self._lock:
            if (lv := self._lvm(pool_name)) is not None:
                return lv.refs()
            obj = self._active(pool_name)
            try:
                names = sorted(os.listdir(obj.pool.path))
            except OSError as e:
                raise _system(e, f"cannot open directory '{obj.pool.path}'") from e
            refs = []
            for name in names:
                facts = self._facts(obj.pool, name)
                if facts is not None:
                    refs.append(VolRef(pool_name, name, facts.path))
            return refs

    def lookup_volume(self, pool_name: str, name: str) -> VolRef:
        with self._lock:
            if (lv := self._lvm(pool_name)) is not None:
                return lv.lookup(name)
            _, facts = self._vol(pool_name, name)
            return VolRef(pool_name, name, facts.path)

    def lookup_path(self, path: str, *, what: str = "path") -> VolRef:
        """The volume at ``path`` (or whose key is ``path``: a dir pool's keys are its paths)."""
        clean = os.path.normpath(path) if path else path
        with self._lock:
            for obj in self._pools.values():
                if not obj.active:
                    continue
                if obj.pool.type == "logical":
                    found = (lv := self._lvm(obj.name)) is not None and lv.find(path)
                    if found:
                        return found
                    continue
                directory, name = os.path.split(clean)
                if (directory != obj.pool.path
                        and os.path.realpath(directory) != os.path.realpath(obj.pool.path)):
                    continue
                facts = self._facts(obj.pool, name) if name else None
                if facts is not None:
                    return VolRef(obj.name, name, facts.path)
        if what == "key":
            detail = f"no storage vol with matching key {path}"
            raise _err(codes.VIR_ERR_NO_STORAGE_VOL, f"Storage volume not found: {detail}",
                       str1="Storage volume not found: %s", str2=detail)
        raise _no_vol("path", path)

    def vol_info(self, ref: VolRef) -> list[int]:
        """[type, capacity, allocation] (libvirt's virStorageVolGetInfo)."""
        with self._lock:
            if (lv := self._lvm(ref.pool)) is not None:
                return lv.info(ref.name)
            _, facts = self._vol(ref.pool, ref.name)
            return [facts.type, facts.image.capacity, _allocation(facts)]

    def vol_xml(self, ref: VolRef, flags: int = 0) -> str:
        check_flags(flags, 0, "storageVolGetXMLDesc")
        with self._lock:
            if (lv := self._lvm(ref.pool)) is not None:
                return lv.xml(ref.name)
            _, facts = self._vol(ref.pool, ref.name)
            return format_volume(self._volume_model(facts))

    def _volume_model(self, facts: _VolFacts) -> Volume:
        st, image = facts.st, facts.image
        target = VolumeTarget(path=facts.path, format=FormatType(type=image.format),
                              permissions=Permissions.make(stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid),
                              timestamps=_timestamps(st), compat=image.compat,
                              features=VolumeFeatures(lazy_refcounts=True) if image.lazy_refcounts else None)
        if image.encryption:
            enc = Encryption(format=image.encryption)
            secret = self._secret_uuid_for(facts.path)
            if secret is not None:
                enc.secrets.append(EncryptionSecret(type="passphrase", uuid=secret))
            target.encryption = enc
        vol = Volume(type=("file", "block", "dir")[facts.type], name=facts.name, key=facts.path,
                     capacity=Scaled.of(image.capacity), allocation=Scaled.of(_allocation(facts)),
                     physical=Scaled.of(st.st_size) if facts.type != VOL_DIR else None, target=target)
        if image.backing:
            backing = image.backing
            if not backing.startswith("/"):
                backing = os.path.join(os.path.dirname(facts.path), backing)
            bs = BackingStore(path=image.backing,
                              format=FormatType(type=image.backing_format) if image.backing_format else None)
            try:
                bst = os.stat(backing)
                bs.permissions = Permissions.make(stat.S_IMODE(bst.st_mode), bst.st_uid, bst.st_gid)
                bs.timestamps = _timestamps(bst)
            except OSError:
                pass
            vol.backing = bs
        return vol

    def _secret_uuid_for(self, path: str) -> str | None:
        """The secret whose usage is this volume (libvirt ties a volume's secret to its path)."""
        qemu = self._qemu() if self._qemu is not None else None
        if qemu is None:
            return None
        from pyvirt.secret.driver import driver_for as secrets_for

        try:
            return secrets_for(qemu).lookup_usage(1, path).uuid  # VIR_SECRET_USAGE_TYPE_VOLUME
        except PyvirtError:
            return None

    def _secret_value(self, uuid: str) -> bytes:
        qemu = self._qemu() if self._qemu is not None else None
        if qemu is None:
            raise _err(codes.VIR_ERR_INTERNAL_ERROR, "internal error: no secret driver for this instance")
        from pyvirt.secret.driver import driver_for as secrets_for

        return secrets_for(qemu).secret_for(1, uuid=uuid)

    # -- volumes: creation ------------------------------------------------------------------------

    def _prepare_new(self, pool_name: str, xml: str | bytes) -> tuple[_PoolObj, Volume, str]:
        obj = self._active(pool_name)
        if obj.pool.type not in _SUPPORTED_POOL_TYPES:
            raise _unsupported_type(obj.pool, "create volumes in")
        vol = parse_volume(xml)
        assert vol.name is not None
        check_volume_name(vol.name)
        path = os.path.join(obj.pool.path, vol.name)
        if os.path.lexists(path):
            raise _err(codes.VIR_ERR_STORAGE_VOL_EXIST, f"storage volume '{vol.name}' exists already")
        if vol.type not in (None, "file"):
            raise _err(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                       f"unsupported configuration: volume type '{vol.type}' in pool '{pool_name}' of type "
                       "'dir': its volumes are files (type='file')")
        return obj, vol, path

    def _reserve(self, path: str, vol: Volume) -> None:
        """Make the volume's file empty with O_EXCL: nothing existing is ever overwritten."""
        perms = vol.target.permissions if vol.target is not None else None
        mode = int(perms.mode, 8) if perms is not None and perms.mode else _DEFAULT_VOL_MODE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            raise _err(codes.VIR_ERR_STORAGE_VOL_EXIST,
                       f"storage volume '{vol.name}' exists already") from None
        except OSError as e:
            raise _system(e, f"cannot create path '{path}'") from e
        try:
            os.fchmod(fd, mode)
            uid = int(perms.owner) if perms is not None and perms.owner is not None else -1
            gid = int(perms.group) if perms is not None and perms.group is not None else -1
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
        except OSError as e:
            os.close(fd)
            os.unlink(path)
            raise _system(e, f"cannot set permissions of '{path}'") from e
        os.close(fd)

    def create_volume(self, pool_name: str, xml: str | bytes, flags: int = 0,
                      source: VolRef | None = None) -> VolRef:
        check_flags(flags, VOL_CREATE_PREALLOC_METADATA | VOL_CREATE_REFLINK | VOL_CREATE_VALIDATE,
                    "storageVolCreateXMLFrom" if source is not None else "storageVolCreateXML")
        with self._lock:
            if (lv := self._lvm(pool_name)) is not None:
                if source is not None:
                    raise _err(codes.VIR_ERR_NO_SUPPORT, "this function is not supported by the connection "
                               "driver: copying a volume into a logical pool")
                return lv.create(xml)
            obj, vol, path = self._prepare_new(pool_name, xml)
            src = self._vol(source.pool, source.name)[1] if source is not None else None
            fmt = vol.format_type or "raw"
            if fmt not in ("raw", *_QEMU_IMG_FORMATS):
                raise _err(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                           f"unsupported configuration: cannot create a volume of format '{fmt}' in pool "
                           f"'{pool_name}'; use raw or qcow2")
            plan = self._plan(vol, fmt, path, src, flags)  # every check before the file exists
            self._reserve(path, vol)
            try:
                plan()
            except BaseException:
                try:
                    os.unlink(path)
                except OSError:
                    pass
                raise
            assert vol.name is not None
            return VolRef(pool_name, vol.name, path)

    def _plan(self, vol: Volume, fmt: str, path: str, src: _VolFacts | None,
              flags: int) -> Callable[[], None]:
        """Check what the new volume needs and return the function that makes it."""
        enc = vol.encryption
        backing = vol.backing
        capacity = vol.capacity_bytes
        secret: bytes | None = None
        if enc is not None:
            if enc.format != "luks":
                raise _err(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                           f"unsupported configuration: volume encryption format '{enc.format}' is not "
                           "supported; use <encryption format='luks'>")
            if fmt not in ("raw", "qcow2"):
                raise _err(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                           f"unsupported configuration: LUKS encryption of a '{fmt}' volume; use raw "
                           "or qcow2")
            uuids = [s.uuid for s in enc.secrets if s.uuid]
            if not uuids:
                raise _err(codes.VIR_ERR_XML_ERROR,
                           "XML error: missing encryption secret: add <secret type='passphrase' uuid='...'/> "
                           "to <encryption>, naming a secret that has a value")
            secret = self._secret_value(uuids[0])
        if src is not None and src.type != VOL_FILE:
            raise _invalid(f"volume '{src.path}' is not a file")
        # a copy from or to an encrypted volume: libvirt makes the new volume with qemu-img create
        # (encrypted with its own secret), then copies the data with qemu-img convert -n
        src_secret = self._volume_secret(src) if src is not None and src.image.encryption else None
        two_step = src is not None and (secret is not None or src_secret is not None)
        if two_step:
            assert src is not None
            capacity = max(capacity, src.image.capacity)
        backing_path = backing_fmt = None
        if backing is not None and backing.path:
            if src is not None:
                backing = None  # a copy is made whole (flattened), as libvirt's qemu-img convert does
            else:
                if fmt not in _BACKING_FORMATS:
                    raise _err(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                               f"unsupported configuration: format '{fmt}' volumes cannot have a backing "
                               "store; use qcow2")
                backing_path = str(backing.path)
                try:
                    bst = os.stat(backing_path)
                except OSError as e:
                    raise _system(e, f"inaccessible backing store volume {backing_path}") from e
                backing_fmt = (backing.format.type if backing.format is not None and backing.format.type
                               else images.probe(backing_path, bst.st_size).format)
        compat = vol.target.compat if vol.target is not None else None
        lazy = bool(vol.target is not None and vol.target.features is not None
                    and vol.target.features.lazy_refcounts)
        if compat is not None and compat not in ("0.10", "1.1"):
            raise _err(codes.VIR_ERR_XML_ERROR,
                       f"XML error: unsupported qcow2 compat '{compat}'; use 0.10 or 1.1")
        if lazy and compat == "0.10":
            raise _err(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                       "unsupported configuration: lazy_refcounts needs qcow2 compat 1.1")
        options = []
        if fmt == "qcow2":
            options.append(f"compat={compat or ('1.1' if lazy else '0.10')}")
            if lazy:
                options.append("lazy_refcounts=on")
        state_dir = self.paths.state_dir

        def create(files: dict[str, Path]) -> None:
            args = ["create", "-f", "luks" if fmt == "raw" and secret is not None else fmt]
            opts = list(options)
            if secret is not None:
                args += images.secret_object(_SECRET_ALIAS, files["vol"])
                opts[:0] = [f"key-secret={_SECRET_ALIAS}"] if fmt == "raw" else \
                    ["encrypt.format=luks", f"encrypt.key-secret={_SECRET_ALIAS}"]
            if backing_path is not None:
                args += ["-b", backing_path, "-F", backing_fmt or "raw"]
            if opts:
                args += ["-o", ",".join(opts)]
            images.qemu_img([*args, path, f"{(capacity + 1023) // 1024}K"], f"creating {path}")

        def convert(files: dict[str, Path]) -> None:
            assert src is not None
            args = ["convert", "--image-opts", "-n", "--target-image-opts"]
            if secret is not None:
                args += images.secret_object(_SECRET_ALIAS, files["vol"])
            if src_secret is not None:
                args += images.secret_object(_SOURCE_SECRET_ALIAS, files["src"])
            args += [images.image_opts(src.image.format, src.path, src_secret is not None,
                                       _SOURCE_SECRET_ALIAS),
                     images.image_opts(fmt, path, secret is not None, _SECRET_ALIAS)]
            images.qemu_img(args, f"copying {src.path} to {path}")

        def make() -> None:
            if src is not None and not two_step:
                if fmt == "raw" and src.image.format == "raw":
                    _copy_raw(src.path, path, capacity)
                else:
                    args = ["convert", "-f", src.image.format, "-O", fmt]
                    if options:
                        args += ["-o", ",".join(options)]
                    images.qemu_img([*args, src.path, path], f"copying {src.path} to {path}")
                return
            if fmt == "raw" and secret is None and not two_step:
                _make_raw(path, capacity, vol.allocation_bytes, bool(flags & VOL_CREATE_PREALLOC_METADATA))
                return
            values = {"vol": secret} if secret is not None else {}
            if src_secret is not None:
                values["src"] = src_secret
            with images.secret_files(state_dir, values) as files:
                create(files)
                if two_step:
                    convert(files)

        return make

    def _volume_secret(self, facts: _VolFacts, *, resizing: bool = False) -> bytes:
        """The passphrase of an existing encrypted volume: its secret is the one whose usage is the
        volume's path, as libvirt finds it (storageBackendLoadDefaultSecrets). Without one, libvirt's
        error of the operation: resize checks the encryption first, a copy reads the secret."""
        uuid = self._secret_uuid_for(facts.path)
        if uuid is None and resizing:
            raise _err(codes.VIR_ERR_XML_ERROR, "XML error: no secret provided for luks encryption",
                       str1="XML error: %s")
        if uuid is None:
            raise _err(codes.VIR_ERR_INVALID_ARG,
                       "invalid argument: A single <secret type='passphrase'...> element is expected in "
                       "encryption description", str1="invalid argument: %s")
        return self._secret_value(uuid)

    # -- volumes: changes -------------------------------------------------------------------------

    def _users(self, pool_name: str, facts: _VolFacts) -> list[str]:
        """The domains (defined or running) with a disk on this volume."""
        qemu = self._qemu() if self._qemu is not None else None
        if qemu is None:
            return []
        real = os.path.realpath(facts.path)
        users = []
        doms = []
        for name in qemu.domains.names():
            try:
                doms.append(qemu.domains.get(name))
            except PyvirtError:
                continue
        with qemu.running_lock:
            doms.extend(qemu.transient.values())
        for dom in doms:
            for disk in dom.disks:
                src = disk.source
                if src is None:
                    continue
                hit = False
                path = None
                if disk.type == "volume":
                    hit = src.pool == pool_name and src.volume == facts.name
                    obj = self._pools.get(src.pool or "")
                    if obj is not None and src.volume and "/" not in src.volume:
                        path = os.path.join(obj.pool.path, src.volume)
                else:
                    path = src.file if disk.type == "file" else src.dev if disk.type == "block" else None
                # the disk's image, then its backing chain: an overlay's guest reads this volume too
                hit = hit or (path is not None and real in _chain(path))
                if hit and dom.name not in users:
                    users.append(dom.name or "")
        return users

    def _refuse_in_use(self, pool_name: str, facts: _VolFacts, action: str) -> None:
        users = self._users(pool_name, facts)
        if users:
            names = ", ".join(f"'{u}'" for u in users)
            many = len(users) > 1
            raise _invalid(f"cannot {action} volume '{facts.path}': it is in use by "
                           f"domain{'s' if many else ''} "
                           f"{names}; remove the disk from {'them' if many else 'it'} (or undefine it) first")

    def delete_volume(self, ref: VolRef, flags: int = 0) -> None:
        check_flags(flags, VOL_DELETE_ZEROED | VOL_DELETE_WITH_SNAPSHOTS, "storageVolDelete")
        with self._lock:
            if (lv := self._lvm(ref.pool)) is not None:
                return lv.delete(ref.name)
            _, facts = self._vol(ref.pool, ref.name)
            self._refuse_in_use(ref.pool, facts, "delete")
            try:
                if flags & VOL_DELETE_ZEROED and facts.type == VOL_FILE:
                    _zero(facts.path, facts.st.st_size)
                if facts.type == VOL_DIR:
                    os.rmdir(facts.path)
                else:
                    os.unlink(facts.path)
            except OSError as e:
                raise _system(e, f"cannot unlink file '{facts.path}'") from e

    def wipe_volume(self, ref: VolRef, algorithm: int = VOL_WIPE_ALG_ZERO, flags: int = 0) -> None:
        """libvirt's virStorageVolWipePattern for a file: zeros written by the driver (a sparse
        file is emptied and extended back), scrub's patterns by ``scrub -f -p``, TRIM refused."""
        check_flags(flags, 0, "storageVolWipePattern")
        if not 0 <= algorithm < len(_WIPE_PATTERNS):
            raise _err(codes.VIR_ERR_INVALID_ARG,
                       f"invalid argument: wiping algorithm {algorithm} not supported",
                       str1="invalid argument: %s")
        with self._lock:
            if (lv := self._lvm(ref.pool)) is not None:
                return lv.wipe(ref.name, algorithm)
            _, facts = self._vol(ref.pool, ref.name)
            self._refuse_in_use(ref.pool, facts, "wipe")
            try:
                fd = os.open(facts.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as e:
                raise _system(e, f"Failed to open storage volume with path '{facts.path}'") from e
            try:
                if algorithm == VOL_WIPE_ALG_TRIM:
                    raise _err(codes.VIR_ERR_ARGUMENT_UNSUPPORTED,
                               "argument unsupported: 'trim' algorithm not supported",
                               str1="argument unsupported: %s")
                if algorithm != VOL_WIPE_ALG_ZERO:
                    images.scrub(_WIPE_PATTERNS[algorithm], facts.path)
                    return
                st = os.fstat(fd)
                try:
                    if st.st_blocks < st.st_size // 512:  # sparse: a hole reads as zeros
                        os.ftruncate(fd, 0)
                        os.ftruncate(fd, st.st_size)
                    else:  # libvirt writes the allocation: a partly used last block is zeroed whole
                        _zero_fd(fd, st.st_blocks * 512)
                except OSError as e:
                    raise _system(e, f"Failed to write to storage volume with path '{facts.path}'") from e
            finally:
                os.close(fd)

    def resize_volume(self, ref: VolRef, capacity: int, flags: int = 0) -> None:
        check_flags(flags, VOL_RESIZE_ALLOCATE | VOL_RESIZE_DELTA | VOL_RESIZE_SHRINK, "storageVolResize")
        with self._lock:
            if (lv := self._lvm(ref.pool)) is not None:
                return lv.resize(ref.name, capacity, flags)
            _, facts = self._vol(ref.pool, ref.name)
            current = facts.image.capacity
            allocation = facts.st.st_blocks * 512
            if flags & VOL_RESIZE_DELTA:
                new = current - min(capacity, current) if flags & VOL_RESIZE_SHRINK else current + capacity
            else:
                new = capacity
            if new < allocation and facts.image.format == "raw":
                raise _err(codes.VIR_ERR_INVALID_ARG,
                           "invalid argument: can't shrink capacity below existing "
                           "allocation", str1="invalid argument: %s")
            if new < current and not flags & VOL_RESIZE_SHRINK:
                raise _err(codes.VIR_ERR_INVALID_ARG, "invalid argument: Can't shrink capacity below current "
                           "capacity unless shrink flag explicitly specified")
            if facts.type != VOL_FILE:
                raise _invalid(f"cannot resize volume '{facts.path}': it is not a file")
            encrypted = facts.image.encryption is not None
            if facts.image.format == "raw" and not encrypted:
                try:
                    with open(facts.path, "r+b") as f:
                        if flags & VOL_RESIZE_ALLOCATE and new > facts.st.st_size:
                            os.posix_fallocate(f.fileno(), facts.st.st_size, new - facts.st.st_size)
                        os.ftruncate(f.fileno(), new)
                except OSError as e:
                    raise _system(e, f"Failed to truncate file '{facts.path}'") from e
                return
            if flags & VOL_RESIZE_ALLOCATE:
                kind = "an unencrypted raw volume" if facts.image.format == "raw" else "raw type volume"
                raise _err(codes.VIR_ERR_OPERATION_UNSUPPORTED,
                           f"Operation not supported: preallocate is only supported for {kind}",
                           str1="Operation not supported: %s")
            new = (new + 511) // 512 * 512  # qemu-img resizes by whole sectors only
            shrink = ["--shrink"] if new < current else []
            if not encrypted:
                images.qemu_img(["resize", *shrink, "-f", facts.image.format, facts.path, str(new)],
                                f"resizing {facts.path}")
                return
            # the guest-visible size: a LUKS volume's payload, as libvirt resizes it
            passphrase = self._volume_secret(facts, resizing=True)
            with images.secret_files(self.paths.state_dir, {"vol": passphrase}) as files:
                images.qemu_img(["resize", *shrink, *images.secret_object(_SECRET_ALIAS, files["vol"]),
                                 "--image-opts",
                                 images.image_opts(facts.image.format, facts.path, True, _SECRET_ALIAS),
                                 str(new)], f"resizing {facts.path}")

    def open_volume(self, ref: VolRef, *, write: bool) -> tuple[int, str]:
        """A descriptor on the volume's file for upload (write) or download."""
        with self._lock:
            if (lv := self._lvm(ref.pool)) is not None:
                return lv.open(ref.name, write=write)
            _, facts = self._vol(ref.pool, ref.name)
            if facts.type != VOL_FILE:
                raise _invalid(f"volume '{facts.path}' is not a file")
            if write:
                self._refuse_in_use(ref.pool, facts, "upload to")
            try:
                fd = os.open(facts.path, (os.O_WRONLY if write else os.O_RDONLY) | os.O_CLOEXEC)
            except OSError as e:
                raise _system(e, f"cannot open volume '{facts.path}'") from e
            return fd, facts.path


def _allocation(facts: _VolFacts) -> int:
    return 0 if facts.type == VOL_DIR else facts.st.st_blocks * 512


def _chain(path: str) -> list[str]:
    """The real paths of an image and of the backing files its headers name, in order (at most
    :data:`_MAX_CHAIN` deep; a missing or unreadable file ends the chain)."""
    chain: list[str] = []
    current: str | None = path
    while current is not None and len(chain) < _MAX_CHAIN:
        real = os.path.realpath(current)
        if real in chain:
            break
        chain.append(real)
        try:
            st = os.stat(real)
        except OSError:
            break
        backing = images.probe(real, st.st_size).backing if stat.S_ISREG(st.st_mode) else None
        if backing is None or "://" in backing or backing.startswith("json:"):
            break  # a network source is no file of a pool
        current = os.path.join(os.path.dirname(current), backing)  # as QEMU resolves it
    return chain


def _timestamps(st: os.stat_result) -> Timestamps:
    def ts(ns: int) -> str:
        return f"{ns // 10**9}.{ns % 10**9:09d}"

    return Timestamps(atime=ts(st.st_atime_ns), mtime=ts(st.st_mtime_ns), ctime=ts(st.st_ctime_ns), btime="0")


def _make_raw(path: str, capacity: int, allocation: int | None, metadata_only: bool) -> None:
    """A raw file as libvirt makes one: preallocated up to ``allocation`` (the whole capacity when
    the XML names none), sparse beyond."""
    alloc = capacity if allocation is None else min(allocation, capacity)
    try:
        with open(path, "r+b") as f:
            if alloc and not metadata_only:
                os.posix_fallocate(f.fileno(), 0, alloc)
            os.ftruncate(f.fileno(), capacity)
    except OSError as e:
        raise _system(e, f"cannot allocate {alloc} bytes in file '{path}'") from e


def _copy_raw(source: str, dest: str, capacity: int) -> None:
    """Copy a raw volume's bytes and extend to ``capacity`` if that is larger."""
    try:
        with open(source, "rb") as fin, open(dest, "r+b") as fout:
            st = os.fstat(fin.fileno())
            size = st.st_size
            # a sparse source stays sparse; a fully allocated one is copied whole, as libvirt does
            sparse = st.st_blocks * 512 < size
            zero = bytes(_COPY_CHUNK)
            while True:
                chunk = fin.read(_COPY_CHUNK)
                if not chunk:
                    break
                if sparse and chunk == zero[:len(chunk)]:
                    fout.seek(len(chunk), os.SEEK_CUR)
                else:
                    fout.write(chunk)
            os.ftruncate(fout.fileno(), max(size, capacity))
    except OSError as e:
        raise _system(e, f"failed to copy '{source}' to '{dest}'") from e


def _zero(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _zero_fd(fd, size)
    finally:
        os.close(fd)


def _zero_fd(fd: int, size: int) -> None:
    """Write ``size`` zero bytes from the start of ``fd`` and sync them."""
    chunk = bytes(_COPY_CHUNK)
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left > 0:
        left -= os.write(fd, chunk[:min(left, _COPY_CHUNK)])
    os.fdatasync(fd)


# One storage driver per QEMU driver instance, living as long as it does.
_drivers: weakref.WeakKeyDictionary[QemuDriver, StorageDriver] = weakref.WeakKeyDictionary()
_drivers_lock = threading.Lock()


def driver_for(qemu: QemuDriver) -> StorageDriver:
    """The storage driver of the instance ``qemu`` drives, made (and autostarted) on first use."""
    with _drivers_lock:
        found = _drivers.get(qemu)
        if found is None:
            found = _drivers[qemu] = StorageDriver(storage_paths(qemu.paths), qemu)
            found.autostart_once()
        return found
