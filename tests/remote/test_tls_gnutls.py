# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's TLS connections on GnuTLS (pyvirt.daemon.tls_gnutls) on their own, over real
loopback TCP connections, with an OpenSSL client (Python's ssl) on a thread: the handshake and
its checks, the confirmation byte, then the connection as its client's transport -- flow control
towards a client that does not read, what is still buffered at close, and the ways a connection
ends before it becomes a client. The daemon-level behaviour (virsh, libvirt-python, pyvirt's
client, refusals as libvirtd's) is in test_tls.py."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from pyvirt.daemon import tls_gnutls
from pyvirt.daemon.tls import ServerTLS
from pyvirt.rpc import tls

from . import tlspki
from .test_tls_local import _tcp_pair as tcp_pair

pytestmark = pytest.mark.skipif(not tls_gnutls.available(), reason="GnuTLS is not installed")


def _served(pki: tlspki.PKI, *, verify: bool = True, priority: str | None = None) -> ServerTLS:
    files = tls.PKIFiles.in_tree(pki.server_tree() / "etc" / "pki", server=True)
    context, revocations = tls.server_context(files, verify_clients=verify)
    return ServerTLS(context, files, verify, ("C=GB,O=pyvirt tests,CN=*",), revocations,
                     tls_gnutls.Credentials(files, verify, priority))


def _client_context(pki: tlspki.PKI, who: str = "good") -> ssl.SSLContext:
    return tls.client_context(tls.PKIFiles.flat(pki.pkipath(who), server=False))


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(the server's accepted socket, non-blocking; the client's socket)."""
    server, client = tcp_pair()
    server.setblocking(False)
    client.settimeout(20)
    return server, client


class App(asyncio.Protocol):
    """The client connection pyvirtd would make: records what happens to it."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.data = b""
        self.events: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


async def _until(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_client_data_both_ways_with_flow_control(pki: tlspki.PKI) -> None:
    """After the handshake and the confirmation byte the client's data reaches its connection;
    what the connection writes faster than the client reads pauses it past the high-water mark,
    and resumes it once drained, every byte in order; its close sends the rest, then TLS
    close_notify."""
    served = _served(pki)
    ours, theirs = _tcp_pair()
    # (small socket buffers, so that the kernel's cannot take it all)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    app = App()
    lost: list[bool] = []
    big = bytes(range(256)) * 8192  # 2 MiB

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        tlsconn = _client_context(pki).wrap_socket(theirs, server_hostname="127.0.0.1",
                                                   do_handshake_on_connect=False)
        handshake = loop.run_in_executor(None, tlsconn.do_handshake)
        conn = tls_gnutls.GnuTLSConnection(served, ours, lambda: app,
                                           lost=lambda: lost.append(True))
        await handshake
        assert await loop.run_in_executor(None, tlsconn.recv, 1) == tls.CONFIRMATION
        await loop.run_in_executor(None, tlsconn.sendall, b"hello" * 10000)
        await _until(lambda: len(app.data) == 50000)
        app.transport.write(big)  # the client is not reading: most of it waits
        await _until(lambda: "pause" in app.events)
        assert conn.get_write_buffer_size() > 0 and not conn.is_closing()
        app.transport.close()  # with most of it still buffered
        assert conn.is_closing()

        def read_all() -> bytes:
            got = b""
            while True:
                chunk = tlsconn.recv(65536)
                if not chunk:
                    return got  # close_notify
                got += chunk
        received = await loop.run_in_executor(None, read_all)
        await _until(lambda: "lost" in app.events)
        return received

    try:
        received = asyncio.run(run())
    finally:
        theirs.close()
    assert app.data == b"hello" * 10000
    assert received == big
    assert app.events[0] == "made" and app.events.count("pause") == 1
    assert app.events.index("pause") < app.events.index("resume") < app.events.index("lost")
    assert lost == []  # (it became a client: its connection reports the end)


def test_client_closing_first(pki: tlspki.PKI) -> None:
    """The client's close_notify, then its end of the connection: the connection gets its EOF,
    is closed, and learns of it once."""
    served = _served(pki)
    ours, theirs = _tcp_pair()
    app = App()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        tlsconn = _client_context(pki).wrap_socket(theirs, server_hostname="127.0.0.1",
                                                   do_handshake_on_connect=False)
        handshake = loop.run_in_executor(None, tlsconn.do_handshake)
        tls_gnutls.GnuTLSConnection(served, ours, lambda: app)
        await handshake
        assert await loop.run_in_executor(None, tlsconn.recv, 1) == tls.CONFIRMATION
        await loop.run_in_executor(None, tlsconn.unwrap)
        await _until(lambda: "lost" in app.events)

    try:
        asyncio.run(run())
    finally:
        theirs.close()
    assert app.events == ["made", "eof", "lost"]


@pytest.mark.parametrize("who,reason", [
    ("otherca", "certificate issuer unknown (not signed by the CA)"),
    ("expired", "certificate has expired"),
    ("otherdn", "not on the list of allowed clients"),
])
def test_refused_client(pki: tlspki.PKI, caplog: pytest.LogCaptureFixture, who: str,
                        reason: str) -> None:
    """A client whose certificate fails is refused once its handshake is complete, as libvirtd
    refuses it: logged with its address and the reason, dropped without the confirmation byte,
    and its slot released once."""
    served = _served(pki)
    ours, theirs = _tcp_pair()
    lost: list[bool] = []
    made: list[bool] = []
    port = theirs.getsockname()[1]

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        tlsconn = _client_context(pki, who).wrap_socket(theirs, server_hostname="127.0.0.1",
                                                        do_handshake_on_connect=False)
        handshake = loop.run_in_executor(None, tlsconn.do_handshake)
        with caplog.at_level(logging.WARNING, logger="pyvirt.daemon"):
            tls_gnutls.GnuTLSConnection(served, ours, lambda: made.append(True) or App(),
                                        lost=lambda: lost.append(True))
            await handshake
            try:
                got = await loop.run_in_executor(None, tlsconn.recv, 1)
            except (ssl.SSLError, OSError):
                got = b""
            await _until(lambda: bool(lost))
        return got

    try:
        assert asyncio.run(run()) == b""
    finally:
        theirs.close()
    assert lost == [True] and not made
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, refused
    assert refused[0].startswith(f"client tls 127.0.0.1:{port}: refused: ") and reason in refused[0]


def test_not_tls_and_leaving_in_the_handshake(pki: tlspki.PKI,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """Something else than TLS is refused (and dropped once the sender is quiet); a client that
    leaves in the middle of its handshake is logged as such. Either way the slot is released
    once, and the session and socket are gone."""
    served = _served(pki)
    garbage, garbage_client = _tcp_pair()
    halfway, halfway_client = _tcp_pair()
    lost: list[str] = []

    async def run() -> None:
        garbage_client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        cli = _client_context(pki).wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            cli.do_handshake()
        halfway_client.sendall(c_out.read())  # its ClientHello, then it is gone
        with caplog.at_level(logging.INFO, logger="pyvirt.daemon"):
            first = tls_gnutls.GnuTLSConnection(served, garbage, App,
                                                lost=lambda: lost.append("garbage"))
            second = tls_gnutls.GnuTLSConnection(served, halfway, App,
                                                 lost=lambda: lost.append("halfway"))
            await _until(lambda: second.state == "handshake" and halfway_client.recv(
                65536, socket.MSG_PEEK))  # the server's flight came
            halfway_client.close()
            await _until(lambda: len(lost) == 2)
        for conn in (first, second):
            assert conn.state == "closed" and conn.session is None and conn.sock.fileno() == -1

    try:
        asyncio.run(run())
    finally:
        garbage_client.close()
    assert sorted(lost) == ["garbage", "halfway"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("refused: TLS handshake failed" in m for m in messages), messages
    assert any("left during the TLS handshake" in m for m in messages), messages


def test_client_gone_before_it_is_admitted(pki: tlspki.PKI) -> None:
    """A client that completes its handshake and leaves at once is still known by its address when
    its connection is made (the daemon's admission needs it), and the connection then ends
    cleanly: its end of file, then its loss, once."""
    served = _served(pki)
    ours, theirs = _tcp_pair()
    names: list[object] = []

    class Admitting(App):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            names.append(transport.get_extra_info("peername"))
            super().connection_made(transport)

    app = Admitting()
    port = theirs.getsockname()[1]

    async def run() -> None:
        loop = asyncio.get_running_loop()
        c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        cli = _client_context(pki).wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            cli.do_handshake()
        theirs.sendall(c_out.read())
        conn = tls_gnutls.GnuTLSConnection(served, ours, lambda: app)
        while True:
            c_in.write(await loop.run_in_executor(None, theirs.recv, 65536))
            try:
                cli.do_handshake()
                break
            except ssl.SSLWantReadError:
                continue
        # its last flight, and gone, before the loop runs again
        theirs.sendall(c_out.read())
        theirs.close()
        await _until(lambda: conn.state == "closed" and "lost" in app.events)

    asyncio.run(run())
    assert names == [("127.0.0.1", port)]
    assert app.events == ["made", "eof", "lost"]


def _negotiated(pki: tlspki.PKI, priority: str | None, *, least: ssl.TLSVersion | None = None,
                ) -> tuple[str | None, str | None]:
    """(the TLS version and cipher a client got from a server with ``priority``, or None and
    None; the server's refusal, or None). ``least``: the oldest version the client accepts."""
    served = _served(pki, priority=priority)
    ours, theirs = _tcp_pair()
    context = _client_context(pki)
    if least is not None:
        context.minimum_version = least
    lost: list[bool] = []

    async def run() -> tuple[str | None, str | None]:
        loop = asyncio.get_running_loop()
        tlsconn = context.wrap_socket(theirs, server_hostname="127.0.0.1",
                                      do_handshake_on_connect=False)
        handshake = loop.run_in_executor(None, tlsconn.do_handshake)
        conn = tls_gnutls.GnuTLSConnection(served, ours, App, lost=lambda: lost.append(True))
        try:
            await handshake
        except ssl.SSLError:
            await _until(lambda: conn.state == "closed")
            return None, None
        assert await loop.run_in_executor(None, tlsconn.recv, 1) == tls.CONFIRMATION
        cipher = tlsconn.cipher()
        conn.close()
        return tlsconn.version(), cipher[0] if cipher else None

    try:
        return asyncio.run(run())
    finally:
        theirs.close()


def test_priority_string_replaces_pyvirtds(pki: tlspki.PKI, caplog: pytest.LogCaptureFixture) -> None:
    """libvirtd.conf's tls_priority is GnuTLS's priority string for every connection, in place of
    pyvirtd's own (NORMAL, X25519 first): what it leaves out, a client cannot get."""
    assert _negotiated(pki, None)[0] == "TLSv1.3"
    assert _negotiated(pki, "NORMAL")[0] == "TLSv1.3"
    only12 = "NORMAL:-VERS-ALL:+VERS-TLS1.2"
    assert _negotiated(pki, only12)[0] == "TLSv1.2"
    version, cipher = _negotiated(pki, only12 + ":-CIPHER-ALL:+CHACHA20-POLY1305")
    assert version == "TLSv1.2" and cipher is not None and "CHACHA20" in cipher
    with caplog.at_level(logging.INFO, logger="pyvirt.daemon"):
        assert _negotiated(pki, only12, least=ssl.TLSVersion.TLSv1_3) == (None, None)
    assert any("refused: TLS handshake failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("text,where", [("NORMAL:+NO-SUCH-THING", "+NO-SUCH-THING"),
                                        ("BOGUS", "BOGUS"), ("NORMAL:-VERS-ALL:+VERS-TLS9.9",
                                                             "+VERS-TLS9.9")])
def test_priority_string_gnutls_cannot_use(pki: tlspki.PKI, text: str, where: str) -> None:
    files = tls.PKIFiles.in_tree(pki.server_tree() / "etc" / "pki", server=True)
    with pytest.raises(tls_gnutls.PriorityError) as info:
        tls_gnutls.Credentials(files, True, text)
    assert info.value.where == where
    assert str(info.value).startswith(f"GnuTLS cannot use the priority string {text!r}: ")


def _connects(pki: tlspki.PKI, served: ServerTLS, who: str = "good") -> bool:
    """Whether client ``who`` gets the confirmation byte from ``served``."""
    ours, theirs = _tcp_pair()

    async def run() -> bool:
        loop = asyncio.get_running_loop()
        tlsconn = _client_context(pki, who).wrap_socket(theirs, server_hostname="127.0.0.1",
                                                        do_handshake_on_connect=False)
        handshake = loop.run_in_executor(None, tlsconn.do_handshake)
        conn = tls_gnutls.GnuTLSConnection(served, ours, App)
        try:
            await handshake
            got = await loop.run_in_executor(None, tlsconn.recv, 1)
        except (ssl.SSLError, OSError):
            got = b""
        conn.close()
        await _until(lambda: conn.state == "closed")
        return got == tls.CONFIRMATION

    try:
        return asyncio.run(run())
    finally:
        theirs.close()


def test_verified_chain_remembered_until_it_or_the_ca_expires(
        pki: tlspki.PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """GnuTLS verifies a client's chain once; the same chain is trusted again without it until
    its certificate (or the CA, whichever first) expires. Chains that fail are verified every
    time, and libvirt's own checks (DN list, dates, CRL) run on every connection."""
    from cryptography import x509

    served = _served(pki)
    creds = served.gnutls
    assert creds is not None
    assert _connects(pki, served) and _connects(pki, served)
    assert creds.verifications == 1
    for _ in range(2):  # refused by the chain: verified each time
        assert not _connects(pki, served, "otherca")
    assert creds.verifications == 3
    for _ in range(2):  # a trusted chain, refused by the DN list each time after it
        assert not _connects(pki, served, "otherdn")
    assert creds.verifications == 4

    def end(path: Path) -> float:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()

    ca_end = end(pki.pkipath("good") / "cacert.pem")
    # The CA expires first (made first, for the same 30 days), then the client's own certificate
    assert ca_end <= end(pki.pkipath("good") / "clientcert.pem")
    monkeypatch.setattr(tls_gnutls, "_clock", lambda: ca_end - 1)
    assert _connects(pki, served) and creds.verifications == 4
    monkeypatch.setattr(tls_gnutls, "_clock", lambda: ca_end)
    assert _connects(pki, served) and creds.verifications == 5  # (really valid: the real clock)
    # ... or the client's own first.
    own_end = end(pki.pkipath("short") / "clientcert.pem")
    assert own_end < ca_end
    assert _connects(pki, served, "short") and creds.verifications == 6
    monkeypatch.setattr(tls_gnutls, "_clock", lambda: own_end - 1)
    assert _connects(pki, served, "short") and creds.verifications == 6
    monkeypatch.setattr(tls_gnutls, "_clock", lambda: own_end)
    assert _connects(pki, served, "short") and creds.verifications == 7
