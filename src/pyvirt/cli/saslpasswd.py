# SPDX-License-Identifier: LGPL-2.1-or-later
"""``pyvirt-saslpasswd``: manage pyvirtd's SASL users (the counterpart of Cyrus's ``saslpasswd2
-a libvirt`` and ``sasldblistusers2`` for libvirtd's passwd.db).

::

    pyvirt-saslpasswd [--root DIR | -f FILE] [-p] [-i ITERATIONS] USER   # add, or set the password
    pyvirt-saslpasswd [--root DIR | -f FILE] -d USER                     # delete
    pyvirt-saslpasswd [--root DIR | -f FILE] -l                          # list the users

The database is the one the daemon of the same instance reads (:mod:`pyvirt.daemon.sasl`):
``DIR/etc/pyvirtd-sasl.json`` for ``--root DIR``, else the system instance's (root) or the session
instance's. It stores SCRAM-SHA-256 and SCRAM-SHA-1 keys derived from the password, never the
password; the file is mode 0600 and replaced atomically. The password is asked twice on a
terminal, or read from the first line of standard input with ``-p`` (as ``saslpasswd2 -p``).
A running pyvirtd sees the change at the next authentication.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyvirt-saslpasswd",
                                description="Add, change, delete or list the SASL (SCRAM) users "
                                            "of a pyvirtd.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--root", type=Path, metavar="DIR",
                       help="the instance of 'pyvirtd --root DIR' (database DIR/etc/pyvirtd-sasl.json)")
    where.add_argument("-f", "--file", type=Path, metavar="FILE", help="the database file itself")
    action = p.add_mutually_exclusive_group()
    action.add_argument("-d", "--delete", action="store_true", help="delete USER")
    action.add_argument("-l", "--list", action="store_true", help="list the users")
    p.add_argument("-p", "--pipe", action="store_true",
                   help="read the password from standard input, without prompting")
    p.add_argument("-i", "--iterations", type=int, default=None, metavar="N",
                   help="PBKDF2 iterations of the keys (default 4096, the minimum)")
    p.add_argument("user", nargs="?", metavar="USER")
    return p


def _password(pipe: bool) -> str:
    if pipe or not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again (for verification): ") != first:
        raise ValueError("the two passwords differ; nothing was changed")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.list and not args.user:
        parser.error("a USER is required (or -l to list the users)")
    if args.list and args.user:
        parser.error("-l takes no USER")
    if args.iterations is not None and args.iterations < 4096:
        parser.error("--iterations must be at least 4096")

    from pyvirt.daemon import sasl
    from pyvirt.errors import PyvirtError

    try:
        if args.file is not None:
            path = args.file
        else:
            from pyvirt.daemon.instance import served_instance

            path = sasl.db_path(served_instance(args.root))
        if args.list:
            for user in sasl.PasswordDB(path).users():
                print(user)
            return 0
        if args.delete:
            if not sasl.delete_user(path, args.user):
                print(f"pyvirt-saslpasswd: error: no user '{args.user}' in {path}", file=sys.stderr)
                return 1
            return 0
        problem = sasl.check_username(args.user)
        if problem:
            print(f"pyvirt-saslpasswd: error: {problem}", file=sys.stderr)
            return 1
        password = _password(args.pipe)
        sasl.set_password(path, args.user, password,
                          args.iterations or sasl.DEFAULT_ITERATIONS)
    except (PyvirtError, ValueError) as exc:
        print(f"pyvirt-saslpasswd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
