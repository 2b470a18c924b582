# SPDX-License-Identifier: LGPL-2.1-or-later
"""Starts that must fail before QEMU runs, VNC port allocation and destroy --graceful.

A start refused for a missing network, disk image or VNC port leaves nothing behind: no QEMU, no
monitor socket, no status file, no private directory and (since nothing was launched) no log.
Real QEMU (TCG) runs where a domain has to be up; the guest boots only as far as needed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lifecycle_support import (
    alive,
    define,
    domain_xml,
    nothing_left,
    pyvirsh,
    status_pid,
    uri_of,
)

from pyvirt import _errcodes as codes
from pyvirt import connection
from pyvirt.conf.qemu_conf import QemuConf
from pyvirt.errors import PyvirtError
from pyvirt.qemu import proc, process
from pyvirt.testing import guest as tg

pytestmark = pytest.mark.slow

NETWORK = "<interface type='network'><source network='default'/><model type='virtio'/></interface>"


def refused_before_launch(root: Path, name: str) -> None:
    """Nothing of the start is left, and QEMU never ran (its log was not even opened)."""
    nothing_left(root, name)
    assert not (root / "log" / "qemu" / f"{name}.log").exists()
    assert list((root / "run" / "qemu").glob(f"{name}.json")) == []


def start_error(root: Path, name: str) -> PyvirtError:
    conn = connection.open(uri_of(root))
    try:
        with pytest.raises(PyvirtError) as ei:
            conn.lookupByName(name).create()
        assert conn.lookupByName(name).isActive() == 0
        return ei.value
    finally:
        conn.close()


# --- 1. a network that does not exist --------------------------------------------------------------

def test_missing_network_fails_before_launch(root: Path, guest: tg.Guest) -> None:
    define(root, domain_xml("net1", guest, root / "serial.log", extra_devices=NETWORK))
    p = pyvirsh(uri_of(root), "start", "net1", check=False)
    assert p.returncode == 1
    assert "Failed to start domain 'net1'" in p.stderr
    assert "Network not found: no network with matching name 'default'" in p.stderr
    refused_before_launch(root, "net1")

    e = start_error(root, "net1")
    assert e.get_error_code() == codes.VIR_ERR_NO_NETWORK == 43
    assert e.get_error_domain() == codes.VIR_FROM_NETWORK
    assert str(e) == "Network not found: no network with matching name 'default'"
    refused_before_launch(root, "net1")


# --- 2. missing disk images ------------------------------------------------------------------------

def test_missing_disk_image_fails_before_launch(root: Path, guest: tg.Guest) -> None:
    disk = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source file='/nonexistent.qcow2'/><target dev='vda' bus='virtio'/></disk>")
    define(root, domain_xml("disk1", guest, root / "serial.log", extra_devices=disk))
    p = pyvirsh(uri_of(root), "start", "disk1", check=False)
    assert p.returncode == 1
    assert "Cannot access storage file '/nonexistent.qcow2'" in p.stderr
    assert "No such file or directory" in p.stderr
    refused_before_launch(root, "disk1")

    e = start_error(root, "disk1")
    assert e.get_error_code() == codes.VIR_ERR_SYSTEM_ERROR
    assert e.get_error_domain() == codes.VIR_FROM_STORAGE
    assert str(e) == (f"Cannot access storage file '/nonexistent.qcow2' (as uid:{os.getuid()}, "
                      f"gid:{os.getgid()}): No such file or directory")
    refused_before_launch(root, "disk1")


def test_readonly_cdrom_with_missing_source_fails(root: Path, guest: tg.Guest) -> None:
    cdrom = ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
             "<source file='/nonexistent.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>")
    define(root, domain_xml("cd1", guest, root / "serial.log", extra_devices=cdrom))
    p = pyvirsh(uri_of(root), "start", "cd1", check=False)
    assert p.returncode == 1
    assert "Cannot access storage file '/nonexistent.iso'" in p.stderr
    refused_before_launch(root, "cd1")


def test_empty_cdrom_and_optional_source_start(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    devices = ("<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>"
               "<disk type='file' device='cdrom'><source file='/nonexistent.iso' startupPolicy='optional'/>"
               "<target dev='hdd' bus='ide'/><readonly/></disk>")
    define(root, domain_xml("cd2", guest, root / "serial.log", extra_devices=devices))
    assert pyvirsh(uri, "start", "--paused", "cd2").stdout == "Domain 'cd2' started\n\n"
    live = pyvirsh(uri, "dumpxml", "cd2").stdout
    # The optional medium that is missing was ejected, as libvirt does.
    assert "/nonexistent.iso" not in live
    assert pyvirsh(uri, "destroy", "cd2").stdout == "Domain 'cd2' destroyed\n\n"
    nothing_left(root, "cd2")


# --- 3. VNC ports ----------------------------------------------------------------------------------

def first_free_port(start: int) -> int:
    for port in range(start, 65536):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port")


def vnc_port_of(xml: str) -> int:
    m = re.search(r"<graphics type='vnc' port='(\d+)'", xml)
    assert m, xml
    return int(m.group(1))


def test_vnc_autoport_picks_free_port_and_shows_it(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    vnc = "<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>"
    define(root, domain_xml("vnc1", guest, root / "serial.log", extra_devices=vnc))
    inactive = pyvirsh(uri, "dumpxml", "vnc1").stdout
    assert "port='-1' autoport='yes'" in inactive
    expected = first_free_port(5900)
    assert pyvirsh(uri, "start", "--paused", "vnc1").stdout == "Domain 'vnc1' started\n\n"
    port = vnc_port_of(pyvirsh(uri, "dumpxml", "vnc1").stdout)
    assert port == expected
    # QEMU serves VNC there.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(12).startswith(b"RFB ")
    assert "port='-1' autoport='yes'" in pyvirsh(uri, "dumpxml", "--inactive", "vnc1").stdout
    assert pyvirsh(uri, "destroy", "vnc1").stdout == "Domain 'vnc1' destroyed\n\n"
    nothing_left(root, "vnc1")

    # Several domains of one process (one test, so that no other test takes ports meanwhile).
    for n in ("vnc2", "vnc3", "vnc4"):
        define(root, domain_xml(n, guest, root / f"{n}.log", extra_devices=vnc))
    conn = connection.open(uri_of(root))
    try:
        a, b, c = (conn.lookupByName(n) for n in ("vnc2", "vnc3", "vnc4"))
        a.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)
        b.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)
        pa, pb = vnc_port_of(a.XMLDesc(0)), vnc_port_of(b.XMLDesc(0))
        assert pa != pb
        a.destroy()
        # The port of a stopped domain is free again.
        c.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)
        assert vnc_port_of(c.XMLDesc(0)) == pa
        b.destroy()
        c.destroy()
    finally:
        conn.close()
    for n in ("vnc2", "vnc3", "vnc4"):
        nothing_left(root, n)


def test_vnc_reservation_without_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """A port handed to a start whose QEMU does not listen yet is not handed out twice."""
    from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig
    from pyvirt.xml.domain import parse_domain

    monkeypatch.setattr(process, "_bind_test", lambda address, port: None)
    monkeypatch.setattr(process, "_vnc_ports", set())
    drv: Any = SimpleNamespace(conf=QemuConf(remote_display_port_min=5900, remote_display_port_max=5901))
    xml = ("<domain type='qemu'><name>x</name><memory>1024</memory><os><type>hvm</type></os><devices>"
           "<graphics type='vnc' autoport='yes'/></devices></domain>")
    doms = [parse_domain(xml, ctx=QemuDomainConfig(DEFAULT_X86_64_CONTEXT)) for _ in range(3)]
    assert process._reserve_vnc_port(drv, doms[0]) == 5900
    assert process._reserve_vnc_port(drv, doms[1]) == 5901
    with pytest.raises(PyvirtError, match=r"Unable to find an unused port in range 'display' \(5900-5901\)"):
        process._reserve_vnc_port(drv, doms[2])
    process._release_vnc_port(5900)
    assert process._reserve_vnc_port(drv, doms[2]) == 5900
    assert doms[2].devices is not None and doms[2].devices.graphics[0].port == 5900


def test_vnc_fixed_port_busy_fails(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    vnc = "<graphics type='vnc' port='5999' autoport='no' listen='127.0.0.1'/>"
    define(root, domain_xml("vnc5", guest, root / "serial.log", extra_devices=vnc))
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", 5999))
        except OSError as e:
            pytest.skip(f"port 5999 is taken on this host: {e}")
        holder.listen()
        p = pyvirsh(uri, "start", "vnc5", check=False)
    assert p.returncode == 1
    assert "Failed to start domain 'vnc5'" in p.stderr
    assert "VNC port 5999" in p.stderr and "127.0.0.1" in p.stderr and "Address already in use" in p.stderr
    refused_before_launch(root, "vnc5")


# --- 4. destroy --graceful -------------------------------------------------------------------------

def test_destroy_graceful(root: Path, guest: tg.Guest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "GRACEFUL_DESTROY_TIMEOUT", 1.0)
    monkeypatch.setattr(proc, "GRACEFUL_TIMEOUT", 2.0)
    define(root, domain_xml("gr1", guest, root / "serial.log"))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("gr1")
        with pytest.raises(PyvirtError) as ei:
            dom.destroyFlags(4)
        assert ei.value.get_error_code() == codes.VIR_ERR_INVALID_ARG

        # QEMU that honours SIGTERM: a graceful destroy is a destroy.
        dom.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)
        pid = status_pid(root, "gr1")
        assert pid is not None
        assert dom.destroyFlags(connection.VIR_DOMAIN_DESTROY_GRACEFUL) == 0
        assert dom.state() == [connection.VIR_DOMAIN_SHUTOFF, 2]
        assert not alive(pid)
        nothing_left(root, "gr1")

        # A QEMU that cannot act on SIGTERM (stopped): no SIGKILL, an error, the domain runs on.
        dom.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)
        pid = status_pid(root, "gr1")
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(PyvirtError) as ei:
            dom.destroyFlags(connection.VIR_DOMAIN_DESTROY_GRACEFUL)
        assert str(ei.value) == f"Failed to terminate process {pid} with SIGTERM: Device or resource busy"
        assert ei.value.get_error_code() == codes.VIR_ERR_SYSTEM_ERROR
        assert alive(pid)
        assert dom.isActive() == 1
        assert dom.state() == [connection.VIR_DOMAIN_PAUSED, 1]
        assert (root / "run" / "qemu" / "gr1.json").exists()

        # The default destroy still ends it: SIGTERM, then SIGKILL.
        assert dom.destroyFlags(0) == 0
        assert dom.state() == [connection.VIR_DOMAIN_SHUTOFF, 2]
        assert not alive(pid)
        nothing_left(root, "gr1")
    finally:
        conn.close()


def test_pyvirsh_destroy_graceful(root: Path, guest: tg.Guest) -> None:
    define(root, domain_xml("gr2", guest, root / "serial.log"))
    uri = uri_of(root)
    pyvirsh(uri, "start", "--paused", "gr2")
    pid = status_pid(root, "gr2")
    assert pid is not None
    p = pyvirsh(uri, "destroy", "--graceful", "gr2")
    assert p.stdout == "Domain 'gr2' destroyed\n\n"
    assert pyvirsh(uri, "domstate", "--reason", "gr2").stdout == "shut off (destroyed)\n\n"
    assert not alive(pid)
    nothing_left(root, "gr2")
