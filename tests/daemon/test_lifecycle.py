# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd as a process: readiness, clean exits, refusal to start half-configured, socket modes,
keepalive, idle timeout."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pyvirt.rpc.client import ConnectionClosed, RPCClient
from pyvirt.rpc.sync import Client

from .testlib import Raw, pyvirtd_command, short_tmpdir, start_pyvirtd


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(pyvirtd_command(*args), capture_output=True, text=True, timeout=timeout)


def test_ready_then_sigterm_cleans_up(own_root: Path) -> None:
    daemon = start_pyvirtd(own_root)
    run = own_root / "run"
    assert int(daemon.pid_file.read_text()) == daemon.proc.pid
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(daemon.socket_ro).st_mode) == 0o777
    with Raw.unix(daemon.socket) as raw:  # readiness means: it accepts right now
        raw.open()
        assert daemon.stop() == 0
        assert raw.eof()
    assert not (run / "libvirt-sock").exists()
    assert not (run / "libvirt-sock-ro").exists()
    assert not daemon.pid_file.exists()
    # the instance is free again: another daemon can take it
    again = start_pyvirtd(own_root)
    assert again.stop() == 0


def test_sigint_and_sighup(own_root: Path) -> None:
    daemon = start_pyvirtd(own_root)
    daemon.proc.send_signal(signal.SIGHUP)  # cannot reload yet: says so, keeps serving
    with Raw.unix(daemon.socket) as raw:
        raw.open()
        assert raw.call("CONNECT_GET_TYPE").type == "QEMU"
    assert daemon.stop(signal.SIGINT) == 0
    assert "SIGHUP" in daemon.stderr()
    assert not daemon.pid_file.exists()


def test_pid_file_option_and_notify_socket(own_root: Path) -> None:
    pid_file = own_root.parent / "custom.pid"
    notify_path = own_root.parent / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)
        daemon = start_pyvirtd(own_root, args=("--pid-file", str(pid_file)), wait=False,
                               env={"NOTIFY_SOCKET": str(notify_path)})
        try:
            message = notify.recv(1024)
            assert message.startswith(b"READY=1")
            # READY comes after the pid file, and both after the sockets accept
            assert int(pid_file.read_text()) == daemon.proc.pid
            with Raw.unix(daemon.socket) as raw:
                raw.open()
            assert not daemon.pid_file.exists()  # the default place is unused
        finally:
            assert daemon.stop() == 0
    assert not pid_file.exists()


def test_idle_timeout(own_root: Path) -> None:
    daemon = start_pyvirtd(own_root, args=("--timeout", "1"))
    with Raw.unix(daemon.socket) as raw:
        raw.open()
        time.sleep(1.6)  # a connected client keeps it up
        assert daemon.alive()
        assert raw.call("CONNECT_GET_TYPE").type == "QEMU"
    assert daemon.proc.wait(timeout=10) == 0
    assert not Path(daemon.socket).exists() and not daemon.pid_file.exists()


def test_second_daemon_on_same_root_refused(own_root: Path) -> None:
    first = start_pyvirtd(own_root)
    try:
        out = _run("--root", str(own_root))
        assert out.returncode == 1
        assert f"is held by a running pyvirtd (pid {first.proc.pid})" in out.stderr
        # with a pid file of its own, the instance lock still stops it
        out = _run("--root", str(own_root), "--pid-file", str(own_root.parent / "other.pid"))
        assert out.returncode == 1
        assert f"is in use by pid {first.proc.pid}" in out.stderr
        assert not (own_root.parent / "other.pid").exists()
        # the first one's sockets are untouched and still serve
        with Raw.unix(first.socket) as raw:
            raw.open()
    finally:
        assert first.stop() == 0


def test_stale_socket_replaced(own_root: Path) -> None:
    run = own_root / "run"
    run.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run / "libvirt-sock"))
    stale.close()  # bound, never listening: what a killed daemon leaves
    daemon = start_pyvirtd(own_root)
    with Raw.unix(daemon.socket) as raw:
        raw.open()
    assert daemon.stop() == 0


_BAD_CONFIGS = [
    ("max_workers = 0\n", 1, "max_workers"),
    ('unix_sock_rw_perms = "rwx"\n', 1, "unix_sock_rw_perms"),
    ('\n\nauth_tls = "polkit"\n', 3, "polkit authentication is not supported"),
    ('auth_unix_ro = "polkit"\n', 1, "polkit authentication is not supported"),
    ("keepalive_interval = 0\n", 1, "keepalive_interval"),
    ('log_outputs = "1:journald"\n', 1, "journald"),
    ('tcp_port = "0"\n', 1, "tcp_port"),
    ('unix_sock_group = "no-such-group-xyz"\n', 1, "unix_sock_group"),
    ("listen_tcp = 1\n", 1, "auth_tcp is not set"),
    ('listen_tcp = 1\nauth_tcp = "sasl"\n', 2, 'auth_tcp = "sasl" on the plain TCP listener'),
    ("listen_tls = 1\n", 1, "Cannot read CA certificate"),
    ("max_clients = [ 1 ]\n", 1, "expects a non-negative integer"),
    ("this is not = a config\n", 1, "expected '='"),
]


@pytest.mark.parametrize(("text", "line", "words"), _BAD_CONFIGS,
                         ids=[w for _, _, w in _BAD_CONFIGS])
def test_bad_config_refused_before_anything(own_root: Path, text: str, line: int,
                                            words: str) -> None:
    conf = own_root.parent / "bad.conf"
    conf.write_text(text)
    out = _run("--root", str(own_root), "--config", str(conf), "--listen")
    assert out.returncode == 1, out.stderr
    assert out.stderr.startswith(f"pyvirtd: error: {conf}:{line}: "), out.stderr
    assert words in out.stderr
    # nothing bound, no pid file -- nothing created at all
    assert not own_root.exists()


def test_missing_config_and_bad_arguments(own_root: Path) -> None:
    out = _run("--root", str(own_root), "--config", str(own_root.parent / "nope.conf"))
    assert out.returncode == 1 and "nope.conf: the configuration file does not exist" in out.stderr
    out = _run("--root", str(own_root), "--timeout", "-1")
    assert out.returncode == 2 and "--timeout" in out.stderr
    long_root = Path("/tmp/" + "x" * 60)
    out = _run("--root", str(long_root))
    assert out.returncode == 1 and "too long" in out.stderr
    assert not own_root.exists() and not long_root.exists()


def test_config_settings_applied(own_root: Path) -> None:
    log = own_root.parent / "pyvirtd.log"
    sock_dir = own_root.parent / "s"
    daemon = start_pyvirtd(own_root, config=(
        f'unix_sock_dir = "{sock_dir}"\nunix_sock_rw_perms = "0770"\nunix_sock_ro_perms = "0755"\n'
        f'unix_sock_group = "root"\nlog_outputs = "1:file:{log}"\nbogus_key = 1\n'
        f'max_workers = 2\nprio_workers = 0\n'))
    try:
        assert stat.S_IMODE(os.stat(sock_dir / "libvirt-sock").st_mode) == 0o770
        assert stat.S_IMODE(os.stat(sock_dir / "libvirt-sock-ro").st_mode) == 0o755
        with Raw.unix(str(sock_dir / "libvirt-sock")) as raw:
            raw.open()
            assert raw.call("CONNECT_GET_HOSTNAME").hostname
        assert "unknown key 'bogus_key' ignored" in daemon.stderr()
    finally:
        assert daemon.stop() == 0
    text = log.read_text()
    assert "uid=0" in text and "ready" in text  # peer credentials are logged
    assert not (sock_dir / "libvirt-sock").exists()


def test_keepalive_drops_silent_client(own_root: Path) -> None:
    """A client that asked for keepalive and then never answers PINGs is dropped, after as many
    PINGs as keepalive_count, each given an interval (libvirt's virKeepAliveTimer); one that
    answers stays; one that never asked is never pinged."""
    daemon = start_pyvirtd(own_root, config="keepalive_interval = 1\nkeepalive_count = 2\n")
    try:
        silent = Raw.unix(daemon.socket)
        silent.open()  # asks for feature 10
        never_asked = Raw.unix(daemon.socket)
        assert never_asked.call("CONNECT_OPEN", name="", flags=0) is None
        answering = Client.connect_unix(daemon.socket)
        answering.open("")  # pyvirt's client answers PINGs
        start = time.monotonic()
        pings = []
        while (ping := silent.recv(timeout=5)) is not None:
            pings.append((ping.header.prog, ping.header.proc))
        assert pings == [(0x6B656570, 1)] * 2  # keepalive PINGs, then the end
        assert 2.5 < time.monotonic() - start < 8
        with pytest.raises(TimeoutError):
            never_asked.recv(timeout=0.5)
        assert never_asked.call("CONNECT_GET_TYPE").type == "QEMU"
        assert answering.call("CONNECT_GET_TYPE").type == "QEMU"
        assert answering.rpc.pings_received >= 1
        answering.close()
        silent.close()
        never_asked.close()
    finally:
        assert daemon.stop() == 0


def test_no_client_survives_shutdown(own_root: Path) -> None:
    import asyncio

    daemon = start_pyvirtd(own_root)

    async def scenario() -> None:
        client = await RPCClient.connect_unix(daemon.socket)
        await client.open("")
        daemon.proc.terminate()
        with pytest.raises(ConnectionClosed):
            for _ in range(100):
                await client.call("CONNECT_GET_TYPE")
                await asyncio.sleep(0.05)
        await client.abort()

    asyncio.run(scenario())
    assert daemon.proc.wait(timeout=10) == 0


def test_session_daemon_paths() -> None:
    """Without --root and not root: the session instance, one socket under XDG_RUNTIME_DIR."""
    base = short_tmpdir("pvs-")
    runtime, home = base / "run", base / "home"
    for d in (runtime, home):
        d.mkdir()
        os.chown(d, 65534, 65534)
    os.chmod(base, 0o755)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(home),
           "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}
    proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             *pyvirtd_command("--timeout", "30")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        sock = runtime / "pyvirt" / "libvirt-sock"
        deadline = time.monotonic() + 20
        while not (runtime / "pyvirt" / "pyvirtd.pid").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not (runtime / "pyvirt" / "libvirt-sock-ro").exists()
        with Raw.unix(str(sock)) as raw:  # root may talk to anyone's session daemon
            assert raw.call("AUTH_LIST").types == [0]
            assert raw.call("CONNECT_OPEN", name="qemu:///system", flags=0).code == 5
            assert raw.call("CONNECT_OPEN", name="qemu:///session", flags=0) is None
            assert raw.call("CONNECT_GET_URI").uri == "qemu:///session"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        import shutil
        shutil.rmtree(base, ignore_errors=True)


def test_port_in_use_leaves_nothing_behind(own_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        conf = own_root.parent / "p.conf"
        conf.write_text(f'listen_tcp = 1\nauth_tcp = "none"\nlisten_addr = "127.0.0.1"\n'
                        f'tcp_port = "{port}"\n')
        out = _run("--root", str(own_root), "--config", str(conf), "--listen")
    assert out.returncode == 1
    assert f"cannot listen on tcp 127.0.0.1:{port}" in out.stderr
    run = own_root / "run"
    assert sorted(p.name for p in run.iterdir()) == ["qemu", "swtpm"]  # no socket, no pid file
    # and the instance lock was released: the same root starts fine now
    daemon = start_pyvirtd(own_root)
    assert daemon.stop() == 0


_PAUSED = ("<domain type='qemu'><name>ephemeral</name><memory unit='MiB'>32</memory>"
           "<os><type arch='x86_64'>hvm</type></os><devices/></domain>")


@pytest.mark.parametrize("ending", ["c.close()", "os._exit(0)"])
def test_autodestroy_domain_dies_with_its_client(own_root: Path, ending: str) -> None:
    """VIR_DOMAIN_START_AUTODESTROY through the daemon: the domain (a real QEMU) is destroyed
    when the client that started it closes its connection (CONNECT_CLOSE, which then has to
    wait for QEMU, off the event loop) or just goes away; other clients are served meanwhile."""
    import sys

    from lifecycle_support import kill_qemus

    import pyvirt

    daemon = start_pyvirtd(own_root)
    try:
        script = (f"import os, pyvirt\nc = pyvirt.open({daemon.uri()!r})\n"
                  f"c.createXML({_PAUSED!r}, 3)\n"  # VIR_DOMAIN_START_PAUSED | AUTODESTROY
                  "print([d.name() for d in c.listAllDomains(1)], flush=True)\n"
                  f"{ending}\n")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60)
        assert (out.returncode, out.stdout) == (0, "['ephemeral']\n"), out.stderr
        watcher = pyvirt.open(daemon.uri())
        try:
            deadline = time.monotonic() + 15
            while watcher.listAllDomains(1) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert watcher.listAllDomains() == []  # destroyed, and transient: gone
        finally:
            watcher.close()
        assert daemon.stop() == 0
    finally:
        daemon.stop()
        kill_qemus(str(own_root))
