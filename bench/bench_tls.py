# SPDX-License-Identifier: LGPL-2.1-or-later
"""TLS (qemu+tls://) against pyvirtd and libvirtd 9.0, side by side, in one run.

Both daemons are started by the benchmark with the same throwaway PKI (tests/remote/tlspki.py:
an EC P-256 CA, server and client certificates) and the same settings (client certificate
required, CRL, tls_allowed_dn_list): libvirtd as the tests run it (tests/libvirtd_oracle.py),
pyvirtd with ``--root`` on a fresh embed root holding the files in ROOT/etc/pki. Every client is
Debian's python3-libvirt 9.0, the same for both servers.

- connection set-up: ``libvirt.open(uri)`` + ``conn.close()`` (TCP, TLS handshake with both
  certificates checked, the confirmation byte, AUTH_LIST, CONNECT_OPEN, ..., CONNECT_CLOSE),
  median milliseconds over ``--opens`` rounds;
- round trips: one connection looping ``lookupByName`` + ``dom.info()`` on an inactive domain
  for ``--duration`` seconds; pairs per second (two RPCs each).

Each figure is the median of ``--runs`` rounds that alternate which server goes first, printed
with the ratio pyvirtd/libvirtd (set-up: lower is better; round trips: higher is better).
Target (issue 8 "Speed"): no slower than libvirtd.

Usage: .venv/bin/python bench/bench_tls.py [--opens N] [--duration SECONDS] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon.testlib import free_port, short_tmpdir, start_pyvirtd  # noqa: E402
from remote import tlspki  # noqa: E402

import libvirtd_oracle  # noqa: E402 - the tests' private libvirtd

SYSTEM_PYTHON = "/usr/bin/python3"
DOMAIN = "benchtls"
_XML = (f"<domain type='qemu'><name>{DOMAIN}</name>"
        "<uuid>2b8d7a2e-5c8e-4f59-9a57-0c8b8f1c2d01</uuid><memory>65536</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>")

_CLIENT = r'''
import json, statistics, sys, time, libvirt
uri, opens, duration, xml, name = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open(uri)
try:
    conn.lookupByName(name)
except libvirt.libvirtError:
    conn.defineXML(xml)
conn.close()
times = []
for _ in range(opens):
    t = time.perf_counter()
    c = libvirt.open(uri)
    c.close()
    times.append(time.perf_counter() - t)
conn = libvirt.open(uri)
conn.lookupByName(name).info()  # warm
n = 0
end = time.perf_counter() + duration
start = time.perf_counter()
while time.perf_counter() < end:
    conn.lookupByName(name).info()
    n += 1
elapsed = time.perf_counter() - start
conn.close()
print(json.dumps({"open_ms": statistics.median(times) * 1000, "pairs_per_s": n / elapsed}))
'''


def measure(uri: str, opens: int, duration: float) -> dict[str, float]:
    out = subprocess.run([SYSTEM_PYTHON, "-c", _CLIENT, uri, str(opens), str(duration), _XML,
                          DOMAIN], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"client failed against {uri}:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opens", type=int, default=50)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    base = short_tmpdir("bench-tls-")
    pki = tlspki.make_pki(base / "pki")
    dn_list = '["C=GB,O=pyvirt tests,CN=*"]'
    files = pki.server_files
    lvd_port = free_port()
    libvirtd = libvirtd_oracle.start_libvirtd(
        listen_tls="1", tls_port=f'"{lvd_port}"', key_file=f'"{files["key_file"]}"',
        cert_file=f'"{files["cert_file"]}"', ca_file=f'"{files["ca_file"]}"',
        crl_file=f'"{files["crl_file"]}"', tls_allowed_dn_list=dn_list)
    root = base / "r"
    root.mkdir()
    shutil.copytree(pki.server_tree() / "etc", root / "etc", dirs_exist_ok=True)
    pv_port = free_port()
    pyvirtd = start_pyvirtd(root, config=(f'listen_tls = 1\nlisten_addr = "127.0.0.1"\n'
                                          f'tls_port = "{pv_port}"\n'
                                          f"tls_allowed_dn_list = {dn_list}\n"),
                            args=("--listen",))
    try:
        libvirtd_oracle._wait_ready(libvirtd)
        uris = {name: f"qemu+tls://127.0.0.1:{port}/system?pkipath={pki.pkipath('good')}"
                for name, port in (("pyvirtd", pv_port), ("libvirtd", lvd_port))}
        results: dict[str, list[dict[str, float]]] = {"pyvirtd": [], "libvirtd": []}
        for run in range(args.runs):
            order = ["pyvirtd", "libvirtd"] if run % 2 == 0 else ["libvirtd", "pyvirtd"]
            for name in order:
                results[name].append(measure(uris[name], args.opens, args.duration))
        med = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
               for name, rs in results.items()}
        print(f"TLS over 127.0.0.1, python3-libvirt 9.0 client, median of {args.runs} runs")
        print(f"{'':28}{'pyvirtd':>12}{'libvirtd':>12}{'ratio':>10}")
        ours, theirs = med["pyvirtd"], med["libvirtd"]
        print(f"{'open+close (ms)':28}{ours['open_ms']:12.2f}{theirs['open_ms']:12.2f}"
              f"{ours['open_ms'] / theirs['open_ms']:9.2f}x  (lower is better)")
        print(f"{'lookupByName+info pairs/s':28}{ours['pairs_per_s']:12.0f}"
              f"{theirs['pairs_per_s']:12.0f}{ours['pairs_per_s'] / theirs['pairs_per_s']:9.2f}x"
              "  (higher is better)")
    finally:
        pyvirtd.stop()
        libvirtd.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
