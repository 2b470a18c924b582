# SPDX-License-Identifier: LGPL-2.1-or-later
"""A private libvirtd 9.0 with its storage driver (and the QEMU and secret drivers), for the storage
tests and bench/bench_storage.py.

Same isolation as :mod:`tests.libvirtd_oracle` (its namespace script, sockets, tmpfs over
/run/libvirt and /var/lib/libvirt, a private /etc/libvirt): the storage driver keeps its pools in
/etc/libvirt/storage and /run/libvirt/storage, both private there, so no host pool is read or
autostarted. Only the driver modules named are loadable (``LIBVIRT_DRIVER_DIR``); the storage
driver's backends are found in their installed directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirtd_oracle as lo

__all__ = ["start_storage_libvirtd", "storage_libvirtd_uri"]

_DRIVERS = ("qemu", "storage", "secret")


def start_storage_libvirtd() -> lo.Libvirtd:
    """Start a private libvirtd with the QEMU, storage and secret drivers (stop it with .stop())."""
    return lo.start_with_drivers(_DRIVERS, "pyvirt-lvs-")


@contextmanager
def storage_libvirtd_uri() -> Iterator[str]:
    """A private storage libvirtd for the ``with`` block (a module fixture's body): its URI."""
    from oracle import libvirt_available

    if not libvirt_available():
        import pytest

        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    daemon = start_storage_libvirtd()
    try:
        yield daemon.uri()
    finally:
        daemon.stop()
