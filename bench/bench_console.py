# SPDX-License-Identifier: LGPL-2.1-or-later
"""Guest consoles through pyvirtd against libvirtd 9.0, side by side, in one run.

Both daemons run the project's test guest (pty serial console) with the same definition: libvirtd
as the tests run it (tests/libvirtd_oracle.py), pyvirtd with ``--root`` on a fresh root. The client
is Debian's python3-libvirt 9.0 for both, one process per measurement round:

- open + finish: ``newStream`` + ``openConsole`` + ``finish``, median over ``--cycles``;
- round trip: type ``echo rt-N`` on the guest's shell, wait for the ``rt-N`` line to come back,
  median over ``--cycles`` (the guest's own serial emulation under TCG is most of it);
- bulk: the guest prints ``seq 1 10000`` (about 48 KB) and the time until the end marker arrives,
  as KB/s (bounded by QEMU's emulated UART; the point is that the daemon adds nothing).

Rounds alternate which server goes first; medians of ``--rounds``. Ratios are pyvirtd/libvirtd
(times: lower is better; KB/s: higher is better).

Usage: .venv/bin/python bench/bench_console.py [--rounds N] [--cycles N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon.testlib import short_tmpdir, start_pyvirtd  # noqa: E402

from pyvirt.testing import guest as tg  # noqa: E402

import libvirtd_oracle  # noqa: E402 - the tests' private libvirtd

SYSTEM_PYTHON = "/usr/bin/python3"

_PRELUDE = r'''
import json, sys, time, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open(sys.argv[1])
dom = conn.lookupByName("con")
def until(st, marker, limit=120):
    seen = bytearray()
    deadline = time.monotonic() + limit
    while marker not in seen[-len(marker) - 65536:]:
        if time.monotonic() > deadline:
            raise SystemExit(f"{marker!r} not seen: {bytes(seen[-200:])!r}")
        seen += st.recv(65536)
    return seen
'''

_SETUP = _PRELUDE + r'''
dom.create()
st = conn.newStream(0)
dom.openConsole(None, st, 0)
until(st, PROMPT)
time.sleep(0.5)
st.finish()
print(json.dumps(True))
'''

_ROUND = _PRELUDE + r'''
cycles = int(sys.argv[2])
opens = []
for _ in range(cycles):
    t = time.perf_counter()
    st = conn.newStream(0)
    dom.openConsole(None, st, 0)
    st.finish()
    opens.append(time.perf_counter() - t)
st = conn.newStream(0)
dom.openConsole(None, st, 0)
st.send(b"\r")
until(st, PROMPT)
trips = []
for i in range(cycles):
    t = time.perf_counter()
    st.send(f"echo rt-{i}\r".encode())
    until(st, f"rt-{i}\r\n".encode())
    trips.append(time.perf_counter() - t)
t = time.perf_counter()
st.send(b"seq 1 10000; echo bulk-$((1+1))\r")
data = until(st, b"bulk-2\r\n")
bulk = len(data) / 1024 / (time.perf_counter() - t)
time.sleep(0.3)
st.finish()
conn.close()
print(json.dumps({"open": sorted(opens)[len(opens) // 2], "trip": sorted(trips)[len(trips) // 2],
                  "bulk": bulk}))
'''


def _xml(guest: tg.Guest, dom_uuid: str) -> str:
    return f"""<domain type='qemu'><name>con</name><uuid>{dom_uuid}</uuid>
  <memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>
    <cmdline>{guest.cmdline}</cmdline></os>
  <features><acpi/></features><devices><serial type='pty'/></devices></domain>"""


def _python(script: str, *args: str) -> object:
    script = script.replace("PROMPT", repr(tg.PROMPT.encode()))
    out = subprocess.run([SYSTEM_PYTHON, "-c", script, *args], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"client failed:\n{out.stderr}")
    return json.loads(out.stdout)


def _define(uri: str, xml: str) -> None:
    path = Path(short_tmpdir("pcb-")) / "con.xml"
    path.write_text(xml)
    try:
        subprocess.run(["virsh", "-c", uri, "define", str(path)], check=True, capture_output=True)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def _kill_qemus_in(parent: str) -> None:
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and b"qemu-system" in open(f"/proc/{entry}/cmdline", "rb").read() \
                    and os.readlink(f"/proc/{entry}/cwd").startswith(parent + "/"):
                os.kill(int(entry), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=20)
    opts = parser.parse_args()
    guest = tg.build()
    xml = _xml(guest, str(uuid.uuid4()))
    lvd = libvirtd_oracle.start_libvirtd()
    parent = short_tmpdir("pcb-")
    pvd = start_pyvirtd(parent / "r")
    servers = {"pyvirtd": pvd.uri(), "libvirtd": lvd.uri()}
    try:
        for uri in servers.values():
            _define(uri, xml)
            _python(_SETUP, uri)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
        for r in range(opts.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                res = _python(_ROUND, servers[name], str(opts.cycles))
                assert isinstance(res, dict)
                results[name].append(res)
        med = {name: {k: statistics.median(x[k] for x in rs) for k in ("open", "trip", "bulk")}
               for name, rs in results.items()}
        ours, theirs = med["pyvirtd"], med["libvirtd"]
        print(f"{'':22}{'pyvirtd':>12}{'libvirtd':>12}{'ratio':>8}")
        print(f"{'open+finish (ms)':22}{ours['open'] * 1e3:12.2f}{theirs['open'] * 1e3:12.2f}"
              f"{ours['open'] / theirs['open']:8.2f}")
        print(f"{'echo round trip (ms)':22}{ours['trip'] * 1e3:12.2f}{theirs['trip'] * 1e3:12.2f}"
              f"{ours['trip'] / theirs['trip']:8.2f}")
        print(f"{'bulk output (KB/s)':22}{ours['bulk']:12.1f}{theirs['bulk']:12.1f}"
              f"{ours['bulk'] / theirs['bulk']:8.2f}")
    finally:
        for uri in servers.values():
            subprocess.run(["virsh", "-c", uri, "destroy", "con"], capture_output=True)
        pvd.stop()
        lvd.stop()
        _kill_qemus_in(str(parent))
        shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
