# SPDX-License-Identifier: LGPL-2.1-or-later
"""The storage procedures of libvirt's REMOTE program (remote_protocol.x), declared on
:data:`pyvirt.rpc.procedures.PROCEDURES` (this module is imported at the end of that one).

Numbers, layouts and the ``@priority: high`` marks are remote_protocol.x's. ``readonly`` marks the
calls libvirt's public API allows on a read-only connection (lookups, lists, info, XML).
A pool travels as ``remote_nonnull_storage_pool`` (name, uuid), a volume as
``remote_nonnull_storage_vol`` (pool name, name, key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyvirt.rpc.procedures import PROCEDURES
from pyvirt.rpc.protocol import Program
from pyvirt.rpc.xdr import (
    CHAR,
    INT,
    NONNULL_STRING,
    UCHAR,
    UHYPER,
    UINT,
    UUID,
    Array,
    Codec,
    Optional,
    Struct,
)

__all__ = ["NONNULL_STORAGE_POOL", "NONNULL_STORAGE_VOL", "POOL_LIST_MAX", "VOL_LIST_MAX"]

POOL_LIST_MAX = 4096    # REMOTE_STORAGE_POOL_LIST_MAX
VOL_LIST_MAX = 16384    # REMOTE_STORAGE_VOL_LIST_MAX

NONNULL_STORAGE_POOL = Struct("NonnullStoragePool", [("name", NONNULL_STRING), ("uuid", UUID)])
NONNULL_STORAGE_VOL = Struct("NonnullStorageVol", [("pool", NONNULL_STRING), ("name", NONNULL_STRING),
                                                   ("key", NONNULL_STRING)])

_POOL: tuple[str, Codec[Any]] = ("pool", NONNULL_STORAGE_POOL)
_VOL: tuple[str, Codec[Any]] = ("vol", NONNULL_STORAGE_VOL)
_FLAGS = ("flags", UINT)
_XML = ("xml", NONNULL_STRING)
_POOL_RET: list[tuple[str, Codec[Any]]] = [_POOL]
_VOL_RET: list[tuple[str, Codec[Any]]] = [_VOL]


def _d(number: int, name: str, args: Sequence[tuple[str, Codec[Any]]] | None = None,
       ret: Sequence[tuple[str, Codec[Any]]] | None = None, *, hi: bool = False, ro: bool = False,
       stream: bool = False) -> None:
    PROCEDURES.define(Program.REMOTE, number, name, args, ret, hi=hi, ro=ro, stream=stream)


# ---- the connection's pools ----
_d(71, "CONNECT_NUM_OF_STORAGE_POOLS", None, [("num", INT)], hi=True, ro=True)
_d(72, "CONNECT_LIST_STORAGE_POOLS", [("maxnames", INT)],
   [("names", Array(NONNULL_STRING, POOL_LIST_MAX))], hi=True, ro=True)
_d(73, "CONNECT_NUM_OF_DEFINED_STORAGE_POOLS", None, [("num", INT)], hi=True, ro=True)
_d(74, "CONNECT_LIST_DEFINED_STORAGE_POOLS", [("maxnames", INT)],
   [("names", Array(NONNULL_STRING, POOL_LIST_MAX))], hi=True, ro=True)
_d(281, "CONNECT_LIST_ALL_STORAGE_POOLS", [("need_results", INT), _FLAGS],
   [("pools", Array(NONNULL_STORAGE_POOL, POOL_LIST_MAX)), ("ret", UINT)], hi=True, ro=True)

# ---- pools ----
_d(76, "STORAGE_POOL_CREATE_XML", [_XML, _FLAGS], _POOL_RET)
_d(77, "STORAGE_POOL_DEFINE_XML", [_XML, _FLAGS], _POOL_RET, hi=True)
_d(78, "STORAGE_POOL_CREATE", [_POOL, _FLAGS])
_d(79, "STORAGE_POOL_BUILD", [_POOL, _FLAGS])
_d(80, "STORAGE_POOL_DESTROY", [_POOL], hi=True)
_d(81, "STORAGE_POOL_DELETE", [_POOL, _FLAGS])
_d(82, "STORAGE_POOL_UNDEFINE", [_POOL], hi=True)
_d(83, "STORAGE_POOL_REFRESH", [_POOL, _FLAGS])
_d(84, "STORAGE_POOL_LOOKUP_BY_NAME", [("name", NONNULL_STRING)], _POOL_RET, hi=True, ro=True)
_d(85, "STORAGE_POOL_LOOKUP_BY_UUID", [("uuid", UUID)], _POOL_RET, hi=True, ro=True)
_d(86, "STORAGE_POOL_LOOKUP_BY_VOLUME", [_VOL], _POOL_RET, hi=True, ro=True)
_d(87, "STORAGE_POOL_GET_INFO", [_POOL], [("state", UCHAR), ("capacity", UHYPER), ("allocation", UHYPER),
                                          ("available", UHYPER)], hi=True, ro=True)
_d(88, "STORAGE_POOL_GET_XML_DESC", [_POOL, _FLAGS], [_XML], hi=True, ro=True)
_d(89, "STORAGE_POOL_GET_AUTOSTART", [_POOL], [("autostart", INT)], hi=True, ro=True)
_d(90, "STORAGE_POOL_SET_AUTOSTART", [_POOL, ("autostart", INT)], hi=True)
_d(91, "STORAGE_POOL_NUM_OF_VOLUMES", [_POOL], [("num", INT)], hi=True, ro=True)
_d(92, "STORAGE_POOL_LIST_VOLUMES", [_POOL, ("maxnames", INT)],
   [("names", Array(NONNULL_STRING, VOL_LIST_MAX))], hi=True, ro=True)
_d(154, "STORAGE_POOL_IS_ACTIVE", [_POOL], [("active", INT)], hi=True, ro=True)
_d(155, "STORAGE_POOL_IS_PERSISTENT", [_POOL], [("persistent", INT)], hi=True, ro=True)
_d(282, "STORAGE_POOL_LIST_ALL_VOLUMES", [_POOL, ("need_results", INT), _FLAGS],
   [("vols", Array(NONNULL_STORAGE_VOL, VOL_LIST_MAX)), ("ret", UINT)], hi=True, ro=True)

# ---- volumes ----
_d(93, "STORAGE_VOL_CREATE_XML", [_POOL, _XML, _FLAGS], _VOL_RET)
_d(94, "STORAGE_VOL_DELETE", [_VOL, _FLAGS])
_d(95, "STORAGE_VOL_LOOKUP_BY_NAME", [_POOL, ("name", NONNULL_STRING)], _VOL_RET, hi=True, ro=True)
_d(96, "STORAGE_VOL_LOOKUP_BY_KEY", [("key", NONNULL_STRING)], _VOL_RET, hi=True, ro=True)
_d(97, "STORAGE_VOL_LOOKUP_BY_PATH", [("path", NONNULL_STRING)], _VOL_RET, hi=True, ro=True)
_d(98, "STORAGE_VOL_GET_INFO", [_VOL], [("type", CHAR), ("capacity", UHYPER), ("allocation", UHYPER)],
   hi=True, ro=True)
_d(99, "STORAGE_VOL_GET_XML_DESC", [_VOL, _FLAGS], [_XML], hi=True, ro=True)
_d(100, "STORAGE_VOL_GET_PATH", [_VOL], [("name", NONNULL_STRING)], hi=True, ro=True)
_d(125, "STORAGE_VOL_CREATE_XML_FROM", [_POOL, _XML, ("clonevol", NONNULL_STORAGE_VOL), _FLAGS], _VOL_RET)
_d(165, "STORAGE_VOL_WIPE", [_VOL, _FLAGS])
_d(208, "STORAGE_VOL_UPLOAD", [_VOL, ("offset", UHYPER), ("length", UHYPER), _FLAGS], stream=True)
_d(209, "STORAGE_VOL_DOWNLOAD", [_VOL, ("offset", UHYPER), ("length", UHYPER), _FLAGS], stream=True)
_d(259, "STORAGE_VOL_WIPE_PATTERN", [_VOL, ("algorithm", UINT), _FLAGS])
_d(260, "STORAGE_VOL_RESIZE", [_VOL, ("capacity", UHYPER), _FLAGS])

# ---- events (callback ids only) ----
_d(368, "CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY",
   [("eventID", INT), ("pool", Optional(NONNULL_STORAGE_POOL))], [("callbackID", INT)], hi=True, ro=True)
_d(369, "CONNECT_STORAGE_POOL_EVENT_DEREGISTER_ANY", [("callbackID", INT)], hi=True, ro=True)
PROCEDURES.define(Program.REMOTE, 370, "STORAGE_POOL_EVENT_LIFECYCLE",
                  [("callbackID", INT), _POOL, ("event", INT), ("detail", INT)], event=True)
PROCEDURES.define(Program.REMOTE, 373, "STORAGE_POOL_EVENT_REFRESH", [("callbackID", INT), _POOL],
                  event=True)
