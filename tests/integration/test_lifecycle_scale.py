# SPDX-License-Identifier: LGPL-2.1-or-later
"""The lifecycle at scale, in process (pyvirt.connection): many domains, many threads.

Behaviour only, no timings (bench/bench_lifecycle.py measures those):

- 20 paused domains started and destroyed concurrently from 20 threads: no error, nothing left;
- the same domain started (then destroyed) from several threads at once: exactly one start wins,
  the others are refused as already active, and the end state is consistent;
- 1000 defined domains: all listed, each found by name.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lifecycle_support import alive, qemus_of

from pyvirt import connection
from pyvirt.errors import PyvirtError
from pyvirt.testing import guest as tg

THREADS = 20


def domain_xml(name: str, guest: tg.Guest | None, serial: Path | None, memory_mib: int = 64) -> str:
    boot = (f"<kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>"
            f"<cmdline>{guest.cmdline}</cmdline>") if guest is not None else ""
    devices = f"<serial type='file'><source path='{serial}'/></serial>" if serial is not None else ""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type>{boot}</os>
  <devices>{devices}</devices>
</domain>
"""


def qemu_children() -> list[int]:
    """Live QEMU processes started by this test process (a domain without host paths names no
    root on its command line, so qemus_of cannot see it)."""
    me = str(os.getpid()).encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] not in (b"Z", b"X") and b"qemu-system" in cmdline:
            found.append(int(entry))
    return found


def nothing_left(root: Path) -> None:
    assert list((root / "run" / "qemu").glob("*.json")) == []
    assert list((root / "lib" / "qemu").iterdir()) == []
    assert [p for p in qemus_of(root) if alive(p)] == []
    assert qemu_children() == []


@pytest.fixture
def conn(root: Path) -> Iterator[connection.virConnect]:
    c = connection.open(f"qemu:///embed?root={root}")
    try:
        yield c
    finally:
        c.close()


def run_threads(n: int, fn: Callable[[int], None]) -> list[BaseException | None]:
    """Run fn(0..n-1) in n threads released together; each thread's exception, or None."""
    barrier = threading.Barrier(n)
    results: list[BaseException | None] = [None] * n

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            fn(i)
        except BaseException as e:  # noqa: B036 - reported to the test, not swallowed
            results[i] = e

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results


@pytest.mark.slow
def test_concurrent_paused_domains(root: Path, conn: connection.virConnect, guest: tg.Guest) -> None:
    names = [f"c{i:02d}" for i in range(THREADS)]
    for name in names:
        conn.defineXML(domain_xml(name, guest, root / f"{name}.serial"))

    def start(i: int) -> None:
        conn.lookupByName(names[i]).createWithFlags(connection.VIR_DOMAIN_START_PAUSED)

    assert run_threads(THREADS, start) == [None] * THREADS
    for name in names:
        dom = conn.lookupByName(name)
        assert dom.isActive() == 1
        assert dom.state() == [connection.VIR_DOMAIN_PAUSED, 1]  # paused (user)
    assert len([p for p in qemus_of(root) if alive(p)]) == THREADS

    def destroy(i: int) -> None:
        conn.lookupByName(names[i]).destroy()

    assert run_threads(THREADS, destroy) == [None] * THREADS
    for name in names:
        dom = conn.lookupByName(name)
        assert dom.isActive() == 0
        assert dom.state() == [connection.VIR_DOMAIN_SHUTOFF, 2]  # shut off (destroyed)
    nothing_left(root)


@pytest.mark.slow
def test_concurrent_starts_get_distinct_ids(root: Path, conn: connection.virConnect, guest: tg.Guest) -> None:
    n = 8
    names = [f"i{i}" for i in range(n)]
    for name in names:
        conn.defineXML(domain_xml(name, guest, None))
    try:
        assert run_threads(n, lambda i: conn.lookupByName(names[i]).createWithFlags(1)) == [None] * n
        ids = [conn.lookupByName(name).ID() for name in names]
    finally:
        for name in names:
            with contextlib.suppress(PyvirtError):
                conn.lookupByName(name).destroy()
    assert len(set(ids)) == n, f"domain ids clash: {ids}"
    assert all(i > 0 for i in ids)
    nothing_left(root)


@pytest.mark.slow
def test_same_domain_from_many_threads(root: Path, conn: connection.virConnect, guest: tg.Guest) -> None:
    n = 6
    dom = conn.defineXML(domain_xml("same", guest, root / "same.serial"))

    def start(i: int) -> None:
        dom.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)

    results = run_threads(n, start)
    failures = [e for e in results if e is not None]
    assert len(failures) == n - 1, f"{n - len(failures)} of {n} concurrent starts succeeded: {results}"
    for e in failures:
        assert isinstance(e, PyvirtError), repr(e)
        assert "already" in str(e), str(e)
    assert dom.isActive() == 1
    assert dom.state()[0] == connection.VIR_DOMAIN_PAUSED
    assert len([p for p in qemus_of(root) if alive(p)]) == 1
    assert len(list((root / "run" / "qemu").glob("*.json"))) == 1

    def destroy(i: int) -> None:
        dom.destroy()

    results = run_threads(n, destroy)
    failures = [e for e in results if e is not None]
    # Exactly one destroy does the work; the others find the domain stopping or stopped.
    assert len(failures) <= n - 1
    for e in failures:
        assert isinstance(e, PyvirtError) and "not running" in str(e), repr(e)
    assert dom.isActive() == 0
    assert dom.state()[0] == connection.VIR_DOMAIN_SHUTOFF
    nothing_left(root)


def test_thousand_defined_domains(root: Path, conn: connection.virConnect) -> None:
    count = 1000
    names = [f"d{i:04d}" for i in range(count)]
    for name in names:
        conn.defineXML(domain_xml(name, None, None))
    assert conn.listDefinedDomains() == names
    assert conn.numOfDefinedDomains() == count
    for name in names[::97]:
        dom = conn.lookupByName(name)
        assert dom.name() == name and dom.isActive() == 0
        assert conn.lookupByUUIDString(dom.UUIDString()).name() == name
    conn.close()

    # The last connection closed its driver: a new one reads the 1000 definitions back from disk.
    again = connection.open(f"qemu:///embed?root={root}")
    try:
        assert again.listDefinedDomains() == names
        for name in names[::97]:
            assert again.lookupByName(name).UUIDString() != ""
    finally:
        again.close()
