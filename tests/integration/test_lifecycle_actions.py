# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the guest's own actions do: <on_reboot>, <on_crash> with a real pvpanic panic, and the
start-time refusals and createXML rules that libvirt applies (real QEMU, the real test guest).

The guest acts once ready through its kernel command line (``pyvirt.after_ready=panic|reboot``,
see pyvirt/testing/init.sh), so no shell session has to be driven.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lifecycle_support import (
    BOOT_TIMEOUT,
    define,
    domain_xml,
    nothing_left,
    serial_has,
    uri_of,
    wait_for,
)

from pyvirt import connection
from pyvirt.errors import PyvirtError
from pyvirt.testing import guest as tg

pytestmark = pytest.mark.slow

SHUTOFF, CRASHED, RUNNING, PAUSED = (connection.VIR_DOMAIN_SHUTOFF, 6, connection.VIR_DOMAIN_RUNNING,
                                     connection.VIR_DOMAIN_PAUSED)
PMSUSPENDED = 7
SHUTOFF_SHUTDOWN, SHUTOFF_CRASHED, CRASHED_PANICKED = 1, 3, 1


def acting_xml(name: str, guest: tg.Guest, serial: Path, action: str, lifecycle: str,
               devices: str = "") -> str:
    xml = domain_xml(name, guest, serial, extra_devices=devices)
    xml = xml.replace(f"<cmdline>{guest.cmdline}</cmdline>",
                      f"<cmdline>{guest.cmdline} pyvirt.after_ready={action}</cmdline>")
    return xml.replace("</os>", f"</os>{lifecycle}")


def test_on_reboot_destroy_stops_the_domain_when_the_guest_reboots(root: Path, guest: tg.Guest) -> None:
    serial = root / "serial.log"
    define(root, acting_xml("rb", guest, serial, "reboot", "<on_reboot>destroy</on_reboot>"))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("rb")
        dom.create()
        # The guest's `reboot -f` is a power-off for QEMU (set-action reboot=shutdown): the domain
        # stops, with reason shutdown, as libvirt's on_reboot=destroy does. It never boots twice.
        wait_for(lambda: dom.state() == [SHUTOFF, SHUTOFF_SHUTDOWN], BOOT_TIMEOUT,
                 "the guest's reboot to shut the domain off")
        assert serial.read_text(errors="replace").count(tg.READY_MARKER) == 1
        nothing_left(root, "rb")
    finally:
        conn.close()


def _panic_xml(name: str, guest: tg.Guest, serial: Path, on_crash: str) -> str:
    return acting_xml(name, guest, serial, "panic", f"<on_crash>{on_crash}</on_crash>",
                      devices="<panic model='isa'/>")


def test_panic_with_on_crash_destroy_is_crashed(root: Path, guest: tg.Guest) -> None:
    serial = root / "serial.log"
    define(root, _panic_xml("p1", guest, serial, "destroy"))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("p1")
        dom.create()
        wait_for(lambda: dom.state() == [SHUTOFF, SHUTOFF_CRASHED], BOOT_TIMEOUT,
                 "the guest's panic to stop the domain as crashed")
        assert serial_has(serial, tg.READY_MARKER)
        nothing_left(root, "p1")
    finally:
        conn.close()


def test_panic_with_on_crash_preserve_keeps_it_crashed_across_processes(root: Path, guest: tg.Guest) -> None:
    serial = root / "serial.log"
    define(root, _panic_xml("p2", guest, serial, "preserve"))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("p2")
        dom.create()
        wait_for(lambda: dom.state() == [CRASHED, CRASHED_PANICKED], BOOT_TIMEOUT, "the panic")
        assert dom.isActive() == 1
    finally:
        conn.close()
    # A later process reconnects to the preserved QEMU and sees the same state.
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("p2")
        assert dom.state() == [CRASHED, CRASHED_PANICKED]
        dom.destroy()
        assert dom.state() == [SHUTOFF, 2]
        nothing_left(root, "p2")
    finally:
        conn.close()


def test_panic_with_on_crash_restart_boots_again(root: Path, guest: tg.Guest) -> None:
    serial = root / "serial.log"
    define(root, _panic_xml("p3", guest, serial, "restart"))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("p3")
        dom.create()
        # The guest panics after every boot; each panic resets it, so the marker comes again.
        wait_for(lambda: serial.read_text(errors="replace").count(tg.READY_MARKER) >= 2, 2 * BOOT_TIMEOUT,
                 "the guest to boot again after its panic")
        assert dom.isActive() == 1
        dom.destroy()
        nothing_left(root, "p3")
    finally:
        conn.close()


def test_panic_with_on_crash_coredump_destroy_writes_a_dump(root: Path, guest: tg.Guest) -> None:
    serial = root / "serial.log"
    define(root, _panic_xml("p4", guest, serial, "coredump-destroy"))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("p4")
        dom.create()
        wait_for(lambda: dom.state() == [SHUTOFF, SHUTOFF_CRASHED], 2 * BOOT_TIMEOUT,
                 "the dump and the stop after the panic")
        dumps = list((root / "lib" / "qemu" / "dump").iterdir())
        assert [d.name.split("-")[:2] for d in dumps] == [["1", "p4"]]
        # An ELF core of the guest's 256 MiB, written through the descriptor pyvirt passed.
        data = dumps[0].read_bytes()
        assert data[:4] == b"\x7fELF" and len(data) > 256 << 20
        assert dumps[0].stat().st_mode & 0o777 == 0o600
        dumps[0].unlink()
        (root / "lib" / "qemu" / "dump").rmdir()
        nothing_left(root, "p4")
    finally:
        conn.close()


def test_kvm_domain_is_refused_where_kvm_is_unusable(root: Path, guest: tg.Guest) -> None:
    from pyvirt.qemu import capabilities

    caps = capabilities.caps_for_binary(root / "cache" / "qemu", "/usr/bin/qemu-system-x86_64",
                                        capabilities.load_all(root / "cache" / "qemu"))
    if caps.kvm.usable:
        pytest.skip("KVM works on this host: nothing to refuse")
    xml = domain_xml("k1", guest, root / "serial.log").replace("<domain type='qemu'>", "<domain type='kvm'>")
    define(root, xml)
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("k1")
        with pytest.raises(PyvirtError) as exc:
            dom.create()
        assert exc.value.code == 67  # VIR_ERR_CONFIG_UNSUPPORTED
        text = str(exc.value)
        assert "requires KVM" in text and caps.kvm.reason in text and "type='qemu'" in text
        assert dom.state() == [SHUTOFF, 0]
        nothing_left(root, "k1")
        # The command line still says what the domain asks for, as libvirt's domxml-to-native does.
        assert " -accel kvm " in conn.domainXMLToNative("qemu-argv", xml)
    finally:
        conn.close()


def test_start_flags_autodestroy_and_unknown(root: Path, guest: tg.Guest) -> None:
    """VIR_DOMAIN_START_AUTODESTROY: the domain dies with the connection that started it (not with
    another one); an unknown flag is refused in libvirt's words and starts nothing."""
    define(root, domain_xml("ad", guest, root / "serial.log"))
    keeper = connection.open(uri_of(root))
    conn = connection.open(uri_of(root))
    try:
        dom = conn.lookupByName("ad")
        with pytest.raises(PyvirtError) as exc:
            dom.createWithFlags(1024)
        assert exc.value.code == 8
        assert "unsupported flags (0x400) in function qemuDomainCreateWithFlags" in str(exc.value)
        assert dom.isActive() == 0
        dom.createWithFlags(connection.VIR_DOMAIN_START_PAUSED | connection.VIR_DOMAIN_START_AUTODESTROY)
        assert keeper.lookupByName("ad").isActive() == 1
    finally:
        conn.close()
    try:
        assert keeper.lookupByName("ad").state() == [SHUTOFF, 2]  # destroyed
        nothing_left(root, "ad")
    finally:
        keeper.close()


def test_guest_suspend_to_ram(root: Path, guest: tg.Guest) -> None:
    """The guest suspends itself to RAM (ACPI S3): state pmsuspended and libvirt's PMSUSPENDED
    event, and a suspended domain can be destroyed. (virDomainPMWakeup sends QEMU's system_wakeup,
    which this guest under TCG does not leave S3 for: QEMU stays "suspended", so waking up, and
    its STARTED/WAKEUP event, are not shown here.)"""
    serial = root / "serial.log"
    define(root, acting_xml("pm", guest, serial, "suspend", ""))
    conn = connection.open(uri_of(root))
    events: list[tuple[int, int]] = []
    try:
        conn.domainEventRegisterAny(None, 0, lambda c, d, e, det, o: events.append((e, det)), None)
        dom = conn.lookupByName("pm")
        with pytest.raises(PyvirtError, match="not running"):
            dom.pMWakeup()
        dom.create()
        wait_for(lambda: dom.state() == [PMSUSPENDED, 0], BOOT_TIMEOUT, "the guest to suspend to RAM")
        conn.driver.events.wait_idle(10)
        assert events[-1] == (7, 0)  # PMSUSPENDED/MEMORY
        with pytest.raises(PyvirtError, match="unsupported flags"):
            dom.pMWakeup(1)
        assert dom.pMWakeup() == 0
        dom.destroy()
        assert dom.state() == [SHUTOFF, 2]
        with pytest.raises(PyvirtError, match="not running"):
            dom.pMWakeup()
        nothing_left(root, "pm")
    finally:
        conn.close()
