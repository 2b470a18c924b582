# SPDX-License-Identifier: LGPL-2.1-or-later
"""Virtual network start/stop latency: pyvirt against libvirt 9.0, measured in the same run.

The same network (forward mode 'open', bridge virbr7, 10.85.0.1/24 with a DHCP range: a bridge, an
address and a dnsmasq) is created (networkCreateXML) and destroyed, by

- pyvirt embedded:   in a worker process (qemu:///embed), no daemon;
- pyvirt via pyvirtd: python3-libvirt (Debian's) over pyvirtd's UNIX socket;
- libvirt 9.0:       python3-libvirt over a private libvirtd with its network driver.

Everything runs in network namespaces made here (``unshare --net``), never on the host's own
interfaces. Each side is a long-lived worker; the measurement goes in rounds of a few start/stop
cycles per side, the order of the sides rotating from round to round (so that none always runs
first or after the same neighbour). Figures are medians over all cycles, ratios pyvirt / libvirt
(below 1: pyvirt is faster). libvirt 9.0 needs iptables for networks with firewall rules, and this
host has only nftables, so the comparison uses 'open' (no rules); pyvirt's NAT start and stop (nft
rules included) are printed on their own.

Last, an instrumented pass (separate, as the instruments cost time) times each step of pyvirt's
start and stop with perf_counter.

Usage: .venv/bin/python bench/bench_network.py [--rounds R] [--cycles C]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
OPEN = ("<network><name>bench</name><forward mode='open'/><bridge name='virbr7'/>"
        "<ip address='10.85.0.1' prefix='24'><dhcp><range start='10.85.0.2' end='10.85.0.254'/></dhcp></ip>"
        "</network>")
NAT = OPEN.replace("mode='open'", "mode='nat'")

#: a python3-libvirt worker: one warm cycle, then "N" on stdin -> N cycles' [starts, stops] on stdout
CLIENT = r"""
import json, sys, time, libvirt
conn = libvirt.open(sys.argv[1])
xml = sys.argv[2]
net = conn.networkCreateXML(xml); net.destroy()  # warm
print("ready", flush=True)
for line in sys.stdin:
    starts, stops = [], []
    for _ in range(int(line)):
        t0 = time.perf_counter(); net = conn.networkCreateXML(xml)
        t1 = time.perf_counter(); net.destroy()
        t2 = time.perf_counter()
        starts.append(t1 - t0); stops.append(t2 - t1)
    print(json.dumps([starts, stops]), flush=True)
"""


class Worker:
    """A process answering one JSON line per command line."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env)
        self.readline()  # "ready"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise SystemExit(f"benchmark worker {self.proc.args!r} failed:\n{self.log.read()}")
        return line

    def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def libvirt_client(uri: str, xml: str) -> Worker:
    return Worker([SYSTEM_PYTHON, "-c", CLIENT, uri, xml])


# --- inside the network namespace: pyvirt's worker ---------------------------------------------------

def _cycles(conn: Any, xml: str, n: int) -> list[list[float]]:
    starts, stops = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        net = conn.networkCreateXML(xml)
        t1 = time.perf_counter()
        net.destroy()
        t2 = time.perf_counter()
        starts.append(t1 - t0)
        stops.append(t2 - t1)
    return [starts, stops]


def _instrument(steps: dict[str, list[float]]) -> Callable[[], None]:
    """Time pyvirt's start and stop steps (module functions and methods); returns the undo."""
    from pyvirt.network import driver, host

    undo: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                steps.setdefault(label, []).append(time.perf_counter() - t0)
        undo.append((owner, attr, fn))
        setattr(owner, attr, timed)

    for attr, label in (("link_exists", "start: bridge name free? (link_exists)"),
                        ("host_networks", "start: overlap check (host_networks)"),
                        ("create_bridge", "start: bridge + address + up (netlink)"),
                        ("add_rules", "start: nft rules"),
                        ("start_dnsmasq", "start: dnsmasq run until daemonised"),
                        ("signal_dnsmasq", "stop: SIGTERM dnsmasq (pidfd)"),
                        ("begin_delete_link", "stop: RTM_DELLINK sent (thread)"),
                        ("remove_rules", "stop: nft rules removed"),
                        ("stop_dnsmasq", "stop: dnsmasq exit waited")):
        wrap(host, attr, label)
    wrap(host.LinkDeletion, "wait", "stop: bridge gone (RTM_DELLINK seen)")
    wrap(driver.NetworkDriver, "_save_status", "start: status file written (each)")
    wrap(driver.NetworkDriver, "_start", "start: driver total (_start)")
    wrap(driver.NetworkDriver, "_undo", "stop: driver total (_undo)")

    def restore() -> None:
        for owner, attr, fn in undo:
            setattr(owner, attr, fn)
    return restore


def inside() -> None:
    """The pyvirt worker, in this process's (fresh) network namespace: "embedded N", "pyvirtd N",
    "nat N", "steps N" on stdin, one JSON answer each."""
    from pyvirt.connection import open as pyvirt_open

    parent = Path(tempfile.mkdtemp(prefix="pvb-", dir="/tmp"))
    daemon: subprocess.Popen[bytes] | None = None
    client: Worker | None = None
    conn = None
    try:
        (parent / "e").mkdir()
        conn = pyvirt_open(f"qemu:///embed?root={parent / 'e'}")
        conn.networkLookupByName("default").destroy()  # defined and started on first use
        _cycles(conn, OPEN, 1)
        _cycles(conn, NAT, 1)
        root = parent / "d"
        root.mkdir()
        daemon = subprocess.Popen([sys.executable, "-m", "pyvirt.daemon.main", "--root", str(root)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (root / "run" / "pyvirtd.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        uri = f"qemu+unix:///system?socket={root / 'run' / 'libvirt-sock'}"
        subprocess.run(["virsh", "-q", "-c", uri, "net-destroy", "default"], capture_output=True, check=False)
        client = libvirt_client(uri, OPEN)
        print("ready", flush=True)
        for line in sys.stdin:
            what, n = line.split()
            if what == "embedded":
                answer: Any = _cycles(conn, OPEN, int(n))
            elif what == "nat":
                answer = _cycles(conn, NAT, int(n))
            elif what == "pyvirtd":
                answer = client.ask(n)
            else:
                steps: dict[str, list[float]] = {}
                restore = _instrument(steps)
                try:
                    answer = {"cycles": _cycles(conn, OPEN, int(n)), "steps": steps}
                finally:
                    restore()
            print(json.dumps(answer), flush=True)
    finally:
        if client is not None:
            client.close()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=15)
        if conn is not None:
            conn.close()
        shutil.rmtree(parent, ignore_errors=True)


# --- the run --------------------------------------------------------------------------------------

def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"{q[0] * 1000:.1f}-{q[2] * 1000:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=5, help="start/stop cycles per side and round")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside()
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_network needs root (network namespaces, bridges)")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}"}
    mine = Worker(["unshare", "--net", "--", "/bin/sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                   sys.executable, __file__, "--inside"], env=env)
    sys.path.insert(0, str(REPO / "tests"))
    from network_oracle import start_network_libvirtd

    daemon = start_network_libvirtd()
    ref: Worker | None = None
    try:
        ref = libvirt_client(daemon.uri(), OPEN)
        sides: dict[str, Callable[[int], Any]] = {
            "libvirt": lambda n: ref.ask(str(n)) if ref is not None else None,
            "embedded": lambda n: mine.ask(f"embedded {n}"),
            "pyvirtd": lambda n: mine.ask(f"pyvirtd {n}"),
        }
        order = list(sides)
        results: dict[str, list[list[float]]] = {k: [[], []] for k in sides}
        for r in range(args.rounds):
            turn = order[r % len(order):] + order[:r % len(order)]
            if r % 2:
                turn.reverse()
            for side in turn:
                starts, stops = sides[side](args.cycles)
                results[side][0] += starts
                results[side][1] += stops
        nat = mine.ask(f"nat {args.rounds * args.cycles}")
        steps = mine.ask(f"steps {args.rounds * args.cycles}")
    finally:
        if ref is not None:
            ref.close()
        daemon.stop()
        mine.close()

    n = args.rounds * args.cycles
    print(f"network start/stop, forward mode 'open' (bridge + address + dnsmasq): median (interquartile "
          f"range) of {n} cycles per side, {args.rounds} rounds, sides' order rotating")
    print(f"{'':24}{'start ms':>10}{'(IQR)':>12}{'stop ms':>10}{'(IQR)':>12}{'start ratio':>13}"
          f"{'stop ratio':>12}")
    lv_start, lv_stop = ms(results["libvirt"][0]), ms(results["libvirt"][1])
    print(f"{'libvirt 9.0 (libvirtd)':24}{lv_start:10.1f}{spread(results['libvirt'][0]):>12}"
          f"{lv_stop:10.1f}{spread(results['libvirt'][1]):>12}")
    for label, key in (("pyvirt embedded", "embedded"), ("pyvirt via pyvirtd", "pyvirtd")):
        start, stop = ms(results[key][0]), ms(results[key][1])
        print(f"{label:24}{start:10.1f}{spread(results[key][0]):>12}{stop:10.1f}{spread(results[key][1]):>12}"
              f"{start / lv_start:13.2f}{stop / lv_stop:12.2f}")
    print(f"{'pyvirt embedded, NAT':24}{ms(nat[0]):10.1f}{spread(nat[0]):>12}{ms(nat[1]):10.1f}"
          f"{spread(nat[1]):>12}   (libvirt 9.0 cannot start NAT here: no iptables)")
    print(f"\npyvirt embedded, 'open', step by step (instrumented pass of {n} cycles: start "
          f"{ms(steps['cycles'][0]):.1f} ms, stop {ms(steps['cycles'][1]):.1f} ms; medians per call)")
    for label, values in sorted(steps["steps"].items(), key=lambda kv: (not kv[0].startswith("start"),
                                                                         "total" not in kv[0], kv[0])):
        print(f"  {label:44}{ms(values):8.2f} ms  x{len(values) // n}")


if __name__ == "__main__":
    main()
