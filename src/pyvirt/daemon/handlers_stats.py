# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's handlers for the domain statistics procedures (:mod:`pyvirt.rpc.procedures_stats`),
each a call on pyvirt's public ``virDomain`` (:mod:`pyvirt.connection`) of the client's connection.

The API gives libvirt-python's shapes (tuples, lists, dicts); the handlers turn them into the
layouts of remote_protocol.x and follow libvirtd's dispatcher where the C API differs from the
Python one:

* ``nparams`` 0 asks for the number of parameters only, which the reply's ``nparams`` carries;
  otherwise at most ``nparams`` parameters come back (for GET_CPU_STATS: per CPU).
* DOMAIN_MEMORY_STATS returns at most ``maxStats`` of the statistics, as (tag, value) pairs.
* Callers through libvirt's client library add VIR_TYPED_PARAM_STRING_OKAY to the flags of the
  typed-parameter getters; like libvirt's QEMU driver the daemon accepts it there and refuses other
  unknown flags in that driver's words.
* GET_CPU_STATS: the domain's total (``start_cpu`` -1, ``ncpus`` 1) comes from
  ``getCPUStats(True)``; ``nparams`` 0 with ``ncpus`` 0 asks for the number of host CPUs (the
  API's node information); the per-CPU figures themselves are ``getCPUStats(False)``, whose error
  the client gets while pyvirt does not keep them.
"""

from __future__ import annotations

from typing import Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.dispatch import ClientSession, rpc_error
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.daemon.handlers_domain import domain_of
from pyvirt.errors import PyvirtError
from pyvirt.rpc.procedures_stats import (
    BLOCK_STATS_PARAMETERS_MAX,
    CPU_STATS_NCPUS_MAX,
    MEMORY_STAT_TAGS,
    MEMORY_STATS_MAX,
    NODE_CPU_STATS_MAX,
    TYPED_PARAM_STRING_OKAY,
    typed_params,
)
from pyvirt.rpc.protocol import RemoteError
from pyvirt.rpc.xdr import TypedParamType

__all__: list[str] = []

_h = HANDLERS.register

#: the order of libvirt's QEMU driver (qemuDomainMemoryStatsInternal): the balloon's size, the
#: guest's figures as QEMU's balloon device lists them, then the process's rss; virsh prints them
#: in the order they come
_MEMORY_STATS_ORDER = ("actual", "swap_in", "swap_out", "major_fault", "minor_fault", "unused",
                       "available", "usable", "last_update", "disk_caches", "hugetlb_pgalloc",
                       "hugetlb_pgfail", "rss")


def _refuse_flags(flags: int, allowed: int, function: str) -> None:
    """libvirt's virCheckFlags in the QEMU driver function the API method stands for."""
    if flags & ~allowed:
        raise RemoteError(f"unsupported flags (0x{flags & ~allowed:x}) in function {function}",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_QEMU,
                          level=codes.VIR_ERR_ERROR, str1=function, str2="flags", int1=0, int2=0)


def _invalid_arg(detail: str) -> RemoteError:
    return RemoteError(f"invalid argument: {detail}", code=codes.VIR_ERR_INVALID_ARG,
                       domain=codes.VIR_FROM_DOMAIN, level=codes.VIR_ERR_ERROR,
                       str1="invalid argument: %s", str2=detail)


@_h("DOMAIN_BLOCK_STATS")
def block_stats(session: ClientSession, args: Any) -> Any:
    rd_req, rd_bytes, wr_req, wr_bytes, errs = domain_of(session, args.dom).blockStats(args.path)
    return {"rd_req": rd_req, "rd_bytes": rd_bytes, "wr_req": wr_req, "wr_bytes": wr_bytes,
            "errs": errs}


@_h("DOMAIN_BLOCK_STATS_FLAGS")
def block_stats_flags(session: ClientSession, args: Any) -> Any:
    if args.nparams < 0:
        raise _invalid_arg("nparams in virDomainBlockStatsFlags must be zero or greater")
    if args.nparams > BLOCK_STATS_PARAMETERS_MAX:
        raise rpc_error("nparams too large")
    _refuse_flags(args.flags, TYPED_PARAM_STRING_OKAY, "qemuDomainBlockStatsFlags")
    stats = domain_of(session, args.dom).blockStatsFlags(args.path, 0)
    if args.nparams == 0:
        return {"params": [], "nparams": len(stats)}
    params = typed_params(list(stats.items())[:args.nparams], TypedParamType.LLONG)
    return {"params": params, "nparams": len(params)}


@_h("DOMAIN_INTERFACE_STATS")
def interface_stats(session: ClientSession, args: Any) -> Any:
    values = domain_of(session, args.dom).interfaceStats(args.path)
    names = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "tx_bytes", "tx_packets", "tx_errs",
             "tx_drop")
    return dict(zip(names, values, strict=True))


@_h("DOMAIN_MEMORY_STATS")
def memory_stats(session: ClientSession, args: Any) -> Any:
    if args.maxStats > MEMORY_STATS_MAX:
        raise rpc_error("maxStats > REMOTE_DOMAIN_MEMORY_STATS_MAX")
    _refuse_flags(args.flags, 0, "qemuDomainMemoryStats")
    stats = domain_of(session, args.dom).memoryStats()
    unknown = set(stats) - set(MEMORY_STAT_TAGS)
    if unknown:  # the API gives libvirt's keys only: anything else is a bug of pyvirt's
        raise PyvirtError(f"internal error: memory statistics without a libvirt tag: "
                          f"{', '.join(sorted(unknown))}", code=codes.VIR_ERR_INTERNAL_ERROR,
                          domain=codes.VIR_FROM_QEMU)
    ordered = sorted(stats, key=_MEMORY_STATS_ORDER.index)
    pairs = [{"tag": MEMORY_STAT_TAGS[key], "val": stats[key]} for key in ordered]
    return {"stats": pairs[:args.maxStats]}


@_h("DOMAIN_GET_BLOCK_INFO")
def get_block_info(session: ClientSession, args: Any) -> Any:
    _refuse_flags(args.flags, 0, "qemuDomainGetBlockInfo")
    capacity, allocation, physical = domain_of(session, args.dom).blockInfo(args.path, 0)
    return {"allocation": allocation, "capacity": capacity, "physical": physical}


@_h("DOMAIN_GET_CPU_STATS")
def get_cpu_stats(session: ClientSession, args: Any) -> Any:
    nparams, start, ncpus = args.nparams, args.start_cpu, args.ncpus
    if nparams > NODE_CPU_STATS_MAX:
        raise rpc_error("nparams too large")
    if ncpus > CPU_STATS_NCPUS_MAX:
        raise rpc_error("ncpus too large")
    # the checks of libvirt-domain.c's virDomainGetCPUStats, which libvirtd runs as well
    if start == -1 and ncpus != 1:
        raise _invalid_arg("ncpus in virDomainGetCPUStats must be 1 when start_cpu is -1")
    if start < -1:
        raise _invalid_arg("start_cpu in virDomainGetCPUStats must be zero or greater")
    _refuse_flags(args.flags, TYPED_PARAM_STRING_OKAY, "qemuDomainGetCPUStats")
    dom = domain_of(session, args.dom)
    if start >= 0 and nparams == 0 and ncpus == 0:
        dom.getCPUStats(True, 0)  # the domain must run, as for any other answer
        return {"params": [], "nparams": int(session.require_conn().getInfo()[2])}
    total = dom.getCPUStats(start == -1, 0)[0]
    if nparams == 0:
        return {"params": [], "nparams": len(total)}
    params = typed_params(list(total.items())[:nparams], TypedParamType.ULLONG)
    return {"params": params, "nparams": len(params)}


@_h("DOMAIN_SET_MEMORY_STATS_PERIOD")
def set_memory_stats_period(session: ClientSession, args: Any) -> Any:
    domain_of(session, args.dom).setMemoryStatsPeriod(args.period, args.flags)


@_h("DOMAIN_PM_WAKEUP")
def pm_wakeup(session: ClientSession, args: Any) -> Any:
    domain_of(session, args.dom).pMWakeup(args.flags)
