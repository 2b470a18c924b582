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
    Command("net-define", "define an inactive persistent virtual network or modify an existing persistent "
            "one from an XML file", "cmd_network:cmd_net_define",
            (_s("file", "file containing an XML network description", required=True),
             _b("validate", "validate the XML against the schema"))),
    Command("net-create", "create a network from an XML file", "cmd_network:cmd_net_create",
            (_s("file", "file containing an XML network description", required=True),
             _b("validate", "validate the XML against the schema"))),
    *(Command(f"net-{verb}", text, f"cmd_network:cmd_net_{verb}",
              (_s("network", "network name or uuid", required=True), *extra)) for verb, text, extra in (
        ("start", "start a (previously defined) inactive network", ()),
        ("destroy", "destroy (stop) a network", ()),
        ("undefine", "undefine a persistent network", ()),
        ("info", "network information", ()),
        ("uuid", "convert a network name to network UUID", ()),
        ("autostart", "autostart a network", (_b("disable", "disable autostarting"),)),
        ("dumpxml", "network information in XML", (_b("inactive", "show inactive defined XML"),)))),
    Command("net-name", "convert a network UUID to network name", "cmd_network:cmd_net_name",
            (_s("network", "network uuid", required=True),)),
    Command("net-dhcp-leases", "print lease info for a given network", "cmd_network:cmd_net_dhcp_leases",
            (_s("network", "network name or uuid", required=True),
             _s("mac", "MAC address", positional=False))),
    Command("net-list", "list networks", "cmd_network:cmd_net_list", (
        _b("inactive", "list inactive networks"), _b("all", "list inactive & active networks"),
        _b("persistent", "list persistent networks"), _b("transient", "list transient networks"),
        _b("autostart", "list networks with autostart enabled"),
        _b("no-autostart", "list networks with autostart disabled"),
        _b("uuid", "list uuid's only"), _b("name", "list network names only"),
        _b("table", "list table (default)"))),
    Command("net-event", "Network Events", "cmd_network:cmd_net_event", (
        _s("network", "filter by network name or uuid", positional=False),
        _s("event", "which event type to wait for", positional=False), _LOOP, _TIMEOUT,
        _b("list", "list valid event types"), _TIMESTAMP)),
    # ---- storage pools and volumes (cmd_storage) ----
    Command("pool-event", "Storage Pool Events", "cmd_storage:cmd_pool_event", (
        _s("pool", "filter by storage pool name or uuid", positional=False),
        _s("event", "which event type to wait for", positional=False), _LOOP, _TIMEOUT,
        _b("list", "list valid event types"), _TIMESTAMP)),
    *(Command(f"pool-{verb}", text, f"cmd_storage:cmd_pool_{verb}",
              (_s("pool", "pool name or uuid", required=True), *extra)) for verb, text, extra in (
        ("build", "build a pool", (_b("no-overwrite", "do not overwrite any existing data"),
                                   _b("overwrite", "overwrite any existing data"))),
        ("start", "start a (previously defined) inactive pool", (
            _b("build", "build the pool as normal"), _b("no-overwrite", "do not overwrite any existing data"),
            _b("overwrite", "overwrite any existing data"))),
        ("destroy", "destroy (stop) a pool", ()), ("delete", "delete a pool", ()),
        ("undefine", "undefine an inactive pool", ()), ("refresh", "refresh a pool", ()),
        ("autostart", "autostart a pool", (_b("disable", "disable autostarting"),)),
        ("dumpxml", "pool information in XML", (_b("inactive", "show inactive defined XML"),)),
        ("info", "storage pool information", (_b("bytes", "Return pool info in bytes"),)))),
    Command("pool-define", "define an inactive persistent storage pool or modify an existing persistent one "
            "from an XML file", "cmd_storage:cmd_pool_define",
            (_s("file", "file containing an XML pool description", required=True),
             _b("validate", "validate the XML against the schema"))),
    Command("pool-create", "create a pool from an XML file", "cmd_storage:cmd_pool_create", (
        _s("file", "file containing an XML pool description", required=True),
        _b("build", "build the pool as normal"), _b("no-overwrite", "do not overwrite any existing data"),
        _b("overwrite", "overwrite any existing data"))),
    Command("pool-define-as", "define a pool from a set of args", "cmd_storage:cmd_pool_define_as", (
        _s("name", "name of the pool", required=True), _s("type", "type of the pool", required=True),
        _b("print-xml", "print XML document, but don't define/create"),
        _s("source-host", "source-host for underlying storage"),
        _s("source-path", "source path for underlying storage"),
        _s("source-dev", "source device for underlying storage"),
        _s("source-name", "source name for underlying storage"),
        _s("target", "target for underlying storage"),
        _s("source-format", "format for underlying storage"))),
    Command("pool-list", "list pools", "cmd_storage:cmd_pool_list", (
        _b("inactive", "list inactive pools"), _b("all", "list inactive & active pools"),
        _b("transient", "list transient pools"), _b("persistent", "list persistent pools"),
        _b("autostart", "list pools with autostart enabled"),
        _b("no-autostart", "list pools with autostart disabled"),
        _s("type", "only list pool of specified type(s) (if supported)", positional=False),
        _b("details", "display extended details for pools"), _b("uuid", "list UUID of active pools only"),
        _b("name", "list name of active pools only"))),
    Command("vol-create", "create a vol from an XML file", "cmd_storage:cmd_vol_create", (
        _s("pool", "pool name", required=True), _s("file", "file containing an XML vol description",
                                                  required=True),
        _b("prealloc-metadata", "preallocate metadata (for qcow2 instead of full allocation)"),
        _b("validate", "validate the XML against the schema"))),
    Command("vol-create-as", "create a volume from a set of args", "cmd_storage:cmd_vol_create_as", (
        _s("pool", "pool name", required=True), _s("name", "name of the volume", required=True),
        _s("capacity", "size of the vol, as scaled integer (default bytes)", required=True),
        _s("allocation", "initial allocation size, as scaled integer (default bytes)", positional=False),
        _s("format", "file format type raw,bochs,qcow,qcow2,qed,vmdk", positional=False),
        _s("backing-vol", "the backing volume if taking a snapshot", positional=False),
        _s("backing-vol-format", "format of backing volume if taking a snapshot", positional=False),
        _b("prealloc-metadata", "preallocate metadata (for qcow2 instead of full allocation)"),
        _b("print-xml", "print XML document, but don't define/create"))),
    Command("vol-create-from", "create a vol, using another volume as input",
            "cmd_storage:cmd_vol_create_from", (
                _s("pool", "pool name or uuid", required=True),
                _s("file", "file containing an XML vol description", required=True),
                _s("vol", "vol name, key or path", required=True),
                _s("inputpool", "pool name or uuid of the input volume's pool", positional=False),
                _b("prealloc-metadata", "preallocate metadata (for qcow2 instead of full allocation)"),
                _b("reflink", "use btrfs COW lightweight copy"),
                _b("validate", "validate the XML against the schema"))),
    Command("vol-clone", "clone a volume.", "cmd_storage:cmd_vol_clone", (
        _s("vol", "vol name, key or path", required=True), _s("newname", "clone name", required=True),
        _s("pool", "pool name or uuid", positional=False),
        _b("prealloc-metadata", "preallocate metadata (for qcow2 instead of full allocation)"),
        _b("reflink", "use btrfs COW lightweight copy"))),
    Command("vol-list", "list vols", "cmd_storage:cmd_vol_list", (
        _s("pool", "pool name or uuid", required=True),
        _b("details", "display extended details for volumes"))),
    *(Command(f"vol-{verb}", text, f"cmd_storage:cmd_vol_{verb.replace('-', '_')}",
              (_s("vol", {"path": "volume name or key", "key": "volume name or path"}.get(
                  verb, "vol name, key or path"), required=True),
               *(o for o in extra if o.required), _s("pool", "pool name or uuid", positional=False),
               *(o for o in extra if not o.required))) for verb, text, extra in (
        ("info", "storage vol information", (_b("bytes", "sizes are represented in bytes rather than pretty "
                                                "units"), _b("physical", "return the physical size of the "
                                                             "volume in allocation field"))),
        ("dumpxml", "vol information in XML", ()),
        ("delete", "delete a vol", (_b("delete-snapshots", "delete snapshots associated with volume (must be "
                                      "supported by storage driver)"),)),
        ("wipe", "wipe a vol", (_s("algorithm", "perform selected wiping algorithm", positional=False),)),
        ("resize", "resize a vol", (_s("capacity", "new capacity for the vol, as scaled integer (default "
                                       "bytes)", required=True),
                                    _b("allocate", "allocate the new capacity, rather than leaving it "
                                       "sparse"),
                                    _b("delta", "use capacity as a delta to current size, rather than the "
                                       "new size"),
                                    _b("shrink", "allow the resize to shrink the volume"))),
        ("upload", "upload file contents to a volume", (
            _s("file", "file", required=True), _n("offset", "volume offset to upload to"),
            _n("length", "amount of data to upload"), _b("sparse", "preserve sparseness of volume"))),
        ("download", "download volume contents to a file", (
            _s("file", "file", required=True), _n("offset", "volume offset to download from"),
            _n("length", "amount of data to download"), _b("sparse", "preserve sparseness of volume"))),
        ("path", "returns the volume path for a given volume name or key", ()),
        ("key", "returns the volume key for a given volume name or path", ()))),
    Command("vol-name", "returns the volume name for a given volume key or path", "cmd_storage:cmd_vol_name",
            (_s("vol", "volume key or path", required=True),)),
    Command("vol-pool", "returns the storage pool for a given volume key or path", "cmd_storage:cmd_vol_pool",
            (_s("vol", "volume key or path", required=True),
             _b("uuid", "return the pool uuid rather than pool name"))),
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
