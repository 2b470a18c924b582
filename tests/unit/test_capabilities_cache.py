# SPDX-License-Identifier: LGPL-2.1-or-later
"""The per-binary capability cache, discovery and the QEMU policy, with a fake probe (no QEMU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pyvirt.errors import OperationFailed, PyvirtError
from pyvirt.qemu import capabilities as qc
from pyvirt.qemu import caps_xml, kvm, probe


def answers(target: str = "x86_64", micro: int = 22, *, kvm_accel: bool = True) -> dict[str, Any]:
    types = [{"name": n} for n in ("tcg-accel", "iothread", "virtio-blk-pci", "VGA", "rng-random",
                                   "virtio-rng-pci", "memory-backend-memfd", "isa-debugcon",
                                   "isa-debug-exit")]
    if kvm_accel:
        types.append({"name": "kvm-accel"})
    return {
        "query-version": {"qemu": {"major": 7, "minor": 2, "micro": micro}, "package": "test"},
        "query-target": {"arch": target},
        "query-kvm": {"enabled": False, "present": kvm_accel},
        "query-commands": [{"name": "query-cpu-model-expansion"}],
        "query-machines": [
            {"name": "pc-q35-7.2", "alias": "q35", "cpu-max": 288, "deprecated": False},
            {"name": "none", "cpu-max": 1},
            {"name": "pc-i440fx-7.2", "alias": "pc", "is-default": True, "cpu-max": 255},
            {"name": "pc-i440fx-1.4", "cpu-max": 255, "deprecated": True},
        ],
        "query-cpu-definitions": [
            {"name": "qemu64", "typename": "qemu64-x86_64-cpu", "unavailable-features": [],
             "alias-of": "qemu64-v1"},
            {"name": "qemu64-v1", "typename": "qemu64-v1-x86_64-cpu", "unavailable-features": []},
            {"name": "Broadwell", "typename": "Broadwell-x86_64-cpu", "unavailable-features": ["hle"]},
            {"name": "max", "typename": "max-x86_64-cpu", "unavailable-features": []},
        ],
        "qom-list-types": types,
        "query-tpm-models": {"error": {"class": "CommandNotFound"}},
        "query-tpm-types": [],
        "query-command-line-options": [{"option": "vnc"}],
        "query-qmp-schema": [{"name": "390", "meta-type": "enum",
                              "members": [{"name": n} for n in ("default", "none", "sdl", "egl-headless")]}],
    }


class FakeQemu:
    """Stands in for probe.probe_binary and kvm.test_usable; counts the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, kvm_usable: bool = False) -> None:
        self.probes: list[str] = []
        self.kvm_tests: list[str] = []
        self.kvm_usable = kvm_usable
        self.fail: set[str] = set()
        monkeypatch.setattr(probe, "probe_binary", self.probe_binary)
        monkeypatch.setattr(kvm, "test_usable", self.test_usable)
        monkeypatch.setattr(qc, "absent_reason", lambda: None)

    async def probe_binary(self, binary: str, **_: Any) -> dict[str, Any]:
        self.probes.append(binary)
        if os.path.basename(binary) in self.fail:
            raise OperationFailed(f"emulator {binary} failed its capability probe: boom")
        target = "i386" if binary.endswith("i386") else "x86_64"
        micro = int(Path(binary).read_text().split("micro=")[1].split()[0])
        return answers(target, micro)

    async def test_usable(self, binary: str, machine: str, **_: Any) -> tuple[bool, str]:
        self.kvm_tests.append(binary)
        return self.kvm_usable, f"fake verdict for {machine}"


def make_binary(d: Path, name: str, micro: int = 22) -> Path:
    path = d / name
    path.write_text(f"#!/bin/sh\n# micro={micro} \n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    make_binary(d, "qemu-system-x86_64")
    make_binary(d, "qemu-system-i386")
    make_binary(d, "qemu-img")  # not an emulator
    return d


def test_discovery_names_and_search_order(tmp_path: Path, bindir: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_binary(other, "qemu-system-x86_64")  # shadowed by bindir, first in the path
    make_binary(other, "qemu-kvm")
    make_binary(other, "qemu")
    (other / "qemu-system-").write_text("")  # no target: ignored
    os.symlink(bindir / "qemu-system-i386", other / "qemu-system-i386-link")  # same file twice
    (other / "qemu-system-noexec").write_text("")
    found = [e.path for e in qc.find_emulators(f"{bindir}{os.pathsep}{other}")]
    assert found == [str(bindir / "qemu-system-i386"), str(bindir / "qemu-system-x86_64"),
                     str(other / "qemu"), str(other / "qemu-kvm")]


def test_cold_then_warm(tmp_path: Path, bindir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQemu(monkeypatch)
    cache = tmp_path / "cache"
    caps = qc.load_all(cache, search_path=str(bindir))
    assert sorted(c.arch for c in caps) == ["i686", "x86_64"]
    assert len(fake.probes) == 2 and len(fake.kvm_tests) == 2
    files = sorted(p.name for p in (cache / "capabilities").iterdir() if p.name != "dirs.json")
    assert all(f.endswith(".json") for f in files) and len(files) == 2  # no temporary left behind
    again = qc.load_all(cache, search_path=str(bindir))
    assert len(fake.probes) == 2 and len(fake.kvm_tests) == 2  # warm: nothing ran
    assert again == caps
    x86 = next(c for c in again if c.arch == "x86_64")
    assert x86.version == 7002022
    assert x86.default_machine() is not None and x86.default_machine().name == "pc-i440fx-7.2"  # type: ignore
    assert qc.QemuCapsFlag.SDL in x86.flags and qc.QemuCapsFlag.VNC in x86.flags
    assert qc.QemuCapsFlag.SPICE not in x86.flags
    assert x86.kvm == kvm.KvmStatus(True, False, "fake verdict for pc")  # tested early, with "pc"


def test_changed_binary_is_probed_again(tmp_path: Path, bindir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQemu(monkeypatch)
    cache = tmp_path / "cache"
    qc.load_all(cache, search_path=str(bindir))
    make_binary(bindir, "qemu-system-x86_64", micro=23)  # new contents and mtime
    caps = qc.load_all(cache, search_path=str(bindir))
    assert fake.probes[2:] == [str(bindir / "qemu-system-x86_64")]
    assert next(c for c in caps if c.arch == "x86_64").version == 7002023
    # only the ctime changes (chmod): the identity changes too
    os.chmod(bindir / "qemu-system-i386", 0o775)
    qc.load_all(cache, search_path=str(bindir))
    assert fake.probes[3:] == [str(bindir / "qemu-system-i386")]


@pytest.mark.parametrize("damage", ["garbage{", "", '{"format": 0}', '{"format": 1, "identity": 3}', "[]"])
def test_corrupt_cache_is_probed_again(tmp_path: Path, bindir: Path, monkeypatch: pytest.MonkeyPatch,
                                       damage: str) -> None:
    fake = FakeQemu(monkeypatch)
    cache = tmp_path / "cache"
    qc.load_all(cache, search_path=str(bindir))
    for f in (cache / "capabilities").iterdir():
        f.write_text(damage)
    caps = qc.load_all(cache, search_path=str(bindir))
    assert len(caps) == 2 and len(fake.probes) == 4


def test_cache_format_version_mismatch_reprobes(tmp_path: Path, bindir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQemu(monkeypatch)
    cache = tmp_path / "cache"
    qc.load_all(cache, search_path=str(bindir))
    monkeypatch.setattr(qc, "CACHE_FORMAT", qc.CACHE_FORMAT + 1)
    qc.load_all(cache, search_path=str(bindir))
    assert len(fake.probes) == 4


def test_new_boot_retests_kvm_only(tmp_path: Path, bindir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQemu(monkeypatch)
    cache = tmp_path / "cache"
    qc.load_all(cache, search_path=str(bindir))
    monkeypatch.setattr(kvm, "boot_id", lambda: "another-boot")
    qc.load_all(cache, search_path=str(bindir))
    assert len(fake.probes) == 2 and len(fake.kvm_tests) == 4


def test_probe_failure_is_reported_and_remembered(tmp_path: Path, bindir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQemu(monkeypatch)
    fake.fail.add("qemu-system-i386")
    cache = tmp_path / "cache"
    caps = qc.load_all(cache, search_path=str(bindir))
    assert [c.arch for c in caps] == ["x86_64"]
    errors = qc.probe_errors(cache, search_path=str(bindir))
    i386 = str(bindir / "qemu-system-i386")
    assert list(errors) == [i386] and "boom" in errors[i386]
    assert len(fake.probes) == 2  # remembered for this boot


def test_unwritable_cache_names_the_file(tmp_path: Path, bindir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    FakeQemu(monkeypatch)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(OperationFailed, match="capability cache"):
        qc.load_all(blocker, search_path=str(bindir))


# -- the QEMU policy (caps_xml) over fake probes ------------------------------------------------


@pytest.fixture
def fake_env(tmp_path: Path, bindir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, FakeQemu]:
    fake = FakeQemu(monkeypatch)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(qc, "SEARCH_DIRS_FIRST", ())
    return tmp_path / "cache", fake


def test_guests_machines_and_domain_types(fake_env: tuple[Path, FakeQemu]) -> None:
    cache, _ = fake_env
    caps = caps_xml.get_capabilities(cache, [("none", "0", {})])
    assert [(g.arch, g.wordsize, g.domains) for g in caps.guests] == [("i686", 32, ["qemu"]),
                                                                      ("x86_64", 64, ["qemu"])]
    machines = [(m.name, m.canonical, m.max_cpus, m.deprecated) for m in caps.guests[1].machines]
    assert machines == [("pc-i440fx-7.2", None, 255, False), ("pc", "pc-i440fx-7.2", 255, False),
                        ("pc-q35-7.2", None, 288, False), ("q35", "pc-q35-7.2", 288, False),
                        ("pc-i440fx-1.4", None, 255, True)]
    assert [f.name for f in caps.guests[0].features][:2] == ["pae", "nonpae"]


def test_kvm_offered_only_when_usable(tmp_path: Path, bindir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    FakeQemu(monkeypatch, kvm_usable=True)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.setattr(qc, "SEARCH_DIRS_FIRST", ())
    monkeypatch.setattr(caps_xml, "_host_arch", lambda: "x86_64")
    caps = caps_xml.get_capabilities(tmp_path / "cache", [])
    assert [g.domains for g in caps.guests] == [["qemu", "kvm"], ["qemu", "kvm"]]
    assert caps_xml.domain_capabilities(tmp_path / "cache").domain == "kvm"


def test_domain_capabilities_defaults_and_models(fake_env: tuple[Path, FakeQemu],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cache, _ = fake_env
    monkeypatch.setattr(caps_xml, "_host_arch", lambda: "x86_64")
    dc = caps_xml.domain_capabilities(cache)
    assert (dc.arch, dc.domain, dc.machine, dc.vcpu_max) == ("x86_64", "qemu", "pc-i440fx-7.2", 255)
    assert dc.cpu is not None
    assert [(m.name, m.usable, m.vendor) for m in dc.cpu.custom_models] == [
        ("qemu64", "yes", "unknown"), ("Broadwell", "no", "Intel")]
    q35 = caps_xml.domain_capabilities(cache, machine="q35")
    assert (q35.machine, q35.vcpu_max) == ("pc-q35-7.2", 288)
    i686 = caps_xml.domain_capabilities(cache, arch="i686")
    assert i686.path.endswith("qemu-system-i386")


@pytest.mark.parametrize("kwargs, words", [
    ({"arch": "sparc64"}, ["sparc64", "i686", "x86_64"]),
    ({"machine": "pc-nope"}, ["pc-nope", "pc-q35-7.2", "q35"]),
    ({"virttype": "kvm"}, ["KVM", "fake verdict", "qemu"]),
    ({"virttype": "xen"}, ["xen", "qemu, kvm"]),
    ({"emulatorbin": "/nonexistent/qemu"}, ["/nonexistent/qemu", "qemu-system-x86_64"]),
    ({"emulatorbin": "relative/qemu"}, ["relative/qemu", "absolute"]),
])
def test_domain_capabilities_bad_values(fake_env: tuple[Path, FakeQemu], monkeypatch: pytest.MonkeyPatch,
                                        kwargs: dict[str, str], words: list[str]) -> None:
    cache, _ = fake_env
    monkeypatch.setattr(caps_xml, "_host_arch", lambda: "x86_64")
    with pytest.raises(PyvirtError) as err:
        caps_xml.domain_capabilities(cache, **kwargs)  # type: ignore[arg-type]
    assert err.value.get_error_code() == 8  # VIR_ERR_INVALID_ARG
    for w in words:
        assert w in str(err.value)


def test_hypervisor_version(fake_env: tuple[Path, FakeQemu]) -> None:
    cache, _ = fake_env
    assert qc.hypervisor_version(cache) == 7002022


def test_warm_path_imports_nothing_heavy(fake_env: tuple[Path, FakeQemu]) -> None:
    cache, _ = fake_env
    caps_xml.capabilities_xml(cache, [])  # fill the cache (fake probe)
    code = ("import sys; from pyvirt.qemu import caps_xml, capabilities as qc; qc.SEARCH_DIRS_FIRST = ();"
            f"caps_xml.capabilities_xml({str(cache)!r}, []); qc.hypervisor_version({str(cache)!r});"
            "heavy = ('asyncio', 'lxml', 'qemu', 'qemu.qmp', 'pyvirt.qemu.probe');"
            "bad = [m for m in heavy if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": os.environ["PATH"]})
    assert out.stdout.strip() == ""


def test_from_probe_requires_version_and_target() -> None:
    bad = answers()
    bad["query-target"] = {"error": {"class": "CommandNotFound"}}
    with pytest.raises(OperationFailed, match="version and target"):
        qc.QemuCaps.from_probe("/usr/bin/qemu-x", bad)


def test_flags_are_append_only_strings() -> None:
    values = [f.value for f in qc.QemuCapsFlag]
    assert len(values) == len(set(values))
    # renaming a value would orphan caches and status files: these must keep their spelling
    assert qc.QemuCapsFlag.KVM.value == "kvm" and qc.QemuCapsFlag.IOTHREAD.value == "iothread"
    cached = json.loads(json.dumps(qc.QemuCaps.from_probe("/b", answers()).to_json()))
    cached["flags"].append("a-flag-from-the-future")
    assert qc.QemuCapsFlag.TCG in qc.QemuCaps.from_json(cached, kvm.KvmStatus(False, False, "")).flags


def test_directory_listing_is_remembered_until_the_directory_changes(
        tmp_path: Path, bindir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qc, "_RACY_NS", -(10**18))  # trust even a just-modified directory
    cache = tmp_path / "cache"
    assert len(qc.find_emulators(str(bindir), cache_dir=cache)) == 2
    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda d: listed.append(d) or real_listdir(d))
    assert len(qc.find_emulators(str(bindir), cache_dir=cache)) == 2
    assert listed == []  # served from the remembered listing
    st = bindir.stat()
    make_binary(bindir, "qemu-system-ppc")
    os.utime(bindir, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # whatever the clock's granularity
    found = [e.path for e in qc.find_emulators(str(bindir), cache_dir=cache)]
    assert listed == [str(bindir)] and str(bindir / "qemu-system-ppc") in found
    (cache / "capabilities" / "dirs.json").write_text("{corrupt")
    assert len(qc.find_emulators(str(bindir), cache_dir=cache)) == 3


def test_kvm_not_offered_when_the_test_cannot_run(tmp_path: Path, bindir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeQemu(monkeypatch, kvm_usable=True)
    monkeypatch.setattr(qc, "_EARLY_KVM_NAMES", ())
    stripped = answers()
    stripped["qom-list-types"] = [t for t in stripped["qom-list-types"] if not t["name"].startswith("isa-")]

    async def probe_stripped(binary: str, **_: Any) -> dict[str, Any]:
        return stripped

    monkeypatch.setattr(probe, "probe_binary", probe_stripped)
    caps = qc.load_all(tmp_path / "cache", search_path=str(bindir))
    assert all(not c.kvm.usable and "not tested" in c.kvm.reason for c in caps)
    assert fake.kvm_tests == []


# -- what libvirt offers from the host's firmware and swtpm ---------------------------------------


def _tpm(caps: qc.QemuCaps) -> dict[str, list[str]]:
    tpm = next(d for d in caps_xml._devices(caps, "pc-q35-7.2") if d.name == "tpm")
    return {e.name: e.values for e in tpm.enums}


def _with_tpm_types() -> qc.QemuCaps:
    a = answers()
    a["query-tpm-models"] = ["tpm-tis", "tpm-crb"]
    a["query-tpm-types"] = ["passthrough", "emulator"]
    return qc.QemuCaps.from_probe("/usr/bin/qemu-system-x86_64", a)


def test_tpm_emulator_offered_only_with_swtpm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # libvirt 9.0, seen on this kind of host before swtpm was installed: QEMU's emulator backend
    # alone is not enough, and then no <enum name='backendVersion'> at all
    monkeypatch.setenv("PATH", str(tmp_path))
    assert caps_xml.swtpm_versions() is None
    assert _tpm(_with_tpm_types()) == {"model": ["tpm-tis", "tpm-crb"], "backendModel": ["passthrough"]}
    # swtpm_ioctl missing too is "no swtpm" (libvirt needs all three tools)
    tools = {t: shutil.which(t, path="/usr/bin:/bin") for t in ("swtpm", "swtpm_setup", "swtpm_ioctl")}
    if None in tools.values():
        pytest.fail("swtpm and swtpm-tools are missing: run scripts/setup.sh --test")
    for name in ("swtpm", "swtpm_setup"):
        (tmp_path / name).symlink_to(str(tools[name]))
    assert caps_xml.swtpm_versions() is None
    (tmp_path / "swtpm_ioctl").symlink_to(str(tools["swtpm_ioctl"]))
    real = json.loads(subprocess.run([str(tools["swtpm_setup"]), "--print-capabilities"],
                                     capture_output=True, text=True, check=True).stdout)["features"]
    want = [v for v in ("1.2", "2.0") if f"tpm-{v}" in real]
    assert want and caps_xml.swtpm_versions() == tuple(want)
    assert _tpm(_with_tpm_types())["backendModel"] == ["passthrough", "emulator", "external"]
    assert _tpm(_with_tpm_types())["backendVersion"] == want


def test_loader_secure_values_follow_the_firmware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    fwdir = tmp_path / "firmware"
    fwdir.mkdir()
    monkeypatch.setattr(caps_xml, "FIRMWARE_DIRS", (str(fwdir),))
    caps = qc.QemuCaps.from_probe("/usr/bin/qemu-system-x86_64", answers())

    def os_enums(machine: str) -> tuple[list[str], dict[str, list[str]]]:
        o = caps_xml._os_caps(caps, machine)
        assert o.loader is not None
        return o.loader.values, {e.name: e.values for e in [*o.enums, *o.loader.enums]}

    # no firmware at all: libvirt still offers secure='no' (a ROM loader)
    assert os_enums("pc-q35-7.2") == ([], {"firmware": [], "type": ["rom", "pflash"],
                                           "readonly": ["yes", "no"], "secure": ["no"]})
    code = tmp_path / "CODE.secboot.fd"
    code.write_bytes(b"\0" * 16)
    (fwdir / "50-secure.json").write_text(json.dumps({
        "interface-types": ["uefi"], "features": ["secure-boot", "requires-smm"],
        "mapping": {"device": "flash", "executable": {"filename": str(code)}},
        "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}]}))
    # a secure-boot-only firmware: both values on q35 (insecure booting stays possible)...
    assert os_enums("pc-q35-7.2")[0] == [str(code)]
    assert os_enums("pc-q35-7.2")[1]["secure"] == ["yes", "no"]
    # ...and nothing of it on i440fx, which has no SMM
    assert os_enums("pc-i440fx-7.2")[1] == {"firmware": [], "type": ["rom", "pflash"],
                                            "readonly": ["yes", "no"], "secure": ["no"]}
