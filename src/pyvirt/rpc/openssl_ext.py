# SPDX-License-Identifier: LGPL-2.1-or-later
"""What Python's ssl module offers no call for, made through ctypes on the very OpenSSL it runs
on (:mod:`pyvirt.rpc.tls` uses these for its contexts): sending one's certificate file only
(no chain rebuilt on every handshake), taking a client's X25519 key share, sending a server's
ServerHello as soon as it is written, and remembering the client certificate chains a server has
verified. Each first makes sure it reaches the right library and object, and otherwise changes
nothing: OpenSSL's default behaviour, slower but correct.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pyvirt.rpc.verified import VerifiedChains

if TYPE_CHECKING:
    import ssl

__all__ = ["no_auto_chain", "prefer_x25519", "early_server_hello", "ServerHelloSink",
           "remember_verified_chains"]


# OpenSSL's SSL_CTX_ctrl command and mode bit (ssl.h) for SSL_CTX_set_mode(SSL_MODE_NO_AUTO_CHAIN).
_SSL_CTRL_MODE = 33
_SSL_MODE_NO_AUTO_CHAIN = 0x8


@lru_cache(maxsize=1)
def _libssl() -> Any:
    """The libssl that Python's ssl module runs on, through ctypes; None unless that can be made
    sure of: CPython, its ``_ssl`` module linked to a shared libssl that is mapped into this
    process, which reports the version the ssl module reports."""
    import ctypes
    import ssl
    import sys

    if sys.implementation.name != "cpython":
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libssl.so" in line}
    except OSError:
        return None
    if len(paths) != 1:
        return None  # none (OpenSSL linked statically into _ssl), or two to choose from
    try:
        lib = ctypes.CDLL(paths.pop())  # already loaded: the same library, not a second copy
        version = lib.OpenSSL_version
    except (OSError, AttributeError):
        return None
    version.restype, version.argtypes = ctypes.c_char_p, [ctypes.c_int]
    if version(0) != ssl.OPENSSL_VERSION.encode():
        return None
    try:
        _declare(lib)
    except AttributeError:
        return None  # an OpenSSL without one of them (before 1.1.1)
    return lib


def _declare(lib: Any) -> None:
    """The signatures of the OpenSSL functions this module calls."""
    import ctypes

    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_ctrl.restype = ctypes.c_long
    lib.SSL_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    lib.SSL_CTX_set_client_hello_cb.restype = None
    lib.SSL_CTX_set_client_hello_cb.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.SSL_CTX_callback_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.SSL_callback_ctrl.restype = ctypes.c_long
    lib.SSL_callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    for name in ("SSL_get_rbio", "SSL_get_wbio", "BIO_next"):
        getattr(lib, name).restype = ctypes.c_void_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.BIO_method_type.restype = ctypes.c_int
    lib.BIO_method_type.argtypes = [ctypes.c_void_p]
    lib.BIO_ctrl.restype = ctypes.c_long
    lib.BIO_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_set_cert_verify_callback.restype = None
    lib.SSL_CTX_set_cert_verify_callback.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                                     ctypes.c_void_p]
    for name in ("X509_STORE_CTX_get0_untrusted", "X509_STORE_CTX_get0_chain",
                 "X509_get0_notAfter"):
        getattr(lib, name).restype = ctypes.c_void_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("X509_verify_cert", "X509_STORE_CTX_get_error", "OPENSSL_sk_num"):
        getattr(lib, name).restype = ctypes.c_int
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.OPENSSL_sk_value.restype = ctypes.c_void_p
    lib.OPENSSL_sk_value.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.i2d_X509.restype = ctypes.c_int
    lib.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.ASN1_TIME_diff.restype = ctypes.c_int
    lib.ASN1_TIME_diff.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                   ctypes.c_void_p, ctypes.c_void_p]
    lib.SSL_client_hello_get0_ext.restype = ctypes.c_int
    lib.SSL_client_hello_get0_ext.argtypes = [ctypes.c_void_p, ctypes.c_uint,
                                              ctypes.POINTER(ctypes.c_void_p),
                                              ctypes.POINTER(ctypes.c_size_t)]


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    """The SSL_CTX that ``ctx`` wraps (CPython's PySSLContext begins with that pointer), once
    confirmed: OpenSSL must report the options Python reports for it. None when that cannot be
    made sure of (see :func:`_libssl`)."""
    import ctypes

    lib = _libssl()
    if lib is None:
        return None
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        return None
    return int(ptr)


def no_auto_chain(ctx: ssl.SSLContext) -> bool:
    """Send the certificates of our certificate file only, as libvirt's GnuTLS does. OpenSSL
    otherwise completes the chain from the CA store on every handshake (one certificate
    verification each time) and sends the CA's certificate as well, which every client then
    parses and checks. Python's ssl module has no call for SSL_CTX_set_mode: this makes it
    through ctypes. False, with nothing changed, when that cannot be made sure of."""
    ptr = _ssl_ctx_pointer(ctx)
    if ptr is None:
        return False
    _libssl().SSL_CTX_ctrl(ptr, _SSL_CTRL_MODE, _SSL_MODE_NO_AUTO_CHAIN, None)
    return True


_TLSEXT_KEY_SHARE = 51
_GROUP_X25519 = 0x001D
_SSL_CTRL_SET_GROUPS_LIST = 92
_SSL_CLIENT_HELLO_SUCCESS = 1


def _x25519_not_first(key_shares: bytes) -> bool:
    """Whether a ClientHello's key_share extension (RFC 8446 4.2.8) has an X25519 share, after
    another one."""
    pos, end = 2, min(len(key_shares), 2 + int.from_bytes(key_shares[:2], "big"))
    while pos + 4 <= end:
        if int.from_bytes(key_shares[pos:pos + 2], "big") == _GROUP_X25519:
            return pos > 2  # not the first entry
        pos += 4 + int.from_bytes(key_shares[pos + 2:pos + 4], "big")
    return False


#: What the ClientHello callback does for a connection of a context (its argument): bits.
_X25519_FIRST = 1
_SERVER_HELLO_FIRST = 2
_client_hello_wants: weakref.WeakKeyDictionary[ssl.SSLContext, int] = weakref.WeakKeyDictionary()


def _on_client_hello(ssl_ptr: int, alert: object, arg: int | None) -> int:
    """OpenSSL's ClientHello callback (see :func:`prefer_x25519` and
    :func:`early_server_hello`). Never fails a handshake."""
    import ctypes

    try:
        lib = _libssl()
        wants = arg or 0
        if wants & _SERVER_HELLO_FIRST:  # this connection's own message callback, from here on
            lib.SSL_callback_ctrl(ssl_ptr, _SSL_CTRL_SET_MSG_CALLBACK, _message_callback())
        if wants & _X25519_FIRST:
            data, size = ctypes.c_void_p(), ctypes.c_size_t()
            if (lib.SSL_client_hello_get0_ext(ssl_ptr, _TLSEXT_KEY_SHARE, ctypes.byref(data),
                                              ctypes.byref(size)) == 1 and data.value
                    and _x25519_not_first(ctypes.string_at(data.value, size.value))):
                lib.SSL_ctrl(ssl_ptr, _SSL_CTRL_SET_GROUPS_LIST, 0, b"X25519")
    except Exception:  # noqa: BLE001 - an exception here must not reach OpenSSL
        pass
    return _SSL_CLIENT_HELLO_SUCCESS


def _on_client_hello_also(ctx: ssl.SSLContext, what: int) -> bool:
    """Have the ClientHello callback of ``ctx`` do ``what`` too; False when it cannot be set."""
    ptr = _ssl_ctx_pointer(ctx)
    if ptr is None:
        return False
    wants = _client_hello_wants.get(ctx, 0) | what
    _client_hello_wants[ctx] = wants
    _libssl().SSL_CTX_set_client_hello_cb(ptr, _client_hello_callback(), wants)
    return True


@lru_cache(maxsize=1)
def _client_hello_callback() -> Any:
    """The C function pointer of :func:`_on_client_hello` (kept alive by the cache)."""
    import ctypes

    prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                 ctypes.c_void_p)
    return prototype(_on_client_hello)


def prefer_x25519(ctx: ssl.SSLContext) -> bool:
    """Take a client's X25519 key share when it offers one, even after another (GnuTLS, hence
    virsh and libvirt-python, sends a P-256 share first, then an X25519 one). OpenSSL 3.0 takes
    the client's first share it supports, and its P-256 exchange costs the server a good third
    of its first flight (a new group object and a full check of the client's point each time),
    the client more. Only a connection whose client has sent an X25519 share is changed (it
    then has X25519 only), so no client is ever asked to retry with another group. This goes
    through ctypes (OpenSSL's ClientHello callback); False, with nothing changed, when that
    cannot be made sure of."""
    return _on_client_hello_also(ctx, _X25519_FIRST)


# ---- the ServerHello first ----

_SSL_CTRL_SET_MSG_CALLBACK = 15
_SSL3_RT_HANDSHAKE = 22
_SERVER_HELLO = 2  # (a HelloRetryRequest is one too)
_BIO_TYPE_BUFFER = 9 | 0x0200
_BIO_CTRL_FLUSH = 11
#: The OpenSSL versions (major, minor) whose SSL begins with its read, write and buffering BIOs.
_BBIO_LAYOUT = ((1, 1), (3, 0), (3, 1))


class _Sink(threading.local):
    """Where :func:`early_server_hello` sends a ServerHello, per thread: a server sets
    :attr:`send` to a function that moves what the connection's outgoing memory BIO holds onto
    its socket, for the time of each of its ``do_handshake()`` steps."""

    send: Callable[[], None] | None = None


ServerHelloSink = _Sink()


def _write_buffer(lib: Any, ssl_ptr: int) -> int | None:
    """The buffering BIO that OpenSSL 1.1.1 to 3.1 put in front of an SSL's write BIO while it
    writes a handshake flight (the callback that asks is set only on those versions:
    :data:`_BBIO_LAYOUT`); None unless the SSL's first fields (read BIO, write BIO, buffering
    BIO) agree with what OpenSSL's calls report: only then is a BIO function called on it."""
    import ctypes

    fields = (ctypes.c_void_p * 5).from_address(ssl_ptr)  # version, method, rbio, wbio, bbio
    bbio = fields[4]
    if (not bbio or fields[2] != lib.SSL_get_rbio(ssl_ptr) or fields[3] != bbio
            or lib.BIO_next(bbio) != lib.SSL_get_wbio(ssl_ptr)
            or lib.BIO_method_type(bbio) != _BIO_TYPE_BUFFER):
        return None
    return int(bbio)


def _on_message(write_p: int, version: int, content_type: int, buf: int, size: int,
                ssl_ptr: int, arg: object) -> None:
    """OpenSSL's message callback (see :func:`early_server_hello`): once the first handshake
    message the server writes is in the buffer, push it out and let go of this connection."""
    import ctypes

    if not write_p or content_type != _SSL3_RT_HANDSHAKE:
        return
    try:
        lib = _libssl()
        lib.SSL_callback_ctrl(ssl_ptr, _SSL_CTRL_SET_MSG_CALLBACK, None)  # this SSL's last call
        send = ServerHelloSink.send
        if send is None or not size or ctypes.string_at(buf, 1)[0] != _SERVER_HELLO:
            return
        bbio = _write_buffer(lib, ssl_ptr)
        if bbio is not None and lib.BIO_ctrl(bbio, _BIO_CTRL_FLUSH, 0, None) == 1:
            send()
    except Exception:  # noqa: BLE001 - an exception here must not reach OpenSSL
        pass


@lru_cache(maxsize=1)
def _message_callback() -> Any:
    """The C function pointer of :func:`_on_message` (kept alive by the cache)."""
    import ctypes

    prototype = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                 ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)
    return prototype(_on_message)


def early_server_hello(ctx: ssl.SSLContext) -> bool:
    """Send a server's ServerHello on its own, as soon as it is written, as GnuTLS (hence
    libvirtd) does; OpenSSL holds a server's whole first flight (ServerHello, encrypted
    extensions, certificate request, certificate, its signature, Finished) until the last
    message is written. The client can then work out the key exchange while the server is still
    signing: 35 to 60 µs less per connection for python3-libvirt on this project's machine.
    The bytes go out through :attr:`ServerHelloSink.send` (nothing is sent while it is None).
    Each connection of ``ctx`` gets a message callback from its ClientHello on (set by the
    ClientHello callback), called twice, until its ServerHello. This goes through ctypes
    (OpenSSL's ClientHello and message callbacks, and the buffering BIO of OpenSSL 1.1.1 to 3.1,
    checked against OpenSSL's own calls on every connection); False, with nothing changed, when
    that cannot be made sure of."""
    import ssl

    if ssl.OPENSSL_VERSION_INFO[:2] not in _BBIO_LAYOUT:
        return False  # from 3.2 on, an SSL is laid out otherwise
    return _on_client_hello_also(ctx, _SERVER_HELLO_FIRST)


# ---- verified client chains, remembered ----

#: How long a verified chain is taken as verified again without OpenSSL (seconds, at most: never
#: past the first end of validity in the chain).
VERIFIED_FOR = 300.0
#: Per live context (its SSL_CTX's address, the callback's argument): DER of the chain a
#: client sent -> monotonic deadline.
_verified: dict[int, VerifiedChains] = {}


def _certs(lib: Any, stack: int | None) -> list[int]:
    """The certificates of an OpenSSL STACK_OF(X509); none when it is missing or holds a NULL."""
    count = lib.OPENSSL_sk_num(stack) if stack else 0
    certs = [lib.OPENSSL_sk_value(stack, index) for index in range(max(0, count))]
    return certs if all(certs) else []


def _chain_der(lib: Any, store_ctx: int) -> bytes | None:
    """The certificates a client sent (its own first), DER-encoded with their lengths, as the
    key of what was verified; None when they cannot be had."""
    import ctypes

    certs = _certs(lib, lib.X509_STORE_CTX_get0_untrusted(store_ctx))
    if not certs:
        return None
    parts = []
    for cert in certs:
        size = lib.i2d_X509(cert, None)
        if size <= 0:
            return None
        buf = ctypes.create_string_buffer(size)
        out = ctypes.c_void_p(ctypes.addressof(buf))
        if lib.i2d_X509(cert, ctypes.byref(out)) != size:
            return None
        parts.append(size.to_bytes(4, "big") + buf.raw)
    return b"".join(parts)


def _seconds_valid(lib: Any, store_ctx: int) -> float:
    """Seconds until the first certificate of the verified chain (the client's, up to the CA)
    expires; 0 when that cannot be had."""
    import ctypes

    certs = _certs(lib, lib.X509_STORE_CTX_get0_chain(store_ctx))
    if not certs:
        return 0.0
    least = None
    days, secs = ctypes.c_int(), ctypes.c_int()
    for cert in certs:
        end = lib.X509_get0_notAfter(cert)
        if not end or lib.ASN1_TIME_diff(ctypes.byref(days), ctypes.byref(secs), None, end) != 1:
            return 0.0
        left = days.value * 86400.0 + secs.value
        least = left if least is None else min(least, left)
    return max(0.0, least or 0.0)


def _on_verify(store_ctx: int, arg: int) -> int:
    """OpenSSL's certificate verification callback (see :func:`remember_verified_chains`)."""
    import time

    lib = _libssl()
    known = _verified.get(arg or 0)
    try:
        key = _chain_der(lib, store_ctx) if known is not None else None
    except Exception:  # noqa: BLE001 - an exception here must not reach OpenSSL
        key = None
    if key is not None and known is not None and known.known(key, time.monotonic()):
        return 1
    result = int(lib.X509_verify_cert(store_ctx))
    if result == 1 and key is not None and known is not None:
        try:
            if lib.X509_STORE_CTX_get_error(store_ctx) == 0:
                valid = min(VERIFIED_FOR, _seconds_valid(lib, store_ctx))
                if valid > 0:
                    known.remember(key, time.monotonic() + valid)
        except Exception:  # noqa: BLE001
            pass
    return result


@lru_cache(maxsize=1)
def _verify_callback() -> Any:
    """The C function pointer of :func:`_on_verify` (kept alive by the cache)."""
    import ctypes

    prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    return prototype(_on_verify)


def remember_verified_chains(ctx: ssl.SSLContext) -> bool:
    """Verify a client's certificate chain once, not on every connection: a chain that OpenSSL
    has verified against ``ctx``'s CA is taken as verified when the same certificates (byte for
    byte) come again, for :data:`VERIFIED_FOR` seconds at most and never past the end of
    validity of any certificate in it. A client that reconnects (libvirt clients open a
    connection per command) then costs the server a chain verification less per handshake:
    about 40 of the 330 µs OpenSSL 3.0 takes here over a client's certificate flight (hot,
    this callback's cost deducted). The outcome is the same for every chain: the CA store of a
    context does not change once it serves (pyvirtd reads its files at start-up, as libvirtd),
    and a verification depends only on the certificates, the store and the time. Not for a context
    that checks CRLs during verification (a CRL may change); pyvirt's server checks its CRL
    after the handshake (:class:`pyvirt.rpc.tls.Revocations`). This goes through ctypes
    (OpenSSL's SSL_CTX_set_cert_verify_callback); False, with nothing changed, when that cannot
    be made sure of."""
    import ssl

    if ctx.verify_flags & (ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN):
        return False
    ptr = _ssl_ctx_pointer(ctx)
    if ptr is None:
        return False
    _verified[ptr] = VerifiedChains()
    weakref.finalize(ctx, _verified.pop, ptr, None)  # before the SSL_CTX's address is reused
    _libssl().SSL_CTX_set_cert_verify_callback(ptr, _verify_callback(), ptr)
    return True
