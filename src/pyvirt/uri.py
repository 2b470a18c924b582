# SPDX-License-Identifier: LGPL-2.1-or-later
"""Connection URIs of the QEMU driver: ``driver[+transport]://[user@][host][:port]/path[?params]``.

The forms and query parameters are those libvirt 9.0 documents (uri.html, remote.html, drvqemu.html)
and its remote driver consumes. Where libvirt is lax, pyvirt refuses with a precise message instead:

* libvirt forwards an unknown query parameter to the daemon, which ignores it; pyvirt names it and
  lists the parameters the transport accepts, since a misspelt ``sokcet=`` silently connecting to
  the default socket is worse than an error.
* libvirt ignores a known parameter that its transport does not use (``keyfile`` over ``unix``);
  pyvirt says which transports use it.
* libvirt reads ``no_verify``/``no_tty``/``no_sanity`` as any integer (non-zero = true); pyvirt
  accepts only ``0`` and ``1``.
* libvirt keeps the last of a repeated parameter (the first for ``root``); pyvirt refuses repeats.
* libvirt accepts a port outside 1..65535 and a port without a host (then ignores it); pyvirt
  refuses both. It also refuses a user name on a local URI, a password, and a ``#fragment``.

This module is imported by every pyvirsh run: keep its imports light.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NamedTuple

from pyvirt import _errcodes as codes
from pyvirt.errors import InvalidURIError, NoConnectError

__all__ = [
    "ConnectURI",
    "parse_uri",
    "default_uri",
    "check_embed_root",
    "SUN_PATH_MAX",
    "MONITOR_SOCKET_MAX",
    "DEFAULT_URI_ENV",
    "TRANSPORT_PARAMS",
    "TLS_PORT",
    "TCP_PORT",
]

#: ``sizeof(struct sockaddr_un.sun_path)`` on Linux. A path must leave room for the terminating
#: NUL (libvirt copies it with virStrcpyStatic, CPython refuses 108 bytes), so at most 107 bytes.
SUN_PATH_MAX = 108

#: libvirt's VIR_DOMAIN_SHORT_NAME_MAX: the domain name is cut to this many characters in paths.
_SHORT_NAME_MAX = 20
#: A domain id is a positive C int: at most 10 decimal digits.
_DOMAIN_ID_DIGITS = 10
#: The longest monitor socket path below an embed root, without the root itself.
_MONITOR_TAIL = ("lib", "qemu", "domain-" + "9" * _DOMAIN_ID_DIGITS + "-" + "n" * _SHORT_NAME_MAX,
                 "monitor.sock")
#: The largest byte length of a monitor socket path that a UNIX socket can still hold.
MONITOR_SOCKET_MAX = SUN_PATH_MAX - 1

DEFAULT_URI_ENV = "PYVIRT_DEFAULT_URI"

# libvirtd's LIBVIRTD_TLS_PORT / LIBVIRTD_TCP_PORT
TLS_PORT = 16514
TCP_PORT = 16509

_INSTANCES = ("system", "session", "embed")
_SUPPORTED_TRANSPORTS = ("unix", "tcp", "tls", "ssh")
# Transports libvirt 9.0 knows but pyvirt cannot drive yet.
_UNSUPPORTED_TRANSPORTS = ("ext", "libssh", "libssh2")

# Parameters every remote-driver transport consumes: the name sent in CONNECT_OPEN, the SASL
# mechanism, and the credentials file read by virauth.
_COMMON = ("name", "auth", "authfile")

#: Query parameters accepted per effective transport ('embed' is the in-process driver), as
#: libvirt 9.0's remote driver uses them (uri.html lists the same per transport).
TRANSPORT_PARAMS: Mapping[str, frozenset[str]] = MappingProxyType({
    "unix": frozenset(_COMMON + ("mode", "socket")),
    # known_hosts: libvirt 9.0 accepts it here and ignores it; pyvirt hands it to ssh
    "ssh": frozenset(_COMMON + ("mode", "proxy", "command", "socket", "netcat", "keyfile",
                                "known_hosts", "no_verify", "no_tty")),
    "tls": frozenset(_COMMON + ("tls_priority", "no_verify", "no_sanity", "pkipath")),
    "tcp": frozenset(_COMMON),
    "embed": frozenset({"root"}),
})
# Parameters libvirt knows only for transports pyvirt does not support; named in errors.
_OTHER_KNOWN = {
    "known_hosts": ("libssh", "libssh2"),
    "known_hosts_verify": ("libssh", "libssh2"),
    "sshauth": ("libssh", "libssh2"),
}

_ENUM_PARAMS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mode": ("auto", "legacy", "direct"),
    "proxy": ("auto", "netcat", "native"),
})
_BOOL_PARAMS = frozenset({"no_verify", "no_tty", "no_sanity"})

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_USAGE = ("expected driver[+transport]://[user@][host][:port]/path[?param=value&...], "
          "e.g. qemu:///system")


class ConnectURI(NamedTuple):
    """A parsed and validated QEMU connection URI; build it with :func:`parse_uri`.

    A NamedTuple rather than a dataclass: every pyvirsh run parses a URI, and the dataclasses module
    alone costs several milliseconds of start-up.
    """

    raw: str
    driver: str
    #: As written after '+': None for ``qemu://`` (local, or TLS when a host is given).
    transport: str | None
    user: str | None
    host: str | None
    port: int | None
    path: str
    #: Percent-decoded values keyed by lower-case name (libvirt matches names case-insensitively).
    params: Mapping[str, str]

    def __hash__(self) -> int:
        # The mapping is read-only but not hashable itself.
        return hash((self.raw, tuple(self.params.items())))

    @property
    def instance(self) -> Literal["system", "session", "embed"]:
        name = self.path[1:]
        if name == "system":
            return "system"
        if name == "session":
            return "session"
        return "embed"

    @property
    def embed_root(self) -> Path | None:
        if self.instance != "embed":
            return None
        return Path(self.params["root"])

    @property
    def is_remote(self) -> bool:
        return self.host is not None or self.transport in ("tcp", "tls", "ssh")

    @property
    def effective_transport(self) -> str:
        """'unix', 'tls', 'tcp' or 'ssh'; an embed URI reports 'unix' since nothing is remote."""
        if self.transport is not None:
            return self.transport
        return "tls" if self.host is not None else "unix"

    @property
    def effective_host(self) -> str | None:
        """Host to connect to: like libvirt, a remote transport without a host means localhost."""
        if not self.is_remote:
            return None
        return self.host if self.host is not None else "localhost"

    @property
    def effective_port(self) -> int | None:
        """The port given, else the daemon's default for tls/tcp; None lets ssh pick its own."""
        if self.port is not None:
            return self.port
        return {"tls": TLS_PORT, "tcp": TCP_PORT}.get(self.effective_transport)

    def remote_name(self) -> str:
        """The URI the daemon is asked to open (REMOTE_PROC_CONNECT_OPEN).

        Like libvirt: the transport, user, host and port are dropped, and so are the parameters
        the client consumes (all of them, since pyvirt accepts no pass-through parameters); an
        explicit ``name=`` parameter replaces the whole result.
        """
        if "name" in self.params:
            return self.params["name"]
        if self.instance == "embed":
            from urllib.parse import quote

            return f"{self.driver}:///embed?root={quote(os.fsencode(self.params['root']), safe='/')}"
        return f"{self.driver}://{self.path}"


def _fail(uri: str, message: str, *, code: int | None = None) -> InvalidURIError:
    return InvalidURIError(f"invalid connection URI '{uri}': {message}", code=code)


def _decode(uri: str, part: str, what: str) -> str:
    bad = _BAD_ESCAPE_RE.search(part)
    if bad is not None:
        raise _fail(uri, f"bad percent-escape '{part[bad.start():bad.start() + 3]}' in the {what}; "
                         "write '%' itself as %25")
    if "%" not in part:
        return part
    # Imported here: urllib.parse costs ~2 ms and most URIs have nothing to decode.
    from urllib.parse import unquote_to_bytes

    # surrogateescape keeps bytes that are not UTF-8 (a root directory may hold any bytes).
    return unquote_to_bytes(part).decode("utf-8", "surrogateescape")


def _split_query(query: str) -> list[tuple[str, str]]:
    """libvirt's virURIParseParams: '&' separates, ';' only when no '&' follows; 'name' alone
    means an empty value; '=value' and empty sections are skipped."""
    out: list[tuple[str, str]] = []
    rest = query
    while rest:
        end = rest.find("&")
        if end < 0:
            end = rest.find(";")
        if end < 0:
            end = len(rest)
        section, rest = rest[:end], rest[end + 1:]
        if not section or section.startswith("="):
            continue
        name, _, value = section.partition("=")
        out.append((name, value))
    return out


def _split_authority(uri: str, authority: str) -> tuple[str | None, str | None, int | None]:
    user: str | None = None
    hostport = authority
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        if ":" in userinfo:
            raise _fail(uri, "a password in the URI is not supported; use ssh keys, an ssh agent "
                             "or the authfile parameter")
        user = _decode(uri, userinfo, "user name")
        if not user:
            raise _fail(uri, "empty user name before '@'")
    port_text: str | None = None
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise _fail(uri, "IPv6 address opened with '[' but not closed with ']'")
        host = hostport[1:close]
        after = hostport[close + 1:]
        if after:
            if not after.startswith(":"):
                raise _fail(uri, f"unexpected '{after}' after the IPv6 address; expected ':port'")
            port_text = after[1:]
    else:
        host, colon, port_text_ = hostport.partition(":")
        if colon:
            port_text = port_text_
        host = _decode(uri, host, "host name")
    port: int | None = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit():
            raise _fail(uri, f"port '{port_text}' is not a number; expected 1-65535")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise _fail(uri, f"port {port} is out of range; expected 1-65535")
    if not host:
        if user is not None:
            raise _fail(uri, f"user name '{user}' given without a host name; "
                             f"e.g. qemu+ssh://{user}@HOST/system")
        if port is not None:
            raise _fail(uri, f"port {port} given without a host name; e.g. qemu+tcp://HOST:{port}/system")
        return None, None, None
    return user, host, port


def _known_elsewhere(name: str) -> list[str]:
    where = [t for t, names in TRANSPORT_PARAMS.items() if name in names and t != "embed"]
    return where + list(_OTHER_KNOWN.get(name, ()))


def _check_params(uri: str, raw_params: list[tuple[str, str]], context: str,
                  context_label: str) -> dict[str, str]:
    allowed = TRANSPORT_PARAMS[context]
    params: dict[str, str] = {}
    for raw_name, raw_value in raw_params:
        name = _decode(uri, raw_name, "query parameter name").lower()
        value = _decode(uri, raw_value, f"value of parameter '{name}'")
        if name not in allowed:
            accepted = ", ".join(sorted(allowed))
            elsewhere = _known_elsewhere(name)
            if name == "root":
                raise _fail(uri, "parameter 'root' only applies to qemu:///embed")
            if elsewhere:
                plural = "s" if len(elsewhere) > 1 else ""
                raise _fail(uri, f"parameter '{name}' does not apply to {context_label} (it is used "
                                 f"by the {', '.join(elsewhere)} transport{plural}); "
                                 f"parameters accepted here: {accepted}")
            raise _fail(uri, f"unknown parameter '{name}'; parameters accepted for {context_label}: "
                             f"{accepted}")
        if name in params:
            raise _fail(uri, f"parameter '{name}' is given more than once; keep one")
        if value == "":
            raise _fail(uri, f"parameter '{name}' needs a value, e.g. {name}=...")
        if name in _BOOL_PARAMS and value not in ("0", "1"):
            raise _fail(uri, f"parameter '{name}' must be 0 or 1, got '{value}'")
        choices = _ENUM_PARAMS.get(name)
        if choices is not None and value not in choices:
            raise _fail(uri, f"parameter '{name}' must be one of {', '.join(choices)}, got '{value}'")
        params[name] = value
    return params


def check_embed_root(root: Path) -> None:
    """Refuse an embed root under which a QEMU monitor socket path would not fit a UNIX socket.

    The longest such path is ``{root}/lib/qemu/domain-{id}-{shortname}/monitor.sock`` with a
    10-digit id and a 20-character short name. Checked before anything is created on disk.
    """
    longest = root.joinpath(*_MONITOR_TAIL)
    length = len(os.fsencode(longest))
    if length > MONITOR_SOCKET_MAX:
        room = MONITOR_SOCKET_MAX - (length - len(os.fsencode(root)))
        raise InvalidURIError(
            f"embed root '{root}' is too long: QEMU monitor socket paths under it can reach "
            f"{length} bytes ({longest}), but a UNIX socket path must be shorter than "
            f"{SUN_PATH_MAX} bytes; choose a root of at most {room} bytes, e.g. under /tmp or /run")


def parse_uri(text: str) -> ConnectURI:
    """Parse and validate a QEMU driver connection URI.

    Raises :class:`NoConnectError` when the scheme names another driver and
    :class:`InvalidURIError` for anything else wrong, naming the fault and a fix.
    """
    if not isinstance(text, str) or not text:
        raise InvalidURIError(f"empty connection URI; {_USAGE}")
    return _parse(text)


# A URI's meaning depends on its text alone, and a ConnectURI cannot change: a daemon and its
# clients parse the same few again at every connection.
@lru_cache(maxsize=256)
def _parse(text: str) -> ConnectURI:
    uri = text
    for pos, ch in enumerate(text):
        if ch.isspace() or not ch.isprintable():
            raise _fail(uri, f"character {ch!r} at offset {pos} must be percent-encoded "
                             f"(e.g. a space as %20)")
    m = _SCHEME_RE.match(text)
    if m is None:
        raise _fail(uri, f"no scheme; {_USAGE}")
    scheme = m.group(1)
    rest = text[m.end():]
    if not rest.startswith("//"):
        raise _fail(uri, f"expected '//' after '{scheme}:'; {_USAGE}")
    rest = rest[2:]

    rest, hash_, fragment = rest.partition("#")
    if hash_:
        raise _fail(uri, f"a fragment ('#{fragment}') is not allowed in a connection URI")
    rest, qmark, query = rest.partition("?")
    slash = rest.find("/")
    authority, path_raw = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])

    driver, plus, transport_raw = scheme.partition("+")
    if driver == "secret":
        return _parse_secret_uri(text, authority, path_raw, query if qmark else None, plus)
    if driver != "qemu":
        hint = " (scheme names are case-sensitive: write 'qemu')" if driver.lower() == "qemu" else ""
        raise NoConnectError(
            f"no connection driver available for {driver}://{path_raw}{hint}; pyvirt provides "
            "the QEMU driver (qemu:///system, qemu:///session or qemu:///embed?root=DIR) and the "
            "secret driver (secret:///system, secret:///session, secret:///embed?root=DIR)")

    transport: str | None = None
    if plus:
        transport = transport_raw.lower()
        if transport in _UNSUPPORTED_TRANSPORTS:
            raise _fail(uri, f"the '{transport}' transport is not supported by pyvirt yet; use one "
                             f"of {', '.join(_SUPPORTED_TRANSPORTS)} (e.g. qemu+ssh://HOST/system)",
                        code=codes.VIR_ERR_NO_SUPPORT)
        if transport not in _SUPPORTED_TRANSPORTS:
            raise _fail(uri, f"unknown transport '{transport_raw}' in scheme '{scheme}'; use one of "
                             f"{', '.join(_SUPPORTED_TRANSPORTS)} "
                             f"({', '.join(_UNSUPPORTED_TRANSPORTS)} are not supported yet)")

    user, host, port = _split_authority(uri, authority)
    if transport == "unix" and host is not None:
        raise _fail(uri, f"the unix transport cannot reach remote host '{host}'; use "
                         f"qemu+ssh://{host}/... or qemu+tls://{host}/...")
    if user is not None and transport != "ssh":
        via = "a local connection" if host is None else f"the {transport or 'tls'} transport"
        raise _fail(uri, f"a user name is only used by the ssh transport, not {via}; "
                         f"e.g. qemu+ssh://{user}@{host or 'HOST'}/system")

    path = _decode(uri, path_raw, "path")
    if path not in ("/system", "/session", "/embed"):
        raise _fail(uri, f"unexpected QEMU URI path '{path}': try qemu:///system or "
                         "qemu:///session (or qemu:///embed?root=DIR)")

    remote = host is not None or transport in ("tcp", "tls", "ssh")
    if path == "/embed":
        if transport is not None:
            raise _fail(uri, f"the embedded driver runs in-process and takes no transport "
                             f"('{scheme}'); write qemu:///embed?root=DIR")
        if remote:
            raise _fail(uri, f"the embedded driver cannot run on remote host '{host}'; write "
                             "qemu:///embed?root=DIR")
        context, label = "embed", "qemu:///embed"
    else:
        context = transport or ("tls" if host is not None else "unix")
        label = f"the {context} transport" if remote or transport else "a local connection"

    params = _check_params(uri, _split_query(query) if qmark else [], context, label)

    if path == "/embed":
        root = params.get("root")
        if root is None:
            raise _fail(uri, "qemu:///embed needs a root directory: qemu:///embed?root=/some/dir")
        if not root.startswith("/"):
            raise _fail(uri, f"embed root '{root}' must be an absolute path, e.g. "
                             f"root={os.path.join('/srv', root)}")
        check_embed_root(Path(root))

    return ConnectURI(raw=text, driver=driver, transport=transport, user=user, host=host, port=port,
                      path=path, params=MappingProxyType(params))


def _parse_secret_uri(text: str, authority: str, path_raw: str, query: str | None, plus: str) -> ConnectURI:
    """libvirt's secret driver URIs: secret:///system, secret:///session, secret:///embed?root=DIR.

    pyvirt's secret driver lives in the instance of the same path and root (it is the one a
    qemu:/// connection there uses); it runs in-process, so no transport or host is taken.
    """
    if plus or authority:
        raise _fail(text, "pyvirt's secret driver runs in-process and takes no transport or host: "
                          "write secret:///system, secret:///session or secret:///embed?root=DIR "
                          "(or reach a daemon's secrets through its qemu+... URI)")
    path = _decode(text, path_raw, "path")
    if path not in ("/system", "/session", "/embed"):
        raise _fail(text, f"unexpected secret URI path '{path}': try secret:///system, secret:///session "
                          "or secret:///embed?root=DIR")
    raw_params = _split_query(query) if query is not None else []
    if path != "/embed" and raw_params:
        raise _fail(text, f"secret://{path} takes no parameters (only secret:///embed takes root=DIR)")
    params = _check_params(text, raw_params, "embed", "secret:///embed")
    if path == "/embed":
        root = params.get("root")
        if root is None:
            raise _fail(text, "secret:///embed needs a root directory: secret:///embed?root=/some/dir")
        if not root.startswith("/"):
            raise _fail(text, f"embed root '{root}' must be an absolute path, e.g. "
                              f"root={os.path.join('/srv', root)}")
        check_embed_root(Path(root))
    return ConnectURI(raw=text, driver="secret", transport=None, user=None, host=None, port=None, path=path,
                      params=MappingProxyType(params))


def default_uri(environ: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """The URI used when none is given: $PYVIRT_DEFAULT_URI if set and non-empty, else
    qemu:///system for root and qemu:///session for anyone else (as libvirt's probe does)."""
    env = os.environ if environ is None else environ
    chosen = env.get(DEFAULT_URI_ENV, "")
    if chosen:
        return chosen
    if euid is None:
        euid = os.geteuid()
    return "qemu:///system" if euid == 0 else "qemu:///session"
