# SPDX-License-Identifier: LGPL-2.1-or-later
"""What starting a virtual network does to the host, one undoable step at a time.

* the bridge and its address: netlink, through pyroute2 (imported lazily: it is not cheap);
* dnsmasq (Debian's dnsmasq-base) with a configuration file written by :func:`dnsmasq_config`;
* NAT/forward rules: nftables, in pyvirt's own table ``inet pyvirt``, one pair of base chains per
  network named after its UUID (``fwd_HEX``, ``nat_HEX``), fed to ``nft -f -`` as one transaction;
* IPv4 forwarding (``net.ipv4.ip_forward``), switched on for nat/route networks and left on, as
  libvirt leaves it.

Every name or address that reaches a file or a command here was checked first (:func:`check_ifname`,
the ``ipaddress`` module), so no XML value can add a line to dnsmasq's configuration or a rule.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

__all__ = ["check_ifname", "check_hostname", "link_exists", "create_bridge", "delete_link", "host_networks",
           "NFT_TABLE", "add_rules", "remove_rules", "dnsmasq_config", "start_dnsmasq", "signal_dnsmasq",
           "stop_dnsmasq", "enable_forwarding", "read_leases", "off_loop"]

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


def _ipr() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


F = TypeVar("F", bound=Callable[..., Any])
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def off_loop(fn: F) -> F:
    """Run ``fn`` on a thread of its own when called from a thread with a running asyncio loop
    (pyvirtd's inline handlers): pyroute2's synchronous API drives a loop of its own and cannot run
    inside another."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pyvirt-netlink") as pool:
            return pool.submit(fn, *args, **kwargs).result()
    return cast(F, wrapper)


def _netlink_error(what: str, exc: Exception) -> PyvirtError:
    return _error(codes.VIR_ERR_SYSTEM_ERROR, f"{what}: {exc}")


# --- links and addresses ----------------------------------------------------------------------------

@off_loop
def link_exists(name: str) -> bool:
    with _ipr() as ip:
        return bool(ip.link_lookup(ifname=name))


@off_loop
def create_bridge(name: str, *, mac: str | None, stp: bool, delay: int,
                  address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None) -> None:
    """Create bridge ``name`` (it must not exist), give it ``mac`` and ``address``, bring it up.
    On failure the bridge is deleted again."""
    with _ipr() as ip:
        try:
            ip.link("add", ifname=name, kind="bridge", br_stp_state=1 if stp else 0,
                    br_forward_delay=delay * 100)
        except Exception as exc:  # pyroute2's NetlinkError and friends
            raise _netlink_error(f"Unable to create bridge {name}", exc) from exc
        try:
            index = ip.link_lookup(ifname=name)[0]
            if mac:
                ip.link("set", index=index, address=mac)
            if address is not None:
                kw: dict[str, Any] = {}
                if address.version == 4:
                    kw["broadcast"] = str(address.network.broadcast_address)
                ip.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen,
                        **kw)
            ip.link("set", index=index, state="up")
        except Exception as exc:
            try:
                ip.link("del", ifname=name)
            except Exception:  # noqa: BLE001 - already failing: the first error is the one to report
                log.warning("cannot delete bridge %s after a failed start", name)
            raise _netlink_error(f"Cannot set up bridge {name}", exc) from exc


@off_loop
def delete_link(name: str) -> None:
    with _ipr() as ip:
        found = ip.link_lookup(ifname=name)
        if found:
            ip.link("del", index=found[0])


@off_loop
def host_networks(exclude_ifname: str | None = None) -> list[tuple[str, IPNetwork]]:
    """(interface, network) of every IPv4 route and address in this network namespace: what a new
    virtual network's range must not overlap."""
    found: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    with _ipr() as ip:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ip.get_links()}
        for route in ip.get_routes(family=2, table=254):
            dst = route.get_attr("RTA_DST")
            if dst is None or route["dst_len"] == 0:
                continue  # the default route overlaps everything, and is no conflict
            name = names.get(route.get_attr("RTA_OIF"), "?")
            if name != exclude_ifname:
                found.append((name, ipaddress.ip_network(f"{dst}/{route['dst_len']}", strict=False)))
        for addr in ip.get_addr(family=2):
            name = names.get(addr["index"], "?")
            if name in ("lo", exclude_ifname):
                continue
            found.append((name, ipaddress.ip_network(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}",
                                                     strict=False)))
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


def signal_dnsmasq(pid: int | None) -> None:
    """Ask dnsmasq to end (SIGTERM), without waiting: :func:`stop_dnsmasq` waits."""
    if pid and _is_dnsmasq(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def stop_dnsmasq(pid: int | None, timeout: float = 5.0) -> None:
    """End dnsmasq: SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    if not pid or not _is_dnsmasq(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_dnsmasq(pid):
        time.sleep(0.005)
    if _is_dnsmasq(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
