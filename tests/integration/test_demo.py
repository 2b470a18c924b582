# SPDX-License-Identifier: LGPL-2.1-or-later
"""The README's demo, run as a user runs it (in a short root of its own): it boots the real test
guest, shows its console to the ready marker, and shuts it down over ACPI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyvirt.testing import guest as tg

pytestmark = pytest.mark.slow


def test_demo_boots_the_guest_and_shuts_it_down(embed_root: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "pyvirt.demo", "--root", str(embed_root)], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    # the demo's steps ("[  1.234 s] what (12 ms)"), not the guest kernel's "[    0.5] ..." lines
    steps = [m.group(1) for line in p.stdout.splitlines()
             if (m := re.match(r"\[ *\d+\.\d{3} s\] (.*)", line))]
    assert [s.split()[0] for s in steps] == ["test", "opened", "defined", "started:", "guest", "ACPI"], steps
    assert tg.READY_MARKER in p.stdout
    assert "shut off (reason shutdown)" in steps[-1]
    # Run again: the definition is updated in place and the guest boots again.
    again = subprocess.run([sys.executable, "-m", "pyvirt.demo", "--root", str(embed_root)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert list((embed_root / "run" / "qemu").glob("*.json")) == []
