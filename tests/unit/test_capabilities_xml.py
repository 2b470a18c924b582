# SPDX-License-Identifier: LGPL-2.1-or-later
"""The capabilities and domain capabilities formatters: escaping, layout, schema validity."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from pyvirt.xml.capabilities import (
    CacheBank,
    Capabilities,
    CpuCaps,
    CustomCpuModel,
    DomainCaps,
    Enum,
    Guest,
    GuestFeature,
    GuestMachine,
    Host,
    HostCpu,
    HostModel,
    HostTopologyCpu,
    Loader,
    NumaCell,
    OsCaps,
    SecModel,
    SevCaps,
    Supported,
    escape,
    format_capabilities,
    format_domain_capabilities,
)

SCHEMAS = Path("/usr/share/libvirt/schemas")


def _rng(name: str) -> etree.RelaxNG:
    if not (SCHEMAS / name).exists():
        pytest.fail(f"{SCHEMAS / name} is missing: run scripts/setup.sh --test")
    return etree.RelaxNG(etree.parse(str(SCHEMAS / name)))


def _valid(rng: etree.RelaxNG, text: str) -> None:
    doc = etree.fromstring(text.encode())
    assert rng.validate(doc), rng.error_log


def _caps(emulator: str = "/usr/bin/qemu-system-x86_64", machine: str = "pc-i440fx-7.2",
          label: str = "+0:+0") -> Capabilities:
    cpus = [HostTopologyCpu(0, 0, 0, 0, "0,2"), HostTopologyCpu(1, 0, 0, 1, "1,3")]
    host = Host(
        cpu=HostCpu(arch="x86_64", vendor="Intel", microcode=1, signature=(6, 167, 1),
                    topology=(1, 1, 2, 1), maxphysaddr_bits=48, features=["vme", "sse4_1"], pages=[4, 2048]),
        uuid="3d1219c7-c4c5-404a-aa1f-6d2a48adfda4", iommu=False, migration_live=True,
        migration_transports=["tcp", "rdma"],
        cells=[NumaCell(0, 4096, [(4, 1024), (2048, 0)], [(0, 10)], cpus)],
        cache=[CacheBank(0, 3, "both", 480 * 1024, "0-1")],
        secmodels=[SecModel("none", "0"), SecModel("dac", "0", {"kvm": label, "qemu": label})])
    guest = Guest("hvm", "x86_64", 64, emulator,
                  [GuestMachine(machine, None, 255), GuestMachine("pc", machine, 255),
                   GuestMachine("pc-i440fx-1.4", None, 255, deprecated=True)],
                  ["qemu"], [GuestFeature("acpi", True, True), GuestFeature("cpuselection")])
    return Capabilities(host, [guest])


def _domcaps(path: str = "/usr/bin/qemu-system-x86_64", model: str = "Broadwell") -> DomainCaps:
    maximum = Supported("mode", True, [Enum("maximumMigratable", ["on", "off"])])
    cpu = CpuCaps(Supported("mode", False), maximum,
                  HostModel(True), True,
                  [CustomCpuModel(model, "yes", "Intel"), CustomCpuModel("486", "no", deprecated=True)])
    return DomainCaps(
        path=path, domain="qemu", arch="x86_64", machine="pc-i440fx-7.2", vcpu_max=255, iothreads=True,
        os=OsCaps(True, [Enum("firmware", ["efi"])],
                  Loader(True, ["/usr/share/OVMF/OVMF_CODE_4M.fd"], [Enum("type", ["rom", "pflash"])])),
        cpu=cpu, memory_backing=Supported("memoryBacking", True, [Enum("sourceType", ["anonymous"])]),
        devices=[Supported("disk", True, [Enum("bus", ["virtio"])]),
                 Supported("hostdev", True, [Enum("capsType", [])]), Supported("tpm", False)],
        features=[Supported("gic", False), SevCaps(False), Supported("sgx", False),
                  Supported("hyperv", True, [Enum("features", ["spinlocks"])])])


def test_escape_covers_markup_and_quotes() -> None:
    assert escape("a<b>&'\"") == "a&lt;b&gt;&amp;&apos;&quot;"
    assert escape(42) == "42"


def test_capabilities_validate_against_libvirt_schema() -> None:
    _valid(_rng("capability.rng"), format_capabilities(_caps()))


def test_capabilities_escape_every_value() -> None:
    text = format_capabilities(_caps(emulator="/opt/q&a/<qemu>", machine="m'1", label="+0:'x'"))
    doc = etree.fromstring(text.encode())  # well-formed despite the markup in the values
    assert doc.findtext("guest/arch/emulator") == "/opt/q&a/<qemu>"
    assert doc.find("guest/arch/machine[2]").get("canonical") == "m'1"
    assert doc.find("host/secmodel[2]/baselabel").text == "+0:'x'"


def test_capabilities_layout_matches_libvirt() -> None:
    text = format_capabilities(_caps())
    assert text.startswith("<capabilities>\n\n  <host>\n    <uuid>")
    assert text.endswith("  </guest>\n\n</capabilities>\n")
    assert "      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>\n" in text
    assert "      <machine maxCpus='255' deprecated='yes'>pc-i440fx-1.4</machine>\n" in text
    assert "      <acpi default='on' toggle='yes'/>\n" in text
    assert "      <bank id='0' level='3' type='both' size='480' unit='MiB' cpus='0-1'/>\n" in text
    assert "      <signature family='6' model='167' stepping='1'/>\n" in text


def test_domain_capabilities_validate_against_libvirt_schema() -> None:
    _valid(_rng("domaincaps.rng"), format_domain_capabilities(_domcaps()))


def test_domain_capabilities_escape_and_layout() -> None:
    text = format_domain_capabilities(_domcaps(path="/x/<q>&", model="A'B"))
    doc = etree.fromstring(text.encode())
    assert doc.findtext("path") == "/x/<q>&"
    assert doc.find("cpu/mode[@name='custom']/model").text == "A'B"
    assert "  <vcpu max='255'/>\n" in text
    assert "      <model usable='no' deprecated='yes' vendor='unknown'>486</model>\n" in text
    assert "      <enum name='capsType'/>\n" in text
    assert "    <sev supported='no'/>\n" in text


def test_records_compare_by_value() -> None:
    assert GuestMachine("pc", "x", 1) == GuestMachine("pc", "x", 1)
    assert GuestMachine("pc") != GuestMachine("q35")
    assert "GuestMachine(name='pc'" in repr(GuestMachine("pc"))
