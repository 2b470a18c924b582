# SPDX-License-Identifier: LGPL-2.1-or-later
"""Virtual network start/stop latency: pyvirt against libvirt 9.0, measured in the same run.

The same network (forward mode 'open', bridge virbr7, 10.85.0.1/24 with a DHCP range: a bridge, an
address and a dnsmasq) is created (networkCreateXML) and destroyed N times:

- pyvirt embedded:   in this process (qemu:///embed), no daemon;
- pyvirt via pyvirtd: python3-libvirt (Debian's) over pyvirtd's UNIX socket;
- libvirt 9.0:       python3-libvirt over a private libvirtd with its network driver.

Everything runs in network namespaces made here (``unshare --net``), never on the host's own
interfaces. libvirt 9.0 needs iptables for networks with firewall rules, and this host has only
nftables, so the comparison uses 'open' (no rules); pyvirt's NAT start (nft rules included) is
printed on its own. Figures are medians; ratios are pyvirt / libvirt (below 1: pyvirt is faster).

Usage: .venv/bin/python bench/bench_network.py [--runs N]
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
OPEN = ("<network><name>bench</name><forward mode='open'/><bridge name='virbr7'/>"
        "<ip address='10.85.0.1' prefix='24'><dhcp><range start='10.85.0.2' end='10.85.0.254'/></dhcp></ip>"
        "</network>")
NAT = OPEN.replace("mode='open'", "mode='nat'")

CLIENT = r"""
import json, sys, time, libvirt
conn = libvirt.open(sys.argv[1])
xml, runs = sys.argv[2], int(sys.argv[3])
net = conn.networkCreateXML(xml); net.destroy()  # warm
starts, stops = [], []
for _ in range(runs):
    t0 = time.perf_counter(); net = conn.networkCreateXML(xml)
    t1 = time.perf_counter(); net.destroy()
    t2 = time.perf_counter()
    starts.append(t1 - t0); stops.append(t2 - t1)
print(json.dumps([starts, stops]))
"""


def client(uri: str, xml: str, runs: int) -> tuple[list[float], list[float]]:
    out = subprocess.run([SYSTEM_PYTHON, "-c", CLIENT, uri, xml, str(runs)], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"libvirt-python client failed:\n{out.stderr}")
    starts, stops = json.loads(out.stdout)
    return starts, stops


def embedded(xml: str, runs: int) -> tuple[list[float], list[float]]:
    import pyvirt

    root = Path(tempfile.mkdtemp(prefix="pvb-", dir="/tmp"))
    try:
        with pyvirt.open(f"qemu:///embed?root={root}") as conn:
            conn.networkLookupByName("default").destroy()  # defined and started on first use
            net = conn.networkCreateXML(xml)
            net.destroy()
            starts, stops = [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                net = conn.networkCreateXML(xml)
                t1 = time.perf_counter()
                net.destroy()
                t2 = time.perf_counter()
                starts.append(t1 - t0)
                stops.append(t2 - t1)
        return starts, stops
    finally:
        shutil.rmtree(root, ignore_errors=True)


def via_pyvirtd(xml: str, runs: int) -> tuple[list[float], list[float]]:
    parent = Path(tempfile.mkdtemp(prefix="pvb-", dir="/tmp"))
    root = parent / "r"
    root.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pyvirt.daemon.main", "--root", str(root)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = root / "run" / "libvirt-sock"
        deadline = time.monotonic() + 30
        while not (root / "run" / "pyvirtd.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        uri = f"qemu+unix:///system?socket={sock}"
        subprocess.run(["virsh", "-q", "-c", uri, "net-destroy", "default"], capture_output=True, check=False)
        return client(uri, xml, runs)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(parent, ignore_errors=True)


def in_namespace(runs: int) -> dict[str, list[list[float]]]:
    """The pyvirt figures, measured in this process's (fresh) network namespace."""
    return {"embedded": list(embedded(OPEN, runs)), "pyvirtd": list(via_pyvirtd(OPEN, runs)),
            "embedded_nat": list(embedded(NAT, runs))}


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        print(json.dumps(in_namespace(args.runs)))
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_network needs root (network namespaces, bridges)")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}"}
    out = subprocess.run(["unshare", "--net", "--", "/bin/sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                          sys.executable, __file__, "--inside", "--runs", str(args.runs)],
                         capture_output=True, text=True, env=env, timeout=1200)
    if out.returncode != 0:
        raise SystemExit(f"pyvirt's measurement failed:\n{out.stderr}")
    mine = json.loads(out.stdout.splitlines()[-1])
    sys.path.insert(0, str(REPO / "tests"))
    from network_oracle import start_network_libvirtd

    daemon = start_network_libvirtd()
    try:
        ref = client(daemon.uri(), OPEN, args.runs)
    finally:
        daemon.stop()
    print(f"network start/stop, forward mode 'open' (bridge + address + dnsmasq), median of {args.runs} runs")
    print(f"{'':24}{'start ms':>10}{'stop ms':>10}{'start ratio':>13}{'stop ratio':>12}")
    lv_start, lv_stop = ms(ref[0]), ms(ref[1])
    print(f"{'libvirt 9.0 (libvirtd)':24}{lv_start:10.1f}{lv_stop:10.1f}")
    for label, key in (("pyvirt embedded", "embedded"), ("pyvirt via pyvirtd", "pyvirtd")):
        start, stop = ms(mine[key][0]), ms(mine[key][1])
        print(f"{label:24}{start:10.1f}{stop:10.1f}{start / lv_start:13.2f}{stop / lv_stop:12.2f}")
    start, stop = ms(mine["embedded_nat"][0]), ms(mine["embedded_nat"][1])
    print(f"{'pyvirt embedded, NAT':24}{start:10.1f}{stop:10.1f}   "
          "(libvirt 9.0 cannot start NAT here: no iptables)")


if __name__ == "__main__":
    main()
