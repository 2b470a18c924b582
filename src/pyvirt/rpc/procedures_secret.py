# SPDX-License-Identifier: LGPL-2.1-or-later
"""The secret procedures of libvirt's REMOTE program (remote_protocol.x), declared on
:data:`pyvirt.rpc.procedures.PROCEDURES` (this module is imported at the end of that one).

A secret travels as ``remote_nonnull_secret``: its UUID, usage type and usage id (what libvirt's
``virSecret`` handle caches). Values are ``opaque<REMOTE_SECRET_VALUE_MAX>``. All of them are
``@priority: high`` in libvirt (they never wait on a hypervisor); lookups, lists and the XML are
allowed on a read-only connection, defining, undefining and values are not (libvirt-secret.c's
virCheckReadOnly). The secret events (register/deregister, lifecycle, value changed) are not
declared: pyvirt's secret driver emits none.
"""

from __future__ import annotations

from typing import Any

from pyvirt.rpc.procedures import PROCEDURES
from pyvirt.rpc.protocol import Program
from pyvirt.rpc.xdr import INT, NONNULL_STRING, UINT, UUID, Array, Codec, Opaque, Struct

__all__ = ["NONNULL_SECRET", "SECRET_VALUE_MAX", "SECRET_LIST_MAX"]

#: remote_protocol.x's REMOTE_SECRET_VALUE_MAX and REMOTE_SECRET_LIST_MAX
SECRET_VALUE_MAX = 65536
SECRET_LIST_MAX = 16384

NONNULL_SECRET = Struct("NonnullSecret", [("uuid", UUID), ("usageType", INT), ("usageID", NONNULL_STRING)])

_SECRET = ("secret", NONNULL_SECRET)
_FLAGS = ("flags", UINT)
_VALUE = ("value", Opaque(SECRET_VALUE_MAX, "secret value"))
_SECRET_RET: list[tuple[str, Codec[Any]]] = [_SECRET]


def _remote(number: int, name: str, args: Any = None, ret: Any = None, *, ro: bool = False) -> None:
    PROCEDURES.define(Program.REMOTE, number, name, args, ret, hi=True, ro=ro)


_remote(139, "CONNECT_NUM_OF_SECRETS", None, [("num", INT)], ro=True)
_remote(140, "CONNECT_LIST_SECRETS", [("maxuuids", INT)],
        [("uuids", Array(NONNULL_STRING, SECRET_LIST_MAX))], ro=True)
_remote(141, "SECRET_LOOKUP_BY_UUID", [("uuid", UUID)], _SECRET_RET, ro=True)
_remote(142, "SECRET_DEFINE_XML", [("xml", NONNULL_STRING), _FLAGS], _SECRET_RET)
_remote(143, "SECRET_GET_XML_DESC", [_SECRET, _FLAGS], [("xml", NONNULL_STRING)], ro=True)
_remote(144, "SECRET_SET_VALUE", [_SECRET, _VALUE, _FLAGS])
_remote(145, "SECRET_GET_VALUE", [_SECRET, _FLAGS], [_VALUE])
_remote(146, "SECRET_UNDEFINE", [_SECRET])
_remote(147, "SECRET_LOOKUP_BY_USAGE", [("usageType", INT), ("usageID", NONNULL_STRING)], _SECRET_RET,
        ro=True)
_remote(287, "CONNECT_LIST_ALL_SECRETS", [("need_results", INT), _FLAGS],
        [("secrets", Array(NONNULL_SECRET, SECRET_LIST_MAX)), ("ret", UINT)], ro=True)
