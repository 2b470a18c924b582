# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's TLS contexts and CRL checks on their own, over memory BIOs: what each side sends, the
CRL rules pyvirtd applies after the handshake compared with OpenSSL's own CRL check, the server's
ServerHello sent ahead of its flight, and the client chains a server remembers as verified."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pyvirt.rpc import openssl_ext, tls

from . import tlspki

_DAY = datetime.timedelta(days=1)


def _server_files(pki: tlspki.PKI) -> tls.PKIFiles:
    return tls.PKIFiles.in_tree(pki.server_tree() / "etc" / "pki", server=True)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[bytes, bytes, str | None]:
    """A handshake over memory BIOs: what the server sent, what the client sent, and the
    server's verification failure (OpenSSL's words), if any."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    sent_by_server, sent_by_client = b"", b""
    for _ in range(8):
        try:
            cli.do_handshake()
        except ssl.SSLWantReadError:
            pass
        data = c_out.read()
        sent_by_client += data
        s_in.write(data)
        try:
            srv.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLCertVerificationError as exc:
            return sent_by_server, sent_by_client, exc.verify_message
        data = s_out.read()
        sent_by_server += data
        c_in.write(data)
        if done:
            return sent_by_server, sent_by_client, None
    raise AssertionError("handshake did not finish")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_each_side_sends_its_certificate_file_only(pki: tlspki.PKI) -> None:
    """As libvirt's GnuTLS does: not the CA's certificate too (OpenSSL, left alone, builds that
    chain again on every handshake and sends it)."""
    server, _ = tls.server_context(_server_files(pki))
    client = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    client.maximum_version = ssl.TLSVersion.TLSv1_2  # so that certificates cross in the clear
    from_server, from_client, refused = _handshake(server, client)
    assert refused is None
    assert _der(pki.server.cert) in from_server and _der(pki.ca.cert) not in from_server
    assert _der(pki.clients["good"].cert) in from_client and _der(pki.ca.cert) not in from_client


def _openssl_verdict(pki: tlspki.PKI, crl_file: Path, client: str) -> str | None:
    """OpenSSL's own leaf CRL check of ``client``'s certificate (the way pyvirtd used to have
    it done): its failure, in its words."""
    files = _server_files(pki)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.num_tickets = 0
    server.load_verify_locations(cafile=str(files.cacert))
    server.load_verify_locations(cafile=str(crl_file))
    server.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    server.load_cert_chain(str(files.cert), str(files.key))
    server.verify_mode = ssl.CERT_REQUIRED
    client_ctx = tls.client_context(tls.PKIFiles.flat(pki.pkipath(client), server=False))
    return _handshake(server, client_ctx)[2]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _cases(pki: tlspki.PKI) -> dict[str, bytes]:
    ca, other = pki.ca, tlspki.make_ca("another CA")
    revoked = [pki.clients["revoked"].cert]
    now = _now()
    yesterday, tomorrow = now - _DAY, now + _DAY  # a current CRL (make_crl's default: 30 days)
    return {
        "current": tlspki.make_crl(ca, revoked, last=yesterday, next_=tomorrow),
        "expired": tlspki.make_crl(ca, revoked, last=now - 3 * _DAY, next_=now - _DAY),
        "future": tlspki.make_crl(ca, revoked, last=now + _DAY, next_=now + 3 * _DAY),
        # the CA's name, another key
        "forged": tlspki.make_crl(other, [], issuer=ca.cert.subject, last=yesterday,
                                  next_=tomorrow),
        # another CA's own CRL
        "stranger": tlspki.make_crl(other, [], last=yesterday, next_=tomorrow),
        # two of the CA's: the newer one, which revokes nobody, is the one that counts
        "newest wins": (tlspki.make_crl(ca, revoked, last=now - 2 * _DAY, next_=tomorrow)
                        + tlspki.make_crl(ca, [], last=yesterday, next_=tomorrow)),
    }


@pytest.mark.parametrize("case", ["current", "expired", "future", "forged", "stranger",
                                  "newest wins"])
@pytest.mark.parametrize("client", ["good", "revoked"])
def test_crl_verdicts_are_openssls(pki: tlspki.PKI, tmp_path: Path, case: str,
                                   client: str) -> None:
    """pyvirtd reads the CRL once and checks client certificates against it after the
    handshake: the same verdict, in the same words, as OpenSSL's check during it."""
    crl_file = tmp_path / "cacrl.pem"
    crl_file.write_bytes(_cases(pki)[case])
    files = _server_files(pki)
    revocations = tls.Revocations.load(crl_file, [pki.ca.cert])
    ours = revocations.check(pki.clients[client].cert)
    assert ours == _openssl_verdict(pki, crl_file, client)
    # and through check_peer, as pyvirtd's TLS acceptor calls it
    der = _der(pki.clients[client].cert)
    if ours is None:
        assert tls.check_peer(der, server_side=True, revocations=revocations)
    else:
        with pytest.raises(tls.PeerRefused) as info:
            tls.check_peer(der, server_side=True, revocations=revocations)
        assert info.value.message == f"{ours} (CRL {crl_file})"
    assert files.cacrl is not None and files.cacrl != crl_file  # the PKI's own file untouched


def test_crl_expected_verdicts(pki: tlspki.PKI, tmp_path: Path) -> None:
    """What the comparison above agrees on (so that it cannot pass by both sides failing)."""
    verdicts = {}
    for case, data in _cases(pki).items():
        path = tmp_path / f"{case}.pem"
        path.write_bytes(data)
        revocations = tls.Revocations.load(path, [pki.ca.cert])
        verdicts[case] = tuple(revocations.check(pki.clients[c].cert) for c in ("good", "revoked"))
    assert verdicts == {
        "current": (None, "certificate revoked"),
        "expired": ("CRL has expired", "CRL has expired"),
        "future": ("CRL is not yet valid", "CRL is not yet valid"),
        "forged": ("CRL signature failure", "CRL signature failure"),
        "stranger": ("unable to get certificate CRL", "unable to get certificate CRL"),
        "newest wins": (None, None),
    }


def test_unreadable_crl_refused_at_load(pki: tlspki.PKI, tmp_path: Path) -> None:
    files = _server_files(pki)
    for content, words in ((b"not a CRL\n", "no PEM 'X509 CRL' in it"),
                           (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "")):
        bad = tmp_path / "cacrl.pem"
        bad.write_bytes(content)
        with pytest.raises(tls.TLSError) as info:
            tls.server_context(tls.PKIFiles(files.cacert, bad, files.cert, files.key))
        assert info.value.message.startswith(
            f"Unable to set x509 certificate revocation list: {bad}: " + words)
    # no CRL file at all: nothing to check against (as before: no CRL check)
    ctx, revocations = tls.server_context(
        tls.PKIFiles(files.cacert, tmp_path / "absent.pem", files.cert, files.key))
    assert revocations is None


# ---- the key exchange group ----

_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def _chosen_group(flight: bytes) -> tuple[int, bool]:
    """The group of the server's key share in its ServerHello (the first record of ``flight``,
    in the clear), and whether that ServerHello is a HelloRetryRequest."""
    assert flight[0] == 22 and flight[5] == 2, flight[:6]  # handshake record, ServerHello
    hello = flight[9:5 + int.from_bytes(flight[3:5], "big")]
    random = hello[2:34]
    pos = 35 + hello[34] + 3  # session id, then cipher suite and compression method
    end = pos + 2 + int.from_bytes(hello[pos:pos + 2], "big")
    pos += 2
    while pos < end:
        kind, size = int.from_bytes(hello[pos:pos + 2], "big"), int.from_bytes(hello[pos + 2:pos + 4], "big")
        if kind == 51:  # key_share
            return int.from_bytes(hello[pos + 4:pos + 6], "big"), random == _HRR_RANDOM
        pos += 4 + size
    raise AssertionError("no key_share in the ServerHello")


def _server_flight(pki: tlspki.PKI, client_hello: bytes) -> bytes:
    server, _ = tls.server_context(_server_files(pki))
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = server.wrap_bio(s_in, s_out, server_side=True)
    s_in.write(client_hello)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return s_out.read()


def _openssl_client_hello(pki: tlspki.PKI, curve: str | None) -> bytes:
    client = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    if curve is not None:
        client.set_ecdh_curve(curve)  # that group only, so its share only
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    with pytest.raises(ssl.SSLWantReadError):
        client.wrap_bio(c_in, c_out).do_handshake()
    return c_out.read()


def _gnutls_client_hello(pki: tlspki.PKI) -> bytes:
    """What Debian's python3-libvirt (GnuTLS) sends first, caught by a plain TCP listener."""
    import socket
    import subprocess

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        script = ("import libvirt, sys\nlibvirt.registerErrorHandler(lambda *a: None, None)\n"
                  "try:\n    libvirt.open(sys.argv[1])\nexcept libvirt.libvirtError:\n    pass\n")
        client = subprocess.Popen(["/usr/bin/python3", "-c", script,
                                   f"qemu+tls://127.0.0.1:{port}/system"
                                   f"?pkipath={pki.pkipath('good')}&no_sanity=1"])
        try:
            listener.settimeout(30)
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(30)
                data = b""
                while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                    chunk = conn.recv(65536)
                    assert chunk, "the client hung up before its ClientHello"
                    data += chunk
        finally:
            client.wait(timeout=30)
    return data


@pytest.mark.oracle
def test_x25519_taken_when_a_gnutls_client_offers_it_second(pki: tlspki.PKI) -> None:
    """libvirt's clients (GnuTLS) send a P-256 key share first and an X25519 one second:
    pyvirtd takes the X25519 one, which costs both sides less, without a retry."""
    hello = _gnutls_client_hello(pki)
    assert _chosen_group(_server_flight(pki, hello)) == (0x001D, False)


@pytest.mark.parametrize(("curve", "group"), [(None, 0x001D), ("prime256v1", 0x0017),
                                              ("secp384r1", 0x0018)])
def test_a_clients_only_key_share_is_taken(pki: tlspki.PKI, curve: str | None,
                                           group: int) -> None:
    """A client with one key share (OpenSSL's default: X25519) gets that group, never a retry,
    whatever it is."""
    flight = _server_flight(pki, _openssl_client_hello(pki, curve))
    assert _chosen_group(flight) == (group, False)


# ---- the ServerHello first (openssl_ext.early_server_hello) ----

def _records(data: bytes) -> list[tuple[int, bytes]]:
    """The TLS records in ``data``: (content type, fragment)."""
    records, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos + 3:pos + 5], "big")
        records.append((data[pos], data[pos + 5:pos + 5 + size]))
        pos += 5 + size
    assert pos == len(data), "a record cut short"
    return records


def _finish(srv: ssl.SSLObject, s_in: ssl.MemoryBIO, s_out: ssl.MemoryBIO,
            cli: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO) -> None:
    """Carry a started handshake to its end on both sides."""
    def step(side: ssl.SSLObject) -> bool:
        try:
            side.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    for _ in range(8):
        client_done = step(cli)
        s_in.write(c_out.read())
        server_done = step(srv)
        c_in.write(s_out.read())
        if client_done and server_done:
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["TLSv1.3", "TLSv1.2"])
def test_server_hello_is_handed_over_before_the_rest_of_the_flight(pki: tlspki.PKI,
                                                                   version: ssl.TLSVersion) -> None:
    """As GnuTLS (libvirtd) sends it: the ServerHello alone, as soon as it is written, so that
    the client works out the key exchange while the server signs; then the rest of the flight,
    and the client completes the handshake with both. Once per connection."""
    server, _ = tls.server_context(_server_files(pki))
    client = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    client.maximum_version = version
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        cli.do_handshake()
    s_in.write(c_out.read())
    early: list[bytes] = []
    openssl_ext.ServerHelloSink.send = lambda: early.append(s_out.read())
    try:
        with pytest.raises(ssl.SSLWantReadError):
            srv.do_handshake()
        rest = s_out.read()
        assert len(early) == 1
        assert [(kind, fragment[0]) for kind, fragment in _records(early[0])] == [(22, 2)]
        if version == ssl.TLSVersion.TLSv1_3:
            assert _chosen_group(early[0]) == (0x001D, False)
        # then the rest: in TLS 1.3 the compatibility ChangeCipherSpec and the encrypted
        # handshake; in TLS 1.2 the certificate, key exchange, request and ServerHelloDone
        assert rest and _records(rest)[0][0] in (20, 22)
        c_in.write(early[0] + rest)
        _finish(srv, s_in, s_out, cli, c_in, c_out)
        assert len(early) == 1  # the server let go after its ServerHello
    finally:
        openssl_ext.ServerHelloSink.send = None
    assert srv.version() == cli.version() == {ssl.TLSVersion.TLSv1_3: "TLSv1.3",
                                              ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[version]


def test_without_a_sink_the_flight_leaves_whole(pki: tlspki.PKI) -> None:
    """Whoever runs a server handshake without a sink (nothing to send the ServerHello with)
    gets OpenSSL's own flight: the ServerHello and the rest together."""
    flight = _server_flight(pki, _openssl_client_hello(pki, None))
    kinds = [kind for kind, _ in _records(flight)]
    assert kinds[0] == 22 and len(kinds) > 2
    assert _chosen_group(flight) == (0x001D, False)


def test_pyvirtd_writes_its_server_hello_on_its_own(pki: tlspki.PKI) -> None:
    """pyvirtd's TLS acceptor, on a real socket: its first write is the ServerHello alone, its
    second the rest of the flight; the client then gets the confirmation byte. After each of its
    flights, it has the daemon poll for the client's answer (pyvirt.rpc.busypoll)."""
    from pyvirt.daemon.tls import ServerTLS, TLSAcceptor

    server, revocations = tls.server_context(_server_files(pki))
    client = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    writes: list[bytes] = []
    kicks: list[int] = []  # how many writes there were at each

    class Recording(asyncio.Protocol):  # the client connection pyvirtd would make
        pass

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        acceptor = TLSAcceptor(ServerTLS(server, _server_files(pki), True, (), revocations),
                               Recording, kick=lambda: kicks.append(len(writes)))
        transport, _ = await loop.connect_accepted_socket(lambda: acceptor, ours)
        write = transport.write

        def recorded(data: bytes | bytearray | memoryview) -> None:
            writes.append(bytes(data))
            write(data)

        transport.write = recorded  # type: ignore[method-assign]
        theirs.setblocking(False)
        c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        cli = client.wrap_bio(c_in, c_out, server_side=False)
        received = b""
        try:
            while True:
                try:
                    cli.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                await loop.sock_sendall(theirs, c_out.read())
                data = await asyncio.wait_for(loop.sock_recv(theirs, 65536), 10)
                assert data, "pyvirtd hung up"
                c_in.write(data)
            await loop.sock_sendall(theirs, c_out.read())
            while not received:
                try:
                    received = cli.read(16)
                except ssl.SSLWantReadError:
                    c_in.write(await asyncio.wait_for(loop.sock_recv(theirs, 65536), 10))
        finally:
            transport.close()
            theirs.close()
        return received

    assert asyncio.run(run()) == tls.CONFIRMATION
    assert [(kind, fragment[0]) for kind, fragment in _records(writes[0])] == [(22, 2)]
    assert _records(writes[1])[0][0] == 20  # TLS 1.3's ChangeCipherSpec, then the rest
    assert kicks == [2, 3] and len(writes) == 3  # the flight, then the confirmation byte


def test_acceptor_takes_the_tls_objects_made_ahead(pki: tlspki.PKI) -> None:
    """pyvirtd makes a connection's TLS objects ahead (ServerTLS.prepare), so that OpenSSL's
    copying of the context is not between a client's connect() and its ClientHello: an acceptor
    takes them, one made after has its own, and once a connection is gone the next ones are made
    (one set at a time)."""
    from pyvirt.daemon.tls import ServerTLS, TLSAcceptor

    server, revocations = tls.server_context(_server_files(pki))
    served = ServerTLS(server, _server_files(pki), True, (), revocations)
    served.prepare()
    served.prepare()
    assert len(served._spare) == 1
    ahead = served._spare[0][0]
    first = TLSAcceptor(served, asyncio.Protocol)
    second = TLSAcceptor(served, asyncio.Protocol)
    assert first.sslobj is ahead and second.sslobj is not ahead and not served._spare
    assert second.sslobj.server_side and second.sslobj.context is server

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        await loop.connect_accepted_socket(lambda: first, ours)
        theirs.close()  # the client leaves
        for _ in range(100):
            if first.state == "closed" and served._spare:
                break
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert len(served._spare) == 1
    made = served._spare[0][0]
    assert made not in (ahead, second.sslobj) and made.context is server


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends of a loopback TCP connection: (the server's accepted socket, the client's)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def _client_until_confirmed(cli: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO,
                            sock: socket.socket) -> bytes:
    """Carry a client's handshake on (blocking ``sock``) until the server's first byte."""
    sock.settimeout(10)
    while True:
        try:
            cli.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(c_out.read())
            data = sock.recv(65536)
            assert data, "the server hung up"
            c_in.write(data)
    sock.sendall(c_out.read())
    while True:
        try:
            return cli.read(16)
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            assert data, "the server hung up"
            c_in.write(data)


@pytest.mark.parametrize("blocked", [False, True], ids=["sent", "send-buffer-full"])
def test_client_hello_answered_before_the_transport(pki: tlspki.PKI, blocked: bool) -> None:
    """A ClientHello already there when pyvirtd accepts (it woke up late) is answered straight
    on the accepted socket (TLSAcceptor.read_first), before the connection has its transport;
    what the socket cannot take yet goes first once the transport is made. The handshake then
    goes on through the transport, with its timeout set, to the confirmation byte."""
    from pyvirt.daemon.tls import ServerTLS, TLSAcceptor

    server, revocations = tls.server_context(_server_files(pki))
    client = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    ours, theirs = _tcp_pair()
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        cli.do_handshake()
    theirs.sendall(c_out.read())  # the ClientHello
    padding = 0
    if blocked:  # the server's socket takes nothing more: filled up beforehand
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ours.setblocking(False)
        try:
            while True:
                padding += ours.send(b"\0" * 4096)
        except BlockingIOError:
            pass
        ours.setblocking(True)
    hello = ours.recv(16389)
    acceptor = TLSAcceptor(ServerTLS(server, _server_files(pki), True, (), revocations),
                           asyncio.Protocol)
    acceptor.read_first(ours, hello)
    assert acceptor.state == "handshake" and acceptor.raw is None
    if blocked:
        assert acceptor._unsent[:5] == bytes([22, 3, 3]) + acceptor._unsent[3:5]
    else:
        assert not acceptor._unsent
        theirs.settimeout(10)
        flight = b""
        while not flight or len(_records_so_far(flight)) < 3:
            flight += theirs.recv(65536)
        assert _records_so_far(flight)[0][:2] == (22, 2)  # the ServerHello first
        c_in.write(flight)

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: acceptor, ours)
        assert acceptor._timer is not None and not acceptor._unsent
        if blocked:
            junk = b""
            while len(junk) < padding:
                junk += await loop.run_in_executor(None, theirs.recv, padding - len(junk))
            assert junk == b"\0" * padding
        try:
            return await loop.run_in_executor(None, _client_until_confirmed, cli, c_in, c_out,
                                              theirs)
        finally:
            assert acceptor.raw is not None
            acceptor.raw.close()

    try:
        assert asyncio.run(run()) == tls.CONFIRMATION
    finally:
        theirs.close()


def _records_so_far(data: bytes) -> list[tuple[int, int]]:
    """(content type, first byte) of each whole TLS record at the start of ``data``."""
    found, pos = [], 0
    while pos + 5 <= len(data):
        size = int.from_bytes(data[pos + 3:pos + 5], "big")
        if pos + 5 + size > len(data):
            break
        found.append((data[pos], data[pos + 5]))
        pos += 5 + size
    return found


def test_client_hello_refused_before_the_transport(pki: tlspki.PKI,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Something else than a ClientHello, there at accept: refused then and there, logged with the
    client's address; the transport made afterwards keeps the refusal's timer (no handshake
    timeout) and drops the connection once the client is quiet, without a word to it."""
    from pyvirt.daemon import tls as daemon_tls
    from pyvirt.daemon.tls import ServerTLS, TLSAcceptor

    server, revocations = tls.server_context(_server_files(pki))
    ours, theirs = _tcp_pair()
    port = theirs.getsockname()[1]
    theirs.sendall(b"GET / HTTP/1.0\r\n\r\n")
    lost: list[bool] = []
    acceptor = TLSAcceptor(ServerTLS(server, _server_files(pki), True, (), revocations),
                           asyncio.Protocol, lost=lambda: lost.append(True))

    async def run() -> bytes:
        loop = asyncio.get_running_loop()
        with caplog.at_level("WARNING", logger="pyvirt.daemon"):
            acceptor.read_first(ours, ours.recv(16389))
        assert acceptor.state == "linger"
        timer = acceptor._timer
        await loop.connect_accepted_socket(lambda: acceptor, ours)
        assert acceptor._timer is timer
        return await loop.run_in_executor(None, theirs.recv, 100)

    try:
        theirs.settimeout(10)
        started = time.monotonic()
        assert asyncio.run(run()) == b""  # dropped, nothing said
        assert time.monotonic() - started < daemon_tls._LINGER_MAX
        assert lost == [True]
    finally:
        theirs.close()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "TLS handshake failed" in refused[0], refused
    assert refused[0].startswith(f"client tls 127.0.0.1:{port}: refused: "), refused


def test_client_polls_after_its_client_hello_and_its_last_flight(pki: tlspki.PKI) -> None:
    """pyvirt's client has its loop poll (pyvirt.rpc.busypoll) when its ClientHello goes out
    and when its last flight has: each time, the server's answer follows within microseconds."""
    from pyvirt.daemon.tls import ServerTLS, TLSAcceptor
    from pyvirt.rpc.client import RPCClient, _Wire

    server, revocations = tls.server_context(_server_files(pki))
    client = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    kicks: list[tuple[bool, str]] = []  # the client's TLS set up yet? the server's state

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        acceptor = TLSAcceptor(ServerTLS(server, _server_files(pki), True, (), revocations),
                               asyncio.Protocol)
        await loop.connect_accepted_socket(lambda: acceptor, ours)
        wire = _Wire(RPCClient())
        raw, _ = await loop.connect_accepted_socket(lambda: wire, theirs)
        try:
            await tls.tls_handshake(
                wire, client, "localhost", 0, verify=False, timeout=10,
                kick=lambda: kicks.append((wire.transport is not raw, acceptor.state)))
        finally:
            assert wire.transport is not None
            wire.transport.close()
        assert acceptor.state == "open"

    asyncio.run(run())  # (the confirmation byte came: the handshake is complete)
    # before the ClientHello; then once the client's last flight left, before the server read it
    assert kicks == [(False, "handshake"), (True, "handshake")]


def test_no_server_hello_sent_ahead_where_the_layout_is_not_known(
        pki: tlspki.PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """From OpenSSL 3.2 on an SSL is laid out otherwise: nothing is set, OpenSSL's own flight."""
    monkeypatch.setattr(ssl, "OPENSSL_VERSION_INFO", (3, 2, 0, 0, 0))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert openssl_ext.early_server_hello(ctx) is False


# ---- verified chains remembered (openssl_ext.remember_verified_chains) ----

def _remembered(ctx: ssl.SSLContext) -> dict[bytes, float]:
    ptr = openssl_ext._ssl_ctx_pointer(ctx)
    assert ptr is not None
    return openssl_ext._verified[ptr]


def _client_dir(pki: tlspki.PKI, base: Path, ident: tlspki.Identity,
                cert_der: bytes | None = None) -> tls.PKIFiles:
    base.mkdir(parents=True)
    (base / "cacert.pem").write_bytes(pki.ca.cert_pem())
    pem = ident.cert_pem() if cert_der is None else ssl.DER_cert_to_PEM_cert(cert_der).encode()
    (base / "clientcert.pem").write_bytes(pem)
    (base / "clientkey.pem").write_bytes(ident.key_pem())
    return tls.PKIFiles.flat(base, server=False)


def test_a_verified_chain_is_taken_as_verified_when_it_comes_again(pki: tlspki.PKI) -> None:
    server, _ = tls.server_context(_server_files(pki))
    good = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    assert _remembered(server) == {}
    assert _handshake(server, good)[2] is None
    ((key, deadline),) = _remembered(server).items()
    assert _der(pki.clients["good"].cert) in key
    assert 0 < deadline - time.monotonic() <= openssl_ext.VERIFIED_FOR
    # again: taken as verified (verifying again would have set a later deadline)
    assert _handshake(server, good)[2] is None
    assert _remembered(server) == {key: deadline}
    # past its deadline: verified again, and remembered anew
    _remembered(server)[key] = time.monotonic() - 1
    assert _handshake(server, good)[2] is None
    assert _remembered(server)[key] > time.monotonic()


@pytest.mark.parametrize(("client", "words"), [
    ("otherca", "unable to get local issuer certificate"),
    ("expired", "certificate has expired"),
    ("cacert", None),  # verified by OpenSSL, refused by libvirt's checks after the handshake
])
def test_a_refused_chain_is_never_remembered(pki: tlspki.PKI, client: str,
                                             words: str | None) -> None:
    server, _ = tls.server_context(_server_files(pki))
    good = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    other = tls.client_context(tls.PKIFiles.flat(pki.pkipath(client), server=False))
    assert _handshake(server, good)[2] is None
    remembered = dict(_remembered(server))
    for _ in range(2):
        assert _handshake(server, other)[2] == words
        if words is None:  # OpenSSL's verdict is remembered, libvirt's checks run every time
            assert len(_remembered(server)) == 2
            with pytest.raises(tls.PeerRefused):
                tls.check_peer(_der(pki.clients[client].cert), server_side=True)
        else:
            assert _remembered(server) == remembered


def test_a_forged_certificate_is_not_taken_for_a_remembered_one(pki: tlspki.PKI,
                                                                tmp_path: Path) -> None:
    """The chain is remembered byte for byte: the good client's certificate with another name
    in it (and the good signature) is verified, and refused."""
    server, _ = tls.server_context(_server_files(pki))
    good = tls.client_context(tls.PKIFiles.flat(pki.pkipath("good"), server=False))
    assert _handshake(server, good)[2] is None
    genuine = _der(pki.clients["good"].cert)
    assert genuine.count(b"client1") == 1
    forged = genuine.replace(b"client1", b"client2")
    files = _client_dir(pki, tmp_path / "forged", pki.clients["good"], forged)
    assert _handshake(server, tls.client_context(files))[2] == "certificate signature failure"


def test_a_chain_is_remembered_no_longer_than_it_is_valid(pki: tlspki.PKI,
                                                          tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    brief = tlspki.issue(pki.ca, pki.clients["good"].cert.subject, server=False,
                         not_after=now + datetime.timedelta(seconds=100))
    server, _ = tls.server_context(_server_files(pki))
    assert _handshake(server, tls.client_context(_client_dir(pki, tmp_path / "c", brief)))[2] is None
    ((_, deadline),) = _remembered(server).items()
    assert 90 < deadline - time.monotonic() <= 100


def test_no_chain_is_remembered_where_openssl_checks_a_crl(pki: tlspki.PKI) -> None:
    """A CRL may change while the context serves: such a context verifies every time."""
    files = _server_files(pki)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_verify_locations(cafile=str(files.cacert))
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    assert openssl_ext.remember_verified_chains(ctx) is False
    assert openssl_ext._ssl_ctx_pointer(ctx) not in openssl_ext._verified
