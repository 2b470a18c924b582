# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fixtures for the RPC tests: a private real libvirtd (see tests/libvirtd_oracle.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from libvirtd_oracle import KEEPALIVE_COUNT, KEEPALIVE_INTERVAL, Libvirtd, start_libvirtd


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    """One private libvirtd per test session (per xdist worker)."""
    daemon = start_libvirtd(keepalive_interval=str(KEEPALIVE_INTERVAL),
                            keepalive_count=str(KEEPALIVE_COUNT))
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def own_libvirtd() -> Iterator[Libvirtd]:
    """A libvirtd of the test's own, for tests that freeze or kill it."""
    daemon = start_libvirtd()
    try:
        yield daemon
    finally:
        daemon.stop()
