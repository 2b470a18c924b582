# SPDX-License-Identifier: LGPL-2.1-or-later
"""TLS x509 (``qemu+tls://``, ``qemu://HOST/system``): Debian's virsh 9.0 and python3-libvirt 9.0
against ``pyvirtd --root ROOT`` listening for TLS, and pyvirt's own client against pyvirtd and
against a real libvirtd 9.0 configured here for TLS (tests/libvirtd_oracle.py) -- with the same
certificates, made for the module by tests/remote/tlspki.py (a throwaway CA, a server certificate
for 127.0.0.1, client certificates good and bad, a CRL revoking one).

Both daemons get the same settings: the CA, the CRL, the server's certificate and key, and
``tls_allowed_dn_list = ["C=GB,O=pyvirt tests,CN=*"]``. Every refusal must look the same to virsh
for both daemons, leave the daemon serving the next client, and put a line naming the client's
address and the reason in pyvirtd's log.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon.testlib import Pyvirtd, free_port, rpc_conftest, short_tmpdir, start_pyvirtd
from lifecycle_support import domain_xml

from pyvirt import _errcodes as codes
from pyvirt._constants import VIR_CONNECT_CLOSE_REASON_EOF
from pyvirt.connection import open as pyvirt_open
from pyvirt.errors import PyvirtError
from pyvirt.rpc import tls
from pyvirt.rpc.sync import Client
from pyvirt.uri import parse_uri

from . import tlspki

pytestmark = pytest.mark.oracle

VIRSH = "/usr/bin/virsh"
SYSTEM_PYTHON = "/usr/bin/python3"
DN_LIST = '["C=GB,O=pyvirt tests,CN=*"]'
_ENV = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}


def _pyvirtd_with_tls(pki: tlspki.PKI, extra: str = "",
                      env: dict[str, str] | None = None) -> tuple[Pyvirtd, int, Path]:
    parent = short_tmpdir("pvtd-")
    root = parent / "r"
    root.mkdir()
    # the server's files where pyvirtd --root looks for them: ROOT/etc/pki (libvirt's layout)
    shutil.copytree(pki.server_tree() / "etc", root / "etc", dirs_exist_ok=True)
    port = free_port()
    config = (f'listen_tls = 1\nlisten_addr = "127.0.0.1"\ntls_port = "{port}"\n'
              f"tls_allowed_dn_list = {DN_LIST}\n{extra}")
    return start_pyvirtd(root, config=config, args=("--listen",), env=env), port, parent


@pytest.fixture(scope="module")
def daemon(pki: tlspki.PKI) -> Iterator[tuple[Pyvirtd, int]]:
    from lifecycle_support import kill_qemus

    d, port, parent = _pyvirtd_with_tls(pki)
    try:
        yield d, port
    finally:
        d.stop()
        kill_qemus(str(parent))
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def libvirtd(pki: tlspki.PKI) -> Iterator[tuple[Any, int]]:
    port = free_port()
    d = rpc_conftest.start_libvirtd(**pki.libvirtd_tls(port))
    try:
        _wait_port(port)
        yield d, port
    finally:
        d.stop()


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 15
    while not rpc_conftest._tcp_listening(port):
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.05)


def tls_uri(port: int, pki: tlspki.PKI, who: str = "good", *, sanity: bool = False,
            host: str = "127.0.0.1", scheme: str = "qemu+tls") -> str:
    extra = "" if sanity else "&no_sanity=1"  # the server's checks, not the client's own
    return f"{scheme}://{host}:{port}/system?pkipath={pki.pkipath(who)}{extra}"


def virsh(uri: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    out = subprocess.run([VIRSH, "-c", uri, *args], capture_output=True, text=True,
                         timeout=timeout, env=_ENV)
    return out.returncode, out.stdout.replace(uri, "URI"), out.stderr.replace(uri, "URI")


# ---- virsh and python3-libvirt against both daemons ----

@pytest.mark.parametrize("command", [("uri",), ("list", "--all"), ("hostname",), ("version",),
                                     ("dominfo", "nosuch")])
def test_virsh_over_tls_same_as_libvirtd(daemon: tuple[Pyvirtd, int], libvirtd: tuple[Any, int],
                                         pki: tlspki.PKI, command: tuple[str, ...]) -> None:
    ours = virsh(tls_uri(daemon[1], pki), *command)
    theirs = virsh(tls_uri(libvirtd[1], pki), *command)
    assert ours == theirs
    assert "failed to connect" not in ours[2]


def test_pyvirsh_over_tls_same_as_virsh(daemon: tuple[Pyvirtd, int], pki: tlspki.PKI) -> None:
    uri = tls_uri(daemon[1], pki, sanity=True)
    pyvirsh = Path(sys.executable).with_name("pyvirsh")
    for command in (("list", "--all"), ("hostname",), ("dominfo", "nosuch")):
        out = subprocess.run([str(pyvirsh), "-c", uri, *command], capture_output=True, text=True,
                             timeout=60, env=_ENV)
        assert (out.returncode, out.stdout, out.stderr) == virsh(uri, *command)


def test_qemu_scheme_with_host_is_tls(daemon: tuple[Pyvirtd, int], pki: tlspki.PKI) -> None:
    """qemu://HOST/system means TLS, to libvirt's client as to pyvirtd."""
    code, out, err = virsh(tls_uri(daemon[1], pki, scheme="qemu"), "list", "--all")
    assert code == 0, err
    assert out.startswith(" Id   Name")


#: client identity -> the reason in pyvirtd's log line
REFUSALS = {
    "none": "the client sent no certificate",
    "expired": "certificate has expired",
    # GnuTLS's client (virsh's) offers its certificate only to a server whose request names the
    # certificate's issuer, as pyvirtd's GnuTLS (and libvirtd) does: so it sends none
    "otherca": "the client sent no certificate",
    "otherdn": "not on the list of allowed clients (tls_allowed_dn_list)",
    "revoked": "certificate revoked",
    "cacert": "basic constraints show a CA, but we need one for a client",
    "nokeyenc": "usage does not permit key encipherment",  # a critical keyUsage without it
}


def test_tls_runs_on_gnutls_else_openssl(pki: tlspki.PKI) -> None:
    """pyvirtd's TLS runs on GnuTLS, libvirtd's library, where it is installed (here), and says
    so at start; where it is not (here: PYVIRTD_TLS_LIBRARY=openssl), on OpenSSL: virsh connects
    all the same, and a client of another CA, which virsh then lets send its certificate, is
    refused with OpenSSL's reason, exactly as virsh expects."""
    d, port, parent = _pyvirtd_with_tls(pki, "log_level = 2\n")
    try:
        assert "TLS connections on GnuTLS 3." in d.stderr()
    finally:
        d.stop()
        shutil.rmtree(parent, ignore_errors=True)
    d, port, parent = _pyvirtd_with_tls(pki, "log_level = 2\n",
                                        env={"PYVIRTD_TLS_LIBRARY": "openssl"})
    try:
        assert "TLS connections on OpenSSL 3." in d.stderr()
        assert virsh(tls_uri(port, pki), "list", "--all")[0] == 0
        before = len(d.stderr().splitlines())
        assert virsh(tls_uri(port, pki, "otherca"), "list", "--all") == (
            1, "", "error: failed to connect to the hypervisor\n"
                   "error: Unable to read TLS confirmation: Input/output error\n")
        new = d.stderr().splitlines()[before:]
        refused = [line for line in new if ": refused: " in line]
        assert len(refused) == 1 and "unable to get local issuer certificate" in refused[0], new
    finally:
        d.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_tls_priority_honoured_as_by_libvirtd(pki: tlspki.PKI) -> None:
    """libvirtd.conf's tls_priority is the daemon's GnuTLS priority string. With TLS 1.2 alone,
    virsh connects to either daemon, and a virsh whose own tls_priority asks for TLS 1.3 alone is
    refused by both, virsh printing the same; pyvirtd logs the refusal with its port."""
    only12 = "NORMAL:-VERS-ALL:+VERS-TLS1.2"
    wants13 = "&tls_priority=NORMAL:-VERS-ALL:%2BVERS-TLS1.3"
    port = free_port()
    theirs = rpc_conftest.start_libvirtd(**pki.libvirtd_tls(port, tls_priority=f'"{only12}"'))
    try:
        _wait_port(port)
        assert virsh(tls_uri(port, pki), "list", "--all")[0] == 0
        expected = virsh(tls_uri(port, pki) + wants13, "list", "--all")
    finally:
        theirs.stop()
    assert expected[0] == 1 and "TLS handshake failed" in expected[2], expected
    d, port, parent = _pyvirtd_with_tls(pki, f'tls_priority = "{only12}"\n')
    try:
        assert virsh(tls_uri(port, pki), "list", "--all")[0] == 0
        before = len(d.stderr().splitlines())
        assert virsh(tls_uri(port, pki) + wants13, "list", "--all") == expected
        new = d.stderr().splitlines()[before:]
        assert any(": refused: TLS handshake failed" in line for line in new), new
    finally:
        d.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.parametrize("who", list(REFUSALS))
def test_virsh_refused_as_by_libvirtd(daemon: tuple[Pyvirtd, int], libvirtd: tuple[Any, int],
                                      pki: tlspki.PKI, who: str) -> None:
    d, port = daemon
    before = len(d.stderr().splitlines())
    ours = virsh(tls_uri(port, pki, who), "list", "--all")
    theirs = virsh(tls_uri(libvirtd[1], pki, who), "list", "--all")
    assert ours == theirs
    assert ours == (1, "", "error: failed to connect to the hypervisor\n"
                           "error: Unable to read TLS confirmation: Input/output error\n")
    # a log line naming the peer and the reason
    new = d.stderr().splitlines()[before:]
    refused = [line for line in new if re.search(r"client tls 127\.0\.0\.1:\d+: refused: ", line)]
    assert len(refused) == 1 and REFUSALS[who] in refused[0], new
    # the daemon is unaffected: the next good client works
    assert d.alive()
    assert virsh(tls_uri(port, pki), "list", "--all")[0] == 0


def test_client_own_certificate_checked_first(daemon: tuple[Pyvirtd, int], pki: tlspki.PKI) -> None:
    """Without no_sanity=1 libvirt's client refuses its own bad certificate before connecting;
    pyvirt's client says the same words."""
    d, port = daemon
    for who in ("expired", "otherca", "cacert", "nokeyenc"):
        uri = tls_uri(port, pki, who, sanity=True)
        code, _, err = virsh(uri, "uri")
        assert code == 1
        theirs = err.splitlines()[-1].removeprefix("error: ")
        with pytest.raises(PyvirtError) as info:
            pyvirt_open(uri)
        assert info.value.get_error_message() == theirs
        assert info.value.get_error_code() == codes.VIR_ERR_SYSTEM_ERROR


def test_client_errors_before_tls_same_as_virsh(pki: tlspki.PKI, tmp_path: Path) -> None:
    """No CA certificate, or nobody listening: pyvirt's client words it as virsh does."""
    closed = free_port()
    for uri in (f"qemu+tls://127.0.0.1:{closed}/system?pkipath={tmp_path}",
                f"qemu://127.0.0.1:{closed}/system?pkipath={pki.pkipath('good')}"):
        code, _, err = virsh(uri, "uri")
        assert code == 1
        with pytest.raises(PyvirtError) as info:
            pyvirt_open(uri)
        assert f"error: {info.value.get_error_message()}\n" == err.splitlines(True)[-1]


_PY_FACTS = """
import json, sys, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open(sys.argv[1])
out = {"secure": conn.isSecure(), "encrypted": conn.isEncrypted(), "uri": conn.getURI(),
       "type": conn.getType(), "alive": conn.isAlive(),
       "names": [d.name() for d in conn.listAllDomains()]}
try:
    conn.lookupByName("nosuch")
except libvirt.libvirtError as e:
    out["nosuch"] = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
conn.close()
try:
    libvirt.open(sys.argv[2])
except libvirt.libvirtError as e:
    out["refused"] = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
print(json.dumps(out))
"""


def test_python_libvirt_over_tls(daemon: tuple[Pyvirtd, int], libvirtd: tuple[Any, int],
                                 pki: tlspki.PKI) -> None:
    results = []
    for port in (daemon[1], libvirtd[1]):
        good, bad = tls_uri(port, pki), tls_uri(port, pki, "otherdn")
        out = subprocess.run([SYSTEM_PYTHON, "-c", _PY_FACTS, good, bad], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        facts = json.loads(out.stdout)
        assert facts["uri"] == good
        facts["uri"] = "URI"
        results.append(facts)
    ours, theirs = results
    assert ours == theirs
    assert ours["secure"] == ours["encrypted"] == 1
    assert ours["refused"][2] == "Unable to read TLS confirmation: Input/output error"


# ---- the lifecycle over TLS, virsh against both daemons ----

@pytest.fixture
def workdir() -> Iterator[Path]:
    from lifecycle_support import qemu_workdir

    with qemu_workdir("pvtls-") as path:
        yield path


def _norm(text: str) -> str:
    text = re.sub(r"(CPU time:\s+)\S+", r"\1T", text)
    text = re.sub(r'"id":\s*"(libvirt|pyvirt)-\d+"', '"id":"ID"', text)
    return text


@pytest.mark.slow
def test_virsh_lifecycle_over_tls(daemon: tuple[Pyvirtd, int], libvirtd: tuple[Any, int],
                                  pki: tlspki.PKI, guest: Any, workdir: Path) -> None:
    name = f"tls{workdir.name[-6:].replace('_', 'x')}"
    xml = workdir / "dom.xml"
    xml.write_text(domain_xml(name, guest, workdir / "serial.log",
                              uuid="6a1c3e6e-54bb-4a43-9f4e-3c1b7c0d2e11"))
    outputs = []
    for port in (daemon[1], libvirtd[1]):
        uri = tls_uri(port, pki)
        events = subprocess.Popen([VIRSH, "-c", uri, "event", "--event", "lifecycle", "--loop",
                                   "--timeout", "60"], stdout=subprocess.PIPE, text=True, env=_ENV)
        steps = []
        try:
            time.sleep(0.5)  # registered before the first change
            for args in (("define", str(xml)), ("list", "--all"), ("start", "--paused", name),
                         ("dominfo", name),
                         ("qemu-monitor-command", name, '{"execute":"query-status"}'),
                         ("destroy", name), ("undefine", name), ("list", "--all")):
                code, out, err = virsh(uri, *args)
                steps.append((args[0], code, _norm(out), err))
                assert code == 0, (port, args, err)
            time.sleep(1.0)
        finally:
            events.send_signal(signal.SIGINT)
            seen, _ = events.communicate(timeout=30)
        lines = [re.sub(r"^event ", "", line) for line in seen.splitlines() if "event '" in line]
        outputs.append((steps, lines))
    (ours, our_events), (theirs, their_events) = outputs
    for a, b in zip(ours, theirs, strict=True):
        if a[0] == "dominfo":  # the security model is the driver's own: compare the rest
            a, b = (x[:2] + ("\n".join(line for line in x[2].splitlines()
                                       if not line.startswith("Security")), x[3])
                    for x in (a, b))
        assert a == b
    assert our_events == their_events, (our_events, their_events)
    assert any("Started Booted" in line for line in our_events), our_events
    assert any("Stopped Destroyed" in line for line in our_events), our_events


# ---- pyvirt's client against both daemons ----

@pytest.mark.parametrize("side", ["pyvirtd", "libvirtd"])
def test_pyvirt_client_over_tls(daemon: tuple[Pyvirtd, int], libvirtd: tuple[Any, int],
                                pki: tlspki.PKI, side: str) -> None:
    port = daemon[1] if side == "pyvirtd" else libvirtd[1]
    uri = tls_uri(port, pki, sanity=True)
    conn = pyvirt_open(uri)
    try:
        assert conn.isSecure() == 1 and conn.isEncrypted() == 1
        assert conn.getURI() == uri
        assert conn.getType() == "QEMU"
        assert isinstance(conn.listAllDomains(), list)
        with pytest.raises(PyvirtError) as info:
            conn.lookupByName("nosuch")
        assert info.value.get_error_code() == codes.VIR_ERR_NO_DOMAIN
    finally:
        conn.close()
    # localhost is in the server certificate too
    pyvirt_open(tls_uri(port, pki, host="localhost", sanity=True)).close()


@pytest.mark.parametrize("side", ["pyvirtd", "libvirtd"])
@pytest.mark.parametrize("who", ["none", "otherdn", "revoked"])
def test_pyvirt_client_refused(daemon: tuple[Pyvirtd, int], libvirtd: tuple[Any, int],
                               pki: tlspki.PKI, side: str, who: str) -> None:
    port = daemon[1] if side == "pyvirtd" else libvirtd[1]
    with pytest.raises(PyvirtError) as info:
        pyvirt_open(tls_uri(port, pki, who))
    err = info.value
    assert err.get_error_code() == codes.VIR_ERR_SYSTEM_ERROR
    assert err.get_error_domain() == codes.VIR_FROM_RPC
    assert err.get_error_message().startswith("Unable to read TLS confirmation: Input/output "
                                              f"error: the server at 127.0.0.1:{port}")


def test_pyvirt_client_checks_the_server(daemon: tuple[Pyvirtd, int], pki: tlspki.PKI,
                                         tmp_path: Path) -> None:
    """A server whose certificate our CA did not issue is refused (virsh says the same first
    words); no_verify=1 skips that check, and the server still checks us."""
    port = daemon[1]
    other = tmp_path / "pki"
    shutil.copytree(pki.pkipath("good"), other)
    (other / "cacert.pem").write_bytes(tlspki.make_ca("stranger").cert_pem())
    uri = f"qemu+tls://127.0.0.1:{port}/system?pkipath={other}&no_sanity=1"
    code, _, virsh_err = virsh(uri, "uri")
    assert code == 1
    with pytest.raises(PyvirtError) as info:
        pyvirt_open(uri)
    assert info.value.get_error_code() == codes.VIR_ERR_AUTH_FAILED
    words = "authentication failed: Failed to verify peer's certificate"
    assert words in virsh_err and info.value.get_error_message().startswith(words)
    conn = pyvirt_open(uri + "&no_verify=1")
    try:
        assert conn.isEncrypted() == 1
    finally:
        conn.close()


# ---- the daemon's configuration ----

def _refused_start(pki: tlspki.PKI, extra: str, *, damage: str = "",
                   env: dict[str, str] | None = None) -> str:
    parent = short_tmpdir("pvtd-")
    try:
        root = parent / "r"
        root.mkdir()
        shutil.copytree(pki.server_tree() / "etc", root / "etc", dirs_exist_ok=True)
        pkidir = root / "etc" / "pki"
        if damage == "no-cert":
            (pkidir / "libvirt" / "servercert.pem").unlink()
        elif damage == "wrong-key":
            (pkidir / "libvirt" / "private" / "serverkey.pem").write_bytes(
                pki.clients["good"].key_pem())
        elif damage == "expired-cert":
            (pkidir / "libvirt" / "servercert.pem").write_bytes(pki.clients["expired"].cert_pem())
        conf = parent / "pyvirtd.conf"
        conf.write_text(f'listen_tls = 1\nlisten_addr = "127.0.0.1"\ntls_port = "{free_port()}"\n'
                        + extra)
        from daemon.testlib import pyvirtd_command

        out = subprocess.run(pyvirtd_command("--root", str(root), "--listen", "--config",
                                             str(conf)), capture_output=True, text=True,
                             timeout=60, env={**os.environ, **(env or {})})
        assert out.returncode == 1, out.stderr
        assert not (root / "run" / "pyvirtd.pid").exists()
        return out.stderr.replace(str(root), "ROOT").replace(str(parent), "DIR")
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_daemon_refuses_bad_tls_files(pki: tlspki.PKI) -> None:
    err = _refused_start(pki, "", damage="no-cert")
    assert "Cannot read certificate 'ROOT/etc/pki/libvirt/servercert.pem': No such file" in err
    err = _refused_start(pki, "", damage="wrong-key")
    assert ("Unable to set x509 key and certificate: ROOT/etc/pki/libvirt/private/serverkey.pem, "
            "ROOT/etc/pki/libvirt/servercert.pem: the private key does not match the "
            "certificate") in err
    err = _refused_start(pki, "", damage="expired-cert")
    assert "The server certificate ROOT/etc/pki/libvirt/servercert.pem has expired" in err
    # files named by pyvirtd.conf: the key and its line are named too
    err = _refused_start(pki, 'cert_file = "/nonexistent/cert.pem"\n'
                              'key_file = "/nonexistent/key.pem"\nca_file = "/nonexistent/ca.pem"\n')
    assert "pyvirtd.conf:6: ca_file: Cannot read CA certificate '/nonexistent/ca.pem'" in err
    err = _refused_start(pki, 'cert_file = "/nonexistent/cert.pem"\n')
    assert "pyvirtd.conf: ca_file" not in err
    assert "No CA certificate path set to match server key/cert" in err


def test_daemon_refuses_a_tls_priority_it_cannot_honour(pki: tlspki.PKI) -> None:
    """(libvirtd starts with a priority string GnuTLS cannot use, then fails every TLS
    connection; pyvirtd does not start, and says why.)"""
    err = _refused_start(pki, 'tls_priority = "NORMAL:+NO-SUCH-THING"\n')
    assert ("pyvirtd.conf:4: tls_priority: GnuTLS cannot use the priority string "
            "'NORMAL:+NO-SUCH-THING': ") in err, err
    assert "at '+NO-SUCH-THING'; see GnuTLS's manual" in err
    # on OpenSSL it could not be honoured at all
    err = _refused_start(pki, 'tls_priority = "NORMAL"\n', env={"PYVIRTD_TLS_LIBRARY": "openssl"})
    assert ("pyvirtd.conf:4: tls_priority is a GnuTLS priority string, and pyvirtd's TLS runs on "
            "OpenSSL here (libgnutls.so.30 is not used: PYVIRTD_TLS_LIBRARY=openssl is set): "
            "install GnuTLS (Debian: libgnutls30) or remove tls_priority") in err, err


def test_tls_no_sanity_certificate(pki: tlspki.PKI) -> None:
    """tls_no_sanity_certificate = 1 skips the start-up checks of the server's own certificate,
    as libvirtd does: an expired one is then served (and refused by careful clients)."""
    parent = short_tmpdir("pvtd-")
    try:
        root = parent / "r"
        root.mkdir()
        shutil.copytree(pki.server_tree() / "etc", root / "etc", dirs_exist_ok=True)
        (root / "etc" / "pki" / "libvirt" / "servercert.pem").write_bytes(
            tlspki.issue(pki.ca, pki.server.cert.subject, server=True, hosts=("127.0.0.1",),
                         not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
                         not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
                         key=pki.server.key).cert_pem())
        port = free_port()
        d = start_pyvirtd(root, config=f'listen_tls = 1\nlisten_addr = "127.0.0.1"\n'
                                       f'tls_port = "{port}"\ntls_no_sanity_certificate = 1\n',
                          args=("--listen",))
        try:
            code, _, err = virsh(tls_uri(port, pki), "uri")
            assert code == 1 and "Failed to verify peer's certificate" in err
            with pytest.raises(PyvirtError) as info:
                pyvirt_open(tls_uri(port, pki))
            assert "certificate has expired" in info.value.get_error_message()
        finally:
            d.stop()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_tls_no_verify_certificate(pki: tlspki.PKI) -> None:
    """tls_no_verify_certificate = 1: clients without a (good) certificate get in, as with
    libvirtd; the daemon warns about it at start."""
    d, port, parent = _pyvirtd_with_tls(pki, "tls_no_verify_certificate = 1\n")
    try:
        for who in ("none", "otherdn"):
            code, out, err = virsh(tls_uri(port, pki, who), "list", "--all")
            assert code == 0, err
        assert "tls_no_verify_certificate = 1" in d.stderr()
    finally:
        d.stop()
        shutil.rmtree(parent, ignore_errors=True)


# ---- the pieces, against libvirt's own tools ----

def test_dn_as_libvirt_formats_it(tmp_path: Path) -> None:
    """virt-pki-query-dn (libvirt 9.0, GnuTLS) prints the DN tls_allowed_dn_list is matched
    against; ours must be the same string."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    def rdn(*pairs: tuple[Any, str]) -> x509.RelativeDistinguishedName:
        return x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in pairs])

    oid = x509.ObjectIdentifier
    names = [
        x509.Name([rdn((NameOID.COUNTRY_NAME, "GB")),
                   rdn((NameOID.ORGANIZATION_NAME, 'Acme, Inc+"x"\\<>;=#')),
                   rdn((NameOID.ORGANIZATIONAL_UNIT_NAME, "a"), (NameOID.COMMON_NAME, "multi")),
                   rdn((NameOID.EMAIL_ADDRESS, "a@b.c")), rdn((NameOID.DOMAIN_COMPONENT, "com")),
                   rdn((NameOID.USER_ID, "uid1")), rdn((NameOID.SERIAL_NUMBER, "123")),
                   rdn((NameOID.STATE_OR_PROVINCE_NAME, " lead")),
                   rdn((NameOID.LOCALITY_NAME, "#hash trail ")), rdn((NameOID.GIVEN_NAME, "Jöhn")),
                   rdn((oid("1.2.3.4.5"), "odd")), rdn((NameOID.STREET_ADDRESS, "St"))]),
        x509.Name([rdn((oid(o), "v")) for o in (
            "2.5.4.13", "2.5.4.16", "2.5.4.41", "1.3.6.1.5.5.7.9.3", "2.5.4.20",
            "1.3.6.1.4.1.311.60.2.1.1", "2.5.4.97")]),
    ]
    ca = tlspki.make_ca("dn test")
    for i, name in enumerate(names):
        path = tmp_path / f"c{i}.pem"
        path.write_bytes(tlspki.issue(ca, name, server=False).cert_pem())
        theirs = subprocess.run(["virt-pki-query-dn", str(path)], capture_output=True, text=True,
                                check=True).stdout.rstrip("\n")
        assert tls.distinguished_name(tls.load_cert(path, server=False)) == theirs


def test_dn_patterns() -> None:
    dn = "C=GB,O=pyvirt tests,CN=client1"
    assert tls.dn_matches(dn, ["C=GB,O=pyvirt tests,CN=*"])
    assert tls.dn_matches(dn, ["nope", "C=GB,O=pyvirt tests,CN=client?"])
    assert not tls.dn_matches(dn, ["C=GB,O=pyvirt tests,CN=client"])  # whole DN only
    assert not tls.dn_matches(dn, ["C=GB,O=pyvirt tests,CN=[a-z]*"])  # no brackets in GLib
    assert tls.dn_matches("C=GB,CN=a[1]", ["C=GB,CN=a[1]"])
    assert not tls.dn_matches(dn, [])


def test_host_names(pki: tlspki.PKI) -> None:
    der = pki.server.cert.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                                  fromlist=["Encoding"]).Encoding.DER)
    for host in ("127.0.0.1", "localhost", "LOCALHOST"):
        tls.check_peer(der, server_side=False, hostname=host)
    for host in ("127.0.0.2", "example.com", "::1"):
        with pytest.raises(tls.PeerRefused) as info:
            tls.check_peer(der, server_side=False, hostname=host)
        assert info.value.message == f"Certificate [session] owner does not match the hostname {host}"


# ---- big messages and events through the TLS transport ----

def test_big_messages_both_ways(daemon: tuple[Pyvirtd, int], pki: tlspki.PKI,
                                tmp_path: Path) -> None:
    """Megabytes each way through pyvirtd's TLS transport: the same bytes as over its UNIX
    socket."""
    d, port = daemon
    uri, unix = tls_uri(port, pki), d.uri()
    assert virsh(uri, "capabilities")[1] == virsh(unix, "capabilities")[1]
    name = f"big{tmp_path.name[-6:]}"
    xml = tmp_path / "big.xml"
    blob = "".join(f"{i:08d} " for i in range(300_000))  # 2.7 MB
    xml.write_text(f"<domain type='qemu'><name>{name}</name><description>{blob}</description>"
                   "<memory>65536</memory><os><type arch='x86_64'>hvm</type></os></domain>")
    assert virsh(uri, "define", str(xml))[0] == 0
    try:
        code, out, err = virsh(uri, "dumpxml", name)
        assert code == 0, err
        assert blob in out and out == virsh(unix, "dumpxml", name)[1]
    finally:
        assert virsh(uri, "undefine", name)[0] == 0


@pytest.mark.parametrize("side", ["pyvirtd", "libvirtd"])
def test_pyvirt_client_events_over_tls(daemon: tuple[Pyvirtd, int], libvirtd: tuple[Any, int],
                                       pki: tlspki.PKI, side: str, tmp_path: Path) -> None:
    import threading

    port = daemon[1] if side == "pyvirtd" else libvirtd[1]
    conn = pyvirt_open(tls_uri(port, pki))
    seen: list[tuple[str, int, int]] = []
    done = threading.Event()

    def lifecycle(_conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        seen.append((dom.name(), event, detail))
        if event == 1:  # VIR_DOMAIN_EVENT_UNDEFINED
            done.set()

    name = f"ev{tmp_path.name[-6:]}"
    try:
        conn.domainEventRegisterAny(None, 0, lifecycle, None)
        dom = conn.defineXML(f"<domain type='qemu'><name>{name}</name><memory>65536</memory>"
                             "<os><type arch='x86_64'>hvm</type></os></domain>")
        dom.undefine()
        assert done.wait(15), seen
        assert seen == [(name, 0, 0), (name, 1, 0)]  # DEFINED/ADDED, UNDEFINED/REMOVED
    finally:
        conn.close()


def test_client_file_locations(tmp_path: Path) -> None:
    """libvirt's search: pkipath as given; root uses /etc/pki; others ~/.pki/libvirt file by
    file (the certificate and key only as a pair), else /etc/pki."""
    flat = tls.client_files(str(tmp_path), euid=1000)
    assert (flat.cacert, flat.cacrl, flat.cert, flat.key) == (
        tmp_path / "cacert.pem", tmp_path / "cacrl.pem", tmp_path / "clientcert.pem",
        tmp_path / "clientkey.pem")
    root = tls.client_files(None, euid=0)
    assert (root.cacert, root.cert, root.key) == (
        Path("/etc/pki/CA/cacert.pem"), Path("/etc/pki/libvirt/clientcert.pem"),
        Path("/etc/pki/libvirt/private/clientkey.pem"))
    user = tmp_path / ".pki" / "libvirt"
    user.mkdir(parents=True)
    (user / "cacert.pem").write_text("x")
    (user / "clientcert.pem").write_text("x")  # no key: the pair is not used
    found = tls.pki_files(None, server=False, try_user=True, home=tmp_path)
    assert found.cacert == user / "cacert.pem"
    assert (found.cert, found.key) == (root.cert, root.key)
    (user / "clientkey.pem").write_text("x")
    found = tls.pki_files(None, server=False, try_user=True, home=tmp_path)
    assert (found.cert, found.key) == (user / "clientcert.pem", user / "clientkey.pem")
    assert found.cacrl == Path("/etc/pki/CA/cacrl.pem")


def test_dropped_tls_connection(pki: tlspki.PKI) -> None:
    """pyvirtd killed under a TLS client: the close callback fires once with EOF, and later
    calls fail with an error naming the peer (no reconnection)."""
    import threading

    d, port, parent = _pyvirtd_with_tls(pki)
    try:
        conn = pyvirt_open(tls_uri(port, pki))
        reasons: list[int] = []
        fired = threading.Event()

        def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
            reasons.append(reason)
            fired.set()

        conn.registerCloseCallback(on_close, None)
        assert conn.getHostname()
        d.stop(signal.SIGKILL)
        assert fired.wait(15)
        assert reasons == [VIR_CONNECT_CLOSE_REASON_EOF]
        with pytest.raises(PyvirtError) as info:
            conn.getHostname()
        assert f"127.0.0.1:{port}" in info.value.get_error_message()
        assert conn.isAlive() == 0
        conn.close()
    finally:
        d.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_client_hanging_up_first_is_answered(daemon: tuple[Pyvirtd, int], pki: tlspki.PKI) -> None:
    """pyvirt's client closing first sends TLS close_notify; pyvirtd answers it at once (a server
    that took the client's close_notify for "no data yet" left it waiting out asyncio's 30 s SSL
    shutdown timeout)."""
    parsed = parse_uri(tls_uri(daemon[1], pki, sanity=True))
    client = Client.connect_tls("127.0.0.1", daemon[1], parsed.params)
    client.call("AUTH_LIST")
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 10, "the daemon did not answer the client's close_notify"


def _queued_first_messages(port: int) -> int:
    """How many connections to 127.0.0.1:``port`` have data waiting on the server's side."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state == "01":
            count += int(queues.split(":")[1], 16) > 0
    return count


def test_client_hello_waiting_when_the_daemon_wakes(daemon: tuple[Pyvirtd, int],
                                                    pki: tlspki.PKI) -> None:
    """Clients whose first message is already there when pyvirtd accepts (as when it wakes up
    late) are answered before their connection has a transport (TLSAcceptor.read_first): here
    pyvirtd is stopped while a client sends its ClientHello and another sends something else.
    The first gets a working connection; the second is refused, logged with its address, and
    dropped without a word, as libvirtd drops it."""
    import threading

    d, port = daemon
    uri = tls_uri(port, pki)
    logged = len(d.stderr())
    opened: list[Any] = []
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        other = socket.create_connection(("127.0.0.1", port))
        other.sendall(b"GET / HTTP/1.0\r\n\r\n")
        opening = threading.Thread(target=lambda: opened.append(pyvirt_open(uri)))
        opening.start()
        deadline = time.monotonic() + 15
        while _queued_first_messages(port) < 2:
            assert time.monotonic() < deadline, "the first messages did not arrive"
            time.sleep(0.01)
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    opening.join(30)
    assert opened, "the TLS client did not get its connection"
    conn = opened[0]
    try:
        assert conn.getHostname()
    finally:
        conn.close()
    other.settimeout(10)
    assert other.recv(100) == b""
    port_of_other = other.getsockname()[1]
    other.close()
    refused = [line for line in d.stderr()[logged:].splitlines()
               if f"client tls 127.0.0.1:{port_of_other}: refused: " in line]
    assert len(refused) == 1 and "TLS handshake failed" in refused[0], d.stderr()[logged:]


# ---- what is kept between connections ----

def _der(ident: tlspki.Identity) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return ident.cert.public_bytes(Encoding.DER)


def test_peer_findings_kept_per_certificate_dates_checked_each_time(
        pki: tlspki.PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """check_peer keeps what it found in a certificate (parsing it is what costs), yet the
    allow-list and the clock of each call decide. The clock is moved by replacing tls._now:
    a certificate cannot be made to expire during a test otherwise."""
    good = _der(pki.clients["good"])
    allowed = ["C=GB,O=pyvirt tests,CN=*"]
    refusals: list[BaseException] = []
    for _ in range(2):
        assert (tls.check_peer(good, server_side=True, allowed_dns=allowed)
                == "C=GB,O=pyvirt tests,CN=client1")
        with pytest.raises(tls.PeerRefused) as info:
            tls.check_peer(good, server_side=True, allowed_dns=["C=GB,O=other,CN=*"])
        assert info.value.message == tls.DN_REFUSED
        assert all(info.value is not old for old in refusals)  # raised afresh each time
        refusals.append(info.value)
        with pytest.raises(tls.PeerRefused) as info:
            tls.check_peer(_der(pki.clients["expired"]), server_side=True, allowed_dns=allowed)
        assert info.value.message == "The server certificate [session] has expired"  # libvirt words it so
        with pytest.raises(tls.PeerRefused) as info:  # a CA certificate as a client's
            tls.check_peer(_der(pki.clients["cacert"]), server_side=True)
        assert "[session]" in info.value.message and "CA" in info.value.message
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=20 * 365)
    monkeypatch.setattr(tls, "_now", lambda: later)
    with pytest.raises(tls.PeerRefused) as info:
        tls.check_peer(good, server_side=True, allowed_dns=allowed)
    assert info.value.message == "The server certificate [session] has expired"  # libvirt words it so
    with pytest.raises(tls.PeerRefused) as info:
        tls.check_peer(b"\x30\x03\x02\x01\x00", server_side=True)
    assert info.value.message == "Unable to load certificate"


def test_client_files_read_again_when_changed(daemon: tuple[Pyvirtd, int], pki: tlspki.PKI,
                                              tmp_path: Path) -> None:
    """pyvirt's client reads and checks its files once for many connections, and again as soon
    as one is replaced: the next connection presents the new certificate."""
    port = daemon[1]
    mine = tmp_path / "pki"
    shutil.copytree(pki.pkipath("good"), mine)
    uri = f"qemu+tls://127.0.0.1:{port}/system?pkipath={mine}"
    params = parse_uri(uri).params
    first = tls.client_setup(params)[0]
    assert tls.client_setup(params)[0] is first
    assert tls.client_setup({**params, "no_verify": "1"})[0] is not first
    pyvirt_open(uri).close()
    for name in ("clientcert.pem", "clientkey.pem"):  # another DN, refused by the daemon
        shutil.copy(pki.pkipath("otherdn") / name, mine / name)
    assert tls.client_setup(params)[0] is not first
    with pytest.raises(PyvirtError) as info:
        pyvirt_open(uri)
    assert info.value.get_error_message().startswith("Unable to read TLS confirmation")
    for name in ("clientcert.pem", "clientkey.pem"):
        shutil.copy(pki.pkipath("good") / name, mine / name)
    pyvirt_open(uri).close()
