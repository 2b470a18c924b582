# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh: virsh's commands, options and output over pyvirt.

Start-up is kept short: this module and :mod:`pyvirt.cli.options` are all that load before a
command runs; the table below names each command's options and the module and function that run
it, imported only when that command runs. The table is the single place a command is declared (the
help, the parser and bash completion read it).

As virsh: global options, then the command and its options; `error: ...` lines on stderr and exit
status 1 on failure; a blank line after each command's output unless -q.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from pyvirt.cli.options import Opt, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pyvirt.cli.options import Args


class Command:
    """One command (plain classes here: each NamedTuple class costs start-up time)."""

    __slots__ = ("name", "summary", "target", "opts", "local")

    def __init__(self, name: str, summary: str, target: str, opts: tuple[Opt, ...] = (),
                 local: bool = False) -> None:
        self.name = name
        self.summary = summary
        #: "module:function" below pyvirt.cli, called as function(conn, args, out, err)
        self.target = target
        self.opts = opts
        #: runs without a connection
        self.local = local


def _b(name: str, text: str) -> Opt:
    return Opt(name, "bool", text)


def _s(name: str, text: str, *, required: bool = False, positional: bool = True) -> Opt:
    return Opt(name, "string", text, required=required, positional=positional)


def _n(name: str, text: str) -> Opt:
    return Opt(name, "number", text, positional=False)


_DOMAIN = _s("domain", "domain name, id or uuid", required=True)
_FILE = _s("file", "file containing an XML domain description", required=True)
_LIST_OPTS = (
    _b("inactive", "list inactive domains"), _b("all", "list inactive & active domains"),
    _b("transient", "list transient domains"), _b("persistent", "list persistent domains"),
    _b("with-snapshot", "list domains with existing snapshot"),
    _b("without-snapshot", "list domains without a snapshot"),
    _b("with-checkpoint", "list domains with existing checkpoint"),
    _b("without-checkpoint", "list domains without a checkpoint"),
    _b("state-running", "list domains in running state"), _b("state-paused", "list domains in paused state"),
    _b("state-shutoff", "list domains in shutoff state"), _b("state-other", "list domains in other states"),
    _b("autostart", "list domains with autostart enabled"),
    _b("no-autostart", "list domains with autostart disabled"),
    _b("with-managed-save", "list domains with managed save state"),
    _b("without-managed-save", "list domains without managed save"),
    _b("uuid", "list uuid's only"), _b("name", "list domain names only"), _b("id", "list domain IDs only"),
    _b("table", "list table (default)"),
    _b("managed-save", "mark inactive domains with managed save state"),
)
_UNDEFINE_OPTS = (
    _DOMAIN, _b("managed-save", "remove domain managed state file"),
    _s("storage", "remove associated storage volumes (comma separated list of targets or source paths) "
       "(see domblklist)", positional=False),
    _b("remove-all-storage", "remove all associated storage volumes (use with caution)"),
    _b("delete-storage-volume-snapshots", "delete snapshots associated with volume(s), requires "
       "--remove-all-storage (must be supported by storage driver)"),
    _b("wipe-storage", "wipe data on the removed volumes"),
    _b("snapshots-metadata", "remove all domain snapshot metadata (vm must be inactive)"),
    _b("checkpoints-metadata", "remove all domain checkpoint metadata (vm must be inactive)"),
    _b("nvram", "remove nvram file"), _b("keep-nvram", "keep nvram file"),
    _b("tpm", "remove TPM state"), _b("keep-tpm", "keep TPM state"),
)
_CONSOLE = _b("console", "attach to console after creation")
_PAUSED = _b("paused", "leave the guest paused after creation")
_EVENT_COMMON = (_s("domain", "filter by domain name, id or uuid", positional=False),)
_LOOP = _b("loop", "loop until timeout or interrupt, rather than one-shot")
_TIMEOUT = _n("timeout", "timeout seconds")
_TIMESTAMP = _b("timestamp", "show timestamp for each printed event")

_SECRET = _s("secret", "secret UUID", required=True)
COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("help", "print help", "", (_s("command", "Prints global help, command specific help, or "
                                         "help for a group of related commands"),), local=True),
    Command("uri", "print the hypervisor canonical URI", "cmd_host:cmd_uri"),
    Command("hostname", "print the hypervisor hostname", "cmd_host:cmd_hostname"),
    Command("version", "show version", "cmd_host:cmd_version", (_b("daemon", "report daemon version too"),)),
    Command("capabilities", "capabilities", "cmd_host:cmd_capabilities"),
    Command("domcapabilities", "domain capabilities", "cmd_host:cmd_domcapabilities", (
        _s("virttype", "virtualization type (/domain/@type)"),
        _s("emulatorbin", "path to emulator binary (/domain/devices/emulator)"),
        _s("arch", "domain architecture (/domain/os/type/@arch)"),
        _s("machine", "machine type (/domain/os/type/@machine)"))),
    Command("define", "define (but don't start) a domain from an XML file", "cmd_domain:cmd_define",
            (_FILE, _b("validate", "validate the XML against the schema"))),
    Command("undefine", "undefine a domain", "cmd_domain:cmd_undefine", _UNDEFINE_OPTS),
    Command("edit", "edit XML configuration for a domain", "cmd_domain:cmd_edit",
            (_DOMAIN, _b("skip-validate", "skip validation of the XML against the schema"))),
    Command("dumpxml", "domain information in XML", "cmd_domain:cmd_dumpxml", (
        _DOMAIN, _b("inactive", "show inactive defined XML"),
        _b("security-info", "include security sensitive information in XML dump"))),
    Command("create", "create a domain from an XML file", "cmd_domain:cmd_create",
            (_FILE, _CONSOLE, _PAUSED, _b("validate", "validate the XML against the schema"))),
    Command("start", "start a (previously defined) inactive domain", "cmd_domain:cmd_start",
            (_s("domain", "name of the inactive domain", required=True), _CONSOLE, _PAUSED)),
    Command("shutdown", "gracefully shutdown a domain", "cmd_domain:cmd_shutdown", (_DOMAIN,)),
    Command("reboot", "reboot a domain", "cmd_domain:cmd_reboot", (_DOMAIN,)),
    Command("reset", "reset a domain", "cmd_domain:cmd_reset", (_DOMAIN,)),
    Command("destroy", "destroy (stop) a domain", "cmd_domain:cmd_destroy",
            (_DOMAIN, _b("graceful", "terminate gracefully"))),
    Command("suspend", "suspend a domain", "cmd_domain:cmd_suspend", (_DOMAIN,)),
    Command("resume", "resume a domain", "cmd_domain:cmd_resume", (_DOMAIN,)),
    Command("autostart", "autostart a domain", "cmd_domain:cmd_autostart",
            (_DOMAIN, _b("disable", "disable autostarting"))),
    Command("domxml-to-native", "Convert domain XML to native config", "cmd_domain:cmd_domxml_to_native",
            (_s("format", "target config data type format", required=True),
             _s("xml", "xml data file to export from", required=True))),
    Command("domxml-from-native", "Convert native config to domain XML",
            "cmd_domain:cmd_domxml_from_native",
            (_s("format", "source config data format", required=True),
             _s("config", "config data file to import from", required=True))),
    Command("list", "list domains", "cmd_info:cmd_list", _LIST_OPTS),
    Command("dominfo", "domain information", "cmd_info:cmd_dominfo", (_DOMAIN,)),
    Command("domstate", "domain state", "cmd_info:cmd_domstate",
            (_DOMAIN, _b("reason", "also print reason for the state"))),
    Command("domid", "convert a domain name or UUID to domain id", "cmd_info:cmd_domid",
            (_s("domain", "domain name or uuid", required=True),)),
    Command("domuuid", "convert a domain name or id to domain UUID", "cmd_info:cmd_domuuid",
            (_s("domain", "domain id or name", required=True),)),
    Command("domname", "convert a domain id or UUID to domain name", "cmd_info:cmd_domname",
            (_s("domain", "domain id or uuid", required=True),)),
    Command("domblklist", "list all domain blocks", "cmd_info:cmd_domblklist", (
        _DOMAIN, _b("inactive", "get inactive rather than running configuration"),
        _b("details", "additionally display the type and device value"))),
    Command("domiflist", "list all domain virtual interfaces", "cmd_info:cmd_domiflist",
            (_DOMAIN, _b("inactive", "get inactive rather than running configuration"))),
    Command("domblkstat", "get device block stats for a domain", "cmd_info:cmd_domblkstat",
            (_DOMAIN, _s("device", "block device"), _b("human", "print a more human readable output"))),
    Command("dommemstat", "get memory statistics for a domain", "cmd_info:cmd_dommemstat", (
        _DOMAIN, _n("period", "period in seconds to set collection"), _b("config", "affect next boot"),
        _b("live", "affect running domain"), _b("current", "affect current domain"))),
    Command("vncdisplay", "vnc display", "cmd_info:cmd_vncdisplay", (_DOMAIN,)),
    Command("console", "connect to the guest console", "cmd_qemu:cmd_console", (
        _DOMAIN, _s("devname", "character device name", positional=False),
        _b("force", "force console connection (disconnect already connected sessions)"),
        _b("safe", "only connect if safe console handling is supported"))),
    Command("qemu-monitor-command", "QEMU Monitor Command", "cmd_qemu:cmd_qemu_monitor_command", (
        _DOMAIN, _b("hmp", "command is in human monitor protocol"),
        _b("pretty", "pretty-print any qemu monitor protocol output"),
        _b("return-value", "extract the value of the 'return' key from the returned string"),
        _s("pass-fds", "pass file descriptors N,M,... along with the command", positional=False),
        Opt("cmd", "argv", "command", required=True))),
    Command("qemu-monitor-event", "QEMU Monitor Events", "cmd_qemu:cmd_qemu_monitor_event", (
        *_EVENT_COMMON, _s("event", "filter by event name", positional=False),
        _b("pretty", "pretty-print any JSON output"), _LOOP, _TIMEOUT,
        _b("regex", "treat event as a regex rather than literal filter"),
        _b("no-case", "treat event case-insensitively"), _TIMESTAMP)),
    Command("event", "Domain Events", "cmd_qemu:cmd_event", (
        *_EVENT_COMMON, _s("event", "which event type to wait for", positional=False),
        _b("all", "wait for all events instead of just one type"), _LOOP, _TIMEOUT,
        _b("list", "list valid event types"), _TIMESTAMP)),
    Command("secret-define", "define or modify a secret from an XML file", "cmd_secret:cmd_secret_define",
            (_s("file", "file containing secret attributes in XML", required=True),
             _b("validate", "validate the XML against the schema"))),
    Command("secret-dumpxml", "secret attributes in XML", "cmd_secret:cmd_secret_dumpxml", (_SECRET,)),
    Command("secret-set-value", "set a secret value", "cmd_secret:cmd_secret_set_value", (
        _SECRET, _s("file", "read secret from file", positional=False),
        _b("plain", "read the secret from file without converting from base64"),
        _b("interactive", "read the secret from the terminal"),
        _s("base64", "base64-encoded secret value"))),
    Command("secret-get-value", "Output a secret value", "cmd_secret:cmd_secret_get_value",
            (_SECRET, _b("plain", "get value without converting to base64"))),
    Command("secret-undefine", "undefine a secret", "cmd_secret:cmd_secret_undefine", (_SECRET,)),
    Command("secret-list", "list secrets", "cmd_secret:cmd_secret_list", (
        _b("ephemeral", "list ephemeral secrets"), _b("no-ephemeral", "list non-ephemeral secrets"),
        _b("private", "list private secrets"), _b("no-private", "list non-private secrets"))),
    # ---- networks (cmd_network) ----
    # ---- storage pools and volumes (cmd_storage) ----
    Command("complete", "internal command for autocompletion", "complete:cmd_complete",
            (Opt("args", "argv", "partial string to autocomplete"),), local=True),
)}

#: commands listed in help (complete is internal, as in virsh)
_HIDDEN = {"complete"}


def _help(out: TextIO) -> None:
    out.write("Usage: pyvirsh [-c URI] [-q] [-r] COMMAND [ARGS...]\n\n Commands:\n")
    for cmd in COMMANDS.values():
        if cmd.name not in _HIDDEN:
            out.write(f"    {cmd.name:<22}{cmd.summary}\n")
    out.write("\n  (specify help <command> for details about the command)\n\n")


class GlobalOptions:
    __slots__ = ("connect", "readonly", "quiet", "help", "version", "command", "args")

    def __init__(self, connect: str | None, readonly: bool, quiet: bool, help: bool, version: bool,
                 command: str | None, args: list[str]) -> None:
        self.connect = connect
        self.readonly = readonly
        self.quiet = quiet
        self.help = help
        self.version = version
        self.command = command
        self.args = args


_FLAGS = {"-r": "readonly", "--readonly": "readonly", "-q": "quiet", "--quiet": "quiet",
          "-h": "help", "--help": "help", "-v": "version", "--version": "version"}


def parse_global(argv: Sequence[str]) -> GlobalOptions:
    """virsh's options before the command."""
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


def _error(err: TextIO, message: str) -> None:
    err.write("".join(f"error: {line}\n" for line in message.split("\n")))


def _run_local(command: Command, opts: GlobalOptions, args: Args, out: TextIO) -> int:
    from pyvirt.cli.options import help_text

    if command.name == "help":
        if args.command is None:
            _help(out)
            return 0
        wanted = COMMANDS.get(args.command)
        if wanted is None or wanted.name in _HIDDEN:
            raise UsageError(f"command or command group '{args.command}' doesn't exist")
        out.write(help_text(wanted.name, wanted.summary, wanted.opts) + "\n")
        return 0
    from pyvirt.cli.complete import complete

    out.write("".join(word + "\n" for word in complete(COMMANDS, args.args, hidden=_HIDDEN,
                                                                uri=opts.connect)))
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from pyvirt.cli.options import parse

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        opts = parse_global(sys.argv[1:] if argv is None else argv)
        if opts.version:
            from pyvirt.cli.cmd_host import version_text
            from pyvirt.connection import getVersion

            out.write(version_text(getVersion()) + "\n")
            return 0
        if opts.help or opts.command is None:
            _help(out)
            return 0
        command = COMMANDS.get(opts.command)
        if command is None:
            raise UsageError(f"unknown command: '{opts.command}'")
        args = parse(command.name, command.opts, opts.args)
        args.quiet = opts.quiet
        if command.local:
            return _run_local(command, opts, args, out)
    except UsageError as exc:
        _error(err, str(exc))
        return 1
    return _run(command, opts, args, out, err)


def _run(command: Command, opts: GlobalOptions, args: Args, out: TextIO, err: TextIO) -> int:
    from importlib import import_module

    from pyvirt.cli.common import CommandFailed
    from pyvirt.errors import PyvirtError

    module, _, function = command.target.partition(":")
    run = getattr(import_module(f"pyvirt.cli.{module}"), function)
    try:
        from pyvirt.connection import open as open_connection
        from pyvirt.connection import openReadOnly

        conn = (openReadOnly if opts.readonly else open_connection)(opts.connect)
    except PyvirtError as exc:
        _error(err, f"failed to connect to the hypervisor\n{exc}")
        return 1
    status = 0
    try:
        run(conn, args, out, err)
    except CommandFailed as exc:
        if str(exc):
            _error(err, str(exc))
        status = 1
    except PyvirtError as exc:
        _error(err, str(exc))
        status = 1
    except KeyboardInterrupt:
        status = 1
    finally:
        conn.close()
    if not opts.quiet:
        out.write("\n")  # virsh's blank line after every command, failed or not, unless -q
    return status


if __name__ == "__main__":
    sys.exit(main())
