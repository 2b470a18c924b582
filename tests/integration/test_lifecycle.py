# SPDX-License-Identifier: LGPL-2.1-or-later
"""The domain lifecycle through pyvirsh: real QEMU (TCG), the real test guest, one process per call.

Every pyvirsh call is its own process, so each one also exercises the reconnect through the status
file (run/qemu/NAME.json) that the previous one left.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from lifecycle_support import (
    BOOT_TIMEOUT,
    POWEROFF_TIMEOUT,
    alive,
    define,
    domain_xml,
    nothing_left,
    pyvirsh,
    serial_has,
    status_pid,
    uri_of,
    wait_for,
)

from pyvirt.testing import guest as tg

pytestmark = pytest.mark.slow


def test_start_shutdown_destroy_crash(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    serial = root / "serial.log"
    define(root, domain_xml("vm1", guest, serial))
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "shut off (unknown)\n\n"
    assert pyvirsh(uri, "domid", "vm1").stdout == "-\n\n"

    assert pyvirsh(uri, "start", "vm1").stdout == "Domain 'vm1' started\n\n"
    wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")
    assert pyvirsh(uri, "domstate", "vm1").stdout == "running\n\n"
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "running (booted)\n\n"
    assert pyvirsh(uri, "domid", "vm1").stdout == "1\n\n"
    again = pyvirsh(uri, "start", "vm1", check=False)
    assert again.returncode == 1 and "Domain is already active" in again.stderr

    assert pyvirsh(uri, "suspend", "vm1").stdout == "Domain 'vm1' suspended\n\n"
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "paused (user)\n\n"
    assert pyvirsh(uri, "resume", "vm1").stdout == "Domain 'vm1' resumed\n\n"
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "running (unpaused)\n\n"

    # shutdown: ACPI power button; the guest powers off while no pyvirsh process runs.
    pid = status_pid(root, "vm1")
    assert pid is not None and alive(pid)
    assert pyvirsh(uri, "shutdown", "vm1").stdout == "Domain 'vm1' is being shutdown\n\n"
    wait_for(lambda: serial_has(serial, tg.POWEROFF_MARKER), POWEROFF_TIMEOUT, "the guest's poweroff")

    def shut_off() -> bool:
        return pyvirsh(uri, "domstate", "vm1").stdout == "shut off\n\n"

    wait_for(shut_off, POWEROFF_TIMEOUT, "domstate 'shut off'")
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "shut off (shutdown)\n\n"
    wait_for(lambda: not alive(pid), 10, f"QEMU {pid} to exit")
    nothing_left(root, "vm1")

    # destroy
    serial.unlink()
    assert pyvirsh(uri, "start", "vm1").stdout == "Domain 'vm1' started\n\n"
    assert pyvirsh(uri, "domid", "vm1").stdout == "2\n\n"
    pid = status_pid(root, "vm1")
    assert pid is not None and alive(pid)
    assert pyvirsh(uri, "destroy", "vm1").stdout == "Domain 'vm1' destroyed\n\n"
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "shut off (destroyed)\n\n"
    assert not alive(pid)
    nothing_left(root, "vm1")
    gone = pyvirsh(uri, "destroy", "vm1", check=False)
    assert gone.returncode == 1 and "is not running" in gone.stderr

    # a QEMU killed from outside is found crashed by the next process, which cleans up
    assert pyvirsh(uri, "start", "--paused", "vm1").stdout == "Domain 'vm1' started\n\n"
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "paused (user)\n\n"
    pid = status_pid(root, "vm1")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 10, f"QEMU {pid} to die")
    assert pyvirsh(uri, "domstate", "--reason", "vm1").stdout == "shut off (crashed)\n\n"
    nothing_left(root, "vm1")


def test_missing_emulator_leaves_nothing(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    define(root, domain_xml("vm2", guest, root / "serial.log", emulator="/nonexistent/qemu-system-x86_64"))
    p = pyvirsh(uri, "start", "vm2", check=False)
    assert p.returncode == 1
    assert "Failed to start domain 'vm2'" in p.stderr
    assert "/nonexistent/qemu-system-x86_64" in p.stderr
    assert pyvirsh(uri, "domstate", "vm2").stdout == "shut off\n\n"
    nothing_left(root, "vm2")


def test_unsupported_device_leaves_nothing(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    define(root, domain_xml("vm3", guest, root / "serial.log",
                            extra_devices="<serial type='udp'><source mode='connect' host='127.0.0.1' "
                                          "service='4444'/></serial>"))
    p = pyvirsh(uri, "start", "vm3", check=False)
    assert p.returncode == 1
    assert "Failed to start domain 'vm3'" in p.stderr and "udp" in p.stderr
    nothing_left(root, "vm3")
    assert not (root / "log" / "qemu" / "vm3.log").exists()


def test_qemu_exiting_early_reports_its_log(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    # QEMU refuses a kernel that is not one (an empty file), after the monitor socket was handed
    # over. (A kernel that does not exist is refused before QEMU runs: see the next test.)
    root.mkdir(parents=True, exist_ok=True)
    (root / "bad-kernel").write_bytes(b"")
    xml = domain_xml("vm4", guest, root / "serial.log").replace(str(guest.kernel), str(root / "bad-kernel"))
    define(root, xml)
    p = pyvirsh(uri, "start", "vm4", check=False)
    assert p.returncode == 1
    assert "exited while starting up" in p.stderr and "bad-kernel" in p.stderr, p.stderr
    assert pyvirsh(uri, "domstate", "--reason", "vm4").stdout == "shut off (failed)\n\n"
    nothing_left(root, "vm4")


def test_missing_kernel_is_refused_before_qemu_runs(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    xml = domain_xml("vm6", guest, root / "serial.log").replace(str(guest.kernel), str(root / "no-kernel"))
    define(root, xml)
    p = pyvirsh(uri, "start", "vm6", check=False)
    assert p.returncode == 1
    assert f"kernel '{root}/no-kernel'" in p.stderr and "does not exist" in p.stderr, p.stderr
    assert not (root / "log" / "qemu" / "vm6.log").exists() or "qemu-system" not in (
        root / "log" / "qemu" / "vm6.log").read_text()
    nothing_left(root, "vm6")


def test_events_track_state_in_one_process(root: Path, guest: tg.Guest) -> None:
    """A long-lived connection follows QMP events: SHUTDOWN stops QEMU, a lost monitor is a crash."""
    from pyvirt import connection

    serial = root / "serial.log"
    define(root, domain_xml("vm5", guest, serial))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("vm5")
        assert dom.isActive() == 0 and dom.ID() == -1
        dom.create()
        assert dom.isActive() == 1 and dom.ID() == 1
        assert dom.state() == [connection.VIR_DOMAIN_RUNNING, 1]
        info = dom.info()
        assert info[:4] == [connection.VIR_DOMAIN_RUNNING, 262144, 262144, 1]
        wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")
        dom.shutdown()
        wait_for(lambda: dom.state() == [connection.VIR_DOMAIN_SHUTOFF, 1], POWEROFF_TIMEOUT,
                 "the SHUTDOWN event to shut the domain off")
        nothing_left(root, "vm5")

        dom.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)
        assert dom.state() == [connection.VIR_DOMAIN_PAUSED, 1]
        pid = status_pid(root, "vm5")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: dom.state() == [connection.VIR_DOMAIN_SHUTOFF, 3], 10,
                 "the lost monitor to mark the domain crashed")
        nothing_left(root, "vm5")
    finally:
        conn.close()
