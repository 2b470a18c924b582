# SPDX-License-Identifier: LGPL-2.1-or-later
"""The domain statistics procedures of libvirt's REMOTE program (remote_protocol.x), declared on
:data:`pyvirt.rpc.procedures.PROCEDURES` (this module is imported at the end of that one).

Numbers, layouts and priorities are remote_protocol.x's (only INTERFACE_STATS is
``@priority: high``). Every query is ``@acl: domain:read`` and libvirt-domain.c refuses none of them
on a read-only connection; SET_MEMORY_STATS_PERIOD and PM_WAKEUP change the domain and are refused
there (virCheckReadOnly).

Typed parameters (BLOCK_STATS_FLAGS, GET_CPU_STATS) travel as ``remote_typed_param`` lists; the
call's ``nparams`` says how many the caller has room for, 0 asking for the count alone (the reply's
``nparams``). GET_CPU_STATS answers ``nparams`` per CPU for ``ncpus`` CPUs from ``start_cpu``, or
the domain's total with ``start_cpu`` -1 and ``ncpus`` 1.

CONNECT_GET_ALL_DOMAIN_STATS (344, what ``virsh domstats`` calls) is not declared: pyvirt's API has
no getAllDomainStats to serve it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyvirt.rpc.procedures import PROCEDURES
from pyvirt.rpc.protocol import Program
from pyvirt.rpc.xdr import (
    HYPER,
    INT,
    NONNULL_DOMAIN,
    NONNULL_STRING,
    TYPED_PARAM,
    UHYPER,
    UINT,
    Array,
    Struct,
    TypedParamType,
    UnionValue,
)

__all__ = ["BLOCK_STATS_PARAMETERS_MAX", "MEMORY_STATS_MAX", "CPU_STATS_NCPUS_MAX",
           "CPU_STATS_MAX", "NODE_CPU_STATS_MAX", "MEMORY_STAT_TAGS", "TYPED_PARAM_STRING_OKAY",
           "typed_params", "params_dict"]

#: remote_protocol.x's REMOTE_DOMAIN_BLOCK_STATS_PARAMETERS_MAX, REMOTE_DOMAIN_MEMORY_STATS_MAX,
#: REMOTE_DOMAIN_GET_CPU_STATS_NCPUS_MAX, REMOTE_DOMAIN_GET_CPU_STATS_MAX, REMOTE_NODE_CPU_STATS_MAX
BLOCK_STATS_PARAMETERS_MAX = 16
MEMORY_STATS_MAX = 1024
CPU_STATS_NCPUS_MAX = 128
CPU_STATS_MAX = 2048
NODE_CPU_STATS_MAX = 16

#: VIR_TYPED_PARAM_STRING_OKAY: libvirt's client library adds it to the flags of typed-parameter
#: getters when the server supports string parameters; drivers accept it beside their own flags.
TYPED_PARAM_STRING_OKAY = 1 << 2

#: virDomainMemoryStatTags (libvirt-domain.h) by libvirt-python's key; their order is the tags'.
MEMORY_STAT_TAGS = {
    "swap_in": 0, "swap_out": 1, "major_fault": 2, "minor_fault": 3, "unused": 4, "available": 5,
    "actual": 6, "rss": 7, "usable": 8, "last_update": 9, "disk_caches": 10,
    "hugetlb_pgalloc": 11, "hugetlb_pgfail": 12,
}

_DOM = ("dom", NONNULL_DOMAIN)
_PATH = ("path", NONNULL_STRING)
_FLAGS = ("flags", UINT)

MEMORY_STAT = Struct("DomainMemoryStat", [("tag", INT), ("val", UHYPER)])


def _remote(number: int, name: str, args: Any = None, ret: Any = None, *, hi: bool = False,
            ro: bool = False) -> None:
    PROCEDURES.define(Program.REMOTE, number, name, args, ret, hi=hi, ro=ro)


_remote(64, "DOMAIN_BLOCK_STATS", [_DOM, _PATH],
        [(f, HYPER) for f in ("rd_req", "rd_bytes", "wr_req", "wr_bytes", "errs")], ro=True)
_remote(65, "DOMAIN_INTERFACE_STATS", [_DOM, _PATH],
        [(f, HYPER) for f in ("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes",
                              "tx_packets", "tx_errs", "tx_drop")], hi=True, ro=True)
_remote(159, "DOMAIN_MEMORY_STATS", [_DOM, ("maxStats", UINT), _FLAGS],
        [("stats", Array(MEMORY_STAT, MEMORY_STATS_MAX))], ro=True)
_remote(194, "DOMAIN_GET_BLOCK_INFO", [_DOM, _PATH, _FLAGS],
        [("allocation", UHYPER), ("capacity", UHYPER), ("physical", UHYPER)], ro=True)
_remote(243, "DOMAIN_BLOCK_STATS_FLAGS", [_DOM, _PATH, ("nparams", INT), _FLAGS],
        [("params", Array(TYPED_PARAM, BLOCK_STATS_PARAMETERS_MAX)), ("nparams", INT)], ro=True)
_remote(262, "DOMAIN_GET_CPU_STATS",
        [_DOM, ("nparams", UINT), ("start_cpu", INT), ("ncpus", UINT), _FLAGS],
        [("params", Array(TYPED_PARAM, CPU_STATS_MAX)), ("nparams", INT)], ro=True)
_remote(267, "DOMAIN_PM_WAKEUP", [_DOM, _FLAGS])
_remote(308, "DOMAIN_SET_MEMORY_STATS_PERIOD", [_DOM, ("period", INT), _FLAGS])


def typed_params(values: Mapping[str, int] | Iterable[tuple[str, int]],
                 kind: int = TypedParamType.ULLONG) -> list[dict[str, Any]]:
    """Integer statistics as ``remote_typed_param`` values of one type (libvirt's QEMU driver gives
    block statistics as LLONG, CPU times as ULLONG)."""
    items = values.items() if isinstance(values, Mapping) else values
    return [{"field": field, "value": UnionValue(kind, int(value))} for field, value in items]


def params_dict(params: Iterable[Any]) -> dict[str, Any]:
    """``remote_typed_param`` values as libvirt-python gives them: booleans as bool, the rest as
    their int, float or str."""
    out: dict[str, Any] = {}
    for param in params:
        kind, value = param.value
        out[str(param.field)] = bool(value) if kind == TypedParamType.BOOLEAN else value
    return out
