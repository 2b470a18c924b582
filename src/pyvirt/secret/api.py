# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt-python's secret API over :mod:`pyvirt.secret.driver`: ``virSecret`` and the calls that
:class:`pyvirt.connection.virConnect` forwards here (secretDefineXML, secretLookupBy*,
listAllSecrets, listSecrets, numOfSecrets).

As libvirt's public API layer (libvirt-secret.c): a read-only connection may look secrets up and
read their XML, but not define, undefine, set or read values; a malformed UUID string is an invalid
argument. Errors are in VIR_FROM_SECRET.
"""

from __future__ import annotations

import uuid as _uuid
from typing import TYPE_CHECKING

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.secret.driver import SecretDriver, SecretRef, driver_for

if TYPE_CHECKING:
    from pyvirt.connection import virConnect

__all__ = ["virSecret", "define_xml", "lookup_uuid", "lookup_uuid_string", "lookup_usage", "list_all",
           "list_uuids", "count"]


def _driver(conn: virConnect) -> SecretDriver:
    return driver_for(conn.driver)


def _writable(conn: virConnect, function: str) -> None:
    conn._check_writable(function, codes.VIR_FROM_SECRET)


class virSecret:  # noqa: N801 - libvirt-python's name
    """A handle on a secret: its UUID and usage as they were when it was looked up (libvirt's
    virSecret caches them too); the other calls reach the driver and fail once it is undefined."""

    def __init__(self, conn: virConnect, ref: SecretRef) -> None:
        self._conn = conn
        self._ref = ref

    def __repr__(self) -> str:
        return f"<pyvirt.virSecret {self._ref.uuid}>"

    def connect(self) -> virConnect:
        return self._conn

    def UUID(self) -> bytes:  # noqa: N802
        return _uuid.UUID(self._ref.uuid).bytes

    def UUIDString(self) -> str:  # noqa: N802
        return self._ref.uuid

    def usageType(self) -> int:  # noqa: N802
        return self._ref.usage_type

    def usageID(self) -> str:  # noqa: N802
        return self._ref.usage_id

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return _driver(self._conn).xml_desc(self._ref.uuid, flags)

    def setValue(self, value: bytes | bytearray | memoryview, flags: int = 0) -> int:  # noqa: N802
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"setValue: the value must be bytes, not {type(value).__name__}")
        _writable(self._conn, "virSecretSetValue")
        _driver(self._conn).set_value(self._ref.uuid, bytes(value), flags)
        return 0

    def value(self, flags: int = 0) -> bytes:
        _writable(self._conn, "virSecretGetValue")
        return _driver(self._conn).get_value(self._ref.uuid, flags)

    def undefine(self) -> int:
        _writable(self._conn, "virSecretUndefine")
        _driver(self._conn).undefine(self._ref.uuid)
        return 0


def define_xml(conn: virConnect, xml: str, flags: int = 0) -> virSecret:
    _writable(conn, "virSecretDefineXML")
    return virSecret(conn, _driver(conn).define_xml(xml, flags))


def lookup_uuid_string(conn: virConnect, uuid: str) -> virSecret:
    try:
        canonical = str(_uuid.UUID(hex=uuid.replace("-", ""))) if isinstance(uuid, str) else ""
    except ValueError:
        canonical = ""
    if not canonical:
        raise PyvirtError("uuidstr in virSecretLookupByUUIDString must be a valid UUID",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_SECRET)
    return virSecret(conn, _driver(conn).lookup_uuid(canonical))


def lookup_uuid(conn: virConnect, uuid: bytes) -> virSecret:
    if not isinstance(uuid, bytes | bytearray) or len(uuid) != 16:
        raise PyvirtError("uuid in virSecretLookupByUUID must be 16 bytes (a UUID's raw form; use "
                          "secretLookupByUUIDString for its text)", code=codes.VIR_ERR_INVALID_ARG,
                          domain=codes.VIR_FROM_SECRET)
    return virSecret(conn, _driver(conn).lookup_uuid(str(_uuid.UUID(bytes=bytes(uuid)))))


def lookup_usage(conn: virConnect, usage_type: int, usage_id: str) -> virSecret:
    return virSecret(conn, _driver(conn).lookup_usage(usage_type, usage_id))


def list_all(conn: virConnect, flags: int = 0) -> list[virSecret]:
    return [virSecret(conn, ref) for ref in _driver(conn).list_all(flags)]


def list_uuids(conn: virConnect) -> list[str]:
    return [ref.uuid for ref in _driver(conn).list_all()]


def count(conn: virConnect) -> int:
    return len(_driver(conn).list_all())
