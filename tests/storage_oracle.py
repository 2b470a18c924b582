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

import libvirtd_oracle as lo

__all__ = ["start_storage_libvirtd"]

_DRIVERS = ("qemu", "storage", "secret")


def start_storage_libvirtd() -> lo.Libvirtd:
    """Start a private libvirtd with the QEMU, storage and secret drivers (stop it with .stop())."""
    return lo.start_with_drivers(_DRIVERS, "pyvirt-lvs-")
