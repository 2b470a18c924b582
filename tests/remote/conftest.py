# SPDX-License-Identifier: LGPL-2.1-or-later
"""Fixtures of the tests of pyvirt's own client (pyvirt.remote): a pyvirtd of the module's own,
the private libvirtd oracle, the project's test guest, and a work directory whose QEMUs are killed
afterwards. The directory is a package so this conftest has a name of its own."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon.testlib import Pyvirtd, own_pyvirtd, rpc_conftest, short_tmpdir
from lifecycle_support import qemu_workdir

from . import tlspki


@pytest.fixture(scope="module")
def daemon() -> Iterator[Pyvirtd]:
    """pyvirtd on a root of its own, over UNIX and TCP (auth none)."""
    with own_pyvirtd("pvr-", listen=True) as d:
        yield d


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[Any]:
    d = rpc_conftest.start_libvirtd()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def pki() -> Iterator[tlspki.PKI]:
    """A throwaway CA with server and client certificates (see tlspki), a module's own."""
    base = short_tmpdir("pvpki-")
    try:
        yield tlspki.make_pki(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """XML files and serial logs of one test; a QEMU still using them fails the test."""
    with qemu_workdir("pvrt-") as path:
        yield path


@pytest.fixture
def name() -> str:
    return f"pvr{uuid.uuid4().hex[:8]}"
