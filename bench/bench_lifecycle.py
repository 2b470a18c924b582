# SPDX-License-Identifier: LGPL-2.1-or-later
"""The domain lifecycle, side by side: pyvirt, libvirt 9.0's embedded driver, and raw QEMU (the floor).

In one run, with the same domain (the test guest, 256 MiB, 1 vCPU, serial to a file, type 'qemu'):

- define, then N rounds of start (create() returned and the state is running) and destroy;
  - pyvirt: in process, pyvirt.connection on an embed root;
  - libvirt: its embedded driver through python3-libvirt, in a /usr/bin/python3 child that runs
    the same loop and prints its timings as JSON;
  - raw: Popen qemu-system-x86_64 -S with a QMP socket, connect, ``cont``; then ``quit``.
- 1000 small inactive definitions: listDefinedDomains (and listAllDomains where it exists) and
  lookupByName, once the driver has the definitions, and the first call of a fresh driver that
  loads them from disk;
- 20 paused domains started and destroyed concurrently from 20 threads: wall time and errors.

Targets (issue "Speed"): pyvirt start <= 1/3 of libvirt's and within 40 ms of raw QEMU; destroy
<= 1/10 of libvirt's; listing and lookup of 1000 domains under 10 ms each.

Usage: .venv/bin/python bench/bench_lifecycle.py [--runs N] [--count 1000] [--threads 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pyvirt import connection
from pyvirt.testing.guest import Guest, build

from bench_monitor_start import RawQMP  # QMP by hand, shared by the benches

QEMU = "/usr/bin/qemu-system-x86_64"
SYSTEM_PYTHON = "/usr/bin/python3"


def domain_xml(name: str, guest: Guest | None, serial: str | None, memory_mib: int = 256) -> str:
    boot = (f"<kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>"
            f"<cmdline>{guest.cmdline}</cmdline>") if guest is not None else ""
    devices = f"<serial type='file'><source path='{serial}'/></serial>" if serial else ""
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>{memory_mib}</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type>{boot}</os>"
            f"<devices>{devices}</devices></domain>")


def short_root(prefix: str) -> str:
    root = tempfile.mkdtemp(prefix=prefix, dir="/tmp") + "/r"
    assert len(root) <= 46, root
    return root


def qemus_of(root: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if b"qemu-system" in cmdline and root.encode() in cmdline:
                found.append(int(entry))
    return found


def kill_leftovers(root: str) -> list[int]:
    pids = qemus_of(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def per_call(fn: Callable[[], object], calls: int) -> float:
    """Median seconds of one call of fn over ``calls`` calls."""
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --- libvirt: a /usr/bin/python3 child --------------------------------------------------------------

LIBVIRT_SCRIPT = r'''
import json, statistics, sys, threading, time
import libvirt

args = json.loads(sys.stdin.read())
libvirt.virEventRegisterDefaultImpl()
def loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=loop, daemon=True).start()
libvirt.registerErrorHandler(lambda ctx, err: None, None)

def per_call(fn, calls):
    times = []
    for _ in range(calls):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times)

out = {}
t = time.perf_counter()
conn = libvirt.open("qemu:///embed?root=" + args["root"])
out["open"] = time.perf_counter() - t
mode = args["mode"]
if mode == "lifecycle":
    t = time.perf_counter()
    dom = conn.defineXML(args["xml"])
    out["define"] = time.perf_counter() - t
    out["start"], out["destroy"] = [], []
    for _ in range(args["runs"]):
        t = time.perf_counter()
        dom.create()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        out["start"].append(time.perf_counter() - t)
        t = time.perf_counter()
        dom.destroy()
        out["destroy"].append(time.perf_counter() - t)
elif mode == "define":
    t = time.perf_counter()
    for xml in args["xmls"]:
        conn.defineXML(xml)
    out["define_all"] = time.perf_counter() - t
elif mode == "list":
    names = args["names"]
    t = time.perf_counter(); listed = conn.listDefinedDomains(); out["first_list"] = time.perf_counter() - t
    assert sorted(listed) == sorted(names), (len(listed), len(names))
    t = time.perf_counter(); conn.lookupByName(names[-1]); out["first_lookup"] = time.perf_counter() - t
    out["list"] = per_call(conn.listDefinedDomains, 20)
    out["list_all"] = per_call(conn.listAllDomains, 20)
    sample = names[:: max(1, len(names) // 100)]
    out["lookup"] = statistics.median(per_call(lambda n=n: conn.lookupByName(n), 1) for n in sample)
elif mode == "concurrent":
    names = args["names"]
    doms = [conn.defineXML(x) for x in args["xmls"]]
    errors = []
    def run(fn):
        barrier = threading.Barrier(len(doms))
        def body(d):
            try:
                barrier.wait(); fn(d)
            except Exception as e:
                errors.append(repr(e))
        threads = [threading.Thread(target=body, args=(d,)) for d in doms]
        t = time.perf_counter()
        for th in threads: th.start()
        for th in threads: th.join()
        return time.perf_counter() - t
    out["start_wall"] = run(lambda d: d.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED))
    out["active"] = conn.numOfDomains()
    out["destroy_wall"] = run(lambda d: d.destroy())
    out["errors"] = errors
    for d in doms:
        if d.isActive():
            d.destroy()
conn.close()
print(json.dumps(out))
'''


def libvirt_run(root: str, mode: str, **kw: Any) -> dict[str, Any]:
    request = json.dumps({"root": root, "mode": mode, **kw})
    p = subprocess.run([SYSTEM_PYTHON, "-c", LIBVIRT_SCRIPT], input=request,
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"libvirt child ({mode}) failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def libvirt_root() -> str:
    root = short_root("lv-")
    etc = Path(root) / "etc"
    etc.mkdir(parents=True)
    (etc / "qemu.conf").write_text('stdio_handler = "file"\nuser = "root"\ngroup = "root"\n')
    return root


# --- raw QEMU ----------------------------------------------------------------------------------------

def raw_round(guest: Guest, workdir: str) -> tuple[float, float]:
    path = os.path.join(workdir, "raw.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    t = time.perf_counter()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    argv = [QEMU, "-machine", "pc,accel=tcg", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-S", "-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
            "-append", guest.cmdline, "-serial", f"file:{workdir}/raw.serial",
            "-chardev", f"socket,id=mon,fd={listener.fileno()},server=on,wait=off",
            "-mon", "chardev=mon,mode=control"]
    p = subprocess.Popen(argv, pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    listener.close()
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        qmp = RawQMP(s)
        qmp.execute("cont")
        start = time.perf_counter() - t
        t = time.perf_counter()
        with contextlib.suppress(OSError, ValueError):
            qmp.execute("quit")
        p.wait(10)
        stop = time.perf_counter() - t
        qmp.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return start, stop


# --- pyvirt ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def pyvirt_conn(root: str) -> Iterator[connection.virConnect]:
    conn = connection.open(f"qemu:///embed?root={root}")
    try:
        yield conn
    finally:
        for name in list(conn.driver.running):
            with contextlib.suppress(Exception):
                conn.lookupByName(name).destroy()
        conn.close()


def pyvirt_lifecycle(root: str, xml: str, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"start": [], "destroy": []}
    t = time.perf_counter()
    with pyvirt_conn(root) as conn:
        out["open"] = time.perf_counter() - t
        t = time.perf_counter()
        dom = conn.defineXML(xml)
        out["define"] = time.perf_counter() - t
        for _ in range(runs):
            t = time.perf_counter()
            dom.create()
            assert dom.state()[0] == connection.VIR_DOMAIN_RUNNING
            out["start"].append(time.perf_counter() - t)
            t = time.perf_counter()
            dom.destroy()
            out["destroy"].append(time.perf_counter() - t)
    return out


def pyvirt_scale(root: str, xmls: list[str], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with pyvirt_conn(root) as conn:
        t = time.perf_counter()
        for xml in xmls:
            conn.defineXML(xml)
        out["define_all"] = time.perf_counter() - t
    # The last connection closed the driver: a fresh one loads the definitions on first use.
    t = time.perf_counter()
    with pyvirt_conn(root) as conn:
        out["open"] = time.perf_counter() - t
        t = time.perf_counter()
        listed = conn.listDefinedDomains()
        out["first_list"] = time.perf_counter() - t
        assert sorted(listed) == sorted(names), (len(listed), len(names))
        t = time.perf_counter()
        conn.lookupByName(names[-1])
        out["first_lookup"] = time.perf_counter() - t
        out["list"] = per_call(conn.listDefinedDomains, 20)
        list_all = getattr(conn, "listAllDomains", None)
        out["list_all"] = per_call(list_all, 20) if list_all is not None else None
        sample = names[:: max(1, len(names) // 100)]
        out["lookup"] = statistics.median(per_call(lambda n=n: conn.lookupByName(n), 1) for n in sample)
    return out


def pyvirt_concurrent(root: str, xmls: list[str], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    errors: list[str] = []
    with pyvirt_conn(root) as conn:
        doms = [conn.defineXML(x) for x in xmls]

        def run(fn: Callable[[connection.virDomain], object]) -> float:
            barrier = threading.Barrier(len(doms))

            def body(d: connection.virDomain) -> None:
                try:
                    barrier.wait()
                    fn(d)
                except Exception as e:
                    errors.append(repr(e))

            threads = [threading.Thread(target=body, args=(d,)) for d in doms]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return time.perf_counter() - t

        out["start_wall"] = run(lambda d: d.createWithFlags(connection.VIR_DOMAIN_START_PAUSED))
        out["active"] = sum(d.isActive() for d in doms)
        out["ids"] = len({d.ID() for d in doms if d.isActive()})
        out["destroy_wall"] = run(lambda d: d.destroy())
    out["errors"] = errors
    return out


# --- report ------------------------------------------------------------------------------------------

def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:9.1f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=20)
    ap.add_argument("--no-libvirt", action="store_true")
    args = ap.parse_args(argv)

    guest = build()
    roots: list[str] = []

    def new_root(prefix: str, libvirt: bool = False) -> str:
        root = libvirt_root() if libvirt else short_root(prefix)
        roots.append(root)
        return root

    try:
        # 1. lifecycle
        work = tempfile.mkdtemp(prefix="raw-", dir="/tmp")
        roots.append(work + "/r")
        raw_round(guest, work)  # warm-up (page cache), not counted
        raw = [raw_round(guest, work) for _ in range(args.runs)]
        pv_root = new_root("pv-")
        pv = pyvirt_lifecycle(pv_root, domain_xml("bench", guest, f"{pv_root}.serial"), args.runs)
        lv: dict[str, Any] | None = None
        if not args.no_libvirt:
            lv_root = new_root("lv-", libvirt=True)
            lv = libvirt_run(lv_root, "lifecycle", xml=domain_xml("bench", guest, f"{lv_root}.serial"),
                             runs=args.runs)
        med = statistics.median
        raw_start, raw_stop = med(r[0] for r in raw), med(r[1] for r in raw)
        pv_start, pv_stop = med(pv["start"]), med(pv["destroy"])
        print(f"== lifecycle: test guest, 256 MiB, 1 vCPU, TCG; medians of {args.runs} rounds ==")
        print(f"{'':10}{'define':>12}{'start':>12}{'destroy':>12}   (all rounds, ms)")
        print(f"{'raw QEMU':10}{'':>12}{ms(raw_start):>12}{ms(raw_stop):>12}   "
              f"start {[round(r[0] * 1000) for r in raw]} quit {[round(r[1] * 1000) for r in raw]}")
        print(f"{'pyvirt':10}{ms(pv['define']):>12}{ms(pv_start):>12}{ms(pv_stop):>12}   "
              f"start {[round(x * 1000) for x in pv['start']]} "
              f"destroy {[round(x * 1000) for x in pv['destroy']]}")
        if lv is not None:
            lv_start, lv_stop = med(lv["start"]), med(lv["destroy"])
            print(f"{'libvirt':10}{ms(lv['define']):>12}{ms(lv_start):>12}{ms(lv_stop):>12}   "
                  f"start {[round(x * 1000) for x in lv['start']]} "
                  f"destroy {[round(x * 1000) for x in lv['destroy']]}")
            print(f"pyvirt/libvirt start   {pv_start / lv_start:6.3f}  (target <= 0.333) "
                  f"{'MET' if pv_start <= lv_start / 3 else 'MISSED'}")
            print(f"pyvirt/libvirt destroy {pv_stop / lv_stop:6.3f}  (target <= 0.100) "
                  f"{'MET' if pv_stop <= lv_stop / 10 else 'MISSED'}")
            print(f"pyvirt/libvirt define  {pv['define'] / lv['define']:6.3f}")
        print(f"pyvirt - raw start     {(pv_start - raw_start) * 1000:+6.1f} ms (target <= +40 ms) "
              f"{'MET' if pv_start - raw_start <= 0.040 else 'MISSED'}; ratio {pv_start / raw_start:.2f}")
        print(f"pyvirt destroy / raw quit {pv_stop / raw_stop:6.2f}")

        # 2. many definitions
        names = [f"d{i:04d}" for i in range(args.count)]
        small = [domain_xml(n, None, None, memory_mib=64) for n in names]
        pv_root = new_root("pv-")
        pvs = pyvirt_scale(pv_root, small, names)
        lvs: dict[str, Any] | None = None
        if not args.no_libvirt:
            lv_root = new_root("lv-", libvirt=True)
            lvs = libvirt_run(lv_root, "define", xmls=small)
            loaded = libvirt_run(lv_root, "list", names=names)
            lvs.update(loaded)
        print(f"\n== {args.count} defined (inactive) domains ==")
        rows = [("define all", "define_all"), ("open (fresh driver)", "open"),
                ("first listDefinedDomains", "first_list"), ("first lookupByName", "first_lookup"),
                ("listDefinedDomains", "list"), ("listAllDomains", "list_all"), ("lookupByName", "lookup")]
        print(f"{'':28}{'pyvirt':>14}{'libvirt':>14}{'ratio':>8}")
        for label, key in rows:
            a = pvs.get(key)
            b = lvs.get(key) if lvs else None
            ratio = f"{a / b:8.3f}" if a is not None and b else ""
            print(f"{label:28}{ms(a):>14}{ms(b):>14}{ratio}")
        for label, key in (("listDefinedDomains", "list"), ("listAllDomains", "list_all"),
                           ("lookupByName", "lookup")):
            v = pvs.get(key)
            if v is not None:
                print(f"pyvirt {label} under 10 ms: {'MET' if v < 0.010 else 'MISSED'} ({v * 1000:.2f} ms)")
            else:
                print(f"pyvirt {label}: not implemented")

        # 3. concurrent paused domains
        cn = [f"c{i:02d}" for i in range(args.threads)]
        pv_root = new_root("pv-")
        cx = [domain_xml(n, guest, f"{pv_root}.{n}.serial", memory_mib=64) for n in cn]
        pvc = pyvirt_concurrent(pv_root, cx, cn)
        leftover = kill_leftovers(pv_root)
        lvc: dict[str, Any] | None = None
        if not args.no_libvirt:
            lv_root = new_root("lv-", libvirt=True)
            lcx = [domain_xml(n, guest, f"{lv_root}.{n}.serial", memory_mib=64) for n in cn]
            lvc = libvirt_run(lv_root, "concurrent", xmls=lcx, names=cn)
        print(f"\n== {args.threads} paused domains (64 MiB), started then destroyed "
              f"from {args.threads} threads ==")
        print(f"{'':16}{'pyvirt':>14}{'libvirt':>14}{'ratio':>8}")
        for label, key in (("start wall", "start_wall"), ("destroy wall", "destroy_wall")):
            a, b = pvc[key], (lvc[key] if lvc else None)
            print(f"{label:16}{ms(a):>14}{ms(b):>14}{(a / b if b else 0):8.3f}")
        print(f"pyvirt: {pvc['active']}/{args.threads} active after start, {pvc['ids']} distinct ids, "
              f"{len(pvc['errors'])} errors {pvc['errors'][:3]}, QEMUs left behind: {leftover}")
        if lvc is not None:
            print(f"libvirt: {lvc['active']}/{args.threads} active after start, "
                  f"{len(lvc['errors'])} errors {lvc['errors'][:3]}")
    finally:
        for root in roots:
            left = kill_leftovers(root)
            if left:
                print(f"warning: killed QEMUs left behind in {root}: {left}", file=sys.stderr)
            shutil.rmtree(os.path.dirname(root), ignore_errors=True)  # serial files included
    return 0


if __name__ == "__main__":
    sys.exit(main())
