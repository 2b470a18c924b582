# SPDX-License-Identifier: LGPL-2.1-or-later
"""The session pyvirtd started on demand (pyvirt.rpc.autostart), and ``pyvirtd --timeout``.

``qemu:///session`` (and ``qemu+unix:///session``) always go through the session pyvirtd, which
the first client starts when none runs, as libvirt's remote driver does. The tests run the client
as a real unprivileged user (the tests' QEMU user, through ``setpriv``) and as root, each with
HOME and the XDG directories in a fresh directory of the test's. The user's client is Debian's
python3 with pyvirt's source tree on PYTHONPATH (the venv's interpreter may live where that user
cannot enter), and ``pyvirtd`` on the user's PATH is a two-line shell script that runs the same
source tree's daemon: a real executable, found the way an installed one is. Root's client is the
venv's interpreter, which finds the venv's own ``pyvirtd`` beside it.

Every test's daemons are found by their XDG_RUNTIME_DIR and stopped with SIGTERM afterwards
(tests/session_support.py); the fixture then checks that they left no socket and no pid file.

The idle-timeout tests run ``pyvirtd --root DIR --timeout SECS`` as root: the timeout does not
depend on the instance, and an embed root lets the test start a (paused, cheap) domain; one more
runs a session daemon with a short timeout and reaches it as ``qemu:///session``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from session_support import session_daemons, stop_session_daemons, wait_gone

from .testlib import short_tmpdir, start_pyvirtd

QEMU_TEST_USER = "pyvirt-test-qemu"  # tests/conftest.py's qemu_user fixture makes it
SYSTEM_PYTHON = "/usr/bin/python3"
SRC = str(Path(__file__).resolve().parents[2] / "src")


@dataclass
class Home:
    """A user's session: HOME and the XDG directories below ``dir``; ``bin`` holds the user's
    pyvirtd. ``user`` None: root, running the venv's interpreter."""

    dir: Path
    uid: int
    gid: int
    user: str | None

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def socket(self) -> Path:
        return self.run / "pyvirt" / "libvirt-sock"

    @property
    def pid_file(self) -> Path:
        return self.run / "pyvirt" / "pyvirtd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "cache" / "pyvirt" / "pyvirtd.log"

    @property
    def bin(self) -> Path:
        return self.dir.parent / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        site = sysconfig.get_paths()["purelib"]  # lxml, qemu.qmp
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.dir),
               "XDG_RUNTIME_DIR": str(self.run), "XDG_CONFIG_HOME": f"{self.dir}/config",
               "XDG_CACHE_HOME": f"{self.dir}/cache", "PYTHONPATH": f"{SRC}:{site}", "LANG": "C"}
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        if self.user is None:
            return [sys.executable, *args]
        return ["setpriv", "--reuid", self.user, "--regid", self.user, "--init-groups",
                SYSTEM_PYTHON, *args]

    def popen(self, script: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv("-c", script), env=self.env(**extra), cwd="/",
                                text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def run_client(self, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = self.popen(script, **extra)
        out, err = proc.communicate(timeout=90)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def pyvirsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv("-m", "pyvirt.cli.pyvirsh", *args), env=self.env(),
                              cwd="/", capture_output=True, text=True, timeout=90)

    def daemons(self) -> list[int]:
        """pyvirtd processes of this session (found by their XDG_RUNTIME_DIR)."""
        return session_daemons(self.run)


def _make_home(who: str, qemu_user: tuple[int, int]) -> Iterator[Home]:
    parent = Path(tempfile.mkdtemp(prefix="pvs-", dir="/tmp"))  # short: the socket path
    parent.chmod(0o755)
    (parent / "bin").mkdir()
    daemon = parent / "bin" / "pyvirtd"
    daemon.write_text(f'#!/bin/sh\nexec {SYSTEM_PYTHON} -m pyvirt.daemon.main "$@"\n')
    daemon.chmod(0o755)
    ids = qemu_user if who == "user" else (0, 0)
    h = Home(parent / "h", *ids, user=QEMU_TEST_USER if who == "user" else None)
    h.dir.mkdir()
    os.chown(h.dir, *ids)
    try:
        yield h
    finally:
        stop_session_daemons(h.run)  # the test's own daemons, by their runtime directory
        from lifecycle_support import kill_qemus

        kill_qemus(str(parent))
        left = [p for p in (h.socket, h.pid_file) if p.exists()]
        shutil.rmtree(parent, ignore_errors=True)
        assert left == [], f"the session daemon left {left}"


@pytest.fixture
def home(qemu_user: tuple[int, int]) -> Iterator[Home]:
    """An unprivileged user's session."""
    yield from _make_home("user", qemu_user)


@pytest.fixture(params=["user", "root"])
def anyone(request: pytest.FixtureRequest, qemu_user: tuple[int, int]) -> Iterator[Home]:
    """The session of an unprivileged user, then root's (libvirt starts none for root; pyvirt's
    root has a session instance of its own: pyvirt.rpc.autostart)."""
    yield from _make_home(request.param, qemu_user)


@pytest.mark.parametrize("uri, env, expected", [
    ("qemu+unix:///session", {}, True),
    ("qemu+unix:///session?mode=direct", {}, True),
    ("qemu:///session", {}, True),
    ("qemu+unix:///system", {}, False),
    ("qemu:///system", {}, False),
    ("qemu+unix:///session?socket=/tmp/s", {}, False),  # a socket the user chose
    ("qemu+unix:///session?mode=legacy", {}, False),    # libvirt's libvirtd socket
    ("qemu:///session?mode=legacy", {}, False),
    ("qemu+tcp://127.0.0.1/session", {}, False),
    ("qemu+unix:///session", {"PYVIRT_AUTOSTART": "0"}, False),
    ("qemu:///session", {"LIBVIRT_AUTOSTART": "0"}, False),
    ("qemu+unix:///session", {"LIBVIRT_AUTOSTART": "1"}, True),
    ("qemu+unix:///session", {"PYVIRT_AUTOSTART": "1", "LIBVIRT_AUTOSTART": "0"}, True),
])
def test_when_autostart_applies(monkeypatch: pytest.MonkeyPatch, uri: str, env: dict[str, str],
                                expected: bool) -> None:
    """libvirt's rules (remote_sockets.c): the session path, the UNIX transport to the socket the
    client picks itself, and no LIBVIRT_AUTOSTART=0; for root as for anyone else."""
    from pyvirt.rpc.autostart import wants_autostart
    from pyvirt.uri import parse_uri

    for name in ("PYVIRT_AUTOSTART", "LIBVIRT_AUTOSTART"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert wants_autostart(parse_uri(uri)) is expected


# what a client prints: the URI, its class, the domains, the daemon's pid from its pid file
CLIENT = """
import json, os, pyvirt
c = pyvirt.open({uri!r})
pid = open(os.environ['XDG_RUNTIME_DIR'] + '/pyvirt/pyvirtd.pid').read().strip()
print(json.dumps({{'uri': c.getURI(), 'class': type(c).__name__,
                  'domains': [d.name() for d in c.listAllDomains()], 'pid': int(pid)}}))
c.close()
"""


@pytest.mark.parametrize("uri", ["qemu:///session", "qemu+unix:///session"])
def test_first_connection_starts_the_daemon_and_later_ones_reuse_it(anyone: Home,
                                                                    uri: str) -> None:
    home = anyone
    assert not home.socket.exists() and home.daemons() == []
    first = home.run_client(CLIENT.format(uri=uri))
    assert first.returncode == 0, first.stderr
    got = json.loads(first.stdout)
    assert (got["uri"], got["class"], got["domains"]) == (uri, "RemoteConnect", [])
    daemons = home.daemons()
    assert daemons == [got["pid"]]
    pid = daemons[0]
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{home.uid}\t" in status  # the caller's own daemon
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    # libvirt's autostart timeout; --session, since root's plain pyvirtd serves qemu:///system
    assert argv[-4:] == [b"--session", b"--timeout", b"120", b""]
    assert os.getsid(pid) == pid  # a session of its own: the client's terminal signals miss it
    assert home.socket.is_socket() and home.pid_file.read_text().strip() == str(pid)

    # later clients find it, whichever session URI they use
    for again_uri in ("qemu:///session", "qemu+unix:///session", uri):
        again = home.run_client(CLIENT.format(uri=again_uri))
        assert again.returncode == 0, again.stderr
        got = json.loads(again.stdout)
        assert (got["pid"], got["class"], got["uri"]) == (pid, "RemoteConnect", again_uri)
    assert home.daemons() == [pid]

    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 15)
    assert not home.socket.exists() and not home.pid_file.exists()


DEFINE = """
import pyvirt
c = pyvirt.open('qemu:///session')
c.defineXML("<domain type='qemu'><name>kept</name><memory unit='MiB'>32</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>")
c.close()
"""


def test_pyvirsh_reuses_the_daemon_and_sees_its_instance(anyone: Home) -> None:
    """``pyvirsh -c qemu:///session`` twice: one daemon, whose instance is the XDG one."""
    first = anyone.pyvirsh("-c", "qemu:///session", "list", "--all")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split("\n")[:2] == [" Id   Name   State", "-" * 20]
    pids = anyone.daemons()
    assert len(pids) == 1 and anyone.pid_file.read_text().strip() == str(pids[0])
    p = anyone.run_client(DEFINE)
    assert p.returncode == 0, p.stderr
    assert (anyone.dir / "config" / "pyvirt" / "qemu" / "kept.xml").is_file()
    second = anyone.pyvirsh("-c", "qemu:///session", "list", "--all")
    assert second.returncode == 0, second.stderr
    assert " -    kept   shut off" in second.stdout.splitlines()
    assert anyone.daemons() == pids
    # the daemon's instance runs domains: QEMU is the caller's (root's session one too)
    started = anyone.pyvirsh("-c", "qemu:///session", "start", "kept", "--paused")
    assert started.returncode == 0, started.stderr
    state = anyone.pyvirsh("-c", "qemu:///session", "domstate", "kept")
    assert state.stdout.strip() == "paused", state.stderr
    status = json.loads((anyone.run / "pyvirt" / "qemu" / "run" / "kept.json").read_text())
    qemu = status["data"]["identity"]["pid"]
    assert f"Uid:\t{anyone.uid}\t" in Path(f"/proc/{qemu}/status").read_text()
    destroyed = anyone.pyvirsh("-c", "qemu:///session", "destroy", "kept")
    assert destroyed.returncode == 0, destroyed.stderr
    assert anyone.daemons() == pids and wait_gone(qemu, 15)


def test_pyvirtd_session_option(tmp_path: Path) -> None:
    """``--session`` chooses the session instance for root, whose plain pyvirtd serves
    qemu:///system; with ``--root`` it names a second instance and is refused."""
    from pyvirt.daemon.instance import served_instance

    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        session = served_instance(None, euid=0, session=True)
        assert (session.kind, session.uri) == ("session", "qemu:///session")
        assert session.run_dir == tmp_path / "run" / "pyvirt" and not session.has_ro_socket
        assert served_instance(None, euid=0).kind == "system"
    p = subprocess.run([sys.executable, "-m", "pyvirt.daemon.main", "--session", "--root",
                        str(tmp_path / "r")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "--session and --root name different instances: give one of them" in p.stderr
    assert not (tmp_path / "r").exists()


RACER = """
import os, sys, pyvirt
print('ready', flush=True)
sys.stdin.readline()
c = pyvirt.open({uri!r})
print(open(os.environ['XDG_RUNTIME_DIR'] + '/pyvirt/pyvirtd.pid').read().strip(), c.getHostname())
c.close()
"""


def _race(home: Home, uri: str, clients: int = 3) -> None:
    racers = [home.popen(RACER.format(uri=uri)) for _ in range(clients)]
    try:
        for r in racers:
            assert r.stdout is not None and r.stdout.readline() == "ready\n"
        for r in racers:  # all at once
            assert r.stdin is not None
            r.stdin.write("go\n")
            r.stdin.flush()
        results = [r.communicate(timeout=90) for r in racers]
    finally:
        for r in racers:
            if r.poll() is None:
                r.kill()
                r.wait()
    assert [r.returncode for r in racers] == [0] * clients, [err for _, err in results]
    pids = {out.split()[0] for out, _ in results}
    assert len(pids) == 1
    assert home.daemons() == [int(pids.pop())]


def test_racing_clients_start_exactly_one_daemon(anyone: Home) -> None:
    _race(anyone, "qemu:///session")


def test_racing_remote_uri_clients_start_exactly_one_daemon(home: Home) -> None:
    _race(home, "qemu+unix:///session")


OPEN_FAILS = """
import json, pyvirt
try:
    pyvirt.open({uri!r})
except pyvirt.libvirtError as e:
    print(json.dumps([e.get_error_code(), e.get_error_domain(), str(e)]))
"""


def _open_error(home: Home, uri: str, **env: str) -> tuple[int, int, str]:
    p = home.run_client(OPEN_FAILS.format(uri=uri), **env)
    assert p.returncode == 0 and p.stdout, p.stderr
    code, domain, message = json.loads(p.stdout)
    return code, domain, message


def test_autostart_can_be_turned_off(anyone: Home) -> None:
    from pyvirt import _errcodes as codes

    home = anyone
    for switch in ({"PYVIRT_AUTOSTART": "0"}, {"LIBVIRT_AUTOSTART": "0"},
                   {"PYVIRT_AUTOSTART": "0", "LIBVIRT_AUTOSTART": "1"}):
        name = "PYVIRT_AUTOSTART" if "PYVIRT_AUTOSTART" in switch else "LIBVIRT_AUTOSTART"
        for uri in ("qemu:///session", "qemu+unix:///session"):
            code, domain, message = _open_error(home, uri, **switch)
            assert (code, domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
            assert message.startswith(f"Failed to connect socket to '{home.socket}': No such "
                                      "file or directory"), message
        # the local URI also says how to go on
        code, domain, message = _open_error(home, "qemu:///session", **switch)
        daemon = "pyvirtd --session" if home.user is None else "pyvirtd"
        assert f"no session pyvirtd runs and {name}=0 stops pyvirt from starting one" in message
        assert f"start '{daemon}' yourself, unset {name}" in message
        assert "qemu:///embed?root=DIR" in message
    assert home.daemons() == [] and not home.run.exists()  # nothing started, nothing created
    # PYVIRT_AUTOSTART has the last word: 1 starts the daemon whatever LIBVIRT_AUTOSTART says
    p = home.run_client(CLIENT.format(uri="qemu:///session"), PYVIRT_AUTOSTART="1",
                        LIBVIRT_AUTOSTART="0")
    assert p.returncode == 0, p.stderr
    pid = json.loads(p.stdout)["pid"]
    assert home.daemons() == [pid]
    # with autostart off, a daemon that runs is used all the same
    p = home.run_client(CLIENT.format(uri="qemu:///session"), PYVIRT_AUTOSTART="0")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["pid"] == pid


@pytest.mark.parametrize("uri", ["qemu:///session", "qemu+unix:///session"])
def test_a_missing_daemon_binary_is_named_with_the_fix(home: Home, uri: str) -> None:
    """(The user's: root's client, the venv's interpreter, has pyvirtd beside it.)"""
    message = _open_error(home, uri, PATH="/usr/bin:/bin")[2]  # no pyvirtd anywhere
    assert "cannot start the session daemon: no pyvirtd executable" in message
    assert "PYVIRTD_PATH" in message and "PATH" in message and "PYVIRT_AUTOSTART=0" in message
    assert home.daemons() == [] and not home.run.exists() and not home.log.exists()


@pytest.mark.parametrize("uri", ["qemu:///session", "qemu+unix:///session"])
def test_a_broken_pyvirtd_path_is_reported_and_leaves_nothing(anyone: Home, uri: str) -> None:
    home = anyone
    message = _open_error(home, uri, PYVIRTD_PATH="/nonexistent/pyvirtd")[2]
    assert ("cannot start the session daemon: PYVIRTD_PATH=/nonexistent/pyvirtd is not an "
            "executable file; point PYVIRTD_PATH at pyvirtd") in message
    assert home.daemons() == [] and not home.run.exists() and not home.log.exists()
    # an executable that is no daemon: its own words, its exit status, no daemon, no socket
    fake = home.bin / "not-a-daemon"
    fake.write_text("#!/bin/sh\necho \"not a daemon: $*\" >&2\nexit 3\n")
    fake.chmod(0o755)
    message = _open_error(home, uri, PYVIRTD_PATH=str(fake))[2]
    assert f"the session daemon {fake} exited with status 3 before accepting" in message
    assert "not a daemon: --session --timeout 120" in message and str(home.log) in message
    assert home.daemons() == [] and not home.socket.exists() and not home.pid_file.exists()


def test_a_daemon_that_cannot_start_is_reported_in_its_own_words(anyone: Home) -> None:
    """The user's pyvirtd.conf is wrong: the daemon refuses to start, and the client says why
    (the daemon's own message) and where its log is."""
    home = anyone
    conf = home.dir / "config" / "pyvirt" / "pyvirtd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("max_clients = 0\n")
    for path in (conf.parent.parent, conf.parent, conf):
        os.chown(path, home.uid, home.gid)
    message = _open_error(home, "qemu:///session")[2]
    assert "exited with status 1 before accepting connections" in message
    assert "max_clients must be at least 1" in message and str(home.log) in message
    assert home.daemons() == [] and not home.socket.exists() and not home.pid_file.exists()


def test_a_session_daemon_with_a_timeout_is_reused_then_exits_when_idle(anyone: Home) -> None:
    """A session pyvirtd started by hand with a short --timeout: ``qemu:///session`` uses it (no
    second daemon), and it exits, cleaning up, once the client has gone for that long."""
    home = anyone
    daemon = subprocess.Popen(home.argv("-m", "pyvirt.daemon.main", "--session", "--timeout",
                                        "1.5"), env=home.env(), cwd="/",
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not home.pid_file.exists():
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            assert time.monotonic() < deadline, "the daemon did not get ready"
            time.sleep(0.05)
        p = home.run_client(CLIENT.format(uri="qemu:///session"))
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["pid"] == daemon.pid and home.daemons() == [daemon.pid]
        left = time.monotonic()
        assert daemon.wait(timeout=20) == 0
        assert time.monotonic() - left >= 1.5 - 0.3
        assert not home.socket.exists() and not home.pid_file.exists()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


# ---- pyvirtd --timeout --------------------------------------------------------------------

PAUSED = """<domain type='qemu'><name>idle</name><memory unit='MiB'>32</memory>
<os><type arch='x86_64'>hvm</type></os><devices/></domain>"""


def pyvirt_call(uri: str, code: str) -> None:
    """Run ``code`` with ``c``, a pyvirt connection to ``uri``, in a client process of its own
    (the daemon sees it connect and leave)."""
    script = f"import pyvirt\nc = pyvirt.open({uri!r})\n{code}\nc.close()\n"
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_timeout_exits_when_idle_and_cleans_up() -> None:
    parent = short_tmpdir("pvt-")
    d = start_pyvirtd(parent / "r", args=("--timeout", "1.5"))
    try:
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as held:
            held.connect(d.socket)
            time.sleep(2.5)
            assert d.alive()  # a connected client keeps it, even a silent one
        assert d.proc.wait(timeout=10) == 0
        assert time.monotonic() - started >= 2.5 + 1.5 - 0.3
        assert not Path(d.socket).exists() and not Path(d.socket_ro).exists()
        assert not d.pid_file.exists()
    finally:
        d.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
def test_timeout_waits_for_running_domains() -> None:
    from lifecycle_support import kill_qemus

    parent = short_tmpdir("pvt-")
    d = start_pyvirtd(parent / "r", args=("--timeout", "1.5"))
    try:
        pyvirt_call(d.uri(), f"c.createXML({PAUSED!r}, 1)")  # VIR_DOMAIN_START_PAUSED
        time.sleep(4)  # well past the timeout with no client: the paused domain keeps it
        assert d.alive() and Path(d.socket).exists()
        stopped = time.monotonic()
        pyvirt_call(d.uri(), "c.lookupByName('idle').destroy()")
        assert d.proc.wait(timeout=15) == 0
        # the idle time counts from the domain's end, not from the last client before it
        assert time.monotonic() - stopped >= 1.5 - 0.3
        assert not Path(d.socket).exists() and not d.pid_file.exists()
    finally:
        d.stop()
        kill_qemus(str(parent))
        shutil.rmtree(parent, ignore_errors=True)
