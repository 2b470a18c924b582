# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt-ssh-helper: the remote end of ``qemu+ssh://`` (libvirt's virt-ssh-helper for pyvirtd).

::

    pyvirt-ssh-helper [-r] URI

ssh runs it on the daemon's host with the client's protocol bytes on standard input and output.
It connects to the local pyvirtd socket that ``URI`` names and copies bytes both ways until either
side closes; it speaks no protocol itself, so authentication and access control stay pyvirtd's.

The socket, as pyvirt's client picks it for ``qemu+unix`` (:func:`pyvirt.remote.socket_path`):
``socket=`` if the URI has it; otherwise pyvirtd's for ``qemu:///system`` (``/run/pyvirt/
libvirt-sock``, ``-ro`` with ``-r``) and ``qemu:///session`` (``$XDG_RUNTIME_DIR/pyvirt/
libvirt-sock``); ``mode=legacy`` picks libvirtd's. No daemon is started: a session daemon that
is not running is an error naming the socket.

Exit status: 0 once either side closed, 1 on an error (on standard error, where the client's ssh
passes it on).
"""

from __future__ import annotations

# Start-up is part of every qemu+ssh connection: the helper loads only C modules (and re, which
# its console-script launcher has loaded already) for the URIs clients send; pyvirt's URI parser
# only for the others.
import _socket
import os
import re
import sys

TYPE_CHECKING = False  # typing itself costs a few milliseconds more
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

__all__ = ["main", "helper_socket", "relay"]

_CHUNK = 256 * 1024
_USAGE = "usage: pyvirt-ssh-helper [-r|--readonly] URI"
_SOCKET = "libvirt-sock"
_LIBVIRT_SYSTEM_DIR = "/run/libvirt"
# What pyvirt's client sends for qemu+ssh://HOST/system[?socket=PATH] with a plain PATH.
_PLAIN_URI = re.compile(r"qemu:///(system|session)(?:\?socket=([A-Za-z0-9/._~-]+))?")


class HelperError(Exception):
    pass


def helper_socket(uri_text: str, readonly: bool) -> str:
    """The UNIX socket ``uri_text`` names on this host (see the module docstring)."""
    plain = _PLAIN_URI.fullmatch(uri_text)
    if plain is not None and plain.group(2):
        return plain.group(2)  # nothing in it to decode
    if plain is not None and plain.group(1) == "system" and not os.environ.get("PYVIRT_PREFIX"):
        # pyvirt.conf.instance.system_paths() without a prefix: the driver's run_dir is
        # /run/pyvirt/qemu, the daemon's sockets are beside it
        return f"/run/pyvirt/{_SOCKET}{'-ro' if readonly else ''}"
    return _parsed_socket(uri_text, readonly)


def _parsed_socket(uri_text: str, readonly: bool) -> str:
    """:func:`helper_socket` for any URI, through pyvirt's URI parser."""
    from pyvirt.errors import PyvirtError
    from pyvirt.uri import parse_uri

    try:
        uri = parse_uri(uri_text)
    except PyvirtError as exc:
        raise HelperError(exc.message) from exc
    if uri.is_remote or uri.transport not in (None, "unix"):
        raise HelperError(f"'{uri_text}' is not a local URI: the helper connects to a daemon on "
                          "this host, e.g. qemu:///system")
    if uri.instance == "embed":
        raise HelperError(f"'{uri_text}': an embedded driver has no socket of its own; for pyvirtd "
                          "--root DIR use qemu:///system?socket=DIR/run/libvirt-sock")
    if "socket" in uri.params:
        return uri.params["socket"]
    session = uri.instance == "session"
    suffix = "-ro" if readonly and not session else ""
    if uri.params.get("mode") == "legacy":
        if session:
            runtime = os.environ.get("XDG_RUNTIME_DIR")
            base = (os.path.join(runtime, "libvirt") if runtime
                    else os.path.expanduser("~/.cache/libvirt"))
            return os.path.join(base, _SOCKET)
        return os.path.join(_LIBVIRT_SYSTEM_DIR, _SOCKET + suffix)
    from pyvirt.conf.instance import session_paths, system_paths

    if session:
        return str(session_paths().run_dir.parent.parent / _SOCKET)
    return str(system_paths().run_dir.parent / (_SOCKET + suffix))


def _is_pipe(fd: int) -> bool:
    import stat

    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def relay(sock: _socket.socket, stdin: int = 0, stdout: int = 1) -> None:
    """Copy ``stdin`` -> ``sock`` and ``sock`` -> ``stdout`` until either side closes.

    One thread polling both. sshd gives its command pipes, so the bytes move by splice(2) without
    passing through Python; other descriptors are read and written. A chunk is written out whole
    before the next read, which cannot deadlock: both peers (ssh, the daemon) keep reading while
    they write.
    """
    import select

    sockfd = sock.fileno()
    splice = hasattr(os, "splice") and _is_pipe(stdin) and _is_pipe(stdout)
    poller = select.poll()
    poller.register(stdin, select.POLLIN)
    poller.register(sockfd, select.POLLIN)
    try:
        while True:
            for fd, _ in poller.poll():
                src, dst = (stdin, sockfd) if fd == stdin else (sockfd, stdout)
                if splice:
                    if os.splice(src, dst, _CHUNK) == 0:
                        return
                    continue
                data = os.read(src, _CHUNK)
                if not data:
                    return
                if dst == sockfd:
                    sock.sendall(data)
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(dst, view):]
    except OSError:
        pass  # either side went away: the relay ends, as on EOF
    finally:
        # the daemon sees the client's end (and the client the daemon's when we exit)
        try:
            sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass


def main(argv: Sequence[str] | None = None, err: TextIO | None = None) -> int:
    err = sys.stderr if err is None else err
    args = list(sys.argv[1:] if argv is None else argv)
    readonly = False
    rest: list[str] = []
    for arg in args:
        if arg in ("-r", "--readonly"):
            readonly = True
        elif arg in ("-h", "--help"):
            print(_USAGE, file=sys.stdout)
            return 0
        elif arg in ("-V", "--version"):
            from importlib.metadata import version

            print(f"pyvirt-ssh-helper {version('pyvirt')}", file=sys.stdout)
            return 0
        elif arg.startswith("-") and arg != "-":
            err.write(f"pyvirt-ssh-helper: unknown option '{arg}'\n{_USAGE}\n")
            return 1
        else:
            rest.append(arg)
    if len(rest) != 1:
        err.write(f"pyvirt-ssh-helper: expected one URI, got {len(rest)}\n{_USAGE}\n")
        return 1
    try:
        path = helper_socket(rest[0], readonly)
    except HelperError as exc:
        err.write(f"pyvirt-ssh-helper: {exc}\n")
        return 1
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        err.write(f"pyvirt-ssh-helper: Failed to connect socket to '{path}': "
                  f"{os.strerror(exc.errno) if exc.errno else exc}\n")
        return 1
    try:
        relay(sock)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
