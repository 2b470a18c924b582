# SPDX-License-Identifier: LGPL-2.1-or-later
"""The secret driver, embeddable in the same instance as the QEMU driver (libvirt's secret driver).

* :mod:`pyvirt.secret.vault` -- the per-instance master key and values sealed with it (AES-256-GCM);
* :mod:`pyvirt.secret.driver` -- definitions, values, lookups, usage uniqueness, ephemeral secrets;
* :mod:`pyvirt.secret.api` -- libvirt-python's ``virSecret`` and the connection's secret calls.

Nothing here is loaded until a secret call is made.
"""
