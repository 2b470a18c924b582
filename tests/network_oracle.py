# SPDX-License-Identifier: LGPL-2.1-or-later
"""Tests' oracle for virtual networks: a real libvirtd 9.0 with its network driver, private from the
host in a mount *and* network namespace (``unshare --mount --net``).

As :mod:`tests.libvirtd_oracle` (whose layout this follows), /run/libvirt, /var/lib/libvirt are
fresh tmpfs and /etc/libvirt is a private directory; in addition the daemon loads the network driver
(and the QEMU driver, which virsh's connection needs), and runs in a network namespace of its own
with only ``lo`` up, so the bridges, addresses, dnsmasq and firewall rules it makes for a started
network never reach the host, and all vanish with the daemon. libvirt's embedded mode cannot embed
networks, which is why a daemon is needed at all.

:func:`in_netns` runs a pyvirt scenario the same way (a subprocess in a fresh network namespace),
for the tests that start networks in pyvirt.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from libvirtd_oracle import Libvirtd, _wait_ready, die_with_parent, free_port

LIBVIRTD = "/usr/sbin/libvirtd"
_DRIVERS = ("libvirt_driver_qemu.so", "libvirt_driver_network.so")
_DRIVER_DIR_GLOB = "/usr/lib/*/libvirt/connection-driver"
REPO = Path(__file__).resolve().parent.parent

_NAMESPACE_SCRIPT = r"""
set -eu
ip link set lo up
mount -t tmpfs -o mode=0755 pyvirt-test /run/libvirt
mount -t tmpfs -o mode=0755 pyvirt-test /var/lib/libvirt
if [ -d /var/log/libvirt ]; then mount -t tmpfs -o mode=0755 pyvirt-test /var/log/libvirt; fi
mount --bind "$PYVIRT_LVD_CACHE" /var/cache/libvirt
mount --bind "$PYVIRT_LVD_ETC" /etc/libvirt
exec "$PYVIRT_LVD_BIN" --listen --config "$PYVIRT_LVD_CONF" --pid-file "$PYVIRT_LVD_PID"
"""


def start_network_libvirtd() -> Libvirtd:
    """A private libvirtd with the QEMU and network drivers in its own mount and network namespaces."""
    dirs = sorted(glob.glob(_DRIVER_DIR_GLOB))
    if not os.path.exists(LIBVIRTD) or not dirs or shutil.which("unshare") is None:
        pytest.fail("libvirtd 9.0 is missing: run scripts/setup.sh --test")
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd with the network driver needs root (namespaces)")
    root = Path(tempfile.mkdtemp(prefix="pyvirt-lvn-", dir="/tmp"))
    (root / "drivers").mkdir()
    for so in _DRIVERS:
        os.symlink(os.path.join(dirs[0], so), root / "drivers" / so)
    etc = root / "etc"
    etc.mkdir()
    (etc / "qemu.conf").write_text('user = "root"\ngroup = "root"\nstdio_handler = "file"\n')
    cache = root / "cache"
    cache.mkdir()
    port = free_port()
    settings = {
        "unix_sock_dir": f'"{root}"', "unix_sock_rw_perms": '"0700"', "auth_unix_rw": '"none"',
        "auth_unix_ro": '"none"', "listen_tls": "0", "listen_tcp": "1", "listen_addr": '"127.0.0.1"',
        "tcp_port": f'"{port}"', "auth_tcp": '"none"', "log_outputs": f'"3:file:{root}/libvirtd.log"',
    }
    conf = root / "libvirtd.conf"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": str(root),
        "LIBVIRT_DRIVER_DIR": str(root / "drivers"), "PYVIRT_LVD_CACHE": str(cache),
        "PYVIRT_LVD_ETC": str(etc), "PYVIRT_LVD_BIN": LIBVIRTD, "PYVIRT_LVD_CONF": str(conf),
        "PYVIRT_LVD_PID": str(root / "libvirtd.pid"),
    }
    with open(root / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private", "--",
                                 "/bin/sh", "-c", _NAMESPACE_SCRIPT],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, preexec_fn=die_with_parent)
    # TCP is in the daemon's network namespace: only the UNIX socket is reachable from here.
    daemon = Libvirtd(root, port, proc, settings)
    try:
        _wait_unix(daemon)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _wait_unix(daemon: Libvirtd) -> None:
    import time
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            _wait_ready(daemon)  # raises with the daemon's stderr and log
        if os.path.exists(daemon.socket):
            return
        time.sleep(0.05)
    raise AssertionError(f"libvirtd did not listen within 30 s:\n{daemon.log_tail()}")


def virsh(daemon: Libvirtd, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", daemon.uri(), *args], capture_output=True, text=True,
                          timeout=60, input=input, env={**os.environ, "LANG": "C"})


# Prepended to every scenario: whatever happens, no process of its namespace (dnsmasq, QEMU)
# outlives it, so the namespace goes with it.
_REAPER = """
def _pyvirt_reap():
    import os, signal
    mine = os.readlink("/proc/self/ns/net")
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                if os.readlink(f"/proc/{pid}/ns/net") == mine:
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
import atexit as _atexit
_atexit.register(_pyvirt_reap)
"""


def in_netns(script: str, *args: str, timeout: float = 120) -> Any:
    """Run ``script`` (Python, with pyvirt importable) in a fresh network namespace with ``lo`` up;
    it prints one JSON document last, which is returned. The namespace vanishes with the process
    (the script must stop what it started: dnsmasq or QEMU would keep it alive)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("network namespaces need root and unshare")
    prog = "ip link set lo up && exec \"$0\" -c \"$PYVIRT_NETNS_SCRIPT\" \"$@\""
    env = {**os.environ, "PYVIRT_NETNS_SCRIPT": _REAPER + script,
           "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}"}
    out = subprocess.run(["unshare", "--net", "--", "/bin/sh", "-c", prog, sys.executable, *args],
                         capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise AssertionError(f"netns scenario failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if not lines:
        raise AssertionError(f"netns scenario printed nothing:\n{out.stderr}")
    return json.loads(lines[-1])
