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

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from libvirtd_oracle import Libvirtd, base_settings, free_port, launch, require_drivers

REPO = Path(__file__).resolve().parent.parent


def start_network_libvirtd() -> Libvirtd:
    """A private libvirtd with the QEMU and network drivers in its own mount and network namespaces."""
    drivers = require_drivers("qemu", "network")
    root = Path(tempfile.mkdtemp(prefix="pyvirt-lvn-", dir="/tmp"))
    port = free_port()
    return launch(root, drivers, base_settings(root, port), tcp_port=port, netns=True)


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
