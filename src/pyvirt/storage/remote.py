# SPDX-License-Identifier: LGPL-2.1-or-later
"""The storage methods of pyvirt's RPC client: :class:`pyvirt.remote.RemoteConnect` inherits them from
:class:`RemoteStorageMethods`; pools and volumes are :class:`RemoteStoragePool` and
:class:`RemoteStorageVol` handles, with libvirt-python's method names, each call one procedure of
:mod:`pyvirt.rpc.procedures_storage` (upload and download open the call's data stream)."""

from __future__ import annotations

import uuid as _uuid
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.remote import RemoteConnect
    from pyvirt.remote_stream import RemoteStream

__all__ = ["RemoteStorageMethods", "RemoteStoragePool", "RemoteStorageVol"]

#: how many names the legacy list calls ask for (REMOTE_STORAGE_POOL_LIST_MAX / _VOL_LIST_MAX)
_POOL_LIST_MAX = 4096
_VOL_LIST_MAX = 16384


def _uuid_text(text: str, function: str) -> bytes:
    try:
        return _uuid.UUID(hex=text.replace("-", "")).bytes
    except (ValueError, AttributeError):
        raise PyvirtError(f"uuidstr in {function} must be a valid UUID", code=codes.VIR_ERR_INVALID_ARG,
                          domain=codes.VIR_FROM_STORAGE) from None


class RemoteStoragePool:
    def __init__(self, conn: RemoteConnect, wire: Any) -> None:
        self._conn = conn
        self._name: str = wire.name
        self._uuid: bytes = bytes(wire.uuid)

    def _wire(self) -> dict[str, Any]:
        return {"name": self._name, "uuid": self._uuid}

    def _call(self, proc: str, api: str, **fields: Any) -> Any:
        return self._conn._call(proc, api, pool=self._wire(), **fields)

    def __repr__(self) -> str:
        return f"<RemoteStoragePool {self._name}>"

    def connect(self) -> RemoteConnect:
        return self._conn

    def name(self) -> str:
        return self._name

    def UUID(self) -> bytes:  # noqa: N802
        return self._uuid

    def UUIDString(self) -> str:  # noqa: N802
        return str(_uuid.UUID(bytes=self._uuid))

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return str(self._call("STORAGE_POOL_GET_XML_DESC", "virStoragePoolGetXMLDesc", flags=flags).xml)

    def info(self) -> list[int]:
        r = self._call("STORAGE_POOL_GET_INFO", "virStoragePoolGetInfo")
        return [int(r.state), int(r.capacity), int(r.allocation), int(r.available)]

    def isActive(self) -> int:  # noqa: N802
        return int(self._call("STORAGE_POOL_IS_ACTIVE", "virStoragePoolIsActive").active)

    def isPersistent(self) -> int:  # noqa: N802
        return int(self._call("STORAGE_POOL_IS_PERSISTENT", "virStoragePoolIsPersistent").persistent)

    def autostart(self) -> int:
        return int(self._call("STORAGE_POOL_GET_AUTOSTART", "virStoragePoolGetAutostart").autostart)

    def setAutostart(self, autostart: int) -> int:  # noqa: N802
        self._call("STORAGE_POOL_SET_AUTOSTART", "virStoragePoolSetAutostart", autostart=int(autostart))
        return 0

    def create(self, flags: int = 0) -> int:
        self._call("STORAGE_POOL_CREATE", "virStoragePoolCreate", flags=flags)
        return 0

    def build(self, flags: int = 0) -> int:
        self._call("STORAGE_POOL_BUILD", "virStoragePoolBuild", flags=flags)
        return 0

    def destroy(self) -> int:
        self._call("STORAGE_POOL_DESTROY", "virStoragePoolDestroy")
        return 0

    def delete(self, flags: int = 0) -> int:
        self._call("STORAGE_POOL_DELETE", "virStoragePoolDelete", flags=flags)
        return 0

    def refresh(self, flags: int = 0) -> int:
        self._call("STORAGE_POOL_REFRESH", "virStoragePoolRefresh", flags=flags)
        return 0

    def undefine(self) -> int:
        self._call("STORAGE_POOL_UNDEFINE", "virStoragePoolUndefine")
        return 0

    def listAllVolumes(self, flags: int = 0) -> list[RemoteStorageVol]:  # noqa: N802
        r = self._call("STORAGE_POOL_LIST_ALL_VOLUMES", "virStoragePoolListAllVolumes", need_results=1,
                       flags=flags)
        return [RemoteStorageVol(self._conn, v) for v in r.vols]

    def listVolumes(self) -> list[str]:  # noqa: N802
        r = self._call("STORAGE_POOL_LIST_VOLUMES", "virStoragePoolListVolumes", maxnames=_VOL_LIST_MAX)
        return list(r.names)

    def numOfVolumes(self) -> int:  # noqa: N802
        return int(self._call("STORAGE_POOL_NUM_OF_VOLUMES", "virStoragePoolNumOfVolumes").num)

    def storageVolLookupByName(self, name: str) -> RemoteStorageVol:  # noqa: N802
        r = self._call("STORAGE_VOL_LOOKUP_BY_NAME", "virStorageVolLookupByName", name=name)
        return RemoteStorageVol(self._conn, r.vol)

    def createXML(self, xmlDesc: str, flags: int = 0) -> RemoteStorageVol:  # noqa: N802, N803
        r = self._call("STORAGE_VOL_CREATE_XML", "virStorageVolCreateXML", xml=xmlDesc, flags=flags)
        return RemoteStorageVol(self._conn, r.vol)

    def createXMLFrom(self, xmlDesc: str, clonevol: RemoteStorageVol,  # noqa: N802, N803
                      flags: int = 0) -> RemoteStorageVol:
        r = self._call("STORAGE_VOL_CREATE_XML_FROM", "virStorageVolCreateXMLFrom", xml=xmlDesc,
                       clonevol=clonevol._wire(), flags=flags)
        return RemoteStorageVol(self._conn, r.vol)


class RemoteStorageVol:
    def __init__(self, conn: RemoteConnect, wire: Any) -> None:
        self._conn = conn
        self._pool: str = wire.pool
        self._name: str = wire.name
        self._key: str = wire.key

    def _wire(self) -> dict[str, Any]:
        return {"pool": self._pool, "name": self._name, "key": self._key}

    def _call(self, proc: str, api: str, **fields: Any) -> Any:
        return self._conn._call(proc, api, vol=self._wire(), **fields)

    def __repr__(self) -> str:
        return f"<RemoteStorageVol {self._key}>"

    def connect(self) -> RemoteConnect:
        return self._conn

    def name(self) -> str:
        return self._name

    def key(self) -> str:
        return self._key

    def path(self) -> str:
        return str(self._call("STORAGE_VOL_GET_PATH", "virStorageVolGetPath").name)

    def info(self) -> list[int]:
        r = self._call("STORAGE_VOL_GET_INFO", "virStorageVolGetInfo")
        return [int(r.type), int(r.capacity), int(r.allocation)]

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return str(self._call("STORAGE_VOL_GET_XML_DESC", "virStorageVolGetXMLDesc", flags=flags).xml)

    def storagePoolLookupByVolume(self) -> RemoteStoragePool:  # noqa: N802
        r = self._call("STORAGE_POOL_LOOKUP_BY_VOLUME", "virStoragePoolLookupByVolume")
        return RemoteStoragePool(self._conn, r.pool)

    def delete(self, flags: int = 0) -> int:
        self._call("STORAGE_VOL_DELETE", "virStorageVolDelete", flags=flags)
        return 0

    def wipe(self, flags: int = 0) -> int:
        self._call("STORAGE_VOL_WIPE", "virStorageVolWipe", flags=flags)
        return 0

    def wipePattern(self, algorithm: int, flags: int = 0) -> int:  # noqa: N802
        self._call("STORAGE_VOL_WIPE_PATTERN", "virStorageVolWipePattern", algorithm=algorithm, flags=flags)
        return 0

    def resize(self, capacity: int, flags: int = 0) -> int:
        self._call("STORAGE_VOL_RESIZE", "virStorageVolResize", capacity=capacity, flags=flags)
        return 0

    def _stream(self, proc: str, api: str, stream: RemoteStream, offset: int, length: int, flags: int) -> int:
        from pyvirt.remote_stream import RemoteStream
        from pyvirt.rpc.client import ConnectionClosed

        if not isinstance(stream, RemoteStream) or stream.connect() is not self._conn:
            detail = "stream must match connection of the volume's pool"
            raise PyvirtError(f"invalid argument: {detail}", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_STORAGE, str1="invalid argument: %s", str2=detail)
        stream._check_unattached()
        try:
            _, sync = self._conn._rpc().call_stream(proc, vol=self._wire(), offset=offset, length=length,
                                                    flags=flags)
        except ConnectionClosed as exc:
            raise self._conn._lost_error(api, exc) from exc
        stream._attach(sync)
        return 0

    def upload(self, stream: RemoteStream, offset: int, length: int, flags: int = 0) -> int:
        return self._stream("STORAGE_VOL_UPLOAD", "virStorageVolUpload", stream, offset, length, flags)

    def download(self, stream: RemoteStream, offset: int, length: int, flags: int = 0) -> int:
        return self._stream("STORAGE_VOL_DOWNLOAD", "virStorageVolDownload", stream, offset, length, flags)


class RemoteStorageMethods:
    """RemoteConnect's storage methods (a mixin over RemoteConnect._call)."""

    def storagePoolDefineXML(self: Any, xml: str, flags: int = 0) -> RemoteStoragePool:  # noqa: N802
        return RemoteStoragePool(self, self._call("STORAGE_POOL_DEFINE_XML", "virStoragePoolDefineXML",
                                                  xml=xml, flags=flags).pool)

    def storagePoolCreateXML(self: Any, xmlDesc: str, flags: int = 0) -> RemoteStoragePool:  # noqa: N802, N803
        return RemoteStoragePool(self, self._call("STORAGE_POOL_CREATE_XML", "virStoragePoolCreateXML",
                                                  xml=xmlDesc, flags=flags).pool)

    def storagePoolLookupByName(self: Any, name: str) -> RemoteStoragePool:  # noqa: N802
        return RemoteStoragePool(self, self._call("STORAGE_POOL_LOOKUP_BY_NAME", "virStoragePoolLookupByName",
                                                  name=name).pool)

    def storagePoolLookupByUUID(self: Any, uuid: bytes) -> RemoteStoragePool:  # noqa: N802
        return RemoteStoragePool(self, self._call("STORAGE_POOL_LOOKUP_BY_UUID", "virStoragePoolLookupByUUID",
                                                  uuid=bytes(uuid)).pool)

    def storagePoolLookupByUUIDString(self: Any, uuidstr: str) -> RemoteStoragePool:  # noqa: N802
        raw = _uuid_text(uuidstr, "virStoragePoolLookupByUUIDString")
        return RemoteStoragePool(self, self._call("STORAGE_POOL_LOOKUP_BY_UUID", "virStoragePoolLookupByUUID",
                                                  uuid=raw).pool)

    def storagePoolLookupByVolume(self: Any, vol: RemoteStorageVol) -> RemoteStoragePool:  # noqa: N802
        return vol.storagePoolLookupByVolume()

    def listAllStoragePools(self: Any, flags: int = 0) -> list[RemoteStoragePool]:  # noqa: N802
        r = self._call("CONNECT_LIST_ALL_STORAGE_POOLS", "virConnectListAllStoragePools", need_results=1,
                       flags=flags)
        return [RemoteStoragePool(self, p) for p in r.pools]

    def listStoragePools(self: Any) -> list[str]:  # noqa: N802
        return list(self._call("CONNECT_LIST_STORAGE_POOLS", "virConnectListStoragePools",
                               maxnames=_POOL_LIST_MAX).names)

    def listDefinedStoragePools(self: Any) -> list[str]:  # noqa: N802
        return list(self._call("CONNECT_LIST_DEFINED_STORAGE_POOLS", "virConnectListDefinedStoragePools",
                               maxnames=_POOL_LIST_MAX).names)

    def storagePoolEventRegisterAny(self: Any, pool: RemoteStoragePool | None, eventID: int,  # noqa: N802, N803
                                    cb: Any, opaque: Any) -> int:
        """Lifecycle ``cb(conn, pool, event, detail, opaque)`` and refresh ``cb(conn, pool, opaque)``
        events of ``pool`` (None: every pool), registered with the server."""
        from pyvirt.object_events import check_pool_event_id

        check_pool_event_id(eventID)
        return int(self._register_remote("pool", "CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY",
                                         "virConnectStoragePoolEventRegisterAny", eventID, cb, opaque,
                                         pool=pool._wire() if pool is not None else None))

    def storagePoolEventDeregisterAny(self: Any, callbackID: int) -> None:  # noqa: N802, N803
        self._deregister_remote("pool", "CONNECT_STORAGE_POOL_EVENT_DEREGISTER_ANY",
                                "virConnectStoragePoolEventDeregisterAny", callbackID)

    def numOfStoragePools(self: Any) -> int:  # noqa: N802
        return int(self._call("CONNECT_NUM_OF_STORAGE_POOLS", "virConnectNumOfStoragePools").num)

    def numOfDefinedStoragePools(self: Any) -> int:  # noqa: N802
        return int(self._call("CONNECT_NUM_OF_DEFINED_STORAGE_POOLS",
                              "virConnectNumOfDefinedStoragePools").num)

    def storageVolLookupByPath(self: Any, path: str) -> RemoteStorageVol:  # noqa: N802
        return RemoteStorageVol(self, self._call("STORAGE_VOL_LOOKUP_BY_PATH", "virStorageVolLookupByPath",
                                                 path=path).vol)

    def storageVolLookupByKey(self: Any, key: str) -> RemoteStorageVol:  # noqa: N802
        return RemoteStorageVol(self, self._call("STORAGE_VOL_LOOKUP_BY_KEY", "virStorageVolLookupByKey",
                                                 key=key).vol)
