# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QMP monitor against a real QEMU (TCG) and the real test guest.

QEMU gets its monitor (and serial) socket as an already listening fd, as the driver will do, so the
tests connect without polling. Every QEMU started here is SIGKILLed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyvirt.errors import (
    InternalError,
    MonitorCommandError,
    MonitorDisconnected,
    MonitorError,
    MonitorStateError,
    MonitorTimeout,
    codes,
)
from pyvirt.qemu import proc
from pyvirt.qemu.loop import get_loop
from pyvirt.qemu.monitor import (
    Disconnect,
    GuestPanickedEvent,
    Monitor,
    MonitorState,
    PowerdownEvent,
    QMPEvent,
    ResetEvent,
    ResumeEvent,
    ShutdownEvent,
    StopEvent,
    parse_event,
)
from pyvirt.testing import guest as tg

QEMU = "/usr/bin/qemu-system-x86_64"
BOOT_TIMEOUT = 60.0


def _line(text: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?m)^" + re.escape(text.encode()) + rb"\r?$")


READY = _line(tg.READY_MARKER)
PROMPT = re.compile(re.escape(tg.PROMPT.encode()))


class Serial:
    """The guest's ttyS0: a reader thread collects what QEMU sends."""

    def __init__(self, path: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(path))
        self.output = bytearray()
        self._pos = 0
        self._closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = self._sock.recv(4096)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self._closed = True
                else:
                    self.output += chunk
                self._cond.notify_all()
            if not chunk:
                return

    def expect(self, pattern: re.Pattern[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (m := pattern.search(self.output, self._pos)):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    raise AssertionError(f"no {pattern.pattern!r} on the serial console; it printed "
                                         f"{bytes(self.output[-2000:])!r}")
                self._cond.wait(remaining)
            self._pos = m.end()

    def type(self, text: str) -> None:
        self._sock.sendall(text.encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


@dataclass
class Qemu:
    pid: int
    monitor_path: Path
    workdir: Path
    serial: Serial | None

    def log(self) -> str:
        return (self.workdir / "qemu.log").read_text(errors="replace")


@contextlib.contextmanager
def launched(extra: Sequence[str] = (), *, paused: bool = True, serial: bool = False,
             memory: int = 64) -> Iterator[Qemu]:
    workdir = Path(tempfile.mkdtemp(prefix="pvmon-", dir="/tmp"))
    pid: int | None = None
    ser: Serial | None = None
    listeners: list[socket.socket] = []
    try:
        mon = proc.listen_unix(workdir / "m.sock")
        listeners.append(mon)
        argv = [QEMU, "-accel", "tcg", "-m", str(memory), "-nodefaults", "-no-user-config",
                "-display", "none", "-chardev", f"socket,id=mon,fd={mon.fileno()},server=on,wait=off",
                "-mon", "chardev=mon,mode=control"]
        if serial:
            s = proc.listen_unix(workdir / "s.sock")
            listeners.append(s)
            argv += ["-chardev", f"socket,id=ser,fd={s.fileno()},server=on,wait=off",
                     "-serial", "chardev:ser"]
        if paused:
            argv.append("-S")
        argv += extra
        with open(workdir / "qemu.log", "wb") as log:
            pid = proc.spawn_detached(argv, log_fd=log.fileno(), pass_fds=[s.fileno() for s in listeners])
        for s in listeners:
            s.close()
        if serial:
            ser = Serial(workdir / "s.sock")
        yield Qemu(pid, workdir / "m.sock", workdir, ser)
    finally:
        for s in listeners:
            s.close()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            assert proc.wait_for_exit(pid, 10)
        if ser is not None:
            ser.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def qemu() -> Iterator[Qemu]:
    """A QEMU paused before its first instruction (-S), no guest."""
    with launched() as q:
        yield q


@pytest.fixture
def monitors() -> Iterator[Callable[..., Monitor]]:
    made: list[Monitor] = []

    def make(name: str = "test monitor", **kw: Callable[[Disconnect], None]) -> Monitor:
        m = Monitor(name, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture(scope="module")
def guest() -> tg.Guest:
    return tg.build()


def _in_threads(fn: Callable[[], object], n: int) -> list[object]:
    """Run ``fn`` in ``n`` threads at once; return each one's result or exception."""
    results: list[object] = [None] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = fn()
        except Exception as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return results


# --- connecting ----------------------------------------------------------------------------------

def test_connect_query_close_reconnect(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    assert mon.state is MonitorState.IDLE
    mon.connect(qemu.monitor_path, timeout=10)
    assert mon.state is MonitorState.RUNNING
    assert mon.qemu_version is not None and mon.qemu_version[0] >= 7
    assert mon.execute("query-status") == {"status": "prelaunch", "running": False, "singlestep": False}
    mon.close()
    assert mon.state is MonitorState.IDLE
    mon.close()  # idempotent

    # Closing the monitor leaves QEMU running; a later process reconnects to the same socket.
    assert proc.ProcessIdentity.of(qemu.pid).matches()
    again = monitors("second")
    again.connect(str(qemu.monitor_path))
    assert again.execute("query-status")["status"] == "prelaunch"
    # ... and the first Monitor object can connect again too, over an already connected socket.
    again.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(qemu.monitor_path))
    mon.connect(sock)
    assert mon.execute("query-name") == {}


def test_calls_in_the_wrong_state(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors("monitor of domain 'vm1'")
    expected = (r"^monitor of domain 'vm1': cannot run 'query-status': the monitor is idle, not connected; "
                r"connect\(\) first$")
    with pytest.raises(MonitorStateError, match=expected) as e:
        mon.execute("query-status")
    assert e.value.get_error_code() == codes.VIR_ERR_OPERATION_INVALID
    with pytest.raises(MonitorStateError):
        mon.send_fd(0, "x")
    mon.connect(qemu.monitor_path)
    with pytest.raises(MonitorStateError, match="already running; close"):
        mon.connect(qemu.monitor_path)
    assert mon.execute("query-status")["running"] is False


def test_connect_errors_are_clear_and_fast(monitors: Callable[..., Monitor]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pvmon-", dir="/tmp"))
    try:
        with pytest.raises(MonitorError, match=r"cannot connect to QEMU's monitor at .*/nope.sock: .*No such "
                                               "file.*; QEMU is not running"):
            monitors().connect(workdir / "nope.sock")

        # Something listens but never greets: the connect deadline applies.
        silent = proc.listen_unix(workdir / "silent.sock")
        try:
            start = time.monotonic()
            with pytest.raises(MonitorTimeout, match="did not greet within 0.3 s") as e:
                monitors().connect(workdir / "silent.sock", timeout=0.3)
            assert time.monotonic() - start < 2
            assert e.value.get_error_code() == codes.VIR_ERR_OPERATION_TIMEOUT

            # close() from another thread ends a connect() that waits for a greeting.
            mon = monitors()
            outcome: list[object] = []
            t = threading.Thread(target=lambda: outcome.append(
                _outcome(lambda: mon.connect(workdir / "silent.sock", timeout=20))))
            t.start()
            deadline = time.monotonic() + 5
            while mon.state is not MonitorState.CONNECTING and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            mon.close()
            t.join(5)
            assert isinstance(outcome[0], MonitorDisconnected)
            assert str(outcome[0]) == "test monitor: the monitor was closed while connecting"
            assert mon.state is MonitorState.IDLE
        finally:
            silent.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_qemu_failing_at_startup_ends_the_connect(monitors: Callable[..., Monitor]) -> None:
    # The socket is bound before QEMU starts, so connect() may well be waiting in QEMU's backlog
    # when QEMU gives up: that must end in an error, not in a hang until the timeout.
    with launched(["-machine", "no-such-machine"]) as q:
        start = time.monotonic()
        with pytest.raises(MonitorError, match="cannot connect to QEMU's monitor") as e:
            monitors().connect(q.monitor_path, timeout=20)
        assert time.monotonic() - start < 5
        assert not isinstance(e.value, MonitorTimeout)
        assert proc.wait_for_exit(q.pid, 5)
        assert proc.exit_status(q.pid) == 1
        assert "unsupported machine type" in q.log()


# --- commands ------------------------------------------------------------------------------------

def test_qemu_errors_carry_class_and_desc(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    with pytest.raises(MonitorCommandError) as e:
        mon.execute("no-such-command")
    err = e.value
    assert err.qmp_class == "CommandNotFound"
    assert err.qmp_desc == "The command no-such-command has not been found"
    assert err.command == "no-such-command"
    # libvirt's wording and code for the same failure
    assert str(err) == ("unable to execute QEMU command 'no-such-command': "
                        "The command no-such-command has not been found")
    assert err.get_error_code() == codes.VIR_ERR_INTERNAL_ERROR
    assert err.get_error_domain() == codes.VIR_FROM_QEMU

    with pytest.raises(MonitorCommandError) as e:
        mon.execute("device_del", {"id": "nonexistent0"})
    assert e.value.qmp_class == "DeviceNotFound"
    with pytest.raises(MonitorCommandError, match="'eject'") as e:
        mon.execute("eject", {"bogus-argument": 1})
    assert e.value.qmp_class == "GenericError"
    # An error answer leaves the connection usable.
    assert mon.execute("query-status")["status"] == "prelaunch"


def test_hmp(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    assert mon.execute_hmp("info status").strip() == "VM status: paused (prelaunch)"
    assert mon.execute_hmp("print 12345").strip() == hex(12345)


def test_command_timeout_on_a_stopped_qemu(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    os.kill(qemu.pid, signal.SIGSTOP)  # QEMU reads nothing and answers nothing until SIGCONT
    try:
        start = time.monotonic()
        with pytest.raises(MonitorTimeout, match=r"QEMU did not answer 'query-status' within 0.3 s") as e:
            mon.execute("query-status", timeout=0.3)
        took = time.monotonic() - start
        assert 0.3 <= took < 1.5
        assert e.value.get_error_code() == codes.VIR_ERR_OPERATION_TIMEOUT
        assert mon.state is MonitorState.RUNNING
    finally:
        os.kill(qemu.pid, signal.SIGCONT)
    # The late answer to query-status is dropped; the next command gets its own answer.
    assert mon.execute_hmp("print 777").strip() == hex(777)
    assert mon.execute("query-status")["status"] == "prelaunch"


def test_many_threads_at_once(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    counter = iter(range(1, 1_000_000))  # HMP prints 0 as '0', not '0x0'
    lock = threading.Lock()

    def work() -> list[tuple[int, str]]:
        got = []
        for _ in range(25):
            with lock:
                n = next(counter)
            # Each answer is unique to its command: a mixed-up id would show at once.
            got.append((n, mon.execute_hmp(f"print {n}").strip()))
            assert mon.execute("query-status")["status"] == "prelaunch"
        return got

    results = _in_threads(work, 12)
    assert not [r for r in results if isinstance(r, Exception)]
    pairs = [p for r in results if isinstance(r, list) for p in r]
    assert len(pairs) == 12 * 25
    assert all(out == hex(n) for n, out in pairs)


def test_blocking_call_on_the_loop_thread_is_refused(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)

    async def misuse() -> object:
        return mon.execute("query-status")

    with pytest.raises(InternalError, match="from pyvirt's event loop thread"):
        get_loop().submit(misuse()).result(5)
    assert mon.execute("query-status")["running"] is False


def test_send_fd_gives_qemu_a_working_descriptor(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    r, w = os.pipe()
    try:
        mon.send_fd(w, "migration-out")
        pipe = os.readlink(f"/proc/self/fd/{w}")
        os.close(w)
        assert pipe in {os.readlink(f"/proc/{qemu.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{qemu.pid}/fd")}

        # QEMU really uses it: the migration stream arrives through the pipe, then QEMU closes it.
        stream = bytearray()
        reader = threading.Thread(target=lambda: _read_all(r, stream))
        reader.start()
        mon.execute("migrate", {"uri": "fd:migration-out"})
        reader.join(30)
        assert not reader.is_alive()
        assert stream[:4] == b"QEVM"
        assert mon.execute("query-migrate")["status"] == "completed"
        with pytest.raises(MonitorCommandError, match="File descriptor named 'migration-out' not found"):
            mon.execute("closefd", {"fdname": "migration-out"})  # migrate consumed it

        # A second fd while commands fly in other threads still lands under the right name.
        r2, w2 = os.pipe()
        try:
            busy = threading.Thread(target=lambda: [mon.execute("query-status") for _ in range(50)])
            busy.start()
            mon.send_fd(w2, "spare")
            busy.join()
            mon.execute("closefd", {"fdname": "spare"})
        finally:
            os.close(r2)
            os.close(w2)
    finally:
        os.close(r)


def _read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into += chunk


# --- events --------------------------------------------------------------------------------------

def test_stop_resume_reset_events_are_typed(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    with mon.listen(["STOP", "RESUME", "RESET"]) as q:
        mon.execute("cont")
        resume = q.get(5)
        mon.execute("system_reset")
        reset = q.get(5)
        mon.execute("stop")
        stop = q.get(5)
        while type(stop) is ResetEvent and stop.guest:  # the firmware may reset itself meanwhile
            stop = q.get(5)
    assert type(resume) is ResumeEvent
    assert type(reset) is ResetEvent
    assert (reset.guest, reset.reason) == (False, "host-qmp-system-reset")
    assert type(stop) is StopEvent
    assert resume.timestamp is not None and abs(resume.timestamp - time.time()) < 60
    with pytest.raises(MonitorTimeout, match="no RESET, RESUME, STOP from QEMU within 0.05 s"):
        q.get(0.05)


def test_callbacks_run_in_order_on_a_pyvirt_thread(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def record(event: QMPEvent) -> None:
        seen.append((event.name, threading.current_thread().name))
        if len(seen) == 40:
            done.set()

    sub = mon.subscribe(record, names={"STOP", "RESUME"})
    for _ in range(20):
        mon.execute("cont")
        mon.execute("stop")
    assert done.wait(10)
    assert [name for name, _ in seen] == ["RESUME", "STOP"] * 20
    threads = {t for _, t in seen}
    assert get_loop().thread.name not in threads
    assert threading.current_thread().name not in threads

    # A filter narrows further; a cancelled subscription hears nothing more.
    sub.cancel()
    stops: list[QMPEvent] = []
    with mon.subscribe(stops.append, event_filter=lambda e: e.name == "STOP"):
        with mon.listen("RESUME") as q:
            mon.execute("cont")
            q.get(5)
            mon.execute("stop")
        with mon.listen("STOP") as q:
            mon.execute("cont")
            mon.execute("stop")
            q.get(5)
    mon.execute("cont")
    with mon.listen("STOP") as q:
        mon.execute("stop")
        q.get(5)
    assert len(seen) == 40
    assert [type(e) for e in stops] == [StopEvent, StopEvent]


def test_a_callback_may_execute_and_may_fail(qemu: Qemu, monitors: Callable[..., Monitor]) -> None:
    mon = monitors()
    mon.connect(qemu.monitor_path)
    answers: list[object] = []
    answered = threading.Event()

    def broken(event: QMPEvent) -> None:
        raise RuntimeError("a subscriber's bug")

    def on_resume(event: QMPEvent) -> None:
        # Callbacks run off the loop thread, so they may use the monitor themselves.
        answers.append(mon.execute("query-status")["status"])
        answered.set()

    mon.subscribe(broken)
    mon.subscribe(on_resume, "RESUME")
    mon.execute("cont")
    assert answered.wait(5)
    assert answers == ["running"]


def test_parse_event() -> None:
    panic = parse_event({"event": "GUEST_PANICKED", "timestamp": {"seconds": 10, "microseconds": 500000},
                         "data": {"action": "pause", "info": {"type": "hyper-v", "arg1": 1}}})
    assert isinstance(panic, GuestPanickedEvent)
    assert (panic.action, panic.info, panic.timestamp) == ("pause", {"type": "hyper-v", "arg1": 1}, 10.5)
    shutdown = parse_event({"event": "SHUTDOWN", "data": {"guest": True, "reason": "guest-shutdown"}})
    assert isinstance(shutdown, ShutdownEvent) and shutdown.guest and shutdown.reason == "guest-shutdown"
    assert shutdown.timestamp is None
    assert type(parse_event({"event": "POWERDOWN"})) is PowerdownEvent
    other = parse_event({"event": "BLOCK_JOB_READY", "data": {"device": "d"}})
    assert type(other) is QMPEvent and other.name == "BLOCK_JOB_READY" and other.data == {"device": "d"}


# --- the end of a connection ---------------------------------------------------------------------

def test_kill_fails_pending_calls_and_fires_on_disconnect_once(qemu: Qemu,
                                                                monitors: Callable[..., Monitor]) -> None:
    ends: list[tuple[Disconnect, str]] = []
    mon = monitors(on_disconnect=lambda d: ends.append((d, threading.current_thread().name)))
    mon.connect(qemu.monitor_path)
    q = mon.listen("SHUTDOWN")
    os.kill(qemu.pid, signal.SIGSTOP)  # so that the calls below stay pending
    pending: list[object] = []
    threads = [threading.Thread(target=lambda: pending.append(_outcome(lambda: mon.execute("query-status"))))
               for _ in range(4)]
    threads.append(threading.Thread(target=lambda: pending.append(_outcome(lambda: q.get(30)))))
    for t in threads:
        t.start()
    time.sleep(0.3)
    killed = time.monotonic()
    os.kill(qemu.pid, signal.SIGKILL)
    for t in threads:
        t.join(10)
    assert time.monotonic() - killed < 2
    assert len(pending) == 5
    for outcome in pending:
        assert isinstance(outcome, MonitorDisconnected), outcome
    messages = sorted(str(o) for o in pending)
    assert messages[-1] == ("test monitor: the monitor connection ended (QEMU closed the monitor connection) "
                            "while waiting for SHUTDOWN")
    assert messages[0] == ("test monitor: QEMU closed the monitor connection (the process exited or crashed) "
                           "while 'query-status' was waiting for its answer")
    time.sleep(0.3)  # time for a duplicate to show up
    assert len(ends) == 1
    info, thread = ends[0]
    assert info.reason == "QEMU closed the monitor connection"
    # EOF, or a reset since QEMU died with our commands unread
    assert isinstance(info.error, EOFError | ConnectionResetError)
    assert thread != get_loop().thread.name
    assert mon.state is MonitorState.IDLE
    with pytest.raises(MonitorStateError):
        mon.execute("query-status")
    assert proc.wait_for_exit(qemu.pid, 5)
    assert proc.exit_status(qemu.pid) == -signal.SIGKILL


def test_close_fails_pending_calls_without_on_disconnect(qemu: Qemu,
                                                          monitors: Callable[..., Monitor]) -> None:
    ends: list[Disconnect] = []
    mon = monitors(on_disconnect=ends.append)
    mon.connect(qemu.monitor_path)
    q = mon.listen()
    os.kill(qemu.pid, signal.SIGSTOP)
    try:
        outcome: list[object] = []
        t = threading.Thread(target=lambda: outcome.append(_outcome(lambda: mon.execute("query-status"))))
        t.start()
        time.sleep(0.2)
        mon.close()
        t.join(5)
    finally:
        os.kill(qemu.pid, signal.SIGCONT)
    assert isinstance(outcome[0], MonitorDisconnected)
    assert str(outcome[0]) == ("test monitor: the monitor was closed while 'query-status' was waiting for "
                               "QEMU's answer")
    with pytest.raises(MonitorDisconnected, match="the monitor was closed by pyvirt"):
        q.get(5)
    time.sleep(0.2)
    assert ends == []
    assert proc.ProcessIdentity.of(qemu.pid).matches()  # closing the monitor is not stopping QEMU


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Exception as e:
        return e


# --- with the real guest -------------------------------------------------------------------------

@pytest.mark.slow
def test_acpi_powerdown_events_then_disconnect(guest: tg.Guest, monitors: Callable[..., Monitor]) -> None:
    trail: list[object] = []
    done = threading.Event()

    def on_disconnect(d: Disconnect) -> None:
        trail.append(d)
        done.set()

    with launched(guest.boot_args(), paused=False, serial=True, memory=256) as q:
        assert q.serial is not None
        mon = monitors(on_disconnect=on_disconnect)
        mon.connect(q.monitor_path)
        mon.subscribe(trail.append)
        q.serial.expect(READY, BOOT_TIMEOUT)
        mon.execute("system_powerdown")
        assert done.wait(15), trail
        assert proc.wait_for_exit(q.pid, 10)
        assert proc.exit_status(q.pid) == 0
    events = [e for e in trail if isinstance(e, QMPEvent)]
    assert [type(e) for e in events] == [PowerdownEvent, ShutdownEvent]
    shutdown = events[1]
    assert isinstance(shutdown, ShutdownEvent)
    assert (shutdown.guest, shutdown.reason) == (True, "guest-shutdown")
    assert isinstance(trail[-1], Disconnect) and len(trail) == 3


@pytest.mark.slow
def test_reset_event_on_reboot_from_the_guest(guest: tg.Guest, monitors: Callable[..., Monitor]) -> None:
    with launched(guest.boot_args(), paused=False, serial=True, memory=256) as q:
        assert q.serial is not None
        mon = monitors()
        mon.connect(q.monitor_path)
        q.serial.expect(READY, BOOT_TIMEOUT)
        q.serial.expect(PROMPT, BOOT_TIMEOUT)
        with mon.listen("RESET") as resets:
            q.serial.type("reboot -f\n")
            reset = resets.get(BOOT_TIMEOUT)
        assert isinstance(reset, ResetEvent)
        assert (reset.guest, reset.reason) == (True, "guest-reset")
        q.serial.expect(READY, BOOT_TIMEOUT)
        assert mon.execute("query-status")["status"] == "running"
