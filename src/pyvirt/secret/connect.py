# SPDX-License-Identifier: LGPL-2.1-or-later
"""Connections of libvirt's secret driver URIs: ``secret:///embed?root=DIR``, ``secret:///system``,
``secret:///session`` (:func:`pyvirt.open` routes them here).

As with libvirt's secret driver, such a connection serves the secret API and the few calls every
driver answers (getURI, getType 'secret', getLibVersion, isAlive, isSecure, isEncrypted, close,
close callbacks); every other call of ``virConnect`` fails as libvirt's does on it: "this function is
not supported by the connection driver: virConnectListAllDomains" (VIR_ERR_NO_SUPPORT, in the
error domain of the object the call is about).

The secrets are those of the pyvirt instance of the same path and root, shared with its
``qemu:///`` connections in the process (the disks' encryption uses them): a secret connection
opens that instance as a qemu:/// connection would (one process drives an instance at a time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.secret import api

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.uri import ConnectURI

__all__ = ["SecretConnect", "open_secret", "c_api_name"]

#: calls every connection answers, whatever its driver, and the secret API
_SERVED = frozenset({
    "close", "getURI", "getLibVersion", "isAlive", "isSecure", "isEncrypted", "registerCloseCallback",
    "unregisterCloseCallback", "secretDefineXML", "secretLookupByUUID", "secretLookupByUUIDString",
    "secretLookupByUsage", "listAllSecrets", "listSecrets", "numOfSecrets",
})

# libvirt-python method -> the C function libvirt names in its error, where not virConnect<Method>
_C_NAMES = {
    "lookupByName": "virDomainLookupByName", "lookupByUUID": "virDomainLookupByUUID",
    "lookupByUUIDString": "virDomainLookupByUUIDString", "lookupByID": "virDomainLookupByID",
    "defineXML": "virDomainDefineXML", "defineXMLFlags": "virDomainDefineXMLFlags",
    "createXML": "virDomainCreateXML", "createLinux": "virDomainCreateLinux",
    "listDomainsID": "virConnectNumOfDomains", "listDefinedDomains": "virConnectNumOfDefinedDomains",
    "getInfo": "virNodeGetInfo", "getFreeMemory": "virNodeGetFreeMemory",
    "getCellsFreeMemory": "virNodeGetCellsFreeMemory", "getSecurityModel": "virNodeGetSecurityModel",
    "domainEventRegister": "virConnectDomainEventRegisterAny",
}
_OBJECT_PREFIXES = (("network", "virNetwork"), ("storagePool", "virStoragePool"),
                    ("storageVol", "virStorageVol"), ("nodeDevice", "virNodeDevice"),
                    ("interface", "virInterface"), ("nwfilter", "virNWFilter"))


def c_api_name(method: str) -> str:
    """The public C function behind a libvirt-python ``virConnect`` method."""
    if method in _C_NAMES:
        return _C_NAMES[method]
    for prefix, c_prefix in _OBJECT_PREFIXES:
        if method.startswith(prefix) and method[len(prefix):len(prefix) + 1].isupper():
            return c_prefix + method[len(prefix):]
    return "virConnect" + method[:1].upper() + method[1:]


def _error_domain(c_name: str) -> int:
    # libvirt reports from the source file of the call: libvirt-network.c, libvirt-storage.c ...;
    # the host and domain calls (libvirt-host.c, libvirt-domain.c) from VIR_FROM_DOMAIN
    for word, domain in (("Network", codes.VIR_FROM_NETWORK), ("Storage", codes.VIR_FROM_STORAGE),
                         ("NodeDevice", codes.VIR_FROM_NODEDEV), ("Interface", codes.VIR_FROM_INTERFACE),
                         ("NWFilter", codes.VIR_FROM_NWFILTER)):
        if word in c_name:
            return domain
    return codes.VIR_FROM_DOMAIN


class SecretConnect:
    """A connection of a ``secret:///`` URI: the secret API of one pyvirt instance."""

    def __init__(self, uri: ConnectURI, conn: virConnect) -> None:
        self._uri = uri
        self._conn = conn  # the instance's connection: its driver, read-only flag and lifetime

    # what pyvirt.secret.api asks of a connection
    @property
    def driver(self) -> QemuDriver:
        return self._conn.driver

    def _check_writable(self, what: str, error_domain: int | None = None) -> None:
        self._conn._check_writable(what, error_domain)

    def _api_conn(self) -> virConnect:
        return cast("virConnect", self)

    # -- every driver's calls ----------------------------------------------------------------

    def close(self) -> int:
        return self._conn.close()

    def getURI(self) -> str:  # noqa: N802
        self._conn._check_open()
        return self._uri.raw

    def getType(self) -> str:  # noqa: N802
        self._conn._check_open()
        return "secret"

    def getLibVersion(self) -> int:  # noqa: N802
        return self._conn.getLibVersion()

    def isAlive(self) -> int:  # noqa: N802
        return self._conn.isAlive()

    def isSecure(self) -> int:  # noqa: N802
        return self._conn.isSecure()

    def isEncrypted(self) -> int:  # noqa: N802
        return self._conn.isEncrypted()

    def registerCloseCallback(self, cb: Callable[..., object], opaque: object) -> int:  # noqa: N802
        return self._conn.registerCloseCallback(cb, opaque)

    def unregisterCloseCallback(self) -> None:  # noqa: N802
        self._conn.unregisterCloseCallback()

    # -- the secret API ----------------------------------------------------------------------

    def secretDefineXML(self, xml: str, flags: int = 0) -> api.virSecret:  # noqa: N802
        return api.define_xml(self._api_conn(), xml, flags)

    def secretLookupByUUIDString(self, uuidstr: str) -> api.virSecret:  # noqa: N802
        return api.lookup_uuid_string(self._api_conn(), uuidstr)

    def secretLookupByUUID(self, uuid: bytes) -> api.virSecret:  # noqa: N802
        return api.lookup_uuid(self._api_conn(), uuid)

    def secretLookupByUsage(self, usageType: int, usageID: str) -> api.virSecret:  # noqa: N802, N803
        return api.lookup_usage(self._api_conn(), usageType, usageID)

    def listAllSecrets(self, flags: int = 0) -> list[api.virSecret]:  # noqa: N802
        return api.list_all(self._api_conn(), flags)

    def listSecrets(self) -> list[str]:  # noqa: N802
        return api.list_uuids(self._api_conn())

    def numOfSecrets(self) -> int:  # noqa: N802
        return api.count(self._api_conn())

    # -- the rest: libvirt's "not supported by the connection driver" -------------------------

    def __getattr__(self, name: str) -> Any:
        from pyvirt.connection import virConnect

        if name.startswith("_") or name in _SERVED or not callable(getattr(virConnect, name, None)):
            raise AttributeError(f"'SecretConnect' object has no attribute '{name}'")
        c_name = c_api_name(name)

        def unsupported(*args: object, **kwargs: object) -> Any:
            self._conn._check_open()
            raise PyvirtError(f"this function is not supported by the connection driver: {c_name}",
                              code=codes.VIR_ERR_NO_SUPPORT, domain=_error_domain(c_name),
                              str1="this function is not supported by the connection driver: %s",
                              str2=c_name)

        unsupported.__name__ = name
        return unsupported

    def __enter__(self) -> SecretConnect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pyvirt.SecretConnect {self._uri.raw}>"


def open_secret(uri: ConnectURI, readonly: bool, instance_conn: Callable[[ConnectURI, bool], virConnect]
                ) -> SecretConnect:
    """A secret connection over ``instance_conn`` (the in-process connection of the same instance)."""
    return SecretConnect(uri, instance_conn(uri, readonly))
