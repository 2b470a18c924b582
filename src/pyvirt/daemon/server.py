# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's server: listening sockets, one asyncio task per client, calls run concurrently.

Each client connection reads frames with a :class:`~pyvirt.rpc.protocol.FrameDecoder` (which
refuses a bad length word before buffering the body, so no client can make the daemon allocate
more than one maximal message) and starts one task per CALL; replies go out in completion order,
as libvirt allows. A client has at most ``max_client_requests`` calls in flight: beyond that its
socket is simply not read, which pushes back on it alone. Hypervisor calls block, so they run on
a bounded thread pool (``max_workers``), with a separate pool (``prio_workers``) for the
procedures libvirt marks high-priority, so that a host busy with slow calls still answers
"what is your hostname".

Keepalive follows libvirtd: a client that asked for CONNECT_SUPPORTS_FEATURE(keepalive) is sent
a PING after ``keepalive_interval`` seconds of silence and dropped when ``keepalive_count`` PINGs
go unanswered; PINGs from clients are answered with PONGs, unsolicited PONGs are fine.

A protocol violation that breaks the framing (a bad length word) closes that client's connection;
anything a well-framed message can get wrong is answered with an error reply. Nothing a client
sends can stop the daemon or touch another client.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvirt.daemon.config import DaemonConfig
from pyvirt.daemon.dispatch import ClientSession, Dispatcher, HandlerTable
from pyvirt.daemon.instance import PID_NAME, SOCKET_NAME, SOCKET_RO_NAME, ServedInstance
from pyvirt.errors import OperationFailed
from pyvirt.rpc.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    Header,
    KeepaliveProc,
    Message,
    MessageType,
    Program,
    ProtocolError,
    encode_message,
)
from pyvirt.uri import SUN_PATH_MAX

if TYPE_CHECKING:
    from pyvirt.connection import virConnect

__all__ = ["Daemon", "DaemonOptions", "Listener", "plan_listeners", "check_config"]

log = logging.getLogger("pyvirt.daemon")

_READ_CHUNK = 256 * 1024
#: How long shutdown waits for calls already running on worker threads.
_SHUTDOWN_GRACE = 5.0

_PING = encode_message(Header(Program.KEEPALIVE, PROTOCOL_VERSION, KeepaliveProc.PING,
                              MessageType.MESSAGE, 0))
_PONG = encode_message(Header(Program.KEEPALIVE, PROTOCOL_VERSION, KeepaliveProc.PONG,
                              MessageType.MESSAGE, 0))


@dataclass(frozen=True)
class Listener:
    """One socket to listen on: UNIX (path, read-only or not) or TCP (host, port)."""

    kind: str  # "unix" or "tcp"
    path: Path | None = None
    readonly: bool = False
    mode: int = 0o700
    host: str | None = None
    port: int = 0

    def describe(self) -> str:
        if self.kind == "unix":
            return f"{self.path} ({'read-only' if self.readonly else 'read-write'})"
        return f"tcp {self.host or '*'}:{self.port}"


@dataclass(frozen=True)
class DaemonOptions:
    instance: ServedInstance
    config: DaemonConfig
    listen: bool = False
    #: Exit after this many seconds without clients.
    timeout: float | None = None
    pid_file: Path | None = None


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
        raise config.error("listen_tls", "listen_tls = 1: TLS is not supported by pyvirtd yet; set "
                                         "listen_tls = 0 (and use listen_tcp on a trusted network, "
                                         "or SSH)")
    if config.listen_tcp:
        if config.auth_tcp != "none" or not config.explicit("auth_tcp"):
            how = (f'auth_tcp = "{config.auth_tcp}"' if config.explicit("auth_tcp")
                   else 'auth_tcp is not set (its default is "sasl")')
            raise config.error("auth_tcp" if config.explicit("auth_tcp") else "listen_tcp",
                               f"{how}: SASL authentication is not supported by pyvirtd yet, and "
                               'TCP without authentication must be asked for: write auth_tcp = "none" '
                               "(anyone who can reach the port gets full control of the host)")
        plans.append(Listener("tcp", host=config.listen_addr, port=config.tcp_port))
    return plans


def _resolve_group(config: DaemonConfig) -> int | None:
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


def _bind_unix(plan: Listener, gid: int | None, backlog: int) -> socket.socket:
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


class _PidFile:
    """The pid file, locked while the daemon runs; written only once the sockets accept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def check_free(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise OperationFailed(f"cannot open pid file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise OperationFailed(f"pid file {self.path} is held by a running pyvirtd (pid "
                                      f"{os.read(fd, 32).decode(errors='replace').strip()})") from exc
        finally:
            os.close(fd)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.replace(tmp, self.path)  # appears whole: readers never see it half-written
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._fd = fd

    def remove(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _notify_ready() -> None:
    """sd_notify(READY=1) when started by a service manager that asks for it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1\nSTATUS=accepting connections", address)
    except OSError as exc:
        log.warning("cannot notify readiness on %s: %s", address, exc)


class ClientConnection:
    """One connected client: reads its frames, runs its calls, writes the replies."""

    def __init__(self, daemon: Daemon, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 session: ClientSession) -> None:
        self.daemon = daemon
        self.reader, self.writer = reader, writer
        self.session = session
        self.decoder = FrameDecoder()
        self.calls: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(daemon.config.max_client_requests)
        self.write_lock = asyncio.Lock()
        self.closed = False
        self.last_received = asyncio.get_running_loop().time()
        self._keepalive: asyncio.Task[None] | None = None

    @property
    def peer(self) -> str:
        return self.session.peer

    async def run(self) -> None:
        try:
            while not self.closed:
                data = await self.reader.read(_READ_CHUNK)
                if not data:
                    if self.decoder.buffered:
                        log.info("client %s: disconnected with %d bytes of an incomplete message",
                                 self.peer, self.decoder.buffered)
                    break
                self.last_received = asyncio.get_running_loop().time()
                for msg in self.decoder.feed(data):
                    await self.on_message(msg)
                if self.session.keepalive and self._keepalive is None:
                    self.start_keepalive()
        except ProtocolError as exc:
            log.warning("client %s: protocol error, closing: %s", self.peer, exc.message)
        except OSError as exc:
            log.info("client %s: connection lost: %s", self.peer, exc)
        finally:
            await self.finish()

    async def on_message(self, msg: Message) -> None:
        h = msg.header
        if h.prog == Program.KEEPALIVE and h.type == MessageType.MESSAGE:
            if h.proc == KeepaliveProc.PING:
                self.write_now(_PONG)
            return  # a PONG only proves the client alive, which last_received already notes
        # (a CALL to the keepalive program is answered "Cannot find program", as by libvirtd)
        if h.type not in (MessageType.CALL, MessageType.CALL_WITH_FDS):
            # libvirtd drops replies, events and stream data it did not expect, silently
            log.debug("client %s: ignoring %s", self.peer, h.describe())
            return
        # At most max_client_requests calls at once: wait here, not reading more, until one ends.
        await self.slots.acquire()
        task = asyncio.create_task(self.handle_call(msg))
        self.calls.add(task)
        task.add_done_callback(self._call_done)

    def _call_done(self, task: asyncio.Task[None]) -> None:
        self.calls.discard(task)
        self.slots.release()

    async def handle_call(self, msg: Message) -> None:
        try:
            frame = await self.daemon.dispatcher.call(self.session, msg)
        except Exception:
            log.exception("client %s: dispatching %s failed", self.peer, msg.header.describe())
            return
        await self.send(frame)
        if self.session.hangup:
            self.close()  # CONNECT_CLOSE: the reply is out, now hang up as libvirtd does

    async def send(self, frame: bytes) -> None:
        if self.closed:
            return  # the client left while its call ran: the reply has nowhere to go
        async with self.write_lock:
            try:
                self.writer.write(frame)
                await self.writer.drain()
            except (OSError, RuntimeError) as exc:
                log.info("client %s: cannot send: %s", self.peer, exc)
                self.close()

    def write_now(self, frame: bytes) -> None:
        """Queue a small frame without waiting: keepalive must not wait behind a slow reader."""
        if not self.closed and not self.writer.is_closing():
            self.writer.write(frame)

    def start_keepalive(self) -> None:
        interval = self.daemon.config.keepalive_interval
        if interval > 0:
            self._keepalive = asyncio.create_task(self.keepalive(interval,
                                                                 self.daemon.config.keepalive_count))

    async def keepalive(self, interval: float, count: int) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(interval)
            quiet = loop.time() - self.last_received
            if quiet >= interval * (count + 1):
                log.warning("client %s: no response after %d keepalive messages in %.0f s, closing",
                            self.peer, count, quiet)
                self.close()
                return
            if quiet >= interval:
                self.write_now(_PING)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    async def finish(self) -> None:
        self.close()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self.calls:
            # Calls already on worker threads cannot be interrupted; let them end, then close
            # the client's hypervisor connection behind them.
            await asyncio.wait(set(self.calls), timeout=None)
        try:
            await asyncio.get_running_loop().run_in_executor(self.daemon.workers,
                                                             self.session.release)
        except Exception:
            log.exception("client %s: closing its connection failed", self.peer)
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        log.debug("client %s: gone", self.peer)


class Daemon:
    """One pyvirtd: :meth:`start`, then :meth:`serve` until :meth:`stop` (or a signal)."""

    def __init__(self, options: DaemonOptions, handlers: HandlerTable | None = None) -> None:
        if handlers is None:
            from pyvirt.daemon.handlers import HANDLERS
            handlers = HANDLERS
        self.options = options
        self.config = options.config
        self.instance = options.instance
        config = self.config
        self.workers = ThreadPoolExecutor(config.max_workers, thread_name_prefix="pyvirtd-worker")
        self.prio_workers = (ThreadPoolExecutor(config.prio_workers, thread_name_prefix="pyvirtd-prio")
                             if config.prio_workers > 0 else None)
        self.dispatcher = Dispatcher(handlers, self.workers, self.prio_workers)
        self.clients: set[ClientConnection] = set()
        self._client_tasks: set[asyncio.Task[Any]] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._unix_paths: list[Path] = []
        self._conn: virConnect | None = None
        self._pid_file = _PidFile(options.pid_file or self.instance.run_dir / PID_NAME)
        self._stopping: asyncio.Event | None = None
        self._idle_since = 0.0
        self._signals = False
        self.tcp_ports: list[int] = []
        self._next_id = 0

    # ---- starting ----

    async def start(self, *, handle_signals: bool = True) -> None:
        """Open the instance, bind every socket, then announce readiness; on any failure,
        nothing stays bound and no pid file is written. ``handle_signals`` installs the
        SIGTERM/SIGINT/SIGHUP handlers (only possible on the main thread)."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        plans = plan_listeners(self.options)
        gid = _resolve_group(self.config)
        self._pid_file.check_free()
        try:
            # Holding a connection for the daemon's lifetime keeps the driver (and the instance
            # lock) alive between clients, and fails now if another process drives the instance.
            import pyvirt.connection

            self._conn = await loop.run_in_executor(self.workers, pyvirt.connection.open,
                                                    self.instance.uri)
            for plan in plans:
                await self._listen(plan, gid)
            self._pid_file.write()
        except BaseException:
            await self._close_listeners()
            await self._release()
            raise
        self._idle_since = loop.time()
        if handle_signals:
            self._signals = True
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
                "SIGHUP: pyvirtd cannot reload its configuration yet; restart it to apply changes"))
        _notify_ready()
        log.info("pyvirtd %d ready, serving %s on %s", os.getpid(), self.instance.uri,
                 ", ".join(p.describe() for p in plans))

    async def _listen(self, plan: Listener, gid: int | None) -> None:
        backlog = self.config.max_queued_clients

        def accept(readonly: bool, transport: str) -> Callable[..., Any]:
            async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._serve_client(reader, writer, readonly=readonly, transport=transport)
            return on_client

        if plan.kind == "unix":
            sock = _bind_unix(plan, gid, backlog)
            assert plan.path is not None
            self._unix_paths.append(plan.path)
            server = await asyncio.start_unix_server(accept(plan.readonly, "unix"), sock=sock,
                                                     limit=_READ_CHUNK)
        else:
            try:
                server = await asyncio.start_server(accept(False, "tcp"), plan.host, plan.port,
                                                    backlog=backlog, limit=_READ_CHUNK,
                                                    reuse_address=True)
            except OSError as exc:
                raise OperationFailed(f"cannot listen on {plan.describe()}: {exc.strerror}") from exc
            self.tcp_ports.extend(s.getsockname()[1] for s in server.sockets)
        self._servers.append(server)

    # ---- clients ----

    def _identify(self, writer: asyncio.StreamWriter, transport: str) -> tuple[str, bool]:
        """A name for logs, and whether the peer may connect at all."""
        self._next_id += 1
        if transport == "tcp":
            host, port = writer.get_extra_info("peername")[:2]
            return f"#{self._next_id} tcp {host}:{port}", True
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
        except OSError:
            return f"#{self._next_id} unix (no credentials)", False
        name = f"#{self._next_id} unix pid={pid} uid={uid} gid={gid}"
        # A session daemon serves its own user only, whatever the socket's permissions say.
        allowed = self.instance.privileged or uid in (0, os.geteuid())
        return name, allowed

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                            readonly: bool, transport: str) -> None:
        peer, allowed = self._identify(writer, transport)
        if not allowed or self._stopping is None or self._stopping.is_set():
            log.warning("client %s: refused", peer)
            writer.close()
            return
        if len(self.clients) >= self.config.max_clients:
            log.warning("client %s: refused, max_clients (%d) reached", peer, self.config.max_clients)
            writer.close()
            return
        log.info("client %s: connected to the %s socket", peer,
                 "read-only" if readonly else transport)
        session = ClientSession(self.instance, readonly_socket=readonly, transport=transport, peer=peer)
        client = ClientConnection(self, reader, writer, session)
        self.clients.add(client)
        task = asyncio.current_task()
        if task is not None:
            self._client_tasks.add(task)
        try:
            await client.run()
        finally:
            self.clients.discard(client)
            if task is not None:
                self._client_tasks.discard(task)
            self._idle_since = asyncio.get_running_loop().time()

    # ---- running and stopping ----

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def serve(self) -> None:
        """Run until :meth:`stop` (SIGTERM, SIGINT, or the idle timeout), then shut down."""
        assert self._stopping is not None, "start() first"
        timeout = self.options.timeout
        try:
            if timeout:
                await self._serve_with_timeout(timeout)
            else:
                await self._stopping.wait()
        finally:
            await self.shutdown()

    async def _serve_with_timeout(self, timeout: float) -> None:
        assert self._stopping is not None
        loop = asyncio.get_running_loop()
        tick = min(1.0, timeout / 4)
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), tick)
            if not self.clients and loop.time() - self._idle_since >= timeout:
                log.info("no clients for %s s: exiting (--timeout)", timeout)
                return

    async def shutdown(self) -> None:
        log.info("shutting down")
        if self._stopping is not None:
            self._stopping.set()
        await self._close_listeners()
        for client in list(self.clients):
            client.close()
        tasks = set(self._client_tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=_SHUTDOWN_GRACE)
            for task in late:
                log.warning("a client call is still running at shutdown; not waiting for it")
                task.cancel()
        self._pid_file.remove()
        await self._release()
        if self._signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            self._signals = False

    async def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._unix_paths.clear()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self.workers, conn.close)
            except Exception:
                log.exception("closing the daemon's connection failed")
        self.workers.shutdown(wait=False, cancel_futures=True)
        if self.prio_workers is not None:
            self.prio_workers.shutdown(wait=False, cancel_futures=True)


def check_config(options: DaemonOptions) -> None:
    """Everything that can be checked without binding or opening anything."""
    plan_listeners(options)
    _resolve_group(options.config)

