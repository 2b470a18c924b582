# SPDX-License-Identifier: LGPL-2.1-or-later
"""SASL authentication in pyvirtd: SCRAM-SHA-256 and SCRAM-SHA-1 (RFC 5802, 7677) with pyvirt's
password database, libvirt's ``sasl_allowed_username_list``, and a per-peer limit on failures.

Which sockets ask for it: ``auth_unix_rw``/``auth_unix_ro``, ``auth_tls`` (and ``auth_tcp``, see
below) = ``"sasl"``. Such a client gets ``AUTH_LIST`` = [REMOTE_AUTH_SASL]; ``AUTH_SASL_INIT``
answers the mechanisms; ``AUTH_SASL_START`` {mech, client-first} answers the server-first
(complete 0); ``AUTH_SASL_STEP`` {client-final} answers the server-final (complete 1). Until then
every other procedure is answered VIR_ERR_RPC "authentication required"
(:mod:`pyvirt.daemon.dispatch` checks :attr:`ClientSession.auth_pending`).

What libvirtd 9.0 does with Cyrus SASL 2.1.28 and a sasldb (observed, and followed here):

* Every failure is answered VIR_ERR_AUTH_FAILED / VIR_FROM_RPC "authentication failed:
  authentication failed"; the cause goes to the daemon's log only.
* On plain TCP libvirt requires a SASL security layer of strength (SSF) 56 or more -- its client
  asks for 56, libvirtd for ``tcp_min_ssf`` (9.0 refuses values under 112) and checks 56 again
  after the exchange. SCRAM has no security layer (SSF 0), so libvirtd offers no mechanism there
  ("no SASL mechanisms are available": AUTH_SASL_INIT fails) and virsh prints "authentication
  failed: authentication failed". pyvirtd refuses ``auth_tcp = "sasl"`` on a TCP listener when
  it starts (:func:`check_tcp_sasl`), naming the setups that work: SASL over TLS
  (``listen_tls = 1``, ``auth_tls = "sasl"``) or over a UNIX socket; should any other insecure
  transport reach AUTH_SASL_INIT it is refused as libvirtd does.
* GSSAPI (Kerberos) is not supported by pyvirtd: a client asking for it is refused, and the log
  says so.

Differences on purpose:

* libvirtd leaves the connection open after a failed attempt (the client may start over on it);
  pyvirtd sends the error and hangs up, so every guess costs a new connection and meets the
  rate limit.
* An unknown user fails where a wrong password fails -- at AUTH_SASL_STEP, after a server-first
  whose salt is made up but stable per name -- where Cyrus fails at AUTH_SASL_START ("user not
  found"): the exchange does not tell which names exist. The log does.
* Rate limit, per peer (the IP address for TCP and TLS, the uid for a UNIX socket): once a peer
  has failed ``sasl_max_failures`` times within ``sasl_failure_window`` seconds, its further
  attempts are refused at AUTH_SASL_INIT, credentials unseen, until the oldest of those failures
  is older than the window. A success clears the peer's record.

Every refusal is logged (warning) with the client's peer string and the user name, if one was
sent; a success is logged (info) with the user and mechanism.

The password database (:class:`PasswordDB`) is ``pyvirtd-sasl.json`` in the instance's
configuration directory, beside pyvirtd.conf (``ROOT/etc/`` for ``pyvirtd --root ROOT``,
``/etc/pyvirt/`` for the system instance, ``~/.config/pyvirt/`` for a session one), mode 0600,
replaced atomically by ``pyvirt-saslpasswd``. It holds per user and mechanism the salt, the
iteration count, StoredKey and ServerKey of RFC 5802 -- never a password -- and is read again
whenever it changes, so users are added and removed without restarting the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import hmac
import json
import logging
import os
import socket
import struct
import threading
import time
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import ConfigError, OperationFailed, PyvirtError
from pyvirt.rpc.protocol import AuthType

if TYPE_CHECKING:
    from pyvirt.daemon.config import DaemonConfig
    from pyvirt.daemon.dispatch import ClientSession
    from pyvirt.daemon.instance import ServedInstance

__all__ = ["MECHANISMS", "DB_NAME", "DEFAULT_ITERATIONS", "ScramKeys", "PasswordDB", "SaslServer",
           "FailureLimiter", "db_path", "make_keys", "set_password", "delete_user",
           "check_username", "check_tcp_sasl", "auth_failed", "auth_type_of", "peer_key"]

log = logging.getLogger("pyvirt.daemon")

#: Offered in this order (Cyrus's clients take the first they support, the strongest).
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
DB_NAME = "pyvirtd-sasl.json"
DB_VERSION = 1
#: Cyrus SASL's saslpasswd2 uses 4096 for SCRAM too.
DEFAULT_ITERATIONS = 4096
_MAX_PEERS = 10000

_AUTH_TYPES = {"none": AuthType.NONE, "sasl": AuthType.SASL, "polkit": AuthType.POLKIT}


def auth_failed() -> PyvirtError:
    """The one error libvirtd gives for every SASL failure."""
    return PyvirtError("authentication failed: authentication failed",
                       code=codes.VIR_ERR_AUTH_FAILED, domain=codes.VIR_FROM_RPC,
                       str1="authentication failed: %s", str2="authentication failed")


def db_path(instance: ServedInstance) -> Path:
    return instance.config_file.parent / DB_NAME


def auth_type_of(config: DaemonConfig, kind: str, readonly: bool) -> int:
    """The REMOTE_AUTH_* a client of this socket must pass."""
    if kind == "unix":
        name = config.auth_unix_ro if readonly else config.auth_unix_rw
    elif kind == "tls":
        name = config.auth_tls
    else:
        name = config.auth_tcp
    return int(_AUTH_TYPES[name])


def check_tcp_sasl(config: DaemonConfig) -> None:
    """Refuse SASL on a plain TCP listener: see the module docstring."""
    if config.auth_tcp == "sasl":
        how = ('auth_tcp = "sasl"' if config.explicit("auth_tcp")
               else 'auth_tcp is not set (its default is "sasl")')
        raise config.error(
            "auth_tcp" if config.explicit("auth_tcp") else "listen_tcp",
            f"{how} on the plain TCP listener: libvirt's clients and daemon require a SASL "
            "security layer (SSF of 56 or more) on unencrypted TCP, and pyvirtd's mechanisms "
            "(SCRAM-SHA-256, SCRAM-SHA-1) have none, so every client would be refused (as "
            'libvirtd refuses them); use TLS with SASL on top (listen_tls = 1, auth_tls = "sasl", '
            'clients connect to qemu://HOST/system), or auth_tcp = "none" on a trusted network')


def peer_key(transport: Any, kind: str) -> str:
    """Who the rate limit counts for a connection: its IP address over TCP and TLS, its uid on
    a UNIX socket."""
    if kind in ("tcp", "tls"):
        peername = transport.get_extra_info("peername")
        return str(peername[0]) if peername else "(unknown address)"
    sock = transport.get_extra_info("socket")
    try:
        _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    except (OSError, AttributeError):
        return "unix (no credentials)"
    return f"uid {uid}"


# ---- user names and keys ---------------------------------------------------------------------

def check_username(name: str) -> str | None:
    """What is wrong with ``name`` as a SASL user name, or None."""
    if not name:
        return "the user name is empty"
    if len(name.encode()) > 255:
        return "the user name is longer than 255 bytes"
    if any(c.isspace() or not c.isprintable() for c in name):
        return f"the user name {name!r} holds a space or a control character"
    return None


@dataclass(frozen=True)
class ScramKeys:
    """What a SCRAM server keeps of one password (RFC 5802 section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {"salt": b64encode(self.salt).decode(), "iterations": self.iterations,
                "stored_key": b64encode(self.stored_key).decode(),
                "server_key": b64encode(self.server_key).decode()}

    @classmethod
    def from_json(cls, value: Any) -> ScramKeys:
        return cls(b64decode(value["salt"], validate=True), int(value["iterations"]),
                   b64decode(value["stored_key"], validate=True),
                   b64decode(value["server_key"], validate=True))


def make_keys(password: str, mechanism: str, iterations: int = DEFAULT_ITERATIONS) -> ScramKeys:
    import scramp

    salt, stored_key, server_key, i = scramp.ScramMechanism(mechanism).make_auth_info(
        password, iteration_count=iterations)
    return ScramKeys(bytes(salt), int(i), bytes(stored_key), bytes(server_key))


# ---- the database -----------------------------------------------------------------------------

Users = dict[str, dict[str, ScramKeys]]


def _read(path: Path) -> Users:
    """The users of ``path`` ({} when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise OperationFailed(f"cannot read the SASL password database {path}: "
                              f"{exc.strerror}") from exc
    try:
        doc = json.loads(text)
        if doc.get("version") != DB_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {DB_VERSION}")
        users: Users = {}
        for user, mechs in doc["users"].items():
            users[str(user)] = {str(m): ScramKeys.from_json(v) for m, v in mechs.items()}
        return users
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"not a pyvirt SASL password database ({exc}); recreate it with "
                          "pyvirt-saslpasswd", path=str(path)) from exc


def _write(path: Path, users: Users) -> None:
    from pyvirt.fsutil import atomic_write_text

    doc = {"version": DB_VERSION,
           "users": {u: {m: k.to_json() for m, k in sorted(mechs.items())}
                     for u, mechs in sorted(users.items())}}
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n", mode=0o600)


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    """Serialises the read-modify-write of pyvirt-saslpasswd runs on one database."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def set_password(path: Path, user: str, password: str,
                 iterations: int = DEFAULT_ITERATIONS) -> bool:
    """Add ``user`` or change its password (keys for every mechanism); True if it was new."""
    problem = check_username(user)
    if problem:
        raise PyvirtError(f"invalid argument: {problem}", code=codes.VIR_ERR_INVALID_ARG)
    if not password:
        raise PyvirtError("invalid argument: the password is empty",
                          code=codes.VIR_ERR_INVALID_ARG)
    keys = {m: make_keys(password, m, iterations) for m in MECHANISMS}
    with _locked(path):
        users = _read(path)
        new = user not in users
        users[user] = keys
        _write(path, users)
    return new


def delete_user(path: Path, user: str) -> bool:
    """Remove ``user``; False if it was not there (nothing is written then)."""
    with _locked(path):
        users = _read(path)
        if users.pop(user, None) is None:
            return False
        _write(path, users)
    return True


class PasswordDB:
    """The daemon's view of the database: read again when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._users: Users = {}
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp or stamp is None:
            self._users = _read(self.path) if stamp is not None else {}
            self._stamp = stamp

    def lookup(self, user: str, mechanism: str) -> ScramKeys | None:
        with self._lock:
            self._refresh()
            return self._users.get(user, {}).get(mechanism)

    def users(self) -> list[str]:
        with self._lock:
            self._refresh()
            return sorted(self._users)


# ---- the rate limit ---------------------------------------------------------------------------

class FailureLimiter:
    """At most ``max_failures`` failed attempts per peer within ``window`` seconds."""

    def __init__(self, max_failures: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window, self.clock = max_failures, window, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, peer: str, now: float) -> deque[float] | None:
        times = self._failures.get(peer)
        if times is None:
            return None
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[peer]
            return None
        return times

    def blocked_for(self, peer: str) -> float:
        """Seconds until ``peer`` may try again (0: it may now)."""
        if self.max_failures <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            times = self._recent(peer, now)
            if times is None or len(times) < self.max_failures:
                return 0.0
            return max(0.0, times[-self.max_failures] + self.window - now)

    def failed(self, peer: str) -> None:
        with self._lock:
            now = self.clock()
            times = self._recent(peer, now)
            if times is None:
                if len(self._failures) >= _MAX_PEERS:  # forget the stalest peer, not the newest
                    stalest = min(self._failures, key=lambda p: self._failures[p][-1])
                    del self._failures[stalest]
                times = self._failures[peer] = deque(maxlen=max(self.max_failures, 1))
            times.append(now)

    def succeeded(self, peer: str) -> None:
        with self._lock:
            self._failures.pop(peer, None)


# ---- one daemon's SASL service, one client's exchange --------------------------------------------

class SaslServer:
    """What the daemon's clients share: the database, the allow-list, the rate limit."""

    def __init__(self, config: DaemonConfig, instance: ServedInstance,
                 path: Path | None = None) -> None:
        self.config = config
        self.db = PasswordDB(path or db_path(instance))
        # libvirt: an unset list allows everyone; a list set empty allows no one
        self.allowed: tuple[str, ...] | None = (
            config.sasl_allowed_username_list
            if config.explicit("sasl_allowed_username_list") else None)
        self.limiter = FailureLimiter(config.sasl_max_failures, config.sasl_failure_window)
        self._secret = os.urandom(32)

    def in_use(self) -> bool:
        config = self.config
        return "sasl" in (config.auth_unix_rw, config.auth_unix_ro, config.auth_tls)

    def check_start(self) -> None:
        """At start-up: a database that cannot be read stops the daemon; none at all is
        worth a warning (users can be added while it runs)."""
        if not self.in_use():
            return
        users = self.db.users()
        if not users:
            log.warning("SASL authentication is configured but %s holds no user: every client "
                        "will be refused until one is added with pyvirt-saslpasswd", self.db.path)

    def admit(self, session: ClientSession, kind: str, readonly: bool, peer_key: str) -> None:
        """Set up a new client's authentication for its socket."""
        session.auth_type = auth_type_of(self.config, kind, readonly)
        session.auth_pending = session.auth_type != AuthType.NONE
        if session.auth_type == AuthType.SASL:
            session.sasl = SaslExchange(self, secure=kind != "tcp", peer_key=peer_key)

    def allows(self, user: str) -> bool:
        # libvirt: fnmatch(3) with no flags ('*' also matches '/'); one difference: a backslash
        # is a literal character here, an escape there
        if self.allowed is None:
            return True
        return any(fnmatch.fnmatchcase(user, pattern) for pattern in self.allowed)

    def decoy_keys(self, user: str, mechanism: str) -> ScramKeys:
        """Keys no password matches, with a salt stable per name (an unknown user looks like a
        known one to the client)."""
        # as long as a real salt (scramp's are 32 bytes), and the default iteration count
        digest = hmac.new(self._secret, f"{mechanism}\0{user}".encode(), hashlib.sha256).digest()
        return ScramKeys(digest, DEFAULT_ITERATIONS, os.urandom(32), os.urandom(32))


class SaslExchange:
    """One client's SASL state: INIT, START, STEP..., in that order, once."""

    def __init__(self, server: SaslServer, *, secure: bool, peer_key: str) -> None:
        self.server = server
        self.secure = secure
        self.peer_key = peer_key
        self.stage = "new"  # -> "init" -> "first" (waiting for client-first) -> "final" -> "done"
        self.mechanism: str | None = None
        self.user: str | None = None
        self.unknown_user = False
        self._scram: Any = None
        #: A client may send its calls concurrently: one step at a time.
        self.lock = threading.Lock()

    def expect(self, session: ClientSession, stages: tuple[str, ...], what: str) -> None:
        if self.stage not in stages:
            raise self.refuse(session, f"{what} out of turn (at stage {self.stage})", count=False)

    def refuse(self, session: ClientSession, reason: str, *, count: bool = True) -> PyvirtError:
        """Log, count, hang up after the reply; the error to raise."""
        who = f" for user {self.user!r}" if self.user is not None else ""
        log.warning("client %s: SASL authentication refused%s: %s", session.peer, who, reason)
        if count:
            self.server.limiter.failed(self.peer_key)
        self.stage = "failed"
        session.hangup = True
        return auth_failed()

    def _keys(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        assert self.mechanism is not None
        self.user = user
        keys = self.server.db.lookup(user, self.mechanism)
        if keys is None:
            self.unknown_user = True
            keys = self.server.decoy_keys(user, self.mechanism)
        return keys.salt, keys.stored_key, keys.server_key, keys.iterations

    def client_first(self, session: ClientSession, data: bytes) -> dict[str, Any]:
        import scramp

        assert self.mechanism is not None
        try:
            text = data.decode("utf-8")
            flag, authzid, _ = text.split(",", 2)
        except ValueError:
            raise self.refuse(session, f"malformed {self.mechanism} client-first message") from None
        self._scram = scramp.ScramMechanism(self.mechanism).make_server(self._keys)
        try:
            self._scram.set_client_first(text)
            server_first = self._scram.get_server_first()
        except scramp.ScramException as exc:
            raise self.refuse(session, f"bad {self.mechanism} client-first message: {exc}") from None
        except PyvirtError as exc:  # the database: the admin's problem, not the client's
            log.error("SASL password database unusable: %s", exc)
            raise self.refuse(session, f"cannot look the user up: {exc}", count=False) from None
        if authzid and authzid[2:] != self.user:
            raise self.refuse(session, f"asks to act as {authzid[2:]!r} (a SASL authorization "
                                       "identity), which pyvirtd does not support")
        if flag.startswith("p"):
            raise self.refuse(session, "asks for channel binding (SCRAM-*-PLUS), which pyvirtd "
                                       "does not offer")
        self.stage = "final"
        return {"complete": 0, "nil": 0, "data": server_first.encode()}

    def client_final(self, session: ClientSession, data: bytes) -> dict[str, Any]:
        import scramp

        try:
            self._scram.set_client_final(data.decode("utf-8"))
            server_final = self._scram.get_server_final()
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            reason = "unknown user" if self.unknown_user else f"wrong password ({exc})"
            raise self.refuse(session, reason) from None
        assert self.user is not None
        if not self.server.allows(self.user):
            raise self.refuse(session, "the user name is not in sasl_allowed_username_list")
        self.stage = "done"
        self.server.limiter.succeeded(self.peer_key)
        session.auth_pending = False
        log.info("client %s: authenticated as %r with %s", session.peer, self.user, self.mechanism)
        return {"complete": 1, "nil": 0, "data": server_final.encode()}


# ---- the procedures ---------------------------------------------------------------------------

def _exchange(session: ClientSession, what: str) -> SaslExchange:
    ex: SaslExchange | None = session.sasl
    if ex is None:
        log.warning("client %s: SASL authentication refused: %s on a socket whose auth is %s",
                    session.peer, what, {0: "none", 2: "polkit"}.get(session.auth_type, "?"))
        session.hangup = True
        raise auth_failed()
    return ex


def sasl_init(session: ClientSession, args: None) -> Any:
    ex = _exchange(session, "AUTH_SASL_INIT")
    with ex.lock:
        ex.expect(session, ("new",), "AUTH_SASL_INIT")
        return _init(session, ex)


def _init(session: ClientSession, ex: SaslExchange) -> Any:
    server = ex.server
    wait = server.limiter.blocked_for(ex.peer_key)
    if wait > 0:
        raise ex.refuse(session, f"{server.limiter.max_failures} failed attempts from "
                                 f"{ex.peer_key} within {server.limiter.window:g} s; refused "
                                 f"for {wait:.1f} s more", count=False)
    if not ex.secure:
        raise ex.refuse(session, "plain TCP needs a SASL security layer (SSF of 56 or more) and "
                                 "SCRAM has none: no mechanism available", count=False)
    ex.stage = "init"
    return {"mechlist": ",".join(MECHANISMS)}


def sasl_start(session: ClientSession, args: Any) -> Any:
    ex = _exchange(session, "AUTH_SASL_START")
    with ex.lock:
        ex.expect(session, ("init",), "AUTH_SASL_START")
        return _start(session, ex, args)


def _start(session: ClientSession, ex: SaslExchange, args: Any) -> Any:
    mech = str(args.mech)
    if mech not in MECHANISMS:
        hint = " (GSSAPI/Kerberos is not supported by pyvirtd)" if mech == "GSSAPI" else ""
        raise ex.refuse(session, f"mechanism {mech!r} is not offered{hint}; offered: "
                                 f"{', '.join(MECHANISMS)}")
    ex.mechanism = mech
    if args.nil:  # no initial response: ask for the client-first with an empty challenge
        ex.stage = "first"
        return {"complete": 0, "nil": 1, "data": b""}
    return ex.client_first(session, bytes(args.data))


def sasl_step(session: ClientSession, args: Any) -> Any:
    ex = _exchange(session, "AUTH_SASL_STEP")
    with ex.lock:
        ex.expect(session, ("first", "final"), "AUTH_SASL_STEP")
        data = b"" if args.nil else bytes(args.data)
        if ex.stage == "first":
            return ex.client_first(session, data)
        return ex.client_final(session, data)


def _register() -> None:
    from pyvirt.daemon.handlers import HANDLERS

    # On worker threads: the database is a file, read again when it changes.
    HANDLERS.register("AUTH_SASL_INIT", needs_open=False)(sasl_init)
    HANDLERS.register("AUTH_SASL_START", needs_open=False)(sasl_start)
    HANDLERS.register("AUTH_SASL_STEP", needs_open=False)(sasl_step)


_register()
