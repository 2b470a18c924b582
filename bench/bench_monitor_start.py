# SPDX-License-Identifier: LGPL-2.1-or-later
"""Starting a paused QEMU until its guest runs: raw floor against pyvirt's process and monitor layers.

Both sides launch the same QEMU (TCG, the real test guest's kernel and initrd, -S) with its QMP
socket already listening (an fd handed to QEMU), connect, negotiate capabilities and send ``cont``;
the clock stops when ``cont`` is answered, i.e. when the vCPUs run.

- raw:    subprocess.Popen + a blocking socket speaking QMP by hand: the floor.
- pyvirt: proc.listen_unix + proc.spawn_detached + Monitor.connect + Monitor.execute("cont").

Also reported: pyvirt's destroy (proc.terminate: SIGTERM, pidfd wait, reap). Target (issue 4):
pyvirt's start within 40 ms of raw, destroy at most 1/10 of libvirt's 1.5 s.

--detach-methods compares ways of detaching QEMU from its caller, with the raw QMP client:
Popen in a new session (pyvirt's choice), a Python double fork, and QEMU's own -daemonize.

Usage: .venv/bin/python bench/bench_monitor_start.py [--runs N] [--detach-methods]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from pyvirt.qemu import proc
from pyvirt.qemu.monitor import Monitor
from pyvirt.testing.guest import build

QEMU = "/usr/bin/qemu-system-x86_64"


def qemu_argv(boot_args: list[str], monitor: str) -> list[str]:
    return [QEMU, "-accel", "tcg", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
            "-S", *boot_args, *monitor_args(monitor)]


def monitor_args(monitor: str) -> list[str]:
    return ["-chardev", f"socket,id=mon,{monitor},server=on,wait=off", "-mon", "chardev=mon,mode=control"]


class RawQMP:
    """QMP by hand over a blocking socket: the least a client can do."""

    def __init__(self, sock: socket.socket) -> None:
        self.f = sock.makefile("rwb", buffering=0)
        self.sock = sock
        json.loads(self.f.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, cmd: str) -> object:
        self.f.write(json.dumps({"execute": cmd}).encode() + b"\n")
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                raise RuntimeError(msg["error"])

    def close(self) -> None:
        self.f.close()
        self.sock.close()


def _kill_and_wait(pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if popen is not None:
        popen.wait()
    else:
        proc.wait_for_exit(pid, 10)


def run_raw(boot: list[str], workdir: str) -> float:
    path = os.path.join(workdir, "raw.sock")
    start = time.perf_counter()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    p = subprocess.Popen(qemu_argv(boot, f"fd={listener.fileno()}"), pass_fds=[listener.fileno()],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    listener.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    qmp = RawQMP(s)
    qmp.execute("cont")
    took = time.perf_counter() - start
    qmp.close()
    _kill_and_wait(p.pid, p)
    os.unlink(path)
    return took


def run_pyvirt(boot: list[str], workdir: str, destroys: list[float]) -> float:
    path = os.path.join(workdir, "pyvirt.sock")
    start = time.perf_counter()
    with proc.listen_unix(path) as listener:
        pid = proc.spawn_detached(qemu_argv(boot, f"fd={listener.fileno()}"), pass_fds=[listener.fileno()])
    mon = Monitor("bench")
    try:
        mon.connect(path)
        mon.execute("cont")
        took = time.perf_counter() - start
        t = time.perf_counter()
        proc.terminate(pid)
        destroys.append(time.perf_counter() - t)
    finally:
        mon.close()
        _kill_and_wait(pid)
    return took


# --- detach methods ------------------------------------------------------------------------------

def _raw_session(path: str) -> RawQMP:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    qmp = RawQMP(s)
    qmp.execute("cont")
    return qmp


def detach_popen(boot: list[str], workdir: str) -> float:
    path = os.path.join(workdir, "a.sock")
    start = time.perf_counter()
    with proc.listen_unix(path) as listener:
        pid = proc.spawn_detached(qemu_argv(boot, f"fd={listener.fileno()}"), pass_fds=[listener.fileno()])
    qmp = _raw_session(path)
    took = time.perf_counter() - start
    qmp.close()
    _kill_and_wait(pid)
    return took


def detach_double_fork(boot: list[str], workdir: str) -> float:
    path = os.path.join(workdir, "b.sock")
    start = time.perf_counter()
    with proc.listen_unix(path) as listener:
        argv = qemu_argv(boot, f"fd={listener.fileno()}")
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # the intermediate: new session, start QEMU, report its pid, vanish
            try:
                os.setsid()
                os.set_inheritable(listener.fileno(), True)
                devnull = os.open(os.devnull, os.O_RDWR)
                pid = os.posix_spawn(QEMU, argv, dict(os.environ),
                                     file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                                   (os.POSIX_SPAWN_DUP2, devnull, 1),
                                                   (os.POSIX_SPAWN_DUP2, devnull, 2)])
                os.write(w, str(pid).encode())
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(child, 0)
        pid = int(os.read(r, 32))
        os.close(r)
    qmp = _raw_session(path)
    took = time.perf_counter() - start
    qmp.close()
    _kill_and_wait(pid)
    return took


def detach_daemonize(boot: list[str], workdir: str) -> float:
    path = os.path.join(workdir, "c.sock")
    pidfile = os.path.join(workdir, "c.pid")
    start = time.perf_counter()
    # QEMU's parent exits once the machine is set up; the monitor socket then exists.
    subprocess.run([*qemu_argv(boot, f"path={path}"), "-daemonize", "-pidfile", pidfile],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    with open(pidfile) as f:
        pid = int(f.read())
    qmp = _raw_session(path)
    took = time.perf_counter() - start
    qmp.close()
    _kill_and_wait(pid)
    os.unlink(path)
    return took


def _summary(name: str, times: list[float]) -> str:
    return (f"{name:<14} median {statistics.median(times) * 1000:6.1f} ms   "
            f"min {min(times) * 1000:6.1f} ms   max {max(times) * 1000:6.1f} ms")


def _interleaved(runs: int, cases: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    for fn in cases.values():  # warm the page cache and pyvirt's loop thread
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():
            times[name].append(fn())
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--detach-methods", action="store_true")
    args = ap.parse_args(argv)
    boot = build().boot_args()
    workdir = tempfile.mkdtemp(prefix="pvbench-", dir="/tmp")
    try:
        destroys: list[float] = []
        times = _interleaved(args.runs, {
            "raw": lambda: run_raw(boot, workdir),
            "pyvirt": lambda: run_pyvirt(boot, workdir, destroys),
        })
        raw, pyvirt = times["raw"], times["pyvirt"]
        print(f"start until the guest runs, {args.runs} runs each (QEMU -S, TCG, test guest):")
        print(_summary("raw", raw))
        print(_summary("pyvirt", pyvirt))
        diff = statistics.median(pyvirt) - statistics.median(raw)
        print(f"difference     {diff * 1000:+6.1f} ms (median; target: at most +40 ms)")
        print(_summary("pyvirt destroy", destroys) + "   (target: at most 150 ms)")
        if args.detach_methods:
            times = _interleaved(args.runs, {
                "Popen+setsid": lambda: detach_popen(boot, workdir),
                "double fork": lambda: detach_double_fork(boot, workdir),
                "-daemonize": lambda: detach_daemonize(boot, workdir),
            })
            print("\ndetach methods, start until the guest runs (raw QMP client):")
            for name, t in times.items():
                print(_summary(name, t))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
