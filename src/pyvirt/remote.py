# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's remote driver: ``virConnect``/``virDomain`` over libvirt's RPC protocol.

``pyvirt.open('qemu+unix:///system?socket=...')`` or ``pyvirt.open('qemu+tcp://host/system')``
returns a :class:`RemoteConnect`: the methods, return shapes and errors of the embedded
:class:`~pyvirt.connection.virConnect`, each one a call of :mod:`pyvirt.rpc.procedures` to pyvirtd
or to a real libvirtd. What the client keeps itself follows libvirt's remote driver: the URI the
caller opened, a domain handle's name, UUID and id (updated by create and destroy, as libvirt's
client does), the read-only flag (the daemon enforces it), and the mapping of event callbacks.

Sockets for ``qemu+unix://`` without ``socket=``: pyvirtd's own (``/run/pyvirt/libvirt-sock``
and ``-ro`` for system, ``$XDG_RUNTIME_DIR/pyvirt/libvirt-sock`` for session) with ``mode=auto``
or ``mode=direct``; libvirt's libvirtd sockets (``/run/libvirt/libvirt-sock``,
``$XDG_RUNTIME_DIR/libvirt/libvirt-sock``) with ``mode=legacy``. ``qemu+tcp://`` uses auth none;
``qemu://host/`` and ``qemu+tls://`` use x509 certificates as libvirt does
(:mod:`pyvirt.rpc.tls`: ``pkipath=``, ``no_verify=1``, ``no_sanity=1``). ``qemu+ssh://`` runs
the system ssh as libvirt does (:mod:`pyvirt.rpc.ssh`), with the protocol on its stdin/stdout.
A server that asks for SASL gets SCRAM (:mod:`pyvirt.rpc.sasl`), credentials from libvirt's
auth.conf and then from ``openAuth``'s callback; never on plain TCP, where libvirt requires a
security layer SCRAM does not have.

Events and close callbacks run on a dispatcher thread of the connection (not the RPC loop's), so
they may call the API themselves. A dropped connection fails pending and later calls with an error
naming the peer, and fires the close callback once with libvirt's reason
(VIR_CONNECT_CLOSE_REASON_EOF, _ERROR or _KEEPALIVE); close() fires it too (with _EOF), as
libvirt-python's does.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid as uuidlib
import weakref
from collections.abc import Callable
from typing import Any

from pyvirt import _errcodes as codes
from pyvirt._constants import (
    VIR_CONNECT_CLOSE_REASON_EOF,
    VIR_CONNECT_CLOSE_REASON_ERROR,
    VIR_CONNECT_CLOSE_REASON_KEEPALIVE,
)
from pyvirt.errors import NotSupported, OperationInvalid, PyvirtError
from pyvirt.network.remote import RemoteNetworkMethods
from pyvirt.remote_stats import RemoteDomainStatsMethods
from pyvirt.remote_stream import RemoteStream
from pyvirt.rpc.client import ConnectionClosed
from pyvirt.rpc.procedures import Procedure
from pyvirt.rpc.protocol import Feature
from pyvirt.rpc.sync import Client
from pyvirt.rpc.xdr import NONNULL_DOMAIN
from pyvirt.secret.remote import RemoteSecretMethods
from pyvirt.storage.remote import RemoteStorageMethods, RemoteStoragePool
from pyvirt.uri import ConnectURI

__all__ = ["RemoteConnect", "RemoteDomain", "open_remote", "socket_path"]

#: VIR_DOMAIN_EVENT_ID_LIFECYCLE and _REBOOT: the events this client delivers.
EVENT_ID_LIFECYCLE = 0
EVENT_ID_REBOOT = 1
#: libvirt 9.0's VIR_DOMAIN_EVENT_ID_LAST
EVENT_ID_LAST = 25

#: the event messages this client delivers, and the kind of registration each belongs to
_EVENT_KINDS = {"DOMAIN_EVENT_CALLBACK_LIFECYCLE": "domain", "DOMAIN_EVENT_CALLBACK_REBOOT": "domain",
                "NETWORK_EVENT_LIFECYCLE": "network", "STORAGE_POOL_EVENT_LIFECYCLE": "pool",
                "STORAGE_POOL_EVENT_REFRESH": "pool"}

_PYVIRT_SOCKET = "libvirt-sock"
_LIBVIRT_SYSTEM_DIR = "/run/libvirt"


def socket_path(uri: ConnectURI, readonly: bool) -> str:
    """The UNIX socket a ``qemu+unix://`` URI reaches (see the module docstring). The session
    socket's daemon is started on demand when none accepts there (:mod:`pyvirt.rpc.autostart`)."""
    if "socket" in uri.params:
        return uri.params["socket"]
    mode = uri.params.get("mode", "auto")
    session = uri.instance == "session"
    suffix = "-ro" if readonly and not session else ""
    if mode == "legacy":
        if session:
            runtime = os.environ.get("XDG_RUNTIME_DIR")
            base = os.path.join(runtime, "libvirt") if runtime else os.path.expanduser(
                "~/.cache/libvirt")
            return os.path.join(base, _PYVIRT_SOCKET)
        return os.path.join(_LIBVIRT_SYSTEM_DIR, _PYVIRT_SOCKET + suffix)
    # Where pyvirtd puts them (pyvirt.daemon.instance.served_instance).
    from pyvirt.conf.instance import session_paths, system_paths

    if session:
        return str(session_paths().run_dir.parent.parent / _PYVIRT_SOCKET)
    return str(system_paths().run_dir.parent / (_PYVIRT_SOCKET + suffix))


def open_remote(uri: ConnectURI, readonly: bool, auth: object = None) -> RemoteConnect:
    """Connect and open ``uri`` (a URI with a transport or a host) as libvirt's remote driver."""
    transport = uri.effective_transport
    if uri.instance == "embed":
        raise NotSupported(f"{uri.raw}: the embedded driver cannot be reached over a transport; "
                           "use qemu:///embed?root=DIR in-process, or run pyvirtd --root DIR and "
                           "connect to qemu+unix:///system?socket=DIR/run/libvirt-sock",
                           domain=codes.VIR_FROM_REMOTE)
    if transport == "unix":
        path = socket_path(uri, readonly)
        from pyvirt.rpc.autostart import ensure_daemon, wants_autostart

        if wants_autostart(uri):  # the session daemon, started on demand as libvirt does
            ensure_daemon(path)
        client = Client.connect_unix(path, background=False)
        where = path
    elif transport == "tcp":
        host, port = uri.effective_host, uri.effective_port
        assert host is not None and port is not None
        client = Client.connect_tcp(host, port, background=False)
        where = f"{host}:{port}"
    elif transport == "tls":  # x509 as libvirt's remote driver (pyvirt.rpc.tls)
        host, port = uri.effective_host, uri.effective_port
        assert host is not None and port is not None
        client = Client.connect_tls(host, port, uri.params, background=False)
        where = f"{host}:{port}"
    elif transport == "ssh":
        from pyvirt.rpc.ssh import ssh_command

        ssh = ssh_command(uri, readonly)
        client = Client.connect_command(ssh.argv, env=ssh.env, peer=ssh.peer,
                                        background=False)
        where = ssh.peer
    else:
        host = uri.effective_host or "HOST"
        raise NotSupported(
            f"{uri.raw}: the {transport} transport is not supported by pyvirt's client yet "
            f"({'TLS' if transport == 'tls' else 'SSH'} comes with a later release); on a trusted "
            f"network use qemu+tcp://{host}{uri.path} (a daemon listening on TCP with auth none), "
            "or a UNIX socket on the host itself", domain=codes.VIR_FROM_REMOTE)
    try:
        from pyvirt.rpc.sasl import AuthOptions  # credentials: auth.conf, then openAuth's callback

        # Calls run the client's loop in the caller's thread, as libvirt's client does without an
        # event loop, until a callback or keepalive wants it listening (RemoteConnect._listen).
        client.open(uri.remote_name(), readonly=readonly,
                    auth_options=AuthOptions.for_uri(uri, auth), ask_keepalive=False)
    except BaseException:
        client.abort()
        raise
    return RemoteConnect(uri, client, readonly, where)


class _Dispatcher:
    """One thread per connection running event and close callbacks in arrival order; started
    with the first callback (most connections never have one)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job()
            except Exception:  # a broken callback must not stop the others
                import logging

                logging.getLogger(__name__).exception("pyvirt remote callback failed")

    def submit(self, job: Callable[[], None]) -> None:
        self._queue.put(job)
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name,
                                                    daemon=True)
                    self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Run what is queued, then end; ``wait``: for that (never from a callback)."""
        with self._start:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        if wait and threading.current_thread() is not thread:
            thread.join(timeout=30)


#: Connections with event or close callbacks registered: kept open while those may fire, even
#: with no other reference (libvirt-python's registrations hold theirs too), until close().
_PINNED: set[RemoteConnect] = set()


def _weak(method: Callable[..., None]) -> Callable[..., None]:
    """``method`` without the reference to its object: the client's loop thread must not keep a
    connection alive that its user has dropped (it closes when collected, as libvirt-python's
    does)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args)
    return call


def _close_reason(error: PyvirtError) -> int:
    text = error.message
    if "keepalive" in text:
        return VIR_CONNECT_CLOSE_REASON_KEEPALIVE
    if "End of file" in text:
        return VIR_CONNECT_CLOSE_REASON_EOF
    return VIR_CONNECT_CLOSE_REASON_ERROR


def _uuid_string(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes=raw))


class RemoteConnect(RemoteSecretMethods, RemoteNetworkMethods, RemoteStorageMethods):
    """A connection to a libvirt RPC server, with libvirt-python's ``virConnect`` methods."""

    def __init__(self, uri: ConnectURI, client: Client, readonly: bool, where: str) -> None:
        self._uri = uri
        self._client: Client | None = client
        self._readonly = readonly
        self._where = where
        # libvirt counts ssh as secure (priv->is_secure), not as encrypted
        self._secure_transport = uri.effective_transport in ("unix", "ssh", "tls")
        self._lock = threading.Lock()
        self._listening = False
        self._lost: PyvirtError | None = None
        self._close_cb: tuple[Callable[..., object], object] | None = None
        self._close_fired = False
        self._server_close_cb = False
        # by kind ("domain", "network", "pool") and the server's callbackID (the server numbers
        # each kind apart): (event id, cb, opaque); the caller sees ids of our own, one series
        # from 0 per connection for all kinds, as libvirt's client numbers them
        self._events: dict[tuple[str, int], tuple[int, Callable[..., object], object]] = {}
        self._local_ids: dict[int, tuple[str, int]] = {}
        self._next_local_id = 0
        # events that overtook the reply of a registration in flight
        self._early: dict[tuple[str, int], list[Callable[[], None]]] = {}
        self._registering = 0
        self._legacy: dict[Any, int] = {}
        self._type: str | None = None
        self._dispatcher = _Dispatcher(f"pyvirt-remote-callbacks {where}")
        client.add_close_callback(_weak(self._on_transport_closed))
        client.add_event_handler(_weak(self._on_event))

    # ---- plumbing ----

    @property
    def peer(self) -> str:
        """The socket path or host:port this connection talks to."""
        return self._where

    def _rpc(self) -> Client:
        if self._client is None:
            raise OperationInvalid("this connection is closed; open a new one")
        return self._client

    def _call(self, proc: str, api: str, **fields: Any) -> Any:
        client = self._rpc()
        try:
            return client.call(proc, **fields)
        except ConnectionClosed as exc:
            raise self._lost_error(api, exc) from exc

    def _listen(self, api: str) -> None:
        """From now on something may arrive while the caller makes no call (events, the
        connection's end): the client's loop gets a thread of its own, and the server is told we
        answer its keepalive PINGs, as libvirt's client does with an event loop."""
        client = self._rpc()
        if self._listening:
            return
        self._listening = True
        client.listen()
        self._call("CONNECT_SUPPORTS_FEATURE", api, feature=Feature.PROGRAM_KEEPALIVE)

    def _lost_error(self, api: str, exc: PyvirtError) -> PyvirtError:
        cause = self._lost.message if self._lost is not None else _strip_proc(exc.message)
        if exc.message.startswith("client socket is closed"):
            return ConnectionClosed(
                f"{api}: the connection to {self._where} was lost earlier ({cause}); nothing was "
                "sent: open a new connection", code=exc.code, domain=exc.domain)
        return ConnectionClosed(
            f"{api}: the connection to {self._where} was lost while the call was pending "
            f"({cause}); whether the server did it is unknown: open a new connection and check",
            code=exc.code, domain=exc.domain)

    def _on_transport_closed(self, error: PyvirtError | None) -> None:
        """On the RPC loop thread, once: None after our own close()."""
        if error is None:
            return
        self._lost = error
        self._fire_close(_close_reason(error))

    def _fire_close(self, reason: int) -> None:
        with self._lock:
            if self._close_fired:
                return
            self._close_fired = True
            entry = self._close_cb
        if entry is not None:
            cb, opaque = entry
            self._dispatcher.submit(lambda: cb(self, reason, opaque))  # type: ignore[arg-type]

    def _on_event(self, proc: Procedure, record: Any) -> None:
        name = proc.name
        if name == "CONNECT_EVENT_CONNECTION_CLOSED":
            self._fire_close(int(record.reason))
            return
        kind = _EVENT_KINDS.get(name)
        if kind is None:
            return
        key = (kind, int(record.callbackID))

        def deliver() -> None:
            with self._lock:
                entry = self._events.get(key)
            if entry is None:
                return
            _, cb, opaque = entry
            if kind == "domain":
                msg = record.msg
                dom = RemoteDomain(self, msg.dom)
                if name == "DOMAIN_EVENT_CALLBACK_LIFECYCLE":
                    cb(self, dom, int(msg.event), int(msg.detail), opaque)
                else:
                    cb(self, dom, opaque)
            elif kind == "network":
                cb(self, self._network(record.net), int(record.event), int(record.detail), opaque)
            elif name == "STORAGE_POOL_EVENT_LIFECYCLE":
                cb(self, RemoteStoragePool(self, record.pool), int(record.event), int(record.detail),
                   opaque)
            else:
                cb(self, RemoteStoragePool(self, record.pool), opaque)

        with self._lock:
            if key not in self._events:
                # The event may overtake the reply that tells us the callback's id; with no
                # registration in flight it is for a callback already deregistered.
                if self._registering:
                    self._early.setdefault(key, []).append(deliver)
                return
        self._dispatcher.submit(deliver)

    # ---- the connection ----

    def close(self) -> int:
        """CONNECT_CLOSE and hang up. A registered close callback runs before this returns, as
        with libvirt-python, with its reason: EOF, since the server hangs up on CONNECT_CLOSE and
        libvirt's client sees that before its own close."""
        client, self._client = self._client, None
        _PINNED.discard(self)
        if client is not None:
            client.close()
            self._fire_close(VIR_CONNECT_CLOSE_REASON_EOF)
            self._dispatcher.stop()
        return 0

    def __del__(self) -> None:
        """Dropped without close(): its client goes with it and hangs up (``Client.__del__``), as
        libvirt-python's virConnect does; the callback thread ends without being waited for (this
        may run on any thread)."""
        dispatcher = getattr(self, "_dispatcher", None)
        if dispatcher is not None:
            dispatcher.stop(wait=False)

    def isAlive(self) -> int:  # noqa: N802
        client = self._client
        return int(client is not None and client.rpc.is_open)

    def isSecure(self) -> int:  # noqa: N802
        """1 over a UNIX socket when the server calls itself secure; 0 over TCP, as libvirt's
        remote driver: the transport must be secure too."""
        secure = self._call("CONNECT_IS_SECURE", "virConnectIsSecure").secure
        return int(self._secure_transport and bool(secure))

    def isEncrypted(self) -> int:  # noqa: N802
        """1 over TLS when the server calls itself secure; 0 otherwise: neither a UNIX socket nor
        plain TCP encrypts (asked of the server all the same, as libvirt does, so a dead
        connection errs)."""
        secure = self._call("CONNECT_IS_SECURE", "virConnectIsEncrypted").secure
        return int(self._rpc().rpc.encrypted and bool(secure))

    def getURI(self) -> str:  # noqa: N802
        """The URI this connection was opened with (libvirt's client keeps it, no call)."""
        self._rpc()
        return self._uri.raw

    def getType(self) -> str:  # noqa: N802
        if self._type is None:
            self._type = str(self._call("CONNECT_GET_TYPE", "virConnectGetType").type)
        self._rpc()
        return self._type

    def getVersion(self) -> int:  # noqa: N802
        return int(self._call("CONNECT_GET_VERSION", "virConnectGetVersion").hv_ver)

    def getLibVersion(self) -> int:  # noqa: N802
        return int(self._call("CONNECT_GET_LIB_VERSION", "virConnectGetLibVersion").lib_ver)

    def getHostname(self) -> str:  # noqa: N802
        return str(self._call("CONNECT_GET_HOSTNAME", "virConnectGetHostname").hostname)

    def getCapabilities(self) -> str:  # noqa: N802
        return str(self._call("CONNECT_GET_CAPABILITIES", "virConnectGetCapabilities").capabilities)

    def newStream(self, flags: int = 0) -> RemoteStream:  # noqa: N802
        """A stream to attach with RemoteDomain.openConsole (pyvirt.remote_stream)."""
        self._rpc()
        return RemoteStream(self, flags)

    def getDomainCapabilities(self, emulatorbin: str | None = None, arch: str | None = None,  # noqa: N802
                              machine: str | None = None, virttype: str | None = None,
                              flags: int = 0) -> str:
        return str(self._call("CONNECT_GET_DOMAIN_CAPABILITIES", "virConnectGetDomainCapabilities",
                              emulatorbin=emulatorbin, arch=arch, machine=machine,
                              virttype=virttype, flags=flags).capabilities)

    def getSysinfo(self, flags: int = 0) -> str:  # noqa: N802
        return str(self._call("CONNECT_GET_SYSINFO", "virConnectGetSysinfo", flags=flags).sysinfo)

    def getMaxVcpus(self, type: str | None) -> int:  # noqa: N802, A002 - libvirt-python's name
        return int(self._call("CONNECT_GET_MAX_VCPUS", "virConnectGetMaxVcpus",
                              type=type).max_vcpus)

    def getFreeMemory(self) -> int:  # noqa: N802
        return int(self._call("NODE_GET_FREE_MEMORY", "virNodeGetFreeMemory").freeMem)

    def getInfo(self) -> list[Any]:  # noqa: N802
        """[model, memory MiB, cpus, mhz, nodes, sockets, cores, threads] (virNodeGetInfo)."""
        r = self._call("NODE_GET_INFO", "virNodeGetInfo")
        model = r.model.split(b"\0", 1)[0].decode() if isinstance(r.model, bytes) else \
            str(r.model).split("\0", 1)[0]
        return [model, int(r.memory) >> 10, r.cpus, r.mhz, r.nodes, r.sockets, r.cores, r.threads]

    def getSecurityModel(self) -> list[str]:  # noqa: N802
        r = self._call("NODE_GET_SECURITY_MODEL", "virNodeGetSecurityModel")
        return [_chars(r.model), _chars(r.doi)]

    def setKeepAlive(self, interval: int, count: int) -> int:  # noqa: N802
        """Ping the server when it has been quiet ``interval`` s, drop the connection after
        ``count`` unanswered pings; interval <= 0 stops. 1 when the server has no keepalive."""
        client = self._rpc()
        if not self._call("CONNECT_SUPPORTS_FEATURE", "virConnectSetKeepAlive",
                          feature=Feature.PROGRAM_KEEPALIVE).supported:
            return 1
        client.set_keepalive(float(interval) if interval > 0 else None, count)
        return 0

    def registerCloseCallback(self, cb: Callable[..., object], opaque: object) -> int:  # noqa: N802
        """``cb(conn, reason, opaque)`` once when the connection drops (not on close())."""
        self._listen("virConnectRegisterCloseCallback")
        with self._lock:
            if self._close_cb is not None:
                raise PyvirtError("Requested operation is not valid: A close callback is already "
                                  "registered", code=codes.VIR_ERR_OPERATION_INVALID,
                                  domain=codes.VIR_FROM_NONE)
            self._close_cb = (cb, opaque)
            _PINNED.add(self)
            lost = self._lost if self._close_fired else None
        if not self._server_close_cb:
            try:
                supported = self._call("CONNECT_SUPPORTS_FEATURE", "virConnectRegisterCloseCallback",
                                       feature=Feature.REMOTE_CLOSE_CALLBACK).supported
                if supported:
                    self._call("CONNECT_REGISTER_CLOSE_CALLBACK", "virConnectRegisterCloseCallback")
                    self._server_close_cb = True
            except PyvirtError as exc:
                if exc.code != codes.VIR_ERR_NO_SUPPORT:
                    with self._lock:
                        self._close_cb = None
                    raise
        if lost is not None:  # dropped before: report it now, once
            reason = _close_reason(lost)
            self._dispatcher.submit(lambda: cb(self, reason, opaque))  # type: ignore[arg-type]
        return 0

    def unregisterCloseCallback(self) -> None:  # noqa: N802
        self._rpc()
        with self._lock:
            if self._close_cb is None:
                raise PyvirtError("Requested operation is not valid: A different callback was "
                                  "requested", code=codes.VIR_ERR_OPERATION_INVALID,
                                  domain=codes.VIR_FROM_NONE)
            self._close_cb = None
        if self._server_close_cb:
            self._server_close_cb = False
            self._call("CONNECT_UNREGISTER_CLOSE_CALLBACK", "virConnectUnregisterCloseCallback")

    # ---- domains ----

    def _dom(self, wire: Any) -> RemoteDomain:
        return RemoteDomain(self, wire)

    def defineXML(self, xml: str) -> RemoteDomain:  # noqa: N802
        return self._dom(self._call("DOMAIN_DEFINE_XML", "virDomainDefineXML", xml=xml).dom)

    def defineXMLFlags(self, xml: str, flags: int = 0) -> RemoteDomain:  # noqa: N802
        return self._dom(self._call("DOMAIN_DEFINE_XML_FLAGS", "virDomainDefineXMLFlags", xml=xml,
                                    flags=flags).dom)

    def createXML(self, xml: str, flags: int = 0) -> RemoteDomain:  # noqa: N802
        return self._dom(self._call("DOMAIN_CREATE_XML", "virDomainCreateXML", xml_desc=xml,
                                    flags=flags).dom)

    def lookupByName(self, name: str) -> RemoteDomain:  # noqa: N802
        return self._dom(self._call("DOMAIN_LOOKUP_BY_NAME", "virDomainLookupByName",
                                    name=name).dom)

    def lookupByUUID(self, uuid: bytes) -> RemoteDomain:  # noqa: N802
        return self._dom(self._call("DOMAIN_LOOKUP_BY_UUID", "virDomainLookupByUUID",
                                    uuid=bytes(uuid)).dom)

    def lookupByUUIDString(self, uuid: str) -> RemoteDomain:  # noqa: N802
        try:
            raw = uuidlib.UUID(uuid).bytes
        except (ValueError, TypeError, AttributeError):
            raise PyvirtError(f"invalid argument: uuidstr in virDomainLookupByUUIDString must be "
                              f"a UUID such as 4dea22b3-1d52-d8f3-2516-782e98ab3fa0, not {uuid!r}",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_DOMAIN) from None
        return self._dom(self._call("DOMAIN_LOOKUP_BY_UUID", "virDomainLookupByUUIDString",
                                    uuid=raw).dom)

    def lookupByID(self, domain_id: int) -> RemoteDomain:  # noqa: N802
        return self._dom(self._call("DOMAIN_LOOKUP_BY_ID", "virDomainLookupByID",
                                    id=domain_id).dom)

    def listAllDomains(self, flags: int = 0) -> list[RemoteDomain]:  # noqa: N802
        r = self._call("CONNECT_LIST_ALL_DOMAINS", "virConnectListAllDomains", need_results=1,
                       flags=flags)
        return [self._dom(d) for d in r.domains]

    def numOfDomains(self) -> int:  # noqa: N802
        return int(self._call("CONNECT_NUM_OF_DOMAINS", "virConnectNumOfDomains").num)

    def listDomainsID(self) -> list[int]:  # noqa: N802
        n = self.numOfDomains()
        if n <= 0:
            return []
        return [int(i) for i in self._call("CONNECT_LIST_DOMAINS", "virConnectListDomains",
                                           maxids=n).ids]

    def numOfDefinedDomains(self) -> int:  # noqa: N802
        return int(self._call("CONNECT_NUM_OF_DEFINED_DOMAINS",
                              "virConnectNumOfDefinedDomains").num)

    def listDefinedDomains(self) -> list[str]:  # noqa: N802
        n = self.numOfDefinedDomains()
        if n <= 0:
            return []
        return [str(s) for s in self._call("CONNECT_LIST_DEFINED_DOMAINS",
                                           "virConnectListDefinedDomains", maxnames=n).names]

    def domainXMLToNative(self, nativeFormat: str, domainXml: str, flags: int = 0) -> str:  # noqa: N802, N803
        return str(self._call("CONNECT_DOMAIN_XML_TO_NATIVE", "virConnectDomainXMLToNative",
                              nativeFormat=nativeFormat, domainXml=domainXml,
                              flags=flags).nativeConfig)

    def domainXMLFromNative(self, nativeFormat: str, nativeConfig: str, flags: int = 0) -> str:  # noqa: N802, N803
        return str(self._call("CONNECT_DOMAIN_XML_FROM_NATIVE", "virConnectDomainXMLFromNative",
                              nativeFormat=nativeFormat, nativeConfig=nativeConfig,
                              flags=flags).domainXml)

    # ---- events ----

    def domainEventRegisterAny(self, dom: RemoteDomain | None, eventID: int,  # noqa: N802, N803
                               cb: Callable[..., object], opaque: object) -> int:
        """Lifecycle ``cb(conn, dom, event, detail, opaque)`` and reboot ``cb(conn, dom, opaque)``
        events, registered with the server (REMOTE_PROC_CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY)."""
        if not 0 <= eventID < EVENT_ID_LAST:
            raise PyvirtError(f"invalid argument: unsupported event ID {eventID}",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_DOMAIN)
        if eventID not in (EVENT_ID_LIFECYCLE, EVENT_ID_REBOOT):
            raise NotSupported(f"event ID {eventID} is not delivered by pyvirt's remote client "
                               "yet: register VIR_DOMAIN_EVENT_ID_LIFECYCLE (0) or "
                               "VIR_DOMAIN_EVENT_ID_REBOOT (1)", domain=codes.VIR_FROM_REMOTE)
        wire = dom._wire() if dom is not None else None
        return self._register_remote("domain", "CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY",
                                     "virConnectDomainEventRegisterAny", eventID, cb, opaque, dom=wire)

    def _register_remote(self, kind: str, proc: str, api: str, event_id: int,
                         cb: Callable[..., object], opaque: object, **fields: Any) -> int:
        """Register ``cb`` with the server (``proc`` returns the server's callbackID); the
        caller's id is one of this connection's series."""
        self._listen(api)
        with self._lock:
            self._registering += 1
        try:
            remote_id = int(self._call(proc, api, eventID=event_id, **fields).callbackID)
        except BaseException:
            with self._lock:
                self._registering -= 1
            raise
        key = (kind, remote_id)
        with self._lock:
            self._registering -= 1  # with the callback known, under the same lock
            self._events[key] = (event_id, cb, opaque)
            _PINNED.add(self)
            local_id = self._next_local_id
            self._next_local_id += 1
            self._local_ids[local_id] = key
            early = self._early.pop(key, [])
            if not self._registering:
                self._early.clear()
        for job in early:
            self._dispatcher.submit(job)
        return local_id

    def _deregister_remote(self, kind: str, proc: str, api: str, callback_id: int) -> None:
        """An id not registered (for this kind of event) is refused in libvirt's words."""
        with self._lock:
            key = self._local_ids.get(callback_id)
        if key is None:
            detail = f"event callback id {callback_id} not registered"
            raise PyvirtError(f"invalid argument: {detail}", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_NONE, str1="invalid argument: %s",
                              str2=detail)
        # an id of another kind of event goes to the server too, as libvirt's client sends it:
        # the server refuses it ("network event callback N not registered")
        self._call(proc, api, callbackID=key[1])
        if key[0] == kind:
            with self._lock:
                self._local_ids.pop(callback_id, None)
                self._events.pop(key, None)

    def domainEventDeregisterAny(self, callbackID: int) -> None:  # noqa: N802, N803
        """None, as libvirt-python's; an id not registered is refused in libvirt's words."""
        self._deregister_remote("domain", "CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY",
                                "virConnectDomainEventDeregisterAny", callbackID)

    def domainEventRegister(self, cb: Callable[..., object], opaque: object) -> int:  # noqa: N802
        """Lifecycle events of every domain; one registration per ``cb``."""
        if cb in self._legacy:
            raise PyvirtError("operation failed: event callback already tracked",
                              code=codes.VIR_ERR_OPERATION_FAILED, domain=codes.VIR_FROM_NONE)
        self._legacy[cb] = self.domainEventRegisterAny(None, EVENT_ID_LIFECYCLE, cb, opaque)
        return 0

    def domainEventDeregister(self, cb: Callable[..., object]) -> int:  # noqa: N802
        if cb not in self._legacy:
            raise PyvirtError("invalid argument: could not find event callback for removal",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_DOMAIN)
        self.domainEventDeregisterAny(self._legacy.pop(cb))
        return 0

    def __getattr__(self, name: str) -> Any:
        # A method of the embedded virConnect that has no remote procedure here yet.
        from pyvirt.connection import virConnect

        if not name.startswith("_") and hasattr(virConnect, name):
            raise NotSupported(f"virConnect.{name} is not implemented by pyvirt's remote client "
                               "yet; use it on an in-process connection (qemu:///system, "
                               "qemu:///session, qemu:///embed?root=DIR)",
                               domain=codes.VIR_FROM_REMOTE)
        raise AttributeError(f"'RemoteConnect' object has no attribute '{name}'")

    def __enter__(self) -> RemoteConnect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteConnect {self._uri.raw} via {self._where}>"


def _chars(value: Any) -> str:
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode()
    return str(value).split("\0", 1)[0]


def _strip_proc(message: str) -> str:
    # RPCClient prefixes a pending call's failure with "REMOTE_PROC_X failed: ".
    head, sep, rest = message.partition(" failed: ")
    return rest if sep and head.startswith(("REMOTE_PROC_", "QEMU_PROC_")) else message


class RemoteDomain(RemoteDomainStatsMethods):
    """A domain handle of a :class:`RemoteConnect`: name, UUID and id as the server gave them."""

    def __init__(self, conn: RemoteConnect, wire: Any) -> None:
        self._conn = conn
        self._name: str = wire.name
        self._uuid: bytes = bytes(wire.uuid)
        self._id: int = int(wire.id)

    def _wire(self) -> Any:
        return NONNULL_DOMAIN(name=self._name, uuid=self._uuid, id=self._id)

    def _call(self, proc: str, api: str, **fields: Any) -> Any:
        return self._conn._call(proc, api, dom=self._wire(), **fields)

    def connect(self) -> RemoteConnect:
        return self._conn

    def name(self) -> str:
        return self._name

    def UUID(self) -> bytes:  # noqa: N802
        return self._uuid

    def UUIDString(self) -> str:  # noqa: N802
        return _uuid_string(self._uuid)

    def ID(self) -> int:  # noqa: N802
        """The id the handle holds (libvirt's client asks nobody): -1 when inactive."""
        return self._id

    # -- lifecycle --

    def create(self) -> int:
        self._call("DOMAIN_CREATE", "virDomainCreate")
        # DOMAIN_CREATE returns no id: look it up, as libvirt's remote driver does.
        self._id = int(self._conn._call("DOMAIN_LOOKUP_BY_UUID", "virDomainCreate",
                                        uuid=self._uuid).dom.id)
        return 0

    def createWithFlags(self, flags: int = 0) -> int:  # noqa: N802
        self._id = int(self._call("DOMAIN_CREATE_WITH_FLAGS", "virDomainCreateWithFlags",
                                  flags=flags).dom.id)
        return 0

    def destroy(self) -> int:
        self._call("DOMAIN_DESTROY", "virDomainDestroy")
        self._id = -1
        return 0

    def destroyFlags(self, flags: int = 0) -> int:  # noqa: N802
        # libvirt's client forgets the id after virDomainDestroy only, not after DestroyFlags
        self._call("DOMAIN_DESTROY_FLAGS", "virDomainDestroyFlags", flags=flags)
        return 0

    def shutdown(self) -> int:
        self._call("DOMAIN_SHUTDOWN", "virDomainShutdown")
        return 0

    def shutdownFlags(self, flags: int = 0) -> int:  # noqa: N802
        self._call("DOMAIN_SHUTDOWN_FLAGS", "virDomainShutdownFlags", flags=flags)
        return 0

    def reboot(self, flags: int = 0) -> int:
        self._call("DOMAIN_REBOOT", "virDomainReboot", flags=flags)
        return 0

    def reset(self, flags: int = 0) -> int:
        self._call("DOMAIN_RESET", "virDomainReset", flags=flags)
        return 0

    def suspend(self) -> int:
        self._call("DOMAIN_SUSPEND", "virDomainSuspend")
        return 0

    def resume(self) -> int:
        self._call("DOMAIN_RESUME", "virDomainResume")
        return 0

    def undefine(self) -> int:
        self._call("DOMAIN_UNDEFINE", "virDomainUndefine")
        return 0

    def undefineFlags(self, flags: int = 0) -> int:  # noqa: N802
        self._call("DOMAIN_UNDEFINE_FLAGS", "virDomainUndefineFlags", flags=flags)
        return 0

    # -- queries --

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return str(self._call("DOMAIN_GET_XML_DESC", "virDomainGetXMLDesc", flags=flags).xml)

    def info(self) -> list[int]:
        """[state, max memory KiB, memory KiB, vCPUs, CPU time ns] (virDomainGetInfo)."""
        r = self._call("DOMAIN_GET_INFO", "virDomainGetInfo")
        return [int(r.state), int(r.maxMem), int(r.memory), int(r.nrVirtCpu), int(r.cpuTime)]

    def state(self, flags: int = 0) -> list[int]:
        r = self._call("DOMAIN_GET_STATE", "virDomainGetState", flags=flags)
        return [int(r.state), int(r.reason)]

    def OSType(self) -> str:  # noqa: N802
        return str(self._call("DOMAIN_GET_OS_TYPE", "virDomainGetOSType").type)

    def isActive(self) -> int:  # noqa: N802
        return int(self._call("DOMAIN_IS_ACTIVE", "virDomainIsActive").active)

    def isPersistent(self) -> int:  # noqa: N802
        return int(self._call("DOMAIN_IS_PERSISTENT", "virDomainIsPersistent").persistent)

    def isUpdated(self) -> int:  # noqa: N802
        return int(self._call("DOMAIN_IS_UPDATED", "virDomainIsUpdated").updated)

    def autostart(self) -> int:
        return int(self._call("DOMAIN_GET_AUTOSTART", "virDomainGetAutostart").autostart)

    def setAutostart(self, autostart: int) -> int:  # noqa: N802
        self._call("DOMAIN_SET_AUTOSTART", "virDomainSetAutostart", autostart=int(autostart))
        return 0

    def maxMemory(self) -> int:  # noqa: N802
        return int(self._call("DOMAIN_GET_MAX_MEMORY", "virDomainGetMaxMemory").memory)

    def maxVcpus(self) -> int:  # noqa: N802
        return int(self._call("DOMAIN_GET_MAX_VCPUS", "virDomainGetMaxVcpus").num)

    def vcpusFlags(self, flags: int = 0) -> int:  # noqa: N802
        return int(self._call("DOMAIN_GET_VCPUS_FLAGS", "virDomainGetVcpusFlags", flags=flags).num)

    def hasManagedSaveImage(self, flags: int = 0) -> int:  # noqa: N802
        return int(self._call("DOMAIN_HAS_MANAGED_SAVE_IMAGE", "virDomainHasManagedSaveImage",
                              flags=flags).result)

    def securityLabel(self) -> list[Any]:  # noqa: N802
        """[label, enforcing] (virDomainGetSecurityLabel)."""
        r = self._call("DOMAIN_GET_SECURITY_LABEL", "virDomainGetSecurityLabel")
        return [_chars(r.label), int(r.enforcing)]

    def messages(self, flags: int = 0) -> list[str]:
        return [str(m) for m in self._call("DOMAIN_GET_MESSAGES", "virDomainGetMessages",
                                           flags=flags).msgs]

    def snapshotNum(self, flags: int = 0) -> int:  # noqa: N802
        return int(self._call("DOMAIN_SNAPSHOT_NUM", "virDomainSnapshotNum", flags=flags).num)

    def qemuMonitorCommand(self, cmd: str, flags: int = 0) -> str:  # noqa: N802
        """libvirt_qemu.qemuMonitorCommand over QEMU_PROC_DOMAIN_MONITOR_COMMAND."""
        return str(self._call("QEMU_PROC_DOMAIN_MONITOR_COMMAND", "virDomainQemuMonitorCommand",
                              cmd=cmd, flags=flags).result)

    def openConsole(self, dev_name: str | None, stream: RemoteStream, flags: int = 0) -> int:  # noqa: N802
        """Attach ``stream`` (from this connection's newStream) to the guest's console, over
        REMOTE_PROC_DOMAIN_OPEN_CONSOLE; the server checks the device, the flags and the session."""
        if not isinstance(stream, RemoteStream) or stream.connect() is not self._conn:
            detail = f"stream must match connection of domain '{self._name}'"
            raise PyvirtError(f"invalid argument: {detail}", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_DOMAIN, str1="invalid argument: %s",
                              str2=detail)
        stream._check_unattached()
        try:
            _, sync = self._conn._rpc().call_stream("DOMAIN_OPEN_CONSOLE", dom=self._wire(),
                                                    dev_name=dev_name, flags=flags)
        except ConnectionClosed as exc:
            raise self._conn._lost_error("virDomainOpenConsole", exc) from exc
        stream._attach(sync)
        return 0

    def __getattr__(self, name: str) -> Any:
        from pyvirt.connection import virDomain

        if not name.startswith("_") and hasattr(virDomain, name):
            raise NotSupported(f"virDomain.{name} is not implemented by pyvirt's remote client "
                               "yet; use it on an in-process connection",
                               domain=codes.VIR_FROM_REMOTE)
        raise AttributeError(f"'RemoteDomain' object has no attribute '{name}'")

    def __repr__(self) -> str:
        return f"<RemoteDomain {self._name} {self.UUIDString()} id={self._id}>"
