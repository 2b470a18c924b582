# SPDX-License-Identifier: LGPL-2.1-or-later
"""What pyvirsh prints for each lifecycle action, and for each action refused, against real virsh.

libvirt's embedded driver runs the whole sequence in one virsh process (a fresh embedded virsh
right after a start may still be reconnecting the domain and refuse operations); pyvirsh runs one
process per command, so every step also goes through its reconnect. Both outputs and both error
streams must be equal, line for line, apart from libvirt's own log lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from lifecycle_support import pyvirsh, qemus_of, uri_of

from oracle import VIRSH, LibvirtEmbed  # noqa: E402

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

XML = ("<domain type='qemu'><name>vm1</name><uuid>6d3c1f2a-1b6e-4b7e-9a51-0f6f1c2d3e41</uuid>"
       "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
       "<features><acpi/></features><devices/></domain>\n")

SEQUENCE = ["start vm1", "start vm1", "suspend vm1", "suspend vm1", "domstate --reason vm1",
            "resume vm1", "resume vm1", "domstate --reason vm1", "reset vm1", "reboot vm1", "shutdown vm1",
            "destroy vm1", "destroy vm1", "suspend vm1", "resume vm1", "shutdown vm1", "reboot vm1",
            "reset vm1", "domstate --reason vm1", "start nosuch", "destroy nosuch"]


def test_lifecycle_messages_match_virsh(root: Path, libvirt_embed: LibvirtEmbed, tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text(XML)
    uri = uri_of(root)
    try:
        theirs = subprocess.run([VIRSH, "-c", libvirt_embed.uri, "; ".join([f"define {xml}", *SEQUENCE])],
                                capture_output=True, text=True, timeout=120)
        ours_out, ours_err = [], []
        for command in [f"define {xml}", *SEQUENCE]:
            p = pyvirsh(uri, *command.split(), check=False)
            ours_out.append(p.stdout)
            ours_err.append(p.stderr)
        their_err = [ln for ln in theirs.stderr.splitlines() if ln.startswith("error: ")]
        assert "".join(ours_out) == theirs.stdout
        assert [ln for e in ours_err for ln in e.splitlines()] == their_err
    finally:
        pyvirsh(uri, "destroy", "vm1", check=False)
        for pid in qemus_of(libvirt_embed.root):
            os.kill(pid, signal.SIGKILL)
