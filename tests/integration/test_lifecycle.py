# SPDX-License-Identifier: LGPL-2.1-or-later
"""The domain lifecycle through pyvirsh: real QEMU (TCG), the real test guest, one process per call.

Every pyvirsh call is its own process, so each one also exercises the reconnect through the status
file (run/qemu/NAME.json) that the previous one left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyvirt.qemu import proc
from pyvirt.qemu.process import STATUS_FORMAT
from pyvirt.testing import guest as tg

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
BOOT_TIMEOUT = 60.0
POWEROFF_TIMEOUT = 30.0

pytestmark = pytest.mark.slow


def pyvirsh(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([PYVIRSH, "-c", uri, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, f"pyvirsh {' '.join(args)} failed: {p.stderr}"
    return p


def domain_xml(name: str, guest: tg.Guest, serial: Path, emulator: str | None = None,
               extra_devices: str = "") -> str:
    emu = f"<emulator>{emulator}</emulator>" if emulator else ""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>
    <cmdline>{guest.cmdline}</cmdline></os>
  <features><acpi/></features>
  <devices>{emu}<serial type='file'><source path='{serial}'/></serial>{extra_devices}</devices>
</domain>
"""


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def serial_has(path: Path, marker: str) -> bool:
    try:
        return marker.encode() in path.read_bytes()
    except FileNotFoundError:
        return False


def status_pid(root: Path, name: str) -> int | None:
    try:
        return int(proc.read_status(root / "run" / "qemu" / f"{name}.json", STATUS_FORMAT)["identity"]["pid"])
    except FileNotFoundError:
        return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


def qemus_of(root: Path) -> list[int]:
    """QEMU processes whose command line mentions this root (found without the status files)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"qemu-system" in cmdline and str(root).encode() in cmdline:
            found.append(int(entry))
    return found


def nothing_left(root: Path, name: str) -> None:
    assert not (root / "run" / "qemu" / f"{name}.json").exists()
    assert list((root / "lib" / "qemu").iterdir()) == []
    assert [p for p in qemus_of(root) if alive(p)] == []


@pytest.fixture(scope="module")
def guest() -> tg.Guest:
    return tg.build()


@pytest.fixture
def root(embed_root: Path) -> Iterator[Path]:
    try:
        yield embed_root
    finally:
        # Whatever failed, no QEMU outlives the test: by the status files, then by command line.
        run = embed_root / "run" / "qemu"
        pids = set(qemus_of(embed_root))
        for status in run.glob("*.json") if run.is_dir() else []:
            with contextlib.suppress(Exception):
                pids.add(int(proc.read_status(status, STATUS_FORMAT)["identity"]["pid"]))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def uri_of(root: Path) -> str:
    return f"qemu:///embed?root={root}"


def define(root: Path, xml: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dom.xml"
    path.write_text(xml)
    pyvirsh(uri_of(root), "define", str(path))


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
    # QEMU refuses a kernel that does not exist, after the monitor socket was handed over.
    xml = domain_xml("vm4", guest, root / "serial.log").replace(str(guest.kernel), str(root / "no-kernel"))
    define(root, xml)
    p = pyvirsh(uri, "start", "vm4", check=False)
    assert p.returncode == 1
    assert "exited while starting up" in p.stderr and "no-kernel" in p.stderr
    assert pyvirsh(uri, "domstate", "--reason", "vm4").stdout == "shut off (failed)\n\n"
    nothing_left(root, "vm4")


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
