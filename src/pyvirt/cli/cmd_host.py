# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's commands about the connection and the host: uri, hostname, version, capabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pyvirt.cli.options import Args
    from pyvirt.connection import virConnect


def version_text(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def cmd_uri(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(conn.getURI() + "\n")


def cmd_hostname(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(conn.getHostname() + "\n")


def cmd_version(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    from pyvirt.connection import getVersion

    lib = version_text(getVersion())
    hv_type = conn.getType()
    out.write(f"Compiled against library: libvirt {lib}\n")
    out.write(f"Using library: libvirt {lib}\n")
    out.write(f"Using API: {hv_type} {lib}\n")
    out.write(f"Running hypervisor: {hv_type} {version_text(conn.getVersion())}\n")
    if args.daemon:
        out.write(f"Running against daemon: {version_text(conn.getLibVersion())}\n")


def cmd_capabilities(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(conn.getCapabilities() + "\n")


def cmd_domcapabilities(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(conn.getDomainCapabilities(args.emulatorbin, args.arch, args.machine, args.virttype)
              + "\n")
