# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's pool-* and vol-* commands against virsh on libvirt 9.0's storage driver.

libvirt cannot embed its storage driver, so the oracle is a private libvirtd with its storage
driver (tests/storage_oracle.py). The same command sequence runs with virsh against it and with
pyvirsh on a pyvirt embed root, over the same pool directory (emptied between the two runs), and
each command's stdout, stderr and exit status must be equal once the values that differ between
any two runs are masked: generated UUIDs, file timestamps, and the free space of the host's file
system (it changes as the files are written).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_steps import compare, run_all

from oracle import VIRSH

pytestmark = pytest.mark.oracle

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[str]:
    from storage_oracle import storage_libvirtd_uri

    with storage_libvirtd_uri() as uri:
        yield uri


@pytest.fixture
def workdir() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(prefix="stc-", dir="/tmp"))
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_pool_and_volume_commands_match_virsh(libvirtd: str, workdir: Path) -> None:
    work = workdir / "w"
    work.mkdir()
    theirs = run_all(VIRSH, libvirtd, work)
    down_theirs = (work / "down").read_bytes()
    leftover = sorted(p.name for p in work.iterdir())
    shutil.rmtree(work)
    work.mkdir()
    ours = run_all(PYVIRSH, f"qemu:///embed?root={workdir / 'root'}", work)
    assert sorted(p.name for p in work.iterdir()) == leftover
    assert (work / "down").read_bytes() == down_theirs == (bytes(range(256)) * 40)
    differ = compare(ours, theirs)
    assert not differ, "\n".join(differ)
    # the sequence exercises refusals, not only successes
    failed = [r[0] for r in theirs if r[3] != 0]
    assert "vol-create-as sp ../evil 1M" in failed and "pool-undefine sp" in failed


STORAGE_COMMANDS = ("pool-build pool-start pool-destroy pool-delete pool-undefine pool-refresh "
                    "pool-autostart pool-dumpxml pool-info pool-define pool-create pool-define-as pool-list "
                    "vol-create vol-create-as vol-create-from vol-clone vol-list vol-info vol-dumpxml "
                    "vol-delete vol-wipe vol-resize vol-upload vol-download vol-path vol-key vol-name "
                    "vol-pool").split()


def test_help_of_the_storage_commands_is_virshs(workdir: Path) -> None:
    """Every option line pyvirsh prints is virsh's word for word, in virsh's order (virsh has a few
    more: --xpath/--wrap, vol-clone --print-xml, pool-define-as's auth and adapter options)."""
    uri = f"qemu:///embed?root={workdir / 'root'}"
    for command in STORAGE_COMMANDS:
        ours = subprocess.run([PYVIRSH, "-c", uri, "help", command], capture_output=True, text=True,
                              timeout=60).stdout
        theirs = subprocess.run([VIRSH, "help", command], capture_output=True, text=True, timeout=60).stdout
        assert ours.splitlines()[1] == theirs.splitlines()[1], command  # NAME - summary
        lines = [line for line in ours[ours.index("  OPTIONS"):].splitlines()[1:] if line]
        virsh_lines = theirs.splitlines()
        positions = [virsh_lines.index(line) if line in virsh_lines else -1 for line in lines]
        assert -1 not in positions and positions == sorted(positions), (command, lines)
