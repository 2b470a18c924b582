# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's storage API on an in-process connection: the methods :class:`pyvirt.connection.virConnect`
inherits from :class:`StorageConnectMethods` (storagePoolDefineXML, storageVolLookupByPath...), and
the ``virStoragePool`` and ``virStorageVol`` handles, over :mod:`pyvirt.storage.driver`.

As libvirt's public API layer (libvirt-storage.c): a read-only connection may look pools and
volumes up, list them and read their XML and info, but changes nothing; a malformed UUID string is
an invalid argument. Errors are in VIR_FROM_STORAGE.

Uploads and downloads go through a :class:`pyvirt.stream.virStream` attached to the volume's file
(a download of a given length through a pipe fed by a thread, so the stream ends where asked).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.storage.driver import PoolRef, StorageDriver, VolRef
    from pyvirt.stream import virStream

__all__ = ["StorageConnectMethods", "virStoragePool", "virStorageVol"]


def _driver(conn: virConnect) -> StorageDriver:
    from pyvirt.storage.driver import driver_for

    return driver_for(conn.driver)


def _writable(conn: virConnect, function: str) -> None:
    conn._check_writable(function, codes.VIR_FROM_STORAGE)


def _uuid_text(uuid: str, function: str) -> str:
    try:
        import uuid as _uuid  # lazily: this mixin loads with every connection
        return str(_uuid.UUID(hex=uuid.replace("-", ""))) if isinstance(uuid, str) else ""
    except ValueError:
        raise PyvirtError(f"uuidstr in {function} must be a valid UUID", code=codes.VIR_ERR_INVALID_ARG,
                          domain=codes.VIR_FROM_STORAGE) from None


class virStoragePool:  # noqa: N801 - libvirt-python's name
    """A handle on a pool: its name and UUID as they were when it was looked up (libvirt's
    virStoragePool caches them too); the other calls reach the driver."""

    def __init__(self, conn: virConnect, ref: PoolRef) -> None:
        self._conn = conn
        self._ref = ref

    def __repr__(self) -> str:
        return f"<pyvirt.virStoragePool {self._ref.name}>"

    def _d(self) -> StorageDriver:
        return _driver(self._conn)

    def connect(self) -> virConnect:
        return self._conn

    def name(self) -> str:
        return self._ref.name

    def UUID(self) -> bytes:  # noqa: N802
        import uuid as _uuid  # lazily: this mixin loads with every connection
        return _uuid.UUID(self._ref.uuid).bytes

    def UUIDString(self) -> str:  # noqa: N802
        return self._ref.uuid

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return self._d().xml_desc(self._ref.name, flags)

    def info(self) -> list[int]:
        return self._d().info(self._ref.name)

    def isActive(self) -> int:  # noqa: N802
        return int(self._d().is_active(self._ref.name))

    def isPersistent(self) -> int:  # noqa: N802
        return int(self._d().is_persistent(self._ref.name))

    def autostart(self) -> int:
        self._d().lookup_name(self._ref.name)
        return int(self._d().autostart(self._ref.name))

    def setAutostart(self, autostart: int) -> int:  # noqa: N802
        _writable(self._conn, "virStoragePoolSetAutostart")
        self._d().set_autostart(self._ref.name, bool(autostart))
        return 0

    def create(self, flags: int = 0) -> int:
        _writable(self._conn, "virStoragePoolCreate")
        self._d().start(self._ref.name, flags)
        return 0

    def build(self, flags: int = 0) -> int:
        _writable(self._conn, "virStoragePoolBuild")
        self._d().build(self._ref.name, flags)
        return 0

    def destroy(self) -> int:
        _writable(self._conn, "virStoragePoolDestroy")
        self._d().destroy(self._ref.name)
        return 0

    def delete(self, flags: int = 0) -> int:
        _writable(self._conn, "virStoragePoolDelete")
        self._d().delete(self._ref.name, flags)
        return 0

    def refresh(self, flags: int = 0) -> int:
        _writable(self._conn, "virStoragePoolRefresh")
        self._d().refresh(self._ref.name, flags)
        return 0

    def undefine(self) -> int:
        _writable(self._conn, "virStoragePoolUndefine")
        self._d().undefine(self._ref.name)
        return 0

    # -- volumes --------------------------------------------------------------------------------

    def listAllVolumes(self, flags: int = 0) -> list[virStorageVol]:  # noqa: N802
        from pyvirt.storage.driver import check_flags

        check_flags(flags, 0, "storagePoolListAllVolumes")
        return [virStorageVol(self._conn, ref) for ref in self._d().list_volumes(self._ref.name)]

    def listVolumes(self) -> list[str]:  # noqa: N802
        return [ref.name for ref in self._d().list_volumes(self._ref.name)]

    def numOfVolumes(self) -> int:  # noqa: N802
        return len(self._d().list_volumes(self._ref.name))

    def storageVolLookupByName(self, name: str) -> virStorageVol:  # noqa: N802
        return virStorageVol(self._conn, self._d().lookup_volume(self._ref.name, name))

    def createXML(self, xmlDesc: str, flags: int = 0) -> virStorageVol:  # noqa: N802, N803
        _writable(self._conn, "virStorageVolCreateXML")
        return virStorageVol(self._conn, self._d().create_volume(self._ref.name, xmlDesc, flags))

    def createXMLFrom(self, xmlDesc: str, clonevol: virStorageVol, flags: int = 0) -> virStorageVol:  # noqa: N802, N803
        _writable(self._conn, "virStorageVolCreateXMLFrom")
        if not isinstance(clonevol, virStorageVol):
            raise PyvirtError("invalid storage volume pointer in virStorageVolCreateXMLFrom",
                              code=codes.VIR_ERR_INVALID_STORAGE_VOL, domain=codes.VIR_FROM_STORAGE)
        ref = self._d().create_volume(self._ref.name, xmlDesc, flags, source=clonevol._ref)
        return virStorageVol(self._conn, ref)


class virStorageVol:  # noqa: N801 - libvirt-python's name
    def __init__(self, conn: virConnect, ref: VolRef) -> None:
        self._conn = conn
        self._ref = ref

    def __repr__(self) -> str:
        return f"<pyvirt.virStorageVol {self._ref.key}>"

    def _d(self) -> StorageDriver:
        return _driver(self._conn)

    def connect(self) -> virConnect:
        return self._conn

    def name(self) -> str:
        return self._ref.name

    def key(self) -> str:
        return self._ref.key

    def path(self) -> str:
        self._d().lookup_volume(self._ref.pool, self._ref.name)
        return self._ref.key  # a dir pool's volume key is its path

    def info(self) -> list[int]:
        return self._d().vol_info(self._ref)

    def getInfoFlags(self, flags: int = 0) -> list[int]:  # noqa: N802
        from pyvirt.storage.driver import check_flags

        check_flags(flags, 1, "storageVolGetInfoFlags")  # VIR_STORAGE_VOL_GET_PHYSICAL
        return self._d().vol_info(self._ref)

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return self._d().vol_xml(self._ref, flags)

    def storagePoolLookupByVolume(self) -> virStoragePool:  # noqa: N802
        return virStoragePool(self._conn, self._d().lookup_name(self._ref.pool))

    def delete(self, flags: int = 0) -> int:
        _writable(self._conn, "virStorageVolDelete")
        self._d().delete_volume(self._ref, flags)
        return 0

    def wipe(self, flags: int = 0) -> int:
        _writable(self._conn, "virStorageVolWipe")
        self._d().wipe_volume(self._ref, 0, flags)
        return 0

    def wipePattern(self, algorithm: int, flags: int = 0) -> int:  # noqa: N802
        _writable(self._conn, "virStorageVolWipePattern")
        self._d().wipe_volume(self._ref, algorithm, flags)
        return 0

    def resize(self, capacity: int, flags: int = 0) -> int:
        _writable(self._conn, "virStorageVolResize")
        self._d().resize_volume(self._ref, capacity, flags)
        return 0

    def upload(self, stream: virStream, offset: int, length: int, flags: int = 0) -> int:
        """Attach ``stream`` to the volume's file at ``offset``: what is sent is written there."""
        from pyvirt.storage.driver import VOL_UPLOAD_SPARSE_STREAM, check_flags

        _writable(self._conn, "virStorageVolUpload")
        check_flags(flags, VOL_UPLOAD_SPARSE_STREAM, "storageVolUpload")
        fd, path = self._d().open_volume(self._ref, write=True)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
        except OSError:
            os.close(fd)
            raise
        stream._attach(fd, path)
        return 0

    def download(self, stream: virStream, offset: int, length: int, flags: int = 0) -> int:
        """Attach ``stream`` to the volume's data from ``offset``, ``length`` bytes (0: to the end)."""
        from pyvirt.storage.driver import VOL_DOWNLOAD_SPARSE_STREAM, check_flags

        _writable(self._conn, "virStorageVolDownload")
        check_flags(flags, VOL_DOWNLOAD_SPARSE_STREAM, "storageVolDownload")
        fd, path = self._d().open_volume(self._ref, write=False)
        if not length:
            try:
                os.lseek(fd, offset, os.SEEK_SET)
            except OSError:
                os.close(fd)
                raise
            stream._attach(fd, path)
            return 0
        rfd, wfd = os.pipe2(os.O_CLOEXEC)

        def feed() -> None:
            try:
                left = length
                pos = offset
                while left > 0:
                    chunk = os.pread(fd, min(left, 1 << 16), pos)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        n = os.write(wfd, view)
                        view = view[n:]
                    left -= len(chunk)
                    pos += len(chunk)
            except OSError:
                pass  # the reader went away (abort): nothing more to give
            finally:
                os.close(fd)
                os.close(wfd)

        threading.Thread(target=feed, name="pyvirt-vol-download", daemon=True).start()
        stream._attach(rfd, path)
        return 0


class StorageConnectMethods:
    """virConnect's storage methods (a mixin: no state of its own; imports stay lazy)."""

    def storagePoolDefineXML(self: Any, xml: str, flags: int = 0) -> virStoragePool:  # noqa: N802
        _writable(self, "virStoragePoolDefineXML")
        return virStoragePool(self, _driver(self).define_xml(xml, flags))

    def storagePoolCreateXML(self: Any, xmlDesc: str, flags: int = 0) -> virStoragePool:  # noqa: N802, N803
        _writable(self, "virStoragePoolCreateXML")
        return virStoragePool(self, _driver(self).create_xml(xmlDesc, flags))

    def storagePoolLookupByName(self: Any, name: str) -> virStoragePool:  # noqa: N802
        return virStoragePool(self, _driver(self).lookup_name(name))

    def storagePoolLookupByUUIDString(self: Any, uuidstr: str) -> virStoragePool:  # noqa: N802
        text = _uuid_text(uuidstr, "virStoragePoolLookupByUUIDString")
        return virStoragePool(self, _driver(self).lookup_uuid(text))

    def storagePoolLookupByUUID(self: Any, uuid: bytes) -> virStoragePool:  # noqa: N802
        if not isinstance(uuid, bytes | bytearray) or len(uuid) != 16:
            raise PyvirtError("uuid in virStoragePoolLookupByUUID must be 16 bytes (a UUID's raw form; use "
                              "storagePoolLookupByUUIDString for its text)", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_STORAGE)
        import uuid as _uuid  # lazily: this mixin loads with every connection
        return virStoragePool(self, _driver(self).lookup_uuid(str(_uuid.UUID(bytes=bytes(uuid)))))

    def storagePoolLookupByVolume(self: Any, vol: virStorageVol) -> virStoragePool:  # noqa: N802
        return vol.storagePoolLookupByVolume()

    def listAllStoragePools(self: Any, flags: int = 0) -> list[virStoragePool]:  # noqa: N802
        return [virStoragePool(self, ref) for ref in _driver(self).list_all(flags)]

    def storagePoolEventRegisterAny(self: Any, pool: virStoragePool | None, eventID: int,  # noqa: N802, N803
                                    cb: Any, opaque: Any) -> int:
        """Lifecycle ``cb(conn, pool, event, detail, opaque)`` and refresh ``cb(conn, pool, opaque)``
        events of ``pool`` (None: every pool), on pyvirt's event thread (:mod:`pyvirt.object_events`)."""
        from pyvirt import object_events

        object_events.check_pool_event_id(eventID)  # a bad id changes nothing, even here
        _driver(self)  # pools autostart when the driver is made: before, not after
        return object_events.register_pool(self, pool, eventID, cb, opaque)

    def storagePoolEventDeregisterAny(self: Any, callbackID: int) -> None:  # noqa: N802, N803
        """None, as libvirt-python's."""
        from pyvirt import object_events

        object_events.deregister(self, "pool", callbackID)

    def listStoragePools(self: Any) -> list[str]:  # noqa: N802
        return [ref.name for ref in _driver(self).list_all(2)]  # active

    def listDefinedStoragePools(self: Any) -> list[str]:  # noqa: N802
        return [ref.name for ref in _driver(self).list_all(1)]  # inactive

    def numOfStoragePools(self: Any) -> int:  # noqa: N802
        return len(_driver(self).list_all(2))

    def numOfDefinedStoragePools(self: Any) -> int:  # noqa: N802
        return len(_driver(self).list_all(1))

    def storageVolLookupByPath(self: Any, path: str) -> virStorageVol:  # noqa: N802
        return virStorageVol(self, _driver(self).lookup_path(path))

    def storageVolLookupByKey(self: Any, key: str) -> virStorageVol:  # noqa: N802
        return virStorageVol(self, _driver(self).lookup_path(key, what="key"))
