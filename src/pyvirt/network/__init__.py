# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's virtual network driver (libvirt's network driver): network XML, bridges, dnsmasq, NAT."""
