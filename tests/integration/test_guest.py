# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's test guest: built from Debian packages, booted by a real QEMU under TCG.

The boots use TCG even where /dev/kvm exists: on the CI machine it is a nested hypervisor on which
ordinary guests abort. Each boot is its own test so that pytest-xdist runs them side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from pyvirt.errors import OperationFailed
from pyvirt.testing import guest as tg

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 60.0
POWEROFF_TIMEOUT = 15.0


def _line(text: str) -> re.Pattern[bytes]:
    """``text`` as a whole line of serial output (the tty turns "\\n" into "\\r\\n")."""
    return re.compile(rb"(?m)^" + re.escape(text.encode()) + rb"\r?$")


READY = _line(tg.READY_MARKER)
POWERING_OFF = _line(tg.POWEROFF_MARKER)


@pytest.fixture(scope="session")
def guest() -> tg.Guest:
    return tg.build()


@pytest.fixture
def recorded_commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every command the builder runs from now on."""
    calls: list[list[str]] = []
    real_run = tg._run

    def run(argv: list[str], **kw: object) -> str:
        calls.append(list(argv))
        return real_run(argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tg, "_run", run)
    return calls


def _package_work(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if c[0] == "dpkg-deb" or c[:2] == ["apt-get", "download"]]


# --- building ------------------------------------------------------------------------------------

def test_second_build_is_a_cache_hit(guest: tg.Guest, recorded_commands: list[list[str]]) -> None:
    mtimes = (guest.kernel.stat().st_mtime_ns, guest.initrd.stat().st_mtime_ns)
    again = tg.build()
    assert again.cached
    assert again == guest
    assert _package_work(recorded_commands) == []
    assert (again.kernel.stat().st_mtime_ns, again.initrd.stat().st_mtime_ns) == mtimes


@pytest.mark.slow
def test_rebuild_reuses_the_downloaded_package(guest: tg.Guest, tmp_path: Path,
                                               recorded_commands: list[list[str]]) -> None:
    debs = tmp_path / "debs"
    debs.mkdir()
    seeded = list((guest.kernel.parent.parent / "debs").glob("linux-image-*.deb"))
    assert seeded, "the cache no longer holds the kernel package it was built from"
    for deb in seeded:
        try:
            os.link(deb, debs / deb.name)
        except OSError:
            shutil.copyfile(deb, debs / deb.name)

    built = tg.build(tmp_path)
    assert not built.cached
    assert [c[0] for c in _package_work(recorded_commands)] == ["dpkg-deb"]  # no apt-get download
    # The same inputs give the same key and a byte-identical initramfs.
    assert built.key == guest.key
    assert built.initrd.read_bytes() == guest.initrd.read_bytes()
    # Staging and the unpacked package are gone; only the layout the module documents remains.
    assert {p.name for p in tmp_path.iterdir()} == {".lock", "debs", built.key}
    assert {p.name for p in built.kernel.parent.iterdir()} == {built.kernel.name, "initrd.img", "guest.json"}

    recorded_commands.clear()
    assert tg.build(tmp_path).cached
    assert _package_work(recorded_commands) == []


def test_cache_key_follows_every_input() -> None:
    pkg = tg._Package("linux-image-6.1.0-1-amd64", "6.1.1-1")
    base = tg._cache_key(pkg, "1:1.35.0-4", "init")
    assert tg._cache_key(pkg, "1:1.35.0-4", "init") == base
    assert tg._cache_key(pkg._replace(version="6.1.1-2"), "1:1.35.0-4", "init") != base
    assert tg._cache_key(pkg._replace(name="linux-image-6.1.0-2-amd64"), "1:1.35.0-4", "init") != base
    assert tg._cache_key(pkg, "1:1.35.0-5", "init") != base
    assert tg._cache_key(pkg, "1:1.35.0-4", "init\n") != base


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PYVIRT_TEST_GUEST_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tg.default_cache_dir() == tmp_path / "xdg" / "pyvirt" / "test-guest"
    monkeypatch.setenv("PYVIRT_TEST_GUEST_DIR", str(tmp_path / "mine"))
    assert tg.default_cache_dir() == tmp_path / "mine"


def test_failed_command_says_what_and_how_to_fix() -> None:
    with pytest.raises(OperationFailed, match=r"^ls /nonexistent-pyvirt failed: .*No such file.*; do X$"):
        tg._run(["ls", "/nonexistent-pyvirt"], fix="do X")
    with pytest.raises(OperationFailed, match=r"^cannot run /nonexistent-pyvirt: .*; do Y$"):
        tg._run(["/nonexistent-pyvirt"], fix="do Y")


def test_boot_args(guest: tg.Guest) -> None:
    assert guest.boot_args() == ["-kernel", str(guest.kernel), "-initrd", str(guest.initrd),
                                 "-append", guest.cmdline]
    assert "console=ttyS0" in guest.cmdline.split()


def test_cli_build_prints_the_paths(guest: tg.Guest) -> None:
    cli = Path(sys.executable).with_name("pyvirt-test-guest")
    proc = subprocess.run([str(cli), "build"], capture_output=True, text=True, check=True)
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert {k: shlex.split(v)[0] for k, v in values.items()} == {
        "kernel": str(guest.kernel), "initrd": str(guest.initrd), "cmdline": guest.cmdline}


@pytest.fixture
def unpacked_initrd(guest: tg.Guest, tmp_path: Path) -> Path:
    """The initramfs unpacked by GNU cpio, an independent reader of the newc format."""
    root = tmp_path / "initrd"
    root.mkdir()
    subprocess.run(["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/*"],
                   input=gzip.decompress(guest.initrd.read_bytes()), cwd=root, check=True)
    return root


def test_initrd_contents(guest: tg.Guest, unpacked_initrd: Path) -> None:
    root = unpacked_initrd
    archive = gzip.decompress(guest.initrd.read_bytes())
    listed = subprocess.run(["cpio", "-t", "-v", "--quiet"], input=archive, capture_output=True, check=True)
    assert listed.stderr == b""  # GNU cpio warns about malformed members
    listing = listed.stdout.decode()
    names = [line.split()[-1] for line in listing.splitlines() if not line.startswith("l")]
    assert len(names) == len(set(names))
    assert re.search(r"(?m)^crw------- .* 5, +1 .* dev/console$", listing)
    assert (root / "init").read_text().count(tg.READY_MARKER) == 1
    assert os.access(root / "init", os.X_OK)
    assert os.readlink(root / "bin" / "sh") == "/bin/busybox"
    assert os.readlink(root / "sbin" / "acpid") == "/bin/busybox"
    power = root / "etc" / "acpi" / "PWRF" / "00000080"
    assert tg.POWEROFF_MARKER in power.read_text() and os.access(power, os.X_OK)
    assert not (root / "etc" / "acpi.map").exists()  # its format would override acpid's own table
    assert (root / "var" / "log").is_dir()


def test_modules_load_after_their_dependencies(unpacked_initrd: Path) -> None:
    (moddir,) = (unpacked_initrd / "lib" / "modules").iterdir()
    order = (moddir / tg._LOAD_LIST).read_text().split()
    names = [tg._module_name(Path(p).name) for p in order]
    for want in ("button", "evdev", "virtio_pci", "virtio_blk", "virtio_net", "ata_piix", "sd_mod", "e1000"):
        assert want in names
    for i, path in enumerate(order):
        info = tg._modinfo((moddir / path).read_bytes(), path)
        for dep in (d for v in info.get("depends", []) for d in v.split(",") if d):
            assert tg._module_name(dep) in names[:i], f"{path} is loaded before its dependency {dep}"


# --- booting -------------------------------------------------------------------------------------

class Serial:
    """The guest's ttyS0, as a stream QEMU's chardev connects to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.output = bytearray()
        self._pos = 0

    async def expect(self, pattern: re.Pattern[bytes], timeout: float) -> float:
        """Wait for ``pattern`` after the previous match; return the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while not (m := pattern.search(self.output, self._pos)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {pattern.pattern!r} on the serial console within {timeout} s; "
                                     f"it printed: {bytes(self.output[-2000:])!r}")
            with contextlib.suppress(TimeoutError):
                chunk = await asyncio.wait_for(self._reader.read(4096), remaining)
                if not chunk:
                    raise AssertionError(f"serial console closed before {pattern.pattern!r}; "
                                         f"it printed: {bytes(self.output[-2000:])!r}")
                self.output += chunk
        self._pos = m.end()
        return time.monotonic() - start

    async def drain(self) -> None:
        """Read what is left until QEMU closes the console."""
        while chunk := await self._reader.read(4096):
            self.output += chunk

    async def type(self, text: str) -> None:
        self._writer.write(text.encode())
        await self._writer.drain()


@contextlib.asynccontextmanager
async def booted(guest: tg.Guest, workdir: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process,
                                                                         QMPClient, Serial]]:
    """QEMU running the guest, with its QMP monitor and serial console connected to this test."""
    # The test listens on both sockets and QEMU connects to them: no race with QEMU creating them.
    consoles: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_console(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await consoles.put((reader, writer))

    server = await asyncio.start_unix_server(on_console, path=str(workdir / "serial.sock"))
    qmp = QMPClient("test-guest")
    await qmp.start_server(str(workdir / "qmp.sock"))
    with open(workdir / "qemu.log", "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            QEMU, "-accel", "tcg", "-m", "256", "-nodefaults", "-no-user-config", "-display", "none",
            "-chardev", f"socket,id=serial0,path={workdir / 'serial.sock'}", "-serial", "chardev:serial0",
            "-qmp", f"unix:{workdir / 'qmp.sock'}", *guest.boot_args(),
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            await asyncio.wait_for(qmp.accept(), 30)
            reader, console = await asyncio.wait_for(consoles.get(), 30)
        except TimeoutError:
            raise AssertionError(f"QEMU did not connect: {(workdir / 'qemu.log').read_text()}") from None
        writer = console
        yield proc, qmp, Serial(reader, console)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        # QEMU is gone, so the monitor connection ended with EOF: disconnect() reports that.
        with contextlib.suppress(EOFError, OSError):
            await qmp.disconnect()
        if writer is not None:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.slow
def test_boot_then_acpi_powerdown(guest: tg.Guest, tmp_path: Path) -> None:
    async def run() -> None:
        async with booted(guest, tmp_path) as (proc, qmp, serial):
            took = await serial.expect(READY, BOOT_TIMEOUT)
            with qmp.listener("SHUTDOWN") as shutdowns:
                pressed = time.monotonic()
                await qmp.execute("system_powerdown")
                event = await asyncio.wait_for(shutdowns.get(), POWEROFF_TIMEOUT)
            # guest=true: the guest itself powered off (acpid's script), QEMU did not just stop.
            assert event["data"] == {"guest": True, "reason": "guest-shutdown"}
            assert await asyncio.wait_for(proc.wait(), POWEROFF_TIMEOUT) == 0
            print(f"ready marker after {took:.2f} s, QEMU gone {time.monotonic() - pressed:.2f} s "
                  "after the power button")
            await asyncio.wait_for(serial.drain(), POWEROFF_TIMEOUT)
            await serial.expect(POWERING_OFF, 0)

    asyncio.run(run())


@pytest.mark.slow
def test_reboot_from_the_serial_shell(guest: tg.Guest, tmp_path: Path) -> None:
    async def run() -> None:
        async with booted(guest, tmp_path) as (proc, qmp, serial):
            await serial.expect(READY, BOOT_TIMEOUT)
            await serial.expect(re.compile(re.escape(tg.PROMPT.encode())), BOOT_TIMEOUT)
            with qmp.listener("RESET") as resets:
                await serial.type("reboot -f\n")
                event = await asyncio.wait_for(resets.get(), BOOT_TIMEOUT)
            assert event["data"] == {"guest": True, "reason": "guest-reset"}
            await serial.expect(READY, BOOT_TIMEOUT)
            assert proc.returncode is None

    asyncio.run(run())
