# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt.fsutil's atomic writes without fsync (durable=False), as the network driver's run-time
state uses them: still replaced whole, with the mode asked, and no temporary file left over."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pyvirt.errors import OperationFailed
from pyvirt.fsutil import atomic_write_text


def test_not_durable_write_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "net.json"
    target.write_text("old")
    inode = target.stat().st_ino
    atomic_write_text(target, '{"new": 1}', mode=0o640, durable=False)
    assert target.read_text() == '{"new": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_ino != inode  # a rename over it, never a rewrite in place
    assert sorted(os.listdir(tmp_path)) == ["net.json"]


def test_not_durable_write_into_a_missing_directory_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed, match="cannot write .*missing/net.json"):
        atomic_write_text(tmp_path / "missing" / "net.json", "x", durable=False)
    assert os.listdir(tmp_path) == []
