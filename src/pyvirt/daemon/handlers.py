# SPDX-License-Identifier: LGPL-2.1-or-later
"""The REMOTE program's connection-level procedures, each a call on pyvirt's public API
(:mod:`pyvirt.connection`); the domain procedures are in :mod:`pyvirt.daemon.handlers_domain`.

Each handler is what libvirtd's generated ``remoteDispatch*`` does: take the decoded arguments,
call the connection's method, return the reply fields. A handler whose method does not exist yet
answers VIR_ERR_NO_SUPPORT, so clients fall back.

Event registrations are in :mod:`pyvirt.daemon.handlers_events`, the QEMU program in
:mod:`pyvirt.daemon.handlers_qemu`.
"""

from __future__ import annotations

from typing import Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.dispatch import (
    CONNECT_RO,
    ClientSession,
    HandlerTable,
    NeedsWorker,
    api_name,
    internal_error,
    no_support,
    running_inline,
)
from pyvirt.daemon.nodeinfo import node_info
from pyvirt.rpc.procedures import PROCEDURES
from pyvirt.rpc.protocol import Feature

__all__ = ["HANDLERS", "SUPPORTED_FEATURES"]

HANDLERS = HandlerTable()
_h = HANDLERS.register

#: CONNECT_SUPPORTS_FEATURE answers 1 for these: keepalive (PING/PONG are served) and the close
#: callback (REGISTER/UNREGISTER_CLOSE_CALLBACK are served), and event callback ids
#: (CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY and its messages; the legacy calls are served too).
SUPPORTED_FEATURES = frozenset({Feature.PROGRAM_KEEPALIVE, Feature.REMOTE_CLOSE_CALLBACK,
                                Feature.REMOTE_EVENT_CALLBACK})


def _method(session: ClientSession, name: str, proc_name: str) -> Any:
    """The API method ``name`` of the client's connection, or NO_SUPPORT while it does not exist."""
    method = getattr(session.require_conn(), name, None)
    if method is None:
        raise no_support(api_name(PROCEDURES.lookup(proc_name)), domain=codes.VIR_FROM_QEMU)
    return method


# ---- the prelude --------------------------------------------------------------------------

@_h("AUTH_LIST", needs_open=False, blocking=False)
def auth_list(session: ClientSession, args: None) -> Any:
    # The socket's auth (set on admission, pyvirt.daemon.sasl); polkit is refused at start-up.
    return {"types": [session.auth_type]}


@_h("CONNECT_SUPPORTS_FEATURE", needs_open=False, blocking=False)
def supports_feature(session: ClientSession, args: Any) -> Any:
    # Clients ask for keepalive before CONNECT_OPEN; libvirtd answers that one without a
    # connection (and starts pinging), and every other feature only once open.
    if args.feature == Feature.PROGRAM_KEEPALIVE:
        session.keepalive = True
        return {"supported": 1}
    session.require_conn()
    return {"supported": int(args.feature in SUPPORTED_FEATURES)}


# Quick: the daemon holds the instance's driver for its lifetime, so opening only shares it.
@_h("CONNECT_OPEN", needs_open=False, inline_when_idle=True)
def connect_open(session: ClientSession, args: Any) -> Any:
    import pyvirt.connection

    with session.lock:
        if session.conn is not None:
            raise internal_error("connection already open")
        session.instance.check_name(args.name)
        # The read-only socket forces read-only, whatever the flags say (as libvirtd does).
        readonly = session.readonly_socket or bool(args.flags & CONNECT_RO)
        session.conn = pyvirt.connection.open_local(session.instance.uri, readonly)
        session.readonly = readonly
    return None


# Quick unless the connection has domains to destroy (autodestroy): then on a worker thread.
@_h("CONNECT_CLOSE", needs_open=False, inline_when_idle=True)
def connect_close(session: ClientSession, args: None) -> Any:
    if running_inline() and session.close_blocks():
        raise NeedsWorker
    session.release()
    session.hangup = True
    return None


@_h("CONNECT_REGISTER_CLOSE_CALLBACK", blocking=False)
def register_close_callback(session: ClientSession, args: None) -> Any:
    # Nothing to arm yet: the daemon never closes a hypervisor connection behind a client's back
    # (CONNECT_EVENT_CONNECTION_CLOSED comes with driver shutdown events).
    session.close_callback = True
    return None


@_h("CONNECT_UNREGISTER_CLOSE_CALLBACK", blocking=False)
def unregister_close_callback(session: ClientSession, args: None) -> Any:
    session.close_callback = False
    return None


# ---- the connection and the host ----------------------------------------------------------

@_h("CONNECT_GET_TYPE", inline_when_idle=True)
def get_type(session: ClientSession, args: None) -> Any:
    return {"type": session.require_conn().getType()}


@_h("CONNECT_GET_VERSION")
def get_version(session: ClientSession, args: None) -> Any:
    return {"hv_ver": session.require_conn().getVersion()}


@_h("CONNECT_GET_LIB_VERSION", inline_when_idle=True)
def get_lib_version(session: ClientSession, args: None) -> Any:
    return {"lib_ver": session.require_conn().getLibVersion()}


@_h("CONNECT_GET_HOSTNAME")
def get_hostname(session: ClientSession, args: None) -> Any:
    return {"hostname": session.require_conn().getHostname()}


@_h("CONNECT_GET_URI", inline_when_idle=True)
def get_uri(session: ClientSession, args: None) -> Any:
    return {"uri": session.require_conn().getURI()}


@_h("CONNECT_IS_SECURE", inline_when_idle=True)
def is_secure(session: ClientSession, args: None) -> Any:
    # The driver's answer, as libvirtd gives it: the client side adds what it knows of the
    # transport (libvirt's remote driver reports TCP as insecure by itself).
    return {"secure": session.require_conn().isSecure()}


@_h("CONNECT_GET_CAPABILITIES")
def get_capabilities(session: ClientSession, args: None) -> Any:
    return {"capabilities": session.require_conn().getCapabilities()}


@_h("CONNECT_GET_DOMAIN_CAPABILITIES")
def get_domain_capabilities(session: ClientSession, args: Any) -> Any:
    xml = session.require_conn().getDomainCapabilities(args.emulatorbin, args.arch, args.machine,
                                                        args.virttype, args.flags)
    return {"capabilities": xml}


@_h("CONNECT_GET_SYSINFO")
def get_sysinfo(session: ClientSession, args: Any) -> Any:
    return {"sysinfo": _method(session, "getSysinfo", "CONNECT_GET_SYSINFO")(args.flags)}


@_h("CONNECT_GET_MAX_VCPUS")
def get_max_vcpus(session: ClientSession, args: Any) -> Any:
    return {"max_vcpus": _method(session, "getMaxVcpus", "CONNECT_GET_MAX_VCPUS")(args.type)}


@_h("NODE_GET_FREE_MEMORY")
def node_get_free_memory(session: ClientSession, args: None) -> Any:
    return {"freeMem": _method(session, "getFreeMemory", "NODE_GET_FREE_MEMORY")()}


@_h("NODE_GET_INFO")
def node_get_info(session: ClientSession, args: None) -> Any:
    # libvirt-python's getInfo() reports memory in MiB, the wire carries KiB: the daemon computes
    # the KiB figure itself rather than lose precision through the API.
    session.require_conn()
    info = node_info()
    return {"model": info.model, "memory": info.memory, "cpus": info.cpus, "mhz": info.mhz,
            "nodes": info.nodes, "sockets": info.sockets, "cores": info.cores,
            "threads": info.threads}


@_h("NODE_GET_SECURITY_MODEL")
def node_get_security_model(session: ClientSession, args: None) -> Any:
    conn = session.require_conn()
    get = getattr(conn, "getSecurityModel", None)
    if get is not None:
        model, doi = get()
    else:
        # The primary security model is the first of the driver's stack, as the capabilities
        # XML lists them; libvirt reports "none"/"0" when no MAC driver is active.
        secmodels = conn.driver.secmodels()
        model, doi = (secmodels[0][0], secmodels[0][1]) if secmodels else ("", "")
    return {"model": model, "doi": doi}


# The domain, event and QEMU procedures register themselves on HANDLERS (imported last: they use
# this module).
from pyvirt.daemon import (  # noqa: E402,F401
    handlers_domain,
    handlers_events,
    handlers_network,
    handlers_qemu,
    handlers_secret,
    handlers_stats,
    handlers_storage,
    handlers_stream,
    sasl,
)
