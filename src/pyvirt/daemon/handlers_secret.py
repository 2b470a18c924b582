# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's handlers for the secret procedures (:mod:`pyvirt.rpc.procedures_secret`), each a call on
pyvirt's public secret API (:mod:`pyvirt.secret.api`) of the client's connection.

A secret arrives as ``remote_nonnull_secret``; as in libvirtd, only its UUID matters: the driver
finds the secret by it, and one that is gone is libvirt's "Secret not found" error.

Values go over RPC as libvirt 9.0's daemon gives them: SECRET_GET_VALUE answers with the value of a
public secret, and refuses a private one ("secret is private", VIR_ERR_INVALID_SECRET) -- libvirt's
driver lets only its own identity read those, never an RPC client. The values are never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.dispatch import ClientSession
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.rpc.procedures_secret import SECRET_LIST_MAX
from pyvirt.rpc.protocol import RemoteError

if TYPE_CHECKING:
    from pyvirt.secret.api import virSecret

__all__: list[str] = []

_h = HANDLERS.register


def wire_secret(secret: virSecret) -> dict[str, Any]:
    """A virSecret of the API as remote_nonnull_secret."""
    return {"uuid": secret.UUID(), "usageType": secret.usageType(), "usageID": secret.usageID()}


def _secret(session: ClientSession, wire: Any) -> virSecret:
    return session.require_conn().secretLookupByUUID(bytes(wire.uuid))


def _too_many(what: str, limit: str) -> RemoteError:
    return RemoteError(f"{what} > {limit}", code=codes.VIR_ERR_RPC, domain=codes.VIR_FROM_RPC,
                       level=codes.VIR_ERR_ERROR, str1="%s", str2=f"{what} > {limit}")


@_h("CONNECT_NUM_OF_SECRETS", inline_when_idle=True)
def num_of_secrets(session: ClientSession, args: None) -> Any:
    return {"num": session.require_conn().numOfSecrets()}


@_h("CONNECT_LIST_SECRETS", inline_when_idle=True)
def list_secrets(session: ClientSession, args: Any) -> Any:
    if args.maxuuids > SECRET_LIST_MAX:
        raise _too_many("maxuuids", "REMOTE_SECRET_LIST_MAX")
    uuids = session.require_conn().listSecrets()
    return {"uuids": uuids[:max(args.maxuuids, 0)]}


@_h("CONNECT_LIST_ALL_SECRETS", inline_when_idle=True)
def list_all_secrets(session: ClientSession, args: Any) -> Any:
    found = session.require_conn().listAllSecrets(args.flags)
    return {"secrets": [wire_secret(s) for s in found] if args.need_results else [], "ret": len(found)}


@_h("SECRET_LOOKUP_BY_UUID", inline_when_idle=True)
def lookup_by_uuid(session: ClientSession, args: Any) -> Any:
    return {"secret": wire_secret(session.require_conn().secretLookupByUUID(bytes(args.uuid)))}


@_h("SECRET_LOOKUP_BY_USAGE", inline_when_idle=True)
def lookup_by_usage(session: ClientSession, args: Any) -> Any:
    return {"secret": wire_secret(session.require_conn().secretLookupByUsage(args.usageType, args.usageID))}


@_h("SECRET_DEFINE_XML")
def define_xml(session: ClientSession, args: Any) -> Any:
    return {"secret": wire_secret(session.require_conn().secretDefineXML(args.xml, args.flags))}


@_h("SECRET_GET_XML_DESC", inline_when_idle=True)
def get_xml_desc(session: ClientSession, args: Any) -> Any:
    return {"xml": _secret(session, args.secret).XMLDesc(args.flags)}


@_h("SECRET_SET_VALUE")
def set_value(session: ClientSession, args: Any) -> Any:
    if not args.value:
        # libvirtd's XDR decoding makes an empty opaque a NULL pointer, which libvirt's public
        # API refuses (virCheckNonNullArg), before the secret is even looked up
        raise RemoteError("value in virSecretSetValue must not be NULL", code=codes.VIR_ERR_INVALID_ARG,
                          domain=codes.VIR_FROM_SECRET, level=codes.VIR_ERR_ERROR,
                          str1="%s in %s must not be NULL", str2="value", str3="virSecretSetValue")
    _secret(session, args.secret).setValue(bytes(args.value), args.flags)
    return None


@_h("SECRET_GET_VALUE")
def get_value(session: ClientSession, args: Any) -> Any:
    return {"value": _secret(session, args.secret).value(args.flags)}


@_h("SECRET_UNDEFINE")
def undefine(session: ClientSession, args: Any) -> Any:
    _secret(session, args.secret).undefine()
    return None
