# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd.conf: the keys of libvirtd.conf that pyvirtd reads, declared once, in libvirt's syntax.

Each field of :class:`DaemonConfig` is one key; its metadata holds the value kind and what it does.
Values are checked when the file is loaded, and errors name the file, the line and the key, so a
daemon never starts half-configured.

Differences from libvirtd, on purpose:

* Features pyvirtd does not have yet are refused with a clear error instead of being half-used:
  polkit (``auth_* = "polkit"``). SASL (:mod:`pyvirt.daemon.sasl`) works on the UNIX sockets and
  on TLS; on the plain TCP listener it is refused at start-up, since libvirt requires a security
  layer there that SCRAM does not have. TCP without authentication is allowed only when
  ``auth_tcp = "none"`` is written in the file: libvirtd's default for ``auth_tcp`` is
  ``"sasl"``, and silently serving plain TCP without it would open the host to anyone on the
  network.
* ``sasl_max_failures`` and ``sasl_failure_window`` are pyvirtd's own keys: the rate limit of
  failed SASL attempts per peer (libvirtd has none).
* ``busy_poll_us`` is pyvirtd's own key too: how long its event loop polls before it sleeps
  (:mod:`pyvirt.rpc.busypoll`).
* ``listen_tls`` defaults to 0 (libvirtd: 1): ``--listen`` alone opens no port that needs
  certificates to exist (see :mod:`pyvirt.daemon.tls` for where they are looked for).
* ``tls_priority`` unset means pyvirtd's own GnuTLS priority string, libvirt's default "NORMAL"
  with X25519 preferred (:data:`pyvirt.daemon.tls_gnutls.PRIORITY`). Where GnuTLS is not
  installed pyvirtd's TLS runs on OpenSSL, and a daemon with ``tls_priority`` set refuses to
  start rather than serve what it may have been meant to rule out.
* ``tcp_port``/``tls_port`` may be written as a number as well as a string (libvirtd takes only
  the string form).
* Unknown keys are ignored, as libvirtd does, but reported as warnings with the closest known
  key; keys libvirtd knows that have no effect in pyvirtd yet are accepted and listed likewise.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pyvirt.conf.syntax import ConfFile, ConfValue, format_value, parse_conf, read_conf
from pyvirt.errors import ConfigError
from pyvirt.rpc.busypoll import DEFAULT_US as BUSY_POLL_US
from pyvirt.rpc.busypoll import MAX_US as BUSY_POLL_MAX_US

__all__ = ["Kind", "DaemonConfig", "LogOutput", "SCHEMA", "INERT_KEYS", "load_daemon_config",
           "parse_daemon_config", "parse_log_outputs"]


class Kind(enum.Enum):
    STR = "a quoted string"
    BOOL = "0 or 1"
    INT = "an integer"
    UINT = "a non-negative integer"
    PORT = 'a port number 1..65535 (e.g. "16509")'
    PERMS = 'an octal permission string (e.g. "0770")'
    AUTH = '"none", "sasl" or "polkit"'
    STR_LIST = 'a list of strings like [ "a", "b" ]'


def _key(kind: Kind, doc: str, default: Any = None) -> Any:
    return field(default=default, metadata={"kind": kind, "doc": doc})


@dataclass(frozen=True)
class LogOutput:
    """One entry of ``log_outputs``: messages at ``level`` or above go to ``kind`` (stderr, file,
    syslog) with ``target`` the file name or the syslog identity."""

    level: int
    kind: str
    target: str | None = None


@dataclass(frozen=True)
class DaemonConfig:
    listen_tls: bool = _key(Kind.BOOL, "Listen for TLS connections (with --listen).", False)
    listen_tcp: bool = _key(Kind.BOOL, "Listen for plain TCP connections (with --listen).", False)
    tls_port: int = _key(Kind.PORT, "Port of the TLS listener.", 16514)
    tcp_port: int = _key(Kind.PORT, "Port of the TCP listener.", 16509)
    listen_addr: str | None = _key(Kind.STR, "Address to listen on; unset means every address.")

    unix_sock_group: str | None = _key(Kind.STR, "Group owning the UNIX sockets.")
    unix_sock_ro_perms: int = _key(Kind.PERMS, "Permissions of the read-only socket.", 0o777)
    unix_sock_rw_perms: int = _key(Kind.PERMS, "Permissions of the read-write socket.", 0o700)
    unix_sock_dir: str | None = _key(Kind.STR, "Directory of the UNIX sockets; unset means the "
                                               "instance's run directory.")

    auth_unix_ro: str = _key(Kind.AUTH, "Authentication on the read-only socket.", "none")
    auth_unix_rw: str = _key(Kind.AUTH, "Authentication on the read-write socket.", "none")
    auth_tcp: str = _key(Kind.AUTH, "Authentication on the TCP listener.", "sasl")
    auth_tls: str = _key(Kind.AUTH, "Authentication on the TLS listener.", "none")

    key_file: str | None = _key(Kind.STR, "TLS private key of the server.")
    cert_file: str | None = _key(Kind.STR, "TLS certificate of the server.")
    ca_file: str | None = _key(Kind.STR, "TLS certificate authority.")
    crl_file: str | None = _key(Kind.STR, "TLS certificate revocation list.")
    tls_no_verify_certificate: bool = _key(Kind.BOOL, "Do not check client certificates.", False)
    tls_priority: str | None = _key(Kind.STR, "GnuTLS priority string of TLS connections; unset "
                                              "means NORMAL with X25519 preferred.")
    tls_no_sanity_certificate: bool = _key(Kind.BOOL, "Do not check the server's own certificate "
                                                      "and CA at start-up.", False)
    tls_allowed_dn_list: tuple[str, ...] = _key(Kind.STR_LIST, "Client certificate DNs allowed "
                                                               "(wildcards).", ())
    sasl_allowed_username_list: tuple[str, ...] = _key(Kind.STR_LIST, "SASL user names allowed "
                                                                      "(wildcards).", ())
    sasl_max_failures: int = _key(Kind.UINT, "pyvirtd only: failed SASL attempts a peer may make "
                                             "within sasl_failure_window before being refused "
                                             "(0: no limit).", 5)
    sasl_failure_window: int = _key(Kind.UINT, "pyvirtd only: seconds over which "
                                               "sasl_max_failures counts.", 60)

    max_clients: int = _key(Kind.UINT, "Most clients connected at once, over all sockets; while "
                                       "reached, no connection is accepted (new ones wait in the "
                                       "backlog, max_queued_clients).", 5000)
    max_queued_clients: int = _key(Kind.UINT, "Backlog of connections not yet accepted.", 1000)
    max_anonymous_clients: int = _key(Kind.UINT, "Most clients connected at once that have not "
                                                 "finished authenticating (SASL); while reached, no "
                                                 "connection is accepted. 0: no such limit. At most "
                                                 "max_clients.", 20)
    max_workers: int = _key(Kind.UINT, "Threads running hypervisor calls.", 20)
    prio_workers: int = _key(Kind.UINT, "Threads reserved for calls that never wait on a "
                                        "hypervisor (0: they share max_workers).", 5)
    max_client_requests: int = _key(Kind.UINT, "Calls of one client processed at once; its further "
                                               "calls wait unread.", 5)
    keepalive_interval: int = _key(Kind.INT, "Seconds of client silence before a keepalive PING; "
                                             "-1 never pings.", 5)
    keepalive_count: int = _key(Kind.UINT, "Unanswered PINGs after which a client is dropped.", 5)
    busy_poll_us: int = _key(Kind.UINT, "pyvirtd only: microseconds the daemon goes on polling its "
                                        "sockets after a reply, a TLS handshake flight or an accept "
                                        "before it sleeps, to spare the wake-up of a halted CPU (0: "
                                        "never; at most 10000).", BUSY_POLL_US)

    log_level: int = _key(Kind.UINT, "1 debug, 2 info, 3 warning, 4 error.", 3)
    log_outputs: str | None = _key(Kind.STR, 'Where logs go: "LEVEL:stderr", "LEVEL:file:PATH", '
                                             '"LEVEL:syslog:NAME", separated by spaces.')

    # What loading found; not keys.
    path: str | None = None
    #: Keys written in the file, with their line numbers.
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    warnings: tuple[str, ...] = ()

    def explicit(self, key: str) -> bool:
        return key in self.lines

    def error(self, key: str, message: str) -> ConfigError:
        """An error about ``key``, placed at its line when the file sets it."""
        return ConfigError(message, path=self.path, line=self.lines.get(key), key=key)

    @property
    def outputs(self) -> tuple[LogOutput, ...]:
        if self.log_outputs is None:
            return (LogOutput(self.log_level, "stderr"),)
        return parse_log_outputs(self.log_outputs)


SCHEMA: Mapping[str, tuple[Kind, str]] = MappingProxyType({
    f.name: (f.metadata["kind"], f.metadata["doc"]) for f in fields(DaemonConfig) if "kind" in f.metadata
})

#: libvirtd.conf keys pyvirtd accepts without acting on them yet.
INERT_KEYS = frozenset({
    "unix_sock_admin_perms", "tcp_min_ssf",
    "access_drivers", "min_workers", "keepalive_required",
    "admin_min_workers", "admin_max_workers", "admin_max_clients", "admin_max_queued_clients",
    "admin_max_client_requests", "admin_keepalive_interval", "admin_keepalive_count",
    "log_filters", "audit_level", "audit_logging", "host_uuid", "host_uuid_source", "ovs_timeout",
    "mdns_adv", "mdns_name",
})

_AUTH = ("none", "sasl", "polkit")
_INT_MAX = 2**31 - 1
_LOG_KINDS = ("stderr", "file", "syslog", "journald")


def parse_log_outputs(text: str) -> tuple[LogOutput, ...]:
    """libvirt's log_outputs: whitespace-separated ``LEVEL:stderr``, ``LEVEL:file:PATH``,
    ``LEVEL:syslog:NAME`` (``journald`` is refused: pyvirtd does not speak its protocol yet)."""
    outputs = []
    for item in text.split():
        level, _, rest = item.partition(":")
        kind, _, target = rest.partition(":")
        if not level.isdigit() or not 1 <= int(level) <= 4:
            raise ValueError(f"'{item}': the level must be 1 (debug) to 4 (error)")
        if kind not in _LOG_KINDS:
            raise ValueError(f"'{item}': unknown output '{kind}', use stderr, file:PATH or syslog:NAME")
        if kind == "journald":
            raise ValueError(f"'{item}': journald output is not supported by pyvirtd yet; use "
                             "syslog:NAME or file:PATH")
        if kind == "file" and not target.startswith("/"):
            raise ValueError(f"'{item}': a file output needs an absolute path, e.g. 1:file:/var/log/x")
        if kind == "syslog" and not target:
            raise ValueError(f"'{item}': a syslog output needs a name, e.g. 3:syslog:pyvirtd")
        if kind == "stderr" and target:
            raise ValueError(f"'{item}': stderr takes no argument")
        outputs.append(LogOutput(int(level), kind, target or None))
    if not outputs:
        raise ValueError("no output given")
    return tuple(outputs)


class _Loader:
    def __init__(self, conf: ConfFile) -> None:
        self.conf = conf

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.conf.path, line=self.conf[key].line, key=key)

    def expect(self, key: str, kind: Kind) -> ConfigError:
        return self.error(key, f"key '{key}' expects {kind.value}, got {format_value(self.conf[key].value)}")

    def convert(self, key: str, kind: Kind, value: ConfValue) -> Any:
        if kind is Kind.STR:
            if not isinstance(value, str):
                raise self.expect(key, kind)
            return value
        if kind is Kind.BOOL:
            if value not in (0, 1) or not isinstance(value, int):
                raise self.expect(key, kind)
            return value == 1
        if kind in (Kind.INT, Kind.UINT):
            low = 0 if kind is Kind.UINT else -_INT_MAX - 1
            if not isinstance(value, int) or not low <= value <= _INT_MAX:
                raise self.expect(key, kind)
            return value
        if kind is Kind.PORT:
            text = str(value) if isinstance(value, int) else value
            if not isinstance(text, str) or not text.isdigit() or not 1 <= int(text) <= 65535:
                raise self.expect(key, kind)
            return int(text)
        if kind is Kind.PERMS:
            if not isinstance(value, str):
                raise self.expect(key, kind)
            try:
                perms = int(value, 8)
            except ValueError:
                raise self.expect(key, kind) from None
            if not 0 <= perms <= 0o7777:
                raise self.expect(key, kind)
            return perms
        if kind is Kind.AUTH:
            if value not in _AUTH:
                raise self.expect(key, kind)
            return value
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise self.expect(key, kind)
        return value

    def load(self) -> DaemonConfig:
        import difflib  # for suggestions only

        values: dict[str, Any] = {}
        warnings: list[str] = []
        for key, (value, line) in self.conf.items():
            entry = SCHEMA.get(key)
            if entry is not None:
                values[key] = self.convert(key, entry[0], value)
            elif key in INERT_KEYS:
                warnings.append(f"{self.conf.path}:{line}: key '{key}' has no effect in pyvirtd yet")
            else:
                close = difflib.get_close_matches(key, list(SCHEMA) + sorted(INERT_KEYS), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                warnings.append(f"{self.conf.path}:{line}: unknown key '{key}' ignored{hint}")
        for dup in self.conf.duplicates:
            warnings.append(f"{self.conf.path}:{dup.line}: key '{dup.key}' is set again; the value "
                            f"from line {dup.first_line} is used, as libvirtd does")
        config = DaemonConfig(**values, path=self.conf.path, warnings=tuple(warnings),
                              lines=MappingProxyType({k: s.line for k, s in self.conf.items()}))
        _check(config)
        return config


def _check(config: DaemonConfig) -> None:
    for key in ("auth_unix_ro", "auth_unix_rw", "auth_tls"):
        auth = getattr(config, key)
        if auth == "polkit":
            raise config.error(key, f'{key} = "polkit": polkit authentication is not supported by '
                                    'pyvirtd yet; use "sasl" (pyvirt.daemon.sasl) or "none" and '
                                    "rely on the socket permissions (unix_sock_*_perms, "
                                    "unix_sock_group)")
    if config.max_workers < 1:
        raise config.error("max_workers", "max_workers must be at least 1")
    if config.max_clients < 1:
        raise config.error("max_clients", "max_clients must be at least 1")
    if config.max_client_requests < 1:
        raise config.error("max_client_requests", "max_client_requests must be at least 1")
    if config.keepalive_interval == 0 or config.keepalive_interval < -1:
        raise config.error("keepalive_interval", "keepalive_interval must be a number of seconds, "
                                                 "or -1 to never send keepalive PINGs")
    if config.busy_poll_us > BUSY_POLL_MAX_US:
        raise config.error("busy_poll_us", f"busy_poll_us must be {BUSY_POLL_MAX_US} (10 ms) or "
                                           f"less, got {config.busy_poll_us}; 0 turns polling off")
    if not 1 <= config.log_level <= 4:
        raise config.error("log_level", f"log_level must be 1 (debug) to 4 (error), got "
                                        f"{config.log_level}")
    if config.log_outputs is not None:
        try:
            parse_log_outputs(config.log_outputs)
        except ValueError as exc:
            raise config.error("log_outputs", f"log_outputs: {exc}") from None
    if config.max_anonymous_clients > config.max_clients:
        # libvirtd refuses to start too ("The overall maximum number of clients must not be less
        # than the number of clients waiting for authentication")
        anonymous = config.max_anonymous_clients
        default = "" if config.explicit("max_anonymous_clients") else ", its default"
        raise config.error(
            "max_anonymous_clients" if config.explicit("max_anonymous_clients") else "max_clients",
            f"max_anonymous_clients ({anonymous}{default}) is more than max_clients "
            f"({config.max_clients}): clients waiting for authentication cannot outnumber all "
            f"clients; set max_anonymous_clients = {config.max_clients} or less (0 turns that "
            f"limit off), or max_clients = {anonymous} or more")


def parse_daemon_config(text: str, path: str = "pyvirtd.conf") -> DaemonConfig:
    return _Loader(parse_conf(text, path)).load()


def load_daemon_config(path: Path | None, *, required: bool) -> DaemonConfig:
    """Read pyvirtd.conf; without a file (``path`` None, or missing and not ``required``) the
    defaults apply."""
    if path is None:
        return DaemonConfig()
    try:
        conf = read_conf(path)
    except FileNotFoundError as exc:
        if not required:
            return DaemonConfig()
        raise ConfigError("the configuration file does not exist", path=str(path)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", path=str(path)) from exc
    return _Loader(conf).load()
