# SPDX-License-Identifier: LGPL-2.1-or-later
"""Debian's libvirt 9.0 as the tests' oracle: its embedded QEMU driver in a private root.

pyvirt never imports or runs libvirt; only tests and benchmarks do, to compare behaviour.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VIRSH = "/usr/bin/virsh"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-libvirt is built for this interpreter


def libvirt_available() -> bool:
    return shutil.which(VIRSH) is not None


@dataclass
class LibvirtEmbed:
    """A libvirt embedded-driver root (qemu:///embed?root=...)."""

    root: Path

    @property
    def uri(self) -> str:
        return f"qemu:///embed?root={self.root}"

    @classmethod
    def create(cls, root: Path, *, user: str = "root", group: str = "root") -> LibvirtEmbed:
        # stdio_handler "file": the embedded driver has no virtlogd. user/group root: QEMU as root
        # can open /dev/kvm, so libvirt's capability cache stays valid between runs.
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "qemu.conf").write_text(
            f'stdio_handler = "file"\nuser = "{user}"\ngroup = "{group}"\n')
        return cls(root)

    def virsh(self, *args: str, check: bool = True, timeout: float = 120,
              quiet: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VIRSH, *(["-q"] if quiet else []), "-c", self.uri, *args],
                              capture_output=True, text=True, check=check, timeout=timeout)
