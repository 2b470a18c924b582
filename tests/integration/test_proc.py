# SPDX-License-Identifier: LGPL-2.1-or-later
"""Process primitives with real processes: detached QEMU, reaping, identity, termination, status files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvirt.errors import OperationFailed
from pyvirt.qemu import proc
from pyvirt.qemu.monitor import Monitor
from pyvirt.qemu.proc import Ended, ProcessIdentity, StatusFormat

QEMU = "/usr/bin/qemu-system-x86_64"


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pvproc-", dir="/tmp"))  # short: UNIX socket paths live here
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cleanup() -> Iterator[list[int]]:
    """Pids to SIGKILL at the end, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        assert proc.wait_for_exit(pid, 10)


def _qemu_argv(monitor_fd: int | str) -> list[str]:
    return [QEMU, "-accel", "tcg", "-m", "64", "-nodefaults", "-no-user-config", "-display", "none", "-S",
            "-chardev", f"socket,id=mon,fd={monitor_fd},server=on,wait=off",
            "-mon", "chardev=mon,mode=control"]


def _start_qemu(workdir: Path, cleanup: list[int]) -> tuple[int, Path]:
    path = workdir / "m.sock"
    with proc.listen_unix(path) as sock:
        pid = proc.spawn_detached(_qemu_argv(sock.fileno()), pass_fds=[sock.fileno()])
    cleanup.append(pid)
    # Until QEMU has set up, SIGTERM's default action kills it, which is not what these tests are about.
    with Monitor("startup") as mon:
        mon.connect(path)
    return pid, path


def _stat_fields(pid: int) -> list[bytes]:
    """/proc/PID/stat from field 3 (state) on."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    return raw[raw.rindex(b")") + 2:].split()


def _state(pid: int) -> str:
    return _stat_fields(pid)[0].decode()


def _ppid(pid: int) -> int:
    return int(_stat_fields(pid)[1])


# --- spawning ------------------------------------------------------------------------------------

SPAWNER = textwrap.dedent("""
    import json, os, sys
    from pyvirt.qemu import proc
    argv = json.loads(sys.argv[1])
    with proc.listen_unix(sys.argv[2]) as sock:
        argv = [a.replace("@FD@", str(sock.fileno())) for a in argv]
        pid = proc.spawn_detached(argv, pass_fds=[sock.fileno()])
    print(json.dumps(proc.ProcessIdentity.of(pid).to_dict()), flush=True)
    # Leave at once, as a CLI process would.
    os._exit(0)
""")


def test_qemu_outlives_the_process_that_spawned_it(workdir: Path, cleanup: list[int]) -> None:
    path = workdir / "m.sock"
    spawner = subprocess.Popen([sys.executable, "-c", SPAWNER, json.dumps(_qemu_argv("@FD@")), str(path)],
                               stdout=subprocess.PIPE, text=True)
    out, _ = spawner.communicate(timeout=60)
    assert spawner.returncode == 0
    ident = ProcessIdentity.from_dict(json.loads(out))
    cleanup.append(ident.pid)
    # The spawner is gone; QEMU is not its child any more, leads its own session and still runs.
    time.sleep(0.2)
    assert ident.matches()
    assert _ppid(ident.pid) not in (spawner.pid, os.getpid())
    assert os.getsid(ident.pid) == ident.pid
    assert ident.exe == os.path.realpath(QEMU)
    # This test process is a newcomer to it: connect to its monitor and quit it.
    mon = Monitor("reconnected")
    mon.connect(path)
    assert mon.execute("query-status")["status"] == "prelaunch"
    mon.execute("quit")
    assert proc.wait_for_exit(ident, 10)
    assert not ident.matches()
    assert proc.exit_status(ident.pid) is None  # not our child: no status to know
    mon.close()


def _settled_fds(pid: int, want: set[int], timeout: float = 3.0) -> dict[int, str]:
    """The child's open fds once its dynamic loader is done: right after exec, ld.so has
    /etc/ld.so.cache and the libraries open for a moment (as fd 3, ...). A leaked fd stays open,
    so the set is read again until it is ``want`` or ``timeout`` passes, then returned as is."""
    deadline = time.monotonic() + timeout
    while True:
        fds: dict[int, str] = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                pass  # closed between the listing and the look
        if set(fds) == want or time.monotonic() > deadline:
            return fds
        time.sleep(0.005)


def test_spawn_gives_only_the_fds_asked_for(workdir: Path, cleanup: list[int]) -> None:
    keep_r, keep_w = os.pipe()
    stray_r, stray_w = os.pipe()
    os.set_inheritable(stray_w, True)  # close_fds must still keep it from the child
    try:
        with open(workdir / "log", "wb") as log:
            pid = proc.spawn_detached(["/bin/sleep", "30"], {"PYVIRT_TEST": "1"}, cwd=workdir,
                                      log_fd=log.fileno(), pass_fds=[keep_w], umask=0o027)
        cleanup.append(pid)
        fds = _settled_fds(pid, {0, 1, 2, keep_w})
        assert set(fds) == {0, 1, 2, keep_w}
        assert fds[0] == "/dev/null"
        assert fds[1] == fds[2] == str(workdir / "log")
        assert fds[keep_w] == os.readlink(f"/proc/self/fd/{keep_w}")
        assert os.readlink(f"/proc/{pid}/cwd") == str(workdir)
        assert (os.getsid(pid), os.getpgid(pid)) == (pid, pid)
        assert open(f"/proc/{pid}/environ", "rb").read() == b"PYVIRT_TEST=1\0"
        status = dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
        assert status["Umask"] == "0027"
    finally:
        for fd in (keep_r, keep_w, stray_r, stray_w):
            os.close(fd)


def test_spawn_failure_names_the_program() -> None:
    with pytest.raises(OperationFailed, match=r"^cannot run /nonexistent/qemu: No such file or directory; "
                                              "check that the emulator exists"):
        proc.spawn_detached(["/nonexistent/qemu"])


def test_children_are_reaped_with_their_status(workdir: Path) -> None:
    pids = [proc.spawn_detached(["/bin/sh", "-c", "exit 3"]),
            proc.spawn_detached(["/bin/sh", "-c", "kill -9 $$"])]
    for pid in pids:
        assert proc.wait_for_exit(pid, 10)
        # Reaped: no zombie is left behind (its /proc entry is gone).
        assert not os.path.exists(f"/proc/{pid}")
    assert [proc.exit_status(pid) for pid in pids] == [3, -9]
    # A quick child that the caller never waits for is reaped all the same.
    # (Its /proc entry goes when the reaper's waitpid returns, a moment before the reaper
    # records the status: wait for both.)
    pid = proc.spawn_detached(["/bin/true"])
    deadline = time.monotonic() + 10
    while ((os.path.exists(f"/proc/{pid}") or proc.exit_status(pid) is None)
           and time.monotonic() < deadline):
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{pid}")
    assert proc.exit_status(pid) == 0


def test_listen_unix(workdir: Path) -> None:
    path = workdir / "s.sock"
    path.write_text("stale")
    with proc.listen_unix(path) as sock:
        assert stat.S_ISSOCK(path.stat().st_mode)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))  # queued in the backlog: nobody needs to accept() yet
        client.close()
        assert not sock.get_inheritable()
    with pytest.raises(OperationFailed, match="more than the 107 the kernel allows"):
        proc.listen_unix(workdir / ("x" * 120))


# --- identity ------------------------------------------------------------------------------------

def test_identity_of_a_live_process() -> None:
    me = ProcessIdentity.of(os.getpid())
    assert me.matches()
    assert ProcessIdentity.from_dict(json.loads(json.dumps(me.to_dict()))) == me
    assert me.exe == os.path.realpath(sys.executable)
    # What a reused pid would look like: another start time, another command line.
    assert not ProcessIdentity(me.pid, me.start_time_ticks + 1, me.exe, me.cmdline_hash).matches()
    assert not ProcessIdentity(me.pid, me.start_time_ticks, me.exe, "0" * 64).matches()
    assert not ProcessIdentity(me.pid, me.start_time_ticks, "/usr/bin/other", me.cmdline_hash).matches()
    assert ProcessIdentity(me.pid, me.start_time_ticks, None, me.cmdline_hash).matches()


def test_identity_of_a_process_that_is_gone_or_a_zombie() -> None:
    # Popen, not spawn_detached: nobody reaps it, so it stays a zombie after it exits. Popen
    # returns when the exec has begun, so wait as spawn_detached does for the new arguments (an
    # identity read before would hash an empty command line: CI saw it once).
    child = subprocess.Popen(["/bin/sleep", "0.2"])
    try:
        proc._wait_exec_done(child.pid, ["/bin/sleep", "0.2"], None)
        ident = ProcessIdentity.of(child.pid)
        assert ident.matches()
        assert proc.wait_for_exit(ident, 10)
        assert _state(child.pid) == "Z"
        assert not ident.matches()
        with pytest.raises(ProcessLookupError):
            ProcessIdentity.of(child.pid)
        assert proc.terminate(ident) is Ended.ALREADY_GONE
    finally:
        child.wait()
    assert not ident.matches()
    assert proc.wait_for_exit(ident, 0)
    with pytest.raises(ProcessLookupError):
        ProcessIdentity.of(child.pid)


def test_a_stale_identity_never_signals_the_pids_new_owner(cleanup: list[int]) -> None:
    pid = proc.spawn_detached(["/bin/sleep", "30"])
    cleanup.append(pid)
    real = ProcessIdentity.of(pid)
    # As if a domain's QEMU had died and the kernel had given its pid to this sleep.
    stale = ProcessIdentity(pid, real.start_time_ticks - 1, real.exe, real.cmdline_hash)
    assert proc.wait_for_exit(stale, 5)
    assert proc.terminate(stale, graceful_timeout=0) is Ended.ALREADY_GONE
    assert real.matches()
    assert not proc.wait_for_exit(real, 0.1)


# --- terminating ---------------------------------------------------------------------------------

def test_terminate_qemu_gracefully(workdir: Path, cleanup: list[int]) -> None:
    pid, _ = _start_qemu(workdir, cleanup)
    ident = ProcessIdentity.of(pid)
    start = time.monotonic()
    assert proc.terminate(ident, graceful_timeout=10) is Ended.TERMINATED
    took = time.monotonic() - start
    print(f"QEMU gone {took * 1000:.1f} ms after SIGTERM")
    assert took < 1.5
    assert proc.exit_status(pid) == 0  # QEMU exits cleanly on SIGTERM
    assert not os.path.exists(f"/proc/{pid}")  # reaped before terminate() returned
    assert proc.terminate(ident) is Ended.ALREADY_GONE


def test_terminate_kills_a_qemu_that_does_not_react(workdir: Path, cleanup: list[int]) -> None:
    pid, _ = _start_qemu(workdir, cleanup)
    os.kill(pid, signal.SIGSTOP)  # a hung QEMU: SIGTERM stays pending
    start = time.monotonic()
    assert proc.terminate(pid, graceful_timeout=0.3) is Ended.KILLED
    assert 0.3 <= time.monotonic() - start < 2
    assert proc.exit_status(pid) == -signal.SIGKILL

    pid, _ = _start_qemu(workdir, cleanup)
    start = time.monotonic()
    assert proc.terminate(pid, graceful_timeout=0) is Ended.KILLED
    assert time.monotonic() - start < 1
    assert proc.exit_status(pid) == -signal.SIGKILL
    # The pid of a reaped child is free for anyone: a second terminate() must not signal it.
    assert proc.terminate(pid, graceful_timeout=0) is Ended.ALREADY_GONE


def test_wait_for_exit_times_out_on_a_running_process(cleanup: list[int]) -> None:
    pid = proc.spawn_detached(["/bin/sleep", "30"])
    cleanup.append(pid)
    start = time.monotonic()
    assert not proc.wait_for_exit(pid, 0.2)
    assert not proc.wait_for_exit(ProcessIdentity.of(pid), 0.1)
    assert 0.3 <= time.monotonic() - start < 1.5
    # From another thread, while this one terminates it.
    waited: list[bool] = []
    waiter = threading.Thread(target=lambda: waited.append(proc.wait_for_exit(pid, 10)))
    waiter.start()
    assert proc.terminate(pid) is Ended.TERMINATED
    waiter.join(10)
    assert waited == [True]
    assert proc.exit_status(pid) == -signal.SIGTERM


# --- status files --------------------------------------------------------------------------------

V1 = StatusFormat("pyvirt-test-status", 1)
V3 = StatusFormat("pyvirt-test-status", 3, {
    1: lambda d: {k: v for k, v in d.items() if k != "mon"} | {"monitor": d["mon"]},
    2: lambda d: {**d, "vcpus": d.get("vcpus", 1)},
})


def test_status_round_trip_is_private_and_leaves_no_temporary(workdir: Path) -> None:
    path = workdir / "vm1.json"
    data = {"pid": 42, "monitor": "/run/x.sock", "nested": {"a": [1, 2]}}
    proc.write_status(path, data, V3)
    assert proc.read_status(path, V3) == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"kind": "pyvirt-test-status", "version": 3, "data": data}
    proc.write_status(path, {"pid": 43}, V3)
    assert proc.read_status(path, V3) == {"pid": 43}
    assert [p.name for p in workdir.iterdir()] == ["vm1.json"]


def test_status_is_upgraded_on_read(workdir: Path) -> None:
    path = workdir / "old.json"
    proc.write_status(path, {"pid": 7, "mon": "/run/m.sock"}, V1)
    assert proc.read_status(path, V3) == {"pid": 7, "monitor": "/run/m.sock", "vcpus": 1}
    # No upgrade from 1 to 2 in this format: refused, with the way out.
    gap = StatusFormat("pyvirt-test-status", 3, {2: lambda d: d})
    with pytest.raises(OperationFailed, match=r"old.json: pyvirt-test-status format 1 is too old for "
                                              r"this pyvirt \(no upgrade to 2\)"):
        proc.read_status(path, gap)


def test_status_from_the_future_or_garbage_is_refused(workdir: Path) -> None:
    path = workdir / "s.json"
    proc.write_status(path, {"pid": 1}, V3)
    with pytest.raises(OperationFailed, match="format 3 was written by a newer pyvirt .* reads up to 1"):
        proc.read_status(path, V1)
    with pytest.raises(OperationFailed, match="not a other-kind file"):
        proc.read_status(path, StatusFormat("other-kind", 3))
    path.write_text('{"kind": "pyvirt-test-status", "version": 3, "data": {"pid"')
    with pytest.raises(OperationFailed, match=r"s.json: not a pyvirt-test-status file \(invalid JSON"):
        proc.read_status(path, V3)
    with pytest.raises(FileNotFoundError):
        proc.read_status(workdir / "missing.json", V3)


def test_status_write_is_atomic(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = workdir / "s.json"
    big = {"disks": ["x" * 1000] * 200}
    proc.write_status(path, {"n": -1, **big}, V1)
    seen: set[int] = set()
    stop = threading.Event()
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(proc.read_status(path, V1)["n"])
            except Exception as e:  # a torn file would show up here
                errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for n in range(100):
            proc.write_status(path, {"n": n, **big}, V1)
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert len(seen) > 1
    assert proc.read_status(path, V1)["n"] == 99

    # A failure before the rename leaves the old file whole and no temporary behind.
    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OperationFailed, match="cannot write .*s.json: No space left on device"):
        proc.write_status(path, {"n": 100}, V1)
    assert proc.read_status(path, V1)["n"] == 99
    assert [p.name for p in workdir.iterdir()] == ["s.json"]
