# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh: virsh's commands and output over pyvirt.

Start-up is kept short: only this module and argparse load before a command runs; each command
imports what it needs. The command table below is the single place a command is declared.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pyvirt.connection import virConnect

CommandFn = Callable[["virConnect", argparse.Namespace, TextIO], int]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    run: CommandFn
    options: Callable[[argparse.ArgumentParser], None] = lambda parser: None


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


def _global_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyvirsh", add_help=False)
    parser.add_argument("-c", "--connect", metavar="URI")
    parser.add_argument("-r", "--readonly", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("-v", "--version", action="store_true")
    parser.add_argument("command", nargs="?")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    opts = _global_parser().parse_args(argv)
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
    args = _command_parser(command).parse_args(opts.args)

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
    parser = argparse.ArgumentParser(prog=f"pyvirsh {command.name}", description=command.summary)
    command.options(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
