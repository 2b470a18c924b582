# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's storage pool and volume commands (pool-*, vol-*), with virsh 9.0's options, output
and messages (tools/virsh-pool.c, tools/virsh-volume.c).

Pools are found as virsh finds them: by UUID when the argument is one, else by name. Volumes: by
name in ``--pool`` when given, else by key, else by path. Sizes take virsh's suffixes (``10M``,
``1GiB``, ``5GB``; bytes when bare).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, TextIO

from pyvirt.cli.common import CommandFailed, api_call, read_file, require_api, table

if TYPE_CHECKING:
    from pyvirt.cli.options import Args
    from pyvirt.connection import virConnect

_POOL_STATES = ("inactive", "building", "running", "degraded", "inaccessible")
_VOL_TYPES = ("file", "block", "dir", "network", "netdir", "ploop")
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
# virConnectListAllStoragePoolsFlags
_LIST_INACTIVE, _LIST_ACTIVE = 1, 2
_WIPE_ALGORITHMS = ("zero", "nnsa", "dod", "bsi", "gutmann", "schneier", "pfitzner7", "pfitzner33",
                    "random", "trim")


def pretty(value: int) -> str:
    """virsh's vshPrettyCapacity: '%.2lf unit' in powers of 1024."""
    size = float(value)
    unit = 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{size:.2f} {_UNITS[unit]}"


def parse_size(text: str) -> int:
    """virsh's vshVolSize: a number with an optional suffix (bytes when bare)."""
    from pyvirt.xml.units import scale_to_bytes

    m = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", text or "")
    if m is None:
        raise CommandFailed(f"Malformed size {text}")
    try:
        return scale_to_bytes(int(m.group(1)), m.group(2) or None, default=1)
    except ValueError as exc:
        raise CommandFailed(f"Malformed size {text}\ninvalid argument: {exc}") from None


def _looks_like_uuid(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{8}(-?[0-9a-fA-F]{4}){3}-?[0-9a-fA-F]{12}", text))


def pool_lookup(conn: virConnect, name: str) -> Any:
    from pyvirt.errors import PyvirtError

    last: PyvirtError | None = None
    if _looks_like_uuid(name):
        try:
            return conn.storagePoolLookupByUUIDString(name)
        except PyvirtError as exc:
            last = exc
    try:
        return conn.storagePoolLookupByName(name)
    except PyvirtError as exc:
        last = exc
    raise CommandFailed(f"failed to get pool '{name}'\n{last}")


def vol_lookup(conn: virConnect, name: str, pool_name: str | None) -> Any:
    from pyvirt.errors import PyvirtError

    pool = pool_lookup(conn, pool_name) if pool_name else None
    if pool is not None and not pool.isActive():
        raise CommandFailed(f"pool '{pool_name}' is not active")
    last: PyvirtError | None = None
    for how in ("name", "key", "path"):
        try:
            if how == "name":
                if pool is None:
                    continue
                return pool.storageVolLookupByName(name)
            if how == "key":
                return conn.storageVolLookupByKey(name)
            return conn.storageVolLookupByPath(name)
        except PyvirtError as exc:
            last = exc
    raise CommandFailed(f"failed to get vol '{name}'\n{last}")


def _vol(conn: virConnect, args: Args) -> Any:
    return vol_lookup(conn, args.vol, getattr(args, "pool", None))


def _say(args: Args, out: TextIO, text: str) -> None:
    if not args.quiet:
        out.write(text + "\n")


# ---- pools ---------------------------------------------------------------------------------------

def cmd_pool_define(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = read_file(args.file)
    pool = api_call(f"Failed to define pool from {args.file}", conn.storagePoolDefineXML, xml,
                    1 if args.validate else 0)
    _say(args, out, f"Pool {pool.name()} defined from {args.file}")


def cmd_pool_create(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = read_file(args.file)
    flags = (1 if args.build else 0) | (2 if args.overwrite else 0) | (4 if args.no_overwrite else 0)
    pool = api_call(f"Failed to create pool from {args.file}", conn.storagePoolCreateXML, xml, flags)
    _say(args, out, f"Pool {pool.name()} created from {args.file}")


def build_pool_xml(args: Args) -> str:
    """virsh's virshBuildPoolXML for pool-define-as (the common source and target options)."""
    from xml.sax.saxutils import quoteattr

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    lines = [f"<pool type={quoteattr(args.type)}>", f"  <name>{esc(args.name)}</name>"]
    source = []
    if args.source_host:
        source.append(f"    <host name={quoteattr(args.source_host)}/>")
    if args.source_dev:
        source.append(f"    <device path={quoteattr(args.source_dev)}/>")
    if args.source_path:
        source.append(f"    <dir path={quoteattr(args.source_path)}/>")
    if args.source_format:
        source.append(f"    <format type={quoteattr(args.source_format)}/>")
    if args.source_name:
        source.append(f"    <name>{esc(args.source_name)}</name>")
    if source:
        lines += ["  <source>", *source, "  </source>"]
    if args.target:
        lines += ["  <target>", f"    <path>{esc(args.target)}</path>", "  </target>"]
    lines.append("</pool>")
    return "\n".join(lines) + "\n"


def cmd_pool_define_as(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = build_pool_xml(args)
    if args.print_xml:
        out.write(xml)
        return
    pool = api_call(f"Failed to define pool {args.name}", conn.storagePoolDefineXML, xml, 0)
    _say(args, out, f"Pool {pool.name()} defined")


def cmd_pool_build(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    flags = (8 if args.overwrite else 0) | (4 if args.no_overwrite else 0)
    api_call(f"Failed to build pool {args.pool}", pool.build, flags)
    _say(args, out, f"Pool {args.pool} built")


def cmd_pool_start(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    flags = (1 if args.build else 0) | (2 if args.overwrite else 0) | (4 if args.no_overwrite else 0)
    api_call(f"Failed to start pool {pool.name()}", pool.create, flags)
    _say(args, out, f"Pool {pool.name()} started")


def cmd_pool_destroy(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    api_call(f"Failed to destroy pool {args.pool}", pool.destroy)
    _say(args, out, f"Pool {args.pool} destroyed")


def cmd_pool_delete(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    api_call(f"Failed to delete pool {args.pool}", pool.delete, 0)
    _say(args, out, f"Pool {args.pool} deleted")


def cmd_pool_undefine(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    api_call(f"Failed to undefine pool {args.pool}", pool.undefine)
    _say(args, out, f"Pool {args.pool} has been undefined")


def cmd_pool_refresh(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    api_call(f"Failed to refresh pool {args.pool}", pool.refresh, 0)
    _say(args, out, f"Pool {args.pool} refreshed")


def cmd_pool_autostart(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    if args.disable:
        api_call(f"failed to unmark pool {args.pool} as autostarted", pool.setAutostart, 0)
        _say(args, out, f"Pool {args.pool} unmarked as autostarted")
    else:
        api_call(f"failed to mark pool {args.pool} as autostarted", pool.setAutostart, 1)
        _say(args, out, f"Pool {args.pool} marked as autostarted")


def cmd_pool_dumpxml(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    out.write(api_call(None, pool.XMLDesc, 1 if args.inactive else 0))


def cmd_pool_info(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    out.write(f"{'Name:':<15} {pool.name()}\n")
    out.write(f"{'UUID:':<15} {pool.UUIDString()}\n")
    info = api_call(None, pool.info)
    state = info[0]
    out.write(f"{'State:':<15} {_POOL_STATES[state] if 0 <= state < len(_POOL_STATES) else 'unknown'}\n")
    out.write(f"{'Persistent:':<15} {'yes' if pool.isPersistent() else 'no'}\n")
    out.write(f"{'Autostart:':<15} {'yes' if pool.autostart() else 'no'}\n")
    if state in (2, 3):  # running, degraded
        unit = "bytes"
        for label, value in (("Capacity:", info[1]), ("Allocation:", info[2]), ("Available:", info[3])):
            out.write(f"{label:<15} {f'{value} {unit}' if args.bytes else pretty(value)}\n")


def cmd_pool_list(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    flags = 0
    if args.all:
        flags = 0
    elif args.inactive:
        flags = _LIST_INACTIVE
    else:
        flags = _LIST_ACTIVE
    if args.persistent:
        flags |= 4
    if args.transient:
        flags |= 8
    if args.autostart:
        flags |= 16
    if args.no_autostart:
        flags |= 32
    if args.type:
        from pyvirt.storage.driver import _LIST_TYPE_BITS

        for word in args.type.split(","):
            bit = _LIST_TYPE_BITS.get(word.strip())
            if bit is None:
                raise CommandFailed(f"Invalid pool type '{word}'")
            flags |= bit
    pools = sorted(api_call("Failed to list pools", conn.listAllStoragePools, flags), key=lambda p: p.name())
    if args.name:
        out.write("".join(f"{p.name()}\n" for p in pools))
        return
    if args.uuid:
        out.write("".join(f"{p.UUIDString()}\n" for p in pools))
        return
    rows = []
    for p in pools:
        info = p.info()
        active = info[0] in (2, 3)
        autostart = "yes" if p.autostart() else "no"
        if not args.details:
            rows.append([p.name(), "active" if active else "inactive", autostart])
            continue
        state = _POOL_STATES[info[0]] if 0 <= info[0] < len(_POOL_STATES) else "unknown"
        sizes = [pretty(v) for v in info[1:4]] if active else ["-", "-", "-"]
        rows.append([p.name(), state, autostart, "yes" if p.isPersistent() else "no", *sizes])
    header = ["Name", "State", "Autostart"]
    if args.details:
        header += ["Persistent", "Capacity", "Allocation", "Available"]
    out.write(table(rows, None if args.quiet else header))


# ---- volumes -------------------------------------------------------------------------------------

def cmd_vol_create(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    xml = read_file(args.file)
    vol = api_call(f"Failed to create vol from {args.file}", pool.createXML, xml,
                   1 if args.prealloc_metadata else 0)
    _say(args, out, f"Vol {vol.name()} created from {args.file}")


def _vol_xml(name: str, capacity: int, allocation: int | None, fmt: str | None, backing: str | None,
             backing_fmt: str | None) -> str:
    from xml.sax.saxutils import escape, quoteattr

    lines = ["<volume>", f"  <name>{escape(name)}</name>", f"  <capacity>{capacity}</capacity>"]
    if allocation is not None:
        lines.append(f"  <allocation>{allocation}</allocation>")
    if fmt:
        lines += ["  <target>", f"    <format type={quoteattr(fmt)}/>", "  </target>"]
    if backing:
        lines += ["  <backingStore>", f"    <path>{escape(backing)}</path>"]
        if backing_fmt:
            lines.append(f"    <format type={quoteattr(backing_fmt)}/>")
        lines.append("  </backingStore>")
    lines.append("</volume>")
    return "\n".join(lines) + "\n"


def cmd_vol_create_as(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    capacity = parse_size(args.capacity)
    allocation = parse_size(args.allocation) if args.allocation is not None else None
    backing = None
    if args.backing_vol:
        from pyvirt.errors import PyvirtError

        found = None
        for lookup in (lambda: pool.storageVolLookupByName(args.backing_vol),
                       lambda: conn.storageVolLookupByKey(args.backing_vol),
                       lambda: conn.storageVolLookupByPath(args.backing_vol)):
            try:
                found = lookup()
                break
            except PyvirtError:
                continue
        if found is None:
            raise CommandFailed(f"failed to get vol '{args.backing_vol}'")
        backing = found.path()
    xml = _vol_xml(args.name, capacity, allocation, args.format, backing, args.backing_vol_format)
    if args.print_xml:
        out.write(xml)
        return
    vol = api_call(f"Failed to create vol {args.name}", pool.createXML, xml,
                   1 if args.prealloc_metadata else 0)
    _say(args, out, f"Vol {vol.name()} created")


def cmd_vol_create_from(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    source = vol_lookup(conn, args.vol, args.inputpool)
    xml = read_file(args.file)
    vol = api_call(f"Failed to create vol from {args.file}", pool.createXMLFrom, xml, source,
                   1 if args.prealloc_metadata else 0)
    _say(args, out, f"Vol {vol.name()} created from input vol {args.vol}")


def cmd_vol_clone(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    from lxml import etree

    source = _vol(conn, args)
    pool = api_call(None, source.storagePoolLookupByVolume)
    root = etree.fromstring(api_call(None, source.XMLDesc, 0).encode())
    name = root.find("name")
    assert name is not None
    name.text = args.newname
    for tag in ("key",):
        for el in root.findall(tag):
            root.remove(el)
    xml = etree.tostring(root, encoding="unicode")
    vol = api_call(f"Failed to clone vol from {source.name()}", pool.createXMLFrom, xml, source,
                   1 if args.prealloc_metadata else 0)
    _say(args, out, f"Vol {vol.name()} cloned from {source.name()}")


def cmd_vol_list(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    pool = pool_lookup(conn, args.pool)
    vols = sorted(api_call("Failed to list volumes", pool.listAllVolumes, 0), key=lambda v: v.name())
    rows = []
    for v in vols:
        if not args.details:
            rows.append([v.name(), v.path()])
            continue
        info = v.info()
        kind = _VOL_TYPES[info[0]] if 0 <= info[0] < len(_VOL_TYPES) else "unknown"
        rows.append([v.name(), v.path(), kind, pretty(info[1]), pretty(info[2])])
    header = ["Name", "Path"] + (["Type", "Capacity", "Allocation"] if args.details else [])
    out.write(table(rows, None if args.quiet else header))


def cmd_vol_info(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = _vol(conn, args)
    out.write(f"{'Name:':<15} {vol.name()}\n")
    info = api_call(None, vol.info)
    kind = _VOL_TYPES[info[0]] if 0 <= info[0] < len(_VOL_TYPES) else "unknown"
    out.write(f"{'Type:':<15} {kind}\n")
    for label, value in (("Capacity:", info[1]), ("Allocation:", info[2])):
        out.write(f"{label:<15} {f'{value} bytes' if args.bytes else pretty(value)}\n")


def cmd_vol_dumpxml(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = _vol(conn, args)
    out.write(api_call(None, vol.XMLDesc, 0))


def cmd_vol_delete(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = _vol(conn, args)
    api_call(f"Failed to delete vol {args.vol}", vol.delete, 2 if args.delete_snapshots else 0)
    _say(args, out, f"Vol {args.vol} deleted")


def cmd_vol_wipe(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = _vol(conn, args)
    algorithm = 0
    if args.algorithm is not None:
        if args.algorithm not in _WIPE_ALGORITHMS:
            raise CommandFailed(f"Unsupported algorithm '{args.algorithm}'")
        algorithm = _WIPE_ALGORITHMS.index(args.algorithm)
    api_call(f"Failed to wipe vol {args.vol}", vol.wipePattern, algorithm, 0)
    _say(args, out, f"Vol {args.vol} wiped")


def cmd_vol_resize(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = _vol(conn, args)
    text = args.capacity
    flags = (1 if args.allocate else 0) | (2 if args.delta else 0) | (4 if args.shrink else 0)
    body = text
    if body.startswith("-"):
        if not args.shrink:
            raise CommandFailed("negative size requires --shrink")
        body = body[1:]
        flags |= 2
    elif body.startswith("+"):
        body = body[1:]
        flags |= 2
    try:
        capacity = parse_size(body)
    except CommandFailed:
        raise CommandFailed(f"Malformed size {text}") from None
    api_call(f"Failed to change size of volume '{vol.name()}' to {text}", vol.resize, capacity, flags)
    _say(args, out, f"Size of volume '{vol.name()}' successfully changed to {text}")


def _offset_length(args: Args) -> tuple[int, int]:
    offset = args.offset or 0
    length = args.length or 0
    if offset < 0 or length < 0:
        raise CommandFailed("Unable to parse integer: offset and length must not be negative")
    return offset, length


def cmd_vol_upload(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    offset, length = _offset_length(args)
    vol = _vol(conn, args)
    try:
        fd = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CommandFailed(f"cannot read {args.file}: {exc.strerror}") from None
    try:
        stream = conn.newStream(0)
        api_call(f"cannot upload to volume {args.vol}", vol.upload, stream, offset, length, 0)
        try:
            left = length or -1
            while left != 0:
                chunk = os.read(fd, 1 << 16 if left < 0 else min(left, 1 << 16))
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    n = stream.send(bytes(view))
                    view = view[n:]
                if left > 0:
                    left -= len(chunk)
        except OSError as exc:
            stream.abort()
            raise CommandFailed(f"cannot send data to volume {args.vol}: {exc.strerror}") from None
        api_call(f"cannot close volume {args.vol}", stream.finish)
    finally:
        os.close(fd)


def cmd_vol_download(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    offset, length = _offset_length(args)
    vol = _vol(conn, args)
    created = not os.path.exists(args.file)
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise CommandFailed(f"cannot create {args.file}: {exc.strerror}") from None
    ok = False
    try:
        stream = conn.newStream(0)
        api_call(f"cannot download from volume {args.vol}", vol.download, stream, offset, length, 0)
        while True:
            data = stream.recv(1 << 16)
            if not data or not isinstance(data, bytes):
                break
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        api_call(f"cannot close volume {args.vol}", stream.finish)
        ok = True
    finally:
        os.close(fd)
        if not ok and created:
            os.unlink(args.file)


def cmd_vol_path(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = _vol(conn, args)
    out.write(api_call(None, vol.path) + "\n")


def cmd_vol_key(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = _vol(conn, args)
    out.write(vol.key() + "\n")


def cmd_vol_name(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = vol_lookup(conn, args.vol, None)
    out.write(vol.name() + "\n")


def cmd_vol_pool(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    vol = vol_lookup(conn, args.vol, None)
    pool = api_call(None, vol.storagePoolLookupByVolume)
    out.write((pool.UUIDString() if args.uuid else pool.name()) + "\n")


# -- pool-event ---------------------------------------------------------------------------------------

#: virsh's words for virStoragePoolEventLifecycleType
_POOL_EVENT_WORDS = ("Defined", "Undefined", "Started", "Stopped", "Created", "Deleted")


def cmd_pool_event(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    from pyvirt.cli.cmd_network import one_shot, watch_events

    def lifecycle(waiter: Any) -> Any:
        return one_shot(waiter, lambda _c, pool, event, _detail, _opaque: (
            f"event 'lifecycle' for storage pool {pool.name()}: "
            f"{_POOL_EVENT_WORDS[event] if 0 <= event < len(_POOL_EVENT_WORDS) else 'unknown'}"))

    def refresh(waiter: Any) -> Any:
        return one_shot(waiter, lambda _c, pool, _opaque: f"event 'refresh' for storage pool {pool.name()}")

    target = pool_lookup(conn, args.pool) if args.pool and not args.list else None
    watch_events(args, out, ("lifecycle", "refresh"), require_api(conn, "storagePoolEventRegisterAny"),
                 require_api(conn, "storagePoolEventDeregisterAny"), target, {0: lifecycle, 1: refresh})
