# SPDX-License-Identifier: LGPL-2.1-or-later
"""Read-only questions to a running QEMU and its host process, answered in libvirt's shapes.

What virDomainBlockStats, virDomainGetBlockInfo, virDomainInterfaceStats, virDomainMemoryStats,
virDomainGetCPUStats and virDomainQemuMonitorCommand return, computed as libvirt 9.0's QEMU driver
does: QMP for what QEMU knows (block counters, balloon), ``/proc`` and ``/sys`` for what the host
knows (CPU time, RSS, tap counters). Nothing here changes the domain.

Each function takes the :class:`~pyvirt.qemu.process.RunningDomain` (``driver.running_domain``)
and, where devices matter, the live definition; the caller checks that the domain runs.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import MonitorCommandError, PyvirtError

if TYPE_CHECKING:
    from pyvirt.qemu.process import RunningDomain
    from pyvirt.xml.domain import Disk, Domain

__all__ = ["monitor_command", "block_stats", "block_stats_flags", "block_info", "interface_stats",
           "memory_stats", "set_stats_period", "cpu_stats", "rss_kib", "console_pty"]

# --- monitor passthrough (virDomainQemuMonitorCommand) ---------------------------------------------

#: ids of passthrough commands, as libvirt numbers its own ("libvirt-N"); only for the reply's shape
_passthrough_ids = itertools.count(1)


def _invalid_json(cmd: str, why: str) -> PyvirtError:
    # libvirt reports unparsable input as an internal error from no particular subsystem.
    return PyvirtError(f"internal error: cannot parse json {cmd}: {why}; a QMP command is a JSON object "
                       "like {\"execute\": \"query-status\"}; for a human monitor command such as "
                       "'info status' use VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP",
                       code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_NONE)


def parse_qmp_command(cmd: str) -> tuple[str, dict[str, Any] | None]:
    """(command, arguments) of the QMP JSON text ``cmd``; errors as libvirt's for bad input."""
    try:
        msg = json.loads(cmd)
    except ValueError as e:
        raise _invalid_json(cmd, str(e)) from None
    if not isinstance(msg, dict):
        raise _invalid_json(cmd, f"the text is a JSON {type(msg).__name__}, not an object")
    if "id" in msg:
        # libvirt numbers the commands it sends itself and refuses a caller's id in these words.
        raise PyvirtError("internal error: Unable to append command 'id' string; leave \"id\" out of "
                          "the command: the reply carries the id pyvirt gave it",
                          code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_QEMU)
    command = msg.get("execute")
    if not isinstance(command, str) or not command:
        raise _invalid_json(cmd, "the object has no \"execute\" member naming the command")
    args = msg.get("arguments")
    if args is not None and not isinstance(args, dict):
        raise _invalid_json(cmd, "\"arguments\" must be a JSON object")
    unknown = sorted(set(msg) - {"execute", "arguments"})
    if unknown:
        raise _invalid_json(cmd, f"unknown member(s) {', '.join(unknown)}; a command has only "
                            "\"execute\" and \"arguments\"")
    return command, args


def monitor_command(rd: RunningDomain, cmd: str, *, hmp: bool) -> str:
    """The text of QEMU's answer to ``cmd``: the whole QMP reply as JSON, or HMP's output.

    A command QEMU refuses is not an error of this call, as in libvirt: the reply carries QEMU's
    "error" member and the caller reads it.
    """
    from pyvirt.qemu.process import monitor

    mon = monitor(rd)
    if hmp:
        return mon.execute_hmp(cmd)
    command, args = parse_qmp_command(cmd)
    reply_id = f"pyvirt-{next(_passthrough_ids)}"
    try:
        value = mon.execute(command, args)
    except MonitorCommandError as e:
        return json.dumps({"id": reply_id, "error": {"class": e.qmp_class, "desc": e.qmp_desc}},
                          separators=(",", ":"))
    return json.dumps({"return": value, "id": reply_id}, separators=(",", ":"))


# --- disks ------------------------------------------------------------------------------------------

def _disk_path(disk: Disk) -> str | None:
    src = disk.source
    if src is None:
        return None
    return src.file if disk.type == "file" else src.dev if disk.type == "block" else None


def find_disk(dom: Domain, path: str) -> Disk | None:
    """The disk named by target (``vda``) or by source path, as virDomainDiskByName."""
    disks = dom.devices.disks if dom.devices is not None else []
    for disk in disks:
        if disk.target is not None and disk.target.dev == path:
            return disk
    for disk in disks:
        if path and _disk_path(disk) == path:
            return disk
    return None


def _qdevs_by_file(rd: RunningDomain) -> dict[str, str]:
    """QEMU's device path (qdev) of each block backend, by the file it has open."""
    from pyvirt.qemu.process import monitor

    found: dict[str, str] = {}
    for entry in monitor(rd).execute("query-block") or []:
        inserted = entry.get("inserted") or {}
        image = inserted.get("image") or {}
        for name in (inserted.get("file"), image.get("filename")):
            if name and entry.get("qdev"):
                found.setdefault(str(name), str(entry["qdev"]))
    return found


#: virDomainBlockStatsFlags' fields from QEMU's BlockDeviceStats, in libvirt's order
_STATS_FIELDS = (("wr_bytes", "wr_bytes"), ("wr_operations", "wr_operations"), ("rd_bytes", "rd_bytes"),
                 ("rd_operations", "rd_operations"), ("flush_operations", "flush_operations"),
                 ("wr_total_times", "wr_total_time_ns"), ("rd_total_times", "rd_total_time_ns"),
                 ("flush_total_times", "flush_total_time_ns"))


def block_stats(rd: RunningDomain, live: Domain, path: str) -> tuple[int, int, int, int, int]:
    """(rd_req, rd_bytes, wr_req, wr_bytes, errs) of disk ``path``; ``""`` sums all disks."""
    stats = block_stats_flags(rd, live, path)
    # errs is -1: QEMU keeps no error count that libvirt would report here
    return stats["rd_operations"], stats["rd_bytes"], stats["wr_operations"], stats["wr_bytes"], -1


def block_stats_flags(rd: RunningDomain, live: Domain, path: str) -> dict[str, int]:
    """virDomainBlockStatsFlags' named counters of disk ``path`` (``""``: summed over all)."""
    from pyvirt.qemu.process import monitor

    disk = None
    if path:
        disk = find_disk(live, path)
        if disk is None:
            raise PyvirtError(f"invalid argument: invalid path: {path}; name a disk by its target "
                              "(<target dev=...>, e.g. vda) or its source file",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_QEMU)
    entries = monitor(rd).execute("query-blockstats") or []
    if disk is not None:
        source = _disk_path(disk)
        qdev = _qdevs_by_file(rd).get(source) if source else None
        # a drive without medium has no backend statistics: nothing was read or written
        entries = [e for e in entries if qdev is not None and e.get("qdev") == qdev]
    totals = dict.fromkeys((name for name, _ in _STATS_FIELDS), 0)
    for entry in entries:
        stats = entry.get("stats") or {}
        for name, qemu_name in _STATS_FIELDS:
            totals[name] += int(stats.get(qemu_name, 0))
    return totals


def block_info(rd: RunningDomain | None, dom: Domain, path: str) -> list[int]:
    """[capacity, allocation, physical] in bytes of disk ``path`` (virDomainGetBlockInfo).

    Capacity is the guest-visible size (QEMU's virtual-size while it runs, the image header or
    file size otherwise), allocation the bytes the image occupies on the host, physical the size
    of the file or block device holding it.
    """
    disk = find_disk(dom, path) if path else None
    if disk is None:
        raise PyvirtError(f"invalid argument: invalid path {path} not assigned to domain; name a "
                          "disk by its target (<target dev=...>, e.g. vda) or its source file",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_QEMU)
    source = _disk_path(disk)
    if source is None:
        target = disk.target.dev if disk.target is not None else path
        raise PyvirtError(f"operation invalid: disk '{target}' does not currently have a source "
                          "assigned; insert a medium first",
                          code=codes.VIR_ERR_OPERATION_INVALID, domain=codes.VIR_FROM_QEMU)
    try:
        st = os.stat(source)
    except OSError as e:
        raise PyvirtError(f"cannot stat file '{source}': {e.strerror}",
                          code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_NONE) from None
    physical = st.st_size
    if not _is_regular(st.st_mode):
        physical = _device_size(source)
    allocation = st.st_blocks * 512 if _is_regular(st.st_mode) else physical
    fmt = disk.driver.type if disk.driver is not None and disk.driver.type else "raw"
    capacity = _qcow2_virtual_size(source) if fmt == "qcow2" else None
    if rd is not None:
        capacity = _running_capacity(rd, source, capacity)
    return [capacity if capacity is not None else physical, allocation, physical]


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _device_size(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _qcow2_virtual_size(path: str) -> int | None:
    """The virtual size in a qcow2 header (big-endian u64 at byte 24), None if not qcow2."""
    try:
        with open(path, "rb") as f:
            header = f.read(32)
    except OSError:
        return None
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        return None
    return int.from_bytes(header[24:32], "big")


def _running_capacity(rd: RunningDomain, source: str, fallback: int | None) -> int | None:
    from pyvirt.qemu.process import monitor

    for entry in monitor(rd).execute("query-block") or []:
        inserted = entry.get("inserted") or {}
        image = inserted.get("image") or {}
        if source in (inserted.get("file"), image.get("filename")) and "virtual-size" in image:
            return int(image["virtual-size"])
    return fallback


# --- network ----------------------------------------------------------------------------------------

def interface_stats(live: Domain, path: str) -> tuple[int, int, int, int, int, int, int, int]:
    """(rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, tx_packets, tx_errs, tx_drop).

    ``path`` is the host-side device name (<target dev=...>) or the MAC address. Only an
    interface with a host side (a tap) has counters; user-mode networking has none, and libvirt
    says so as an internal error.
    """
    nets = live.devices.interfaces if live.devices is not None else []
    found = None
    for net in nets:
        target = net.target.dev if net.target is not None else None
        mac = net.mac.address if net.mac is not None else None
        if path and (target == path or (mac is not None and mac.lower() == path.lower())):
            found = net
            break
    if found is None:
        raise PyvirtError(f"invalid argument: '{path}' is not a known interface; name it by its "
                          "host device (<target dev=...>) or its MAC address",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_DOMAIN)
    ifname = found.target.dev if found.target is not None else None
    if not ifname:
        raise PyvirtError(f"internal error: Interface name not provided: interface '{path}' of type "
                          f"'{found.type}' has no host-side device, so the host keeps no counters for it",
                          code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_NONE)
    return tap_counters(ifname)


def tap_counters(ifname: str, sysfs: Path = Path("/sys/class/net")
                 ) -> tuple[int, int, int, int, int, int, int, int]:
    """A tap's counters from the guest's side: what the host sends is what the guest receives."""
    base = sysfs / ifname / "statistics"

    def read(name: str) -> int:
        try:
            return int((base / name).read_text())
        except (OSError, ValueError):
            raise PyvirtError(f"internal error: cannot read {base / name}: is interface '{ifname}' "
                              "still there?", code=codes.VIR_ERR_INTERNAL_ERROR,
                              domain=codes.VIR_FROM_NONE) from None

    # swapped, as libvirt's virNetDevTapInterfaceStats does for taps
    return (read("tx_bytes"), read("tx_packets"), read("tx_errors"), read("tx_dropped"),
            read("rx_bytes"), read("rx_packets"), read("rx_errors"), read("rx_dropped"))


# --- memory -----------------------------------------------------------------------------------------

#: QEMU's guest-stats names -> libvirt-python's memoryStats() keys; memory sizes are bytes in
#: QEMU and KiB in libvirt, event counts stay counts
_BALLOON_STATS = {
    "stat-swap-in": ("swap_in", True),
    "stat-swap-out": ("swap_out", True),
    "stat-major-faults": ("major_fault", False),
    "stat-minor-faults": ("minor_fault", False),
    "stat-free-memory": ("unused", True),
    "stat-total-memory": ("available", True),
    "stat-available-memory": ("usable", True),
    "stat-disk-caches": ("disk_caches", True),
    "stat-htlb-pgalloc": ("hugetlb_pgalloc", False),
    "stat-htlb-pgfail": ("hugetlb_pgfail", False),
}


_NOT_REPORTED = 2**64 - 1


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def balloon_path(live: Domain) -> str:
    """The balloon's QOM path: its device id, as pyvirt.qemu.command_devices names it."""
    balloon = live.devices.memballoon if live.devices is not None else None
    alias = balloon.alias.name if balloon is not None and balloon.alias is not None else None
    return f"/machine/peripheral/{alias if alias and alias.startswith('ua-') else 'balloon0'}"


def has_balloon(dom: Domain) -> bool:
    balloon = dom.devices.memballoon if dom.devices is not None else None
    return balloon is not None and balloon.model not in (None, "none")


def set_stats_period(rd: RunningDomain, live: Domain, period: int) -> None:
    """Ask the guest's balloon driver for its figures every ``period`` s (0: never)."""
    from pyvirt.qemu.process import monitor

    monitor(rd).execute("qom-set", {"path": balloon_path(live), "property": "guest-stats-polling-interval",
                                    "value": period})


def memory_stats(rd: RunningDomain, live: Domain) -> dict[str, int]:
    """libvirt's memoryStats(): 'actual' (balloon size), the guest's own figures when its balloon
    driver reports them, 'last_update', and 'rss' of the QEMU process; all sizes in KiB."""
    from pyvirt.qemu.process import monitor

    stats: dict[str, int] = {}
    if has_balloon(live):  # without a balloon libvirt reports the process's rss alone
        mon = monitor(rd)
        stats["actual"] = int(mon.execute("query-balloon")["actual"]) // 1024
        try:
            guest = mon.execute("qom-get", {"path": balloon_path(live), "property": "guest-stats"})
        except MonitorCommandError:
            guest = None  # no statistics from this balloon: libvirt leaves them out too
        if isinstance(guest, dict):
            for name, value in (guest.get("stats") or {}).items():
                key = _BALLOON_STATS.get(name)
                if key is None or not isinstance(value, int) or not 0 <= value < _NOT_REPORTED:
                    continue  # figures the guest has not reported: -1, as QEMU's unsigned 64 bits
                stats[key[0]] = value // 1024 if key[1] else value
            if isinstance(guest.get("last-update"), int):
                stats["last_update"] = guest["last-update"]
    stats["rss"] = rss_kib(rd.pid)
    return stats


# --- CPU --------------------------------------------------------------------------------------------

def cpu_stats(rd: RunningDomain) -> dict[str, int]:
    """The total of getCPUStats(True): cpu_time, user_time, system_time in ns, over all threads."""
    try:
        with open(f"/proc/{rd.pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        raise PyvirtError(f"Requested operation is not valid: domain '{rd.name}' is not running",
                          code=codes.VIR_ERR_OPERATION_INVALID, domain=codes.VIR_FROM_QEMU) from None
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    user, system = int(rest[11]) * tick_ns, int(rest[12]) * tick_ns
    return {"cpu_time": _precise_cpu_time(rd.pid) or user + system, "user_time": user,
            "system_time": system}


def _precise_cpu_time(pid: int) -> int | None:
    """Run time in ns summed over the process's threads (schedstat), as cgroups account it."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that ended meanwhile
    except OSError:
        return None
    return total or None


# --- consoles ---------------------------------------------------------------------------------------

def _chardev_aliases(live: Domain) -> list[tuple[str, str, str]]:
    """(kind, name a caller may use, QEMU's chardev device id) of each character device, as
    pyvirt.qemu.command_devices names them; a serial console is the first serial port."""
    devs = live.devices
    if devs is None:
        return []

    def alias(dev: Any, default: str) -> str:
        name = dev.alias.name if dev.alias is not None else None
        return name if name and name.startswith("ua-") else default

    found = []
    for kind, items in (("serial", devs.serials), ("parallel", devs.parallels), ("channel", devs.channels)):
        for i, dev in enumerate(items):
            found.append((kind, alias(dev, f"{kind}{i}"), alias(dev, f"{kind}{i}")))
    for i, con in enumerate(devs.consoles):
        ttype = con.target.type if con.target is not None else "serial"
        if ttype == "serial" and i == 0:
            if devs.serials:
                found.append(("console", alias(con, "console0"), alias(devs.serials[0], "serial0")))
            continue
        found.append(("console", alias(con, f"console{i}"), alias(con, f"console{i}")))
    return found


def console_pty(rd: RunningDomain, live: Domain, dev_name: str | None) -> str:
    """The host side of the pty behind ``dev_name`` (an alias like serial0 or console1), or
    behind the domain's first console (else first serial port) when None."""
    from pyvirt.qemu.process import monitor

    aliases = _chardev_aliases(live)
    if dev_name is None:
        device_id = next((dev for kind, _, dev in aliases if kind == "console"),
                         next((dev for kind, _, dev in aliases if kind == "serial"), None))
        if device_id is None:
            raise PyvirtError(f"internal error: cannot find character device <null>: domain '{rd.name}' "
                              "has no console or serial port; add <serial type='pty'/> to its definition",
                              code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_QEMU)
        shown = device_id
    else:
        device_id = next((dev for _, name, dev in aliases if name == dev_name), None)
        if device_id is None:
            raise PyvirtError(f"internal error: cannot find character device {dev_name}; the domain has "
                              f"{', '.join(name for _, name, _ in aliases) or 'none'}",
                              code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_QEMU)
        shown = dev_name
    for chardev in monitor(rd).execute("query-chardev") or []:
        if chardev.get("label") == f"char{device_id}":
            filename = str(chardev.get("filename") or "")
            if filename.startswith("pty:"):
                return filename[4:]
            break
    raise PyvirtError(f"internal error: character device {shown} is not using a PTY; a console needs "
                      "<serial type='pty'/> (or <console type='pty'/>)",
                      code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_QEMU)
