# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's outputs and error texts against virsh 9.0 on libvirt's embedded driver.

The same domain XML is defined (and started paused, so that no guest is needed) in a pyvirt root
and in a libvirt root; then each command runs as its own process on both sides, with and without
-q, and stdout, stderr and the exit status must be the same after replacing what differs by nature
(ids, CPU time, VNC display numbers, libvirt's taint messages). Every QEMU started is destroyed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from oracle import LibvirtEmbed, libvirt_available

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
UUID1 = "5a0c3f7e-2b1d-4c6e-8f90-1a2b3c4d5e61"
UUID2 = "5a0c3f7e-2b1d-4c6e-8f90-1a2b3c4d5e62"

pytestmark = pytest.mark.oracle


def domain_xml(name: str, uuid: str, image: Path) -> str:
    # A read-only disk both QEMUs may open at once, an empty CD-ROM, a user-mode NIC, VNC and a pty.
    return f"""<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{image}'/>
      <target dev='vda' bus='virtio'/><readonly/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='user'><mac address='52:54:00:6b:3c:58'/><model type='virtio'/></interface>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    <serial type='pty'/>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


class Sides:
    def __init__(self, pyvirt_uri: str, oracle: LibvirtEmbed) -> None:
        self.pyvirt_uri = pyvirt_uri
        self.oracle = oracle

    def ours(self, *args: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PYVIRT_DEFAULT_URI"}
        return subprocess.run([PYVIRSH, *(["-q"] if quiet else []), "-c", self.pyvirt_uri, *args],
                              capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)

    def theirs(self, *args: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        # virsh 9.0's embedded driver sometimes dies of SIGSEGV on its way out while a domain runs
        # (after printing everything); such a run says nothing about the output, so it is repeated.
        for _ in range(5):
            proc = self.oracle.virsh(*args, check=False, quiet=quiet)
            if proc.returncode != -11:
                break
        return proc

    def both(self, *args: str, quiet: bool = False) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        o, t = self.ours(*args, quiet=quiet), self.theirs(*args, quiet=quiet)
        return (o.returncode, o.stdout, o.stderr), (t.returncode, t.stdout, _without_log_lines(t.stderr))


def _without_log_lines(text: str) -> str:
    # libvirt's embedded driver logs its own warnings (taint, timestamps) on virsh's stderr
    return "".join(line for line in text.splitlines(keepends=True)
                   if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+\+0000: \d+: ", line))


def normalise(text: str) -> str:
    text = re.sub(r"^(Id:\s+)\d+$", r"\1N", text, flags=re.M)
    text = re.sub(r"^(CPU time:\s+)[\d.]+s$", r"\1Ts", text, flags=re.M)
    text = re.sub(r"^Messages:.*\n", "", text, flags=re.M)  # libvirt's taint notes (QEMU as root)
    return re.sub(r"^(127\.0\.0\.1:)\d+$", r"\1D", text, flags=re.M)


@pytest.fixture(scope="module")
def sides() -> Iterator[Sides]:
    """Both roots, shared by this module's tests (starting QEMU twice per test would dominate)."""
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    scratch = Path(tempfile.mkdtemp(prefix="pv-", dir="/tmp"))  # short: the embed root limit
    try:
        image = scratch / "disk.img"
        image.write_bytes(b"\0" * (1 << 20))
        files = {}
        for name, uuid in (("vm1", UUID1), ("vm-inactive", UUID2)):
            files[name] = scratch / f"{name}.xml"
            files[name].write_text(domain_xml(name, uuid, image))
        s = Sides(f"qemu:///embed?root={scratch / 'r'}", LibvirtEmbed.create(scratch / "l"))
        try:
            for f in files.values():
                ours, theirs = s.both("define", str(f))
                assert ours[0] == theirs[0] == 0, (ours, theirs)
            ours, theirs = s.both("start", "--paused", "vm1")
            assert ours == theirs == (0, "Domain 'vm1' started\n\n", ""), (ours, theirs)
            yield s
        finally:
            s.ours("destroy", "vm1")
            s.theirs("destroy", "vm1")
        assert "paused" not in s.ours("list", "--all").stdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_listings_and_states(sides: Sides) -> None:
    for args in (["list"], ["list", "--all"], ["list", "--inactive"], ["list", "--all", "--name"],
                 ["list", "--all", "--uuid"], ["list", "--all", "--name", "--uuid"], ["list", "--id"],
                 ["list", "--state-paused", "--name"], ["list", "--state-running", "--name"],
                 ["list", "--all", "--state-shutoff"], ["list", "--all", "--state-other"],
                 ["list", "--persistent", "--all"], ["list", "--transient"],
                 ["list", "--all", "--no-autostart", "--name"],
                 ["dominfo", "vm1"], ["dominfo", "vm-inactive"], ["domstate", "vm1"],
                 ["domstate", "--reason", "vm1"], ["domstate", "vm-inactive", "--reason"],
                 ["domid", "vm-inactive"], ["domname", UUID2], ["domuuid", "vm1"],
                 ["domblklist", "vm1"], ["domblklist", "vm1", "--details"],
                 ["domblklist", "--inactive", "vm-inactive"], ["domiflist", "vm1"],
                 ["domiflist", "vm-inactive", "--inactive"], ["vncdisplay", "vm1"],
                 ["vncdisplay", "vm-inactive"]):
        # -q on the tables: the header goes and the columns fit the rows alone
        for quiet in (False, True) if args[0] in ("list", "domblklist", "domiflist") else (False,):
            ours, theirs = sides.both(*args, quiet=quiet)
            assert (ours[0], normalise(ours[1]), ours[2]) == (theirs[0], normalise(theirs[1]), theirs[2]), \
                (args, quiet)
    ours_id = sides.ours("domid", "vm1").stdout
    assert re.fullmatch(r"\d+\n\n", ours_id)
    assert re.fullmatch(r"127\.0\.0\.1:\d+\n\n", sides.ours("vncdisplay", "vm1").stdout)


USAGE_ERRORS = [
    ["list", "--foo"], ["list", "--all", "--all"], ["list", "--all", "extra"], ["dominfo"],
    ["dominfo", "a", "b"], ["dominfo", "--domain"], ["domstate", "--reason"], ["start"], ["create"],
    ["define"], ["undefine"], ["qemu-monitor-command"], ["qemu-monitor-command", "vm1"],
    ["qemu-monitor-command", "vm1", "--hmp"], ["domcapabilities", "--virttype"], ["frobnicate"],
    ["dommemstat", "vm1", "--period"], ["domblkstat", "vm1", "vda", "extra"], ["console"], ["edit"],
    ["event", "--foo"], ["vncdisplay"], ["domblklist"], ["domiflist"], ["dumpxml", "--inactive"],
    ["destroy", "vm1", "--bogus"], ["dominfo", "--domain=a", "--domain=b"],
]

RUNTIME_ERRORS = [
    ["dominfo", "nosuch"], ["domstate", "nosuch"], ["start", "vm1"], ["suspend", "nosuch"],
    ["destroy", "vm-inactive"], ["vncdisplay", "vm-inactive"], ["domblkstat", "vm-inactive"],
    ["dommemstat", "vm-inactive"], ["qemu-monitor-command", "vm-inactive", "--hmp", "info", "status"],
    ["qemu-monitor-command", "vm1", "--hmp", "--pretty", "info", "status"],
    ["undefine", "vm1", "--remove-all-storage"], ["event", "--timeout", "1"], ["event", "--event", "bogus"],
    ["domblklist", "nosuch"], ["console", "vm-inactive"],
]


def test_error_texts(sides: Sides) -> None:
    # usage errors stop before any command runs: no blank line even without -q
    for args, quiet in [(a, q) for a in USAGE_ERRORS for q in (False, True)] + \
            [(a, False) for a in RUNTIME_ERRORS]:
        ours, theirs = sides.both(*args, quiet=quiet)
        assert ours == theirs, (args, quiet)
        assert ours[0] == 1 and ours[2].startswith("error: "), args
    # nothing changed meanwhile
    assert sides.ours("domstate", "vm1").stdout == "paused\n\n"
    assert sides.ours("list", "--all", "--name").stdout == "vm1\nvm-inactive\n\n"


def test_statistics_and_monitor(sides: Sides) -> None:
    # block statistics: the same fields in the same order (values are the QEMU's own)
    ours, theirs = sides.both("domblkstat", "vm1", "vda")
    assert ours[0] == theirs[0] == 0
    fields = [line.split()[1] for line in theirs[1].splitlines() if line]
    assert [line.split()[1] for line in ours[1].splitlines() if line] == fields, (ours, theirs)
    ours, theirs = sides.both("dommemstat", "vm1")
    assert ours[0] == theirs[0] == 0
    assert [line.split()[0] for line in ours[1].splitlines() if line] == \
        [line.split()[0] for line in theirs[1].splitlines() if line]
    # monitor passthrough: the same answers from the same QEMU state
    ours, theirs = sides.both("qemu-monitor-command", "vm1", "--hmp", "info", "status")
    assert ours == theirs == (0, "VM status: paused (prelaunch)\n\n\n", "")  # text mode: \r\n read as \n
    for args in (["query-status"], ['{"execute":"query-status"}'], ["--pretty", "query-status"]):
        ours, theirs = sides.both("qemu-monitor-command", "vm1", *args)
        assert ours[0] == theirs[0] == 0
        assert json.loads(ours[1])["return"] == json.loads(theirs[1])["return"], args
    assert sides.both("qemu-monitor-command", "vm1", "--return-value", "query-status")[0][1] == \
        '{"status":"prelaunch","singlestep":false,"running":false}\n\n'
    assert sides.ours("qemu-monitor-command", "vm1", "--pretty", "query-status").stdout.startswith(
        '{\n  "return": {\n    "status": "prelaunch",')

