# SPDX-License-Identifier: LGPL-2.1-or-later
"""Real QEMU 7.2 runs every golden command line (paused, under TCG) and QMP shows the devices.

A golden file only freezes a command line; this test checks that QEMU accepts it and builds what
the definition asked for.  type='kvm' domains run as type='qemu' (KVM is unusable here).
Host resources the corpus names are swapped on the parsed model before
building (so the builder's own output is what QEMU runs): disk images made by qemu-img in a private
directory, character-device files and sockets moved there, taps replaced by user networking and
VNC moved to a UNIX socket (no TCP ports shared between parallel tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from pyvirt.qemu.command import CommandRuntime, build_command
from pyvirt.qemu.monitor import Monitor
from pyvirt.xml.domain import Domain
from pyvirt.xml.domain_peripherals import GraphicsListen

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_command_golden import CAPS, CONF, CORPUS, GOLDEN, parse  # noqa: E402

pytestmark = pytest.mark.slow

QEMU_IMG = "/usr/bin/qemu-img"
CASES = [p for p in CORPUS if (GOLDEN / f"{p.stem}.args").exists()]
# case -> why real QEMU cannot start it here
NOT_STARTABLE = {
    "os-direct-kernel": "the kernel and initrd it names would be loaded at start; the corpus has none",
    "drvqemu-commandline": "its <qemu:commandline> passes '-newarg', an option QEMU does not have",
    "qemu-ns-other-prefix": "its <qemu:commandline> passes a quoting test string QEMU rejects",
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short: the monitor socket path must fit in 107 bytes.
    d = Path(tempfile.mkdtemp(prefix="pvc-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def localise(dom: Domain, work: Path) -> None:
    """Point every host resource of the definition into ``work``."""
    devs = dom.devices
    assert devs is not None
    for i, disk in enumerate(devs.disks):
        if disk.source is None or (disk.source.file is None and disk.source.dev is None):
            continue
        fmt = disk.driver.type if disk.driver is not None and disk.driver.type else "raw"
        img = work / f"disk{i}.{fmt}"
        subprocess.run([QEMU_IMG, "create", "-q", "-f", fmt, str(img), "1M"], check=True)
        disk.type = "file"
        disk.source.file, disk.source.dev = str(img), None
    for n, chr_ in enumerate((*devs.serials, *devs.parallels, *devs.channels, *devs.consoles)):
        for src in chr_.sources:
            if src.path is not None:
                src.path = str(work / f"chr{n}")
        if chr_.type == "tcp":
            pytest.skip("TCP character devices would need free ports")
    for net in devs.interfaces:
        if net.type != "user":
            net.type, net.source = "user", None
    for g in devs.graphics:
        g.socket, g.port, g.autoport, g.listen = str(work / "vnc.sock"), None, None, None
        g.listens = [GraphicsListen(type="socket", socket=str(work / "vnc.sock"))]
    if dom.type == "kvm":
        # -accel is the only thing type='kvm' changes, and this host's KVM cannot run a guest.
        dom.type = "qemu"
    if dom.cpu is not None and dom.cpu.mode == "host-passthrough":
        pytest.skip("-cpu host needs KVM, which this host cannot use")


def device_ids(argv: list[str]) -> dict[str, dict[str, object]]:
    out = {}
    for opt, val in pairwise(argv):
        if opt == "-device" and val.startswith("{"):
            props = json.loads(val)
            if "id" in props:
                out[str(props["id"])] = props
    return out


def _listening(path: Path) -> bool:
    """Whether a UNIX socket at ``path`` accepts connections. QEMU binds its monitor socket, then
    listens: a connect in between is refused, although the file exists."""
    with open("/proc/net/unix") as table:
        for line in table:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == str(path) and int(fields[3], 16) & 0x10000:
                return True  # (__SO_ACCEPTCON: listening)
    return False


@pytest.mark.parametrize("doc", CASES, ids=lambda p: p.stem)
def test_qemu_builds_the_devices(doc: Path, workdir: Path) -> None:
    if doc.stem in NOT_STARTABLE:
        pytest.skip(NOT_STARTABLE[doc.stem])
    dom = parse(doc.read_text())
    localise(dom, workdir)
    mon_path = workdir / "mon.sock"
    runtime = CommandRuntime(domain_id=1, lib_dir=str(workdir), monitor_path=str(mon_path),
                             channel_dir=str(workdir))
    cmd = build_command(dom, CAPS, CONF, runtime)
    (workdir / "master-key.aes").write_bytes(os.urandom(32))  # what the process layer writes
    with open(workdir / "qemu.log", "wb") as log:
        qemu = subprocess.Popen([cmd.binary, *cmd.argv], env=cmd.env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=workdir)
    try:
        deadline = time.monotonic() + 20
        while not _listening(mon_path):
            if qemu.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"QEMU did not start: {(workdir / 'qemu.log').read_text()}")
            time.sleep(0.02)
        mon = Monitor(f"QEMU of {doc.stem}")
        mon.connect(str(mon_path))
        try:
            assert mon.execute("query-status")["status"] == "prelaunch"
            peripherals = {p["name"] for p in mon.execute("qom-list", {"path": "/machine/peripheral"})}
            wanted = device_ids(cmd.argv)
            assert set(wanted) <= peripherals
            blocks = {b["qdev"]: b for b in mon.execute("query-block") if b.get("qdev")}
            # every disk with a source became a drive; empty CD-ROMs are devices without one
            assert sum(1 for p in wanted.values() if "drive" in p) == sum(
                1 for d in dom.disks if d.source is not None and d.source.file)
            for dev_id, props in wanted.items():
                if "drive" not in props:
                    continue
                # virtio-blk answers through its backend child: /machine/peripheral/ID/virtio-backend
                block = next((b for q, b in blocks.items() if q == dev_id
                              or q.startswith(f"/machine/peripheral/{dev_id}/")
                              or q == f"/machine/peripheral/{dev_id}"), None)
                assert block is not None, f"no block backend for {dev_id}"
                assert block["inserted"]["node-name"] == props["drive"]
                ro = json.loads(next(v for o, v in pairwise(cmd.argv) if o == "-blockdev"
                                     and json.loads(v).get("node-name") == props["drive"]))["read-only"]
                assert block["inserted"]["ro"] == ro
            pci = {d["qdev_id"]: d for bus in mon.execute("query-pci") for d in _pci_devices(bus["devices"])}
            for dev_id, props in wanted.items():
                if "addr" in props and props.get("bus") in ("pci.0", "pcie.0"):
                    slot, _, fn = str(props["addr"]).partition(".")
                    assert pci[dev_id]["slot"] == int(slot, 16)
                    assert pci[dev_id]["function"] == (int(fn, 16) if fn else 0)
        finally:
            mon.close()
    finally:
        qemu.kill()
        qemu.wait()


def _pci_devices(devices: list[dict[str, object]]) -> Iterator[dict[str, object]]:
    for d in devices:
        yield d
        bridge = d.get("pci_bridge")
        if isinstance(bridge, dict):
            yield from _pci_devices(bridge.get("devices", []))
