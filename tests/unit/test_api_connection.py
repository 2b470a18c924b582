# SPDX-License-Identifier: LGPL-2.1-or-later
"""The libvirt-python API without running QEMU: openAuth, node info, callbacks, keepalive, flag
checks and the calls that need no running domain; constants against python3-libvirt."""

from __future__ import annotations

import importlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pyvirt
from pyvirt import _constants
from pyvirt.daemon.nodeinfo import node_info

from oracle import SYSTEM_PYTHON

#: libvirt-python's names, resolved at run time by pyvirt's module __getattr__
libvirt: Any = pyvirt
UUID = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"


@pytest.fixture
def conn(embed_root: Path) -> Iterator[Any]:
    c = libvirt.openAuth(f"qemu:///embed?root={embed_root}", [[libvirt.VIR_CRED_AUTHNAME], None, None], 0)
    try:
        yield c
    finally:
        c.close()


def _define(conn: Any, tmp_path: Path) -> Any:
    image = tmp_path / "d.raw"
    with open(image, "wb") as f:
        f.truncate(4 * 1024 * 1024)
    return conn.defineXML(f"""<domain type='qemu'><name>u1</name><uuid>{UUID}</uuid>
      <memory unit='MiB'>96</memory><currentMemory unit='MiB'>64</currentMemory><vcpu current='1'>3</vcpu>
      <os><type arch='x86_64'>hvm</type></os>
      <devices><disk type='file' device='disk'><source file='{image}'/><target dev='vda' bus='virtio'/></disk>
      <interface type='user'><mac address='52:54:00:00:00:09'/></interface></devices></domain>""")


def _code(exc: pytest.ExceptionInfo[Any]) -> tuple[int, int]:
    return exc.value.get_error_code(), exc.value.get_error_domain()


def test_open_auth_ignores_credentials_and_honours_read_only(embed_root: Path, tmp_path: Path) -> None:
    uri = f"qemu:///embed?root={embed_root}"
    asked: list[object] = []
    rw = libvirt.openAuth(uri, [[libvirt.VIR_CRED_AUTHNAME], lambda *a: asked.append(a), None], 0)
    ro = libvirt.openAuth(uri, None, libvirt.VIR_CONNECT_RO)
    try:
        dom = _define(rw, tmp_path)
        assert asked == []  # a local driver asks for no credentials
        with pytest.raises(libvirt.libvirtError, match="read only access prevents virDomainDefineXML") as exc:
            ro.defineXML(dom.XMLDesc(0))
        assert _code(exc) == (libvirt.VIR_ERR_OPERATION_DENIED, libvirt.VIR_FROM_DOMAIN)
        with pytest.raises(libvirt.libvirtError, match="secure flag"):
            ro.lookupByName("u1").XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
        assert ro.lookupByName("u1").XMLDesc(0) == dom.XMLDesc(0)
    finally:
        ro.close()
        rw.close()
    with pytest.raises(libvirt.libvirtError, match="unsupported flags") as exc:
        libvirt.openAuth(uri, None, 0x80)
    assert _code(exc) == (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_NONE)


def test_node_info_is_the_hosts(conn: Any) -> None:
    info = node_info()
    assert conn.getInfo() == [info.model, info.memory // 1024, info.cpus, info.mhz, info.nodes,
                              info.sockets, info.cores, info.threads]


def test_close_callback_keepalive_and_event_loop(conn: Any) -> None:
    calls: list[object] = []
    assert conn.registerCloseCallback(lambda *a: calls.append(a), None) == 0
    assert conn.unregisterCloseCallback() is None
    with pytest.raises(libvirt.libvirtError, match="virConnectSetKeepAlive") as exc:
        conn.setKeepAlive(5, 3)  # as libvirt's embedded driver: no peer to keep alive
    assert _code(exc) == (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_FROM_DOMAIN)
    assert libvirt.virEventRegisterDefaultImpl() == 0
    assert calls == []
    conn.close()
    assert calls == []  # the caller's own close is not reported, as in libvirt
    with pytest.raises(libvirt.libvirtError, match="closed"):
        conn.getInfo()


def test_domain_figures_without_running_it(conn: Any, tmp_path: Path) -> None:
    dom = _define(conn, tmp_path)
    assert dom.maxMemory() == 96 * 1024
    assert dom.isUpdated() == 0
    assert dom.hasManagedSaveImage() == 0
    assert dom.info()[:4] == [libvirt.VIR_DOMAIN_SHUTOFF, 96 * 1024, 64 * 1024, 1]
    assert dom.blockInfo("vda") == [4 * 1024 * 1024, 0, 4 * 1024 * 1024]
    for call in (dom.maxVcpus, dom.memoryStats, lambda: dom.blockStats("vda"),
                 lambda: dom.interfaceStats("52:54:00:00:00:09"), lambda: dom.getCPUStats(True),
                 dom.suspend, dom.resume, dom.destroy, dom.reset):
        with pytest.raises(libvirt.libvirtError, match="domain is not running") as exc:
            call()
        assert _code(exc) == (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_DOMAIN)
    with pytest.raises(libvirt.libvirtError, match="domain is not running") as exc:
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    assert _code(exc) == (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU)  # as libvirt's


@pytest.mark.parametrize("call, function", [
    (lambda d: d.XMLDesc(1024), "qemuDomainGetXMLDesc"),
    (lambda d: d.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_INITCTL), "qemuDomainShutdownFlags"),
    (lambda d: d.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_SIGNAL), "qemuDomainShutdownFlags"),
    (lambda d: d.getCPUStats(True, 8), "qemuDomainGetCPUStats"),
])
def test_unsupported_flags(conn: Any, tmp_path: Path, call: Any, function: str) -> None:
    dom = _define(conn, tmp_path)
    with pytest.raises(libvirt.libvirtError, match=f"unsupported flags .* in function {function}") as exc:
        call(dom)
    assert _code(exc) == (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_QEMU)


def test_xml_flags_pyvirt_does_not_implement_say_so(conn: Any, tmp_path: Path) -> None:
    dom = _define(conn, tmp_path)
    for flag in (libvirt.VIR_DOMAIN_XML_MIGRATABLE, libvirt.VIR_DOMAIN_XML_UPDATE_CPU):
        with pytest.raises(libvirt.libvirtError, match="VIR_DOMAIN_XML_INACTIVE") as exc:
            dom.XMLDesc(flag)
        assert exc.value.get_error_code() == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED


def test_monitor_command_needs_a_running_domain(conn: Any, tmp_path: Path) -> None:
    libvirt_qemu: Any = importlib.import_module("pyvirt.qemu")

    dom = _define(conn, tmp_path)
    with pytest.raises(libvirt.libvirtError, match="domain is not running") as exc:
        libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-status"}', 0)
    assert _code(exc) == (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_DOMAIN)
    with pytest.raises(libvirt.libvirtError, match="qemuDomainQemuMonitorCommandWithFiles") as exc:
        libvirt_qemu.qemuMonitorCommand(dom, "info status", 2)
    assert _code(exc) == (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_QEMU)


@pytest.mark.oracle
def test_constants_equal_libvirt_pythons() -> None:
    ours = {n: getattr(_constants, n) for n in dir(_constants) if n.startswith("VIR_")}
    assert len(ours) > 200
    script = ("import json, sys, libvirt, libvirt_qemu; names = json.load(sys.stdin); "
              "print(json.dumps({n: getattr(libvirt, n, getattr(libvirt_qemu, n, None)) for n in names}))")
    names = [*ours, "VIR_DOMAIN_QEMU_MONITOR_COMMAND_DEFAULT", "VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP"]
    theirs = json.loads(subprocess.run([SYSTEM_PYTHON, "-c", script], input=json.dumps(names),
                                       capture_output=True, text=True, check=True).stdout)
    import pyvirt.qemu as libvirt_qemu

    ours.update({n: getattr(libvirt_qemu, n) for n in names[-2:]})
    assert ours == theirs
    # every constant is reachable as libvirt-python's name through the package
    assert all(getattr(libvirt, n) == v for n, v in ours.items() if n in dir(_constants))
