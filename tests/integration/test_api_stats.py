# SPDX-License-Identifier: LGPL-2.1-or-later
"""Statistics, monitor passthrough, shutdownFlags and consoles through the Python API on the real
test guest.

The guest (TCG) boots with a virtio qcow2 disk, user networking and a balloon; what its kernel does
while booting (probing the disk) must show in the counters, and they must only grow.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from lifecycle_support import (
    BOOT_TIMEOUT,
    POWEROFF_TIMEOUT,
    nothing_left,
    serial_has,
    uri_of,
    wait_for,
)

import pyvirt
from pyvirt.testing import guest as tg

pytestmark = pytest.mark.slow

#: libvirt-python's names, resolved at run time by the packages' __getattr__
libvirt: Any = pyvirt
libvirt_qemu: Any = importlib.import_module("pyvirt.qemu")

MAC = "52:54:00:5a:11:01"


def _xml(guest: tg.Guest, serial: Path, image: Path) -> str:
    return f"""<domain type='qemu'>
  <name>stats</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>
    <cmdline>{guest.cmdline}</cmdline></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{image}'/>
      <target dev='vda' bus='virtio'/></disk>
    <interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>
    <serial type='file'><source path='{serial}'/></serial>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def test_statistics_of_a_booted_guest(root: Path, guest: tg.Guest, tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    serial = tmp_path / "serial.log"
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(_xml(guest, serial, image))
        assert dom.blockInfo("vda")[0] == 64 * 1024 * 1024  # from the qcow2 header, not running
        dom.create()
        wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")

        # the kernel probed the disk: reads, no writes
        rd_req, rd_bytes, wr_req, wr_bytes, errs = dom.blockStats("vda")
        assert rd_req > 0 and rd_bytes >= 512 * rd_req and errs == -1
        assert (wr_req, wr_bytes) == (0, 0)
        assert dom.blockStats(str(image)) == dom.blockStats("vda")  # by source path too
        assert dom.blockStats("")[:2] >= (rd_req, rd_bytes)
        capacity, allocation, physical = dom.blockInfo("vda")
        assert capacity == 64 * 1024 * 1024 and physical == image.stat().st_size and allocation > 0

        stats = dom.memoryStats()
        assert stats["actual"] == 256 * 1024  # the balloon holds nothing back
        assert 0 < stats["rss"] < 4 * 1024 * 1024
        with pytest.raises(libvirt.libvirtError, match="Interface name not provided"):
            dom.interfaceStats(MAC)

        first = dom.getCPUStats(True)[0]
        assert set(first) == {"cpu_time", "user_time", "system_time"}
        assert first["cpu_time"] > 0
        time.sleep(0.5)
        assert dom.getCPUStats(True)[0]["cpu_time"] >= first["cpu_time"]
        assert dom.info()[2] == 256 * 1024 and dom.info()[4] > 0
        with pytest.raises(libvirt.libvirtError, match="per host CPU") as exc:
            dom.getCPUStats(False)
        assert exc.value.get_error_code() == libvirt.VIR_ERR_OPERATION_UNSUPPORTED

        # monitor passthrough, QMP and HMP
        reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "query-status"}', 0))
        assert reply["return"]["status"] == "running" and reply["id"]
        refused = json.loads(libvirt_qemu.qemuMonitorCommand(
            dom, '{"execute": "qom-get", "arguments": {"path": "/nosuch", "property": "x"}}', 0))
        assert refused["error"]["class"] == "DeviceNotFound" and "return" not in refused
        hmp = libvirt_qemu.qemuMonitorCommand(dom, "info status",
                                              libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        assert hmp == "VM status: running\r\n"
        with pytest.raises(libvirt.libvirtError, match="cannot parse json"):
            libvirt_qemu.qemuMonitorCommand(dom, "info status", 0)

        assert dom.maxVcpus() == 1
        # the guest powers off when its ACPI power button is pressed
        assert dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN) == 0
        wait_for(lambda: serial_has(serial, tg.POWEROFF_MARKER), POWEROFF_TIMEOUT, "the guest's poweroff")
        wait_for(lambda: dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN],
                 POWEROFF_TIMEOUT, "state shut off (shutdown)")
        with pytest.raises(libvirt.libvirtError, match="domain is not running"):
            dom.blockStats("vda")
        nothing_left(root, "stats")
    finally:
        conn.close()


def _console_xml(guest: tg.Guest, name: str, serial: str) -> str:
    return f"""<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>
    <cmdline>{guest.cmdline}</cmdline></os>
  <features><acpi/></features>
  <devices>{serial}<memballoon model='none'/></devices>
</domain>
"""


def _read_until(stream: Any, marker: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} on the console; got {seen[-500:]!r}"
        chunk = stream.recv(4096)
        if chunk == -2:
            time.sleep(0.05)
            continue
        assert chunk != b"", f"the console closed before {marker!r}; got {seen[-500:]!r}"
        seen += chunk
    return seen


def test_console_of_a_booted_guest(root: Path, guest: tg.Guest) -> None:
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(_console_xml(guest, "con1", "<serial type='pty'/>"))
        stream = conn.newStream(0)
        with pytest.raises(libvirt.libvirtError, match="domain is not running"):
            dom.openConsole(None, stream, 0)
        # paused first, so that nothing the guest prints is lost before the console is attached
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        assert dom.openConsole(None, stream, 0) == 0
        dom.resume()
        _read_until(stream, tg.READY_MARKER.encode(), BOOT_TIMEOUT)
        _read_until(stream, tg.PROMPT.encode(), BOOT_TIMEOUT)
        assert stream.send(b"echo pyvirt-$((6*7))\n") > 0
        _read_until(stream, b"pyvirt-42", BOOT_TIMEOUT)

        # a second session is refused; a forced one takes over, and its callback sees the guest
        other = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        with pytest.raises(libvirt.libvirtError, match="Active console session") as exc:
            dom.openConsole("serial0", other, 0)
        assert exc.value.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED
        assert dom.openConsole("console0", other, libvirt.VIR_DOMAIN_CONSOLE_FORCE) == 0
        with pytest.raises(libvirt.libvirtError, match="stream is not open"):
            stream.recv(10)
        received: list[bytes] = []

        def readable(st: Any, events: int, opaque: list[bytes]) -> None:
            assert events & libvirt.VIR_STREAM_EVENT_READABLE
            data = st.recv(4096)
            if isinstance(data, bytes):
                opaque.append(data)

        other.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE, readable, received)
        other.send(b"echo callback-$((6*7))\n")
        wait_for(lambda: b"callback-42" in b"".join(received), BOOT_TIMEOUT, "the callback's data")
        other.eventRemoveCallback()
        assert other.finish() == 0
        dom.destroy()
    finally:
        conn.close()


def test_console_needs_a_pty(root: Path, guest: tg.Guest, tmp_path: Path) -> None:
    conn = libvirt.open(uri_of(root))
    try:
        file_serial = f"<serial type='file'><source path='{tmp_path}/s.log'/></serial>"
        dom = conn.createXML(_console_xml(guest, "con2", file_serial), libvirt.VIR_DOMAIN_START_PAUSED)
        with pytest.raises(libvirt.libvirtError, match="serial0 is not using a PTY"):
            dom.openConsole(None, conn.newStream(0), 0)
        with pytest.raises(libvirt.libvirtError, match="cannot find character device serial7"):
            dom.openConsole("serial7", conn.newStream(0), 0)
        dom.destroy()
        bare = conn.createXML(_console_xml(guest, "con3", ""), libvirt.VIR_DOMAIN_START_PAUSED)
        with pytest.raises(libvirt.libvirtError, match="has no console or serial port"):
            bare.openConsole(None, conn.newStream(0), 0)
        bare.destroy()
    finally:
        conn.close()


def _serial_pty(dom: Any) -> str:
    """The pty QEMU gave the domain's serial port, as QEMU itself says."""
    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "query-chardev"}', 0))
    ptys = [c["filename"][4:] for c in reply["return"] if c["filename"].startswith("pty:")]
    assert len(ptys) == 1, reply
    return str(ptys[0])


def test_console_follows_the_pty_of_each_run(root: Path, guest: tg.Guest) -> None:
    """openConsole keeps a run's pty (no QMP query per open); a new run of QEMU has another."""
    conn = libvirt.open(uri_of(root))
    held: list[int] = []
    try:
        dom = conn.defineXML(_console_xml(guest, "con4", "<serial type='pty'/>"))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        first = _serial_pty(dom)
        for _ in range(3):
            stream = conn.newStream(0)
            assert dom.openConsole(None, stream, 0) == 0
            assert stream.finish() == 0
        dom.destroy()
        # Take the first run's pty number ourselves, so that the next run cannot get it back: a
        # console opened on a pty kept from the first run would reach our pty, not the guest.
        for _ in range(256):
            master, slave = os.openpty()
            held += [master, slave]
            if os.ttyname(slave) == first:
                break
        else:
            pytest.skip(f"could not take {first} (held by something else)")
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        assert _serial_pty(dom) != first
        stream = conn.newStream(0)
        assert dom.openConsole(None, stream, 0) == 0
        dom.resume()
        _read_until(stream, tg.READY_MARKER.encode(), BOOT_TIMEOUT)
        assert stream.finish() == 0
        dom.destroy()
    finally:
        for fd in held:
            os.close(fd)
        conn.close()
