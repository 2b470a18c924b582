# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lookups, listings, transient domains, reboot/reset, autostart and domxml-to-native.

Listings and dominfo of inactive domains are compared with libvirt 9.0's virsh on the same XML;
what needs QEMU runs the real test guest (TCG) or a paused QEMU through pyvirsh processes and the
Python API.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from lifecycle_support import (
    BOOT_TIMEOUT,
    POWEROFF_TIMEOUT,
    alive,
    domain_xml,
    nothing_left,
    pyvirsh,
    qemus_of,
    serial_has,
    status_pid,
    uri_of,
    wait_for,
)

from pyvirt import connection
from pyvirt.errors import PyvirtError
from pyvirt.qemu import proc
from pyvirt.testing import guest as tg

from oracle import LibvirtEmbed

UUID1 = "6d3c1f2a-1b6e-4b7e-9a51-0f6f1c2d3e41"
UUID2 = "6d3c1f2a-1b6e-4b7e-9a51-0f6f1c2d3e42"


def plain_xml(name: str, uuid: str) -> str:
    """A domain that starts without any guest (it is only ever started paused here)."""
    return (f"<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices/></domain>\n")


def write(root: Path, name: str, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(text)
    return path


# --- listings and dominfo against virsh ----------------------------------------------------------

def test_list_virsh(root: Path, libvirt_embed: LibvirtEmbed, tmp_path: Path) -> None:
    files = [write(tmp_path, "a.xml", plain_xml("vm1", UUID1)),
             write(tmp_path, "b.xml", plain_xml("a-longer-name", UUID2))]
    uri = uri_of(root)
    for f in files:
        theirs = libvirt_embed.virsh("define", str(f), check=False)
        assert theirs.returncode == 0, theirs.stderr
        pyvirsh(uri, "define", str(f))
    for args in (["list"], ["list", "--all"], ["list", "--inactive"], ["list", "--all", "--name"],
                 ["list", "--name"], ["dominfo", "vm1"], ["domuuid", "vm1"], ["domname", UUID2]):
        theirs = libvirt_embed.virsh(*args, quiet=False).stdout
        assert pyvirsh(uri, *args).stdout == theirs, args
        # -q drops the table's header, and the columns then fit the rows alone
        theirs = libvirt_embed.virsh(*args, quiet=True).stdout
        assert pyvirsh(uri, "-q", *args).stdout == theirs, args
    with connection.open(uri) as conn, pytest.raises(PyvirtError, match=r"unsupported flags \(0x10000\)"):
        conn.listAllDomains(0x10000)


def test_native_virsh(root: Path, libvirt_embed: LibvirtEmbed, tmp_path: Path) -> None:
    xml = write(tmp_path, "a.xml", plain_xml("vm1", UUID1))
    uri = uri_of(root)
    argv = pyvirsh(uri, "domxml-to-native", "qemu-argv", str(xml)).stdout
    # a pretend start: libvirt's id -1 in the private directory, and nothing created there
    assert f"HOME={root}/lib/qemu/domain--1-vm1 " in argv
    assert "-name guest=vm1,debug-threads=on" in argv and argv.endswith("\n")
    assert list((root / "lib" / "qemu").iterdir()) == []
    for args in (["domxml-to-native", "xen-xm", str(xml)], ["domxml-from-native", "qemu-argv", str(xml)]):
        ours = pyvirsh(uri, *args, check=False)
        theirs = libvirt_embed.virsh(*args, check=False, quiet=False)
        assert (ours.returncode, ours.stdout) == (1, theirs.stdout), args
        # libvirt's words, and pyvirt may add how to fix it
        ours_lines, their_lines = ours.stderr.splitlines(), theirs.stderr.splitlines()
        assert len(ours_lines) == len(their_lines), args
        assert all(o.startswith(t) for o, t in zip(ours_lines, their_lines, strict=True)), args


# --- lookups and listings with running and transient domains -------------------------------------

@pytest.mark.slow
def test_lookups_and_listing_flags(root: Path) -> None:
    c = connection
    uri = uri_of(root)

    def names(conn: c.virConnect, flags: int) -> list[str]:
        return sorted(d.name() for d in conn.listAllDomains(flags))

    with c.open(uri) as conn:
        vm1 = conn.defineXML(plain_xml("vm1", UUID1))
        conn.defineXML(plain_xml("vm2", UUID2))
        assert conn.listDomainsID() == [] and conn.numOfDomains() == 0
        assert conn.listDefinedDomains() == ["vm1", "vm2"] and conn.numOfDefinedDomains() == 2
        vm1.createWithFlags(c.VIR_DOMAIN_START_PAUSED)
        assert conn.listDomainsID() == [1] and conn.numOfDomains() == 1
        # listDefinedDomains lists inactive domains only, as libvirt
        assert conn.listDefinedDomains() == ["vm2"] and conn.numOfDefinedDomains() == 1
        assert conn.lookupByID(1).name() == "vm1"
        with pytest.raises(PyvirtError, match="no domain with matching id 7$"):
            conn.lookupByID(7)

        transient = conn.createXML(plain_xml("tr1", "6d3c1f2a-1b6e-4b7e-9a51-0f6f1c2d3e43"),
                                   c.VIR_DOMAIN_START_PAUSED)
        assert transient.ID() == 2 and transient.isPersistent() == 0 and transient.isActive() == 1
        assert conn.lookupByUUID(transient.UUID()).name() == "tr1"
        assert names(conn, 0) == ["tr1", "vm1", "vm2"]
        assert names(conn, c.VIR_CONNECT_LIST_DOMAINS_ACTIVE) == ["tr1", "vm1"]
        assert names(conn, c.VIR_CONNECT_LIST_DOMAINS_INACTIVE) == ["vm2"]
        assert names(conn, c.VIR_CONNECT_LIST_DOMAINS_PERSISTENT) == ["vm1", "vm2"]
        assert names(conn, c.VIR_CONNECT_LIST_DOMAINS_TRANSIENT) == ["tr1"]
        assert names(conn, c.VIR_CONNECT_LIST_DOMAINS_PAUSED) == ["tr1", "vm1"]
        assert names(conn, c.VIR_CONNECT_LIST_DOMAINS_RUNNING) == []
        active_persistent = c.VIR_CONNECT_LIST_DOMAINS_ACTIVE | c.VIR_CONNECT_LIST_DOMAINS_PERSISTENT
        assert names(conn, active_persistent) == ["vm1"]
        with pytest.raises(PyvirtError, match="already exists"):
            conn.createXML(plain_xml("vm2", "6d3c1f2a-1b6e-4b7e-9a51-0f6f1c2d3e44"), 0)
        with pytest.raises(PyvirtError, match="transient"):
            transient.setAutostart(1)

    # Another process sees the same through pyvirsh (and adopts the transient domain): numbers
    # resolve as ids first.
    assert pyvirsh(uri, "list", "--all").stdout == (
        " Id   Name   State\n-----------------------\n 1    vm1    paused\n 2    tr1    paused\n"
        " -    vm2    shut off\n\n")
    assert pyvirsh(uri, "list", "--transient", "--name").stdout == "tr1\n\n"
    assert pyvirsh(uri, "domname", "2").stdout == "tr1\n\n"
    info = pyvirsh(uri, "dominfo", "2").stdout
    assert info.startswith("Id:             2\nName:           tr1\n")
    assert "\nCPU time:       " in info and "\nPersistent:     no\n" in info

    # A stopped transient domain is gone from every listing and lookup.
    assert pyvirsh(uri, "destroy", "tr1").stdout == "Domain 'tr1' destroyed\n\n"
    assert pyvirsh(uri, "list", "--all", "--name").stdout == "vm1\nvm2\n\n"
    assert not (root / "run" / "qemu" / "tr1.shutoff").exists()
    gone = pyvirsh(uri, "dominfo", "tr1", check=False)
    assert gone.returncode == 1 and "failed to get domain 'tr1'" in gone.stderr

    # Undefining a running domain leaves it running as a transient one, as in libvirt.
    assert pyvirsh(uri, "undefine", "vm1").stdout == "Domain 'vm1' has been undefined\n\n"
    assert pyvirsh(uri, "list", "--transient", "--name").stdout == "vm1\n\n"
    assert pyvirsh(uri, "destroy", "vm1").stdout == "Domain 'vm1' destroyed\n\n"
    assert pyvirsh(uri, "list", "--all", "--name").stdout == "vm2\n\n"


# --- the guest: transient create, reboot, reset, autostart ---------------------------------------

@pytest.mark.slow
def test_create_reboot_reset(root: Path, guest: tg.Guest) -> None:
    uri = uri_of(root)
    serial = root / "serial.log"
    xml = write(root, "tr.xml", domain_xml("tr", guest, serial))
    assert pyvirsh(uri, "create", str(xml)).stdout == f"Domain 'tr' created from {xml}\n\n"
    assert pyvirsh(uri, "dominfo", "tr").stdout.count("Persistent:     no\n") == 1
    wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")
    pid = status_pid(root, "tr")

    def markers() -> int:
        return serial.read_bytes().count(tg.READY_MARKER.encode())

    # reboot: the ACPI power button, and a fake reboot when the guest powers off. Nobody holds the
    # monitor meanwhile: the domstate calls reconnect and finish the reboot.
    assert pyvirsh(uri, "reboot", "tr").stdout == "Domain 'tr' is being rebooted\n\n"
    wait_for(lambda: serial_has(serial, tg.POWEROFF_MARKER), POWEROFF_TIMEOUT, "the guest's poweroff")
    wait_for(lambda: pyvirsh(uri, "domstate", "--reason", "tr").stdout == "running (booted)\n\n"
             and markers() == 2, BOOT_TIMEOUT, "the guest to boot again")
    assert status_pid(root, "tr") == pid and pid is not None and alive(pid)

    # reset: at once, without the guest's help
    assert pyvirsh(uri, "reset", "tr").stdout == "Domain 'tr' was reset\n\n"
    wait_for(lambda: markers() == 3, BOOT_TIMEOUT, "the guest to boot after the reset")
    assert status_pid(root, "tr") == pid

    # a transient domain that powers off is gone
    assert pyvirsh(uri, "shutdown", "tr").stdout == "Domain 'tr' is being shutdown\n\n"
    wait_for(lambda: pyvirsh(uri, "list", "--all", "--name").stdout == "\n", POWEROFF_TIMEOUT,
             "the transient domain to vanish")
    nothing_left(root, "tr")


# A process that reboots the guest and holds the monitor when it powers off, so that it finishes the
# reboot (reset, then cont) itself; it dies by os._exit (code 3) before or after the cont, or closes
# its connection while the reboot is under way.
_REBOOTS = """
import os, sys, threading, time
import pyvirt
from pyvirt.qemu import process

uri, how = sys.argv[1:]
resume = process._resume
midway = threading.Event()
def patched(rd, reason):
    if how == "after-cont":
        resume(rd, reason)
    if how != "close-midway":
        os._exit(3)
    midway.set()
    time.sleep(0.5)
    resume(rd, reason)
process._resume = patched
conn = pyvirt.open(uri)
conn.lookupByName("tr").reboot(0)
if not midway.wait(60):
    sys.exit(1)
conn.close()
"""


def _status(root: Path, name: str) -> dict[str, object]:
    from pyvirt.qemu.process import STATUS_FORMAT

    data = proc.read_status(root / "run" / "qemu" / f"{name}.json", STATUS_FORMAT)
    return {k: data.get(k) for k in ("state", "reason", "fake_reboot", "resetting")}


@pytest.mark.slow
def test_reboot_finished_whatever_the_process_does(root: Path, guest: tg.Guest) -> None:
    """The process holding the monitor when the guest powers off for its reboot finishes it.
    If it closes its connection meanwhile, the close waits for the reboot. If it dies between the
    reset and the cont (a short-lived pyvirsh), or before it recorded the guest running again,
    the next process to reconnect finishes what is left: the guest does not stay paused, and the
    reboot does not linger to turn a later power-off into a reboot."""
    import sys

    uri = uri_of(root)
    serial = root / "serial.log"
    xml = write(root, "tr.xml", domain_xml("tr", guest, serial))
    pyvirsh(uri, "create", str(xml))
    wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")

    def markers() -> int:
        return serial.read_bytes().count(tg.READY_MARKER.encode())

    def booted() -> bool:
        return pyvirsh(uri, "domstate", "--reason", "tr").stdout == "running (booted)\n\n"

    def reboot(how: str) -> int:
        return subprocess.run([sys.executable, "-c", _REBOOTS, uri, how], timeout=120).returncode

    # Closed midway: QEMU runs the guest again with no other process reconnecting.
    assert reboot("close-midway") == 0
    wait_for(lambda: markers() == 2, BOOT_TIMEOUT, "the guest to boot again")
    assert _status(root, "tr") == {"state": connection.VIR_DOMAIN_RUNNING, "reason": 1,
                                   "fake_reboot": False, "resetting": False}

    for boots, how in enumerate(("before-cont", "after-cont"), start=3):
        assert reboot(how) == 3, how  # it died in the midst of the reboot
        wait_for(lambda boots=boots: booted() and markers() == boots, BOOT_TIMEOUT,
                 f"the guest to boot again ({how})")

    # The reboot is over: a power-off now stops the domain (transient: it is gone).
    assert pyvirsh(uri, "shutdown", "tr").stdout == "Domain 'tr' is being shutdown\n\n"
    wait_for(lambda: pyvirsh(uri, "list", "--all", "--name").stdout == "\n", POWEROFF_TIMEOUT,
             "the transient domain to vanish")
    assert markers() == 4
    nothing_left(root, "tr")


@pytest.mark.slow
def test_reboot_in_one_process(root: Path, guest: tg.Guest) -> None:
    """With the monitor held, the SHUTDOWN event itself turns into the reset."""
    serial = root / "serial.log"
    with connection.open(uri_of(root)) as conn:
        dom = conn.defineXML(domain_xml("vm", guest, serial))
        dom.create()
        wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")
        dom.reboot(0)
        wait_for(lambda: serial.read_bytes().count(tg.READY_MARKER.encode()) == 2, BOOT_TIMEOUT * 2,
                 "the guest to boot again")
        assert dom.state() == [connection.VIR_DOMAIN_RUNNING, 1]
        dom.destroy()


@pytest.mark.slow
def test_autostart(root: Path, tmp_path: Path) -> None:
    uri = uri_of(root)
    pyvirsh(uri, "define", str(write(tmp_path, "a.xml", plain_xml("vm1", UUID1))))
    assert pyvirsh(uri, "autostart", "vm1").stdout == "Domain 'vm1' marked as autostarted\n\n"
    link = root / "etc" / "qemu" / "autostart" / "vm1.xml"
    assert link.is_symlink() and link.resolve() == root / "etc" / "qemu" / "vm1.xml"
    assert "Autostart:      enable\n" in pyvirsh(uri, "dominfo", "vm1").stdout
    assert pyvirsh(uri, "list", "--all", "--autostart", "--name").stdout == "vm1\n\n"

    # Autostart happens once per host boot, as libvirt's: the first open of this root already
    # happened, so only a new boot (its run directory's marker gone) starts the domain.
    assert pyvirsh(uri, "list", "--name").stdout == "\n"
    (root / "run" / "qemu" / "autostarted").unlink()
    assert pyvirsh(uri, "list").stdout == (" Id   Name   State\n----------------------\n"
                                           " 1    vm1    running\n\n")
    # destroyed on purpose, it stays off
    pyvirsh(uri, "destroy", "vm1")
    assert pyvirsh(uri, "list", "--name").stdout == "\n"

    assert pyvirsh(uri, "autostart", "--disable", "vm1").stdout == "Domain 'vm1' unmarked as autostarted\n\n"
    assert not link.exists() and not link.is_symlink()
    # transient domains cannot autostart; undefine drops the mark
    pyvirsh(uri, "autostart", "vm1")
    pyvirsh(uri, "undefine", "vm1")
    assert not link.is_symlink()


@pytest.mark.slow
def test_on_poweroff_restart(root: Path, guest: tg.Guest) -> None:
    """<on_poweroff>restart</on_poweroff>: a guest power-off boots the guest again in the same QEMU."""
    uri = uri_of(root)
    serial = root / "serial.log"
    xml = domain_xml("vm", guest, serial).replace("<devices>", "<on_poweroff>restart</on_poweroff><devices>")
    pyvirsh(uri, "define", str(write(root, "vm.xml", xml)))
    pyvirsh(uri, "start", "vm")
    wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")
    pid = status_pid(root, "vm")
    pyvirsh(uri, "shutdown", "vm")
    wait_for(lambda: serial_has(serial, tg.POWEROFF_MARKER), POWEROFF_TIMEOUT, "the guest's poweroff")
    wait_for(lambda: pyvirsh(uri, "domstate", "vm").stdout == "running\n\n"
             and serial.read_bytes().count(tg.READY_MARKER.encode()) == 2, BOOT_TIMEOUT, "a second boot")
    assert status_pid(root, "vm") == pid
    pyvirsh(uri, "destroy", "vm")
    nothing_left(root, "vm")


def test_create_over_an_inactive_definition_virsh(root: Path, libvirt_embed: LibvirtEmbed,
                                                  tmp_path: Path) -> None:
    """createXML with the name and UUID of a defined, inactive domain starts that domain with the
    given XML as its live definition and keeps the stored one (libvirt's virDomainObjListAdd);
    the other overlaps are refused with libvirt's texts."""
    uri = uri_of(root)
    small = write(tmp_path, "a.xml", plain_xml("vm1", UUID1))
    big = write(tmp_path, "b.xml", plain_xml("vm1", UUID1).replace("64</memory>", "96</memory>"))
    other_uuid = write(tmp_path, "c.xml", plain_xml("vm1", UUID2))
    other_name = write(tmp_path, "d.xml", plain_xml("vm9", UUID1))

    def both(*args: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        theirs = libvirt_embed.virsh(*args, check=False, quiet=False)
        for _ in range(4):
            # virsh 9.0's embedded driver sometimes dies of SIGSEGV on its way out while a domain
            # runs; the steps repeated here are lookups and refused creates, which change nothing.
            if theirs.returncode != -11 or args[0] not in ("create", "dominfo", "dumpxml"):
                break
            theirs = libvirt_embed.virsh(*args, check=False, quiet=False)
        return pyvirsh(uri, *args, check=False), theirs

    def errors(p: subprocess.CompletedProcess[str]) -> list[str]:
        return [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]

    def memory(*flags: str) -> tuple[str, str]:
        ours, theirs = both("dumpxml", *flags, "vm1")
        return (re.search(r"<memory unit='KiB'>(\d+)<", ours.stdout).group(1),  # type: ignore[union-attr]
                re.search(r"<memory unit='KiB'>(\d+)<", theirs.stdout).group(1))  # type: ignore[union-attr]

    try:
        for args in (["define", str(small)], ["create", "--paused", str(big)]):
            ours, theirs = both(*args)
            assert (ours.returncode, theirs.returncode) == (0, 0), (args, ours.stderr, theirs.stderr)
        ours, theirs = both("dominfo", "vm1")
        for field in ("State:", "Persistent:", "Max memory:"):
            line = next(ln for ln in theirs.stdout.splitlines() if ln.startswith(field))
            assert line in ours.stdout.splitlines(), field
        assert "Persistent:     yes" in ours.stdout
        assert memory() == ("98304", "98304")                  # live: the created XML
        assert memory("--inactive") == ("65536", "65536")      # stored: the definition
        for path in (big, other_uuid, other_name):
            ours, theirs = both("create", "--paused", str(path))
            assert (ours.returncode, theirs.returncode) == (1, 1), path.name
            assert errors(ours) == errors(theirs), path.name
        # (libvirt's side stops here: a fresh embedded virsh refuses to destroy while its driver is
        # still reconnecting the domain, "domain is not running".)
        pyvirsh(uri, "destroy", "vm1")
        assert pyvirsh(uri, "domstate", "vm1").stdout == "shut off\n\n"
        assert "<memory unit='KiB'>65536<" in pyvirsh(uri, "dumpxml", "vm1").stdout  # the definition again
    finally:
        pyvirsh(uri, "destroy", "vm1", check=False)
        for pid in qemus_of(libvirt_embed.root):
            os.kill(pid, signal.SIGKILL)
