# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's secret commands: secret-define, secret-list, secret-dumpxml, secret-set-value,
secret-get-value, secret-undefine, with virsh 9.0's options, output and messages.

One deliberate difference: a value is never taken from the command line, where the process list
and the shell history would show it. virsh 9.0 still accepts ``--base64 VALUE`` (or the value as a
bare word) with a warning; pyvirsh refuses it and sets nothing. Values come from ``--file`` (base64,
or raw bytes with ``--plain``) or ``--interactive`` (a line from the terminal, or from stdin when it
is not a terminal). A file that is not base64 is refused too, where virsh would store whatever its
lenient decoder made of it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from pyvirt.cli.common import CommandFailed, api_call, table

if TYPE_CHECKING:
    from pyvirt.cli.options import Args
    from pyvirt.connection import virConnect

# libvirt's values (include/libvirt/libvirt-secret.h)
_DEFINE_VALIDATE = 1
_LIST_EPHEMERAL = 1
_LIST_NO_EPHEMERAL = 2
_LIST_PRIVATE = 4
_LIST_NO_PRIVATE = 8
_USAGE_TYPES = ("none", "volume", "ceph", "iscsi", "tls", "vtpm")
#: virsh reads at most this much of a value file (virFileReadAll's limit in cmdSecretSetValue)
_MAX_VALUE_FILE = 1024


def _secret(conn: virConnect, uuid: str) -> Any:
    """virsh's virshCommandOptSecret: by UUID only."""
    from pyvirt.errors import PyvirtError

    try:
        return conn.secretLookupByUUIDString(uuid)
    except PyvirtError as exc:
        raise CommandFailed(f"failed to get secret '{uuid}'\n{exc}") from None


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CommandFailed(f"Failed to open file '{path}': {exc.strerror}") from None


def cmd_secret_define(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = _read_file(args.file)
    secret = api_call(f"Failed to set attributes from {args.file}", conn.secretDefineXML, xml,
                      _DEFINE_VALIDATE if args.validate else 0)
    if not args.quiet:
        out.write(f"Secret {secret.UUIDString()} created\n")


def cmd_secret_list(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    flags = ((_LIST_EPHEMERAL if args.ephemeral else 0) | (_LIST_NO_EPHEMERAL if args.no_ephemeral else 0)
             | (_LIST_PRIVATE if args.private else 0) | (_LIST_NO_PRIVATE if args.no_private else 0))
    secrets = api_call("Failed to list node secrets", conn.listAllSecrets, flags)
    rows = []
    for s in sorted(secrets, key=lambda s: s.UUIDString().lower()):
        usage_type = s.usageType()
        if usage_type:
            name = _USAGE_TYPES[usage_type] if usage_type < len(_USAGE_TYPES) else str(usage_type)
            rows.append([s.UUIDString(), f"{name} {s.usageID()}"])
        else:
            rows.append([s.UUIDString(), "Unused"])
    out.write(table(rows, None if args.quiet else ["UUID", "Usage"]))


def cmd_secret_dumpxml(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    secret = _secret(conn, args.secret)
    out.write(api_call(None, secret.XMLDesc))


def _exclusive(args: Args, first: str, second: str) -> None:
    if getattr(args, first.replace("-", "_")) and getattr(args, second.replace("-", "_")):
        raise CommandFailed(f"Options --{first} and --{second} are mutually exclusive")


def _value_from_file(path: str, plain: bool) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_VALUE_FILE + 1)
    except OSError as exc:
        raise CommandFailed(f"Failed to open file '{path}': {exc.strerror}") from None
    if len(data) > _MAX_VALUE_FILE:
        raise CommandFailed(f"File '{path}' is too large: a secret value file holds at most "
                            f"{_MAX_VALUE_FILE} bytes")
    if plain:
        return data
    import base64
    import binascii

    text = b"".join(data.split())  # the line breaks and spaces of a wrapped or echoed value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandFailed(f"the value in '{path}' is not base64 (letters, digits, '+', '/' and '=' "
                            "padding); encode it with 'base64', or pass --plain to store the file's "
                            "bytes as they are") from None


def _value_interactive(out: TextIO) -> bytes:
    out.write("Enter new value for secret:")
    out.flush()
    if sys.stdin.isatty():
        import getpass

        try:
            line = getpass.getpass("")  # from the terminal, without echo
        except (EOFError, OSError):
            raise CommandFailed("Failed to read secret") from None
    else:
        line = sys.stdin.readline()
        if line.endswith("\n"):
            line = line[:-1]
    if not line:
        raise CommandFailed("Failed to read secret: the value is empty")
    return line.encode()


def cmd_secret_set_value(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    for first, second in (("file", "base64"), ("plain", "base64"), ("interactive", "base64"),
                          ("interactive", "plain"), ("interactive", "file")):
        _exclusive(args, first, second)
    if args.base64 is not None:
        raise CommandFailed("Passing secret value as command-line argument is insecure, and pyvirsh refuses "
                            "it: anyone can read it in the process list and it stays in the shell's "
                            "history. Nothing was set; put the base64 value in a file (mode 0600) and "
                            "use --file FILE, or use --interactive")
    secret = _secret(conn, args.secret)
    if args.file is not None:
        value = _value_from_file(args.file, args.plain)
    elif args.interactive:
        value = _value_interactive(out)
    else:
        raise CommandFailed("Input secret value is missing: give --file FILE (base64, or raw with "
                            "--plain) or --interactive")
    api_call("Failed to set secret value", secret.setValue, value)
    if not args.quiet:
        out.write("Secret value set\n")


def cmd_secret_get_value(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    secret = _secret(conn, args.secret)
    value: bytes = api_call(None, secret.value)
    if not args.plain:
        import base64

        out.write(base64.b64encode(value).decode("ascii"))
        return
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        buffer.write(value)
        buffer.flush()
    else:
        out.write(value.decode("utf-8", "surrogateescape"))


def cmd_secret_undefine(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    secret = _secret(conn, args.secret)
    api_call(f"Failed to delete secret {args.secret}", secret.undefine)
    if not args.quiet:
        out.write(f"Secret {args.secret} deleted\n")
