# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's TLS connections on GnuTLS, libvirtd's own TLS library (``libgnutls.so.30``, through
ctypes), where it is installed: GnuTLS reads and writes the accepted socket itself, so that no
Python runs between a client's ClientHello and the server's answer, and it sends its ServerHello
ahead of the rest of its flight, as libvirtd does.

What is checked, and when, follows libvirtd: the handshake asks for a client certificate (unless
``tls_no_verify_certificate = 1``), and only once it is complete is the client's chain verified
against the CA (``gnutls_certificate_verify_peers2``), then the CRL and libvirt's own checks of
the certificate (:func:`pyvirt.rpc.tls.check_peer`), then the byte 0x01 goes out. A refused
client is logged with its address and the reason and its connection dropped without a word.

Unlike libvirtd, a chain GnuTLS found trusted is remembered (by its exact bytes,
:class:`pyvirt.rpc.verified.VerifiedChains`, as pyvirtd on OpenSSL remembers them) until the
first of its certificates or the CA's expires: the verification depends on nothing else (the CA
is loaded once), its signature checks took about 200 µs of a 2 ms set-up here, and a client that
reconnects presents the same chain (on OpenSSL, five minutes at most as well). The handshake
itself still has the client prove it holds the key, every time, and the CRL and libvirt's checks
run on every connection.

:class:`GnuTLSConnection` is the client's transport from then on: GnuTLS encrypts and decrypts,
and the connection buffers what the socket cannot take yet, pausing its client past a high-water
mark, as asyncio's transports do. Without GnuTLS, pyvirtd uses OpenSSL
(:class:`pyvirt.daemon.tls.TLSAcceptor`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pyvirt.daemon.tls import HANDSHAKE_TIMEOUT, Refusing, peer_label
from pyvirt.rpc.tls import CONFIRMATION, PeerRefused, TLSError, check_peer, load_ca_list, nothing
from pyvirt.rpc.verified import VerifiedChains

if TYPE_CHECKING:
    from pyvirt.daemon.tls import ServerTLS
    from pyvirt.rpc.tls import PKIFiles

__all__ = ["available", "Credentials", "GnuTLSConnection"]

log = logging.getLogger("pyvirt.daemon")

_SERVER = 1
_NONBLOCK = 1 << 3
_NO_SIGNAL = 1 << 6
_NO_TICKETS = 1 << 10
_CRD_CERTIFICATE = 1
_CERT_IGNORE, _CERT_REQUIRE = 0, 2
_X509_FMT_PEM = 1
_SHUT_WR = 1
_E_AGAIN = -28
_E_INTERRUPTED = -52
_E_WARNING_ALERT_RECEIVED = -16
_E_NO_CERTIFICATE_FOUND = -49
_E_CERTIFICATE_REQUIRED = -112
_E_PREMATURE_TERMINATION = -110
_E_PUSH_ERROR = -53
_E_PULL_ERROR = -54

#: The key exchange pyvirtd takes first when a client offers it (GnuTLS's clients, hence virsh
#: and libvirt-python, send a P-256 share first and an X25519 one second): X25519 costs both
#: sides less. Otherwise GnuTLS's defaults.
PRIORITY = (b"NORMAL:%SERVER_PRECEDENCE:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
            b"+GROUP-SECP384R1:+GROUP-SECP521R1:+GROUP-FFDHE2048:+GROUP-FFDHE3072:"
            b"+GROUP-FFDHE4096:+GROUP-FFDHE6144:+GROUP-FFDHE8192")

#: Status bits of gnutls_certificate_verify_peers2, and what each means for the client.
_STATUS = ((1 << 5, "certificate revoked"), (1 << 10, "certificate has expired"),
           (1 << 9, "certificate is not yet valid"),
           (1 << 6, "certificate issuer unknown (not signed by the CA)"),
           (1 << 7, "certificate signed by a certificate that is not a CA"),
           (1 << 8, "certificate signed with an insecure algorithm"),
           (1 << 11, "certificate signature does not verify"),
           (1 << 16, "certificate chain breaks its signers' constraints"))

#: Unsent bytes past which a client is paused (it then stops producing replies), and below which
#: it resumes: asyncio's defaults.
_HIGH_WATER = 64 * 1024
_LOW_WATER = _HIGH_WATER // 4
_RECORD_MAX = 16384
#: Non-fatal errors in a row (warning alerts, say) after which a connection is given up.
_NONFATAL_MAX = 16
_READ_SIZE = 256 * 1024


class _Datum(ctypes.Structure):
    _fields_ = [("data", ctypes.POINTER(ctypes.c_ubyte)), ("size", ctypes.c_uint)]


@lru_cache(maxsize=1)
def _lib() -> Any:
    """libgnutls with the calls used here declared; None where it cannot be loaded."""
    try:
        lib = ctypes.CDLL("libgnutls.so.30")
    except OSError:
        return None
    vp, c_int, size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    for name, args, res in (
            ("gnutls_init", [ctypes.POINTER(vp), ctypes.c_uint], c_int),
            ("gnutls_deinit", [vp], None),
            ("gnutls_priority_init", [ctypes.POINTER(vp), ctypes.c_char_p,
                                      ctypes.POINTER(ctypes.c_char_p)], c_int),
            ("gnutls_priority_set", [vp, vp], c_int),
            ("gnutls_credentials_set", [vp, c_int, vp], c_int),
            ("gnutls_certificate_allocate_credentials", [ctypes.POINTER(vp)], c_int),
            ("gnutls_certificate_free_credentials", [vp], None),
            ("gnutls_certificate_set_x509_trust_file", [vp, ctypes.c_char_p, c_int], c_int),
            ("gnutls_certificate_set_x509_key_file", [vp, ctypes.c_char_p, ctypes.c_char_p,
                                                      c_int], c_int),
            ("gnutls_certificate_server_set_request", [vp, c_int], None),
            ("gnutls_transport_set_int2", [vp, c_int, c_int], None),
            ("gnutls_handshake", [vp], c_int),
            ("gnutls_record_get_direction", [vp], c_int),
            ("gnutls_record_recv", [vp, vp, size_t], ctypes.c_ssize_t),
            ("gnutls_record_send", [vp, vp, size_t], ctypes.c_ssize_t),
            ("gnutls_record_check_pending", [vp], size_t),
            ("gnutls_certificate_verify_peers2", [vp, ctypes.POINTER(ctypes.c_uint)], c_int),
            ("gnutls_certificate_get_peers", [vp, ctypes.POINTER(ctypes.c_uint)],
             ctypes.POINTER(_Datum)),
            ("gnutls_error_is_fatal", [c_int], c_int),
            ("gnutls_strerror", [c_int], ctypes.c_char_p),
            ("gnutls_bye", [vp, c_int], c_int),
            ("gnutls_check_version", [ctypes.c_char_p], ctypes.c_char_p)):
        function = getattr(lib, name)
        function.argtypes, function.restype = args, res
    return lib


def available() -> bool:
    """Whether GnuTLS can be used (``PYVIRTD_TLS_LIBRARY=openssl`` in the environment: not)."""
    return unavailable() is None


def unavailable() -> str | None:
    """Why GnuTLS is not used, or None when it is."""
    import os

    if os.environ.get("PYVIRTD_TLS_LIBRARY", "").lower() == "openssl":
        return "libgnutls.so.30 is not used: PYVIRTD_TLS_LIBRARY=openssl is set"
    if _lib() is None:
        return "libgnutls.so.30 cannot be loaded"
    return None


def version() -> str:
    """GnuTLS's version, as it reports it."""
    return (_lib().gnutls_check_version(None) or b"?").decode()


def _why(code: int) -> str:
    return (_lib().gnutls_strerror(code) or b"").decode(errors="replace")


class Credentials:
    """The daemon's certificate, key and CA, loaded into GnuTLS once (the files were checked by
    :func:`pyvirt.daemon.tls.load_server_tls` already)."""

    def __init__(self, files: PKIFiles, verify: bool, priority: str | None = None) -> None:
        """``priority``: a GnuTLS priority string (libvirtd.conf's tls_priority) in place of
        :data:`PRIORITY`; one GnuTLS does not understand raises :class:`PriorityError`."""
        lib = _lib()
        self.verify = verify
        self.priority = _priority(priority.encode() if priority is not None else PRIORITY)
        #: Where a connection's records are decrypted into, shared: each is copied out at once,
        #: and all connections are served by one thread (the event loop's).
        self.buffer = ctypes.create_string_buffer(_READ_SIZE)
        self.handle = ctypes.c_void_p()
        if lib.gnutls_certificate_allocate_credentials(ctypes.byref(self.handle)) < 0:
            raise MemoryError("GnuTLS could not allocate credentials")
        loaded = lib.gnutls_certificate_set_x509_trust_file(self.handle, str(files.cacert).encode(),
                                                             _X509_FMT_PEM)
        if loaded < 0:
            raise OSError(f"GnuTLS cannot read the CA certificate {files.cacert}: {_why(loaded)}")
        try:
            cas = load_ca_list(files.cacert)
        except TLSError as exc:
            raise OSError(exc.message) from None
        #: Until when a chain verified now can be trusted, as far as the CA goes.
        self._ca_until = min(ca.not_valid_after_utc.timestamp() for ca in cas)
        #: Chains GnuTLS verified (the DER certificates the client presented, its own first),
        #: and until when (on :data:`_clock`) that holds.
        self._verified = VerifiedChains()
        #: Chains verified by GnuTLS so far (for tests and diagnostics).
        self.verifications = 0
        assert files.cert is not None and files.key is not None
        loaded = lib.gnutls_certificate_set_x509_key_file(
            self.handle, str(files.cert).encode(), str(files.key).encode(), _X509_FMT_PEM)
        if loaded < 0:
            raise OSError(f"GnuTLS cannot read the server certificate {files.cert} or its key "
                          f"{files.key}: {_why(loaded)}")

    def verify_chain(self, session: ctypes.c_void_p, chain: tuple[bytes, ...]) -> str | None:
        """Why the chain the client of ``session`` presented is not trusted, or None: GnuTLS's
        verification against the CA (``gnutls_certificate_verify_peers2``), or what it found
        for the same chain before, while every certificate in it and the CA are still valid."""
        if self._verified.known(chain, _clock()):
            return None
        status = ctypes.c_uint()
        checked = _lib().gnutls_certificate_verify_peers2(session, ctypes.byref(status))
        self.verifications += 1
        if checked < 0:
            return f"Unable to verify TLS peer: {_why(checked)}"
        if status.value:
            return f"Certificate failed validation: {_verify_status(status.value)}"
        until = _valid_until(chain, self._ca_until)
        if until is not None:
            self._verified.remember(chain, until)
        return None

    def session(self, fd: int) -> ctypes.c_void_p:
        """A server session reading and writing ``fd`` itself."""
        lib = _lib()
        session = ctypes.c_void_p()
        if lib.gnutls_init(ctypes.byref(session), _SERVER | _NONBLOCK | _NO_SIGNAL | _NO_TICKETS):
            raise MemoryError("GnuTLS could not make a session")
        lib.gnutls_priority_set(session, self.priority)
        lib.gnutls_credentials_set(session, _CRD_CERTIFICATE, self.handle)
        lib.gnutls_certificate_server_set_request(session,
                                                  _CERT_REQUIRE if self.verify else _CERT_IGNORE)
        lib.gnutls_transport_set_int2(session, fd, fd)
        return session


class PriorityError(ValueError):
    """A priority string GnuTLS does not understand: ``where`` is what is left of it from the
    first part it could not use."""

    def __init__(self, text: str, where: str, why: str) -> None:
        super().__init__(f"GnuTLS cannot use the priority string {text!r}: {why}, at {where!r}")
        self.where = where


def _priority(text: bytes) -> ctypes.c_void_p:
    """GnuTLS's compiled form of a priority string (kept for the process's lifetime: a daemon
    compiles one per start)."""
    cache = ctypes.c_void_p()
    error = ctypes.c_char_p()
    code = _lib().gnutls_priority_init(ctypes.byref(cache), text, ctypes.byref(error))
    if code < 0:
        where = (error.value if error.value is not None else text).decode(errors="replace")
        raise PriorityError(text.decode(errors="replace"), where, _why(code))
    return cache


#: The time of day, against which remembered chains expire.
_clock = time.time


def _valid_until(chain: tuple[bytes, ...], ca_until: float) -> float | None:
    """When the first of ``chain``'s certificates or the CA expires (None: one cannot be read)."""
    from cryptography import x509

    try:
        ends = [x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
                for der in chain]
    except ValueError:
        return None
    return min([ca_until, *ends]) if ends else None


def _verify_status(status: int) -> str:
    for bit, reason in _STATUS:
        if status & bit:
            return reason
    return f"certificate not trusted (GnuTLS status {status:#x})"


class GnuTLSConnection(Refusing, asyncio.Transport):
    """One accepted connection on the TLS port: its handshake and checks, then the transport of
    its client (a :class:`~pyvirt.daemon.client.ClientConnection`)."""

    def __init__(self, tls: ServerTLS, sock: socket.socket,
                 make_client: Callable[[], asyncio.Protocol],
                 lost: Callable[[], None] | None = None,
                 kick: Callable[[], None] = nothing) -> None:
        super().__init__()
        self.tls = tls
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.make_client = make_client
        self.lost = lost
        self.kick = kick
        #: The addresses, as the socket had them when accepted (asyncio's transports keep them
        #: too: a client gone by the time it is admitted has none any more).
        self._names: dict[str, object] = {}
        for name, call in (("peername", sock.getpeername), ("sockname", sock.getsockname)):
            try:
                self._names[name] = call()
            except OSError:
                pass
        self.peer = peer_label(self._names.get("peername")) or "tls (unknown)"
        assert tls.gnutls is not None
        self.session: ctypes.c_void_p | None = tls.gnutls.session(self.fd)
        self.state = "handshake"  # -> "open" | "linger" -> "closed"
        self.app: asyncio.Protocol | None = None
        self._buffer = tls.gnutls.buffer
        self._out: list[bytes] = []  # what waits for the socket, in order
        self._out_size = 0
        #: GnuTLS holds a record after EAGAIN: it is sent by calling again with nothing.
        self._held = False
        self._writing = False  # a writer callback is registered
        self._reading = False
        self._read_paused = False
        self._write_paused = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(HANDSHAKE_TIMEOUT,
                                                                       self._timeout)
        self._linger_end = 0.0
        self._set_reading(True)
        self._handshake()  # the ClientHello may be here already

    # ---- the socket's readiness ----

    def _set_reading(self, on: bool) -> None:
        if on and not self._reading and self.state != "closed":
            self.loop.add_reader(self.fd, self._readable)
            self._reading = True
        elif not on and self._reading:
            self.loop.remove_reader(self.fd)
            self._reading = False

    def _set_writing(self, on: bool) -> None:
        if on and not self._writing and self.state != "closed":
            self.loop.add_writer(self.fd, self._writable)
            self._writing = True
        elif not on and self._writing:
            self.loop.remove_writer(self.fd)
            self._writing = False

    def _readable(self) -> None:
        if self.state == "handshake":
            self._handshake()
        elif self.state == "open":
            self._receive()
        elif self.state == "linger":
            self._discard()

    def _writable(self) -> None:
        if self.state == "handshake":
            self._set_writing(False)
            self._handshake()
        elif self.state == "open":
            self._flush()
        else:
            self._set_writing(False)

    # ---- the handshake and the checks ----

    def _handshake(self) -> None:
        lib = _lib()
        for _ in range(_NONFATAL_MAX):
            done = lib.gnutls_handshake(self.session)
            if done == 0:
                break
            if done in (_E_AGAIN, _E_INTERRUPTED):
                if lib.gnutls_record_get_direction(self.session) == 1:
                    self._set_writing(True)
                self.kick()  # the client's next flight follows within microseconds
                return
            if done == _E_WARNING_ALERT_RECEIVED or not lib.gnutls_error_is_fatal(done):
                continue  # (a warning alert, say: the handshake goes on)
            if done in (_E_NO_CERTIFICATE_FOUND, _E_CERTIFICATE_REQUIRED):
                self._refuse("the client sent no certificate")
            elif done in (_E_PREMATURE_TERMINATION, _E_PUSH_ERROR, _E_PULL_ERROR):
                log.info("client %s: left during the TLS handshake", self.peer)
                self._close_now()
            else:
                self._refuse(f"TLS handshake failed: {_why(done)}")
            return
        else:
            self._refuse(f"TLS handshake failed: {_NONFATAL_MAX} non-fatal errors in a row "
                         f"(the last: {_why(done)})")
            return
        dn = "(not checked: tls_no_verify_certificate)"
        if self.tls.verify:
            assert self.tls.gnutls is not None and self.session is not None
            chain = self._peer_chain()
            refusal = self.tls.gnutls.verify_chain(self.session, chain)
            if refusal is not None:
                self._refuse(refusal)
                return
            try:
                dn = check_peer(chain[0] if chain else None, server_side=True,
                                allowed_dns=self.tls.allowed_dns,
                                revocations=self.tls.revocations)
            except PeerRefused as exc:
                self._refuse(f"Failed to verify peer's certificate: {exc.message}")
                return
        self._accepted(dn)
        self.write(CONFIRMATION)
        self.app = self.make_client()
        self.app.connection_made(self)
        if self.state == "open" and lib.gnutls_record_check_pending(self.session):
            self.loop.call_soon(self._receive)

    def _peer_chain(self) -> tuple[bytes, ...]:
        """The DER certificates the client presented, its own first."""
        count = ctypes.c_uint()
        chain = _lib().gnutls_certificate_get_peers(self.session, ctypes.byref(count))
        if not chain:
            return ()
        return tuple(ctypes.string_at(chain[i].data, chain[i].size) for i in range(count.value))

    def _refuse(self, reason: str) -> None:
        self._set_writing(False)
        super()._refuse(reason)

    def _drop(self) -> None:
        self._close_now()

    def _discard(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop()
        else:
            self._linger()

    # ---- the client's data ----

    def _receive(self) -> None:
        lib = _lib()
        nonfatal = 0
        while self.state == "open" and not self._read_paused:
            got = lib.gnutls_record_recv(self.session, self._buffer, _READ_SIZE)
            if got > 0:
                nonfatal = 0
                assert self.app is not None
                self.app.data_received(ctypes.string_at(self._buffer, got))
                continue
            if got in (_E_AGAIN, _E_INTERRUPTED):
                return
            if got == 0 or got in (_E_PREMATURE_TERMINATION, _E_PULL_ERROR):
                # The client's close_notify, or its end of the TCP connection
                if self.app is not None:
                    self.app.eof_received()
                self.close()
                return
            nonfatal += 1
            if not lib.gnutls_error_is_fatal(got) and nonfatal < _NONFATAL_MAX:
                continue  # (a warning alert, or a renegotiation asked for and not done)
            log.warning("client %s: TLS error, closing: %s", self.peer, _why(got))
            self.abort()
            return

    # ---- what is written to the client ----

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self.state != "open" or not data:
            return
        self._out.append(bytes(data))
        self._out_size += len(data)
        if not self._writing:
            self._flush()
        if self._out_size > _HIGH_WATER and not self._write_paused and self.app is not None:
            self._write_paused = True
            self.app.pause_writing()

    def _flush(self) -> None:
        lib = _lib()
        while self._out:
            chunk = self._out[0]
            if self._held:
                sent = lib.gnutls_record_send(self.session, None, 0)
            else:
                sent = lib.gnutls_record_send(self.session, chunk, min(len(chunk), _RECORD_MAX))
            if sent in (_E_AGAIN, _E_INTERRUPTED):
                self._held = True
                self._set_writing(True)
                return
            if sent < 0:
                log.warning("client %s: TLS error, closing: %s", self.peer, _why(sent))
                self.abort()
                return
            self._held = False
            if sent < len(chunk):
                self._out[0] = chunk[sent:]
            else:
                self._out.pop(0)
            self._out_size -= sent
        self._set_writing(False)
        if self._write_paused and self._out_size <= _LOW_WATER and self.app is not None:
            self._write_paused = False
            self.app.resume_writing()
        if self._closing:
            self._close_now(goodbye=True)

    # ---- asyncio.Transport ----

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "socket":
            return self.sock
        return self._names.get(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.app is not None
        return self.app

    def is_closing(self) -> bool:
        return self._closing or self.state != "open"

    def close(self) -> None:
        if self._closing or self.state == "closed":
            return
        self._closing = True
        self._set_reading(False)
        if not self._out:
            self._close_now(goodbye=True)

    def abort(self) -> None:
        self._closing = True
        self._close_now()

    def pause_reading(self) -> None:
        self._read_paused = True
        self._set_reading(False)

    def resume_reading(self) -> None:
        self._read_paused = False
        if self.state == "open" and not self._closing:
            self._set_reading(True)
            self.loop.call_soon(self._receive)  # (what GnuTLS already decrypted)

    def is_reading(self) -> bool:
        return not self._read_paused

    def get_write_buffer_size(self) -> int:
        return self._out_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return _LOW_WATER, _HIGH_WATER

    def can_write_eof(self) -> bool:
        return False

    # ---- the end ----

    def _close_now(self, goodbye: bool = False) -> None:
        if self.state == "closed":
            return
        was_open = self.state == "open"
        self.state = "closed"
        self._set_reading(False)
        self._set_writing(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lib = _lib()
        if goodbye and self.session is not None:
            lib.gnutls_bye(self.session, _SHUT_WR)  # close_notify, if the socket takes it
        if self.session is not None:
            lib.gnutls_deinit(self.session)
            self.session = None
        self.sock.close()
        self._out.clear()
        self._out_size = 0
        self.loop.call_soon(self._gone, was_open)

    def _gone(self, was_open: bool) -> None:
        if self.app is not None and was_open:
            self.app.connection_lost(None)
        elif self.app is None and self.lost is not None:
            self.lost()
        self.lost = None
        self.app = None
