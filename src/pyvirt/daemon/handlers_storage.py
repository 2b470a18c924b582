# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's handlers for the storage procedures (:mod:`pyvirt.rpc.procedures_storage`), each a
call on pyvirt's storage API (:mod:`pyvirt.storage.api`) of the client's connection.

A pool arrives as (name, uuid) and is found again by its UUID, as libvirt's storage driver finds
it (a pool undefined and defined anew under the same name is another pool); a volume arrives as
(pool, name, key) and is found by name in its pool. Errors are the API's, in VIR_FROM_STORAGE.

Volume upload and download run over the daemon's data streams (:mod:`pyvirt.daemon.streams`).
A regular file cannot be watched by the event loop, so a thread copies between the volume's file
and a pipe whose other end is the stream's endpoint; an upload is complete (its data on disk)
before the client's finish is acknowledged.
"""

from __future__ import annotations

import os
import threading
import uuid as _uuid
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.dispatch import ClientSession, rpc_error
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.daemon.streams import FdEndpoint, open_stream
from pyvirt.errors import PyvirtError
from pyvirt.rpc.procedures_storage import POOL_LIST_MAX, VOL_LIST_MAX

if TYPE_CHECKING:
    from pyvirt.storage.api import virStoragePool, virStorageVol

__all__: list[str] = []

_h = HANDLERS.register
_CHUNK = 1 << 18


# ---- wire <-> API -----------------------------------------------------------------------------

def _wire_pool(pool: virStoragePool) -> dict[str, Any]:
    return {"name": pool.name(), "uuid": pool.UUID()}


def _wire_vol(vol: virStorageVol) -> dict[str, Any]:
    return {"pool": vol._ref.pool, "name": vol.name(), "key": vol.key()}


def _pool(session: ClientSession, wire: Any) -> virStoragePool:
    conn = session.require_conn()
    try:
        return conn.storagePoolLookupByUUID(bytes(wire.uuid))
    except PyvirtError as exc:
        if exc.code != codes.VIR_ERR_NO_STORAGE_POOL:
            raise
        detail = f"no storage pool with matching uuid '{_uuid.UUID(bytes=bytes(wire.uuid))}' ({wire.name})"
        raise PyvirtError(f"Storage pool not found: {detail}", code=codes.VIR_ERR_NO_STORAGE_POOL,
                          domain=codes.VIR_FROM_STORAGE, str1="Storage pool not found: %s",
                          str2=detail) from exc


def _vol(session: ClientSession, wire: Any) -> virStorageVol:
    pool = session.require_conn().storagePoolLookupByName(wire.pool)
    return pool.storageVolLookupByName(wire.name)


def _check_max(value: int, limit: int, what: str) -> None:
    if value < 0:
        raise rpc_error(f"{what} must be non-negative")
    if value > limit:
        raise rpc_error(f"{what} > {limit}")


# ---- the connection's pools --------------------------------------------------------------------

@_h("CONNECT_NUM_OF_STORAGE_POOLS", inline_when_idle=True)
def num_of_pools(session: ClientSession, args: None) -> Any:
    return {"num": session.require_conn().numOfStoragePools()}


@_h("CONNECT_NUM_OF_DEFINED_STORAGE_POOLS", inline_when_idle=True)
def num_of_defined_pools(session: ClientSession, args: None) -> Any:
    return {"num": session.require_conn().numOfDefinedStoragePools()}


@_h("CONNECT_LIST_STORAGE_POOLS", inline_when_idle=True)
def list_pools(session: ClientSession, args: Any) -> Any:
    _check_max(args.maxnames, POOL_LIST_MAX, "maxnames")
    return {"names": session.require_conn().listStoragePools()[:args.maxnames]}


@_h("CONNECT_LIST_DEFINED_STORAGE_POOLS", inline_when_idle=True)
def list_defined_pools(session: ClientSession, args: Any) -> Any:
    _check_max(args.maxnames, POOL_LIST_MAX, "maxnames")
    return {"names": session.require_conn().listDefinedStoragePools()[:args.maxnames]}


@_h("CONNECT_LIST_ALL_STORAGE_POOLS", inline_when_idle=True)
def list_all_pools(session: ClientSession, args: Any) -> Any:
    pools = session.require_conn().listAllStoragePools(args.flags)
    if len(pools) > POOL_LIST_MAX:
        raise rpc_error(f"Too many storage pools '{len(pools)}' for limit '{POOL_LIST_MAX}'")
    return {"pools": [_wire_pool(p) for p in pools] if args.need_results else [], "ret": len(pools)}


# ---- pools --------------------------------------------------------------------------------------

@_h("STORAGE_POOL_DEFINE_XML")
def pool_define_xml(session: ClientSession, args: Any) -> Any:
    return {"pool": _wire_pool(session.require_conn().storagePoolDefineXML(args.xml, args.flags))}


@_h("STORAGE_POOL_CREATE_XML")
def pool_create_xml(session: ClientSession, args: Any) -> Any:
    return {"pool": _wire_pool(session.require_conn().storagePoolCreateXML(args.xml, args.flags))}


@_h("STORAGE_POOL_LOOKUP_BY_NAME", inline_when_idle=True)
def pool_lookup_by_name(session: ClientSession, args: Any) -> Any:
    return {"pool": _wire_pool(session.require_conn().storagePoolLookupByName(args.name))}


@_h("STORAGE_POOL_LOOKUP_BY_UUID", inline_when_idle=True)
def pool_lookup_by_uuid(session: ClientSession, args: Any) -> Any:
    return {"pool": _wire_pool(session.require_conn().storagePoolLookupByUUID(bytes(args.uuid)))}


@_h("STORAGE_POOL_LOOKUP_BY_VOLUME")
def pool_lookup_by_volume(session: ClientSession, args: Any) -> Any:
    return {"pool": _wire_pool(_vol(session, args.vol).storagePoolLookupByVolume())}


@_h("STORAGE_POOL_CREATE")
def pool_create(session: ClientSession, args: Any) -> Any:
    _pool(session, args.pool).create(args.flags)


@_h("STORAGE_POOL_BUILD")
def pool_build(session: ClientSession, args: Any) -> Any:
    _pool(session, args.pool).build(args.flags)


@_h("STORAGE_POOL_DESTROY")
def pool_destroy(session: ClientSession, args: Any) -> Any:
    _pool(session, args.pool).destroy()


@_h("STORAGE_POOL_DELETE")
def pool_delete(session: ClientSession, args: Any) -> Any:
    _pool(session, args.pool).delete(args.flags)


@_h("STORAGE_POOL_UNDEFINE")
def pool_undefine(session: ClientSession, args: Any) -> Any:
    _pool(session, args.pool).undefine()


@_h("STORAGE_POOL_REFRESH")
def pool_refresh(session: ClientSession, args: Any) -> Any:
    _pool(session, args.pool).refresh(args.flags)


@_h("STORAGE_POOL_GET_INFO")
def pool_get_info(session: ClientSession, args: Any) -> Any:
    state, capacity, allocation, available = _pool(session, args.pool).info()
    return {"state": state, "capacity": capacity, "allocation": allocation, "available": available}


@_h("STORAGE_POOL_GET_XML_DESC")
def pool_get_xml_desc(session: ClientSession, args: Any) -> Any:
    return {"xml": _pool(session, args.pool).XMLDesc(args.flags)}


@_h("STORAGE_POOL_GET_AUTOSTART", inline_when_idle=True)
def pool_get_autostart(session: ClientSession, args: Any) -> Any:
    return {"autostart": _pool(session, args.pool).autostart()}


@_h("STORAGE_POOL_SET_AUTOSTART")
def pool_set_autostart(session: ClientSession, args: Any) -> Any:
    _pool(session, args.pool).setAutostart(args.autostart)


@_h("STORAGE_POOL_IS_ACTIVE", inline_when_idle=True)
def pool_is_active(session: ClientSession, args: Any) -> Any:
    return {"active": _pool(session, args.pool).isActive()}


@_h("STORAGE_POOL_IS_PERSISTENT", inline_when_idle=True)
def pool_is_persistent(session: ClientSession, args: Any) -> Any:
    return {"persistent": _pool(session, args.pool).isPersistent()}


@_h("STORAGE_POOL_NUM_OF_VOLUMES")
def pool_num_of_volumes(session: ClientSession, args: Any) -> Any:
    return {"num": _pool(session, args.pool).numOfVolumes()}


@_h("STORAGE_POOL_LIST_VOLUMES")
def pool_list_volumes(session: ClientSession, args: Any) -> Any:
    _check_max(args.maxnames, VOL_LIST_MAX, "maxnames")
    return {"names": _pool(session, args.pool).listVolumes()[:args.maxnames]}


@_h("STORAGE_POOL_LIST_ALL_VOLUMES")
def pool_list_all_volumes(session: ClientSession, args: Any) -> Any:
    vols = _pool(session, args.pool).listAllVolumes(args.flags)
    if len(vols) > VOL_LIST_MAX:
        raise rpc_error(f"Too many storage volumes '{len(vols)}' for limit '{VOL_LIST_MAX}'")
    return {"vols": [_wire_vol(v) for v in vols] if args.need_results else [], "ret": len(vols)}


# ---- volumes ------------------------------------------------------------------------------------

@_h("STORAGE_VOL_CREATE_XML")
def vol_create_xml(session: ClientSession, args: Any) -> Any:
    return {"vol": _wire_vol(_pool(session, args.pool).createXML(args.xml, args.flags))}


@_h("STORAGE_VOL_CREATE_XML_FROM")
def vol_create_xml_from(session: ClientSession, args: Any) -> Any:
    source = _vol(session, args.clonevol)
    return {"vol": _wire_vol(_pool(session, args.pool).createXMLFrom(args.xml, source, args.flags))}


@_h("STORAGE_VOL_LOOKUP_BY_NAME", inline_when_idle=True)
def vol_lookup_by_name(session: ClientSession, args: Any) -> Any:
    return {"vol": _wire_vol(_pool(session, args.pool).storageVolLookupByName(args.name))}


@_h("STORAGE_VOL_LOOKUP_BY_KEY", inline_when_idle=True)
def vol_lookup_by_key(session: ClientSession, args: Any) -> Any:
    return {"vol": _wire_vol(session.require_conn().storageVolLookupByKey(args.key))}


@_h("STORAGE_VOL_LOOKUP_BY_PATH", inline_when_idle=True)
def vol_lookup_by_path(session: ClientSession, args: Any) -> Any:
    return {"vol": _wire_vol(session.require_conn().storageVolLookupByPath(args.path))}


@_h("STORAGE_VOL_GET_INFO")
def vol_get_info(session: ClientSession, args: Any) -> Any:
    kind, capacity, allocation = _vol(session, args.vol).info()
    return {"type": kind, "capacity": capacity, "allocation": allocation}


@_h("STORAGE_VOL_GET_XML_DESC")
def vol_get_xml_desc(session: ClientSession, args: Any) -> Any:
    return {"xml": _vol(session, args.vol).XMLDesc(args.flags)}


@_h("STORAGE_VOL_GET_PATH", inline_when_idle=True)
def vol_get_path(session: ClientSession, args: Any) -> Any:
    return {"name": _vol(session, args.vol).path()}


@_h("STORAGE_VOL_DELETE")
def vol_delete(session: ClientSession, args: Any) -> Any:
    _vol(session, args.vol).delete(args.flags)


@_h("STORAGE_VOL_WIPE")
def vol_wipe(session: ClientSession, args: Any) -> Any:
    _vol(session, args.vol).wipe(args.flags)


@_h("STORAGE_VOL_WIPE_PATTERN")
def vol_wipe_pattern(session: ClientSession, args: Any) -> Any:
    _vol(session, args.vol).wipePattern(args.algorithm, args.flags)


@_h("STORAGE_VOL_RESIZE")
def vol_resize(session: ClientSession, args: Any) -> Any:
    _vol(session, args.vol).resize(args.capacity, args.flags)


# ---- upload and download ------------------------------------------------------------------------

class _UploadEndpoint(FdEndpoint):
    """The write end of a pipe; a thread moves what arrives into the volume's file."""

    def __init__(self, wfd: int, name: str, copier: threading.Thread, errors: list[OSError]) -> None:
        super().__init__(wfd, name, readable=False, writable=True)
        self._copier = copier
        self._errors = errors

    def finish(self) -> None:
        super().finish()  # EOF for the copier
        self._copier.join()
        if self._errors:
            e = self._errors[0]
            raise PyvirtError(f"cannot write to volume {self.name}: {e.strerror}",
                              code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_STORAGE)

    def abort(self) -> None:
        super().abort()
        self._copier.join()


def _open_volume(session: ClientSession, wire: Any, flags: int, api: str, *, write: bool) -> tuple[int, str]:
    from pyvirt.storage.driver import check_flags, driver_for

    conn = session.require_conn()
    conn._check_writable(api, codes.VIR_FROM_STORAGE)
    check_flags(flags, 1, "storageVolUpload" if write else "storageVolDownload")  # *_SPARSE_STREAM
    vol = _vol(session, wire)
    return driver_for(conn.driver).open_volume(vol._ref, write=write)


@_h("STORAGE_VOL_UPLOAD")
def vol_upload(session: ClientSession, args: Any) -> Any:
    fd, path = _open_volume(session, args.vol, args.flags, "virStorageVolUpload", write=True)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    errors: list[OSError] = []
    offset, length = args.offset, args.length

    def copy() -> None:
        pos, left = offset, length or -1
        try:
            while left != 0:
                data = os.read(rfd, _CHUNK if left < 0 else min(left, _CHUNK))
                if not data:
                    break
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, pos)
                    pos += n
                    view = view[n:]
                if left > 0:
                    left -= len(data)
            os.fsync(fd)
        except OSError as e:
            errors.append(e)
        finally:
            os.close(fd)
            os.close(rfd)

    copier = threading.Thread(target=copy, name="pyvirtd-vol-upload", daemon=True)
    copier.start()
    open_stream(session, _UploadEndpoint(wfd, path, copier, errors))


@_h("STORAGE_VOL_DOWNLOAD")
def vol_download(session: ClientSession, args: Any) -> Any:
    fd, path = _open_volume(session, args.vol, args.flags, "virStorageVolDownload", write=False)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    offset, length = args.offset, args.length

    def copy() -> None:
        pos, left = offset, length or -1
        try:
            while left != 0:
                data = os.pread(fd, _CHUNK if left < 0 else min(left, _CHUNK), pos)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    view = view[os.write(wfd, view):]
                pos += len(data)
                if left > 0:
                    left -= len(data)
        except OSError:
            pass  # the reader went away (an abort): nothing more to give
        finally:
            os.close(fd)
            os.close(wfd)

    threading.Thread(target=copy, name="pyvirtd-vol-download", daemon=True).start()
    open_stream(session, FdEndpoint(rfd, path, readable=True, writable=False))
