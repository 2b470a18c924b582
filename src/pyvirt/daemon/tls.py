# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's TLS listener (``listen_tls = 1`` with ``--listen``): where its certificates are, and
how a connection becomes a client.

Files, as libvirtd finds them:

* ``key_file``/``cert_file``/``ca_file``/``crl_file`` from pyvirtd.conf when any of the first three
  is set (then all three must be; the CRL only if ``crl_file`` is);
* otherwise libvirt's layout below a ``pki`` directory: ``pki/CA/cacert.pem``,
  ``pki/CA/cacrl.pem`` (used when present), ``pki/libvirt/servercert.pem``,
  ``pki/libvirt/private/serverkey.pem``, where ``pki`` is

  - ``/etc/pki`` for the system instance (the same files as libvirtd's),
  - ``DIR/etc/pki`` for ``pyvirtd --root DIR`` (the embed tree mirrors the host's layout, as
    ``DIR/etc/pyvirtd.conf`` mirrors ``/etc/libvirt/libvirtd.conf``),
  - for a session daemon, ``~/.pki/libvirt/{cacert,cacrl,servercert,serverkey}.pem`` file by
    file, else ``/etc/pki`` (libvirt's user PKI path).

At start-up the files are read and libvirt's sanity checks run on the server certificate and the
CA (unless ``tls_no_sanity_certificate = 1``); any fault stops the daemon with the file (and the
pyvirtd.conf key) named.

Connections run on GnuTLS, libvirtd's own library, where it is installed
(:mod:`pyvirt.daemon.tls_gnutls`: it reads and writes the socket itself, and checks as libvirtd
checks, after the handshake); otherwise, or with ``PYVIRTD_TLS_LIBRARY=openssl`` in the
environment, on OpenSSL, as follows. The start-up log says which (at the info level).

Per connection on OpenSSL (:class:`TLSAcceptor`): the TLS handshake, its ServerHello sent ahead
of the rest of the server's first flight as libvirtd's GnuTLS sends it, during which OpenSSL
verifies the client's certificate against the CA (a certificate is required unless
``tls_no_verify_certificate = 1``; a chain verified in the last five minutes, byte for byte, is
taken as verified: :func:`pyvirt.rpc.openssl_ext.remember_verified_chains`); then the CRL (read
once at start-up: :class:`pyvirt.rpc.tls.Revocations`) and libvirt's own checks of that certificate
(:func:`pyvirt.rpc.tls.check_peer`: dates, ``tls_allowed_dn_list``, basic constraints, key usage
and purpose); then the byte 0x01; only then does the connection become a
:class:`~pyvirt.daemon.client.ClientConnection` (authentication as for TCP, with the session's
transport ``"tls"``, so ``auth_tls`` can add SASL on top). As libvirtd counts its clients from
accept(), a connection in its handshake counts against ``max_clients`` already (and against
``max_anonymous_clients`` when ``auth_tls`` asks for SASL).
A refused client is logged with its address and the reason, and its TCP connection is dropped
without a TLS alert or goodbye, as libvirtd does -- but only once the client has sent the rest of
its handshake (OpenSSL fails a bad certificate as soon as it arrives, in the middle of the
client's flight; libvirtd, with GnuTLS, checks only after the handshake, and libvirt's client
would die of SIGPIPE writing into a closed socket). A real virsh then says "Unable to read TLS
confirmation: Input/output error" for both daemons alike. The handshake runs over memory BIOs
(:class:`TLSAcceptor`) rather than asyncio's own TLS transport for exactly that control.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from pyvirt.daemon.config import DaemonConfig
from pyvirt.daemon.instance import ServedInstance
from pyvirt.rpc.openssl_ext import ServerHelloSink
from pyvirt.rpc.tls import (
    CONFIRMATION,
    SYSTEM_PKI,
    PeerRefused,
    PKIFiles,
    Revocations,
    TLSError,
    check_peer,
    nothing,
    pki_files,
    sanity_check,
    server_context,
)

if TYPE_CHECKING:
    import ssl

    from pyvirt.daemon.tls_gnutls import Credentials

__all__ = ["ServerTLS", "load_server_tls", "server_pki_files", "TLSAcceptor", "Refusing",
           "peer_label"]

log = logging.getLogger("pyvirt.daemon")

#: Seconds a connection may take to complete its handshake before it is dropped.
HANDSHAKE_TIMEOUT = 30.0

_FILE_KEYS = (("ca_file", "cacert"), ("crl_file", "cacrl"), ("cert_file", "cert"),
              ("key_file", "key"))


def server_pki_files(config: DaemonConfig, instance: ServedInstance) -> PKIFiles:
    """The server's files (see the module docstring), or a configuration error."""
    if config.ca_file or config.cert_file or config.key_file:
        for key, what in (("ca_file", "No CA certificate path set to match server key/cert"),
                          ("cert_file", "No server certificate path set to match server key"),
                          ("key_file", "No server key path set to match server cert")):
            if not getattr(config, key):
                raise config.error(key, f"{what}: set {key} too, or none of "
                                        "ca_file/cert_file/key_file to use the default files")
        assert config.ca_file and config.cert_file and config.key_file
        return PKIFiles(Path(config.ca_file),
                        Path(config.crl_file) if config.crl_file else None,
                        Path(config.cert_file), Path(config.key_file))
    if instance.kind == "embed":
        assert instance.root is not None
        files = PKIFiles.in_tree(instance.root / "etc" / "pki", server=True)
    elif instance.kind == "system":
        files = PKIFiles.in_tree(SYSTEM_PKI, server=True)
    else:
        files = pki_files(None, server=True, try_user=True)
    if config.crl_file:
        files = PKIFiles(files.cacert, Path(config.crl_file), files.cert, files.key)
    return files


def _pki_dir(instance: ServedInstance) -> str:
    if instance.kind == "embed":
        assert instance.root is not None
        return str(instance.root / "etc" / "pki")
    if instance.kind == "system":
        return str(SYSTEM_PKI)
    return f"~/.pki/libvirt or {SYSTEM_PKI}"


_Session = tuple["ssl.SSLObject", "ssl.MemoryBIO", "ssl.MemoryBIO"]


@dataclass(frozen=True)
class ServerTLS:
    """What every TLS connection of one daemon is checked with."""

    context: ssl.SSLContext
    files: PKIFiles
    verify: bool
    allowed_dns: tuple[str, ...]
    #: The CRL, checked once the handshake is done (None: no crl_file, or clients unverified).
    revocations: Revocations | None = None
    #: GnuTLS's credentials, where GnuTLS is used (pyvirt.daemon.tls_gnutls); else OpenSSL.
    gnutls: Credentials | None = None
    #: The next connection's TLS objects, made ahead of it (:meth:`prepare`).
    _spare: list[_Session] = field(default_factory=list, repr=False, compare=False)

    def session(self) -> _Session:
        """A new connection's TLS object, with its incoming and outgoing memory BIOs: the one
        :meth:`prepare` made, if any."""
        if self._spare:
            return self._spare.pop()
        import ssl

        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        return self.context.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing

    def prepare(self) -> None:
        """Make the next connection's TLS objects now, while there is nothing else to do:
        OpenSSL copies much of the context into each (20-40 µs here), time that would otherwise
        fall between a client's connect() and its first message, which follows at once. The
        context does not change once the daemon serves, so an object made early is the same as
        one made late."""
        if not self._spare and self.gnutls is None:
            self._spare.append(self.session())


def load_server_tls(config: DaemonConfig, instance: ServedInstance, *,
                    warn: bool = True) -> ServerTLS:
    """Read and check the server's files; errors name the file and the pyvirtd.conf key that
    chose it (if one did). ``warn``: log what is only worth a warning (once per start)."""
    files = server_pki_files(config, instance)
    try:
        if not config.tls_no_sanity_certificate:
            for warning in sanity_check(files, server=True):
                if warn:
                    log.warning("%s", warning)
        context, revocations = server_context(
            files, verify_clients=not config.tls_no_verify_certificate)
    except TLSError as exc:
        for key, attr in _FILE_KEYS:
            path = getattr(files, attr)
            if getattr(config, key) and path is not None and str(path) in exc.message:
                raise config.error(key, f"{key}: {exc.message}") from exc
        hint = (f" (with listen_tls = 1, pyvirtd looks for its TLS files below "
                f"{_pki_dir(instance)} in libvirt's layout; set ca_file, cert_file and key_file "
                "in pyvirtd.conf to use others)")
        raise config.error("listen_tls", exc.message + hint) from exc
    if config.tls_no_verify_certificate and warn:
        log.warning("tls_no_verify_certificate = 1: TLS clients are not asked for a certificate; "
                    "anyone who can reach the TLS port gets in")
    import ssl

    from pyvirt.daemon import tls_gnutls

    gnutls = None
    library = ssl.OPENSSL_VERSION
    if tls_gnutls.available():
        try:
            gnutls = tls_gnutls.Credentials(files, not config.tls_no_verify_certificate,
                                            config.tls_priority)
        except tls_gnutls.PriorityError as exc:
            raise config.error("tls_priority", f"tls_priority: {exc}; see GnuTLS's manual, "
                                               "\"Priority strings\", or remove the key for "
                                               "pyvirtd's default") from exc
        except OSError as exc:
            raise config.error("listen_tls", str(exc)) from exc
        library = f"GnuTLS {tls_gnutls.version()}"
    elif config.tls_priority is not None:
        # Ignoring it would serve what the administrator meant to rule out.
        raise config.error("tls_priority", "tls_priority is a GnuTLS priority string, and pyvirtd's "
                                           f"TLS runs on OpenSSL here ({tls_gnutls.unavailable()}): "
                                           "install GnuTLS (Debian: libgnutls30) or remove "
                                           "tls_priority")
    if warn:
        log.info("TLS connections on %s", library)
    return ServerTLS(context, files, not config.tls_no_verify_certificate,
                     tuple(config.tls_allowed_dn_list), revocations, gnutls)


def _why(exc: BaseException) -> str:
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "the client sent no certificate (PEER_DID_NOT_RETURN_A_CERTIFICATE)"
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__


def peer_label(address: object) -> str | None:
    """How the log names a TLS client at ``address`` (a socket's peer name); None if it has none."""
    if isinstance(address, tuple):
        return f"tls {address[0]}:{address[1]}"
    return None


#: After a refusal, how long the client may stay silent before the connection is dropped, and
#: how long it may go on sending at most: its remaining handshake messages are read and
#: discarded first, so that it never writes into a closed socket (libvirt's client would die of
#: SIGPIPE; libvirtd itself refuses only once the handshake is complete).
_LINGER_QUIET = 0.2
_LINGER_MAX = 3.0
_READ_MAX = 256 * 1024


class Refusing:
    """How a TLS connection in its handshake is ended (by :class:`TLSAcceptor` on OpenSSL and
    :class:`pyvirt.daemon.tls_gnutls.GnuTLSConnection`): a refused client is logged, then dropped
    without a TLS alert or goodbye once it has been quiet for a moment (or after a few seconds of
    sending); one that does not complete its handshake in time is dropped too. A subclass drops
    the connection in :meth:`_drop`."""

    peer: str
    state: str
    _timer: asyncio.TimerHandle | None
    _linger_end: float

    def _drop(self) -> None:
        raise NotImplementedError

    def _refuse(self, reason: str) -> None:
        log.warning("client %s: refused: %s", self.peer, reason)
        self.state = "linger"
        self._linger_end = asyncio.get_running_loop().time() + _LINGER_MAX
        self._linger()

    def _linger(self) -> None:
        """The client sent something (or was just refused): drop it once it is quiet."""
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        delay = min(_LINGER_QUIET, max(0.0, self._linger_end - loop.time()))
        self._timer = loop.call_later(delay, self._drop)

    def _accepted(self, dn: str) -> None:
        """The handshake is complete and the client passed (``dn``: its DN, as logged)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info("client %s: TLS certificate accepted, DN %s", self.peer, dn)
        self.state = "open"

    def _timeout(self) -> None:
        self._timer = None
        if self.state == "handshake":
            log.warning("client %s: refused: no TLS handshake within %.0f s", self.peer,
                        HANDSHAKE_TIMEOUT)
            self._drop()


class TLSAcceptor(Refusing, asyncio.Protocol):
    """One TCP connection on the TLS port: the handshake over memory BIOs (so that pyvirtd, not
    OpenSSL, decides when a refused client is dropped, and how), libvirt's checks, the
    confirmation byte; then it carries the client's :class:`TLSTransport`."""

    def __init__(self, tls: ServerTLS, make_client: Callable[[], asyncio.Protocol],
                 lost: Callable[[], None] | None = None,
                 kick: Callable[[], None] = nothing) -> None:
        self.tls = tls
        self.make_client = make_client
        #: Called when the connection ends before it became a client (refused, timed out, left).
        self.lost = lost
        #: Called after each handshake step: the daemon's busy polling (pyvirt.rpc.busypoll).
        self.kick = kick
        self.peer = "tls (unknown)"
        self.sslobj, self.incoming, self.outgoing = tls.session()
        self.raw: asyncio.Transport | None = None
        self.app: asyncio.Protocol | None = None
        self.app_transport: TLSTransport | None = None
        self.state = "handshake"  # -> "open" | "linger" -> "closed"
        self.reading_paused = False
        #: While the client's data is being handled: what the handling writes (replies, a
        #: close_notify) leaves together at its end, in one segment.
        self.receiving = False
        self._timer: asyncio.TimerHandle | None = None
        self._linger_end = 0.0
        #: Before the transport is made (:meth:`read_first`): the accepted socket, and what could
        #: not be sent on it yet.
        self._sock: socket.socket | None = None
        self._unsent = b""

    def read_first(self, sock: socket.socket, data: bytes) -> None:
        """Handle the client's first bytes (its ClientHello), read straight from the accepted
        ``sock`` before the connection has its transport, and send the answer on ``sock``.

        A daemon that sat idle wakes up late: by the time it accepts, the ClientHello is often
        there already, and the transport made first would stand between it and the answer
        (about 200 µs here, cold). Made afterwards, the transport costs nothing the client
        waits for: the client is busy with the server's flight meanwhile."""
        self._sock = sock
        try:
            self.data_received(data)
        finally:
            self._sock = None

    # ---- the raw TCP side ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's transports are not subclasses)
        self.raw = transport
        self.peer = peer_label(transport.get_extra_info("peername")) or self.peer
        if self._unsent:
            transport.write(self._unsent)
            self._unsent = b""
        if self.state == "handshake":
            self._timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._timeout)

    def data_received(self, data: bytes) -> None:
        if self.state == "linger":
            self._linger()
            return
        if self.state == "closed":
            return
        self.incoming.write(data)
        if self.state == "handshake":
            self._handshake()
            self.kick()  # the client's next flight follows within microseconds
        if self.state == "open":
            self._decrypt()

    def eof_received(self) -> bool | None:
        if self.state == "open" and self.app is not None:
            self.app.eof_received()
        elif self.state == "handshake":
            log.info("client %s: left during the TLS handshake", self.peer)
        return None  # close our side

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = "closed"
        # The next connection's TLS objects, once this one is gone (nothing else to do then,
        # unless another client is busy too: one loop turn later)
        asyncio.get_running_loop().call_soon(self.tls.prepare)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.app is not None:
            self.app.connection_lost(exc)
        elif self.lost is not None:
            self.lost()
        self.lost = None
        # Drop what refers back to us, so that the connection's objects go with their last
        # reference rather than wait for the cycle collector.
        self.app = self.app_transport = self.raw = None

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()

    def flush(self) -> None:
        data = self.outgoing.read()
        if not data:
            return
        if self.raw is not None:
            if not self.raw.is_closing():
                self.raw.write(data)
            return
        # Before the transport (read_first): on the socket, what it takes now; the transport
        # sends the rest first thing.
        if self._sock is not None and not self._unsent:
            try:
                data = data[self._sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL):]
            except OSError:  # full for now; or the client is gone, which the transport finds out
                pass
        self._unsent += data

    # ---- the handshake and the checks ----

    def _handshake(self) -> None:
        import ssl

        ServerHelloSink.send = self.flush  # (pyvirt.rpc.openssl_ext.early_server_hello)
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self.flush()
            return
        except ssl.SSLError as exc:
            self._refuse(f"TLS handshake failed: {_why(exc)}")
            return
        finally:
            ServerHelloSink.send = None
        # What the handshake left to send (TLS 1.2's last flight) goes out with the
        # confirmation byte, in one segment, once the certificate passes.
        dn = "(not checked: tls_no_verify_certificate)"
        if self.tls.verify:
            try:
                dn = check_peer(self.sslobj.getpeercert(binary_form=True), server_side=True,
                                allowed_dns=self.tls.allowed_dns,
                                revocations=self.tls.revocations)
            except PeerRefused as exc:
                self.flush()
                self._refuse(f"Failed to verify peer's certificate: {exc.message}")
                return
        self._accepted(dn)
        self.app_transport = TLSTransport(self)
        self.app_transport.write(CONFIRMATION)
        self.app = self.make_client()
        self.app.connection_made(self.app_transport)

    def _refuse(self, reason: str) -> None:
        if self.raw is None and self._sock is not None:  # (read_first: connection_made is to come)
            try:
                self.peer = peer_label(self._sock.getpeername()) or self.peer
            except OSError:
                pass
        super()._refuse(reason)

    def _drop(self) -> None:
        self.state = "closed"
        if self.raw is not None:
            self.raw.close()

    # ---- the client's data ----

    def _decrypt(self) -> None:
        self.receiving = True
        try:
            self._receive()
        finally:
            self.receiving = False
        self.flush()  # the replies, and key updates and the like

    def _receive(self) -> None:
        import ssl

        while not self.reading_paused and self.state == "open":
            try:
                chunk = self.sslobj.read(_READ_MAX)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            except ssl.SSLError as exc:
                log.warning("client %s: TLS error, closing: %s", self.peer, _why(exc))
                if self.raw is not None:
                    self.raw.abort()
                return
            if not chunk:
                # The client's close_notify (CPython's SSLObject.read returns b"" for it; "no data
                # yet" is SSLWantReadError): answer it, or a client waits out its shutdown timeout.
                self.flush()
                if self.app is not None:
                    self.app.eof_received()
                if self.app_transport is not None:
                    self.app_transport.close()
                return
            assert self.app is not None
            self.app.data_received(chunk)
            if not self.incoming.pending and not self.sslobj.pending():
                break  # all consumed: spare the read that would only raise SSLWantReadError


class TLSTransport(asyncio.Transport):
    """The transport a TLS client's :class:`~pyvirt.daemon.client.ClientConnection` writes to:
    encrypts into the TCP transport underneath, which does the buffering and flow control."""

    def __init__(self, conn: TLSAcceptor) -> None:
        super().__init__()
        self._conn = conn
        self._closing = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "ssl_object":
            return self._conn.sslobj
        if name == "peercert":
            return self._conn.sslobj.getpeercert()
        assert self._conn.raw is not None
        return self._conn.raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._conn.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._conn.app is not None
        return self._conn.app

    def is_closing(self) -> bool:
        raw = self._conn.raw
        return self._closing or raw is None or raw.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.is_closing():
            return
        view = memoryview(data)
        while view:
            written = self._conn.sslobj.write(view)
            view = view[written:]
        if not self._conn.receiving:
            self._conn.flush()

    def close(self) -> None:
        import ssl

        if self.is_closing():
            return
        self._closing = True
        try:
            self._conn.sslobj.unwrap()  # close_notify
        except ssl.SSLError:
            pass
        self._conn.flush()
        self._conn.state = "closed"
        assert self._conn.raw is not None
        self._conn.raw.close()

    def abort(self) -> None:
        self._closing = True
        self._conn.state = "closed"
        if self._conn.raw is not None:
            self._conn.raw.abort()

    def pause_reading(self) -> None:
        self._conn.reading_paused = True
        if self._conn.raw is not None:
            self._conn.raw.pause_reading()

    def resume_reading(self) -> None:
        self._conn.reading_paused = False
        if self._conn.raw is not None:
            self._conn.raw.resume_reading()
        asyncio.get_running_loop().call_soon(self._conn._decrypt)

    def is_reading(self) -> bool:
        return not self._conn.reading_paused

    def get_write_buffer_size(self) -> int:
        assert self._conn.raw is not None
        return self._conn.raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        assert self._conn.raw is not None
        self._conn.raw.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False
