# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from oracle import LibvirtEmbed, libvirt_available  # noqa: E402


@pytest.fixture
def libvirt_embed(tmp_path: Path) -> LibvirtEmbed:
    """A fresh root for libvirt 9.0's embedded QEMU driver, the oracle."""
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    return LibvirtEmbed.create(tmp_path / "libvirt-root")
