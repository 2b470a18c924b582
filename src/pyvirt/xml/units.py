# SPDX-License-Identifier: LGPL-2.1-or-later
"""Scaled sizes (``<memory unit='GiB'>4</memory>``) and the field that reads them into KiB."""

from __future__ import annotations

from typing import Any

from lxml import etree

from pyvirt.xml.base import Conv, Field, Int, Node, ParseState, XMLObject, _local, parse_c_int

__all__ = ["scale_to_bytes", "Memory", "ScaledAttr", "MEMORY_MAX_KIB"]

# The largest memory size libvirt accepts: it keeps sizes in KiB in an unsigned long long but
# requires the byte count to fit a signed long long.
MEMORY_MAX_KIB = (2**63 - 1) // 1024

_PREFIX = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def scale_to_bytes(value: int, unit: str | None, *, default: int = 1024) -> int:
    """Scale ``value`` by ``unit`` as libvirt does.

    'b'/'bytes' are bytes; a single letter or a letter + 'iB' is a power of 1024; a letter + 'B' is a
    power of 1000; letters are case-insensitive.  No unit means ``default`` (KiB for memory).
    """
    if not unit:
        return value * default
    u = unit.lower()
    if u in ("b", "byte", "bytes"):
        return value
    exp = _PREFIX.get(u[0])
    if exp is None or u[1:] not in ("", "ib", "b"):
        raise ValueError(f"unknown suffix '{unit}'")
    base = 1000 if u[1:] == "b" else 1024
    return value * base**exp


def _div_up(a: int, b: int) -> int:
    return -(-a // b)


class Memory(Field[int | None]):
    """A child element with a size and a ``unit`` attribute; the value is held in KiB.

    libvirt formats such sizes in KiB whatever the input unit; other attributes of the element
    (``slots`` of maxMemory, ``dumpCore`` of memory) are separate fields given in ``extra``.
    """

    def __init__(self, tag: str, *, extra: tuple[tuple[str, Conv[Any]], ...] = (),
                 max_kib: int = MEMORY_MAX_KIB, keep_zero: bool = False, out_unit: str = "KiB") -> None:
        self.tag = tag
        self.out_unit = out_unit  # shmem sizes are printed in MiB
        # Other attributes of the element, printed before 'unit'; their values are kept under the key
        # "<field name>:<attribute>" (see extra_key), read with XMLObject.get_extra.
        self.extra = extra
        self.max_kib = max_kib
        self.keep_zero = keep_zero

    def xml_names(self) -> tuple[str, ...]:
        return (self.tag,)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        child = st.first(self.tag)
        if child is None:
            return
        text = (child.text or "").strip()
        where = f"element '{_local(self.tag)}'"
        try:
            num = parse_c_int(text)
        except ValueError:
            raise st.error(f"invalid value '{text}' of {where}: expected a non-negative integer") from None
        if num < 0:
            raise st.error(f"invalid value '{text}' of {where}: must not be negative")
        unit = child.get("unit")
        try:
            size = scale_to_bytes(num, unit)
        except ValueError as e:
            raise st.error(f"invalid unit of {where}: {e}") from None
        kib = _div_up(size, 1024)
        if kib > self.max_kib:
            raise st.error(f"value '{text}' of {where} is too large (at most {self.max_kib} KiB)")
        obj._values[self.name] = kib
        for xmlattr, conv in self.extra:
            raw = child.get(xmlattr)
            if raw is not None:
                try:
                    obj._values[f"{self.name}:{xmlattr}"] = conv.parse(raw)
                except ValueError as e:
                    raise st.error(f"invalid value of attribute '{xmlattr}' of {where}: {e}") from None
        if st.strict:
            allowed = {"unit", *(x for x, _ in self.extra)}
            for name in child.attrib:
                if name not in allowed:
                    raise st.error(f"unknown attribute '{name!s}' on {where}")

    def format(self, obj: XMLObject, elem: Node) -> None:
        val = obj._values.get(self.name)
        if val is None or (val == 0 and not self.keep_zero):
            return
        sub = elem.sub(self.tag)
        for xmlattr, conv in self.extra:
            v = obj._values.get(f"{self.name}:{xmlattr}")
            if v is not None:
                sub.set(xmlattr, conv.format(v))
        sub.set("unit", self.out_unit)
        sub.text = str(val // 1024 if self.out_unit == "M" else val)


class ScaledAttr(Field[int | None]):
    """A size held in an attribute with its unit in a sibling attribute (``size='4' unit='MiB'``)."""

    kind = "attr"

    def __init__(self, xmlname: str, unit_attr: str = "unit", *, default_unit: int = 1024,
                 out_unit: str = "KiB") -> None:
        self.xmlname = xmlname
        self.unit_attr = unit_attr
        self.default_unit = default_unit
        self.out_unit = out_unit

    def xml_names(self) -> tuple[str, ...]:
        return (self.xmlname, self.unit_attr)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        raw = node.get(self.xmlname)
        if raw is None:
            return
        try:
            num = Int(0, None).parse(raw)
            size = scale_to_bytes(num, node.get(self.unit_attr), default=self.default_unit)
        except ValueError as e:
            raise st.error(f"invalid value of attribute '{self.xmlname}' of element "
                           f"'{_local(node.tag)}': {e}") from None
        obj._values[self.name] = _div_up(size, 1024)

    def format(self, obj: XMLObject, elem: Node) -> None:
        val = obj._values.get(self.name)
        if val is not None:
            elem.set(self.xmlname, str(val))
            elem.set(self.unit_attr, self.out_unit)
