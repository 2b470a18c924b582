# SPDX-License-Identifier: LGPL-2.1-or-later
"""The session pyvirtd started on demand (pyvirt.rpc.autostart), and ``pyvirtd --timeout``.

The autostart tests run the client as a real unprivileged user (the tests' QEMU user, through
``setpriv``), because that is the only case where libvirt -- and pyvirt -- start a daemon: root's
``qemu+unix:///session`` never does. The user's HOME and XDG directories are a fresh directory
of the test's. The client is Debian's python3 with pyvirt's source tree on PYTHONPATH (the venv's
interpreter may live where that user cannot enter), and ``pyvirtd`` on the user's PATH is a
two-line shell script that runs the same source tree's daemon: a real executable, found the way
an installed one is.

The idle-timeout tests run ``pyvirtd --root DIR --timeout SECS`` as root: the timeout does not
depend on the instance, and an embed root lets the test start a (paused, cheap) domain.
"""

from __future__ import annotations

import contextlib
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

from .testlib import short_tmpdir, start_pyvirtd

QEMU_TEST_USER = "pyvirt-test-qemu"  # tests/conftest.py's qemu_user fixture makes it
SYSTEM_PYTHON = "/usr/bin/python3"
SRC = str(Path(__file__).resolve().parents[2] / "src")


@dataclass
class Home:
    """A user's session: HOME and the XDG directories below ``dir``; ``bin`` holds its pyvirtd."""

    dir: Path
    uid: int
    gid: int

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

    def env(self, **extra: str) -> dict[str, str]:
        site = sysconfig.get_paths()["purelib"]  # lxml, qemu.qmp
        env = {"PATH": f"{self.dir.parent / 'bin'}:/usr/bin:/bin", "HOME": str(self.dir),
               "XDG_RUNTIME_DIR": str(self.run), "XDG_CONFIG_HOME": f"{self.dir}/config",
               "XDG_CACHE_HOME": f"{self.dir}/cache", "PYTHONPATH": f"{SRC}:{site}", "LANG": "C"}
        env.update(extra)
        return env

    def popen(self, script: str, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["setpriv", "--reuid", QEMU_TEST_USER, "--regid", QEMU_TEST_USER,
                                 "--init-groups", SYSTEM_PYTHON, "-c", script],
                                env=self.env(**extra), cwd="/", text=True, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run_client(self, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
        proc = self.popen(script, **extra)
        out, err = proc.communicate(timeout=90)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def daemons(self) -> list[int]:
        """pyvirtd processes of this session (found by their XDG_RUNTIME_DIR)."""
        marker = f"XDG_RUNTIME_DIR={self.run}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if b"pyvirt.daemon.main" in cmdline and marker in environ.split(b"\0"):
                found.append(int(entry))
        return found


@pytest.fixture
def home(qemu_user: tuple[int, int]) -> Iterator[Home]:
    parent = Path(tempfile.mkdtemp(prefix="pvs-", dir="/tmp"))  # short: the socket path
    parent.chmod(0o755)
    (parent / "bin").mkdir()
    daemon = parent / "bin" / "pyvirtd"
    daemon.write_text(f'#!/bin/sh\nexec {SYSTEM_PYTHON} -m pyvirt.daemon.main "$@"\n')
    daemon.chmod(0o755)
    h = Home(parent / "h", *qemu_user)
    h.dir.mkdir()
    os.chown(h.dir, *qemu_user)
    try:
        yield h
    finally:
        for pid in h.daemons():  # the test's own daemons, by pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        from lifecycle_support import kill_qemus

        kill_qemus(str(parent))
        shutil.rmtree(parent, ignore_errors=True)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(OSError):  # a zombie of ours is gone too
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("uri, euid, env, expected", [
    ("qemu+unix:///session", 1000, {}, True),
    ("qemu+unix:///session?mode=direct", 1000, {}, True),
    ("qemu:///session", 1000, {}, True),          # as libvirt; pyvirt.open routes it in-process
    ("qemu+unix:///session", 0, {}, False),       # root never gets a session daemon started
    ("qemu+unix:///system", 1000, {}, False),
    ("qemu+unix:///session?socket=/tmp/s", 1000, {}, False),  # a socket the user chose
    ("qemu+unix:///session?mode=legacy", 1000, {}, False),    # libvirt's libvirtd socket
    ("qemu+tcp://127.0.0.1/session", 1000, {}, False),
    ("qemu+unix:///session", 1000, {"PYVIRT_AUTOSTART": "0"}, False),
    ("qemu+unix:///session", 1000, {"LIBVIRT_AUTOSTART": "0"}, False),
    ("qemu+unix:///session", 1000, {"LIBVIRT_AUTOSTART": "1"}, True),
    ("qemu+unix:///session", 1000, {"PYVIRT_AUTOSTART": "1", "LIBVIRT_AUTOSTART": "0"}, True),
])
def test_when_autostart_applies(monkeypatch: pytest.MonkeyPatch, uri: str, euid: int,
                                env: dict[str, str], expected: bool) -> None:
    """libvirt's rules (remote_sockets.c): the session path, a non-root caller, the UNIX
    transport to the socket the client picks itself, and no LIBVIRT_AUTOSTART=0."""
    from pyvirt.rpc.autostart import wants_autostart
    from pyvirt.uri import parse_uri

    for name in ("PYVIRT_AUTOSTART", "LIBVIRT_AUTOSTART"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert wants_autostart(parse_uri(uri), euid=euid) is expected


# what a client prints: the URI, its class, the domains, the daemon's pid from its pid file
CLIENT = """
import json, os, pyvirt
c = pyvirt.open({uri!r})
pid = open(os.environ['XDG_RUNTIME_DIR'] + '/pyvirt/pyvirtd.pid').read().strip()
print(json.dumps({{'uri': c.getURI(), 'class': type(c).__name__,
                  'domains': [d.name() for d in c.listAllDomains()], 'pid': int(pid)}}))
c.close()
"""


def test_first_connection_starts_the_daemon_and_later_ones_reuse_it(home: Home) -> None:
    assert not home.socket.exists() and home.daemons() == []
    first = home.run_client(CLIENT.format(uri="qemu+unix:///session"))
    assert first.returncode == 0, first.stderr
    got = json.loads(first.stdout)
    assert got["uri"] == "qemu+unix:///session" and got["domains"] == []
    daemons = home.daemons()
    assert daemons == [got["pid"]]
    pid = daemons[0]
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{home.uid}\t" in status  # the user's own daemon
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[-3:] == [b"--timeout", b"120", b""]  # libvirt's autostart timeout
    assert os.getsid(pid) == pid  # a session of its own: the client's terminal signals miss it
    assert home.socket.is_socket() and home.pid_file.read_text().strip() == str(pid)

    # a second client finds it; so does the local URI, which now goes through the daemon
    # instead of failing because the daemon drives the instance
    for uri in ("qemu+unix:///session", "qemu:///session"):
        again = home.run_client(CLIENT.format(uri=uri))
        assert again.returncode == 0, again.stderr
        got = json.loads(again.stdout)
        assert (got["pid"], got["class"], got["uri"]) == (pid, "RemoteConnect", uri)
    assert home.daemons() == [pid]

    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 15)
    assert not home.socket.exists() and not home.pid_file.exists()


RACER = """
import os, sys, pyvirt
print('ready', flush=True)
sys.stdin.readline()
c = pyvirt.open('qemu+unix:///session')
print(open(os.environ['XDG_RUNTIME_DIR'] + '/pyvirt/pyvirtd.pid').read().strip(), c.getHostname())
c.close()
"""


def test_racing_clients_start_exactly_one_daemon(home: Home) -> None:
    racers = [home.popen(RACER) for _ in range(3)]
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
    assert [r.returncode for r in racers] == [0, 0, 0], [err for _, err in results]
    pids = {out.split()[0] for out, _ in results}
    assert len(pids) == 1
    assert home.daemons() == [int(pids.pop())]


OPEN_FAILS = """
import json, pyvirt
try:
    pyvirt.open('qemu+unix:///session')
except pyvirt.libvirtError as e:
    print(json.dumps([e.get_error_code(), e.get_error_domain(), str(e)]))
"""


def test_autostart_can_be_turned_off(home: Home) -> None:
    from pyvirt import _errcodes as codes

    for switch in ({"PYVIRT_AUTOSTART": "0"}, {"LIBVIRT_AUTOSTART": "0"},
                   {"PYVIRT_AUTOSTART": "0", "LIBVIRT_AUTOSTART": "1"}):
        p = home.run_client(OPEN_FAILS, **switch)
        assert p.returncode == 0, p.stderr
        code, domain, message = json.loads(p.stdout)
        assert (code, domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
        assert f"Failed to connect socket to '{home.socket}'" in message
    assert home.daemons() == [] and not home.run.exists()  # nothing started, nothing created
    # PYVIRT_AUTOSTART has the last word: 1 starts the daemon whatever LIBVIRT_AUTOSTART says
    p = home.run_client(CLIENT.format(uri="qemu+unix:///session"), PYVIRT_AUTOSTART="1",
                        LIBVIRT_AUTOSTART="0")
    assert p.returncode == 0, p.stderr
    assert home.daemons() == [json.loads(p.stdout)["pid"]]


def test_a_missing_daemon_binary_is_named_with_the_fix(home: Home) -> None:
    p = home.run_client(OPEN_FAILS, PATH="/usr/bin:/bin")  # no pyvirtd anywhere
    assert p.returncode == 0, p.stderr
    message = json.loads(p.stdout)[2]
    assert "cannot start the session daemon: no pyvirtd executable" in message
    assert "PYVIRTD_PATH" in message and "PATH" in message and "PYVIRT_AUTOSTART=0" in message
    p = home.run_client(OPEN_FAILS, PYVIRTD_PATH="/nonexistent/pyvirtd")
    assert "PYVIRTD_PATH=/nonexistent/pyvirtd is not an executable file" in json.loads(p.stdout)[2]
    assert home.daemons() == [] and not home.run.exists() and not home.log.exists()


HOLDER = """
import sys, pyvirt
c = pyvirt.open('qemu:///session')  # in-process: no daemon runs
print(type(c).__name__, flush=True)
sys.stdin.readline()
c.close()
"""


def test_a_daemon_that_cannot_start_is_reported_in_its_own_words(home: Home) -> None:
    """The instance is driven in-process by another program of the user: the daemon refuses to
    start, and the client says why (the daemon's own message) and where its log is."""
    holder = home.popen(HOLDER)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "virConnect\n"
        p = home.run_client(OPEN_FAILS)
        assert p.returncode == 0, p.stderr
        message = json.loads(p.stdout)[2]
        assert "exited with status 1 before accepting connections" in message
        assert f"is in use by pid {holder.pid}" in message and str(home.log) in message
        assert home.daemons() == [] and not home.socket.exists()
    finally:
        holder.communicate("\n", timeout=30)


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
