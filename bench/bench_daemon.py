# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd against libvirtd 9.0, side by side, in one run.

Both daemons are started by the benchmark on private sockets: libvirtd as the tests run it
(tests/libvirtd_oracle.py: its own mount namespace, only the QEMU driver), pyvirtd with
``--root`` on a fresh embed root. Both get the same 100 inactive domains (same names and UUIDs).
Every client is Debian's python3-libvirt 9.0 (or virsh 9.0), the same for both servers.

- round trips per second: C concurrent clients (C = 1, 8, 64; one connection each, threads spread
  over up to 8 client processes) each looping ``lookupByName(name)`` + ``dom.info()`` over the
  100 names for a fixed time; reported as pairs per second (two RPCs each), the median of
  ``--repeat`` rounds that alternate which server goes first;
- ``virsh list --all`` with the 100 domains: median wall time of a whole virsh run (connect,
  CONNECT_LIST_ALL_DOMAINS, one DOMAIN_GET_STATE per domain, close);
- idle RSS of each daemon's process (VmRSS) once the domains are defined, before and after the
  load. Each daemon is measured as it usually runs: restarted over its warm QEMU capabilities
  cache (a first start of each probes QEMU), so what probing left behind counts for neither.

Targets (issue 7 "Speed"): calls/s >= 1x libvirtd, virsh list latency <= 1x, idle RSS <= 1.5x.

The comparison is client-fair: the same client script, interpreter and library (Debian's python3
with python3-libvirt 9.0, or virsh 9.0) talk to both servers over a UNIX socket, with the same
domains, in rounds that alternate which server goes first. pyvirtd runs on the interpreter of
this benchmark (``sys.executable``, printed in the header): its speed is part of pyvirtd's.

Usage: .venv/bin/python bench/bench_daemon.py [--duration SECONDS] [--clients 1,8,64] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon.testlib import short_tmpdir, start_pyvirtd  # noqa: E402

import libvirtd_oracle  # noqa: E402 - the tests' private libvirtd

SYSTEM_PYTHON = "/usr/bin/python3"
VIRSH = "/usr/bin/virsh"
DOMAINS = 100
_MAX_CLIENT_PROCS = 8

#: One client process: opens its connections, says "ready", waits for "go" on stdin, loops
#: lookupByName + info on each connection from its own thread for the duration, prints counts.
_CLIENT = r'''
import json, sys, threading, time, libvirt
uri, nconn, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
names = json.loads(sys.argv[4])
libvirt.registerErrorHandler(lambda *a: None, None)
conns = [libvirt.open(uri) for _ in range(nconn)]
for c in conns:
    c.lookupByName(names[0]).info()  # warm: the first call of a connection is not measured
counts = [0] * nconn
stop = threading.Event()
def work(i, c):
    k = 0
    n = len(names)
    while not stop.is_set():
        c.lookupByName(names[(k + i * 7) % n]).info()
        k += 1
    counts[i] = k
print("ready", flush=True)
sys.stdin.readline()
threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(conns)]
t = time.perf_counter()
for th in threads: th.start()
time.sleep(duration)
stop.set()
for th in threads: th.join()
elapsed = time.perf_counter() - t
for c in conns: c.close()
print(json.dumps({"pairs": sum(counts), "elapsed": elapsed}))
'''

_DEFINE = r'''
import json, sys, libvirt
conn = libvirt.open(sys.argv[1])
for xml in json.loads(sys.stdin.read()):
    conn.defineXML(xml)
print(len([d for d in conn.listAllDomains() if d.name().startswith("bench")]))
conn.close()
'''


def domain_xmls() -> tuple[list[str], list[str]]:
    names = [f"bench{i:03d}" for i in range(DOMAINS)]
    xmls = [f"<domain type='qemu'><name>{n}</name><uuid>{uuid.uuid5(uuid.NAMESPACE_DNS, n)}</uuid>"
            "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os></domain>" for n in names]
    return names, xmls


_WARM = r'''
import sys, libvirt
conn = libvirt.open(sys.argv[1])
conn.getDomainCapabilities()
conn.close()
'''


def warm_caps(uri: str) -> None:
    """Have the daemon at ``uri`` probe QEMU (getDomainCapabilities), filling its cache."""
    p = subprocess.run([SYSTEM_PYTHON, "-c", _WARM, uri], capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"getDomainCapabilities on {uri} failed: {p.stderr[-2000:]}")


def define_all(uri: str, xmls: list[str]) -> None:
    p = subprocess.run([SYSTEM_PYTHON, "-c", _DEFINE, uri], input=json.dumps(xmls),
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0 or int(p.stdout.strip()) != len(xmls):
        raise RuntimeError(f"defining the domains on {uri} failed: {p.stdout} {p.stderr[-2000:]}")


def round_trips(uri: str, clients: int, duration: float, names: list[str]) -> float:
    """Pairs (lookupByName + info) per second over all clients."""
    procs_n = min(clients, _MAX_CLIENT_PROCS)
    per = [clients // procs_n + (1 if i < clients % procs_n else 0) for i in range(procs_n)]
    procs = [subprocess.Popen([SYSTEM_PYTHON, "-c", _CLIENT, uri, str(n), str(duration),
                               json.dumps(names)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in per]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line != "ready\n":
                raise RuntimeError(f"client failed: {line} {p.stderr.read() if p.stderr else ''}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=duration + 120)
            if p.returncode != 0:
                raise RuntimeError(f"client failed: {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return sum(r["pairs"] / r["elapsed"] for r in results)


def virsh_list(uri: str, runs: int) -> float:
    env = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        p = subprocess.run([VIRSH, "-c", uri, "list", "--all"], capture_output=True, text=True,
                           env=env, timeout=120)
        elapsed = time.perf_counter() - t
        if p.returncode != 0 or p.stdout.count(" shut off") != DOMAINS:
            raise RuntimeError(f"virsh list --all on {uri}: {p.returncode} {p.stderr}")
        if i:  # the first run warms the page cache
            times.append(elapsed)
    return statistics.median(times)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def libvirtd_pid(daemon: libvirtd_oracle.Libvirtd) -> int:
    # unshare -> sh -> exec libvirtd: the pid file names the daemon itself
    deadline = time.monotonic() + 10
    path = daemon.root / "libvirtd.pid"
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd wrote no pid file")
        time.sleep(0.05)
    return int(path.read_text().strip())


def ratio(a: float, b: float) -> str:
    return f"{a / b:7.3f}" if b else "    n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per round-trip run")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--runs", type=int, default=10, help="virsh list runs")
    ap.add_argument("--repeat", type=int, default=3, help="rounds per client count (median)")
    ap.add_argument("--busy-poll-us", type=int, default=None,
                    help="pyvirtd's busy_poll_us (default: its default)")
    args = ap.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    names, xmls = domain_xmls()

    parent = short_tmpdir("pvb-")
    lvd: libvirtd_oracle.Libvirtd | None = None
    pvd = None
    try:
        # Both daemons are measured as they usually run: started over a warm QEMU capabilities
        # cache (libvirtd's is per machine, pyvirtd's in its root), so neither side's idle RSS
        # holds what probing QEMU left behind. A first start of each fills the cache.
        lvd = libvirtd_oracle.start_libvirtd()
        warm_caps(lvd.uri())
        lvd.stop()
        lvd = libvirtd_oracle.start_libvirtd()
        pvd = start_pyvirtd(parent / "r")
        warm_caps(pvd.uri())
        pvd.stop(signal.SIGTERM)
        pvd = start_pyvirtd(parent / "r", config=None if args.busy_poll_us is None
                            else f"busy_poll_us = {args.busy_poll_us}\n")
        sides = {"pyvirtd": pvd.uri(), "libvirtd": lvd.uri()}
        pids = {"pyvirtd": pvd.proc.pid, "libvirtd": libvirtd_pid(lvd)}
        for uri in sides.values():
            define_all(uri, xmls)
        time.sleep(2.0)
        rss_before = {k: rss_kib(pid) for k, pid in pids.items()}

        print(f"== {DOMAINS} defined domains; clients: python3-libvirt 9.0 and virsh 9.0; "
              f"{os.cpu_count()} CPUs; pyvirtd on {sys.executable} ==")
        print(f"{'':34}{'pyvirtd':>12}{'libvirtd':>12}{'ratio':>9}")
        results: dict[str, dict[str, float]] = {}
        for c in clients:
            # rounds alternate the order, so that neither side always follows the other (the
            # machine may be shared: the median of the rounds is reported)
            runs: dict[str, list[float]] = {"pyvirtd": [], "libvirtd": []}
            for r in range(args.repeat):
                for side in (["pyvirtd", "libvirtd"] if r % 2 == 0 else ["libvirtd", "pyvirtd"]):
                    runs[side].append(round_trips(sides[side], c, args.duration, names))
            got = {side: statistics.median(v) for side, v in runs.items()}
            results[f"rt{c}"] = got
            print(f"{f'lookupByName+info /s, {c} client(s)':34}{got['pyvirtd']:12.0f}"
                  f"{got['libvirtd']:12.0f}{ratio(got['pyvirtd'], got['libvirtd'])}"
                  f"   (target >= 1)")
        lists = {side: statistics.median(virsh_list(uri, args.runs) for _ in range(args.repeat))
                 for side, uri in sides.items()}
        print(f"{'virsh list --all, ms (median)':34}{lists['pyvirtd'] * 1000:12.1f}"
              f"{lists['libvirtd'] * 1000:12.1f}{ratio(lists['pyvirtd'], lists['libvirtd'])}"
              f"   (target <= 1)")
        time.sleep(2.0)
        rss_after = {k: rss_kib(pid) for k, pid in pids.items()}
        print(f"{'idle RSS, MiB (domains defined)':34}{rss_before['pyvirtd'] / 1024:12.1f}"
              f"{rss_before['libvirtd'] / 1024:12.1f}"
              f"{ratio(rss_before['pyvirtd'], rss_before['libvirtd'])}   (target <= 1.5)")
        print(f"{'idle RSS, MiB (after the load)':34}{rss_after['pyvirtd'] / 1024:12.1f}"
              f"{rss_after['libvirtd'] / 1024:12.1f}"
              f"{ratio(rss_after['pyvirtd'], rss_after['libvirtd'])}")
        verdicts = [all(r["pyvirtd"] >= r["libvirtd"] for r in results.values()),
                    lists["pyvirtd"] <= lists["libvirtd"],
                    rss_before["pyvirtd"] <= 1.5 * rss_before["libvirtd"]]
        print("targets: calls/s {}, virsh list {}, idle RSS {}".format(
            *("MET" if v else "MISSED" for v in verdicts)))
    finally:
        if pvd is not None:
            pvd.stop(signal.SIGTERM)
        if lvd is not None:
            lvd.stop()
        shutil.rmtree(parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
