# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt: libvirt's QEMU/KVM driver in pure Python."""
