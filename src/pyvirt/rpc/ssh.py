# SPDX-License-Identifier: LGPL-2.1-or-later
"""The ssh transport of pyvirt's client (``qemu+ssh://[user@]host[:port]/path?...``): the command
line, built as libvirt 9.0's remote driver builds it, without running anything.

libvirt runs the system ``ssh`` with the RPC protocol on its stdin/stdout::

    ssh [-p PORT] [-l USER] [-i KEYFILE] -T -e none [-o BatchMode=yes]
        [-o StrictHostKeyChecking=no] -- HOST "sh -c '...'"

(``no_tty=1`` adds BatchMode, ``no_verify=1`` StrictHostKeyChecking=no, ``command=`` replaces
``ssh``). The remote command is a ``sh -c`` script chosen by ``proxy=``:

* ``native``: the helper with the URI to open (``-r`` for a read-only connection);
* ``netcat``: ``nc [-q0] -U SOCKET``, ``-q0`` only where nc knows it (Debian's does);
* ``auto`` (the default): the helper if ``which`` finds it on the remote, else netcat. As in
  libvirt 9.0, ``netcat=`` or ``socket=`` turn ``auto`` into ``netcat``; ``netcat=`` with
  ``native`` is refused.

The remote shell parses the command, then ``sh -c`` parses the script again, so every value
from the URI that reaches the script is quoted twice with libvirt's rule (quote only when a
shell metacharacter is present); a value without one reads exactly as in libvirt's command.

Where pyvirt differs, and why:

* The helper is ``pyvirt-ssh-helper`` and the default socket pyvirtd's
  (``/run/pyvirt/libvirt-sock[-ro]``); ``mode=legacy`` selects libvirt's ``virt-ssh-helper`` and
  ``/var/run/libvirt/libvirt-sock[-ro]``, as ``mode=legacy`` selects libvirtd's sockets for
  ``qemu+unix`` (:func:`pyvirt.remote.socket_path`).
* libvirt writes ``socket=`` into the script unquoted (a path with a space splits); pyvirt quotes
  it like the other values.
* With ``proxy=native``, libvirt drops ``socket=``; pyvirt hands it to the helper
  (``pyvirt-ssh-helper 'qemu:///system?socket=PATH'``), which honours it.
* libvirt 9.0 accepts ``known_hosts=`` on ``qemu+ssh`` but passes it to nothing (only its
  libssh transports read it); pyvirt gives it to ssh as ``-o UserKnownHostsFile=PATH``.
* ssh expands ``%`` tokens and ``${VAR}`` in identity and known-hosts file names: pyvirt writes
  ``%`` as ``%%`` (using ``-o IdentityFile=`` for such a key, since ``-i`` checks the unexpanded
  name) and refuses ``${``, which ssh cannot escape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import quote

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.uri import ConnectURI

__all__ = ["SSHCommand", "ssh_command", "remote_command", "shell_quote", "HELPER",
           "LIBVIRT_HELPER", "PYVIRT_SOCKET_DIR", "LIBVIRT_SOCKET_DIR"]

HELPER = "pyvirt-ssh-helper"
LIBVIRT_HELPER = "virt-ssh-helper"
#: Where the remote host's daemons listen (the remote host's paths, not this host's).
PYVIRT_SOCKET_DIR = "/run/pyvirt"
LIBVIRT_SOCKET_DIR = "/var/run/libvirt"

# virBufferEscapeShell quotes a value only when it holds one of these.
_SHELL_META = frozenset("\r\t\n !\"#$&'()*;<>?[\\]^`{|}~")
# Environment libvirt passes to ssh (virCommandAddEnvPassCommon and virNetSocketNewConnectSSH);
# LC_ALL=C keeps ssh's messages in the words libvirt's users see.
_ENV_PASS = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PATH", "HOME", "USER", "LOGNAME", "TMPDIR",
             "XDG_RUNTIME_DIR", "KRB5CCNAME", "SSH_AUTH_SOCK", "SSH_ASKPASS", "OPENSSL_CONF",
             "DISPLAY", "XAUTHORITY")


class SSHCommand(NamedTuple):
    """What to run: ``argv`` with ``env``; ``peer`` names it in messages."""

    argv: tuple[str, ...]
    env: dict[str, str]
    peer: str


def _invalid(uri: ConnectURI, message: str) -> PyvirtError:
    return PyvirtError(f"{uri.raw}: {message}", code=codes.VIR_ERR_INVALID_ARG,
                       domain=codes.VIR_FROM_REMOTE)


def shell_quote(value: str) -> str:
    """libvirt's virBufferEscapeShell: ``value`` as /bin/sh reads it back, quoted only if needed."""
    if not value:
        return "''"
    if not any(ch in _SHELL_META for ch in value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def _twice(value: str) -> str:
    # The remote login shell and then `sh -c` each remove one level.
    return shell_quote(shell_quote(value))


def _netcat_script(netcat: str, socket: str) -> str:
    nc = _twice(netcat)
    # The socket sits inside the script's outer quotes in libvirt's text: a plain path stays as
    # libvirt writes it, any other closes those quotes around its twice-quoted form.
    sock = socket if shell_quote(socket) == socket else f"'{_twice(socket)}'"
    return (f"if '{nc}' -q 2>&1 | grep \"requires an argument\" >/dev/null 2>&1; then ARG=-q0;"
            f"else ARG=;fi;'{nc}' $ARG -U {sock}")


def remote_command(proxy: str, *, netcat: str | None, socket: str, helper: str, helper_uri: str,
                   readonly: bool) -> str:
    """The ``sh -c '...'`` command ssh runs on the remote host (``proxy`` already resolved from
    auto where netcat or socket is given; see :func:`ssh_command`)."""
    nc = _netcat_script(netcat or "nc", socket)
    run_helper = f"{helper}{' -r ' if readonly else ' '}'{_twice(helper_uri)}'"
    if proxy == "auto":
        return (f"sh -c 'which {helper} 1>/dev/null 2>&1; if test $? = 0; then     {run_helper}; "
                f"else    {nc}; fi'")
    if proxy == "netcat":
        return f"sh -c '{nc}'"
    if proxy == "native":
        return f"sh -c '{run_helper}'"
    raise ValueError(f"unknown proxy mode {proxy!r}")


def _ssh_path(uri: ConnectURI, param: str, value: str) -> str:
    """A file name as ssh's configuration reads it: ``%`` doubled, ``${`` refused."""
    if "${" in value:
        raise _invalid(uri, f"parameter '{param}' holds '${{', which ssh expands as an environment "
                            "variable and cannot escape; use a path without '${' (a symlink)")
    if any(ord(ch) < 32 for ch in value):
        raise _invalid(uri, f"parameter '{param}' holds a control character; ssh cannot read such "
                            "a file name")
    return value.replace("%", "%%")


def _config_value(text: str) -> str:
    """A value of ``-o Key=value``: ssh splits it like a config line (quotes, backslashes)."""
    if not any(ch in text for ch in " \t\"'\\#="):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default_socket(uri: ConnectURI, readonly: bool) -> str:
    legacy = uri.params.get("mode") == "legacy"
    base = LIBVIRT_SOCKET_DIR if legacy else PYVIRT_SOCKET_DIR
    # libvirt uses the system daemon's socket for the netcat path of session URIs too: only
    # the helper knows where the remote user's session daemon listens.
    return f"{base}/libvirt-sock{'-ro' if readonly else ''}"


def _helper_uri(uri: ConnectURI, proxy: str) -> str:
    name = uri.remote_name()
    socket = uri.params.get("socket")
    if proxy == "native" and socket is not None:
        sep = "&" if "?" in name else "?"
        name = f"{name}{sep}socket={quote(socket, safe='/')}"
    return name


def ssh_command(uri: ConnectURI, readonly: bool, environ: Mapping[str, str] | None = None) -> SSHCommand:
    """The ssh command libvirt's remote driver would run for ``uri`` (see the module docstring)."""
    if uri.effective_transport != "ssh":
        raise ValueError(f"{uri.raw} does not use the ssh transport")
    params = uri.params
    host = uri.effective_host or "localhost"
    if "@" in host or any(ch.isspace() or not ch.isprintable() for ch in host):
        raise _invalid(uri, f"host name {host!r} cannot be given to ssh (it holds '@', a space or a "
                            "control character)")
    proxy = params.get("proxy", "auto")
    netcat = params.get("netcat")
    if proxy == "native" and netcat is not None:
        raise _invalid(uri, "netcat path not valid with native proxy mode; drop netcat= or use "
                            "proxy=netcat")
    if proxy == "auto" and (netcat is not None or "socket" in params):
        proxy = "netcat"
    helper = LIBVIRT_HELPER if params.get("mode") == "legacy" else HELPER
    command = remote_command(proxy, netcat=netcat,
                             socket=params.get("socket") or _default_socket(uri, readonly),
                             helper=helper, helper_uri=_helper_uri(uri, proxy), readonly=readonly)

    argv = [params.get("command", "ssh")]
    if uri.port is not None:
        argv += ["-p", str(uri.port)]
    if uri.user is not None:
        argv += ["-l", uri.user]
    keyfile = params.get("keyfile")
    if keyfile is not None:
        escaped = _ssh_path(uri, "keyfile", keyfile)
        # `-i` checks the name before ssh expands it: a key whose name needs escaping goes in
        # as configuration instead.
        argv += ["-i", keyfile] if escaped == keyfile else ["-o", f"IdentityFile={_config_value(escaped)}"]
    argv += ["-T", "-e", "none"]
    if params.get("no_tty") == "1":
        argv += ["-o", "BatchMode=yes"]
    if params.get("no_verify") == "1":
        argv += ["-o", "StrictHostKeyChecking=no"]
    known_hosts = params.get("known_hosts")
    if known_hosts is not None:
        argv += ["-o", "UserKnownHostsFile="
                 + _config_value(_ssh_path(uri, "known_hosts", known_hosts))]
    argv += ["--", host, command]

    env = os.environ if environ is None else environ
    child_env = {name: env[name] for name in _ENV_PASS if name in env}
    child_env["LC_ALL"] = "C"
    where = f"{uri.user}@{host}" if uri.user else host
    peer = f"ssh {where}:{uri.port}" if uri.port is not None else f"ssh {where}"
    return SSHCommand(tuple(argv), child_env, peer)
