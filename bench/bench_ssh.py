# SPDX-License-Identifier: LGPL-2.1-or-later
"""qemu+ssh: pyvirtd against libvirtd 9.0 through the same OpenSSH server, in one run.

One sshd on a loopback port (tests/remote/sshlib.py: throwaway keys, private config), pyvirtd with
``--root`` on a fresh root, the tests' private libvirtd (tests/libvirtd_oracle.py); both daemons
hold the same 20 inactive domains. The remote command is the same for both daemons in a row:
netcat to the daemon's socket (``socket=``), or ``pyvirt-ssh-helper`` (``proxy=native``), which
honours ``socket=`` and so relays to either daemon. Each client is measured against both
daemons, the same client and relay for both:

Each client process drives both daemons, taking turns, so that whatever else the machine does
meanwhile weighs on both alike:

- connection set-up: median wall time of ``open`` + ``getType()`` + ``close`` (ssh's own
  handshake included: it dominates and is the same for both daemons), one daemon then the other,
  the order flipping each round;
- round trips: ``lookupByName(name)`` + ``dom.info()`` pairs per second over one connection to
  each daemon, in 0.1 s slices that take turns, ``--duration`` seconds per daemon;
- for both, the daemon's own CPU time (user + system, all threads, from /proc) per set-up and
  per pair: the daemons' share, whatever else the machine is doing (ssh, sshd and the relay
  are the same for both and not counted).

Clients: Debian's python3-libvirt 9.0 (libvirt's ssh transport) and pyvirt's own client
(pyvirt.rpc.ssh). libvirt's own helper (virt-ssh-helper, its ``proxy=native``) drops
``socket=`` and reaches only the system daemon's socket, so it has no row: a private libvirtd
is out of its reach. Comparing a client's netcat and helper rows shows what the relay costs.
Client processes alternate which daemon goes first; medians of ``--repeat`` are printed with the
ratio pyvirtd / libvirtd (target: set-up <= 1, round trips >= 1, CPU <= 1). Set-up is also
compared round by round (the two set-ups of a round follow each other): the median of pyvirtd's
time minus libvirtd's, and how often pyvirtd's was the shorter, since ssh's own time (the same
for both) varies far more from one set-up to the next than the daemons' share of it.

Usage: .venv/bin/python bench/bench_ssh.py [--duration SECONDS] [--opens N] [--repeat N]
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon.testlib import short_tmpdir, start_pyvirtd  # noqa: E402
from remote.sshlib import SSHServer, running_sshd  # noqa: E402

import libvirtd_oracle  # noqa: E402 - the tests' private libvirtd

SYSTEM_PYTHON = "/usr/bin/python3"
DOMAINS = 20

# Each phase waits for a go on stdin, so that the daemons' CPU times are read between phases.
# Both daemons are driven by the one client process, taking turns, so that whatever else the
# machine does meanwhile weighs on both alike.
_CLIENT = r'''
import json, sys, time
mod, opens, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
names = json.loads(sys.argv[4])
uris = sys.argv[5:]
if mod == "libvirt":
    import libvirt
    libvirt.registerErrorHandler(lambda *a: None, None)
else:
    import pyvirt as libvirt
for uri in uris:
    c = libvirt.open(uri)  # warm: page cache, sshd's first fork
    c.close()
time.sleep(0.05)
print("ready", flush=True)
sys.stdin.readline()
setup = [[] for _ in uris]
for i in range(opens):
    for k in (range(len(uris)) if i % 2 == 0 else reversed(range(len(uris)))):
        t = time.perf_counter()
        c = libvirt.open(uris[k])
        c.getType()
        c.close()
        setup[k].append(time.perf_counter() - t)
conns = [libvirt.open(uri) for uri in uris]
for c in conns:
    c.lookupByName(names[0]).info()
time.sleep(0.05)
print("opened", flush=True)
sys.stdin.readline()
counts, spent = [0 for _ in uris], [0.0 for _ in uris]
for j in range(max(1, int(duration * 10))):  # 0.1 s slices, taking turns
    for k in (range(len(uris)) if j % 2 == 0 else reversed(range(len(uris)))):
        c, n, i = conns[k], 0, 0
        start = time.perf_counter()
        end = start + 0.1
        while time.perf_counter() < end:
            c.lookupByName(names[i]).info()
            i = (i + 1) % len(names)
            n += 1
        counts[k] += n
        spent[k] += time.perf_counter() - start
times = [list(ts) for ts in setup]  # in round order, for the paired differences
for ts in setup:
    ts.sort()
print(json.dumps([{"setup": ts[len(ts) // 2], "pairs": n / t, "n": n, "times": raw}
                  for ts, n, t, raw in zip(setup, counts, spent, times)]), flush=True)
sys.stdin.readline()
for c in conns:
    c.close()
'''

_DEFINE = r'''
import json, sys, libvirt
conn = libvirt.open(sys.argv[1])
for xml in json.loads(sys.stdin.read()):
    conn.defineXML(xml)
print(len(conn.listAllDomains()))
'''


def cpu_seconds(pid: int) -> float:
    """User + system time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(client: str, uris: dict[str, str], opens: int, duration: float, names: list[str],
            pids: dict[str, int]) -> dict[str, dict[str, Any]]:
    """One client process driving both daemons (side -> URI), taking turns: per side, its
    figures, its set-up times in round order ("times") and the CPU time that daemon spent per
    set-up and per pair (its own share only: ssh, sshd and the relay are not counted)."""
    python = SYSTEM_PYTHON if client == "libvirt" else sys.executable
    sides = list(uris)
    p = subprocess.Popen([python, "-c", _CLIENT, client, str(opens), str(duration),
                          json.dumps(names), *uris.values()], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    marks: list[dict[str, float]] = []
    line = ""
    try:
        for expect in ("ready", "opened", None):
            line = p.stdout.readline().strip()
            if not line or (expect is not None and line != expect):
                break
            marks.append({side: cpu_seconds(pids[side]) for side in sides})
            p.stdin.write("go\n")
            p.stdin.flush()
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0 or len(marks) != 3:
        raise RuntimeError(f"{client} client on {uris} failed:\n{err[-3000:]}")
    results: dict[str, dict[str, Any]] = {}
    for side, result in zip(sides, json.loads(line), strict=True):
        result["setup_cpu"] = (marks[1][side] - marks[0][side]) / opens
        result["pairs_cpu"] = (marks[2][side] - marks[1][side]) / result.pop("n")
        results[side] = result
    return results


def ratio(a: float, b: float) -> str:
    return f"{a / b:7.3f}" if b else "    n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of round trips per run")
    ap.add_argument("--opens", type=int, default=20,
                    help="connections set up per run and daemon")
    ap.add_argument("--repeat", type=int, default=3, help="rounds (medians are printed)")
    args = ap.parse_args(argv)
    names = [f"bench{i:03d}" for i in range(DOMAINS)]
    xmls = [f"<domain type='qemu'><name>{n}</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>" for n in names]

    parent = short_tmpdir("pvbs-")
    lvd: libvirtd_oracle.Libvirtd | None = None
    pvd = None
    try:
        with running_sshd("pvbssh-") as sshd:
            lvd = libvirtd_oracle.start_libvirtd()
            pvd = start_pyvirtd(parent / "r")
            for local in (pvd.uri(), lvd.uri()):
                p = subprocess.run([SYSTEM_PYTHON, "-c", _DEFINE, local], input=json.dumps(xmls),
                                   capture_output=True, text=True, timeout=300)
                if p.returncode != 0 or int(p.stdout) != DOMAINS:
                    raise RuntimeError(f"defining on {local} failed: {p.stderr[-2000:]}")
            rows = _rows(sshd, pvd.socket, lvd.socket)
            print(f"== qemu+ssh through one sshd on 127.0.0.1, {DOMAINS} domains, "
                  f"{args.opens} set-ups and {args.duration:g} s of calls per run, "
                  f"median of {args.repeat} ==")
            print(f"{'':50}{'pyvirtd':>10}{'libvirtd':>10}{'ratio':>9}")
            pids = {"ours": pvd.proc.pid, "theirs": lvd.proc.pid}
            for label, client, ours, theirs in rows:
                runs: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
                paired: list[float] = []  # pyvirtd's set-up minus libvirtd's, round by round
                for r in range(args.repeat):
                    order = [("ours", ours), ("theirs", theirs)]
                    got = measure(client, dict(order if r % 2 == 0 else order[::-1]), args.opens,
                                  args.duration, names, pids)
                    for side, result in got.items():
                        runs[side].append(result)
                    paired += [a - b for a, b in zip(got["ours"]["times"], got["theirs"]["times"],
                                                     strict=True)]
                keys = ("setup", "pairs", "setup_cpu", "pairs_cpu")
                a, b = ({k: statistics.median(x[k] for x in runs[side]) for k in keys}
                        for side in ("ours", "theirs"))
                for what, key, scale, digits in (
                        ("set-up ms", "setup", 1000, 1), ("daemon CPU ms per set-up", "setup_cpu", 1000, 2),
                        ("lookupByName+info /s", "pairs", 1, 0),
                        ("daemon CPU ms per pair", "pairs_cpu", 1000, 3)):
                    print(f"{label + ', ' + what:50}{a[key] * scale:10.{digits}f}"
                          f"{b[key] * scale:10.{digits}f}{ratio(a[key], b[key])}")
                    if key == "setup":
                        faster = sum(d < 0 for d in paired) / len(paired)
                        print(f"{'  (paired by round: pyvirtd - libvirtd, median ms)':50}"
                              f"{statistics.median(paired) * 1000:+10.2f}    pyvirtd faster in "
                              f"{faster:.0%} of {len(paired)} rounds")
    finally:
        if pvd is not None:
            pvd.stop(signal.SIGTERM)
        if lvd is not None:
            lvd.stop()
        shutil.rmtree(parent, ignore_errors=True)
    return 0


def _rows(sshd: SSHServer, pyvirtd_socket: str,
          libvirtd_socket: str) -> list[tuple[str, str, str, str]]:
    return [
        ("python3-libvirt, netcat", "libvirt", sshd.libvirt_uri(pyvirtd_socket),
         sshd.libvirt_uri(libvirtd_socket)),
        ("pyvirt client, netcat", "pyvirt", sshd.uri(pyvirtd_socket), sshd.uri(libvirtd_socket)),
        # pyvirt's helper honours socket=, so it relays to libvirtd's private socket as well
        ("pyvirt client, pyvirt-ssh-helper", "pyvirt",
         sshd.uri(pyvirtd_socket, extra="proxy=native"),
         sshd.uri(libvirtd_socket, extra="proxy=native")),
    ]


if __name__ == "__main__":
    sys.exit(main())
