# SPDX-License-Identifier: LGPL-2.1-or-later
"""The secret methods of pyvirt's RPC client: :class:`pyvirt.remote.RemoteConnect` inherits them from
:class:`RemoteSecretMethods`; they return :class:`RemoteSecret` handles.

As libvirt's remote driver, the client keeps what ``remote_nonnull_secret`` carries (UUID, usage
type and id) and sends it back with each call on the handle; the server decides everything else,
read-only refusals included. A malformed UUID string is refused here, before any call, as libvirt's
public API does.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

__all__ = ["RemoteSecretMethods", "RemoteSecret"]


class RemoteSecretMethods:
    """RemoteConnect's secret methods (a mixin over RemoteConnect._call)."""

    def _call(self, proc: str, api: str, **fields: Any) -> Any:  # provided by RemoteConnect
        raise NotImplementedError

    def _secret(self, wire: Any) -> RemoteSecret:
        return RemoteSecret(self, wire)

    def secretDefineXML(self, xml: str, flags: int = 0) -> RemoteSecret:  # noqa: N802
        return self._secret(self._call("SECRET_DEFINE_XML", "virSecretDefineXML", xml=xml,
                                       flags=flags).secret)

    def secretLookupByUUID(self, uuid: bytes) -> RemoteSecret:  # noqa: N802
        if not isinstance(uuid, bytes | bytearray) or len(uuid) != 16:
            raise PyvirtError("invalid argument: uuid in virSecretLookupByUUID must be 16 bytes (a "
                              "UUID's raw form; use secretLookupByUUIDString for its text)",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_SECRET)
        return self._secret(self._call("SECRET_LOOKUP_BY_UUID", "virSecretLookupByUUID",
                                       uuid=bytes(uuid)).secret)

    def secretLookupByUUIDString(self, uuidstr: str) -> RemoteSecret:  # noqa: N802
        try:
            raw = uuidlib.UUID(hex=uuidstr.replace("-", "")).bytes
        except (ValueError, TypeError, AttributeError):
            raise PyvirtError("uuidstr in virSecretLookupByUUIDString must be a valid UUID",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_SECRET) from None
        return self._secret(self._call("SECRET_LOOKUP_BY_UUID", "virSecretLookupByUUIDString",
                                       uuid=raw).secret)

    def secretLookupByUsage(self, usageType: int, usageID: str) -> RemoteSecret:  # noqa: N802, N803
        return self._secret(self._call("SECRET_LOOKUP_BY_USAGE", "virSecretLookupByUsage",
                                       usageType=usageType, usageID=usageID).secret)

    def listAllSecrets(self, flags: int = 0) -> list[RemoteSecret]:  # noqa: N802
        r = self._call("CONNECT_LIST_ALL_SECRETS", "virConnectListAllSecrets", need_results=1, flags=flags)
        return [self._secret(s) for s in r.secrets]

    def listSecrets(self) -> list[str]:  # noqa: N802
        # libvirt-python asks for as many as numOfSecrets reports
        count = self.numOfSecrets()
        if count <= 0:
            return []
        return list(self._call("CONNECT_LIST_SECRETS", "virConnectListSecrets", maxuuids=count).uuids)

    def numOfSecrets(self) -> int:  # noqa: N802
        return int(self._call("CONNECT_NUM_OF_SECRETS", "virConnectNumOfSecrets").num)


class RemoteSecret:
    """A secret handle of a remote connection: UUID, usage type and usage id as the server gave them."""

    def __init__(self, conn: RemoteSecretMethods, wire: Any) -> None:
        self._conn = conn
        self._uuid = bytes(wire.uuid)
        self._usage_type = int(wire.usageType)
        self._usage_id = str(wire.usageID)

    def _wire(self) -> dict[str, Any]:
        return {"uuid": self._uuid, "usageType": self._usage_type, "usageID": self._usage_id}

    def _call(self, proc: str, api: str, **fields: Any) -> Any:
        return self._conn._call(proc, api, secret=self._wire(), **fields)

    def __repr__(self) -> str:
        return f"<pyvirt.RemoteSecret {self.UUIDString()}>"

    def connect(self) -> Any:
        return self._conn

    def UUID(self) -> bytes:  # noqa: N802
        return self._uuid

    def UUIDString(self) -> str:  # noqa: N802
        return str(uuidlib.UUID(bytes=self._uuid))

    def usageType(self) -> int:  # noqa: N802
        return self._usage_type

    def usageID(self) -> str:  # noqa: N802
        return self._usage_id

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return str(self._call("SECRET_GET_XML_DESC", "virSecretGetXMLDesc", flags=flags).xml)

    def setValue(self, value: bytes | bytearray | memoryview, flags: int = 0) -> int:  # noqa: N802
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"setValue: the value must be bytes, not {type(value).__name__}")
        self._call("SECRET_SET_VALUE", "virSecretSetValue", value=bytes(value), flags=flags)
        return 0

    def value(self, flags: int = 0) -> bytes:
        return bytes(self._call("SECRET_GET_VALUE", "virSecretGetValue", flags=flags).value)

    def undefine(self) -> int:
        self._call("SECRET_UNDEFINE", "virSecretUndefine")
        return 0
