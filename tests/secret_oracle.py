# SPDX-License-Identifier: LGPL-2.1-or-later
"""A private libvirtd 9.0 with its QEMU and secret drivers: the oracle of the secret tests (RPC,
encrypted disks' command lines).

Same isolation as :mod:`tests.libvirtd_oracle` (its namespace script: tmpfs over /run/libvirt and
/var/lib/libvirt, a private /etc/libvirt, private sockets): the secret driver keeps its definitions in
/etc/libvirt/secrets and /run/libvirt/secrets, both private there, so no host secret is read or
written. Only the two driver modules are loadable (``LIBVIRT_DRIVER_DIR``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import libvirtd_oracle as lo  # tests/ is on sys.path (conftest.py)

__all__ = ["start_secret_libvirtd", "secret_libvirtd"]

_DRIVERS = ("qemu", "secret")


def start_secret_libvirtd() -> lo.Libvirtd:
    """Start a private libvirtd with the QEMU and secret drivers (stop it with .stop())."""
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root (mount namespace)")
    return lo.start_with_drivers(_DRIVERS, "pyvirt-lvsec-")


def secret_libvirtd() -> Iterator[lo.Libvirtd]:
    """Body of a fixture: the daemon, stopped afterwards whatever happened."""
    daemon = start_secret_libvirtd()
    try:
        yield daemon
    finally:
        daemon.stop()
