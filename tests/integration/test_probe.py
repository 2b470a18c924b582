# SPDX-License-Identifier: LGPL-2.1-or-later
"""Probing real QEMU emulators over QMP, the KVM test, the cache with real binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from pyvirt.errors import OperationFailed
from pyvirt.qemu import capabilities as qc
from pyvirt.qemu import caps_xml, kvm, probe

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"


_BEFORE: set[int] = set()


@pytest.fixture(autouse=True)
def _children_before() -> None:
    # Session fixtures of other test modules (a private libvirtd...) may run as children of this
    # worker; only what a test here leaves behind counts.
    _BEFORE.clear()
    _BEFORE.update(_live_children())


def children() -> set[int]:
    """Live child processes of this test process started during the current test."""
    return _live_children() - _BEFORE


def _live_children() -> set[int]:
    """Live (not zombie) child processes of this test process."""
    me = str(os.getpid())
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.add(int(pid))
    return found


def wrapper(d: Path, name: str, log: Path, body: str | None = None) -> Path:
    """A qemu-system-* on a private PATH that logs each run, then runs the real QEMU."""
    path = d / name
    path.write_text(body or f'#!/bin/sh\necho "$*" >> {log}\nexec {QEMU} "$@"\n')
    path.chmod(0o755)
    return path


def test_probe_real_emulator() -> None:
    answers = asyncio.run(probe.probe_binary(QEMU))
    assert set(answers) == {name for name, _ in probe.COMMANDS}
    caps = qc.QemuCaps.from_probe(QEMU, answers)
    assert caps.target == "x86_64" and caps.arch == "x86_64"
    assert caps.version >= 7000000
    default = caps.default_machine()
    assert default is not None and default.alias == "pc"
    assert caps.find_machine("q35") is not None
    assert {"qemu64", "max"} <= {m.name for m in caps.cpu_models}
    assert qc.QemuCapsFlag.TCG in caps.flags and caps.probe_accel == "tcg"
    assert caps.display_types and "none" in caps.display_types
    assert not children()


def test_probe_failure_names_binary_and_qemu_message(tmp_path: Path) -> None:
    bad = tmp_path / "qemu-system-bad"
    bad.write_text("#!/bin/sh\necho 'qemu-system-bad: something is broken' >&2\nexit 1\n")
    bad.chmod(0o755)
    with pytest.raises(OperationFailed) as err:
        asyncio.run(probe.probe_binary(str(bad)))
    assert str(bad) in str(err.value) and "something is broken" in str(err.value)
    assert not children()


def test_probe_timeout_kills_the_emulator(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    hang = tmp_path / "qemu-system-hang"
    hang.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
    hang.chmod(0o755)
    with pytest.raises(OperationFailed, match="did not answer"):
        asyncio.run(probe.probe_binary(str(hang), timeout=0.5))
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
    assert not children()


def test_kvm_test_payload_completes_under_tcg() -> None:
    # The payload itself must work, so that a KVM verdict of "unusable" is about KVM.
    usable, reason = asyncio.run(kvm.test_usable(QEMU, "pc", accel="tcg", run_deadline=10))
    assert usable, reason
    assert not children()


def test_kvm_test_reports_a_broken_emulator(tmp_path: Path) -> None:
    log = tmp_path / "log"
    broken = wrapper(tmp_path, "qemu-system-x86_64", log,
                     "#!/bin/sh\necho 'error: failed to set MSR 0x10a to 0x0' >&2\nkill -ABRT $$\n")
    usable, reason = asyncio.run(kvm.test_usable(str(broken), "pc"))
    assert not usable and "failed to set MSR 0x10a" in reason


def test_kvm_verdict_on_this_host(tmp_path: Path) -> None:
    caps = qc.load_all(tmp_path / "cache")
    x86 = next(c for c in caps if c.binary == QEMU)
    assert x86.kvm.present == (os.path.exists("/dev/kvm") and qc.QemuCapsFlag.KVM in x86.flags)
    assert x86.kvm.reason
    if not x86.kvm.usable:
        # a KVM that cannot run guests is never offered
        text = caps_xml.capabilities_xml(tmp_path / "cache", [])
        assert "<domain type='kvm'/>" not in text


def test_discovery_on_path_and_ctime_invalidation(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "runs"
    foo = wrapper(bindir, "qemu-system-foo", log)
    cache = tmp_path / "cache"

    def probes() -> int:
        return sum("-machine none" in line for line in log.read_text().splitlines()) if log.exists() else 0

    caps = qc.load_all(cache, search_path=str(bindir))
    assert [(c.binary, c.arch) for c in caps] == [(str(foo), "x86_64")]
    assert probes() == 1
    qc.load_all(cache, search_path=str(bindir))
    assert probes() == 1  # warm
    os.chmod(foo, 0o775)  # ctime only
    qc.load_all(cache, search_path=str(bindir))
    assert probes() == 2
    st = foo.stat()
    os.utime(foo, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # mtime
    qc.load_all(cache, search_path=str(bindir))
    assert probes() == 3
    assert not children()


@pytest.mark.slow
def test_cold_probe_then_warm_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Speed is measured by bench/bench_capabilities.py against libvirt; here only behaviour.
    caps = qc.probe_all(tmp_path / "cache")
    assert {"i686", "x86_64"} <= {c.arch for c in caps}
    assert not children()

    def no_probe(*args: object, **kwargs: object) -> None:
        raise AssertionError("a warm read launched QEMU")

    monkeypatch.setattr(probe, "probe_binary", no_probe)
    assert qc.load_all(tmp_path / "cache") == caps
    assert not list((tmp_path / "cache" / "capabilities").glob("*.tmp"))
