# SPDX-License-Identifier: LGPL-2.1-or-later
"""Property: whatever a document turns into, defining it raises pyvirt's XMLError or succeeds.

Hypothesis mutates the corpus documents (drops, duplicates and renames elements, sets attributes and
texts to awkward values, cuts and splices the bytes).  Any other exception is a parser bug.  A
definition that is accepted must also format and be accepted again from its own output.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from pyvirt.errors import XMLError
from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig
from pyvirt.xml.domain import parse_domain

CORPUS = [p.read_bytes() for p in sorted((Path(__file__).parents[1] / "data" / "domain").glob("*.xml"))]
QEMU = QemuDomainConfig(DEFAULT_X86_64_CONTEXT)

TAGS = ["disk", "target", "source", "address", "controller", "interface", "mac", "memory", "vcpu", "os",
        "type", "boot", "graphics", "listen", "video", "model", "serial", "console", "channel", "devices",
        "cpu", "topology", "clock", "timer", "uuid", "name", "hostdev", "backingStore", "seclabel"]
ATTRS = ["type", "dev", "bus", "index", "model", "unit", "port", "slot", "function", "domain", "controller",
         "address", "mode", "name", "file", "autoport", "placement", "current", "cpuset", "state", "id",
         "managed", "heads", "vram", "order", "tray", "policy", "offset", "machine", "arch"]
AWKWARD = st.sampled_from(["", " ", "-1", "0", "1", "0x", "0x1f", "4294967296", "99999999999999999999999",
                           "yes", "no", "on", "off", "auto", "pci", "drive", "virtio", "ide", "scsi", "sata",
                           "q35", "pc", "vda", "hda", "sda", "fda", "52:54:00:00:00:01", "ff:ff:ff:ff:ff:ff",
                           "KiB", "EiB", "nope", "^0", "0-", "/", ".", "a/b"])
XML_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
VALUES = st.one_of(AWKWARD, XML_TEXT)

MUTATION = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 500)),
    st.tuples(st.just("dup"), st.integers(0, 500)),
    st.tuples(st.just("rename"), st.integers(0, 500), st.sampled_from(TAGS)),
    st.tuples(st.just("attr"), st.integers(0, 500), st.sampled_from(ATTRS), VALUES),
    st.tuples(st.just("text"), st.integers(0, 500), VALUES),
    st.tuples(st.just("child"), st.integers(0, 500), st.sampled_from(TAGS)),
)


def mutate(source: bytes, mutations: list[tuple[object, ...]]) -> bytes:
    root = etree.fromstring(source)
    for m in mutations:
        elems = [e for e in root.iter() if isinstance(e.tag, str)]
        el = elems[int(m[1]) % len(elems)]  # type: ignore[call-overload]
        parent = el.getparent()
        op = m[0]
        if op == "drop" and parent is not None:
            parent.remove(el)
        elif op == "dup" and parent is not None:
            parent.append(etree.fromstring(etree.tostring(el)))
        elif op == "rename":
            el.tag = str(m[2])
        elif op == "attr":
            el.set(str(m[2]), str(m[3]))
        elif op == "text":
            el.text = str(m[2])
        elif op == "child":
            etree.SubElement(el, str(m[2]))
    return etree.tostring(root)


def define_or_refuse(data: bytes) -> None:
    try:
        dom = parse_domain(data, ctx=QEMU)
    except XMLError:
        return
    out = dom.to_xml()
    parse_domain(out, ctx=QEMU)  # pyvirt must accept what it wrote


# PYVIRT_FUZZ_EXAMPLES=20000 for a longer hunt
EXAMPLES = int(os.environ.get("PYVIRT_FUZZ_EXAMPLES", "400"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_documents_only_raise_xml_error(source: bytes, mutations: list[tuple[object, ...]]) -> None:
    define_or_refuse(mutate(source, mutations))


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(st.sampled_from(CORPUS), st.integers(0, 10_000), st.binary(max_size=8))
def test_spliced_bytes_only_raise_xml_error(source: bytes, at: int, junk: bytes) -> None:
    at %= len(source) + 1
    define_or_refuse(source[:at] + junk + source[at:])
    define_or_refuse(source[:at])
