# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
def libvirt_embed() -> Iterator[LibvirtEmbed]:
    """A fresh root for libvirt 9.0's embedded QEMU driver, the oracle.

    Short, like :func:`embed_root`: libvirt puts its monitor sockets below the root too.
    """
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    parent = Path(tempfile.mkdtemp(prefix="lv-", dir="/tmp"))
    try:
        yield LibvirtEmbed.create(parent / "r")
    finally:
        shutil.rmtree(parent, ignore_errors=True)


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


@pytest.fixture(scope="session")
def guest() -> Any:
    """The project's test guest (built once; cached across runs)."""
    from pyvirt.testing import guest as tg

    return tg.build()


@pytest.fixture
def root(embed_root: Path) -> Iterator[Path]:
    """An embed root (not created) whose QEMUs are killed after the test, whatever happened: by
    the status files, then by command line."""
    import contextlib
    import os
    import signal

    from lifecycle_support import qemus_of

    from pyvirt.qemu import proc
    from pyvirt.qemu.process import STATUS_FORMAT

    try:
        yield embed_root
    finally:
        run = embed_root / "run" / "qemu"
        pids = set(qemus_of(embed_root))
        for status in run.glob("*.json") if run.is_dir() else []:
            with contextlib.suppress(Exception):
                pids.add(int(proc.read_status(status, STATUS_FORMAT)["identity"]["pid"]))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
