# SPDX-License-Identifier: LGPL-2.1-or-later
"""The domain statistics methods of pyvirt's RPC client: :class:`pyvirt.remote.RemoteDomain`
inherits them from :class:`RemoteDomainStatsMethods`. Each one is a procedure of
:mod:`pyvirt.rpc.procedures_stats` and returns what the in-process ``virDomain`` method (and
libvirt-python's) returns.

Typed-parameter getters make libvirt-python's calls: GET_CPU_STATS asks for the number of
parameters first (``nparams`` 0), then for that many; per-CPU figures are fetched 128 CPUs at a
time (REMOTE_DOMAIN_GET_CPU_STATS_NCPUS_MAX). BLOCK_STATS_FLAGS asks for as many as the protocol
carries in one call.
"""

from __future__ import annotations

from typing import Any

from pyvirt.rpc.procedures_stats import (
    BLOCK_STATS_PARAMETERS_MAX,
    CPU_STATS_NCPUS_MAX,
    MEMORY_STAT_TAGS,
    params_dict,
)

__all__ = ["RemoteDomainStatsMethods"]

#: VIR_DOMAIN_MEMORY_STAT_NR of libvirt 9.0: how many statistics libvirt-python asks for
_MEMORY_STAT_NR = len(MEMORY_STAT_TAGS)
_MEMORY_STAT_NAMES = {tag: name for name, tag in MEMORY_STAT_TAGS.items()}


class RemoteDomainStatsMethods:
    """RemoteDomain's statistics methods (a mixin over RemoteDomain._call)."""

    def _call(self, proc: str, api: str, **fields: Any) -> Any:  # provided by RemoteDomain
        raise NotImplementedError

    def blockStats(self, path: str) -> tuple[int, int, int, int, int]:  # noqa: N802
        """(rd_req, rd_bytes, wr_req, wr_bytes, errs); -1 where the hypervisor keeps no count."""
        r = self._call("DOMAIN_BLOCK_STATS", "virDomainBlockStats", path=path)
        return (int(r.rd_req), int(r.rd_bytes), int(r.wr_req), int(r.wr_bytes), int(r.errs))

    def blockStatsFlags(self, path: str, flags: int = 0) -> dict[str, Any]:  # noqa: N802
        r = self._call("DOMAIN_BLOCK_STATS_FLAGS", "virDomainBlockStatsFlags", path=path,
                       nparams=BLOCK_STATS_PARAMETERS_MAX, flags=flags)
        return params_dict(r.params)

    def interfaceStats(self, path: str) -> tuple[int, int, int, int, int, int, int, int]:  # noqa: N802
        """(rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, tx_packets, tx_errs, tx_drop)."""
        r = self._call("DOMAIN_INTERFACE_STATS", "virDomainInterfaceStats", path=path)
        return (int(r.rx_bytes), int(r.rx_packets), int(r.rx_errs), int(r.rx_drop),
                int(r.tx_bytes), int(r.tx_packets), int(r.tx_errs), int(r.tx_drop))

    def memoryStats(self) -> dict[str, int]:  # noqa: N802
        """libvirt-python's keys (actual, rss, unused, ...); tags this client does not know are
        left out, as libvirt-python leaves them out."""
        r = self._call("DOMAIN_MEMORY_STATS", "virDomainMemoryStats", maxStats=_MEMORY_STAT_NR,
                       flags=0)
        return {_MEMORY_STAT_NAMES[s.tag]: int(s.val) for s in r.stats if s.tag in _MEMORY_STAT_NAMES}

    def blockInfo(self, path: str, flags: int = 0) -> list[int]:  # noqa: N802
        """[capacity, allocation, physical] in bytes."""
        r = self._call("DOMAIN_GET_BLOCK_INFO", "virDomainGetBlockInfo", path=path, flags=flags)
        return [int(r.capacity), int(r.allocation), int(r.physical)]

    def _cpu_stats(self, nparams: int, start_cpu: int, ncpus: int, flags: int) -> Any:
        return self._call("DOMAIN_GET_CPU_STATS", "virDomainGetCPUStats", nparams=nparams,
                          start_cpu=start_cpu, ncpus=ncpus, flags=flags)

    def getCPUStats(self, total: bool, flags: int = 0) -> list[dict[str, Any]]:  # noqa: N802
        """[{cpu_time, user_time, system_time}] for ``total``, else one dict per host CPU."""
        if total:
            count = int(self._cpu_stats(0, -1, 1, flags).nparams)
            return [params_dict(self._cpu_stats(count, -1, 1, flags).params)]
        host_cpus = int(self._cpu_stats(0, 0, 0, flags).nparams)
        count = int(self._cpu_stats(0, 0, 1, flags).nparams)
        result: list[dict[str, Any]] = []
        if count == 0:
            return result
        for start in range(0, host_cpus, CPU_STATS_NCPUS_MAX):
            chunk = min(CPU_STATS_NCPUS_MAX, host_cpus - start)
            r = self._cpu_stats(count, start, chunk, flags)
            stride = int(r.nparams) or count
            for i in range(chunk):
                result.append(params_dict(r.params[i * stride:(i + 1) * stride]))
        return result

    def setMemoryStatsPeriod(self, period: int, flags: int = 0) -> int:  # noqa: N802
        self._call("DOMAIN_SET_MEMORY_STATS_PERIOD", "virDomainSetMemoryStatsPeriod",
                   period=period, flags=flags)
        return 0

    def pMWakeup(self, flags: int = 0) -> int:  # noqa: N802
        self._call("DOMAIN_PM_WAKEUP", "virDomainPMWakeup", flags=flags)
        return 0
