# SPDX-License-Identifier: LGPL-2.1-or-later
"""The network procedures over RPC: Debian's virsh 9.0 and python3-libvirt, unmodified, against
pyvirtd -- and the same steps against a real libvirtd 9.0 with its network driver: the outputs must
be the same (generated UUIDs and MACs aside).

Both daemons run in network namespaces of their own (``unshare --net``), so the bridges, dnsmasq and
rules of the networks they start never reach the host; their UNIX sockets are reachable from here.
pyvirtd defines 'default' on first use, libvirtd (without Debian's network config package) has none:
it is removed from pyvirtd first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from network_oracle import start_network_libvirtd

from pyvirt.rpc.procedures import PROCEDURES

from .testlib import SYSTEM_PYTHON, VIRSH, Pyvirtd, short_tmpdir, wait_ready

pytestmark = pytest.mark.oracle

OPEN = ("<network><name>o1</name><forward mode='open'/><bridge name='virbr7'/>"
        "<ip address='10.85.0.1' prefix='24'><dhcp><range start='10.85.0.2' end='10.85.0.9'/></dhcp></ip>"
        "</network>")
ROUTED = ("<network><name>n2</name><uuid>11111111-2222-3333-4444-555555555555</uuid><forward mode='route'/>"
          "<bridge name='virbr5' stp='off' delay='2'/><mac address='52:54:00:aa:bb:cc'/>"
          "<ip address='10.82.0.1' prefix='24'/></network>")


def _kill_namespace_children(root: Path) -> None:
    # a dnsmasq left by a failed test would keep the namespace alive
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_text()
            except OSError:
                continue
            if "dnsmasq" in cmd and str(root) in cmd:
                os.kill(int(pid), signal.SIGKILL)


@pytest.fixture(scope="module")
def netns_pyvirtd() -> Iterator[Pyvirtd]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    parent = short_tmpdir("pvdn-")
    root = parent / "r"
    root.mkdir()
    stderr_path = parent / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        # unshare execs: the daemon keeps this pid, which its pid file must name
        proc = subprocess.Popen(["unshare", "--net", "--", "/bin/sh", "-c",
                                 'ip link set lo up && exec "$@"', "sh",
                                 sys.executable, "-m", "pyvirt.daemon.main", "--root", str(root)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    daemon = Pyvirtd(root, proc, None, stderr_path)
    try:
        wait_ready(daemon)
        yield daemon
    finally:
        daemon.stop()
        _kill_namespace_children(root)
        import shutil
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[Any]:
    daemon = start_network_libvirtd()
    try:
        yield daemon
    finally:
        daemon.stop()


def _virsh(uri: str, *args: str) -> tuple[int, str, str]:
    out = subprocess.run([VIRSH, "-c", uri, *args], capture_output=True, text=True, timeout=60,
                         env={"LANG": "C", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/tmp"})
    return out.returncode, out.stdout.replace(uri, "URI"), out.stderr.replace(uri, "URI")


def _steps(d: Path) -> list[tuple[str, ...]]:
    return [("net-define", str(d / "n2.xml")), ("net-list", "--all"), ("net-info", "n2"),
            ("net-dumpxml", "n2"), ("net-uuid", "n2"), ("net-name", "11111111-2222-3333-4444-555555555555"),
            ("net-autostart", "n2"), ("net-list", "--all", "--autostart"),
            ("net-autostart", "--disable", "n2"),
            ("net-create", str(d / "o1.xml")), ("net-list",), ("net-info", "o1"), ("net-dhcp-leases", "o1"),
            ("net-destroy", "o1"), ("net-destroy", "o1"), ("net-start", "nosuch"), ("net-undefine", "n2"),
            ("net-undefine", "n2"), ("net-list", "--all")]


def _normalize(text: str) -> str:
    import re

    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                  lambda m: m.group(0) if m.group(0).startswith("11111111") else "UUID", text)
    return re.sub(r"52:54:00:[0-9a-f:]{8}",
                  lambda m: m.group(0) if m.group(0).endswith("aa:bb:cc") else "MAC", text)


def test_virsh_net_commands_against_pyvirtd_match_libvirtd(netns_pyvirtd: Pyvirtd, libvirtd: Any,
                                                          tmp_path: Path) -> None:
    (tmp_path / "n2.xml").write_text(ROUTED)
    (tmp_path / "o1.xml").write_text(OPEN)
    uri = netns_pyvirtd.uri()
    # the default network pyvirtd defined on first use: libvirtd here has none
    assert _virsh(uri, "net-list", "--all", "--name")[1] == "default\n\n"
    assert _virsh(uri, "net-destroy", "default")[0] == 0
    assert _virsh(uri, "net-undefine", "default")[0] == 0
    for step in _steps(tmp_path):
        rc, out, err = _virsh(uri, *step)
        ref_rc, ref_out, ref_err = _virsh(libvirtd.uri(), *step)
        assert (rc, _normalize(out)) == (ref_rc, _normalize(ref_out)), step
        assert _normalize(err).splitlines() == _normalize(ref_err).splitlines(), step


SCRIPT = r"""
import json, sys, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open(sys.argv[1])
out = {}
net = conn.networkCreateXML(sys.argv[2])
out["names"] = [n.name() for n in conn.listAllNetworks()]
out["active"] = [n.name() for n in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)]
out["transient"] = [n.name() for n in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_TRANSIENT)]
out["lists"] = [conn.listNetworks(), conn.listDefinedNetworks(), conn.numOfNetworks(),
                conn.numOfDefinedNetworks()]
again = conn.networkLookupByUUIDString(net.UUIDString())
out["lookup"] = [again.name(), again.isActive(), again.isPersistent(), again.autostart(), again.bridgeName()]
out["leases"] = net.DHCPLeases()
try:
    net.setAutostart(1)
except libvirt.libvirtError as e:
    out["autostart"] = [e.get_error_code(), e.get_error_domain(), str(e)]
try:
    conn.networkLookupByUUIDString("zz")
except libvirt.libvirtError as e:
    out["baduuid"] = [e.get_error_code(), e.get_error_domain(), str(e)]
net.destroy()
try:
    net.isActive()
except libvirt.libvirtError as e:
    out["gone"] = [e.get_error_code(), e.get_error_domain()]
ro = libvirt.openReadOnly(sys.argv[1])
try:
    ro.networkCreateXML(sys.argv[2])
except libvirt.libvirtError as e:
    out["readonly"] = [e.get_error_code(), e.get_error_domain(), str(e)]
print(json.dumps(out))
"""


def _python(uri: str) -> Any:
    import json

    out = subprocess.run([SYSTEM_PYTHON, "-c", SCRIPT, uri, OPEN], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_libvirt_python_network_api_against_pyvirtd_matches_libvirtd(netns_pyvirtd: Pyvirtd,
                                                                     libvirtd: Any) -> None:
    mine = _python(netns_pyvirtd.uri())
    ref = _python(libvirtd.uri())
    assert mine == ref
    assert mine["lookup"] == ["o1", 1, 0, 0, "virbr7"]


def test_pyvirts_own_client_drives_networks(netns_pyvirtd: Pyvirtd) -> None:
    import pyvirt

    conn = pyvirt.open(netns_pyvirtd.uri())
    try:
        net = conn.networkDefineXML(ROUTED)
        assert net.name() == "n2" and net.UUIDString() == "11111111-2222-3333-4444-555555555555"
        assert conn.networkLookupByName("n2").isPersistent() == 1
        assert "<forward mode='route'/>" in net.XMLDesc()
        assert net.bridgeName() == "virbr5"
        net.create()
        assert net.isActive() == 1 and "n2" in conn.listNetworks()
        assert net.DHCPLeases() == []
        net.destroy()
        assert net.isActive() == 0
        net.undefine()
        with pytest.raises(pyvirt.libvirtError) as info:
            conn.networkLookupByName("n2")
        assert info.value.get_error_code() == 43
    finally:
        conn.close()


def test_network_procedures_use_libvirts_numbers() -> None:
    expected = {"CONNECT_LIST_DEFINED_NETWORKS": 36, "CONNECT_LIST_NETWORKS": 38, "NETWORK_CREATE": 39,
                "NETWORK_CREATE_XML": 40, "NETWORK_DEFINE_XML": 41, "NETWORK_DESTROY": 42,
                "NETWORK_GET_XML_DESC": 43, "NETWORK_GET_AUTOSTART": 44, "NETWORK_GET_BRIDGE_NAME": 45,
                "NETWORK_LOOKUP_BY_NAME": 46, "NETWORK_LOOKUP_BY_UUID": 47, "NETWORK_SET_AUTOSTART": 48,
                "NETWORK_UNDEFINE": 49, "CONNECT_NUM_OF_DEFINED_NETWORKS": 50, "CONNECT_NUM_OF_NETWORKS": 52,
                "NETWORK_IS_ACTIVE": 152, "NETWORK_IS_PERSISTENT": 153, "CONNECT_LIST_ALL_NETWORKS": 283,
                "NETWORK_GET_DHCP_LEASES": 341}
    assert {name: PROCEDURES.lookup(name).number for name in expected} == expected
    time.sleep(0)


def _harmless(proc: Any) -> dict[str, Any]:
    """Arguments that name no network and change nothing (a read-only connection refuses changes
    before it looks anything up)."""
    values = {"net": {"name": "nosuch", "uuid": bytes(16)}, "uuid": bytes(16), "name": "nosuch",
              "xml": "<network/>", "mac": None, "flags": 0, "maxnames": 0, "need_results": 0, "autostart": 0,
              "eventID": 0, "callbackID": 0}
    return {name: values[name] for name, _codec in getattr(proc.args, "fields", ())}


def test_read_only_flags_of_the_network_procedures_match_libvirtd(libvirtd: Any) -> None:
    """As tests/rpc's sweep, for the network procedures against a libvirtd that has a network
    driver (libvirtd 9.0 without one crashes on NETWORK_IS_ACTIVE/IS_PERSISTENT)."""
    from pyvirt import _errcodes as codes
    from pyvirt.rpc.protocol import RemoteError
    from pyvirt.rpc.sync import Client

    wrong = []
    with Client.open_uri(libvirtd.uri(readonly=True), readonly=True) as ro:
        for proc in PROCEDURES:
            if "NETWORK" not in proc.name or proc.event:
                continue
            try:
                ro.call(proc, _harmless(proc))
                code = 0
            except RemoteError as exc:
                code = exc.code
            if (code == codes.VIR_ERR_OPERATION_DENIED) == proc.readonly:
                wrong.append(f"{proc.full_name}: readonly={proc.readonly}, got error {code}")
    assert not wrong, "\n".join(wrong)
