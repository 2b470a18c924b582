# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's virtual network driver (libvirt's network driver): network XML, bridges, dnsmasq, NAT.

* :mod:`pyvirt.network.driver` -- the networks of one instance (definitions, start/stop, leases, the
  'default' network), kept in the instance's tree;
* :mod:`pyvirt.network.host` -- what a start does to the host: bridge and address (netlink),
  dnsmasq, nftables rules in the table ``inet pyvirt``, IPv4 forwarding;
* :mod:`pyvirt.network.taps` -- the QEMU driver's side: a tap per ``<interface type='network'|'bridge'>``;
* :mod:`pyvirt.network.api` / :mod:`pyvirt.network.remote` -- libvirt-python's network API, in process
  and over RPC.

Networks need a privileged instance (root, not qemu:///session). The XML model is
:mod:`pyvirt.xml.network`.
"""
