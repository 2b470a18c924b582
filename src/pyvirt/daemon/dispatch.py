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
    encode_message,
    remote_error_record,
)
from pyvirt.rpc.xdr import REMOTE_ERROR, Reader

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.daemon.instance import ServedInstance

__all__ = ["ClientSession", "Handler", "HandlerTable", "Dispatcher", "api_name",
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


def denied(proc: Procedure) -> RemoteError:
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

    def require_conn(self) -> virConnect:
        conn = self.conn
        if conn is None:
            raise internal_error("hypervisor connection not open")
        return conn

    def release(self) -> None:
        """Close the hypervisor connection (the client is gone). Blocking."""
        with self.lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


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


class HandlerTable:
    def __init__(self, table: ProcedureTable = PROCEDURES) -> None:
        self._table = table
        self._handlers: dict[tuple[int, int], Handler] = {}

    def register(self, name: str, *, needs_open: bool = True,
                 blocking: bool = True) -> Callable[[HandlerFn], HandlerFn]:
        proc = self._table.lookup(name)
        if proc.event:
            raise ValueError(f"{proc.full_name} is an event: servers send it, clients do not call it")

        def add(fn: HandlerFn) -> HandlerFn:
            key = (int(proc.program), proc.number)
            if key in self._handlers:
                raise ValueError(f"a handler for {proc.full_name} is already registered")
            self._handlers[key] = Handler(proc, fn, needs_open, blocking)
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

class Dispatcher:
    """Turns one CALL into one REPLY frame; never raises for anything the client sent."""

    def __init__(self, handlers: HandlerTable, workers: Executor, prio_workers: Executor | None,
                 table: ProcedureTable = PROCEDURES) -> None:
        self.handlers = handlers
        self.workers = workers
        self.prio_workers = prio_workers
        self.table = table

    async def call(self, session: ClientSession, msg: Message) -> bytes:
        h = msg.header
        try:
            proc = self._check(h)
            result = await self._run(session, proc, msg)
        except PyvirtError as exc:
            return self.error_frame(h, exc)
        except Exception as exc:
            log.exception("client %s: %s failed", session.peer, h.describe())
            return self.error_frame(h, internal_error(f"{type(exc).__name__}: {exc}"))
        try:
            return encode_message(self._reply_header(h, Status.OK), proc.ret.encode(result))
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
            payload = REMOTE_ERROR.encode(rec)
        except ProtocolError:  # e.g. a message over the string cap: send it cut
            rec.message = (rec.message or "")[:4096]
            rec.str1 = rec.str2 = rec.str3 = None
            payload = REMOTE_ERROR.encode(rec)
        return encode_message(self._reply_header(h, Status.ERROR), payload)

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

    async def _run(self, session: ClientSession, proc: Procedure, msg: Message) -> Any:
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
        if not handler.blocking:
            return handler.fn(session, args)
        pool = self.prio_workers if proc.priority and self.prio_workers is not None else self.workers
        return await asyncio.get_running_loop().run_in_executor(pool, handler.fn, session, args)
