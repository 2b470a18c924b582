# SPDX-License-Identifier: LGPL-2.1-or-later
"""Benchmark: pyvirt's define (parse + QEMU post-parse) and dumpxml against libvirt 9.0's.

Run: .venv/bin/python bench/bench_domain_xml.py [--repeat N]

For each corpus document and a generated 100-device domain, prints the best time of N rounds of
pyvirt parse+format, of libvirt define+dumpxml (in-process, python3-libvirt on an embedded root, so no
virsh start-up is counted), and the ratio.  The target is a ratio <= 1 for every document.  It also
says whether both produced the same XML (after the compat test's normalisation).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "compat"))

from test_domain_compat import CORPUS, libvirt_define_and_dump, normalise  # noqa: E402

from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig  # noqa: E402
from pyvirt.xml.domain import parse_domain  # noqa: E402


def hundred_devices() -> str:
    """A q35 guest with 100 devices of the common kinds."""
    devs: list[str] = []
    for i in range(30):
        name = "vd" + (chr(ord("a") + i) if i < 26 else "a" + chr(ord("a") + i - 26))
        devs.append(f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                    f"<source file='/var/lib/libvirt/images/d{i}.qcow2'/>"
                    f"<target dev='{name}' bus='virtio'/></disk>")
    devs.append("<controller type='scsi' index='0' model='virtio-scsi'/>")
    for i in range(20):
        devs.append(f"<disk type='file' device='disk'><source file='/var/lib/libvirt/images/s{i}.img'/>"
                    f"<target dev='sd{chr(ord('a') + i)}' bus='scsi'/></disk>")
    for i in range(20):
        devs.append(f"<interface type='network'><mac address='52:54:00:00:10:{i:02x}'/>"
                    "<source network='default'/><model type='virtio'/></interface>")
    for i in range(10):
        devs.append(f"<channel type='unix'><target type='virtio' name='org.example.ch{i}'/></channel>")
    for i in range(4):
        devs.append(f"<serial type='pty'><target port='{i}'/></serial>")
    for _ in range(5):
        devs.append("<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>")
    for kind in ("tablet", "keyboard", "mouse"):
        devs.append(f"<input type='{kind}' bus='virtio'/>")
    devs.append("<input type='tablet' bus='usb'/>")
    devs.append("<input type='keyboard' bus='usb'/>")
    devs += ["<graphics type='vnc' port='-1'/>", "<video><model type='virtio'/></video>",
             "<sound model='ich9'/>", "<watchdog model='i6300esb'/>", "<memballoon model='virtio'/>"]
    assert len(devs) == 100, len(devs)
    body = "\n    ".join(devs)
    return ("<domain type='kvm'>\n  <name>hundred</name>\n"
            "  <uuid>9d2c1a4e-1f9b-4c36-9e0f-0b4a5d3c2e10</uuid>\n"
            f"  <memory unit='GiB'>4</memory>\n  <vcpu>4</vcpu>\n  <os><type machine='q35'>hvm</type></os>\n"
            f"  <devices>\n    {body}\n  </devices>\n</domain>\n")


def pyvirt_time(text: str, repeat: int) -> tuple[float, str]:
    ctx = QemuDomainConfig(DEFAULT_X86_64_CONTEXT)
    best = float("inf")
    out = ""
    for _ in range(repeat):
        start = time.perf_counter()
        out = parse_domain(text, ctx=ctx).to_xml()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "hundred-devices.xml"
        big.write_text(hundred_devices())
        paths = [*CORPUS, big]
        theirs = libvirt_define_and_dump(Path(tmp) / "root", paths, repeat=args.repeat)
        print(f"{'document':40} {'pyvirt ms':>10} {'libvirt ms':>11} {'ratio':>6}  same XML")
        ratios = []
        slower = 0
        for path in paths:
            text = path.read_text()
            ours, out = pyvirt_time(text, args.repeat)
            lv = theirs[str(path)]
            if "error" in lv:
                print(f"{path.stem:40} {ours * 1e3:10.3f} {'error':>11}")
                continue
            lv_s = float(lv["seconds"])  # type: ignore[arg-type]
            ratio = ours / lv_s
            ratios.append(ratio)
            slower += ratio > 1
            same = normalise(out, text) == normalise(str(lv["xml"]), text)
            print(f"{path.stem:40} {ours * 1e3:10.3f} {lv_s * 1e3:11.3f} {ratio:6.2f}  "
                  f"{'yes' if same else 'NO'}")
        print(f"\n{len(ratios)} documents: median ratio {statistics.median(ratios):.2f}, "
              f"max {max(ratios):.2f}, slower than libvirt: {slower}")


if __name__ == "__main__":
    main()
