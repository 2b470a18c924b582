# SPDX-License-Identifier: LGPL-2.1-or-later
"""SASL (SCRAM-SHA-256) connection set-up: pyvirtd against libvirtd 9.0, side by side, in one run.

Both daemons are configured as tests/remote/test_sasl.py configures them (SASL over TLS with a
client certificate, and over the read-write UNIX socket; the same users; libvirtd with Cyrus SASL
and a sasldb of its own). Each client process opens N connections one after the other -- AUTH_LIST,
AUTH_SASL_INIT/START/STEP, CONNECT_OPEN, one CONNECT_GET_TYPE, close -- and reports the median
time per connection. Clients: Debian's python3-libvirt 9.0 (openAuth with a callback) and pyvirt's
own client (``pyvirt.openAuth``), each against both daemons; the rounds alternate which daemon goes
first. The SCRAM client's PBKDF2 (4096 iterations) is part of every connection, on both sides
alike.

Target: connection set-up no slower than libvirtd (ratio <= 1).

Usage: .venv/bin/python bench/bench_sasl.py [--connections N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from remote import tlspki  # noqa: E402
from remote.test_sasl import USERS, sasl_pyvirtd, start_sasl_libvirtd  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"

_CLIENT = r'''
import json, statistics, sys, time
if sys.argv[1] == "libvirt":
    import libvirt
    libvirt.registerErrorHandler(lambda *a: None, None)
else:
    import pyvirt as libvirt
uri, password, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
def cb(creds, opaque):
    for c in creds:
        c[4] = "fred" if c[0] == libvirt.VIR_CRED_AUTHNAME else password
    return 0
times = []
for _ in range(n + 1):
    t = time.perf_counter()
    conn = libvirt.openAuth(uri, [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE], cb, None], 0)
    conn.getType()
    conn.close()
    times.append(time.perf_counter() - t)
print(json.dumps(statistics.median(times[1:])))  # the first one warms the imports up
'''


def measure(client: str, uri: str, n: int) -> float:
    python = SYSTEM_PYTHON if client == "libvirt" else sys.executable
    out = subprocess.run([python, "-c", _CLIENT, client, uri, USERS["fred"], str(n)],
                         capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C"})
    if out.returncode != 0:
        raise SystemExit(f"{client} against {uri} failed:\n{out.stderr}")
    return float(json.loads(out.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="pvsasl-bench-"))
    pki = tlspki.make_pki(base)
    lvd = start_sasl_libvirtd(pki)
    try:
        with sasl_pyvirtd(pki) as (_, mine):
            theirs = lvd.served
            print(f"connection set-up with SCRAM-SHA-256, median of {args.connections} per round, "
                  f"median of {args.rounds} rounds (ms)")
            print(f"{'client':9} {'transport':9} {'pyvirtd':>9} {'libvirtd':>9} {'ratio':>6}")
            for client in ("libvirt", "pyvirt"):
                for transport in ("tls", "unix"):
                    got: dict[str, list[float]] = {"pyvirtd": [], "libvirtd": []}
                    for r in range(args.rounds):
                        order = [mine, theirs] if r % 2 == 0 else [theirs, mine]
                        for served in order:
                            got[served.name].append(measure(client, served.uri(transport),
                                                            args.connections))
                    p = statistics.median(got["pyvirtd"]) * 1000
                    lv = statistics.median(got["libvirtd"]) * 1000
                    print(f"{client:9} {transport:9} {p:9.2f} {lv:9.2f} {p / lv:6.2f}")
    finally:
        lvd.daemon.stop()
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
