# SPDX-License-Identifier: LGPL-2.1-or-later
"""SASL (SCRAM-SHA-256 / SCRAM-SHA-1) in pyvirtd and pyvirt's client, against the real thing.

* Debian's virsh 9.0 and python3-libvirt 9.0 against pyvirtd with ``auth_tls = "sasl"`` (TLS
  with a client certificate, then SASL) and ``auth_unix_rw = "sasl"``; virsh reads its
  credentials from an auth.conf named by ``LIBVIRT_AUTH_FILE`` (no terminal).
* A private libvirtd 9.0 configured by the test for SASL: its own libvirtd.conf, its own sasl2
  directory (``SASL_CONF_PATH``, which Cyrus SASL reads instead of /etc/sasl2) with
  ``libvirt.conf`` naming a sasldb made with ``saslpasswd2 -f``. The same negative cases are run
  against both daemons and must print the same for virsh and libvirt-python.
* pyvirt's own client (``pyvirt.open`` with auth.conf, ``pyvirt.openAuth`` with a callback)
  against pyvirtd and against that libvirtd.
* What libvirtd itself refuses: SCRAM over plain TCP (no security layer); pyvirtd refuses to
  start with such a configuration and says what works instead.

The per-peer rate limit runs on a pyvirtd of its own with a short window.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon.testlib import (
    VIRSH,
    Pyvirtd,
    Raw,
    ask,
    error_fields,
    free_port,
    is_error,
    pyvirtd_command,
    rpc_conftest,
    short_tmpdir,
    start_pyvirtd,
    state,
)

import pyvirt
from pyvirt import _errcodes as codes
from pyvirt.daemon import sasl as dsasl
from pyvirt.errors import PyvirtError

from . import tlspki

pytestmark = pytest.mark.oracle

SYSTEM_PYTHON = "/usr/bin/python3"
USERS = {"fred": "fred's secret", "jim": "jim pw", "alice": "alice pw"}
ALLOWED = '["fred", "j*"]'  # alice is known but not allowed
AUTH_FAILED = ("error: failed to connect to the hypervisor\n"
               "error: authentication failed: authentication failed\n")
# _TLS_CLIENT_CLOSE: where pyvirt's client gives up on its own (a callback failing, a mechanism
# the server lacks), the tests use pyvirtd's UNIX socket: over pyvirtd's TLS a client that hangs
# up first waits 30 s for a TLS close_notify the daemon does not send back yet
# (pyvirt.daemon.tls; libvirtd does).


def write_auth_conf(path: Path, user: str, password: str, host: str = "default") -> Path:
    path.write_text(f"# test credentials\n[credentials-t]\nauthname={user}\npassword={password}\n\n"
                    f"[auth-libvirt-{host}]\ncredentials=t\n")
    return path


def saslpasswd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyvirt.cli.saslpasswd", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


# ---- the daemons ------------------------------------------------------------------------------

@dataclass
class Served:
    """One SASL-configured daemon (pyvirtd or libvirtd): its URIs and its log."""

    name: str
    unix_socket: str
    tls_port: int
    pki: tlspki.PKI
    log: Any  # () -> str

    def uri(self, transport: str = "tls", client: str = "good") -> str:
        if transport == "unix":
            return f"qemu+unix:///system?socket={self.unix_socket}"
        return f"qemu+tls://127.0.0.1:{self.tls_port}/system?pkipath={self.pki.pkipath(client)}"


def _tls_settings(pki: tlspki.PKI, port: int) -> dict[str, str]:
    files = pki.server_files
    return {"listen_tls": "1", "listen_addr": '"127.0.0.1"', "tls_port": f'"{port}"',
            "auth_tls": '"sasl"', "auth_unix_rw": '"sasl"',
            "sasl_allowed_username_list": ALLOWED,
            "key_file": f'"{files["key_file"]}"', "cert_file": f'"{files["cert_file"]}"',
            "ca_file": f'"{files["ca_file"]}"'}


@contextlib.contextmanager
def sasl_pyvirtd(pki: tlspki.PKI, **extra: str) -> Iterator[tuple[Pyvirtd, Served]]:
    parent = short_tmpdir("pvs-")
    root = parent / "r"
    try:
        for user, password in USERS.items():
            out = saslpasswd("--root", str(root), "-p", user, stdin=password + "\n")
            assert out.returncode == 0, out.stderr
        port = free_port()
        settings = {**_tls_settings(pki, port), "sasl_max_failures": "0", **extra}
        d = start_pyvirtd(root, config="".join(f"{k} = {v}\n" for k, v in settings.items()),
                          args=("--listen",))
        try:
            yield d, Served("pyvirtd", d.socket, port, pki, d.stderr)
        finally:
            d.stop()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def pyvirtd_sasl(pki: tlspki.PKI) -> Iterator[tuple[Pyvirtd, Served]]:
    with sasl_pyvirtd(pki) as served:
        yield served


@dataclass
class SaslLibvirtd:
    daemon: Any  # libvirtd_oracle.Libvirtd
    served: Served


def start_sasl_libvirtd(pki: tlspki.PKI, *, mechs: str = "scram-sha-256 scram-sha-1",
                        **extra: str) -> SaslLibvirtd:
    """libvirtd 9.0 with SASL on TLS and on its UNIX socket, plain TCP with SASL too: the private
    namespace of tests/libvirtd_oracle.py, plus a sasl2 directory of its own (SASL_CONF_PATH)."""
    o = rpc_conftest
    drivers = o.require_drivers("qemu", tools=("saslpasswd2",))
    root = Path(tempfile.mkdtemp(prefix="pyvirt-lvds-", dir="/tmp"))
    sasl2 = root / "sasl2"
    sasl2.mkdir()
    (sasl2 / "libvirt.conf").write_text(f"mech_list: {mechs}\nsasldb_path: {sasl2}/passwd.db\n")
    for user, password in USERS.items():
        subprocess.run(["saslpasswd2", "-p", "-a", "libvirt", "-f", str(sasl2 / "passwd.db"), "-c",
                        user], input=password, text=True, check=True, timeout=30)
    tcp_port, tls_port = free_port(), free_port()
    settings = {
        "unix_sock_dir": f'"{root}"', "unix_sock_rw_perms": '"0700"', "auth_unix_ro": '"none"',
        "listen_tcp": "1", "tcp_port": f'"{tcp_port}"', "auth_tcp": '"sasl"',
        "log_outputs": f'"3:file:{root}/libvirtd.log"',
        **_tls_settings(pki, tls_port), **extra,
    }
    daemon = o.launch(root, drivers, settings, tcp_port=tcp_port, env={"SASL_CONF_PATH": str(sasl2)})
    return SaslLibvirtd(daemon, Served("libvirtd", daemon.socket, tls_port, pki,
                                       lambda: daemon.log.read_text(errors="replace")))


@pytest.fixture(scope="module")
def libvirtd_sasl(pki: tlspki.PKI) -> Iterator[SaslLibvirtd]:
    lvd = start_sasl_libvirtd(pki)
    try:
        yield lvd
    finally:
        lvd.daemon.stop()


# ---- clients ----------------------------------------------------------------------------------

def virsh(uri: str, *args: str, auth_conf: Path | None, home: Path) -> tuple[int, str, str]:
    env = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": str(home)}
    if auth_conf is not None:
        env["LIBVIRT_AUTH_FILE"] = str(auth_conf)
    out = subprocess.run([VIRSH, "-c", uri, *args], capture_output=True, text=True, timeout=60,
                         env=env, stdin=subprocess.DEVNULL)
    return out.returncode, out.stdout, out.stderr


_OPEN_AUTH = """
import json, sys, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
uri, user, password, mode = sys.argv[1:5]
asked = []
def cb(creds, opaque):
    for c in creds:
        asked.append([c[0], c[1], c[2], c[3]])
        if c[0] == libvirt.VIR_CRED_AUTHNAME:
            c[4] = user
        elif c[0] == libvirt.VIR_CRED_PASSPHRASE:
            c[4] = password
    return -1 if mode == "fail" else 0
types = [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE]
if mode == "noauthname":
    types = [libvirt.VIR_CRED_PASSPHRASE]
out = {}
try:
    conn = libvirt.openAuth(uri, [types, cb, "opaque"], 0)
    out["conn"] = [conn.getType(), conn.isSecure(), conn.isEncrypted(),
                   sorted(d.name() for d in conn.listAllDomains())]
    conn.close()
except libvirt.libvirtError as e:
    out["error"] = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
out["asked"] = asked
print(json.dumps(out))
"""


def open_auth(python: str, uri: str, user: str, password: str, mode: str = "ok",
              home: Path | None = None) -> Any:
    """libvirt-python's openAuth with a callback (``python``: Debian's, or the venv's with
    ``import pyvirt as libvirt``)."""
    script = _OPEN_AUTH if python == SYSTEM_PYTHON else _OPEN_AUTH.replace(
        "import json, sys, libvirt", "import json, sys\nimport pyvirt as libvirt").replace(
        "libvirt.registerErrorHandler(lambda *a: None, None)", "")  # pyvirt prints no errors
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home or "/nonexistent"), "LANG": "C"}
    out = subprocess.run([python, "-c", script, uri, user, password, mode], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# ---- the password database and its tool ----------------------------------------------------------

def test_saslpasswd_keeps_keys_not_passwords(tmp_path: Path) -> None:
    db = tmp_path / "etc" / dsasl.DB_NAME
    out = saslpasswd("-f", str(db), "-p", "fred", stdin="correct horse\n")
    assert out.returncode == 0, out.stderr
    assert db.stat().st_mode & 0o777 == 0o600
    text = db.read_text()
    assert "correct horse" not in text
    assert set(json.loads(text)["users"]["fred"]) == set(dsasl.MECHANISMS)
    assert saslpasswd("-f", str(db), "-l").stdout == "fred\n"
    # the stored keys are those of the password: a SCRAM exchange against them passes
    import scramp

    keys = dsasl.PasswordDB(db).lookup("fred", "SCRAM-SHA-256")
    assert keys is not None and keys.iterations == dsasl.DEFAULT_ITERATIONS

    def exchange(password: str) -> bool:
        server = scramp.ScramMechanism("SCRAM-SHA-256").make_server(
            lambda u: (keys.salt, keys.stored_key, keys.server_key, keys.iterations))
        client = scramp.ScramClient(["SCRAM-SHA-256"], "fred", password)
        server.set_client_first(client.get_client_first())
        client.set_server_first(server.get_server_first())
        try:
            server.set_client_final(client.get_client_final())
        except scramp.ScramException:
            return False
        client.set_server_final(server.get_server_final())
        return True

    assert exchange("correct horse") and not exchange("wrong horse")
    # a second user, a changed password, a deletion; nothing else is left in the directory
    assert saslpasswd("-f", str(db), "-p", "jim", stdin="x\n").returncode == 0
    before = db.read_bytes()
    assert saslpasswd("-f", str(db), "-p", "fred", stdin="battery staple\n").returncode == 0
    assert db.read_bytes() != before
    assert saslpasswd("-f", str(db), "-d", "jim").returncode == 0
    assert saslpasswd("-f", str(db), "-l").stdout == "fred\n"
    assert sorted(p.name for p in db.parent.iterdir()) == [f".{db.name}.lock", db.name]
    # refusals change nothing
    before = db.read_bytes()
    for args, stdin, words in [(("-d", "nobody"), None, "no user 'nobody'"),
                               (("-p", "two words"), "pw\n", "space"),
                               (("-p", "fred"), "\n", "password is empty")]:
        out = saslpasswd("-f", str(db), *args, stdin=stdin)
        assert out.returncode == 1 and words in out.stderr, out.stderr
    assert db.read_bytes() == before
    # the instance's database: --root DIR -> DIR/etc/pyvirtd-sasl.json
    short = short_tmpdir("pvsp-")  # an embed root must be short (its sockets)
    try:
        assert saslpasswd("--root", str(short / "r"), "-p", "a", stdin="b\n").returncode == 0
        assert (short / "r" / "etc" / dsasl.DB_NAME).exists()
    finally:
        shutil.rmtree(short)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = saslpasswd("-f", str(bad), "-l")
    assert out.returncode == 1 and str(bad) in out.stderr and "pyvirt-saslpasswd" in out.stderr


def test_failure_limiter_window() -> None:
    now = [100.0]
    lim = dsasl.FailureLimiter(2, 10.0, clock=lambda: now[0])
    lim.failed("a")
    assert lim.blocked_for("a") == 0
    now[0] += 4
    lim.failed("a")
    assert lim.blocked_for("a") == pytest.approx(6.0)  # until the first failure is 10 s old
    assert lim.blocked_for("b") == 0  # per peer
    now[0] += 6
    assert lim.blocked_for("a") == 0
    lim.failed("a")
    lim.succeeded("a")
    assert lim.blocked_for("a") == 0


# ---- real clients against pyvirtd -----------------------------------------------------------

@pytest.mark.slow
def test_virsh_lifecycle_over_tls_and_sasl(pyvirtd_sasl: tuple[Pyvirtd, Served], guest: Any,
                                           workdir: Path, name: str) -> None:
    d, served = pyvirtd_sasl
    uri = served.uri("tls")
    conf = write_auth_conf(workdir / "auth.conf", "fred", USERS["fred"], host="127.0.0.1")
    from lifecycle_support import domain_xml

    xml = workdir / "dom.xml"
    xml.write_text(domain_xml(name, guest, workdir / "serial.log"))

    def run(*args: str) -> str:
        rc, out, err = virsh(uri, *args, auth_conf=conf, home=workdir)
        assert rc == 0, f"virsh {args}: {err}"
        return out

    assert run("uri") == uri + "\n\n"
    assert f"Domain '{name}' defined from" in run("define", str(xml))
    assert f" {name} " in run("list", "--all") and "shut off" in run("list", "--all")
    run("start", name)
    info = run("dominfo", name)
    assert f"Name:           {name}" in info and "State:          running" in info
    assert f"Domain '{name}' destroyed" in run("destroy", name)
    assert f"Domain '{name}' has been undefined" in run("undefine", name)
    assert f" {name} " not in run("list", "--all")
    assert "refused" not in d.stderr()


def test_virsh_over_unix_sasl(pyvirtd_sasl: tuple[Pyvirtd, Served], tmp_path: Path) -> None:
    d, served = pyvirtd_sasl
    conf = write_auth_conf(tmp_path / "auth.conf", "jim", USERS["jim"], host="localhost")
    rc, out, err = virsh(served.uri("unix"), "list", "--all", auth_conf=conf, home=tmp_path)
    assert (rc, err) == (0, ""), err
    assert out.startswith(" Id   Name")
    # the read-only socket keeps auth none: no credentials needed
    rc, out, err = virsh(f"qemu+unix:///system?socket={d.socket_ro}", "list", "--all",
                         auth_conf=None, home=tmp_path)
    assert (rc, err) == (0, ""), err


def test_python_libvirt_open_auth(pyvirtd_sasl: tuple[Pyvirtd, Served],
                                  libvirtd_sasl: SaslLibvirtd) -> None:
    """python3-libvirt's openAuth with a callback: what it is asked and what it gets are the same
    from both daemons; pyvirt's openAuth asks its callback the same questions."""
    _, served = pyvirtd_sasl
    results = {}
    for who, srv in (("pyvirtd", served), ("libvirtd", libvirtd_sasl.served)):
        ok = open_auth(SYSTEM_PYTHON, srv.uri("tls"), "fred", USERS["fred"])
        bad = open_auth(SYSTEM_PYTHON, srv.uri("tls"), "fred", "nope")
        failing_cb = open_auth(SYSTEM_PYTHON, srv.uri("tls"), "fred", "x", mode="fail")
        results[who] = (ok, bad, failing_cb)
        assert ok["conn"][:3] == ["QEMU", 1, 1], ok
        assert ok["asked"] == [[2, "Please enter your authentication name", "Authentication Name",
                                None],
                               [5, "Please enter your password", "Password", None]]
        assert bad["error"] == [45, 7, "authentication failed: authentication failed"]
        assert failing_cb["error"] == [45, 13, "authentication failed: Failed to collect auth "
                                               "credentials"]
    strip = [({k: v for k, v in r.items() if k != "conn"}) for r in results["pyvirtd"]]
    assert strip == [({k: v for k, v in r.items() if k != "conn"}) for r in results["libvirtd"]]
    # pyvirt's openAuth: same questions, same answers
    mine = open_auth(sys.executable, served.uri("tls"), "fred", USERS["fred"])
    assert mine["conn"][:3] == ["QEMU", 1, 1] and mine["asked"] == results["pyvirtd"][0]["asked"]
    assert open_auth(sys.executable, served.uri("tls"), "fred", "nope")["error"] == \
        [45, 7, "authentication failed: authentication failed"]
    assert open_auth(sys.executable, served.uri("unix"), "fred", "x", mode="fail")["error"] == \
        failing_cb["error"]  # (unix: see _TLS_CLIENT_CLOSE)


@pytest.mark.parametrize(("user", "password", "why"), [
    ("fred", "wrong", "wrong password"),
    ("nobody", "whatever", "unknown user"),
    ("alice", USERS["alice"], "not in sasl_allowed_username_list"),
])
def test_refusals_as_libvirtd_words_them(pyvirtd_sasl: tuple[Pyvirtd, Served],
                                         libvirtd_sasl: SaslLibvirtd, tmp_path: Path,
                                         user: str, password: str, why: str) -> None:
    d, served = pyvirtd_sasl
    conf = write_auth_conf(tmp_path / "auth.conf", user, password)
    seen = {}
    for srv in (served, libvirtd_sasl.served):
        for transport in ("tls", "unix"):
            seen[srv.name, transport] = virsh(srv.uri(transport), "list", "--all", auth_conf=conf,
                                              home=tmp_path)
    assert set(seen.values()) == {(1, "", AUTH_FAILED)}, seen
    log = d.stderr()
    refusals = [line for line in log.splitlines() if f"refused for user '{user}'" in line]
    assert any(" tls 127.0.0.1:" in line and why in line for line in refusals), log
    assert any(" unix pid=" in line and why in line for line in refusals), log
    # the daemon is unaffected: the right user still gets in, on both sockets
    good = write_auth_conf(tmp_path / "good.conf", "fred", USERS["fred"])
    for transport in ("tls", "unix"):
        rc, _, err = virsh(served.uri(transport), "list", "--all", auth_conf=good, home=tmp_path)
        assert rc == 0, err
    assert d.alive()


def test_unauthenticated_calls_refused(pyvirtd_sasl: tuple[Pyvirtd, Served],
                                       libvirtd_sasl: SaslLibvirtd) -> None:
    """Raw frames on the UNIX socket of each daemon: until SASL completes only AUTH_* is served,
    with libvirtd's error records field for field."""
    results = {}
    for srv in (pyvirtd_sasl[1], libvirtd_sasl.served):
        with Raw.unix(srv.unix_socket) as raw:
            got: list[Any] = [raw.call("AUTH_LIST").types]
            for proc, args in (("CONNECT_SUPPORTS_FEATURE", {"feature": 10}),
                               ("CONNECT_OPEN", {"name": "", "flags": 0}),
                               ("CONNECT_GET_TYPE", {})):
                got.append(error_fields(raw.call(proc, **args)))
            # a step before the init is refused
            got.append(error_fields(raw.call("AUTH_SASL_STEP", nil=0, data=b"x")))
        with Raw.unix(srv.unix_socket) as raw:
            got.append(raw.call("AUTH_SASL_INIT").mechlist)
            got.append(error_fields(raw.call("AUTH_SASL_START", mech="GSSAPI", nil=1, data=b"")))
        results[srv.name] = got
    assert results["pyvirtd"] == results["libvirtd"]
    assert results["pyvirtd"][0] == [1]
    assert results["pyvirtd"][1][:3] == (39, 7, "authentication required")
    assert results["pyvirtd"][-1][:3] == (45, 7, "authentication failed: authentication failed")
    assert "'GSSAPI' is not offered (GSSAPI/Kerberos is not supported by pyvirtd)" in \
        pyvirtd_sasl[1].log()


def test_pyvirtd_hangs_up_after_a_failure(pyvirtd_sasl: tuple[Pyvirtd, Served]) -> None:
    """A documented difference: libvirtd keeps the connection after a failed attempt; pyvirtd
    answers, then closes it, so each guess costs a connection."""
    import scramp

    with Raw.unix(pyvirtd_sasl[1].unix_socket) as raw:
        assert raw.call("AUTH_SASL_INIT").mechlist == "SCRAM-SHA-256,SCRAM-SHA-1"
        client = scramp.ScramClient(["SCRAM-SHA-1"], "fred", "wrong")
        first = raw.call("AUTH_SASL_START", mech="SCRAM-SHA-1", nil=0,
                         data=client.get_client_first().encode())
        client.set_server_first(bytes(first.data).decode())
        rec = raw.call("AUTH_SASL_STEP", nil=0, data=client.get_client_final().encode())
        assert is_error(rec) and rec.code == codes.VIR_ERR_AUTH_FAILED
        assert raw.eof(5)


def test_unknown_user_looks_like_a_known_one(pyvirtd_sasl: tuple[Pyvirtd, Served]) -> None:
    """Unlike Cyrus (which fails an unknown user at AUTH_SASL_START), pyvirtd answers a
    server-first shaped like a real one, with a salt stable per name: names cannot be probed."""
    import base64

    import scramp

    def server_first(user: str) -> dict[str, str]:
        with Raw.unix(pyvirtd_sasl[1].unix_socket) as raw:
            raw.call("AUTH_SASL_INIT")
            client = scramp.ScramClient(["SCRAM-SHA-256"], user, "x")
            rep = raw.call("AUTH_SASL_START", mech="SCRAM-SHA-256", nil=0,
                           data=client.get_client_first().encode())
            assert not is_error(rep) and rep.complete == 0
            return dict(part.split("=", 1) for part in bytes(rep.data).decode().split(","))

    known, ghost, ghost_again = server_first("fred"), server_first("ghost"), server_first("ghost")
    assert ghost["s"] == ghost_again["s"] != known["s"]
    assert len(base64.b64decode(ghost["s"])) == len(base64.b64decode(known["s"]))
    assert ghost["i"] == known["i"] == "4096"


# ---- pyvirt's client ----------------------------------------------------------------------------

@pytest.mark.parametrize("server", ["pyvirtd", "libvirtd"])
@pytest.mark.parametrize("transport", ["tls", "unix"])
def test_pyvirt_client_with_auth_conf(pyvirtd_sasl: tuple[Pyvirtd, Served],
                                      libvirtd_sasl: SaslLibvirtd, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, server: str,
                                      transport: str) -> None:
    served = pyvirtd_sasl[1] if server == "pyvirtd" else libvirtd_sasl.served
    host = "127.0.0.1" if transport == "tls" else "localhost"
    monkeypatch.setenv("LIBVIRT_AUTH_FILE", str(write_auth_conf(tmp_path / "a.conf", "jim",
                                                                USERS["jim"], host=host)))
    conn = pyvirt.open(served.uri(transport))
    try:
        assert conn.getType() == "QEMU"
        assert conn.isSecure() == 1
        conn.listAllDomains()
    finally:
        conn.close()
    # forced mechanism, as libvirt's auth=sasl.MECH; a missing one as libvirt words it
    conn = pyvirt.open(served.uri(transport) + "&auth=sasl.SCRAM-SHA-1")
    conn.close()
    if transport == "unix":  # (the client hangs up first: see _TLS_CLIENT_CLOSE)
        with pytest.raises(PyvirtError) as info:
            pyvirt.open(served.uri(transport) + "&auth=sasl.GSSAPI")
        assert (info.value.code, info.value.domain, info.value.message) == (
            45, 13, "authentication failed: SASL mechanism GSSAPI not supported by server")
        with pytest.raises(PyvirtError) as info:
            pyvirt.open(served.uri(transport) + "&auth=polkit")
        assert info.value.message == ("authentication failed: requested authentication type "
                                      "polkit rejected")
    # wrong password from auth.conf: the server's error
    write_auth_conf(tmp_path / "a.conf", "jim", "bad", host=host)
    with pytest.raises(PyvirtError) as info:
        pyvirt.open(served.uri(transport))
    assert (info.value.code, info.value.domain, info.value.message) == (
        45, 7, "authentication failed: authentication failed")


def test_pyvirt_client_without_credentials(pyvirtd_sasl: tuple[Pyvirtd, Served],
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIBVIRT_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    served = pyvirtd_sasl[1]
    with pytest.raises(PyvirtError) as info:
        pyvirt.open(served.uri("unix"))
    assert info.value.code == codes.VIR_ERR_AUTH_FAILED
    assert "auth.conf" in info.value.message and "openAuth" in info.value.message
    # the URI's authfile= names the file when LIBVIRT_AUTH_FILE does not
    conf = write_auth_conf(tmp_path / "a.conf", "fred", USERS["fred"], host="localhost")
    pyvirt.open(f"{served.uri('unix')}&authfile={conf}").close()
    # a callback without VIR_CRED_AUTHNAME cannot do SCRAM, as with libvirt ("No worthy mechs")
    out = open_auth(sys.executable, served.uri("unix"), "fred", USERS["fred"], mode="noauthname")
    assert out["error"][0] == 45 and "VIR_CRED_AUTHNAME" in out["error"][2]


# ---- plain TCP: no security layer, refused ----------------------------------------------------

def test_scram_on_plain_tcp_refused(libvirtd_sasl: SaslLibvirtd, tmp_path: Path) -> None:
    """libvirtd offers SCRAM no mechanism on plain TCP (it needs SSF >= 56); pyvirtd refuses
    the configuration at start-up, naming the setups that work."""
    conf = write_auth_conf(tmp_path / "auth.conf", "fred", USERS["fred"])
    uri = f"qemu+tcp://127.0.0.1:{libvirtd_sasl.daemon.tcp_port}/system"
    assert virsh(uri, "list", "--all", auth_conf=conf, home=tmp_path) == (1, "", AUTH_FAILED)
    assert "no SASL mechanisms are available" in libvirtd_sasl.served.log()
    with pytest.raises(PyvirtError) as info:
        pyvirt.openAuth(uri, [[2, 5], lambda creds, _: 0, None], 0)
    assert (info.value.code, info.value.message) == (45, "authentication failed: authentication failed")

    root = short_tmpdir("pvst-") / "r"
    conf_file = tmp_path / "tcp.conf"
    conf_file.write_text(f'listen_tcp = 1\nlisten_addr = "127.0.0.1"\ntcp_port = "{free_port()}"\n'
                         'auth_tcp = "sasl"\n')
    out = subprocess.run(pyvirtd_command("--root", str(root), "--config", str(conf_file),
                                         "--listen"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"{conf_file}:4: " in out.stderr and "SSF" in out.stderr
    assert 'auth_tls = "sasl"' in out.stderr
    assert not (root / "run" / "libvirt-sock").exists()
    shutil.rmtree(root.parent)


def test_plain_tcp_client_refused_at_init(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Should a plain TCP client reach AUTH_SASL_INIT anyway (the configuration forbids it), it
    is refused there as libvirtd refuses it: no mechanism without a security layer."""
    from pyvirt.daemon.config import parse_daemon_config
    from pyvirt.daemon.dispatch import ClientSession
    from pyvirt.daemon.instance import served_instance

    instance = served_instance(Path("/tmp/pvsasl-unused"))
    server = dsasl.SaslServer(parse_daemon_config(""), instance, path=tmp_path / "db.json")
    session = ClientSession(instance, readonly_socket=False, transport="tcp",
                            peer="#1 tcp 192.0.2.1:4000")
    server.admit(session, "tcp", False, "192.0.2.1")
    assert (session.auth_type, session.auth_pending) == (1, True)
    with caplog.at_level("WARNING", logger="pyvirt.daemon"), pytest.raises(PyvirtError) as info:
        dsasl.sasl_init(session, None)
    assert (info.value.code, info.value.domain, info.value.message) == (
        45, 7, "authentication failed: authentication failed")
    assert session.hangup and session.auth_pending
    assert "client #1 tcp 192.0.2.1:4000: SASL authentication refused: plain TCP needs" in caplog.text
    assert not (tmp_path / "db.json").exists()


# ---- the rate limit -----------------------------------------------------------------------------

def test_failures_rate_limited_per_peer(pki: tlspki.PKI, tmp_path: Path) -> None:
    window = 4
    with sasl_pyvirtd(pki, sasl_max_failures="2", sasl_failure_window=str(window)) as (d, served):
        def attempt(password: str, transport: str = "unix") -> int:
            def cb(creds: list[list[Any]], opaque: Any) -> int:
                for c in creds:
                    c[4] = "fred" if c[0] == 2 else password
                return 0
            try:
                pyvirt.openAuth(served.uri(transport), [[2, 5], cb, None], 0).close()
            except PyvirtError as exc:
                assert exc.message == "authentication failed: authentication failed"
                return 1
            return 0

        start = time.monotonic()
        assert attempt(USERS["fred"]) == 0
        assert attempt("bad1") == 1 and attempt("bad2") == 1
        # now even the right password is refused from this peer (uid 0 on the UNIX socket)...
        assert attempt(USERS["fred"]) == 1
        assert "2 failed attempts from uid 0 within 4 s; refused for" in d.stderr()
        # ... while another peer (127.0.0.1 over TLS) is not
        assert attempt(USERS["fred"], "tls") == 0
        # and once the window has passed, the peer gets in again
        time.sleep(max(0.0, start + window + 0.5 - time.monotonic()))
        assert attempt(USERS["fred"]) == 0
        assert d.alive()


# ---- max_anonymous_clients ---------------------------------------------------------------------

def sasl_login(raw: Raw, user: str, password: str) -> int:
    """A SCRAM-SHA-256 exchange in raw frames; the last reply's ``complete``."""
    import scramp

    assert "SCRAM-SHA-256" in raw.call("AUTH_SASL_INIT").mechlist.split(",")
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    first = raw.call("AUTH_SASL_START", mech="SCRAM-SHA-256", nil=0,
                     data=client.get_client_first().encode())
    client.set_server_first(bytes(first.data).decode())
    final = raw.call("AUTH_SASL_STEP", nil=0, data=client.get_client_final().encode())
    client.set_server_final(bytes(final.data).decode())
    return int(final.complete)


def tls_half_open(port: int) -> socket.socket:
    """A TCP connection to the TLS port whose handshake the daemon has begun (its reply to our
    ClientHello came back: it was accepted) and which never goes further."""
    # (libvirtd opens its TLS port a moment after the ports its start-up waits for; a probe
    # would be a client, so the port's state is read instead)
    deadline = time.monotonic() + 10
    while not any(line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port
                  for line in Path("/proc/net/tcp").read_text().splitlines()[1:]):
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.02)
    sock = socket.create_connection(("127.0.0.1", port))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    obj = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    sock.sendall(outgoing.read())
    sock.settimeout(5)
    assert sock.recv(65536), "no ServerHello"
    return sock


def anonymous_scenario(served: Served, unix_ro: str) -> list[tuple[str, Any]]:
    """max_anonymous_clients = 2, with SASL on the TLS port and on the read-write UNIX socket."""
    seen: list[tuple[str, Any]] = []
    handshaking = tls_half_open(served.tls_port)  # anonymous from accept: auth_tls is sasl
    with handshaking, Raw.unix(served.unix_socket) as pending:
        seen.append(("pending", pending.call("AUTH_LIST").types))
        with ask(Raw.unix(served.unix_socket)) as third:
            seen.append(("third, at the limit", state(third, 0.5)))
            seen.append(("pending logs in", sasl_login(pending, "fred", USERS["fred"])))
            seen.append(("third, once one authenticated", state(third, 5)))
            # two anonymous again (the handshake, the third): not even the read-only socket, whose
            # auth is none, is accepted
            with ask(Raw.unix(unix_ro)) as fourth:
                seen.append(("fourth, at the limit", state(fourth, 0.5)))
                seen.append(("pending calls", pending.call("CONNECT_SUPPORTS_FEATURE",
                                                           feature=10).supported))
                handshaking.close()
                seen.append(("fourth, once the handshake left", state(fourth, 5)))
    return seen


def test_max_anonymous_clients_like_libvirtd(pki: tlspki.PKI) -> None:
    """Clients that connected but have not authenticated (SASL pending, or still in a TLS
    handshake on a SASL socket) stop both daemons from accepting at max_anonymous_clients; one
    authenticating or leaving lets the next in."""
    with sasl_pyvirtd(pki, max_anonymous_clients="2", log_level="2") as (d, served):
        mine = anonymous_scenario(served, d.socket_ro)
        log = d.stderr()
    lvd = start_sasl_libvirtd(pki, max_anonymous_clients="2")
    try:
        theirs = anonymous_scenario(lvd.served, lvd.daemon.socket_ro)
    finally:
        lvd.daemon.stop()
    assert mine == theirs
    assert [s for _, s in mine] == [[1], "waiting", 1, [1], "waiting", 1, [0]]
    assert "2 not authenticated (max_anonymous_clients 2): not accepting new connections" in log
    assert "1 not authenticated (max_anonymous_clients 2): accepting new connections again" in log
