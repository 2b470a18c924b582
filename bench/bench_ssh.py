# SPDX-License-Identifier: LGPL-2.1-or-later
"""qemu+ssh: pyvirtd against libvirtd 9.0 through the same OpenSSH server, in one run.

One sshd on a loopback port (tests/remote/sshlib.py: throwaway keys, private config), pyvirtd with
``--root`` on a fresh root, the tests' private libvirtd (tests/libvirtd_oracle.py); both daemons
hold the same 20 inactive domains. The remote command is the same for both daemons in a row:
netcat to the daemon's socket (``socket=``), or ``pyvirt-ssh-helper`` (``proxy=native``), which
honours ``socket=`` and so relays to either daemon. Each client is measured against both
daemons, the same client and relay for both:

- connection set-up: median wall time of ``open`` + ``getType()`` + ``close`` (ssh's own
  handshake included: it dominates and is the same for both daemons);
- round trips: ``lookupByName(name)`` + ``dom.info()`` pairs per second over one connection for
  ``--duration`` seconds;
- for both, the daemon's own CPU time (user + system, all threads, from /proc) per set-up and
  per pair: the daemons' share, whatever else the machine is doing (ssh, sshd and the relay
  are the same for both and not counted).

Clients: Debian's python3-libvirt 9.0 (libvirt's ssh transport) and pyvirt's own client
(pyvirt.rpc.ssh). libvirt's own helper (virt-ssh-helper, its ``proxy=native``) drops
``socket=`` and reaches only the system daemon's socket, so it has no row: a private libvirtd
is out of its reach. Comparing a client's netcat and helper rows shows what the relay costs.
Rounds alternate which daemon goes first; medians of ``--repeat`` rounds are printed with the
ratio pyvirtd / libvirtd (target: set-up <= 1, round trips >= 1, CPU <= 1).

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon.testlib import short_tmpdir, start_pyvirtd  # noqa: E402
from remote.sshlib import SSHServer, running_sshd  # noqa: E402

import libvirtd_oracle  # noqa: E402 - the tests' private libvirtd

SYSTEM_PYTHON = "/usr/bin/python3"
DOMAINS = 20

# Each phase waits for a go on stdin, so that the daemon's CPU time is read between phases.
_CLIENT = r'''
import json, sys, time
mod, uri, opens, duration = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
names = json.loads(sys.argv[5])
if mod == "libvirt":
    import libvirt
    libvirt.registerErrorHandler(lambda *a: None, None)
else:
    import pyvirt as libvirt
c = libvirt.open(uri)  # warm: page cache, sshd's first fork
c.close()
time.sleep(0.05)
print("ready", flush=True)
sys.stdin.readline()
setup = []
for _ in range(opens):
    t = time.perf_counter()
    c = libvirt.open(uri)
    c.getType()
    c.close()
    setup.append(time.perf_counter() - t)
c = libvirt.open(uri)
c.lookupByName(names[0]).info()
time.sleep(0.05)
print("opened", flush=True)
sys.stdin.readline()
n, i = 0, 0
start = time.perf_counter()
end = start + duration
while time.perf_counter() < end:
    c.lookupByName(names[i]).info()
    i = (i + 1) % len(names)
    n += 1
elapsed = time.perf_counter() - start
setup.sort()
print(json.dumps({"setup": setup[len(setup) // 2], "pairs": n / elapsed, "n": n}), flush=True)
sys.stdin.readline()
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


def measure(client: str, uri: str, opens: int, duration: float, names: list[str],
            pid: int) -> dict[str, float]:
    """One client process: its figures, and the CPU time the daemon ``pid`` spent per set-up
    and per pair (its own share only: ssh, sshd and the relay are not counted)."""
    python = SYSTEM_PYTHON if client == "libvirt" else sys.executable
    p = subprocess.Popen([python, "-c", _CLIENT, client, uri, str(opens), str(duration),
                          json.dumps(names)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    marks: list[float] = []
    line = ""
    try:
        for expect in ("ready", "opened", None):
            line = p.stdout.readline().strip()
            if not line or (expect is not None and line != expect):
                break
            marks.append(cpu_seconds(pid))
            p.stdin.write("go\n")
            p.stdin.flush()
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0 or len(marks) != 3:
        raise RuntimeError(f"{client} client on {uri} failed:\n{err[-3000:]}")
    result = dict(json.loads(line))
    result["setup_cpu"] = (marks[1] - marks[0]) / opens
    result["pairs_cpu"] = (marks[2] - marks[1]) / result.pop("n")
    return result


def ratio(a: float, b: float) -> str:
    return f"{a / b:7.3f}" if b else "    n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of round trips per run")
    ap.add_argument("--opens", type=int, default=10, help="connections set up per run")
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
                runs: dict[str, list[dict[str, float]]] = {"ours": [], "theirs": []}
                for r in range(args.repeat):
                    order = [("ours", ours), ("theirs", theirs)]
                    for side, uri in (order if r % 2 == 0 else order[::-1]):
                        runs[side].append(measure(client, uri, args.opens, args.duration,
                                                  names, pids[side]))
                keys = ("setup", "pairs", "setup_cpu", "pairs_cpu")
                a, b = ({k: statistics.median(x[k] for x in runs[side]) for k in keys}
                        for side in ("ours", "theirs"))
                for what, key, scale, digits in (
                        ("set-up ms", "setup", 1000, 1), ("daemon CPU ms per set-up", "setup_cpu", 1000, 2),
                        ("lookupByName+info /s", "pairs", 1, 0),
                        ("daemon CPU ms per pair", "pairs_cpu", 1000, 3)):
                    print(f"{label + ', ' + what:50}{a[key] * scale:10.{digits}f}"
                          f"{b[key] * scale:10.{digits}f}{ratio(a[key], b[key])}")
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
