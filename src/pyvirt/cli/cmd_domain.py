# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's commands that change domains: define, undefine, edit, the lifecycle, autostart, and
the XML a domain is described by (dumpxml, domxml-to-native, domxml-from-native)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from pyvirt.cli.common import CommandFailed, api_call, lookup, read_file

if TYPE_CHECKING:
    from pyvirt.cli.options import Args
    from pyvirt.connection import virConnect

# libvirt's flag values (stable ABI), for flags the public API may not name yet
_UNDEFINE_MANAGED_SAVE = 1
_UNDEFINE_SNAPSHOTS_METADATA = 2
_UNDEFINE_NVRAM = 4
_UNDEFINE_KEEP_NVRAM = 8
_UNDEFINE_CHECKPOINTS_METADATA = 16
_UNDEFINE_TPM = 32
_UNDEFINE_KEEP_TPM = 64
_XML_SECURE = 1
_XML_INACTIVE = 2
_DEFINE_VALIDATE = 1
_START_PAUSED = 1
_START_VALIDATE = 16
_DESTROY_GRACEFUL = 1


def cmd_define(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = read_file(args.file)
    dom = api_call(f"Failed to define domain from {args.file}", conn.defineXMLFlags, xml,
                   _DEFINE_VALIDATE if args.validate else 0)
    out.write(f"Domain '{dom.name()}' defined from {args.file}\n")


def _exclusive(args: Args, *names: str) -> None:
    given = [n for n in names if getattr(args, n.replace("-", "_"))]
    if len(given) > 1:
        raise CommandFailed(f"Options --{given[0]} and --{given[1]} are mutually exclusive")


def _disk_sources(dom: Any) -> list[tuple[str, str]]:
    """(target, source) of the domain's disks that have a source, from its definition."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(dom.XMLDesc(_XML_INACTIVE))
    found = []
    for disk in root.iterfind("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        path = None if source is None else (source.get("file") or source.get("dev")
                                            or source.get("dir") or source.get("name"))
        if target is not None and path:
            found.append((target.get("dev") or "", path))
    return found


def cmd_undefine(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    _exclusive(args, "nvram", "keep-nvram")
    _exclusive(args, "tpm", "keep-tpm")
    if args.delete_storage_volume_snapshots and not args.remove_all_storage:
        raise CommandFailed("Option --delete-storage-volume-snapshots requires --remove-all-storage")
    if args.wipe_storage and not (args.storage or args.remove_all_storage):
        raise CommandFailed("'--wipe-storage' requires '--storage <string>' or '--remove-all-storage'")
    _exclusive(args, "storage", "remove-all-storage")
    dom = lookup(conn, args.domain)
    name = dom.name()
    flags = ((_UNDEFINE_MANAGED_SAVE if args.managed_save else 0)
             | (_UNDEFINE_SNAPSHOTS_METADATA if args.snapshots_metadata else 0)
             | (_UNDEFINE_CHECKPOINTS_METADATA if args.checkpoints_metadata else 0)
             | (_UNDEFINE_NVRAM if args.nvram else 0) | (_UNDEFINE_KEEP_NVRAM if args.keep_nvram else 0)
             | (_UNDEFINE_TPM if args.tpm else 0) | (_UNDEFINE_KEEP_TPM if args.keep_tpm else 0))
    doomed: list[tuple[str, str]] = []
    if args.storage or args.remove_all_storage:
        if dom.isActive():
            raise CommandFailed("Storage volume deletion is supported only on stopped domains")
        disks = _disk_sources(dom)
        if args.storage:
            wanted = [w for w in args.storage.split(",") if w]
            for w in wanted:
                if not any(w in pair for pair in disks):
                    raise CommandFailed(f"Volume '{w}' was not found in domain's definition.")
            disks = [pair for pair in disks if pair[0] in wanted or pair[1] in wanted]
        doomed = disks
    api_call(f"Failed to undefine domain '{name}'", dom.undefineFlags, flags)
    out.write(f"Domain '{name}' has been undefined\n")
    # pyvirt has no storage driver, so no image belongs to a pool it manages; like libvirt for an
    # unmanaged volume, it deletes nothing and names each one left in place.
    for target, path in doomed:
        err.write(f"error: Storage volume '{target}'({path}) is not managed by pyvirt. "
                  "Remove it manually.\n")


def cmd_dumpxml(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    flags = (_XML_INACTIVE if args.inactive else 0) | (_XML_SECURE if args.security_info else 0)
    dom = lookup(conn, args.domain)
    xml = api_call(None, dom.XMLDesc, flags)
    out.write(xml if xml.endswith("\n") else xml + "\n")  # libvirt's XML ends with one already


def _lifecycle(conn: virConnect, args: Args, action: str, call: Callable[[Any], object]) -> str:
    """Run one lifecycle call on the domain named in ``args``; the domain's name."""
    dom = lookup(conn, args.domain)
    api_call(f"Failed to {action} domain '{dom.name()}'", call, dom)
    return str(dom.name())


def cmd_start(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    dom = lookup(conn, args.domain)
    if dom.isActive():
        raise CommandFailed("Domain is already active")
    name = dom.name()
    api_call(f"Failed to start domain '{name}'", dom.createWithFlags,
             _START_PAUSED if args.paused else 0)
    out.write(f"Domain '{name}' started\n")
    if args.console:
        from pyvirt.cli.cmd_qemu import run_console

        out.flush()
        run_console(dom, None, False, out)


def cmd_create(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = read_file(args.file)
    flags = (_START_PAUSED if args.paused else 0) | (_START_VALIDATE if args.validate else 0)
    dom = api_call(f"Failed to create domain from {args.file}", conn.createXML, xml, flags)
    out.write(f"Domain '{dom.name()}' created from {args.file}\n")
    if args.console:
        from pyvirt.cli.cmd_qemu import run_console

        out.flush()
        run_console(dom, None, False, out)


def cmd_destroy(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    flags = _DESTROY_GRACEFUL if args.graceful else 0
    name = _lifecycle(conn, args, "destroy", lambda d: d.destroyFlags(flags))
    out.write(f"Domain '{name}' destroyed\n")


def cmd_shutdown(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    name = _lifecycle(conn, args, "shutdown", lambda d: d.shutdown())
    out.write(f"Domain '{name}' is being shutdown\n")


def cmd_suspend(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    name = _lifecycle(conn, args, "suspend", lambda d: d.suspend())
    out.write(f"Domain '{name}' suspended\n")


def cmd_resume(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    name = _lifecycle(conn, args, "resume", lambda d: d.resume())
    out.write(f"Domain '{name}' resumed\n")


def cmd_reboot(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    name = _lifecycle(conn, args, "reboot", lambda d: d.reboot(0))
    out.write(f"Domain '{name}' is being rebooted\n")


def cmd_reset(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    name = _lifecycle(conn, args, "reset", lambda d: d.reset(0))
    out.write(f"Domain '{name}' was reset\n")


def cmd_autostart(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    dom = lookup(conn, args.domain)
    name = dom.name()
    what = "unmark" if args.disable else "mark"
    api_call(f"Failed to {what} domain '{name}' as autostarted", dom.setAutostart,
             0 if args.disable else 1)
    if not args.quiet:  # virsh's vshPrintExtra: a message that -q silences
        out.write(f"Domain '{name}' {what}ed as autostarted\n")


def cmd_domxml_to_native(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(api_call(None, conn.domainXMLToNative, args.format, read_file(args.xml)))


def cmd_domxml_from_native(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(api_call(None, conn.domainXMLFromNative, args.format, read_file(args.config)))


# -- edit -------------------------------------------------------------------------------------------

_EDIT_PROMPT_HELP = ("y - yes, start editor again\n"
                     "n - no, throw away my changes\n"
                     "i - turn off validation and try to redefine again\n"
                     "f - force, try to redefine again\n"
                     "? - print this help\n")


def _run_editor(path: str) -> None:
    import os
    import shlex
    import subprocess

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    # As virsh: the editor setting may carry arguments, so the shell reads it; the file name is quoted.
    try:
        status = subprocess.run(["/bin/sh", "-c", f"{editor} {shlex.quote(path)}"], check=False).returncode
    except OSError as exc:
        raise CommandFailed(f"{editor}: cannot run the editor: {exc.strerror}") from None
    if status != 0:
        raise CommandFailed(f"{editor} {path}: exited with status {status}; nothing was changed")


def _ask(prompt: str) -> str:
    import sys

    while True:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            return "n"
        answer = line.strip().lower()[:1]
        if answer == "?":
            sys.stdout.write(_EDIT_PROMPT_HELP)
        elif answer in ("y", "n", "i", "f"):
            return answer


def cmd_edit(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    """virsh's edit: the inactive XML (secrets included) in $VISUAL/$EDITOR on a private temporary
    copy, then defined again (validated unless --skip-validate). A mistake without a terminal to
    ask on changes nothing and fails."""
    import os
    import sys
    import tempfile

    from pyvirt.errors import PyvirtError

    dom = lookup(conn, args.domain)
    name = dom.name()
    original = api_call(None, dom.XMLDesc, _XML_INACTIVE | _XML_SECURE)
    fd, path = tempfile.mkstemp(prefix="pyvirsh", suffix=".xml")  # mode 0600: secrets inside
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(original)
        validate = not args.skip_validate
        edit = True
        while True:
            if edit:
                _run_editor(path)
                edited = read_file(path)
                if edited == original:
                    out.write(f"Domain '{name}' XML configuration not changed.\n")
                    return
            try:
                new = conn.defineXMLFlags(edited, _DEFINE_VALIDATE if validate else 0)
                break
            except PyvirtError as exc:
                if not sys.stdin.isatty():
                    raise CommandFailed(f"{exc}\nFailed to define domain '{name}' from the edited "
                                        "XML; its definition is unchanged") from None
                err.write(f"error: {exc}\n")
                err.flush()
                answer = _ask("Failed. Try again? [y,n,i,f,?]:")
                if answer == "n":
                    raise CommandFailed(f"Domain '{name}' XML configuration not changed, edits "
                                        "thrown away") from None
                edit = answer == "y"
                if answer in ("i", "f"):
                    validate = False
    finally:
        os.unlink(path)
    out.write(f"Domain '{new.name()}' XML configuration edited.\n")
