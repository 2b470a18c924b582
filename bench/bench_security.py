# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the security stack adds to a domain start, measured against the same start without it.

Two embedded roots run the same domain (TCG, paused, two 64 KiB raw disks in /var/tmp):

- secure:   qemu.conf defaults, i.e. DAC with dynamic_ownership and remember_owner (xattrs), and a
            cgroup per domain with libvirt's device ACL; QEMU as root, or as --user.
- insecure: security_driver = "none", dynamic_ownership = 0, cgroup_controllers = [] (nothing).

Each run starts the domain paused and destroys it; the figures are medians of the start and of the
destroy (which restores the labels and removes the cgroup). Target (issue 6): the security stack
adds under 10 ms to a start. With --user, QEMU runs as that user: the privilege shim's interpreter
start is then part of the difference too.

Usage: .venv/bin/python bench/bench_security.py [--runs N] [--user NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyvirt as libvirt


def domain(disks: list[Path]) -> str:
    devs = "".join(f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{d}'/>"
                   f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>" for i, d in enumerate(disks))
    return ("<domain type='qemu'><name>bench</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            f"<os><type arch='x86_64'>hvm</type></os><devices>{devs}</devices></domain>")


def measure(root: Path, conf: str, xml: str, runs: int) -> tuple[list[float], list[float]]:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "qemu.conf").write_text(conf)
    starts, stops = [], []
    with libvirt.open(f"qemu:///embed?root={root}") as conn:
        dom = conn.defineXML(xml)
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)  # warm: capabilities, imports
        dom.destroy()
        for _ in range(runs):
            t0 = time.perf_counter()
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            t1 = time.perf_counter()
            dom.destroy()
            t2 = time.perf_counter()
            starts.append(t1 - t0)
            stops.append(t2 - t1)
    return starts, stops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--user", default="root", help="the user QEMU runs as (default root)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pv-bsec-", dir="/var/tmp"))
    tmp = Path(tempfile.mkdtemp(prefix="pv-bs-", dir="/tmp"))  # short: monitor socket paths
    try:
        work.chmod(0o755)
        disks = []
        for i in range(2):
            p = work / f"d{i}.img"
            p.write_bytes(b"\0" * 65536)
            disks.append(p)
        ident = f'user = "{args.user}"\ngroup = "{args.user}"\n'
        secure = measure(tmp / "s", ident, domain(disks), args.runs)
        import pwd

        pw = pwd.getpwnam(args.user)
        for d in disks:  # without dynamic_ownership, QEMU must already own its disks
            os.chown(d, pw.pw_uid, pw.pw_gid)
        insecure = measure(tmp / "n", ident + 'security_driver = "none"\ndynamic_ownership = 0\n'
                           "cgroup_controllers = [ ]\n", domain(disks), args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: (statistics.median(v[0]) * 1000, statistics.median(v[1]) * 1000)
           for k, v in (("secure", secure), ("insecure", insecure))}
    print(f"security stack, QEMU as {args.user}, {args.runs} runs each (medians):")
    for k, (start, stop) in med.items():
        print(f"  {k:9s} start {start:7.1f} ms   destroy {stop:7.1f} ms")
    print(f"  added by DAC + cgroups: start {med['secure'][0] - med['insecure'][0]:+.1f} ms "
          f"(target < 10 ms), destroy {med['secure'][1] - med['insecure'][1]:+.1f} ms; "
          f"ratio secure/insecure start {med['secure'][0] / med['insecure'][0]:.2f}x")
    print(f"  (pid {os.getpid()})")


if __name__ == "__main__":
    main()
