# SPDX-License-Identifier: LGPL-2.1-or-later
"""What starting a virtual network does to the host, one undoable step at a time.

* the bridge and its address: netlink, through pyroute2 (imported on first use);
* dnsmasq (Debian's dnsmasq-base) with a configuration file written by :func:`dnsmasq_config`;
* NAT/forward rules: nftables, in pyvirt's own table ``inet pyvirt``, one pair of base chains per
  network named after its UUID (``fwd_HEX``, ``nat_HEX``), fed to ``nft -f -`` as one transaction;
* IPv4 forwarding (``net.ipv4.ip_forward``), switched on for nat/route networks and left on, as
  libvirt leaves it.

Every name or address that reaches a file or a command here was checked first (:func:`check_ifname`,
the ``ipaddress`` module), so no XML value can add a line to dnsmasq's configuration or a rule.
"""

from __future__ import annotations

import atexit
import errno
import functools
import ipaddress
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["check_ifname", "check_hostname", "link_exists", "create_bridge", "delete_link", "host_networks",
           "NFT_TABLE", "add_rules", "remove_rules", "dnsmasq_config", "start_dnsmasq", "signal_dnsmasq",
           "stop_dnsmasq", "enable_forwarding", "read_leases", "begin_delete_link", "LinkDeletion",
           "ifindex", "link_mtu", "set_link"]

log = logging.getLogger("pyvirt.network")

NFT_TABLE = "pyvirt"
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.:+-]{1,15}")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,253}")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
DNSMASQ = "dnsmasq"


def _error(code: int, message: str) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_NETWORK)


def check_ifname(name: str, what: str = "bridge name") -> str:
    """A Linux interface name: at most 15 characters, none that a shell, a file or nft would read."""
    if not _IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise _error(codes.VIR_ERR_XML_ERROR, f"XML error: invalid {what} '{name}': an interface name has "
                     "1 to 15 characters among letters, digits and _ . : + -")
    return name


def check_hostname(name: str) -> str:
    if not _HOSTNAME_RE.fullmatch(name):
        raise _error(codes.VIR_ERR_XML_ERROR, f"XML error: invalid host name '{name}': use letters, digits, "
                     "'-', '_' and '.'")
    return name


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RT_TABLE_MAIN = 254


# --- links and addresses ----------------------------------------------------------------------------
#
# pyroute2 is imported on first use (importing it takes ~0.15 s, which no CLI start pays).
# pyroute2 0.9's IPRoute keeps its asyncio event loop and socket per thread (threading.local): the
# thread that made it reuses both, any other thread gets a socket of its own and a new event loop per
# request. So each thread that talks netlink keeps its IPRoutes (one for requests, one to watch link
# announcements), made on first use and reused after; all are closed at exit, those of ended threads
# when the next one is made, and a forked child forgets its parent's (it must not read what the
# kernel sends to the parent's sockets).

#
# pyroute2's sync API runs an event loop of its own, which it cannot on a thread that runs one already
# (pyvirtd's dispatch calls some drivers' methods from its asyncio loop): there, netlink work goes to
# one thread of pyvirt's own (the relay) and the caller waits for it, as it would for the kernel.

_iproutes: dict[tuple[threading.Thread, str], Any] = {}  # (thread, role) -> IPRoute
_iproutes_lock = threading.Lock()
_local = threading.local()
_deleter: ThreadPoolExecutor | None = None  # threads sending the deletions (see LinkDeletion)
_relay_pool: ThreadPoolExecutor | None = None  # one thread, for callers that run an event loop
_F = TypeVar("_F", bound=Callable[..., Any])


def _runs_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop (not imported: none)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _pool(which: str) -> ThreadPoolExecutor:
    global _deleter, _relay_pool
    with _iproutes_lock:
        if which == "deleter":
            if _deleter is None:
                from concurrent.futures import ThreadPoolExecutor

                _deleter = ThreadPoolExecutor(4, thread_name_prefix="pyvirt-netlink-del")
            return _deleter
        if _relay_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            _relay_pool = ThreadPoolExecutor(1, thread_name_prefix="pyvirt-netlink")
        return _relay_pool


def _off_event_loop(fn: _F) -> _F:
    """``fn`` on this thread, or on the relay if this thread runs an event loop."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not _runs_event_loop():
            return fn(*args, **kwargs)
        return _pool("relay").submit(fn, *args, **kwargs).result()
    return cast(_F, run)
_SOL_NETLINK, _NETLINK_ADD_MEMBERSHIP, _NETLINK_DROP_MEMBERSHIP = 270, 1, 2  # linux/netlink.h
_RTNLGRP_LINK = 1  # linux/rtnetlink.h


def _per_thread(role: str) -> Any:
    """This thread's IPRoute for ``role`` ("requests", or "monitor": see :func:`_new_monitor`)."""
    ipr = getattr(_local, role, None)
    if ipr is None:
        from pyroute2 import IPRoute

        ended = []
        with _iproutes_lock:
            for key in [k for k in _iproutes if not k[0].is_alive()]:
                ended.append(_iproutes.pop(key))
        for old in ended:
            _close(old)
        try:
            ipr = _new_monitor() if role == "monitor" else IPRoute()
        except Exception as exc:
            raise _os_error(exc) from exc
        with _iproutes_lock:
            _iproutes[threading.current_thread(), role] = ipr
        setattr(_local, role, ipr)
    return ipr


def _new_monitor() -> Any:
    """An AsyncIPRoute with an event loop of its own (made for this thread), bound but in no
    multicast group until a deletion asks: the async API lets :class:`LinkDeletion` wait for an
    announcement and for its request's end at once, with a timeout."""
    from pyroute2 import AsyncIPRoute

    monitor = AsyncIPRoute()
    try:
        monitor.get_loop().run_until_complete(monitor.bind(groups=0))
    except BaseException:
        _close(monitor)
        raise
    return monitor


def _iproute() -> Any:
    """This thread's pyroute2 IPRoute for requests."""
    return _per_thread("requests")


def _forget(role: str) -> None:
    """Close this thread's IPRoute for ``role`` (after an error that leaves it unusable)."""
    ipr = getattr(_local, role, None)
    if ipr is not None:
        delattr(_local, role)
        with _iproutes_lock:
            _iproutes.pop((threading.current_thread(), role), None)
        _close(ipr)


def _close(ipr: Any) -> None:
    try:
        ipr.close()
    except Exception as exc:  # noqa: BLE001 - closing only
        log.debug("closing a netlink socket: %s", exc)


@atexit.register
def _close_all() -> None:
    with _iproutes_lock:
        iproutes = list(_iproutes.values())
        _iproutes.clear()
    for ipr in iproutes:
        _close(ipr)


def _forget_after_fork() -> None:
    global _local, _deleter, _relay_pool, _iproutes_lock
    _iproutes.clear()
    _iproutes_lock = threading.Lock()  # another thread may have held it at the fork
    _local = threading.local()
    _deleter = _relay_pool = None  # their threads are not in the child


os.register_at_fork(after_in_child=_forget_after_fork)


def _os_error(exc: Exception) -> OSError:
    """pyroute2's NetlinkError (the kernel's refusal, not an OSError) as an OSError with its errno."""
    code = getattr(exc, "code", None)
    if isinstance(exc, OSError) or not isinstance(code, int) or code <= 0:
        return exc if isinstance(exc, OSError) else OSError(errno.EIO, str(exc))
    return OSError(code, os.strerror(code))


def _netlink(what: str, exc: Exception) -> PyvirtError:
    exc = _os_error(exc)
    return _error(codes.VIR_ERR_SYSTEM_ERROR, f"{what}: {exc.strerror or exc}")


def ifindex(name: str) -> int | None:
    """The index of interface ``name`` in this network namespace, None if there is none."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def link_exists(name: str) -> bool:
    return ifindex(name) is not None


@_off_event_loop
def link_mtu(index: int) -> int:
    """The MTU of link ``index`` (RTM_GETLINK of that one link, not a dump)."""
    try:
        links = _iproute().link("get", index=index)
    except Exception as exc:
        raise _os_error(exc) from exc
    return int(links[0].get("mtu"))


@_off_event_loop
def set_link(index: int, **changes: Any) -> None:
    """Change link ``index`` (pyroute2's ``link('set')`` arguments: address, mtu, master, state)."""
    try:
        _iproute().link("set", index=index, **changes)
    except Exception as exc:
        raise _os_error(exc) from exc


@_off_event_loop
def create_bridge(name: str, *, mac: str | None, stp: bool, delay: int,
                  address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None) -> None:
    """Create bridge ``name`` (it must not exist) with ``mac``, up, and give it ``address``.
    On failure the bridge is deleted again."""
    try:
        ipr = _iproute()
        # up from the start (IFF_UP in the creating request): one request less than libvirt's order
        ipr.link("add", ifname=name, kind="bridge", br_stp_state=1 if stp else 0,
                 br_forward_delay=delay * 100, state="up", **({"address": mac} if mac else {}))
    except Exception as exc:
        raise _netlink(f"Unable to create bridge {name}", exc) from exc
    try:
        index = ifindex(name)
        if index is None:  # deleted by someone else at once
            raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        if address is not None:
            extra = {"broadcast": str(address.network.broadcast_address)} if address.version == 4 else {}
            ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
                     **extra)
    except Exception as exc:
        try:
            LinkDeletion(name).wait()
        except OSError:
            log.warning("cannot delete bridge %s after a failed start", name)
        raise _netlink(f"Cannot set up bridge {name}", exc) from exc


def _delete_link(index: int) -> None:
    """Delete link ``index`` (on a thread of the deleter pool: the request blocks until the kernel
    has freed the device)."""
    try:
        _iproute().link("del", index=index)
    except Exception as exc:
        exc = _os_error(exc)
        if exc.errno != errno.ENODEV:  # gone already: what was asked
            raise exc from None


class LinkDeletion:
    """Deleting link ``name``: :meth:`wait` returns once it is gone.

    The kernel announces the removal (RTM_DELLINK to the link multicast group) as soon as the device,
    its addresses and its routes are gone and its name is free; it acknowledges the request itself
    only after freeing the device, which for a bridge waits for RCU grace periods (~20 ms more, with
    no lock held that other requests need). So the request goes from a thread of its own and
    :meth:`wait` watches for the announcement on this thread's monitor socket, which joins the link
    group before the request is sent (so the announcement cannot be missed) and leaves it after;
    the acknowledgement, or a refusal, finishes on the other thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.index: int | None = None
        self._future: Future[None] | None = None
        self._monitor: Any = None
        self._own_monitor = False
        self._relayed = _runs_event_loop()  # then begun and waited for on the relay
        if self._relayed:
            _pool("relay").submit(self._begin).result()
        else:
            self._begin()

    def _begin(self) -> None:
        self.index = ifindex(self.name)
        if self.index is None:
            return  # nothing to delete
        monitor = self._join_link_group()
        try:
            self._future = _pool("deleter").submit(_delete_link, self.index)
        except BaseException:
            self._monitor = monitor
            self._leave_link_group()
            raise
        self._monitor = monitor

    def _join_link_group(self) -> Any:
        """This thread's monitor in the link group (a monitor of its own if another deletion that was
        never waited for still holds this thread's)."""
        holder = getattr(_local, "watcher", None)
        self._own_monitor = holder is not None and holder() is not None
        monitor = None
        try:
            monitor = _new_monitor() if self._own_monitor else _per_thread("monitor")
            monitor.setsockopt(_SOL_NETLINK, _NETLINK_ADD_MEMBERSHIP, _RTNLGRP_LINK)
        except Exception as exc:
            if self._own_monitor:
                if monitor is not None:
                    _close(monitor)
            else:
                _forget("monitor")
            raise _os_error(exc) from exc
        if not self._own_monitor:
            _local.watcher = weakref.ref(self)
        return monitor

    def _leave_link_group(self, *, broken: bool = False) -> None:
        monitor, self._monitor = self._monitor, None
        if self._own_monitor:
            _close(monitor)
            return
        _local.watcher = None
        if broken:
            _forget("monitor")
            return
        try:
            monitor.setsockopt(_SOL_NETLINK, _NETLINK_DROP_MEMBERSHIP, _RTNLGRP_LINK)
        except Exception:  # noqa: BLE001 - a new one next time
            _forget("monitor")

    async def _announced(self) -> None:
        """Return at this link's RTM_DELLINK (announcements left from an earlier deletion, of other
        links, are passed over)."""
        while True:
            async for msg in self._monitor.get():
                if (msg.get("event") == "RTM_DELLINK" and msg.get("index") == self.index
                        and msg.get("family") == socket.AF_UNSPEC):
                    return

    async def _gone(self, timeout: float) -> bool:
        """Whether the announcement came (else the request ended first, or the time ran out)."""
        import asyncio

        assert self._future is not None
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def end() -> None:
            if not ended.done():
                ended.set_result(None)

        def wake(_future: object) -> None:  # on the deleting thread
            try:
                loop.call_soon_threadsafe(end)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        self._future.add_done_callback(wake)
        announced = asyncio.ensure_future(self._announced())
        try:
            done, _ = await asyncio.wait({ended, announced}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            announced.cancel()
            await asyncio.gather(announced, return_exceptions=True)
        if announced in done:
            if announced.exception() is not None:  # ENOBUFS (announcements lost) and the like
                raise _MonitorFailed() from announced.exception()
            return True
        return False

    def wait(self, timeout: float = 30.0) -> None:
        """Return once the link is gone; raise the kernel's refusal as :class:`OSError`. Call it
        on the thread that began the deletion (the monitor is that thread's)."""
        if self._relayed:
            _pool("relay").submit(self._wait, timeout).result()
        else:
            self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        future = self._future
        if future is None:
            return
        deadline = time.monotonic() + timeout
        if self._monitor is not None:
            broken = False
            try:
                if self._monitor.get_loop().run_until_complete(self._gone(timeout)):
                    return
            except Exception as exc:  # noqa: BLE001 - the monitor failed: the acknowledgement tells
                log.debug("link announcements of %s: %s", self.name, exc)
                broken = True
            finally:
                self._leave_link_group(broken=broken)
        try:
            future.result(max(0.0, deadline - time.monotonic()))  # the refusal, if any
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT,
                          f"the kernel did not delete {self.name} in {timeout:g} s") from None


class _MonitorFailed(Exception):
    pass


def begin_delete_link(name: str) -> LinkDeletion:
    """Ask the kernel to delete link ``name`` (if it exists); ``.wait()`` returns once it is gone."""
    try:
        return LinkDeletion(name)
    except OSError as exc:
        raise _netlink(f"Unable to delete {name}", exc) from exc


def delete_link(name: str) -> None:
    try:
        begin_delete_link(name).wait()
    except OSError as exc:
        raise _netlink(f"Unable to delete {name}", exc) from exc


def _ipv4_dump(kind: str) -> tuple[Any, ...]:
    from pyroute2.netlink.exceptions import NetlinkDumpInterrupted

    for attempt in range(3):
        try:
            return tuple(getattr(_iproute(), kind)("dump", family=socket.AF_INET))
        except NetlinkDumpInterrupted:  # the table changed meanwhile: ask again
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@_off_event_loop
def host_networks(exclude_ifname: str | None = None) -> list[tuple[str, IPNetwork]]:
    """(interface, network) of every IPv4 route and address in this network namespace: what a new
    virtual network's range must not overlap."""
    try:
        routes, addrs = _ipv4_dump("route"), _ipv4_dump("addr")
    except Exception as exc:
        raise _netlink("Unable to list the host's routes", exc) from exc
    nets: list[tuple[int, IPNetwork, bool]] = []
    for msg in routes:  # the main table's, not the default route
        dst = msg.get("dst")
        if msg["family"] == socket.AF_INET and msg.get("table") == RT_TABLE_MAIN and dst and msg["dst_len"]:
            nets.append((msg.get("oif") or 0,
                         ipaddress.IPv4Network(f"{dst}/{msg['dst_len']}", strict=False), True))
    for msg in addrs:
        addr = msg.get("address")
        if msg["family"] == socket.AF_INET and addr:
            network = ipaddress.IPv4Network(f"{addr}/{msg['prefixlen']}", strict=False)
            nets.append((msg["index"], network, False))
    names = dict(socket.if_nameindex())
    found: list[tuple[str, IPNetwork]] = []
    for index, net, is_route in nets:
        name = names.get(index, "?")
        if name == exclude_ifname or (not is_route and name == "lo"):
            continue
        found.append((name, net))
    return found


# --- nftables ---------------------------------------------------------------------------------------

def _chains(uuid: str) -> tuple[str, str]:
    hexid = uuid.replace("-", "")
    return f"fwd_{hexid}", f"nat_{hexid}"


def _nft(script: str) -> None:
    try:
        out = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                     "internal error: cannot run nft: install nftables") from None
    if out.returncode != 0:
        raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                     f"internal error: Failed to apply firewall rules (nft -f): {out.stderr.strip()}")


def add_rules(name: str, uuid: str, bridge: str, net: ipaddress.IPv4Network, mode: str) -> list[str]:
    """The forward (and for 'nat', masquerade) rules of a nat or route network; returns the chains
    made, which :func:`remove_rules` deletes."""
    fwd, nat = _chains(uuid)
    br = check_ifname(bridge)
    comment = f'comment "pyvirt network {check_hostname(name) if _HOSTNAME_RE.fullmatch(name) else uuid}"'
    lines = [f"table inet {NFT_TABLE} {{",
             f"  chain {fwd} {{",
             "    type filter hook forward priority 0; policy accept;",
             f"    iifname \"{br}\" oifname \"{br}\" accept {comment}",
             f"    iifname \"{br}\" ip saddr {net} accept {comment}"]
    if mode == "nat":
        lines.append(f"    oifname \"{br}\" ip daddr {net} ct state related,established accept {comment}")
    else:
        lines.append(f"    oifname \"{br}\" ip daddr {net} accept {comment}")
    lines += [f"    iifname \"{br}\" reject {comment}", f"    oifname \"{br}\" reject {comment}", "  }"]
    chains = [fwd]
    if mode == "nat":
        chains.append(nat)
        lines += [f"  chain {nat} {{",
                  "    type nat hook postrouting priority 100; policy accept;",
                  f"    ip saddr {net} ip daddr 224.0.0.0/24 return {comment}",
                  f"    ip saddr {net} ip daddr 255.255.255.255 return {comment}",
                  f"    ip saddr {net} ip daddr != {net} meta l4proto {{ tcp, udp }} "
                  f"masquerade to :1024-65535 {comment}",
                  f"    ip saddr {net} ip daddr != {net} masquerade {comment}",
                  "  }"]
    lines.append("}")
    _nft("\n".join(lines) + "\n")
    return chains


def remove_rules(chains: Iterable[str]) -> None:
    """Delete the chains :func:`add_rules` made, and pyvirt's table with them when no other chain
    is left in it (another instance's networks may have theirs there): one listing, one transaction."""
    chains = list(chains)
    out = subprocess.run(["nft", "-j", "list", "table", "inet", NFT_TABLE], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        return  # no table: nothing of ours is left
    try:
        items = json.loads(out.stdout).get("nftables", [])
    except ValueError:
        items = []
    present = {item["chain"]["name"] for item in items if "chain" in item}
    mine = [c for c in chains if c in present]
    script = "".join(f"delete chain inet {NFT_TABLE} {c}\n" for c in mine)
    if present and not present - set(mine):
        script = f"delete table inet {NFT_TABLE}\n"
    if script:
        _nft(script)


def enable_forwarding() -> None:
    path = Path("/proc/sys/net/ipv4/ip_forward")
    try:
        if path.read_text().strip() != "1":
            path.write_text("1\n")
    except OSError as exc:
        raise _error(codes.VIR_ERR_SYSTEM_ERROR, f"cannot enable {path}: {exc.strerror}") from exc


# --- dnsmasq ----------------------------------------------------------------------------------------

def dnsmasq_config(*, name: str, bridge: str, pid_file: Path, lease_file: Path,
                   ip: ipaddress.IPv4Interface, ranges: list[tuple[str, str]],
                   dhcp_hosts: list[tuple[str | None, str | None, str | None]],
                   dns_hosts: list[tuple[str, list[str]]], forwarders: list[str], domain: str | None) -> str:
    """The configuration libvirt writes for dnsmasq (networkDnsmasqConfContents), with two
    differences: dnsmasq keeps the lease file itself (no lease helper), and the static DHCP hosts
    (``dhcp-host=MAC,NAME,IP``) and DNS hosts (``host-record=NAME,...,IP``) are in this file rather
    than in a hostsfile and addnhosts beside it: dnsmasq reads those only once it has dropped root,
    and the instance's tree is closed to other users."""
    lines = ["##WARNING:  THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE",
             "##OVERWRITTEN AND LOST.  Changes to this configuration should be made using:",
             f"##    pyvirsh net-edit {re.sub(r'[^A-Za-z0-9_.+-]', '?', name)}",
             "## or other application using the libvirt API.",
             "##",
             "## dnsmasq conf file created by pyvirt",
             "strict-order"]
    lines += [f"server={ipaddress.ip_address(f)}" for f in forwarders]
    if domain:
        lines += [f"domain={check_hostname(domain)}", "expand-hosts", f"local=/{domain}/"]
    lines += [f"pid-file={pid_file}", "except-interface=lo", "bind-dynamic",
              f"interface={check_ifname(bridge)}"]
    total = 0
    for start, end in ranges:
        a, b = ipaddress.ip_address(start), ipaddress.ip_address(end)
        lines.append(f"dhcp-range={a},{b},{ip.netmask}")
        total += int(b) - int(a) + 1
    if ranges:
        lines += ["dhcp-no-override", "dhcp-authoritative", f"dhcp-lease-max={total}",
                  f"dhcp-leasefile={lease_file}"]
    for mac, hostname, address in dhcp_hosts:
        parts = [mac.lower() if mac and _MAC_RE.fullmatch(mac) else None,
                 check_hostname(hostname) if hostname else None,
                 str(ipaddress.ip_address(address)) if address else None]
        if mac and parts[0] is None:
            raise _error(codes.VIR_ERR_XML_ERROR, f"XML error: Cannot parse MAC address '{mac}'")
        lines.append("dhcp-host=" + ",".join(p for p in parts if p))
    for address, names in dns_hosts:
        if names:
            lines.append(f"host-record={','.join(check_hostname(n) for n in names)},"
                         f"{ipaddress.ip_address(address)}")
    return "\n".join(lines) + "\n"


def start_dnsmasq(conf: Path, pid_file: Path) -> int:
    """Run dnsmasq (it daemonises once its sockets are bound); its pid, or its stderr as the error."""
    binary = shutil.which(DNSMASQ) or shutil.which(DNSMASQ, path="/usr/sbin:/sbin")
    if binary is None:
        raise _error(codes.VIR_ERR_INTERNAL_ERROR, "internal error: cannot find dnsmasq: install Debian's "
                     "dnsmasq-base")
    try:
        pid_file.unlink()
    except FileNotFoundError:
        pass
    out = subprocess.run([binary, f"--conf-file={conf}"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise _error(codes.VIR_ERR_INTERNAL_ERROR, f"internal error: dnsmasq failed to start (exit status "
                     f"{out.returncode}): {out.stderr.strip() or out.stdout.strip()}; its configuration is "
                     f"{conf}")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            text = pid_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    raise _error(codes.VIR_ERR_INTERNAL_ERROR, f"internal error: dnsmasq wrote no pid file {pid_file}")


def _is_dnsmasq(pid: int) -> bool:
    """A live dnsmasq (a zombie waiting for its parent, init, to reap it has ended already)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    name = stat[stat.find("(") + 1:stat.rfind(")")]
    state = stat[stat.rfind(")") + 2:stat.rfind(")") + 3]
    return name == "dnsmasq" and state not in ("Z", "X")


def signal_dnsmasq(pid: int | None) -> int | None:
    """Ask dnsmasq ``pid`` to end (SIGTERM) without waiting; a pidfd of it for :func:`stop_dnsmasq`
    (None if it is gone already). The pidfd pins the process, so no other one reusing the pid can
    get the signal."""
    if not pid:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None  # ended already
    try:
        if _is_dnsmasq(pid):
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            return pidfd
    except ProcessLookupError:
        pass
    os.close(pidfd)
    return None


def stop_dnsmasq(pidfd: int | None, timeout: float = 5.0) -> None:
    """Wait for the dnsmasq that :func:`signal_dnsmasq` signalled to end; SIGKILL it if it is still
    there after ``timeout`` (libvirt sends SIGKILL at once). Closes ``pidfd``."""
    if pidfd is None:
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        os.close(pidfd)


def read_leases(path: Path) -> list[dict[str, Any]]:
    """dnsmasq's lease file: 'EXPIRY MAC IP HOSTNAME CLIENTID' per line, '*' for none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    leases = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[0].isdigit() or parts[0] == "duid":
            continue
        leases.append({"expirytime": int(parts[0]), "mac": parts[1], "ipaddr": parts[2],
                       "hostname": None if parts[3] == "*" else parts[3],
                       "clientid": None if len(parts) < 5 or parts[4] == "*" else parts[4]})
    return leases
