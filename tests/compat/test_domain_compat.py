# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's domain XML against libvirt 9.0's, document by document.

Every document of tests/data/domain is defined in one embedded libvirt root (through Debian's
python3-libvirt, in one process, so the comparison costs one capability probe per test module) and
read back with dumpxml --inactive.  pyvirt parses the same document with the QEMU driver's post-parse
and formats it.  The two texts must be equal after this normalisation, and nothing else:

* values libvirt generates at random when the document has none are replaced by a placeholder:
  the domain <uuid>, an empty <genid/>, and the <mac address> of interfaces that had no <mac>.

A document whose remaining difference is understood and accepted goes to KNOWN_DEVIATIONS with the
reason; the test then checks that the deviation is still there, so the list cannot go stale.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig
from pyvirt.xml.domain import parse_domain

sys.path.insert(0, str(Path(__file__).parents[1]))
from oracle import SYSTEM_PYTHON, LibvirtEmbed, libvirt_available  # noqa: E402

pytestmark = pytest.mark.oracle

CORPUS_DIR = Path(__file__).parents[1] / "data" / "domain"
CORPUS = sorted(CORPUS_DIR.glob("*.xml"))
RNG_PATH = Path("/usr/share/libvirt/schemas/domain.rng")

# document stem -> why pyvirt's output differs from libvirt's
KNOWN_DEVIATIONS: dict[str, str] = {}

# Run by Debian's python3 (which has the libvirt binding): define, dump and undefine each document.
ORACLE_SCRIPT = r"""
import json, os, sys, time, libvirt
libvirt.virEventRegisterDefaultImpl()
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open("qemu:///embed?root=" + sys.argv[1])
repeat = int(os.environ.get("PYVIRT_ORACLE_REPEAT", "1"))
out = {}
for path in sys.argv[2:]:
    xml = open(path).read()
    best = None
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            dom = conn.defineXML(xml)
            text = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            seconds = time.perf_counter() - start
            dom.undefine()
            best = seconds if best is None else min(best, seconds)
        out[path] = {"xml": text, "seconds": best}
    except libvirt.libvirtError as e:
        out[path] = {"error": e.get_error_message(), "code": e.get_error_code()}
json.dump(out, sys.stdout)
"""


def libvirt_define_and_dump(root: Path, paths: list[Path], *,
                            repeat: int = 1) -> dict[str, dict[str, object]]:
    """libvirt 9.0's inactive XML (or error) for each document, keyed by path, with the best time of
    ``repeat`` define+dumpxml rounds in "seconds"."""
    LibvirtEmbed.create(root)
    env = {**os.environ, "PYVIRT_ORACLE_REPEAT": str(repeat)}
    proc = subprocess.run([SYSTEM_PYTHON, "-c", ORACLE_SCRIPT, str(root), *map(str, paths)],
                          capture_output=True, text=True, timeout=600, check=True, env=env)
    result: dict[str, dict[str, object]] = json.loads(proc.stdout)
    return result


def pyvirt_define_and_dump(text: str) -> str:
    dom = parse_domain(text, ctx=QemuDomainConfig(DEFAULT_X86_64_CONTEXT))
    return dom.to_xml(inactive=True)


def normalise(xml: str, source: str) -> str:
    """Hide the values libvirt and pyvirt both generate at random (see the module docstring)."""
    src = etree.fromstring(source.encode())
    if src.find("uuid") is None:
        xml = re.sub(r"<uuid>[^<]*</uuid>", "<uuid>GENERATED</uuid>", xml)
    genid = src.find("genid")
    if genid is not None and not (genid.text or "").strip():
        xml = re.sub(r"<genid>[^<]*</genid>", "<genid>GENERATED</genid>", xml)
    no_mac = [i for i, iface in enumerate(src.iterfind("devices/interface")) if iface.find("mac") is None]
    if no_mac:
        parts = re.split(r"(<interface\b.*?</interface>)", xml, flags=re.S)
        n = 0
        for k, part in enumerate(parts):
            if part.startswith("<interface"):
                if n in no_mac:
                    parts[k] = re.sub(r"<mac address='[^']*'/>", "<mac address='GENERATED'/>", part)
                n += 1
        xml = "".join(parts)
    return xml


@pytest.fixture(scope="module")
def libvirt_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh, python3-libvirt) is missing: run scripts/setup.sh --test")
    return libvirt_define_and_dump(tmp_path_factory.mktemp("libvirt-root"), CORPUS)


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 60


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_same_xml_as_libvirt(path: Path, libvirt_outputs: dict[str, dict[str, object]]) -> None:
    theirs = libvirt_outputs[str(path)]
    assert "error" not in theirs, f"libvirt rejects the corpus document: {theirs.get('error')}"
    source = path.read_text()
    expected = normalise(str(theirs["xml"]), source)
    got = normalise(pyvirt_define_and_dump(source), source)
    if path.stem in KNOWN_DEVIATIONS:
        assert got != expected, f"{path.stem} now matches libvirt: drop it from KNOWN_DEVIATIONS"
        return
    assert got == expected


@pytest.fixture(scope="module")
def libvirt_second_outputs(tmp_path_factory: pytest.TempPathFactory,
                           libvirt_outputs: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """libvirt's output defined again: what libvirt makes of a fully specified definition."""
    out_dir = tmp_path_factory.mktemp("libvirt-output")
    paths = []
    for path in CORPUS:
        first = libvirt_outputs[str(path)]
        if "xml" in first:
            paths.append(out_dir / path.name)
            paths[-1].write_text(str(first["xml"]))
    result = libvirt_define_and_dump(tmp_path_factory.mktemp("libvirt-root2"), paths)
    return {Path(k).stem: v for k, v in result.items()}


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_same_xml_as_libvirt_from_libvirt_output(
        path: Path, libvirt_outputs: dict[str, dict[str, object]],
        libvirt_second_outputs: dict[str, dict[str, object]]) -> None:
    """Defining libvirt's own dumpxml output: both must read every attribute the same way."""
    source = str(libvirt_outputs[str(path)]["xml"])
    theirs = libvirt_second_outputs[path.stem]
    assert "error" not in theirs, theirs.get("error")
    assert pyvirt_define_and_dump(source) == str(theirs["xml"])


@pytest.fixture(scope="module")
def domain_rng() -> etree.RelaxNG:
    if not RNG_PATH.exists():
        pytest.fail(f"{RNG_PATH} is missing: run scripts/setup.sh --test")
    return etree.RelaxNG(etree.parse(str(RNG_PATH)))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_output_validates_against_libvirt_schema(path: Path, domain_rng: etree.RelaxNG) -> None:
    out = pyvirt_define_and_dump(path.read_text())
    ok = domain_rng.validate(etree.fromstring(out.encode()))
    assert ok, str(domain_rng.error_log.last_error)


# -- the same comparison through the products: virsh and pyvirsh, define / dumpxml --inactive /
# undefine, each step a process of its own (so each side reads back what it stored) --------------

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))


@pytest.fixture(scope="module")
def pyvirt_root() -> Iterator[Path]:
    # Short: a UNIX socket path below an embed root must fit in 107 bytes.
    parent = Path(tempfile.mkdtemp(prefix="pv-", dir="/tmp"))
    try:
        yield parent / "r"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def virsh_root(worker_id: str) -> LibvirtEmbed:
    """libvirt's embedded root, kept between runs (one per test worker) so that libvirt's own
    capability cache spares it a cold probe of several seconds; leftovers are cleared first."""
    root = LibvirtEmbed.create(Path(f"/var/tmp/pyvirt-tests-libvirt-{worker_id}"))
    for stale in (root.root / "etc" / "qemu").glob("*.xml"):
        stale.unlink()
    return root


def pyvirsh(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYVIRSH, "-c", f"qemu:///embed?root={root}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_same_xml_through_pyvirsh(path: Path, virsh_root: LibvirtEmbed, pyvirt_root: Path) -> None:
    source = path.read_text()
    name = etree.fromstring(source.encode()).findtext("name")
    assert name
    virsh_root.virsh("define", str(path))
    theirs = virsh_root.virsh("dumpxml", "--inactive", name, quiet=False).stdout
    # What `virsh undefine` leaves behind, without its 3 s: libvirt's embedded driver keeps nothing
    # of an inactive domain but this file, read again by every virsh process.
    (virsh_root.root / "etc" / "qemu" / f"{name}.xml").unlink()

    stored = pyvirt_root / "etc" / "qemu" / f"{name}.xml"
    define = pyvirsh(pyvirt_root, "define", str(path))
    assert (define.returncode, define.stderr) == (0, "")
    assert define.stdout == f"Domain '{name}' defined from {path}\n\n"
    dump = pyvirsh(pyvirt_root, "dumpxml", "--inactive", name)
    assert (dump.returncode, dump.stderr) == (0, "")
    # The stored file is define's output; dumpxml in a new process reads it back through post-parse,
    # which may reorder a few devices: libvirt does the same, hence the comparison of what each
    # dumpxml prints rather than of the files.
    assert etree.fromstring(stored.read_bytes()).findtext("name") == name
    assert dump.stdout.endswith("</domain>\n\n") and theirs.endswith("</domain>\n\n")
    if path.stem in KNOWN_DEVIATIONS:
        assert normalise(dump.stdout, source) != normalise(theirs, source)
    else:
        assert normalise(dump.stdout, source) == normalise(theirs, source)
    undefine = pyvirsh(pyvirt_root, "undefine", name)
    assert (undefine.returncode, undefine.stdout) == (0, f"Domain '{name}' has been undefined\n\n")
    assert not stored.exists()
