# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh: virsh's commands and output over pyvirt.

Start-up is kept short: only this module and argparse load before a command runs; each command
imports what it needs. The command table below is the single place a command is declared.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TextIO

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


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("uri", "print the hypervisor canonical URI", _cmd_uri),
    Command("hostname", "print the hypervisor hostname", _cmd_hostname),
    Command("version", "show version", _cmd_version, _version_options),
    Command("capabilities", "capabilities", _cmd_capabilities),
    Command("domcapabilities", "domain capabilities", _cmd_domcapabilities, _domcapabilities_options),
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

    from pyvirt.errors import PyvirtError

    try:
        from pyvirt.connection import open as open_connection
        from pyvirt.connection import openReadOnly

        conn = (openReadOnly if opts.readonly else open_connection)(opts.connect)
    except PyvirtError as exc:
        err.write(f"error: failed to connect to the hypervisor\nerror: {exc}\n")
        return 1
    try:
        return command.run(conn, args, out)
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
