# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's client against Debian's python3-libvirt 9.0, over UNIX sockets, in one run.

Both clients run the same script (``import pyvirt as libvirt`` for pyvirt's) against the same two
servers, a pyvirtd and the tests' private libvirtd 9.0, with bench_tls.py's measurement: each
client process takes turns between the servers; connection set-up is ``libvirt.open(uri)`` +
``conn.close()`` (median of ``--opens``), round trips are ``lookupByName`` + ``dom.info()`` pairs
per second over ``--duration`` seconds, and each figure is the median of ``--runs`` processes.
Printed per server: the two clients' figures and the ratio pyvirt/python3-libvirt (time: lower is
better; pairs/s: higher is better).

pyvirt's client runs its event loop in the caller's thread for each call while nothing asks it to
listen when idle (pyvirt.rpc.sync._LoopThread), as libvirt's client does without an event
loop; the script registers no callback.

Usage: .venv/bin/python bench/bench_client.py [--opens N] [--duration SECONDS] [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tls import CLIENTS, libvirtd_oracle, measure, short_tmpdir, start_pyvirtd  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opens", type=int, default=200)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    base = short_tmpdir("bench-cl-")
    libvirtd = libvirtd_oracle.start_libvirtd()
    pyvirtd = start_pyvirtd(base / "r")
    try:
        libvirtd_oracle._wait_ready(libvirtd)
        uris = {"pyvirtd": pyvirtd.uri(), "libvirtd": libvirtd.uri()}
        pids = {"pyvirtd": pyvirtd.proc.pid, "libvirtd": libvirtd.proc.pid}
        results: dict[tuple[str, str, str], list[dict[str, float]]] = {}
        for run in range(args.runs):
            order = list(uris) if run % 2 == 0 else list(reversed(uris))
            clients = list(CLIENTS) if run % 2 == 0 else list(reversed(CLIENTS))
            for client in clients:
                for phase, amount in (("open", args.opens), ("calls", args.duration)):
                    got = measure(client, phase, {name: uris[name] for name in order}, amount,
                                  pids)
                    for name, result in got.items():
                        results.setdefault((client, name, phase), []).append(result)
        print(f"UNIX sockets, median of {args.runs} runs ({args.opens} opens, "
              f"{args.duration:g} s of calls each)")
        print(f"{'':38}{'pyvirt':>10}{'python3-libvirt':>17}{'ratio':>8}")
        for server in uris:
            for label, phase, key, note in (
                    ("open+close ms", "open", "open_ms", "(lower is better)"),
                    ("lookupByName+info pairs/s", "calls", "pairs_per_s", "(higher is better)")):
                ours, theirs = (statistics.median(r[key] for r in results[(client, server, phase)])
                                for client in ("pyvirt client", "python3-libvirt"))
                digits = 0 if key == "pairs_per_s" else 3
                print(f"{'to ' + server + ', ' + label:38}{ours:10.{digits}f}"
                      f"{theirs:17.{digits}f}{ours / theirs:7.2f}x {note}")
    finally:
        pyvirtd.stop()
        libvirtd.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
