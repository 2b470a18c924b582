# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fixtures of the pyvirtd tests. The directory is a package so that this conftest and the test
modules have names of their own (``daemon.conftest``), never the shared name ``conftest``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .testlib import Pyvirtd, rpc_conftest, short_tmpdir, start_pyvirtd


@pytest.fixture(scope="session")
def pyvirtd() -> Iterator[Pyvirtd]:
    """One pyvirtd per test session (per xdist worker), UNIX and TCP, for tests that leave it as
    they found it."""
    parent = short_tmpdir()
    daemon = start_pyvirtd(parent / "r", listen=True)
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def own_root() -> Iterator[Path]:
    """A fresh short root (not created) for a daemon of the test's own."""
    parent = short_tmpdir()
    try:
        yield parent / "r"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Any]:
    daemon = rpc_conftest.start_libvirtd()
    try:
        yield daemon
    finally:
        daemon.stop()
