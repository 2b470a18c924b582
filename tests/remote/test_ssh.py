# SPDX-License-Identifier: LGPL-2.1-or-later
"""qemu+ssh:// end to end: a real OpenSSH server on loopback (tests/remote/sshlib.py), pyvirtd on a
root of its own, the private libvirtd 9.0, and three clients -- Debian's virsh 9.0, Debian's
python3-libvirt 9.0 and pyvirt's own (pyvirt.rpc.ssh + the client's command transport).

* virsh's lifecycle subset through ssh to pyvirtd: uri, list, define, start (paused), dominfo,
  qemu-monitor-command, destroy, undefine, and ``event --loop`` seeing them all;
* one libvirt-python script run by python3-libvirt and by pyvirt through ssh gives the same
  results, against pyvirtd and against libvirtd;
* pyvirt's client by both remote commands: netcat to ``socket=`` and ``pyvirt-ssh-helper``
  (``proxy=native``), read-only too; no ssh process outlives a connection;
* refusals: a key sshd does not accept, a host key that does not match known_hosts -- the same
  message as virsh gets from the same sshd, sshd's log naming the peer, the daemon unaffected;
  a dropped ssh fails the next call and fires the close callback;
* pyvirt-ssh-helper by itself: relays both ways, exits when either side closes, names a missing
  socket, and picks the socket pyvirt's client would.

libvirt 9.0 reads no ``known_hosts=`` for qemu+ssh, so virsh and python3-libvirt get the test's
known_hosts through ``command=`` (a wrapper around the system ssh); see sshlib.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon.testlib import Pyvirtd, Raw
from lifecycle_support import domain_xml

from pyvirt import _errcodes as codes
from pyvirt._constants import VIR_CONNECT_CLOSE_REASON_EOF
from pyvirt.cli.ssh_helper import helper_socket
from pyvirt.connection import open as pv_open
from pyvirt.connection import openReadOnly
from pyvirt.errors import PyvirtError
from pyvirt.remote import socket_path
from pyvirt.rpc import procedures
from pyvirt.rpc.protocol import Header, MessageType, Program, encode_message
from pyvirt.uri import parse_uri

from .scriptlib import run_script
from .sshlib import SSHServer, running_sshd, ssh_processes

pytestmark = pytest.mark.oracle

VIRSH = "/usr/bin/virsh"
SYSTEM_PYTHON = "/usr/bin/python3"
HELPER = str(Path(sys.executable).with_name("pyvirt-ssh-helper"))
_ENV = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}


@pytest.fixture(scope="module")
def sshd() -> Iterator[SSHServer]:
    with running_sshd() as server:
        yield server


@pytest.fixture(autouse=True)
def no_ssh_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every ssh a test started has ended once the test is over."""
    yield
    if "sshd" in request.fixturenames:
        server: SSHServer = request.getfixturevalue("sshd")
        deadline = time.monotonic() + 10
        while ssh_processes(str(server.dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ssh_processes(str(server.dir)) == []


def virsh(uri: str, *args: str, readonly: bool = False) -> tuple[int, str, str]:
    out = subprocess.run([VIRSH, *(["-r"] if readonly else []), "-c", uri, *args],
                         capture_output=True, text=True, timeout=60, env=_ENV)
    return out.returncode, out.stdout, out.stderr


def _small_xml(name: str) -> str:
    return (f"<domain type='qemu'><name>{name}</name><memory>65536</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>")


# ---- virsh --------------------------------------------------------------------------------------

class EventWatcher:
    """``virsh event --all --loop`` through ssh, its stdout read line by line (stdbuf: virsh's
    stdio would hold the lines until exit)."""

    def __init__(self, uri: str) -> None:
        self.proc = subprocess.Popen(["stdbuf", "-oL", VIRSH, "-c", uri, "event", "--all", "--loop",
                                      "--timeout", "120"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=_ENV)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def seen(self, pattern: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(re.search(pattern, line) for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> list[str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        return self.lines


@pytest.mark.slow
def test_virsh_lifecycle_over_ssh(sshd: SSHServer, daemon: Pyvirtd, guest: Any, workdir: Path,
                                  name: str) -> None:
    uri = sshd.libvirt_uri(daemon.socket)
    xml = workdir / "d.xml"
    xml.write_text(domain_xml(name, guest, workdir / "serial.log"))
    probe = workdir / "probe.xml"
    probe.write_text(_small_xml(f"{name}p"))

    assert virsh(uri, "uri") == (0, f"{uri}\n\n", "")
    watcher = EventWatcher(uri)
    try:
        # registered once a probe domain's events show (virsh prints nothing before)
        deadline = time.monotonic() + 30
        while True:
            assert virsh(uri, "define", str(probe))[0] == 0
            assert virsh(uri, "undefine", f"{name}p")[0] == 0
            if watcher.seen(rf"'{name}p': Undefined", 2.0) or time.monotonic() > deadline:
                break
        assert virsh(uri, "define", str(xml)) == (0, f"Domain '{name}' defined from {xml}\n\n", "")
        listed = virsh(uri, "list", "--all")
        assert listed[0] == 0 and re.search(rf"-\s+{name}\s+shut off", listed[1])
        assert listed == virsh(daemon.uri(), "list", "--all")
        assert virsh(uri, "start", "--paused", name) == (0, f"Domain '{name}' started\n\n", "")
        code, info, err = virsh(uri, "dominfo", name)
        assert code == 0, err
        assert re.search(r"^State:\s+paused$", info, re.M) and re.search(rf"^Name:\s+{name}$", info, re.M)
        # the same as over the daemon's own socket (CPU time moves on)
        local = virsh(daemon.uri(), "dominfo", name)[1]
        assert re.sub(r"CPU time:.*", "", info) == re.sub(r"CPU time:.*", "", local)
        code, out, err = virsh(uri, "qemu-monitor-command", name, '{"execute":"query-status"}')
        assert code == 0, err
        assert json.loads(out)["return"]["running"] is False  # "prelaunch": -S, never continued
        assert virsh(uri, "destroy", name) == (0, f"Domain '{name}' destroyed\n\n", "")
        assert virsh(uri, "undefine", name) == (0, f"Domain '{name}' has been undefined\n\n", "")
        assert watcher.seen(rf"'{name}': Undefined Removed", 30)
    finally:
        lines = watcher.stop()
    ours = [line for line in lines if f"for domain '{name}'" in line]
    assert ours[0] == f"event 'lifecycle' for domain '{name}': Defined Added"
    assert f"event 'lifecycle' for domain '{name}': Started Booted" in ours
    assert f"event 'lifecycle' for domain '{name}': Stopped Destroyed" in ours
    assert ours[-1] == f"event 'lifecycle' for domain '{name}': Undefined Removed"
    assert daemon.alive()


# ---- one script, two clients --------------------------------------------------------------------

_SCRIPT = """
NAME, XML = ARGS["name"], ARGS["xml"]
events = []
def on_life(c, d, ev, detail, opaque):
    if d.name() == NAME:
        events.append([d.name(), ev, detail])
cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_life, None)
out = {}
out["conn"] = [conn.getType(), conn.getURI() == uri, conn.isAlive(), conn.isSecure(),
               conn.isEncrypted(), conn.getVersion() > 0]
d = conn.defineXML(XML)
out["defined"] = [d.name(), d.ID(), d.isActive(), d.isPersistent()]
out["lookup"] = conn.lookupByName(NAME).UUIDString() == d.UUIDString()
out["all"] = [x.name() for x in conn.listAllDomains() if x.name() == NAME]
out["info"] = d.info()
out["state"] = d.state()
out["nosuch"] = err(lambda: conn.lookupByName(NAME + "x"))
d.undefine()
out["gone"] = err(lambda: conn.lookupByName(NAME))
out["events"] = settle(events, lambda e: len(e) >= 2)
conn.domainEventDeregisterAny(cb)
result = out
"""


def _both(sshd: SSHServer, socket: str, name: str) -> tuple[Any, Any]:
    args = {"name": name, "xml": _small_xml(name)}
    theirs = run_script("libvirt", sshd.libvirt_uri(socket), _SCRIPT, args=args, full=True)
    ours = run_script("pyvirt", sshd.uri(socket), _SCRIPT, args=args, full=True)
    return ours, theirs


def test_python_clients_to_pyvirtd_over_ssh(sshd: SSHServer, daemon: Pyvirtd, name: str) -> None:
    ours, theirs = _both(sshd, daemon.socket, name)
    assert ours == theirs
    # ssh is secure but not encrypted as far as libvirt's remote driver knows
    assert ours["conn"] == ["QEMU", True, 1, 1, 0, True]
    assert ours["events"] == [[name, 0, 0], [name, 1, 0]]
    assert ours["nosuch"][0] == codes.VIR_ERR_NO_DOMAIN


def test_python_clients_to_libvirtd_over_ssh(sshd: SSHServer, libvirtd: Any, name: str) -> None:
    ours, theirs = _both(sshd, libvirtd.socket, name)
    assert ours == theirs
    assert ours["conn"][:5] == ["QEMU", True, 1, 1, 0]
    assert ours["events"] == [[name, 0, 0], [name, 1, 0]]


# ---- pyvirt's client: both remote commands ------------------------------------------------------

def _relays(socket: str) -> set[str]:
    """The programs relaying to ``socket`` right now: nc or pyvirt-ssh-helper."""
    found = set()
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if not any(socket in word for word in argv[1:]):
            continue
        if os.path.basename(argv[0]) == "nc":
            found.add("nc")
        elif len(argv) > 1 and os.path.basename(argv[1]) == "pyvirt-ssh-helper":
            found.add("pyvirt-ssh-helper")
    return found


@pytest.mark.parametrize("extra", ["", "proxy=netcat", "proxy=native"])
def test_pyvirt_client_remote_commands(sshd: SSHServer, daemon: Pyvirtd, name: str,
                                       extra: str) -> None:
    conn = pv_open(sshd.uri(daemon.socket, extra=extra))
    try:
        # what relays on the remote side: the helper only for proxy=native (socket= makes auto
        # use netcat, as in libvirt)
        assert _relays(daemon.socket) == {"pyvirt-ssh-helper" if extra == "proxy=native" else "nc"}
        dom = conn.defineXML(_small_xml(name))
        assert conn.lookupByName(name).info()[0] == 5  # VIR_DOMAIN_SHUTOFF
        assert [d.name() for d in conn.listAllDomains() if d.name() == name] == [name]
        dom.undefine()
        assert conn.isSecure() == 1 and conn.isEncrypted() == 0
    finally:
        conn.close()
    ro = openReadOnly(sshd.uri(daemon.socket_ro, extra=extra))
    try:
        with pytest.raises(PyvirtError) as info:
            ro.defineXML(_small_xml(name))
        assert info.value.code == codes.VIR_ERR_OPERATION_DENIED
        assert ro.listAllDomains() is not None
    finally:
        ro.close()


@pytest.mark.parametrize("command", [("list", "--all"), ("hostname",), ("dominfo", "nosuch"),
                                     ("domstate", "nosuch")])
def test_pyvirsh_same_as_virsh_over_ssh(sshd: SSHServer, daemon: Pyvirtd,
                                        command: tuple[str, ...]) -> None:
    pyvirsh = str(Path(sys.executable).with_name("pyvirsh"))
    out = subprocess.run([pyvirsh, "-c", sshd.uri(daemon.socket, extra="proxy=native"), *command],
                         capture_output=True, text=True, timeout=60, env=_ENV)
    assert (out.returncode, out.stdout, out.stderr) == virsh(sshd.libvirt_uri(daemon.socket), *command)
    assert "failed to connect" not in out.stderr


def test_pyvirt_helper_path_reports_a_missing_socket(sshd: SSHServer, daemon: Pyvirtd,
                                                     tmp_path: Path) -> None:
    missing = tmp_path / "nosuch-sock"
    with pytest.raises(PyvirtError) as info:
        pv_open(sshd.uri(str(missing), extra="proxy=native"))
    assert (info.value.code, info.value.domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
    # what pyvirt-ssh-helper said on the remote side, passed on by ssh
    assert (f"End of file while reading data: pyvirt-ssh-helper: Failed to connect socket to "
            f"'{missing}': No such file or directory: Input/output error") in info.value.message


def test_missing_ssh_command(tmp_path: Path) -> None:
    missing = tmp_path / "nosuch-ssh"
    with pytest.raises(PyvirtError) as info:
        pv_open(f"qemu+ssh://root@127.0.0.1/system?command={missing}")
    assert (info.value.code, info.value.domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
    assert info.value.message == (f"Cannot run '{missing}' for ssh root@127.0.0.1: "
                                  "No such file or directory")


def test_a_command_that_lingers_is_stopped(daemon: Pyvirtd, tmp_path: Path) -> None:
    """An ssh that does not end when its stdin closes is terminated by close(), as libvirt's
    virProcessAbort does. (A stand-in for ssh: nc to the daemon, then it stays.)"""
    fake = tmp_path / "lingering-ssh"
    fake.write_text(f"#!/bin/sh\nnc -q0 -U {daemon.socket}\nexec sleep 60\n")
    fake.chmod(0o755)
    conn = pv_open(f"qemu+ssh://h/system?command={fake}")
    assert conn.getType() == "QEMU"
    pids = ssh_processes(str(fake))
    assert len(pids) == 1
    started = time.monotonic()
    conn.close()
    assert time.monotonic() - started < 8
    # the same process (sh, then sleep by exec) is gone, reaped
    assert not os.path.exists(f"/proc/{pids[0]}")


def test_dropped_ssh_fails_calls_and_fires_close_callback(sshd: SSHServer, daemon: Pyvirtd) -> None:
    conn = pv_open(sshd.uri(daemon.socket))
    reasons: list[int] = []
    fired = threading.Event()

    def on_close(c: Any, reason: int, opaque: Any) -> None:
        reasons.append(reason)
        fired.set()

    conn.registerCloseCallback(on_close, None)
    try:
        pids = ssh_processes(str(sshd.client_key))
        assert len(pids) == 1
        os.kill(pids[0], signal.SIGKILL)
        assert fired.wait(15)
        with pytest.raises(PyvirtError) as info:
            conn.listAllDomains()
        assert "End of file while reading data" in info.value.message or \
            "Cannot recv data" in info.value.message
        assert reasons == [VIR_CONNECT_CLOSE_REASON_EOF]
    finally:
        conn.close()
    _daemon_fine(daemon)


def _daemon_fine(daemon: Pyvirtd) -> None:
    assert daemon.alive()
    conn = pv_open(daemon.uri())
    try:
        assert conn.getType() == "QEMU"
    finally:
        conn.close()


# ---- refusals -----------------------------------------------------------------------------------

def _python_libvirt_error(uri: str) -> list[Any]:
    prog = ("import json, sys, libvirt\nlibvirt.registerErrorHandler(lambda *a: None, None)\n"
            "try:\n    libvirt.open(sys.argv[1])\n    r = None\n"
            "except libvirt.libvirtError as e:\n"
            "    r = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]\n"
            "print(json.dumps(r))\n")
    out = subprocess.run([SYSTEM_PYTHON, "-c", prog, uri], capture_output=True, text=True,
                         timeout=60, check=True)
    return list(json.loads(out.stdout))


@pytest.mark.parametrize("case", ["unauthorised key", "host key mismatch"])
def test_refused_as_virsh_is(sshd: SSHServer, daemon: Pyvirtd, case: str) -> None:
    if case == "unauthorised key":
        ours_uri = sshd.uri(daemon.socket, key=sshd.stranger_key)
        theirs_uri = sshd.libvirt_uri(daemon.socket, key=sshd.stranger_key)
        said = "root@127.0.0.1: Permission denied (publickey)."
        logged = "Connection closed by authenticating user root 127.0.0.1 port"
    else:
        ours_uri = sshd.uri(daemon.socket, known_hosts=sshd.wrong_known_hosts)
        theirs_uri = sshd.libvirt_uri(daemon.socket, known_hosts=sshd.wrong_known_hosts)
        said = "Host key verification failed."
        logged = "Connection closed by 127.0.0.1 port"
    # libvirt's own client races with ssh's exit (rarely: "client socket is closed"), so its
    # message is taken from the first of three tries that shows ssh's words
    for _ in range(3):
        code, _, err = virsh(theirs_uri, "list")
        assert code == 1 and err.startswith("error: failed to connect to the hypervisor\nerror: ")
        theirs = err.split("\nerror: ", 1)[1].rstrip("\n")
        if said in theirs:
            break
    assert said in theirs
    with pytest.raises(PyvirtError) as info:
        pv_open(ours_uri)
    # virsh's message whole, then which ssh ended how (ssh ends some lines with CRLF; reading
    # virsh's stderr as text made them LF)
    ours = info.value.message.replace("\r\n", "\n")
    assert f"{theirs} (ssh root@127.0.0.1:{sshd.port} exited with status 255)" in ours
    for _ in range(3):
        python_libvirt = _python_libvirt_error(theirs_uri)
        if said in python_libvirt[2]:
            break
    assert [info.value.code, info.value.domain] == python_libvirt[:2]
    assert logged in sshd.log.read_text()
    _daemon_fine(daemon)


# ---- pyvirt-ssh-helper by itself ----------------------------------------------------------------

def _frame(proc: str, serial: int, payload: bytes = b"") -> bytes:
    p = procedures.lookup(proc)
    return encode_message(Header(p.program, 1, p.number, MessageType.CALL, serial), payload)


def test_helper_relays_and_exits_when_the_client_closes(daemon: Pyvirtd) -> None:
    helper = subprocess.Popen([HELPER, f"qemu:///system?socket={daemon.socket}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert helper.stdin is not None and helper.stdout is not None
    try:
        helper.stdin.write(_frame("AUTH_LIST", 7))
        helper.stdin.flush()
        reply = helper.stdout.read(32)  # 28-byte header + one auth type
        assert reply[:4] == (36).to_bytes(4, "big")
        assert int.from_bytes(reply[4:8], "big") == Program.REMOTE
        assert int.from_bytes(reply[20:24], "big") == 7  # our serial
        helper.stdin.close()
        assert helper.wait(timeout=10) == 0
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()


def test_helper_exits_when_the_daemon_closes(daemon: Pyvirtd) -> None:
    helper = subprocess.Popen([HELPER, f"qemu:///system?socket={daemon.socket}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert helper.stdin is not None and helper.stdout is not None
    try:
        # a frame longer than the protocol allows: the daemon drops the connection
        helper.stdin.write((0x7FFFFFFF).to_bytes(4, "big") + bytes(24))
        helper.stdin.flush()
        assert helper.wait(timeout=10) == 0  # stdin still open: the daemon's end ended it
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait()
    with Raw.unix(daemon.socket) as raw:  # the daemon is fine
        raw.open()


def test_helper_errors() -> None:
    missing = "/nonexistent/pyvirt-sock"
    out = subprocess.run([HELPER, f"qemu:///system?socket={missing}"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (f"pyvirt-ssh-helper: Failed to connect socket to '{missing}': "
                          "No such file or directory\n")
    for argv, words in [([], "expected one URI"), (["qemu+tcp://h/system"], "not a local URI"),
                        (["qemu:///embed?root=/tmp/x"], "no socket of its own"),
                        (["-x", "qemu:///system"], "unknown option '-x'"),
                        (["qemu:///system?sokcet=/x"], "unknown parameter 'sokcet'")]:
        out = subprocess.run([HELPER, *argv], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 1 and words in out.stderr, (argv, out.stderr)


def test_helper_picks_the_clients_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    monkeypatch.delenv("PYVIRT_PREFIX", raising=False)
    for text in ("qemu:///system", "qemu:///session", "qemu:///system?mode=legacy",
                 "qemu:///session?mode=legacy", "qemu:///system?socket=/x/y",
                 "qemu+unix:///system?mode=direct"):
        for readonly in (False, True):
            assert helper_socket(text, readonly) == socket_path(parse_uri(text), readonly)
    assert helper_socket("qemu:///system", True) == "/run/pyvirt/libvirt-sock-ro"



def test_helper_relay_without_pipes(daemon: Pyvirtd) -> None:
    """relay() over descriptors splice(2) cannot take (sockets): read and write instead."""
    import socket

    from pyvirt.cli.ssh_helper import relay

    ours, stdin = socket.socketpair()
    stdout, theirs = socket.socketpair()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(daemon.socket)
    worker = threading.Thread(target=relay, args=(sock, stdin.fileno(), stdout.fileno()))
    worker.start()
    try:
        ours.sendall(_frame("AUTH_LIST", 9))
        reply = b""
        while len(reply) < 32:
            reply += theirs.recv(64)
        assert int.from_bytes(reply[20:24], "big") == 9
        ours.shutdown(socket.SHUT_WR)
        worker.join(timeout=10)
        assert not worker.is_alive()
    finally:
        for s in (ours, stdin, stdout, theirs, sock):
            s.close()


@pytest.mark.parametrize("prefix", [None, "/tmp/pfx"])
def test_helper_quick_uris_as_the_parser_reads_them(monkeypatch: pytest.MonkeyPatch,
                                                    prefix: str | None) -> None:
    """The helper resolves the URIs clients send without pyvirt's URI parser (start-up time):
    the same socket as the parser's way, for those and for look-alikes it must leave alone."""
    from pyvirt.cli import ssh_helper

    if prefix is None:
        monkeypatch.delenv("PYVIRT_PREFIX", raising=False)
    else:
        monkeypatch.setenv("PYVIRT_PREFIX", prefix)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    for text in ("qemu:///system", "qemu:///session", "qemu:///system?socket=/x/y-z_1.sock",
                 "qemu:///session?socket=/run/user/1/s", "qemu:///system?socket=/a%20b",
                 "qemu:///system?socket=rel/sock", "qemu:///system?mode=legacy",
                 "qemu:///system/", "qemu:///system?socket=/a&mode=legacy"):
        for readonly in (False, True):
            got = [_outcome(way, text, readonly)
                   for way in (ssh_helper.helper_socket, ssh_helper._parsed_socket)]
            assert got[0] == got[1], (text, readonly)
    assert ssh_helper.helper_socket("qemu:///system?socket=/a%20b", False) == "/a b"


def _outcome(way: Any, text: str, readonly: bool) -> str:
    from pyvirt.cli.ssh_helper import HelperError

    try:
        return str(way(text, readonly))
    except HelperError as exc:
        return f"error: {exc}"


def test_helper_starts_without_the_uri_parser() -> None:
    """For qemu:///system?socket=PATH the helper loads none of pyvirt's URI and path modules."""
    path = "/tmp/pyvirt-no-such-dir/libvirt-sock"
    code = ("import sys; from pyvirt.cli.ssh_helper import helper_socket; "
            f"print(helper_socket({'qemu:///system?socket=' + path!r}, False)); "
            "print(sorted(m for m in ('pyvirt.uri', 'pyvirt.conf.instance', 'pathlib', 'socket')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         check=True)
    assert out.stdout.splitlines() == [path, "[]"]
