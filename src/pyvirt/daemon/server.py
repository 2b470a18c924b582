# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's server: accepting on its sockets (:mod:`pyvirt.daemon.listen`), one asyncio protocol
per client (:mod:`pyvirt.daemon.client`), calls run concurrently.

Each client connection decodes frames as they arrive with a
:class:`~pyvirt.rpc.protocol.FrameDecoder` (which refuses a bad length word before buffering the
body, so no client can make the daemon allocate more than one maximal message). A call that cannot
block (errors, and quick in-memory queries while no worker is busy: see
:class:`~pyvirt.daemon.dispatch.Dispatcher`) is answered on the spot; any other runs as a task.
Replies go out in completion order, as libvirt allows. A client has at most
``max_client_requests`` calls in flight: beyond that its socket is simply not read, which pushes
back on it alone. Hypervisor calls block, so they run on a bounded thread pool (``max_workers``),
with a separate pool (``prio_workers``) for the procedures libvirt marks high-priority, so that a
host busy with slow calls still answers "what is your hostname".

Keepalive follows libvirtd: a client that asked for CONNECT_SUPPORTS_FEATURE(keepalive) is sent
a PING after ``keepalive_interval`` seconds of silence and dropped when ``keepalive_count`` PINGs
go unanswered; PINGs from clients are answered with PONGs, unsolicited PONGs are fine.

Data streams (guest consoles) run on the event loop, bound to the serial of the call that opened
them (:mod:`pyvirt.daemon.streams`); a client's stream data waiting for a slow endpoint counts
against it like calls in flight, and a stream is read only while its client takes our output.

Client limits follow libvirtd's (``virNetServerCheckLimits``): every connection counts from the
moment it is accepted (a TLS handshake included) until it is gone, and one whose socket asks for
authentication (``auth_* = "sasl"``) counts as anonymous until it has authenticated. While
``max_clients`` connections, or ``max_anonymous_clients`` anonymous ones, are there, the daemon
stops accepting on all its sockets: new connections wait in the kernel's backlog
(``max_queued_clients``), connected but unanswered, and are accepted as soon as a client leaves
or authenticates. Accepting is therefore done here, one connection per readiness of a listening
socket, rather than by asyncio's servers (which cannot pause, and take many at once).

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
from typing import TYPE_CHECKING, Any, cast

from pyvirt.daemon.client import ClientConnection
from pyvirt.daemon.config import DaemonConfig
from pyvirt.daemon.dispatch import ClientSession, Dispatcher, HandlerTable
from pyvirt.daemon.instance import PID_NAME, ServedInstance
from pyvirt.daemon.listen import (
    ClientSlot,
    Listener,
    ListeningSocket,
    bind_tcp,
    bind_unix,
    plan_listeners,
    resolve_group,
    run_now,
)
from pyvirt.errors import OperationFailed, PyvirtError
from pyvirt.rpc.busypoll import BusyPoll
from pyvirt.rpc.protocol import (
    AuthType,
)
from pyvirt.rpc.xdr import compile_busy_structs

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.daemon.tls import ServerTLS, TLSAcceptor

__all__ = ["Daemon", "DaemonOptions", "check_config"]

log = logging.getLogger("pyvirt.daemon")

#: How long shutdown waits for calls already running on worker threads.
_SHUTDOWN_GRACE = 5.0
#: Seconds a listening socket rests after accept() ran out of descriptors or memory (libvirtd's).
_ACCEPT_REST = 5.0
#: The most read of a TLS client's first message before its connection has a transport: one
#: TLS record.
_FIRST_READ = 16384 + 5

@dataclass(frozen=True)
class DaemonOptions:
    instance: ServedInstance
    config: DaemonConfig
    listen: bool = False
    #: Exit after this many seconds without clients and without running domains.
    timeout: float | None = None
    pid_file: Path | None = None


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
        #: Accepted connections (ClientSlot) not gone yet, and how many of them are anonymous.
        self.connected = 0
        self.anonymous = 0
        self._accepting = False
        self._listening: list[ListeningSocket] = []
        self._unix_paths: list[Path] = []
        self._conn: virConnect | None = None
        self._pid_file = _PidFile(options.pid_file or self.instance.run_dir / PID_NAME)
        self._stopping: asyncio.Event | None = None
        self._idle_since = 0.0
        self._signals = False
        self.tcp_ports: list[int] = []
        self.tls_ports: list[int] = []
        self._next_id = 0
        from pyvirt.daemon.sasl import SaslServer

        #: SASL for the sockets that ask for it: database, allow-list, rate limit.
        self.sasl = SaslServer(config, self.instance)
        #: Polling between a client's messages (pyvirt.rpc.busypoll).
        self.busy_poll = BusyPoll(config.busy_poll_us / 1e6)
        compile_busy_structs()  # a daemon lives long: its busy procedures get code of their own

    # ---- starting ----

    async def start(self, *, handle_signals: bool = True) -> None:
        """Open the instance, bind every socket, then announce readiness; on any failure,
        nothing stays bound and no pid file is written. ``handle_signals`` installs the
        SIGTERM/SIGINT/SIGHUP handlers (only possible on the main thread)."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        plans = plan_listeners(self.options)
        gid = resolve_group(self.config)
        self._pid_file.check_free()
        try:
            # Holding a connection for the daemon's lifetime keeps the driver (and the instance
            # lock) alive between clients, and fails now if another process drives the instance.
            import pyvirt.connection

            # open_local: the daemon drives its instance (qemu:///session would reach a daemon)
            self._conn = await loop.run_in_executor(self.workers, pyvirt.connection.open_local,
                                                    self.instance.uri)
            await self._warm_up(loop, self._conn)
            self.sasl.check_start()
            for plan in plans:
                await self._listen(plan, gid)
            self._set_accepting(True)
            # Handlers before the pid file: whoever sees the daemon ready may signal it at once
            # (a SIGHUP before the handler would kill it).
            if handle_signals:
                self._signals = True
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.stop)
                loop.add_signal_handler(signal.SIGHUP, lambda: log.warning(
                    "SIGHUP: pyvirtd cannot reload its configuration yet; restart it to apply "
                    "changes"))
            self._pid_file.write()
        except BaseException:
            if self._signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
                self._signals = False
            await self._close_listeners()
            await self._release()
            raise
        self._idle_since = loop.time()
        _notify_ready()
        log.info("pyvirtd %d ready, serving %s on %s", os.getpid(), self.instance.uri,
                 ", ".join(p.describe() for p in plans))

    async def _warm_up(self, loop: asyncio.AbstractEventLoop, conn: virConnect) -> None:
        """Load what the driver loads on first use (definitions, emulator capabilities, which may
        mean probing QEMU for seconds) now, on a worker: the quick queries the dispatcher runs on
        the event loop must find it loaded. If it cannot be loaded, every call takes a worker."""
        try:
            await loop.run_in_executor(self.workers, conn.listAllDomains)
        except PyvirtError as exc:
            log.warning("the driver cannot list domains (%s); every call will run on a worker "
                        "thread", exc)
            self.dispatcher.inline = False

    async def _listen(self, plan: Listener, gid: int | None) -> None:
        backlog = self.config.max_queued_clients
        from pyvirt.daemon.sasl import auth_type_of

        anonymous = auth_type_of(self.config, plan.kind, plan.readonly) != AuthType.NONE

        def client(slot: ClientSlot) -> Callable[[], asyncio.Protocol]:
            return lambda: ClientConnection(self, slot, readonly=plan.readonly, kind=plan.kind)

        protocol = client
        adopt: Callable[[socket.socket, ClientSlot], None] | None = None
        if plan.kind == "unix":
            socks = [bind_unix(plan, gid, backlog)]
            assert plan.path is not None
            self._unix_paths.append(plan.path)
        else:
            if plan.kind == "tls":  # handshake and certificate checks first (pyvirt.daemon.tls)
                from pyvirt.daemon.tls import TLSAcceptor, load_server_tls

                tls = load_server_tls(self.config, self.instance)
                tls.prepare()  # the first connection's TLS objects

                def handshake(slot: ClientSlot) -> Callable[[], asyncio.Protocol]:
                    return lambda: TLSAcceptor(tls, client(slot), lost=lambda: self.release(slot),
                                               kick=self.busy_poll.kick)
                protocol = handshake
                if tls.gnutls is not None:
                    adopt = self._gnutls_adopter(tls, client)
            socks = await bind_tcp(plan, backlog)
            ports = self.tls_ports if plan.kind == "tls" else self.tcp_ports
            ports.extend(s.getsockname()[1] for s in socks)
        self._listening.extend(ListeningSocket(sock, plan, anonymous, protocol, adopt)
                               for sock in socks)

    def _gnutls_adopter(self, tls: ServerTLS,
                        client: Callable[[ClientSlot], Callable[[], asyncio.Protocol]]
                        ) -> Callable[[socket.socket, ClientSlot], None]:
        """How a TLS socket's connections start on GnuTLS (pyvirt.daemon.tls_gnutls)."""
        from pyvirt.daemon.tls_gnutls import GnuTLSConnection

        def adopt(conn: socket.socket, slot: ClientSlot) -> None:
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            GnuTLSConnection(tls, conn, client(slot), lost=lambda: self.release(slot),
                             kick=self.busy_poll.kick)
        return adopt

    # ---- accepting, within the client limits ----

    def _set_accepting(self, on: bool) -> None:
        loop = asyncio.get_running_loop()
        self._accepting = on
        for listening in self._listening:
            if on and listening.resting is None:
                loop.add_reader(listening.fd, self._accept, listening)
            else:
                loop.remove_reader(listening.fd)

    def _check_limits(self) -> None:
        """Stop accepting at a limit, accept again below them all (libvirtd's
        virNetServerCheckLimits: a new client only when it would exceed neither)."""
        config = self.config
        full = (self.connected >= config.max_clients
                or 0 < config.max_anonymous_clients <= self.anonymous)
        if full == (not self._accepting):
            return
        if self._stopping is None or self._stopping.is_set():
            return
        state = (f"{self.connected} clients (max_clients {config.max_clients}), {self.anonymous} "
                 f"not authenticated (max_anonymous_clients {config.max_anonymous_clients})")
        if full:
            log.info("%s: not accepting new connections until a client leaves or authenticates",
                     state)
        else:
            log.info("%s: accepting new connections again", state)
        self._set_accepting(not full)

    def _accept(self, listening: ListeningSocket) -> None:
        """One connection, as libvirtd accepts: counted at once, so that the limits are checked
        before the next one is taken from the backlog."""
        loop = asyncio.get_running_loop()
        try:
            # (socket.accept() without its wrapping, which looks up the family and type enums
            # again for every connection: below, from numbers known once)
            fd, _ = listening.sock._accept()  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # gone before we took it
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.warning("accepting on %s failed: %s", listening.plan.describe(), exc)
                return
            # libvirtd rests the socket for 5 s, hoping descriptors are freed meanwhile
            log.error("cannot accept on %s: %s; trying again in %.0f s",
                      listening.plan.describe(), exc.strerror, _ACCEPT_REST)
            loop.remove_reader(listening.fd)
            listening.resting = loop.call_later(_ACCEPT_REST, self._rested, listening)
            return
        conn = socket.socket(*listening.kind, fileno=fd)
        slot = ClientSlot(listening.anonymous)
        self.connected += 1
        self.anonymous += slot.anonymous
        self._attach(listening, conn, slot)  # first: the client's first message is on its way
        self.busy_poll.kick()  # for it
        self._check_limits()  # (before the next accept, which is at the loop's next turn)

    def _rested(self, listening: ListeningSocket) -> None:
        listening.resting = None
        if self._accepting:
            asyncio.get_running_loop().add_reader(listening.fd, self._accept, listening)

    def _attach(self, listening: ListeningSocket, conn: socket.socket, slot: ClientSlot) -> None:
        """The accepted socket's transport, with its protocol (which releases ``slot``), made
        now rather than on the loop's next turn: the client's first message is on its way."""
        made = False

        def failed(exc: BaseException) -> None:
            if not made:
                conn.close()
                self.release(slot)
            log.warning("a connection on %s failed at once: %s", listening.plan.describe(), exc)

        if listening.adopt is not None:
            try:
                listening.adopt(conn, slot)
            except Exception as exc:  # noqa: BLE001 - the connection's, not the daemon's
                failed(exc)
            return
        try:
            protocol = listening.protocol(slot)()
            if listening.plan.kind == "tls":
                # An idle daemon wakes late: the client's first message may be here already,
                # and is then answered before the transport is made (TLSAcceptor.read_first)
                try:
                    first = conn.recv(_FIRST_READ, socket.MSG_DONTWAIT)
                except OSError:  # (nothing yet; or an error, which the transport meets again)
                    first = b""
                if first:  # (its answer goes in two writes: not to be held back by Nagle)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    cast("TLSAcceptor", protocol).read_first(conn, first)
        except Exception as exc:  # noqa: BLE001 - the connection's, not the daemon's
            failed(exc)
            return

        def factory() -> asyncio.Protocol:
            nonlocal made
            made = True  # the transport owns the socket from here
            return protocol

        # (connect_accepted_socket makes the socket non-blocking, and a TCP one TCP_NODELAY so
        # that small replies leave at once, on asyncio's loop and on uvloop)
        run_now(asyncio.get_running_loop().connect_accepted_socket(factory, conn), failed)

    def release(self, slot: ClientSlot) -> None:
        """A connection is gone: it no longer counts (idempotent)."""
        if slot.released:
            return
        slot.released = True
        self.connected -= 1
        self.anonymous -= slot.anonymous
        slot.anonymous = False
        self._idle_since = asyncio.get_running_loop().time()
        if not self.connected:
            self.busy_poll.rest()
        self._check_limits()

    def authenticated(self, slot: ClientSlot) -> None:
        """A client completed its authentication: it is no longer anonymous."""
        if slot.anonymous and not slot.released:
            slot.anonymous = False
            self.anonymous -= 1
            self._check_limits()

    # ---- clients ----

    def _identify(self, transport: asyncio.BaseTransport, kind: str) -> tuple[str, bool]:
        """A name for logs, and whether the peer may connect at all."""
        self._next_id += 1
        if kind in ("tcp", "tls"):
            host, port = transport.get_extra_info("peername")[:2]
            return f"#{self._next_id} {kind} {host}:{port}", True
        sock = transport.get_extra_info("socket")
        try:
            pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
        except OSError:
            return f"#{self._next_id} unix (no credentials)", False
        name = f"#{self._next_id} unix pid={pid} uid={uid} gid={gid}"
        # A session daemon serves its own user only, whatever the socket's permissions say.
        allowed = self.instance.privileged or uid in (0, os.geteuid())
        return name, allowed

    def _admit(self, client: ClientConnection,
               transport: asyncio.BaseTransport) -> ClientSession | None:
        """A new client's session, or None when it is refused (the caller hangs up)."""
        peer, allowed = self._identify(transport, client.kind)
        if not allowed or self._stopping is None or self._stopping.is_set():
            log.warning("client %s: refused", peer)
            return None
        if len(self.clients) >= self.config.max_clients:
            log.warning("client %s: refused, max_clients (%d) reached", peer, self.config.max_clients)
            return None
        log.info("client %s: connected to the %s socket", peer,
                 "read-only" if client.readonly else client.kind)
        session = ClientSession(self.instance, readonly_socket=client.readonly,
                                transport=client.kind, peer=peer)
        from pyvirt.daemon.sasl import peer_key

        self.sasl.admit(session, client.kind, client.readonly, peer_key(transport, client.kind))
        self.clients.add(client)
        task = asyncio.get_running_loop().create_task(client.lifetime())
        self._client_tasks.add(task)

        def done(_: asyncio.Task[None]) -> None:
            self.clients.discard(client)
            self._client_tasks.discard(task)
            self.release(client.slot)
        task.add_done_callback(done)
        return session

    def event_registrations(self) -> dict[str, int]:
        """Event registrations per connected client (for diagnostics and tests)."""
        return {c.peer: len(c.session.events) for c in self.clients if c.session is not None}

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
            if self.connected:
                continue
            # As libvirtd: running domains keep the daemon, and the idle time counts from the
            # moment the last one stopped (the query may wait for a start: not on the loop).
            if await loop.run_in_executor(None, self._domains_running):
                self._idle_since = loop.time()
            elif loop.time() - self._idle_since >= timeout:
                log.info("no clients and no running domains for %s s: exiting (--timeout)",
                         timeout)
                return

    def _domains_running(self) -> bool:
        conn = self._conn
        try:
            return conn is not None and conn.numOfDomains() > 0
        except PyvirtError as exc:
            log.warning("cannot tell whether domains run (%s): staying up", exc)
            return True

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
        if self._accepting:
            self._set_accepting(False)
        for listening in self._listening:
            if listening.resting is not None:
                listening.resting.cancel()
            listening.sock.close()
        self._listening.clear()
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
    plans = plan_listeners(options)
    resolve_group(options.config)
    if any(plan.kind == "tls" for plan in plans):
        from pyvirt.daemon.tls import load_server_tls

        # the files exist and pass the checks (warnings come when the listener opens)
        load_server_tls(options.config, options.instance, warn=False)

