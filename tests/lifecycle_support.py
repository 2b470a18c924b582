# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the tests that start real domains share: running pyvirsh, the test guest's domain XML,
waiting for the guest, and checking that nothing (QEMU, status file, private directory) is left.

The fixtures ``guest`` (the built test guest) and ``root`` (an embed root whose QEMUs are killed
after the test, whatever happened) are in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pyvirt.qemu import proc
from pyvirt.qemu.process import STATUS_FORMAT
from pyvirt.testing import guest as tg

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
BOOT_TIMEOUT = 60.0
POWEROFF_TIMEOUT = 30.0

def pyvirsh(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([PYVIRSH, "-c", uri, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, f"pyvirsh {' '.join(args)} failed: {p.stderr}"
    return p


def domain_xml(name: str, guest: tg.Guest, serial: Path, emulator: str | None = None,
               extra_devices: str = "", uuid: str | None = None) -> str:
    """The project's test guest, its serial port to ``serial`` (``uuid``: a fixed one, so that two
    drivers can hold the very same domain)."""
    emu = f"<emulator>{emulator}</emulator>" if emulator else ""
    uuid_line = f"\n  <uuid>{uuid}</uuid>" if uuid else ""
    return f"""<domain type='qemu'>
  <name>{name}</name>{uuid_line}
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


def qemus_mentioning(text: str) -> list[int]:
    """QEMU processes whose command line or working directory mentions ``text`` (a root, a name).
    The working directory counts because a QEMU of a root need not name it in its arguments (the
    monitor comes as a descriptor, the master key by a relative path)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            if b"qemu-system" not in cmdline:
                continue
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if text.encode() in cmdline or text in cwd:
            found.append(int(entry))
    return found


def kill_qemus(text: str) -> list[int]:
    """SIGKILL the QEMUs :func:`qemus_mentioning` finds; returns their pids."""
    pids = qemus_mentioning(text)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@contextlib.contextmanager
def qemu_workdir(prefix: str) -> Iterator[Path]:
    """A short directory for one test's files; a QEMU still using it afterwards is killed and fails
    the test."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: UNIX socket paths
    try:
        yield path
    finally:
        leaked = kill_qemus(str(path))
        shutil.rmtree(path, ignore_errors=True)
        assert leaked == [], f"QEMU processes left running: {leaked}"


def qemus_of(root: Path) -> list[int]:
    """QEMU processes whose command line mentions this root (found without the status files)."""
    return qemus_mentioning(str(root))


def nothing_left(root: Path, name: str) -> None:
    assert not (root / "run" / "qemu" / f"{name}.json").exists()
    assert list((root / "lib" / "qemu").iterdir()) == []
    assert [p for p in qemus_of(root) if alive(p)] == []


def uri_of(root: Path) -> str:
    return f"qemu:///embed?root={root}"


def define(root: Path, xml: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dom.xml"
    path.write_text(xml)
    pyvirsh(uri_of(root), "define", str(path))
