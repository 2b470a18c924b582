# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt.network.host for real: bridges, addresses and routes over netlink (pyroute2), and the
ending of dnsmasq, each scenario in a network namespace of its own
(tests/network_oracle.py's in_netns), checked against what iproute2 (``ip -j``) sees."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from network_oracle import in_netns

PRELUDE = r"""
import ipaddress, json, subprocess, socket, threading, time
from pyvirt.errors import PyvirtError
from pyvirt.network import host

def ip_json(*args):
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout
                      or "[]")

def links():
    return sorted(link["ifname"] for link in ip_json("link", "show"))
out = {}
"""


def run(body: str) -> dict:
    return in_netns(PRELUDE + body + "\nprint(json.dumps(out))\n")


def test_bridge_is_made_as_asked_and_deletion_returns_once_it_is_gone() -> None:
    out = run(r"""
host.create_bridge("pvt0", mac="52:54:00:12:34:56", stp=True, delay=2,
                   address=ipaddress.ip_interface("10.86.0.1/24"))
link = ip_json("-d", "link", "show", "pvt0")[0]
out["mac"], out["up"] = link["address"], "UP" in link["flags"]
out["stp"] = link["linkinfo"]["info_data"]["stp_state"]
out["delay"] = link["linkinfo"]["info_data"]["forward_delay"]
out["addrs"] = [(a["local"], a["prefixlen"], a.get("broadcast"))
                for a in ip_json("addr", "show", "pvt0")[0]["addr_info"] if a["family"] == "inet"]
out["nets"] = [[n, str(net)] for n, net in host.host_networks()]
out["nets_excl"] = [[n, str(net)] for n, net in host.host_networks(exclude_ifname="pvt0")]
deletion = host.begin_delete_link("pvt0")
deletion.wait()
# gone the moment wait() returns: for iproute2, for the name lookup, and its name is free again
out["links_after"] = links()
out["routes_after"] = ip_json("route", "show")
out["exists_after"] = host.link_exists("pvt0")
host.create_bridge("pvt0", mac=None, stp=False, delay=0, address=None)
out["recreated"] = links()
host.delete_link("pvt0")
host.delete_link("pvt0")  # nothing left to delete: no error
out["final"] = links()
""")
    assert out["mac"] == "52:54:00:12:34:56" and out["up"] is True
    assert out["stp"] == 1 and out["delay"] == 200
    assert out["addrs"] == [["10.86.0.1", 24, "10.86.0.255"]]
    assert ["pvt0", "10.86.0.0/24"] in out["nets"]
    assert not any(name == "pvt0" for name, _ in out["nets_excl"])
    assert out["links_after"] == ["lo"] and out["routes_after"] == [] and out["exists_after"] is False
    assert out["recreated"] == ["lo", "pvt0"]
    assert out["final"] == ["lo"]


def test_refused_bridge_changes_nothing_and_names_the_cause() -> None:
    out = run(r"""
subprocess.run(["ip", "link", "add", "pvt1", "type", "bridge"], check=True)
before = links()
try:
    host.create_bridge("pvt1", mac=None, stp=True, delay=0, address=None)
except PyvirtError as exc:
    out["exists"] = str(exc)
# an address the kernel refuses (IPv6 switched off for new devices of this namespace): the new
# bridge is deleted again
with open("/proc/sys/net/ipv6/conf/default/disable_ipv6", "w") as f:
    f.write("1")
try:
    host.create_bridge("pvt2", mac=None, stp=True, delay=0, address=ipaddress.ip_interface("fd00::1/64"))
except PyvirtError as exc:
    out["bad_addr"] = str(exc)
out["same"] = links() == before
host.delete_link("pvt1")
""")
    assert out["exists"] == "Unable to create bridge pvt1: File exists"
    assert out["bad_addr"].startswith("Cannot set up bridge pvt2: ")
    assert out["same"] is True


def test_host_networks_lists_what_iproute2_lists() -> None:
    out = run(r"""
subprocess.run("ip link add pvt3 type bridge && ip addr add 10.87.1.1/16 dev pvt3 && ip link set pvt3 up "
               "&& ip route add 10.99.0.0/24 dev pvt3 && ip route add default dev pvt3",
               shell=True, check=True)
out["mine"] = sorted([n, str(net)] for n, net in host.host_networks())
expect = [["pvt3", str(ipaddress.ip_network(f"{r['dst']}", strict=False))] for r in ip_json("route", "show")
          if r["dst"] != "default" and "/" in r["dst"]]
expect += [[a["ifname"], str(ipaddress.ip_interface(f"{i['local']}/{i['prefixlen']}").network)]
           for a in ip_json("-4", "addr", "show") for i in a["addr_info"] if a["ifname"] != "lo"]
out["expect"] = sorted(expect)
host.delete_link("pvt3")
""")
    assert out["mine"] == out["expect"]
    assert ["pvt3", "10.99.0.0/24"] in out["mine"] and ["pvt3", "10.87.0.0/16"] in out["mine"]


def test_overlapping_deletions_each_return_once_their_link_is_gone() -> None:
    out = run(r"""
for name in ("pvt7", "pvt8", "pvt9"):
    host.create_bridge(name, mac=None, stp=False, delay=0, address=None)
first = host.begin_delete_link("pvt7")   # holds this thread's monitor until waited for
second = host.begin_delete_link("pvt8")  # watches on a monitor of its own
second.wait()
out["after_second"] = links()
first.wait()
out["after_first"] = links()
abandoned = host.begin_delete_link("pvt9")  # never waited for: the link still goes
del abandoned
host.create_bridge("pvt7", mac=None, stp=False, delay=0, address=None)
host.delete_link("pvt7")  # this thread's monitor again, emptied of pvt9's announcements
deadline = time.monotonic() + 5
while "pvt9" in links() and time.monotonic() < deadline:
    time.sleep(0.01)
out["final"] = links()
""")
    assert out["after_second"] in (["lo", "pvt7", "pvt9"], ["lo", "pvt9"])  # pvt7 may be gone already
    assert out["after_first"] == ["lo", "pvt9"]
    assert out["final"] == ["lo"]


def test_netlink_works_from_a_thread_that_runs_an_event_loop() -> None:
    """As pyvirtd's dispatch calls the network driver: pyroute2 cannot run its loop inside one."""
    out = run(r"""
import asyncio
async def main():
    host.create_bridge("pvt10", mac=None, stp=False, delay=0, address=ipaddress.ip_interface("10.88.0.1/24"))
    out["nets"] = [[n, str(net)] for n, net in host.host_networks() if n == "pvt10"]
    out["mtu"] = host.link_mtu(host.ifindex("pvt10"))
    deletion = host.begin_delete_link("pvt10")
    await asyncio.sleep(0)
    deletion.wait()
    out["links"] = links()
asyncio.run(main())
""")
    assert out["nets"] == [["pvt10", "10.88.0.0/24"]] * 2 and out["mtu"] == 1500  # its route and address
    assert out["links"] == ["lo"]


def test_refused_deletion_raises_the_kernels_reason_and_leaves_the_link() -> None:
    out = run(r"""
try:
    host.delete_link("lo")  # the kernel never deletes a namespace's loopback
except PyvirtError as exc:
    out["refused"] = str(exc)
out["links"] = links()
""")
    assert out["refused"] == "Unable to delete lo: Operation not supported"
    assert out["links"] == ["lo"]


def test_links_are_changed_from_any_thread_and_after_a_fork() -> None:
    """One IPRoute per thread (pyroute2 binds its event loop to a thread), none shared with a child;
    set_link and link_mtu are what open_taps does to a tap."""
    out = run(r"""
import os
host.create_bridge("pvt4", mac=None, stp=False, delay=0, address=None)  # this thread's IPRoute
errors = []
def worker(name, mtu):
    try:
        subprocess.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"], check=True)  # a persistent tap
        index = host.ifindex(name)
        host.set_link(index, mtu=mtu, address="fe:54:00:00:00:01", state="up")
        out[name] = [host.link_mtu(index), ip_json("link", "show", name)[0]["address"]]
        host.set_link(index, master=host.ifindex("pvt4"))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=worker, args=(f"pvt5{i}", 1400 + i)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
out["errors"] = errors
out["masters"] = sorted(link["ifname"] for link in ip_json("link", "show", "master", "pvt4"))
pid = os.fork()
if pid == 0:  # the child makes its own socket; the parent's stays the parent's
    try:
        host.create_bridge("pvt6", mac=None, stp=False, delay=0, address=None)
        host.delete_link("pvt6")
        os._exit(0)
    except BaseException:
        os._exit(1)
out["child"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
out["parent_mtu"] = host.link_mtu(host.ifindex("pvt4"))
for name in ("pvt50", "pvt51", "pvt52", "pvt4"):
    host.delete_link(name)
out["final"] = links()
""")
    assert out["errors"] == []
    assert [out[f"pvt5{i}"] for i in range(3)] == [[1400 + i, "fe:54:00:00:00:01"] for i in range(3)]
    assert out["masters"] == ["pvt50", "pvt51", "pvt52"]
    assert out["child"] == 0 and out["parent_mtu"] == 1400  # a bridge takes its ports' smallest MTU
    assert out["final"] == ["lo"]


@pytest.fixture
def fake_dnsmasq(tmp_path: Path) -> Path:
    """A program named dnsmasq that ignores SIGTERM (a real dnsmasq ends at once, so the SIGKILL
    fallback needs a stand-in; the rest of the suite runs the real one)."""
    prog = tmp_path / "dnsmasq"
    prog.write_text(f"#!/bin/sh\ntrap '' TERM\ntouch {tmp_path}/ready\nwhile :; do sleep 0.05; done\n")
    prog.chmod(0o755)
    return prog


def test_dnsmasq_is_ended_by_pidfd_and_no_other_process_is_signalled(fake_dnsmasq: Path) -> None:
    from pyvirt.network import host

    other = subprocess.Popen(["sleep", "30"])  # not a dnsmasq: left alone
    stubborn = subprocess.Popen([str(fake_dnsmasq)])
    try:
        deadline = time.monotonic() + 10
        while not (fake_dnsmasq.parent / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # until its SIGTERM trap is set
        assert host.signal_dnsmasq(other.pid) is None
        assert host.signal_dnsmasq(None) is None
        assert other.poll() is None
        pidfd = host.signal_dnsmasq(stubborn.pid)
        assert pidfd is not None
        t0 = time.monotonic()
        host.stop_dnsmasq(pidfd, timeout=0.3)  # SIGTERM ignored: SIGKILL after the timeout
        assert stubborn.wait(timeout=5) == -signal.SIGKILL
        assert time.monotonic() - t0 >= 0.3
        with pytest.raises(OSError):
            os.fstat(pidfd)  # closed by stop_dnsmasq
        assert host.signal_dnsmasq(stubborn.pid) is None  # ended (and reaped): nothing to signal
    finally:
        for p in (other, stubborn):
            p.kill()
            p.wait()


def test_real_dnsmasq_ends_on_sigterm(tmp_path: Path) -> None:
    binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if binary is None:
        pytest.skip("dnsmasq (dnsmasq-base) is not installed")
    proc = subprocess.Popen([binary, "--keep-in-foreground", "--port=0", "--conf-file=/dev/null",
                             f"--pid-file={tmp_path / 'pid'}"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        from pyvirt.network import host

        pidfd = host.signal_dnsmasq(proc.pid)
        assert pidfd is not None
        t0 = time.monotonic()
        host.stop_dnsmasq(pidfd)
        assert time.monotonic() - t0 < 2
        # 5: dnsmasq's exit for a SIGTERM still in its start-up, which its pid file does not end
        # (signalled as soon as the file exists: 299 times in 300 here)
        assert proc.wait(timeout=5) in (0, 5, -signal.SIGTERM)
    finally:
        proc.kill()
        proc.wait()
