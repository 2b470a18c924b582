# SPDX-License-Identifier: LGPL-2.1-or-later
"""From a decoded CALL to its REPLY: program and procedure checks, argument decoding, the
read-only rule, and the handler, run on a worker thread.

Handlers are registered per procedure of :mod:`pyvirt.rpc.procedures` (see
:mod:`pyvirt.daemon.handlers`); adding a procedure to the daemon is adding one handler. A handler
gets the client's :class:`ClientSession` and the decoded arguments, and returns the reply value
(a record, a mapping of the reply's fields, or None for void). It raises a
:class:`~pyvirt.errors.PyvirtError` to answer with an error; anything else is a bug, logged with
its traceback and answered as an internal error, and the daemon carries on.

Errors the dispatcher itself produces carry libvirtd 9.0's code, domain, message and the format
in ``str1`` / argument in ``str2``, field for field, because clients print them verbatim and some
(virsh) act on the code. One deliberate difference: a procedure pyvirtd does not implement is
answered with VIR_ERR_NO_SUPPORT, not libvirtd's VIR_ERR_RPC "unknown procedure", so that
clients take their fallbacks (virsh's listing falls back from CONNECT_LIST_ALL_DOMAINS on
NO_SUPPORT only).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.events import ClientEvents
from pyvirt.errors import PyvirtError
from pyvirt.rpc.procedures import PROCEDURES, Procedure, ProcedureTable
from pyvirt.rpc.protocol import (
    PROTOCOL_VERSION,
    Header,
    Message,
    MessageType,
    Program,
    ProtocolError,
    RemoteError,
    Status,
    encode_reply,
    remote_error_record,
)
from pyvirt.rpc.xdr import REMOTE_ERROR, Reader

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.daemon.instance import ServedInstance

__all__ = ["ClientSession", "Handler", "HandlerTable", "Dispatcher", "PendingCall", "NeedsWorker",
           "running_inline", "api_name",
           "rpc_error", "internal_error", "no_support", "denied", "SERVED_PROGRAMS"]

log = logging.getLogger("pyvirt.daemon")

#: Programs and versions the daemon answers; KEEPALIVE is handled by the connection itself.
SERVED_PROGRAMS = {int(Program.REMOTE): PROTOCOL_VERSION, int(Program.QEMU): PROTOCOL_VERSION}

#: VIR_CONNECT_RO
CONNECT_RO = 1


# ---- errors as libvirtd words them ----------------------------------------------------------

def _error(fmt: str, detail: str, code: int, domain: int) -> RemoteError:
    return RemoteError(fmt.replace("%s", detail), code=code, domain=domain, level=codes.VIR_ERR_ERROR,
                       str1=fmt, str2=detail)


def rpc_error(detail: str) -> RemoteError:
    return _error("%s", detail, codes.VIR_ERR_RPC, codes.VIR_FROM_RPC)


def internal_error(detail: str, domain: int = codes.VIR_FROM_RPC) -> RemoteError:
    return _error("internal error: %s", detail, codes.VIR_ERR_INTERNAL_ERROR, domain)


def no_support(detail: str, domain: int = codes.VIR_FROM_RPC) -> RemoteError:
    return _error("this function is not supported by the connection driver: %s", detail,
                  codes.VIR_ERR_NO_SUPPORT, domain)


#: The public API files that report from their own error domain (libvirt-secret.c,
#: libvirt-storage.c, libvirt-network.c), by the first word of the procedure's name.
_API_DOMAINS = {"SECRET": codes.VIR_FROM_SECRET, "STORAGE": codes.VIR_FROM_STORAGE,
                "NETWORK": codes.VIR_FROM_NETWORK}


def denied(proc: Procedure) -> RemoteError:
    # libvirt-domain.c reports from VIR_FROM_DOMAIN, the secondary drivers' API files from theirs,
    # libvirt-qemu.c (the QEMU program) and libvirt.c from VIR_FROM_NONE
    first = proc.name.split("_", 1)[0]
    if proc.program != Program.REMOTE:
        domain = codes.VIR_FROM_NONE
    elif first in _API_DOMAINS:
        domain = _API_DOMAINS[first]
    else:
        domain = codes.VIR_FROM_DOMAIN if "DOMAIN" in proc.name else codes.VIR_FROM_NONE
    return _error("operation forbidden: %s", f"read only access prevents {api_name(proc)}",
                  codes.VIR_ERR_OPERATION_DENIED, domain)


_ACRONYMS = {"XML": "XML", "UUID": "UUID", "ID": "ID", "CPU": "CPU", "OS": "OS"}


def api_name(proc: Procedure) -> str:
    """The public C function behind a procedure, as libvirt names it in its errors:
    DOMAIN_DEFINE_XML -> virDomainDefineXML, QEMU's DOMAIN_MONITOR_COMMAND ->
    virDomainQemuMonitorCommand."""
    words = [_ACRONYMS.get(w, w.capitalize()) for w in proc.name.split("_")]
    if proc.program == Program.QEMU and "Domain" in words:
        words.insert(words.index("Domain") + 1, "Qemu")
    return "vir" + "".join(words)


_inline = threading.local()


def running_inline() -> bool:
    """Whether the calling handler runs on the event loop (``inline_when_idle``), where it must
    not block: it raises :class:`NeedsWorker` instead."""
    return bool(getattr(_inline, "active", False))


class NeedsWorker(Exception):
    """Raised by a handler run on the event loop (``inline_when_idle``) that finds, before doing
    anything, that this call could block (a query of a running domain's monitor): the dispatcher
    runs it again on a worker thread."""


# ---- per-client state --------------------------------------------------------------------------

class ClientSession:
    """What one client's calls share: its hypervisor connection and negotiated options.

    Handlers run on worker threads; a lock serialises opening and closing the connection, the
    only state two of one client's concurrent calls could race on.
    """

    def __init__(self, instance: ServedInstance, *, readonly_socket: bool, transport: str,
                 peer: str) -> None:
        self.instance = instance
        self.readonly_socket = readonly_socket
        self.transport = transport
        self.peer = peer
        self.conn: virConnect | None = None
        self.readonly = readonly_socket
        #: The client asked whether we speak keepalive: it expects (and answers) PINGs.
        self.keepalive = False
        self.close_callback = False
        #: CONNECT_CLOSE was answered: hang up once the reply is out.
        self.hangup = False
        self.lock = threading.Lock()
        #: Its event registrations; the connection behind them holds the API's side.
        self.events = ClientEvents()
        #: REMOTE_AUTH_* its socket asks for; while ``auth_pending``, only AUTH_* procedures are
        #: served. ``sasl`` holds the SASL exchange (pyvirt.daemon.sasl), set on admission.
        self.auth_type = 0
        self.auth_pending = False
        self.sasl: Any = None

    def require_conn(self) -> virConnect:
        conn = self.conn
        if conn is None:
            raise internal_error("hypervisor connection not open")
        return conn

    def close_blocks(self) -> bool:
        """Whether :meth:`release` could block (see ``virConnect._close_blocks``)."""
        conn = self.conn
        return conn is not None and conn._close_blocks()

    def release(self) -> None:
        """Close the hypervisor connection (the client is gone). Blocking."""
        with self.lock:
            conn, self.conn = self.conn, None
        self.events.post = None
        if conn is not None:
            conn.close()  # which drops the API's event registrations of this connection
        self.events.clear()


# ---- the handler table ----------------------------------------------------------------------

HandlerFn = Callable[[ClientSession, Any], Any]


@dataclass(frozen=True)
class Handler:
    proc: Procedure
    fn: HandlerFn
    #: Refused with "hypervisor connection not open" before CONNECT_OPEN.
    needs_open: bool = True
    #: Runs on a worker thread. False only for handlers that never block (no I/O, no locks
    #: held by driver calls): they run on the event loop and skip the queue.
    blocking: bool = True
    #: Runs on the event loop when no call of any client is on a worker thread (see
    #: :meth:`Dispatcher.prepare`): quick in-memory queries. Such a handler may raise
    #: :class:`NeedsWorker` (before any effect) to be run on a worker thread instead.
    inline_when_idle: bool = False


class HandlerTable:
    def __init__(self, table: ProcedureTable = PROCEDURES) -> None:
        self._table = table
        self._handlers: dict[tuple[int, int], Handler] = {}

    def register(self, name: str, *, needs_open: bool = True, blocking: bool = True,
                 inline_when_idle: bool = False) -> Callable[[HandlerFn], HandlerFn]:
        proc = self._table.lookup(name)
        if proc.event:
            raise ValueError(f"{proc.full_name} is an event: servers send it, clients do not call it")

        def add(fn: HandlerFn) -> HandlerFn:
            key = (int(proc.program), proc.number)
            if key in self._handlers:
                raise ValueError(f"a handler for {proc.full_name} is already registered")
            self._handlers[key] = Handler(proc, fn, needs_open, blocking, inline_when_idle)
            return fn
        return add

    def get(self, program: int, number: int) -> Handler | None:
        return self._handlers.get((program, number))

    def __contains__(self, name: str) -> bool:
        proc = self._table.lookup(name)
        return (int(proc.program), proc.number) in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)


# ---- dispatch ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingCall:
    """A decoded, checked CALL whose handler must run on a worker thread."""

    header: Header
    proc: Procedure
    handler: Handler
    args: Any


class _Route:
    """A served procedure and its handler, with what dispatching a call of it reads."""

    __slots__ = ("proc", "handler", "vers", "args", "readonly")

    def __init__(self, proc: Procedure, handler: Handler, vers: int) -> None:
        self.proc = proc
        self.handler = handler
        self.vers = vers
        self.args = proc.args  # (its unpack is looked up at each call: it may get compiled)
        self.readonly = proc.readonly


class Dispatcher:
    """Turns one CALL into one REPLY frame; never raises for anything the client sent.

    :meth:`prepare` does everything that cannot block, on the event loop: it answers errors, the
    handlers that never block, and -- while no call of any client is on a worker thread -- the
    quick queries marked ``inline_when_idle``. The driver's long operations hold its locks (a
    domain start holds the running table for seconds); a quick query run on the loop behind one
    would stall every client, so whenever a worker thread is busy, queries take the worker path
    too. Otherwise a round trip costs no thread hand-off, which is most of its time.
    """

    def __init__(self, handlers: HandlerTable, workers: Executor, prio_workers: Executor | None,
                 table: ProcedureTable = PROCEDURES) -> None:
        self.handlers = handlers
        self.workers = workers
        self.prio_workers = prio_workers
        self.table = table
        #: Calls on worker threads now (read and written on the event loop only).
        self.in_flight = 0
        #: Whether ``inline_when_idle`` handlers may run on the event loop at all.
        self.inline = True
        #: (program, procedure) -> _Route, filled as procedures are called.
        self._routes: dict[tuple[int, int], _Route] = {}

    async def call(self, session: ClientSession, msg: Message) -> bytes:
        """The reply frame to ``msg``, wherever its handler has to run."""
        prepared = self.prepare(session, msg)
        if isinstance(prepared, bytes):
            return prepared
        return await self.finish(session, prepared)

    def prepare(self, session: ClientSession, msg: Message) -> bytes | PendingCall:
        """The reply frame, when it can be had without blocking; else the call to :meth:`finish`."""
        h = msg.header
        route = self._routes.get((h.prog, h.proc))
        if route is None:
            route = self._route(h.prog, h.proc)
        # The way of nearly every call: a served procedure with a handler, called well-formed on
        # an open connection that may make it. Anything else (errors included) takes the general
        # way, which checks in libvirtd's order.
        if (route is None or h.vers != route.vers or h.status or msg.nfds or session.auth_pending
                or session.conn is None or (session.readonly and not route.readonly)):
            return self._prepare(session, msg)
        try:
            args = route.args.unpack(Reader(msg.payload))
        except ProtocolError:
            return self._prepare(session, msg)  # answered there, with libvirtd's words
        return self._answer(session, h, route.proc, route.handler, args)

    def _route(self, prog: int, number: int) -> _Route | None:
        """What :meth:`prepare` needs of a procedure with a handler (None: none), kept."""
        proc = self.table.get(prog, number)
        vers = SERVED_PROGRAMS.get(prog)
        if proc is None or proc.event or vers is None:
            return None
        handler = self.handlers.get(proc.program, proc.number)
        if handler is None:
            return None
        route = self._routes[(prog, number)] = _Route(proc, handler, vers)
        return route

    def _prepare(self, session: ClientSession, msg: Message) -> bytes | PendingCall:
        """:meth:`prepare`'s general way: every check, in libvirtd's order."""
        h = msg.header
        try:
            proc = self._check(h)
            handler, args = self._decode(session, proc, msg)
        except PyvirtError as exc:
            return self.error_frame(h, exc)
        except Exception as exc:
            log.exception("client %s: %s failed", session.peer, h.describe())
            return self.error_frame(h, internal_error(f"{type(exc).__name__}: {exc}"))
        return self._answer(session, h, proc, handler, args)

    def _answer(self, session: ClientSession, h: Header, proc: Procedure, handler: Handler,
                args: Any) -> bytes | PendingCall:
        """Run a checked call here when it may (see the class), else leave it to :meth:`finish`."""
        if handler.blocking and not (handler.inline_when_idle and self.inline and self.in_flight == 0):
            return PendingCall(h, proc, handler, args)
        try:
            if handler.blocking:
                _inline.active = True
                try:
                    result = handler.fn(session, args)
                finally:
                    _inline.active = False
            else:
                result = handler.fn(session, args)
            return self._reply(session, h, proc, result)
        except NeedsWorker:
            return PendingCall(h, proc, handler, args)
        except PyvirtError as exc:
            return self.error_frame(h, exc)
        except Exception as exc:
            log.exception("client %s: %s failed", session.peer, h.describe())
            return self.error_frame(h, internal_error(f"{type(exc).__name__}: {exc}"))

    async def finish(self, session: ClientSession, call: PendingCall) -> bytes:
        """Run ``call`` on a worker thread; its reply frame."""
        h, proc = call.header, call.proc
        pool = self.prio_workers if proc.priority and self.prio_workers is not None else self.workers
        self.in_flight += 1
        try:
            result = await asyncio.get_running_loop().run_in_executor(pool, call.handler.fn,
                                                                      session, call.args)
        except PyvirtError as exc:
            return self.error_frame(h, exc)
        except Exception as exc:
            log.exception("client %s: %s failed", session.peer, h.describe())
            return self.error_frame(h, internal_error(f"{type(exc).__name__}: {exc}"))
        finally:
            self.in_flight -= 1
        return self._reply(session, h, proc, result)

    def _reply(self, session: ClientSession, h: Header, proc: Procedure, result: Any) -> bytes:
        try:
            return encode_reply(h, Status.OK, proc.ret, result)
        except ProtocolError as exc:  # a reply that does not fit (too large, bad value)
            log.error("client %s: cannot encode the reply to %s: %s", session.peer,
                      proc.full_name, exc)
            return self.error_frame(h, internal_error(f"cannot encode the reply to "
                                                      f"{proc.full_name}: {exc.message:.200}"))

    @staticmethod
    def _reply_header(h: Header, status: Status) -> Header:
        return Header(h.prog, h.vers, h.proc, MessageType.REPLY, h.serial, status)

    def error_frame(self, h: Header, exc: BaseException) -> bytes:
        rec = remote_error_record(exc)
        try:
            return encode_reply(h, Status.ERROR, REMOTE_ERROR, rec)
        except ProtocolError:  # e.g. a message over the string cap: send it cut
            rec.message = (rec.message or "")[:4096]
            rec.str1 = rec.str2 = rec.str3 = None
            return encode_reply(h, Status.ERROR, REMOTE_ERROR, rec)

    def _check(self, h: Header) -> Procedure:
        """The procedure of a CALL header, or the error libvirtd gives for it."""
        if SERVED_PROGRAMS.get(h.prog) != h.vers:
            raise rpc_error(f"Cannot find program {h.prog} version {h.vers}")
        if h.status != Status.OK:
            raise rpc_error(f"Unexpected message status {h.status}")
        proc = self.table.get(h.prog, h.proc)
        if proc is None or proc.event:
            raise no_support(f"unknown procedure: {h.proc}")
        return proc

    def _decode(self, session: ClientSession, proc: Procedure, msg: Message) -> tuple[Handler, Any]:
        if session.auth_pending and not (proc.program == Program.REMOTE
                                         and proc.name.startswith("AUTH_")):
            raise rpc_error("authentication required")  # libvirtd's words and code
        handler = self.handlers.get(proc.program, proc.number)
        if msg.nfds:
            raise rpc_error(f"{proc.full_name}: file descriptor passing is not supported by "
                            "pyvirtd yet")
        reader = Reader(msg.payload)
        try:
            args = proc.args.unpack(reader)
        except ProtocolError as exc:
            log.debug("client %s: bad arguments for %s: %s", session.peer, proc.full_name, exc)
            raise rpc_error("Unable to decode message payload") from exc
        # libvirtd's XDR decoding ignores bytes after the arguments; so does pyvirtd.
        # Checked in libvirtd's order (open, then read-only, then the driver), so that a client
        # gets the same first error for a procedure pyvirtd does not serve yet.
        if (handler is None or handler.needs_open) and session.conn is None:
            raise internal_error("hypervisor connection not open")
        if session.readonly and not proc.readonly:
            raise denied(proc)
        if handler is None:
            raise no_support(api_name(proc))
        return handler, args
