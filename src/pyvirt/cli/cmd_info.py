# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's commands that describe domains, in virsh's layout: list, dominfo, domstate, domid,
domuuid, domname, domblklist, domiflist, domblkstat, dommemstat, vncdisplay.

Scripts parse these outputs, so columns, labels and the order of lines follow virsh 9.0 exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

from pyvirt.cli.common import CommandFailed, api_call, lookup, reason_text, require_api, state_text, table

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from pyvirt.cli.options import Args
    from pyvirt.connection import virConnect

# virConnectListAllDomainsFlags (libvirt's stable values)
_LIST = {"active": 1, "inactive": 2, "persistent": 4, "transient": 8, "state_running": 16,
         "state_paused": 32, "state_shutoff": 64, "state_other": 128, "with_managed_save": 256,
         "without_managed_save": 512, "autostart": 1024, "no_autostart": 2048, "with_snapshot": 4096,
         "without_snapshot": 8192, "with_checkpoint": 16384, "without_checkpoint": 32768}
_SHUTOFF = 5


def cmd_list(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    if args.table and (args.name or args.uuid or args.id):
        other = "name" if args.name else "uuid" if args.uuid else "id"
        raise CommandFailed(f"Options --table and --{other} are mutually exclusive")
    flags = _LIST["active"]
    if args.inactive:
        flags = _LIST["inactive"]
    if args.all:
        flags = _LIST["active"] | _LIST["inactive"]
    for key, bit in _LIST.items():
        if key not in ("active", "inactive") and getattr(args, key):
            flags |= bit
    if flags & (_LIST["active"] | _LIST["inactive"]) == _LIST["active"] | _LIST["inactive"]:
        flags &= ~(_LIST["active"] | _LIST["inactive"])  # both: no filter on activity
    domains = api_call("Failed to list domains", conn.listAllDomains, flags)
    # virsh's order: running domains by id, then the inactive ones by name
    entries = sorted(((d.ID(), d) for d in domains),
                     key=lambda e: (e[0] < 0, e[0] if e[0] >= 0 else 0, e[1].name()))
    if args.name or args.uuid or args.id:
        for dom_id, dom in entries:
            words = []
            if args.id:
                if dom_id < 0:
                    if not (args.name or args.uuid):
                        continue
                    words.append("-")
                else:
                    words.append(str(dom_id))
            if args.uuid:
                words.append(dom.UUIDString())
            if args.name:
                words.append(dom.name())
            out.write(" ".join(words) + "\n")
        return

    def state_of(dom_id: int, dom: Any) -> str:
        # an inactive domain is shut off: no need to ask the driver (which loads the process layer)
        return state_text(_SHUTOFF if dom_id < 0 else dom.state()[0])

    rows = [("-" if dom_id < 0 else str(dom_id), dom.name(), state_of(dom_id, dom))
            for dom_id, dom in entries]
    out.write(table(rows, None if args.quiet else ("Id", "Name", "State")))


def cmd_dominfo(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    dom = lookup(conn, args.domain)
    state, max_mem, mem, vcpus, cpu_ns = api_call(None, dom.info)
    dom_id = dom.ID()
    model, doi = conn.getSecurityModel()
    fields = [("Id", "-" if dom_id < 0 else str(dom_id)), ("Name", dom.name()), ("UUID", dom.UUIDString()),
              ("OS Type", dom.OSType()), ("State", state_text(state)), ("CPU(s)", str(vcpus))]
    if dom_id >= 0:
        fields.append(("CPU time", f"{cpu_ns / 1e9:.1f}s"))
    fields += [("Max memory", f"{max_mem} KiB"), ("Used memory", f"{mem} KiB"),
               ("Persistent", "yes" if dom.isPersistent() else "no"),
               ("Autostart", "enable" if dom.autostart() else "disable"),
               ("Managed save", "yes" if dom.hasManagedSaveImage() else "no"),
               ("Security model", model), ("Security DOI", doi)]
    out.write("".join(f"{label + ':':<15} {value}\n" for label, value in fields))
    messages = dom.messages() if dom_id >= 0 else []  # libvirt's taints of the running QEMU
    for i, message in enumerate(messages):
        out.write(f"{'Messages:' if i == 0 else '':<15} {message}\n")


def cmd_domstate(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    state, reason = api_call(None, lookup(conn, args.domain).state)
    if args.reason:
        out.write(f"{state_text(state)} ({reason_text(state, reason)})\n")
    else:
        out.write(f"{state_text(state)}\n")


def cmd_domid(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    dom_id = lookup(conn, args.domain).ID()
    out.write(("-" if dom_id < 0 else str(dom_id)) + "\n")


def cmd_domuuid(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(lookup(conn, args.domain).UUIDString() + "\n")


def cmd_domname(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(lookup(conn, args.domain).name() + "\n")


# -- devices, from the domain's XML ------------------------------------------------------------------

def _domain_xml(dom: Any, inactive: bool) -> ET.Element:
    import xml.etree.ElementTree as ET

    return ET.fromstring(api_call(None, dom.XMLDesc, 2 if inactive else 0))


def _first(node: ET.Element, *paths: str) -> str | None:
    """The first of ``paths`` ('elem/@attr' or '@attr') with a non-empty value below ``node``."""
    for path in paths:
        elem_path, _, attr = path.rpartition("@")
        elem = node.find(elem_path.rstrip("/")) if elem_path else node
        value = elem.get(attr) if elem is not None else None
        if value:
            return value
    return None


def cmd_domblklist(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    root = _domain_xml(lookup(conn, args.domain), args.inactive)
    rows: list[tuple[str, ...]] = []
    for disk in root.iterfind("./devices/disk"):
        target = _first(disk, "target/@dev")
        if target is None:
            raise CommandFailed("unable to query block list")
        source = _first(disk, "source/@file", "source/@dev", "source/@dir", "source/@name",
                        "source/@volume") or "-"
        if disk.get("type") == "network" and disk.find("source") is not None and source != "-":
            source = _first(disk, "source/@name") or source
        if args.details:
            rows.append((disk.get("type") or "file", disk.get("device") or "disk", target, source))
        else:
            rows.append((target, source))
    header = ("Type", "Device", "Target", "Source") if args.details else ("Target", "Source")
    out.write(table(rows, None if args.quiet else header))


def cmd_domiflist(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    root = _domain_xml(lookup(conn, args.domain), args.inactive)
    rows = []
    for iface in root.iterfind("./devices/interface"):
        source = _first(iface, "source/@bridge", "source/@dev", "source/@network", "source/@name",
                        "source/@path")
        rows.append((_first(iface, "target/@dev") or "-", iface.get("type") or "-", source or "-",
                     _first(iface, "model/@type") or "-", _first(iface, "mac/@address") or "-"))
    out.write(table(rows, None if args.quiet else ("Interface", "Type", "Source", "Model", "MAC")))


def cmd_vncdisplay(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    dom = lookup(conn, args.domain)
    if not dom.isActive():
        raise CommandFailed("Domain is not running")
    root = _domain_xml(dom, False)
    graphics = root.find("./devices/graphics[@type='vnc']")
    port = graphics.get("port") if graphics is not None else None
    if graphics is None or port is None or not port.lstrip("-").isdigit() or int(port) <= 0:
        raise CommandFailed("Failed to get VNC port. Is this domain using VNC?")
    listen = graphics.get("listen") or _first(graphics, "listen/@address")
    display = int(port) - 5900
    if not listen or listen in ("0.0.0.0", "::"):
        out.write(f":{display}\n")
    else:
        out.write(f"{listen}:{display}\n")


# -- statistics ------------------------------------------------------------------------------------

# virsh's domblkstat: the API's field, virsh's short name, and its --human label, in virsh's order
_BLKSTAT_FIELDS = (
    ("rd_operations", "rd_req", "number of read operations:"),
    ("rd_bytes", "rd_bytes", "number of bytes read:"),
    ("wr_operations", "wr_req", "number of write operations:"),
    ("wr_bytes", "wr_bytes", "number of bytes written:"),
    ("errs", "errs", "error count:"),
    ("flush_operations", "flush_operations", "number of flush operations:"),
    ("rd_total_times", "rd_total_times", "total duration of reads (ns):"),
    ("wr_total_times", "wr_total_times", "total duration of writes (ns):"),
    ("flush_total_times", "flush_total_times", "total duration of flushes (ns):"),
)


def cmd_domblkstat(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    dom = lookup(conn, args.domain)
    device = args.device or ""
    failure = f"Failed to get block stats {dom.name()} {device}".rstrip()
    flags_call = getattr(dom, "blockStatsFlags", None)
    if flags_call is not None:
        stats: dict[str, int] = api_call(None, flags_call, device, 0)
    else:
        rd_req, rd_bytes, wr_req, wr_bytes, errs = api_call(None, require_api(dom, "blockStats"), device)
        stats = {"rd_operations": rd_req, "rd_bytes": rd_bytes, "wr_operations": wr_req,
                 "wr_bytes": wr_bytes}
        if errs >= 0:
            stats["errs"] = errs
    if not stats:
        raise CommandFailed(failure)
    known = {field for field, _, _ in _BLKSTAT_FIELDS}
    lines = [(short, label, stats[field]) for field, short, label in _BLKSTAT_FIELDS if field in stats]
    lines += [(field, field, stats[field]) for field in stats if field not in known]
    if args.human:
        out.write(f"Device: {device}\n")
        out.write("".join(f" {label:<31} {value}\n" for _, label, value in lines))
    else:
        out.write("".join(f"{device} {short} {value}\n" for short, _, value in lines))


# virsh's order of memory statistics: the balloon's actual size, the guest's own figures, then rss
_MEMSTAT_ORDER = ("actual", "swap_in", "swap_out", "major_fault", "minor_fault", "unused", "available",
                  "usable", "last_update", "disk_caches", "hugetlb_pgalloc", "hugetlb_pgfail", "rss")


def cmd_dommemstat(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    dom = lookup(conn, args.domain)
    name = dom.name()
    if args.period is not None:
        if args.period < 0:
            raise CommandFailed(f"Invalid collection period value '{args.period}'")
        flags = (1 if args.live else 0) | (2 if args.config else 0)
        api_call("Unable to change balloon collection period.",
                 require_api(dom, "setMemoryStatsPeriod"), args.period, flags)
        return
    stats: dict[str, int] = api_call(f"Failed to get memory statistics for domain {name}",
                                     require_api(dom, "memoryStats"))
    keys = [k for k in _MEMSTAT_ORDER if k in stats] + [k for k in stats if k not in _MEMSTAT_ORDER]
    out.write("".join(f"{k} {stats[k]}\n" for k in keys))
