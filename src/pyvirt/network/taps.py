# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver's side of virtual networks: ``<interface type='network'>`` and ``type='bridge'``.

:func:`check_interfaces` runs in the start's PrepareDomain (nothing touched yet): it refuses what
cannot work -- an unknown or inactive network, a missing host bridge, an unprivileged instance -- in
libvirt's words. :func:`open_taps` runs in PrepareHost: one tap device per such interface, made with
TUNSETIFF on /dev/net/tun (named ``vnetN`` by the kernel), its MAC the guest's with the first octet
0xfe (libvirt's rule, so the bridge never takes the guest's address), attached to the bridge and up.
QEMU gets the descriptor (``-netdev tap,fd=N``, as libvirt passes it). The taps are not persistent:
they vanish when the last descriptor closes, that is when QEMU exits (or when a failed start closes
ours), so stopping a domain removes them with nothing left to forget.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.xml.domain import Domain

__all__ = ["TAP_TYPES", "check_interfaces", "pretend_tap_fds", "open_taps", "Taps"]

TAP_TYPES = ("network", "bridge")
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_IFF_VNET_HDR = 0x4000


def _alias(net: Any, i: int) -> str:
    from pyvirt.qemu.command_devices import device_alias

    return device_alias(net, f"net{i}")


def _tap_interfaces(dom: Domain) -> list[tuple[int, Any]]:
    devs = dom.devices.interfaces if dom.devices is not None else []
    return [(i, net) for i, net in enumerate(devs) if net.type in TAP_TYPES]


def _bridge_of(driver: QemuDriver, net: Any) -> str:
    from pyvirt.network.driver import SESSION_REFUSAL, driver_for, no_network_name, passt_hint
    from pyvirt.network.host import link_exists

    netdrv = driver_for(driver)
    if net.type == "network":
        name = net.source.network if net.source is not None else None
        if not name:
            raise no_network_name("")
        if not netdrv.privileged and name not in {r.name for r in netdrv.list_all()}:
            raise no_network_name(name)
        netdrv.refuse_unprivileged()
        return netdrv.bridge_for_domain(name)
    bridge = net.source.bridge if net.source is not None else None
    if not netdrv.privileged:
        raise PyvirtError("Requested operation is not valid: <interface type='bridge'> needs a tap device, "
                          "and " + SESSION_REFUSAL.format(passt=passt_hint()),
                          code=codes.VIR_ERR_OPERATION_INVALID, domain=codes.VIR_FROM_QEMU)
    if not bridge or not link_exists(bridge):
        raise PyvirtError(f"Cannot get interface MTU on '{bridge or ''}': No such device: "
                          f"<interface type='bridge'> names host bridge '{bridge or ''}', which does not "
                          "exist; create it (ip link add NAME type bridge) or use <interface type='network'>",
                          code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_NONE)
    return bridge


def check_interfaces(driver: QemuDriver, dom: Domain) -> dict[str, str]:
    """The bridge of each tap interface by alias ("net0" -> "virbr0"), or libvirt's refusal."""
    return {_alias(net, i): _bridge_of(driver, net) for i, net in _tap_interfaces(dom)}


def pretend_tap_fds(dom: Domain) -> dict[str, list[int]]:
    """Made-up descriptor numbers for a build without side effects (as domxml-to-native's)."""
    fds: dict[str, list[int]] = {}
    for i, net in _tap_interfaces(dom):
        fds[_alias(net, i)] = [4 + len(fds)]
    return fds


@dataclass
class Taps:
    """The open taps of one start: their fds by alias and their names."""

    fds: dict[str, list[int]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def all_fds(self) -> list[int]:
        return [fd for fds in self.fds.values() for fd in fds]

    def close(self) -> None:
        """Close our descriptors: once QEMU's are closed too, the kernel removes the taps."""
        for fd in self.all_fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def _tap_mac(guest_mac: str | None) -> str:
    octets = guest_mac.split(":")[1:] if guest_mac else ["54", "00"] + [f"{random.randrange(256):02x}"
                                                                        for _ in range(3)]
    return ":".join(["fe", *octets])


def _create_tap(vnet_hdr: bool) -> tuple[int, str]:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = _IFF_TAP | _IFF_NO_PI | (_IFF_VNET_HDR if vnet_hdr else 0)
        ifr = struct.pack("16sH22x", b"vnet%d", flags)
        result = fcntl.ioctl(fd, _TUNSETIFF, ifr)
        name = result[:16].rstrip(b"\0").decode()
    except OSError:
        os.close(fd)
        raise
    return fd, name


def open_taps(driver: QemuDriver, live: Domain) -> Taps:
    """A tap per network/bridge interface of ``live``, attached to its bridge; ``live`` gets each
    tap's name as ``<target dev=.../>`` and, for a network, the bridge in its ``<source>``."""
    from pyvirt.network import host
    from pyvirt.xml.domain_devices import NetTarget

    taps = Taps()
    bridges = check_interfaces(driver, live)
    if not bridges:
        return taps
    try:
        for i, net in _tap_interfaces(live):
            alias = _alias(net, i)
            bridge = bridges[alias]
            model = net.model.type if net.model is not None else None
            try:
                fd, name = _create_tap(vnet_hdr=model == "virtio")
            except OSError as exc:
                raise PyvirtError(f"Unable to create tap device for interface {alias}: {exc.strerror}",
                                  code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_NONE) from exc
            taps.fds[alias] = [fd]
            taps.names[alias] = name
            br_index = host.ifindex(bridge)
            if br_index is None:
                raise PyvirtError(f"Cannot get interface MTU on '{bridge}': No such device",
                                  code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_NONE)
            index = host.ifindex(name)
            if index is None:
                raise OSError(errno.ENODEV, f"tap device {name} vanished")
            guest_mac = net.mac.address if net.mac is not None else None
            host.set_link(index, address=_tap_mac(guest_mac), mtu=host.link_mtu(br_index))
            host.set_link(index, master=br_index, state="up")
            if net.target is None:
                net.target = NetTarget()
            net.target.dev = name
            if net.type == "network" and net.source is not None:
                net.source.bridge = bridge
    except PyvirtError:
        taps.close()
        raise
    except OSError as exc:  # netlink refused
        taps.close()
        raise PyvirtError(f"Unable to attach tap device to its bridge: {exc.strerror or exc}",
                          code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_NONE) from exc
    return taps
