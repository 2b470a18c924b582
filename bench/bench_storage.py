# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's embedded storage driver against libvirt 9.0's storage driver, side by side, in one run.

libvirt cannot embed its storage driver: its side is a private libvirtd with the storage driver
(tests/storage_oracle.py, the tests' isolation), driven by Debian's python3-libvirt; pyvirt's side
is the embedded driver (``qemu:///embed?root=...``) in this process. Each side gets a dir pool of
its own on the same file system and does, ``--runs`` times:

- create: ``pool.createXML`` of a 1 GiB qcow2 volume with a backing file (a qcow2 base made once);
- clone: ``pool.createXMLFrom`` of that volume (qemu-img convert: a flattened qcow2 copy);
- delete: of both volumes (not timed).

Reported: the median latency of each call per side and the ratio pyvirt / libvirt (target: <= 1,
"no slower than libvirt"). Both sides run qemu-img for the image work, so the ratio shows the
overhead each driver adds around it; the two sides alternate which goes first each round.

Usage: .venv/bin/python bench/bench_storage.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from storage_oracle import start_storage_libvirtd  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"

_BASE = ("<volume><name>base.qcow2</name><capacity unit='G'>1</capacity>"
         "<target><format type='qcow2'/></target></volume>")
_TOP = ("<volume><name>top{i}.qcow2</name><capacity unit='G'>1</capacity><target><format type='qcow2'/>"
        "</target><backingStore><path>{base}</path><format type='qcow2'/></backingStore></volume>")
_CLONE = ("<volume><name>clone{i}.qcow2</name><capacity unit='G'>1</capacity>"
          "<target><format type='qcow2'/></target></volume>")
_POOL = "<pool type='dir'><name>bench</name><target><path>{path}</path></target></pool>"

#: One round on one side: the same steps for both (the libvirt side runs it under python3-libvirt).
_ROUND = r"""
import json, sys, time
def one_round(conn, pool, i, base, top_xml, clone_xml):
    t0 = time.perf_counter()
    top = pool.createXML(top_xml.format(i=i, base=base), 0)
    t1 = time.perf_counter()
    clone = pool.createXMLFrom(clone_xml.format(i=i), top, 0)
    t2 = time.perf_counter()
    clone.delete(0)
    top.delete(0)
    return t1 - t0, t2 - t1
"""

_LIBVIRT_SIDE = _ROUND + r"""
import libvirt
uri, path, runs, base_xml, top_xml, clone_xml, pool_xml = sys.argv[1:8]
conn = libvirt.open(uri)
pool = conn.storagePoolCreateXML(pool_xml.format(path=path), 0)
base = pool.createXML(base_xml, 0)
times = [one_round(conn, pool, i, base.path(), top_xml, clone_xml) for i in range(int(runs))]
base.delete(0)
pool.destroy()
print(json.dumps(times))
"""


def libvirt_side(uri: str, path: Path, runs: int) -> list[tuple[float, float]]:
    out = subprocess.run([SYSTEM_PYTHON, "-c", _LIBVIRT_SIDE, uri, str(path), str(runs), _BASE, _TOP, _CLONE,
                          _POOL], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"libvirt side failed:\n{out.stderr}")
    return [tuple(t) for t in json.loads(out.stdout)]  # type: ignore[misc]


def pyvirt_side(root: Path, path: Path, runs: int) -> list[tuple[float, float]]:
    import pyvirt

    scope: dict[str, object] = {}
    exec(_ROUND, scope)  # the very same round as the libvirt side
    one_round = scope["one_round"]
    conn = pyvirt.open(f"qemu:///embed?root={root}")
    try:
        pool = conn.storagePoolCreateXML(_POOL.format(path=path), 0)
        base = pool.createXML(_BASE, 0)
        times = [one_round(conn, pool, i, base.path(), _TOP, _CLONE) for i in range(runs)]  # type: ignore[operator]
        base.delete(0)
        pool.destroy()
    finally:
        conn.close()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="volumes created and cloned per side per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, alternating which side goes first")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bst-", dir="/var/tmp"))
    daemon = start_storage_libvirtd()
    results: dict[str, list[tuple[float, float]]] = {"pyvirt": [], "libvirt": []}
    try:
        for r in range(args.rounds):
            order = ("pyvirt", "libvirt") if r % 2 == 0 else ("libvirt", "pyvirt")
            for side in order:
                path = work / f"{side}-{r}"
                path.mkdir()
                if side == "pyvirt":
                    results[side] += pyvirt_side(work / f"root-{r}", path, args.runs)
                else:
                    results[side] += libvirt_side(daemon.uri(), path, args.runs)
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"volume create and clone, qcow2 1 GiB with a qcow2 backing file, median of "
          f"{args.runs * args.rounds} (ms)")
    print(f"{'':30}{'pyvirt':>10}{'libvirt':>10}{'ratio':>9}")
    for index, what in enumerate(("createXML (with backing)", "createXMLFrom (clone)")):
        ours = statistics.median(t[index] for t in results["pyvirt"]) * 1000
        theirs = statistics.median(t[index] for t in results["libvirt"]) * 1000
        print(f"{what:30}{ours:10.2f}{theirs:10.2f}{ours / theirs:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
