# SPDX-License-Identifier: LGPL-2.1-or-later
"""The sockets pyvirtd listens on: which ones its configuration asks for
(:func:`plan_listeners`, whose errors stop the start), bound as libvirtd binds them (UNIX sockets
created owner-only and then opened up to their configured mode, a stale socket replaced, a live
one refused; TCP and TLS sockets on every address their host resolves to), and what the server
(:mod:`pyvirt.daemon.server`) keeps of each while it accepts on it, within the client limits."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvirt.daemon.config import DaemonConfig
from pyvirt.daemon.instance import SOCKET_NAME, SOCKET_RO_NAME
from pyvirt.errors import OperationFailed
from pyvirt.uri import SUN_PATH_MAX

if TYPE_CHECKING:
    from pyvirt.daemon.server import DaemonOptions

__all__ = ["Listener", "ClientSlot", "ListeningSocket", "plan_listeners", "resolve_group",
           "bind_unix", "bind_tcp", "run_now"]


@dataclass(frozen=True)
class Listener:
    """One socket to listen on: UNIX (path, read-only or not) or TCP (host, port)."""

    kind: str  # "unix", "tcp" or "tls"
    path: Path | None = None
    readonly: bool = False
    mode: int = 0o700
    host: str | None = None
    port: int = 0

    def describe(self) -> str:
        if self.kind == "unix":
            return f"{self.path} ({'read-only' if self.readonly else 'read-write'})"
        return f"{self.kind} {self.host or '*'}:{self.port}"


@dataclass(eq=False)
class ClientSlot:
    """One accepted connection, as the client limits count it: from accept() until it is gone."""

    #: Its socket asks for authentication, which it has not completed yet.
    anonymous: bool
    released: bool = False


class ListeningSocket:
    """One socket the daemon accepts on, and what its connections become."""

    def __init__(self, sock: socket.socket, plan: Listener, anonymous: bool,
                 protocol: Callable[[ClientSlot], Callable[[], asyncio.Protocol]],
                 adopt: Callable[[socket.socket, ClientSlot], None] | None = None) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        #: Family, type and protocol of its connections, as plain numbers: TCP's said outright
        #: (asyncio's loop sets TCP_NODELAY only on a socket whose protocol says TCP).
        tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self.kind = (int(sock.family), int(sock.type), socket.IPPROTO_TCP if tcp else sock.proto)
        self.plan = plan
        #: Its clients start out anonymous (its auth is not "none").
        self.anonymous = anonymous
        #: The protocol factory of one accepted connection.
        self.protocol = protocol
        #: accept() ran out of descriptors or memory: the socket rests until this timer fires.
        self.resting: asyncio.TimerHandle | None = None
        #: Where set, what takes an accepted socket over instead of an asyncio transport with
        #: :attr:`protocol` (TLS on GnuTLS: pyvirt.daemon.tls_gnutls).
        self.adopt = adopt


def plan_listeners(options: DaemonOptions) -> list[Listener]:
    """The sockets to open, or the configuration error that forbids starting."""
    config, instance = options.config, options.instance
    sock_dir = Path(config.unix_sock_dir) if config.unix_sock_dir else instance.run_dir
    plans = [Listener("unix", sock_dir / SOCKET_NAME, False, config.unix_sock_rw_perms)]
    if instance.has_ro_socket:
        plans.append(Listener("unix", sock_dir / SOCKET_RO_NAME, True, config.unix_sock_ro_perms))
    for plan in plans:
        assert plan.path is not None
        if len(os.fsencode(plan.path)) >= SUN_PATH_MAX:
            raise config.error("unix_sock_dir", f"socket path {plan.path} is longer than "
                                                f"{SUN_PATH_MAX - 1} bytes, the limit of a UNIX "
                                                "socket; choose a shorter unix_sock_dir or --root")
    if not options.listen:
        return plans
    if config.listen_tls:
        plans.append(Listener("tls", host=config.listen_addr, port=config.tls_port))
    if config.listen_tcp:
        from pyvirt.daemon.sasl import check_tcp_sasl

        check_tcp_sasl(config)  # SCRAM cannot give plain TCP the security layer libvirt requires
        if config.auth_tcp != "none" or not config.explicit("auth_tcp"):
            raise config.error("auth_tcp", f'auth_tcp = "{config.auth_tcp}" is not supported by '
                                           'pyvirtd; TCP without authentication must be asked '
                                           'for: write auth_tcp = "none" (anyone who can reach '
                                           "the port gets full control of the host)")
        plans.append(Listener("tcp", host=config.listen_addr, port=config.tcp_port))
    return plans


def resolve_group(config: DaemonConfig) -> int | None:
    if config.unix_sock_group is None:
        return None
    import grp

    name = config.unix_sock_group
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
    raise config.error("unix_sock_group", f"unix_sock_group: no group named '{name}'")


def bind_unix(plan: Listener, gid: int | None, backlog: int) -> socket.socket:
    assert plan.path is not None
    path = plan.path
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left by a daemon that did not exit cleanly
        else:
            raise OperationFailed(f"another daemon is already listening on {path}; stop it first")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Created owner-only, then opened up: the socket is never wider than configured.
        old = os.umask(0o077)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, plan.mode)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OperationFailed(f"cannot listen on {path}: {exc.strerror}") from exc
    return sock


async def bind_tcp(plan: Listener, backlog: int) -> list[socket.socket]:
    """The sockets of a TCP or TLS listener: one per address its host resolves to (with no host,
    every IPv4 and IPv6 address), as asyncio's create_server binds them."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(plan.host, plan.port, family=socket.AF_UNSPEC,
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise OperationFailed(f"cannot listen on {plan.describe()}: {exc.strerror}") from exc
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, type_, proto)
            except OSError:
                continue  # a family this host lacks (IPv6 turned off)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        if not socks:
            raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise OperationFailed(f"cannot listen on {plan.describe()}: {exc.strerror}") from exc
    return socks


def run_now(coro: Coroutine[Any, Any, Any], failed: Callable[[BaseException], None]) -> None:
    """Run ``coro`` at once, up to the first future it waits for, then on from there each time
    what it waits for is done; ``failed`` gets what it raises (not its result). An
    :class:`asyncio.Task` does the same, but takes its first step only on the loop's next turn
    (Python 3.12's eager tasks do not wait; this is for 3.11). For an accepted connection, that
    turn is one the client's first message waits for."""

    def step(_: object = None) -> None:
        try:
            waited = coro.send(None)
        except StopIteration:
            return
        except (Exception, asyncio.CancelledError) as exc:
            failed(exc)
            return
        if waited is None:  # a bare yield (asyncio.sleep(0)): on at the loop's next turn
            asyncio.get_running_loop().call_soon(step)
            return
        waited._asyncio_future_blocking = False  # (taken, as a Task takes it)
        waited.add_done_callback(step)

    step()
