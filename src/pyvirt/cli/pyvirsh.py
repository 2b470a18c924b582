# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh: virsh's commands and output over pyvirt.

Start-up is kept short: only this module and argparse load before a command runs; each command
imports what it needs. The command table below is the single place a command is declared.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

if TYPE_CHECKING:
    import argparse

    from pyvirt.connection import virConnect

CommandFn = Callable[["virConnect", "argparse.Namespace", TextIO], int]


class Command(NamedTuple):
    name: str
    summary: str
    run: CommandFn
    #: adds the command's own options to its parser; None for a command that takes none
    options: Callable[[argparse.ArgumentParser], None] | None = None


def _cmd_uri(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(conn.getURI() + "\n")
    return 0


def _cmd_hostname(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(conn.getHostname() + "\n")
    return 0


def _version_text(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def _cmd_version(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.connection import getVersion

    lib = _version_text(getVersion())
    hv_type = conn.getType()
    out.write(f"Compiled against library: libvirt {lib}\n")
    out.write(f"Using library: libvirt {lib}\n")
    out.write(f"Using API: {hv_type} {lib}\n")
    out.write(f"Running hypervisor: {hv_type} {_version_text(conn.getVersion())}\n")
    if args.daemon:
        out.write(f"Running against daemon: {_version_text(conn.getLibVersion())}\n")
    return 0


def _version_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--daemon", action="store_true", help="report daemon version too")


def _cmd_capabilities(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(conn.getCapabilities())
    return 0


def _cmd_domcapabilities(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(conn.getDomainCapabilities(args.emulatorbin, args.arch, args.machine, args.virttype))
    return 0


def _domcapabilities_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--virttype", help="virtualization type (/domain/@type)")
    parser.add_argument("--emulatorbin", help="path to emulator binary (/domain/devices/emulator)")
    parser.add_argument("--arch", help="domain architecture (/domain/os/type/@arch)")
    parser.add_argument("--machine", help="machine type (/domain/os/type/@machine)")


class CommandFailed(Exception):
    """A command's own failure, printed as virsh prints it: 'error: ...' lines."""


def _lookup(conn: virConnect, name: str) -> Any:
    """A domain as virsh finds it: by id when the argument is a number, by UUID when it looks like
    one, else by name (each later way is tried when the earlier one finds nothing)."""
    from pyvirt.errors import PyvirtError

    try:
        if name.isdigit():
            try:
                return conn.lookupByID(int(name))
            except PyvirtError:
                pass
        if len(name) == 36 and name.count("-") == 4:
            try:
                return conn.lookupByUUIDString(name)
            except PyvirtError:
                pass
        return conn.lookupByName(name)
    except PyvirtError:
        raise CommandFailed(f"failed to get domain '{name}'") from None


def _cmd_define(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.connection import VIR_DOMAIN_DEFINE_VALIDATE
    from pyvirt.errors import PyvirtError

    try:
        with open(args.file, encoding="utf-8") as f:
            xml = f.read()
    except OSError as exc:
        raise CommandFailed(f"Failed to open file '{args.file}': {exc.strerror}") from None
    try:
        dom = conn.defineXMLFlags(xml, VIR_DOMAIN_DEFINE_VALIDATE if args.validate else 0)
    except PyvirtError as exc:
        raise CommandFailed(f"Failed to define domain from {args.file}\nerror: {exc}") from None
    out.write(f"Domain '{dom.name()}' defined from {args.file}\n\n")
    return 0


def _define_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="file containing an XML domain description")
    parser.add_argument("--validate", action="store_true", help="validate the XML against the schema")


def _cmd_dumpxml(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.connection import VIR_DOMAIN_XML_INACTIVE, VIR_DOMAIN_XML_SECURE

    flags = (VIR_DOMAIN_XML_INACTIVE if args.inactive else 0) | (
        VIR_DOMAIN_XML_SECURE if args.security_info else 0)
    out.write(_lookup(conn, args.domain).XMLDesc(flags) + "\n")  # virsh adds a blank line
    return 0


def _dumpxml_options(parser: argparse.ArgumentParser) -> None:
    _domain_arg(parser)
    parser.add_argument("--inactive", action="store_true", help="show inactive defined XML")
    parser.add_argument("--security-info", action="store_true", help="include security sensitive info")


def _cmd_undefine(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.errors import PyvirtError

    dom = _lookup(conn, args.domain)
    try:
        dom.undefine()
    except PyvirtError as exc:
        raise CommandFailed(f"Failed to undefine domain '{args.domain}'\nerror: {exc}") from None
    out.write(f"Domain '{dom.name()}' has been undefined\n\n")
    return 0


def _domain_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain", help="domain name or uuid")


# virsh's words for libvirt's states and reasons (tools/virsh-domain-monitor.c), by number.
_STATES = ("no state", "running", "idle", "paused", "in shutdown", "shut off", "crashed", "pmsuspended")
_REASONS: dict[int, tuple[str, ...]] = {
    0: ("unknown",),
    1: ("unknown", "booted", "migrated", "restored", "from snapshot", "unpaused", "migration canceled",
        "save canceled", "event wakeup", "crashed", "post-copy", "post-copy failed"),
    2: ("unknown",),
    3: ("unknown", "user", "migrating", "saving", "dumping", "I/O error", "watchdog", "from snapshot",
        "shutting down", "creating snapshot", "crashed", "starting up", "post-copy", "post-copy failed"),
    4: ("unknown", "user"),
    5: ("unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot",
        "daemon"),
    6: ("unknown", "panicked"),
    7: ("unknown",),
}


def _state_text(state: int) -> str:
    return _STATES[state] if 0 <= state < len(_STATES) else "no state"


def _reason_text(state: int, reason: int) -> str:
    names = _REASONS.get(state, ("unknown",))
    return names[reason] if 0 <= reason < len(names) else "unknown"


def _lifecycle(conn: virConnect, args: argparse.Namespace, action: str,
               call: Callable[[Any], object]) -> str:
    """Run one lifecycle call on the domain named in ``args``; the domain's name."""
    from pyvirt.errors import PyvirtError

    dom = _lookup(conn, args.domain)
    try:
        call(dom)
    except PyvirtError as exc:
        raise CommandFailed(f"Failed to {action} domain '{dom.name()}'\nerror: {exc}") from None
    return str(dom.name())


def _cmd_start(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.connection import VIR_DOMAIN_START_PAUSED

    dom = _lookup(conn, args.domain)
    if dom.isActive():
        raise CommandFailed("Domain is already active")
    name = _lifecycle(conn, args, "start",
                      lambda d: d.createWithFlags(VIR_DOMAIN_START_PAUSED if args.paused else 0))
    out.write(f"Domain '{name}' started\n\n")
    return 0


def _start_options(parser: argparse.ArgumentParser) -> None:
    _domain_arg(parser)
    parser.add_argument("--paused", action="store_true", help="leave the guest paused after creation")


def _cmd_destroy(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.connection import VIR_DOMAIN_DESTROY_GRACEFUL

    flags = VIR_DOMAIN_DESTROY_GRACEFUL if args.graceful else 0
    name = _lifecycle(conn, args, "destroy", lambda d: d.destroyFlags(flags))
    out.write(f"Domain '{name}' destroyed\n\n")
    return 0


def _destroy_options(parser: argparse.ArgumentParser) -> None:
    _domain_arg(parser)
    parser.add_argument("--graceful", action="store_true",
                        help="terminate gracefully (SIGTERM only, no SIGKILL)")


def _cmd_shutdown(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    name = _lifecycle(conn, args, "shutdown", lambda d: d.shutdown())
    out.write(f"Domain '{name}' is being shutdown\n\n")
    return 0


def _cmd_suspend(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    name = _lifecycle(conn, args, "suspend", lambda d: d.suspend())
    out.write(f"Domain '{name}' suspended\n\n")
    return 0


def _cmd_resume(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    name = _lifecycle(conn, args, "resume", lambda d: d.resume())
    out.write(f"Domain '{name}' resumed\n\n")
    return 0


def _cmd_domstate(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    state, reason = _lookup(conn, args.domain).state()
    if args.reason:
        out.write(f"{_state_text(state)} ({_reason_text(state, reason)})\n\n")
    else:
        out.write(f"{_state_text(state)}\n\n")
    return 0


def _domstate_options(parser: argparse.ArgumentParser) -> None:
    _domain_arg(parser)
    parser.add_argument("--reason", action="store_true", help="also print reason for the state")


def _cmd_domid(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    dom_id = _lookup(conn, args.domain).ID()
    out.write(("-" if dom_id < 0 else str(dom_id)) + "\n\n")
    return 0


def _cmd_reboot(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    name = _lifecycle(conn, args, "reboot", lambda d: d.reboot(0))
    out.write(f"Domain '{name}' is being rebooted\n\n")
    return 0


def _cmd_reset(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    name = _lifecycle(conn, args, "reset", lambda d: d.reset(0))
    out.write(f"Domain '{name}' was reset\n\n")
    return 0


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CommandFailed(f"Failed to open file '{path}': {exc.strerror}") from None


def _cmd_create(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.connection import VIR_DOMAIN_START_PAUSED, VIR_DOMAIN_START_VALIDATE
    from pyvirt.errors import PyvirtError

    xml = _read_file(args.file)
    flags = ((VIR_DOMAIN_START_PAUSED if args.paused else 0)
             | (VIR_DOMAIN_START_VALIDATE if args.validate else 0))
    try:
        dom = conn.createXML(xml, flags)
    except PyvirtError as exc:
        raise CommandFailed(f"Failed to create domain from {args.file}\nerror: {exc}") from None
    out.write(f"Domain '{dom.name()}' created from {args.file}\n\n")
    return 0


def _create_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="file containing an XML domain description")
    parser.add_argument("--paused", action="store_true", help="leave the guest paused after creation")
    parser.add_argument("--validate", action="store_true", help="validate the XML against the schema")


def _cmd_autostart(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.errors import PyvirtError

    dom = _lookup(conn, args.domain)
    name = dom.name()
    try:
        dom.setAutostart(0 if args.disable else 1)
    except PyvirtError as exc:
        what = "unmark" if args.disable else "mark"
        raise CommandFailed(f"Failed to {what} domain '{name}' as autostarted\nerror: {exc}") from None
    if not args.quiet:  # virsh's vshPrintExtra: a message that -q silences
        out.write(f"Domain '{name}' {'unmarked' if args.disable else 'marked'} as autostarted\n\n")
    return 0


def _autostart_options(parser: argparse.ArgumentParser) -> None:
    _domain_arg(parser)
    parser.add_argument("--disable", action="store_true", help="disable autostarting")


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...] | None) -> str:
    """virsh's vshTable: a leading space, columns 3 apart, the last one unpadded, a dashed rule
    two wider than the header, and a blank line at the end; quiet (no header) sizes by rows only."""
    lines = [*([header] if header else []), *rows]
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []

    def fmt(cells: tuple[str, ...]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)] + [cells[-1]]
        return " " + "   ".join(padded)

    text = ""
    if header:
        text += fmt(header) + "\n" + "-" * (1 + sum(widths) + 3 * (len(widths) - 1) + 2) + "\n"
    return text + "".join(fmt(r) + "\n" for r in rows) + "\n"


def _cmd_list(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt import connection as c

    if args.all:
        flags = 0
    elif args.inactive:
        flags = c.VIR_CONNECT_LIST_DOMAINS_INACTIVE
    else:
        flags = c.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    if args.persistent:
        flags |= c.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
    if args.transient:
        flags |= c.VIR_CONNECT_LIST_DOMAINS_TRANSIENT
    if args.autostart:
        flags |= c.VIR_CONNECT_LIST_DOMAINS_AUTOSTART
    if args.no_autostart:
        flags |= c.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART
    domains = conn.listAllDomains(flags)
    # virsh's order: running domains by id, then the inactive ones by name
    entries = sorted(((d.ID(), d) for d in domains),
                     key=lambda e: (e[0] < 0, e[0] if e[0] >= 0 else 0, e[1].name()))
    if args.name or args.uuid:
        for _, dom in entries:
            out.write((dom.name() if args.name else dom.UUIDString()) + "\n")
        out.write("\n")
        return 0
    rows = [("-" if dom_id < 0 else str(dom_id), dom.name(), _state_text(dom.state()[0]))
            for dom_id, dom in entries]
    out.write(_table(rows, None if getattr(args, "quiet", False) else ("Id", "Name", "State")))
    return 0


def _list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="list inactive & active domains")
    parser.add_argument("--inactive", action="store_true", help="list inactive domains")
    parser.add_argument("--persistent", action="store_true", help="list persistent domains")
    parser.add_argument("--transient", action="store_true", help="list transient domains")
    parser.add_argument("--autostart", action="store_true", help="list domains with autostart enabled")
    parser.add_argument("--no-autostart", action="store_true", help="list domains with autostart disabled")
    parser.add_argument("--name", action="store_true", help="list domain names only")
    parser.add_argument("--uuid", action="store_true", help="list uuid's only")


def _cmd_dominfo(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    dom = _lookup(conn, args.domain)
    state, max_mem, mem, vcpus, cpu_ns = dom.info()
    dom_id = dom.ID()
    model, doi = conn.getSecurityModel()
    os_type = dom.OSType()
    fields = [("Id", "-" if dom_id < 0 else str(dom_id)), ("Name", dom.name()), ("UUID", dom.UUIDString()),
              ("OS Type", os_type), ("State", _state_text(state)), ("CPU(s)", str(vcpus))]
    if dom_id >= 0:
        fields.append(("CPU time", f"{cpu_ns / 1e9:.1f}s"))
    fields += [("Max memory", f"{max_mem} KiB"), ("Used memory", f"{mem} KiB"),
               ("Persistent", "yes" if dom.isPersistent() else "no"),
               ("Autostart", "enable" if dom.autostart() else "disable"),
               ("Managed save", "yes" if dom.hasManagedSaveImage() else "no"),
               ("Security model", model), ("Security DOI", doi)]
    out.write("".join(f"{label + ':':<15} {value}\n" for label, value in fields) + "\n")
    return 0


def _cmd_domuuid(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(_lookup(conn, args.domain).UUIDString() + "\n\n")
    return 0


def _cmd_domname(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(_lookup(conn, args.domain).name() + "\n\n")
    return 0


def _cmd_domxml_to_native(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(conn.domainXMLToNative(args.format, _read_file(args.file)) + "\n")
    return 0


def _cmd_domxml_from_native(conn: virConnect, args: argparse.Namespace, out: TextIO) -> int:
    out.write(conn.domainXMLFromNative(args.format, _read_file(args.config)) + "\n")
    return 0


def _to_native_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", help="target config data type format")
    parser.add_argument("file", help="domain XML file")


def _from_native_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", help="source config data format")
    parser.add_argument("config", help="config data file to import from")


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("uri", "print the hypervisor canonical URI", _cmd_uri),
    Command("hostname", "print the hypervisor hostname", _cmd_hostname),
    Command("version", "show version", _cmd_version, _version_options),
    Command("capabilities", "capabilities", _cmd_capabilities),
    Command("domcapabilities", "domain capabilities", _cmd_domcapabilities, _domcapabilities_options),
    Command("define", "define (but don't start) a domain from an XML file", _cmd_define,
            _define_options),
    Command("dumpxml", "domain information in XML", _cmd_dumpxml, _dumpxml_options),
    Command("undefine", "undefine a domain", _cmd_undefine, _domain_arg),
    Command("start", "start a (previously defined) inactive domain", _cmd_start, _start_options),
    Command("destroy", "destroy (stop) a domain", _cmd_destroy, _destroy_options),
    Command("shutdown", "gracefully shutdown a domain", _cmd_shutdown, _domain_arg),
    Command("suspend", "suspend a domain", _cmd_suspend, _domain_arg),
    Command("resume", "resume a domain", _cmd_resume, _domain_arg),
    Command("domstate", "domain state", _cmd_domstate, _domstate_options),
    Command("domid", "convert a domain name or UUID to domain id", _cmd_domid, _domain_arg),
    Command("domuuid", "convert a domain name or id to domain UUID", _cmd_domuuid, _domain_arg),
    Command("domname", "convert a domain id or UUID to domain name", _cmd_domname, _domain_arg),
    Command("dominfo", "domain information", _cmd_dominfo, _domain_arg),
    Command("list", "list domains", _cmd_list, _list_options),
    Command("create", "create a domain from an XML file", _cmd_create, _create_options),
    Command("reboot", "reboot a domain", _cmd_reboot, _domain_arg),
    Command("reset", "reset a domain", _cmd_reset, _domain_arg),
    Command("autostart", "autostart a domain", _cmd_autostart, _autostart_options),
    Command("domxml-to-native", "Convert domain XML to native config", _cmd_domxml_to_native,
            _to_native_options),
    Command("domxml-from-native", "Convert native config to domain XML", _cmd_domxml_from_native,
            _from_native_options),
)}

# Commands that need no connection at all.
_LOCAL = {"help"}


def _help(out: TextIO) -> None:
    out.write("Usage: pyvirsh [-c URI] [-q] COMMAND [ARGS...]\n\n Commands:\n")
    for cmd in COMMANDS.values():
        out.write(f"    {cmd.name:<18}{cmd.summary}\n")
    out.write("\n  (specify help <command> for details about the command)\n")


class GlobalOptions(NamedTuple):
    connect: str | None
    readonly: bool
    quiet: bool
    help: bool
    version: bool
    command: str | None
    args: list[str]


class UsageError(Exception):
    pass


_FLAGS = {"-r": "readonly", "--readonly": "readonly", "-q": "quiet", "--quiet": "quiet",
          "-h": "help", "--help": "help", "-v": "version", "--version": "version"}


def parse_global(argv: Sequence[str]) -> GlobalOptions:
    """virsh's options before the command; by hand, since argparse alone costs a few ms a run."""
    flags = dict.fromkeys(_FLAGS.values(), False)
    connect = None
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        if arg in ("-c", "--connect"):
            if i + 1 >= len(argv):
                raise UsageError(f"option '{arg}' requires an argument")
            connect = argv[i + 1]
            i += 1
        elif arg.startswith("--connect="):
            connect = arg.partition("=")[2]
        elif arg.startswith("-c") and len(arg) > 2:
            connect = arg[2:]
        elif arg in _FLAGS:
            flags[_FLAGS[arg]] = True
        else:
            raise UsageError(f"unsupported option '{arg}'. See --help.")
        i += 1
    command = argv[i] if i < len(argv) else None
    return GlobalOptions(connect, flags["readonly"], flags["quiet"], flags["help"], flags["version"],
                         command, list(argv[i + 1:]))


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        opts = parse_global(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return 1
    if opts.version:
        from pyvirt.connection import getVersion

        out.write(_version_text(getVersion()) + "\n")
        return 0
    if opts.help or opts.command is None or opts.command in _LOCAL:
        if opts.args and opts.args[0] in COMMANDS:
            _command_parser(COMMANDS[opts.args[0]]).print_help(out)
        else:
            _help(out)
        return 0
    command = COMMANDS.get(opts.command)
    if command is None:
        err.write(f"error: unknown command: '{opts.command}'\n")
        return 1
    args = _command_args(command, opts.args)
    args.quiet = opts.quiet  # tables drop their header, and messages their words, under -q

    from pyvirt.errors import PyvirtError

    try:
        from pyvirt.connection import open as open_connection
        from pyvirt.connection import openReadOnly

        conn = (openReadOnly if opts.readonly else open_connection)(opts.connect)
    except PyvirtError as exc:
        err.write(f"error: failed to connect to the hypervisor\nerror: {exc}\n")
        return 1
    try:
        if not opts.quiet:
            return command.run(conn, args, out)
        # virsh -q leaves out the blank line it prints after a command's output.
        import io

        buffer = io.StringIO()
        try:
            return command.run(conn, args, buffer)
        finally:
            text = buffer.getvalue()
            out.write(text[:-1] if text.endswith("\n\n") or text == "\n" else text)
    except CommandFailed as exc:
        err.write(f"error: {exc}\n")
        return 1
    except PyvirtError as exc:
        err.write(f"error: {exc}\n")
        return 1
    finally:
        conn.close()


def _command_parser(command: Command) -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog=f"pyvirsh {command.name}", description=command.summary)
    if command.options is not None:
        command.options(parser)
    return parser


def _command_args(command: Command, args: list[str]) -> argparse.Namespace:
    if command.options is None and not args:
        from types import SimpleNamespace

        return SimpleNamespace()  # type: ignore[return-value]
    return _command_parser(command).parse_args(args)


if __name__ == "__main__":
    sys.exit(main())
