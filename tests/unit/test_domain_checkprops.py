# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every declared field of the domain models is exercised by some test document (like virtinst's
test_checkprops): a field nobody parses is a field nobody knows to work.

The documents are the compatibility corpus (compared with libvirt) plus EXTRA below, for what the
oracle's configuration refuses but pyvirt must read.  A field declared on a base class (the device
<address>, <alias>, <boot>...) counts once, for the class that declares it.
"""

from __future__ import annotations

from pathlib import Path

from pyvirt.xml.base import Child, Children, XMLObject, record_parsed_fields
from pyvirt.xml.domain import Domain, parse_domain

CORPUS = sorted((Path(__file__).parents[1] / "data" / "domain").glob("*.xml"))

EXTRA = [
    # spice TLS needs spice_tls=1 in the oracle's qemu.conf
    "<domain type='kvm'><name>tls</name><memory>65536</memory><os><type>hvm</type></os><devices>"
    "<graphics type='spice' port='5900' tlsPort='5901' autoport='no'/></devices></domain>",
]


def _declaring_class(cls: type, name: str) -> type:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return cls


def _models(cls: type[XMLObject], seen: set[type[XMLObject]]) -> set[type[XMLObject]]:
    if cls not in seen:
        seen.add(cls)
        for f in cls._fields:
            if isinstance(f, (Child, Children)):
                _models(f.cls, seen)
    return seen


def test_every_declared_field_is_exercised() -> None:
    with record_parsed_fields() as log:
        for path in CORPUS:
            parse_domain(path.read_text())
        for text in EXTRA:
            parse_domain(text)
    used = {(_declaring_class(cls, name), name) for cls, name in log}
    missing = sorted({f"{_declaring_class(cls, f.name).__name__}.{f.name}"
                      for cls in _models(Domain, set()) for f in cls._fields
                      if (_declaring_class(cls, f.name), f.name) not in used})
    assert not missing, f"declared but never parsed by a test document: {', '.join(missing)}"


def test_the_check_can_fail() -> None:
    with record_parsed_fields() as log:
        parse_domain("<domain type='kvm'><name>x</name><memory>1</memory><os><type>hvm</type></os></domain>")
    assert (Domain, "name") in log and (Domain, "title") not in log
