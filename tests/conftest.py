# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# CI (which sets CI=true) replays the same examples every run, so that a landing never hinges on a
# lucky draw; developers' runs stay random and keep finding new cases.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

sys.path.insert(0, str(Path(__file__).parent))

from oracle import LibvirtEmbed, libvirt_available  # noqa: E402


@pytest.fixture
def libvirt_embed(tmp_path: Path) -> LibvirtEmbed:
    """A fresh root for libvirt 9.0's embedded QEMU driver, the oracle."""
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    return LibvirtEmbed.create(tmp_path / "libvirt-root")


@pytest.fixture
def embed_root() -> Iterator[Path]:
    """A short, fresh path for a pyvirt embed root (not created).

    Monitor sockets live below the root and a UNIX socket path holds at most 107 bytes, so an embed
    root may be at most 46 bytes long: pytest's own tmp_path is often longer.
    """
    parent = Path(tempfile.mkdtemp(prefix="pv-", dir="/tmp"))
    try:
        yield parent / "r"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


#: An unprivileged account for QEMU in the security tests (scripts/setup.sh --test creates it).
QEMU_TEST_USER = "pyvirt-test-qemu"


@pytest.fixture(scope="session")
def qemu_user() -> tuple[int, int]:
    """(uid, gid) of a real unprivileged QEMU user; made here only if setup did not make it."""
    import pwd
    import subprocess

    try:
        pw = pwd.getpwnam(QEMU_TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin", QEMU_TEST_USER], check=True)
        pw = pwd.getpwnam(QEMU_TEST_USER)
    return pw.pw_uid, pw.pw_gid
