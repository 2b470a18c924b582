# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's storage driver (libvirt's storage driver): pools and volumes made with qemu-img."""
