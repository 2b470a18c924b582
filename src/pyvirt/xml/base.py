# SPDX-License-Identifier: LGPL-2.1-or-later
"""Declared XML models: one descriptor per field, one generic parser and one generic formatter.

A model class names its element (``TAG``) and declares its fields as class attributes, in the order
libvirt formats them: attributes (:class:`Attr`) in attribute order, child elements (:class:`Text`,
:class:`Flag`, :class:`Child`, :class:`Children`, :class:`Raw`...) in element order.  Nothing else is
written per class: :meth:`XMLObject.from_node` and :meth:`XMLObject.to_node` walk the declarations.

The parsed lxml element is retained on each object (``_node``).  Formatting builds a light :class:`Node`
tree that :func:`format_element` prints the way libvirt does.  Like libvirt, the formatter emits only
what is declared, so unknown elements and attributes disappear on a round trip, except in fields that
keep XML verbatim (:class:`Raw`, used for ``<metadata>``).  In strict mode (``virsh define
--validate``), unknown elements and attributes are errors instead.

The parser is hardened: no entity expansion, no DTD or network access, no XInclude, a size bound.
"""

from __future__ import annotations

import re
import uuid as _uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar, cast, overload

from lxml import etree

from pyvirt.errors import XMLError

__all__ = [
    "MAX_DOCUMENT_BYTES", "Conv", "Str", "Int", "Hex", "Enum", "YesNo", "OnOff", "Uuid", "Attr", "Text",
    "Body", "Flag", "Child", "Children", "Raw", "Field", "XMLObject", "ParseState", "Node", "parse_document",
    "format_element", "record_parsed_fields", "XMLError",
]

# libvirt reads domain XML of any reasonable size; a bound stops memory exhaustion by huge documents.
MAX_DOCUMENT_BYTES = 10 * 1024 * 1024

T = TypeVar("T")
V = TypeVar("V")  # the value type a field exposes
O = TypeVar("O", bound="XMLObject")  # noqa: E741


# ---------------------------------------------------------------------------------------------------
# Converters: text <-> typed value.  ``parse`` raises ValueError with a reason; the field adds where.


class Conv(Generic[T]):
    """Converts between the text of an attribute or element and a Python value."""

    def parse(self, text: str) -> T:
        raise NotImplementedError

    def format(self, value: T) -> str:
        return str(value)


class Str(Conv[str]):
    def __init__(self, *, strip: bool = False, nonempty: bool = False) -> None:
        self.strip = strip
        self.nonempty = nonempty

    def parse(self, text: str) -> str:
        if self.strip:
            text = text.strip()
        if self.nonempty and not text:
            raise ValueError("must not be empty")
        return text


_INT_RE = re.compile(r"\s*[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\s*$")


def parse_c_int(text: str, *, base: int = 10) -> int:
    """An integer as libvirt's virStrToLong_* read it: base 10, or C's base 0 (0x hex, 0 octal)."""
    if base == 10:
        s = text.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", s):
            raise ValueError(f"'{text}' is not a decimal integer")
        return int(s, 10)
    if not _INT_RE.match(text):
        raise ValueError(f"'{text}' is not an integer")
    s = text.strip()
    neg = s.startswith("-")
    s = s.lstrip("+-")
    if s.lower().startswith("0x"):
        val = int(s[2:], 16)
    elif len(s) > 1 and s.startswith("0"):
        val = int(s[1:], 8)
    else:
        val = int(s, 10)
    return -val if neg else val


class Int(Conv[int]):
    def __init__(self, lo: int | None = 0, hi: int | None = 2**32 - 1, *, base: int = 10) -> None:
        self.lo, self.hi, self.base = lo, hi, base

    def parse(self, text: str) -> int:
        val = parse_c_int(text, base=self.base)
        if self.lo is not None and val < self.lo:
            raise ValueError(f"{val} is below the minimum {self.lo}")
        if self.hi is not None and val > self.hi:
            raise ValueError(f"{val} is above the maximum {self.hi}")
        return val


class Hex(Int):
    """An integer libvirt prints in hex with a fixed width (PCI addresses: ``0x%04x``...)."""

    def __init__(self, width: int, hi: int) -> None:
        super().__init__(0, hi, base=0)
        self.width = width

    def format(self, value: int) -> str:
        return f"0x{value:0{self.width}x}"


class Enum(Conv[str]):
    def __init__(self, *values: str) -> None:
        self.values = values
        self._set = frozenset(values)

    def parse(self, text: str) -> str:
        if text not in self._set:
            raise ValueError(f"unknown value '{text}', expected one of: {', '.join(self.values)}")
        return text


class _Bool(Conv[bool]):
    yes = "yes"
    no = "no"

    def parse(self, text: str) -> bool:
        if text == self.yes:
            return True
        if text == self.no:
            return False
        raise ValueError(f"unknown value '{text}', expected '{self.yes}' or '{self.no}'")

    def format(self, value: bool) -> str:
        return self.yes if value else self.no


class YesNo(_Bool):
    pass


class OnOff(_Bool):
    yes = "on"
    no = "off"


class Uuid(Conv[str]):
    """A UUID in any spelling libvirt reads (hyphens anywhere, or none); formatted canonically."""

    def parse(self, text: str) -> str:
        hexdigits = text.strip().replace("-", "")
        if len(hexdigits) != 32 or not re.fullmatch(r"[0-9a-fA-F]{32}", hexdigits):
            raise ValueError(f"'{text}' is not a valid UUID")
        return str(_uuid.UUID(hexdigits))


# ---------------------------------------------------------------------------------------------------
# Output tree: what formatting builds and the writer prints (lighter than lxml elements).


class Node:
    """An element to print: tag (``{namespace}local`` for namespaced ones), attributes in order,
    children, text; or, for <metadata>, an lxml element whose children are printed verbatim."""

    __slots__ = ("tag", "attrib", "children", "text", "verbatim")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.attrib: dict[str, str] = {}
        self.children: list[Node] = []
        self.text: str | None = None
        self.verbatim: etree._Element | None = None

    def set(self, name: str, value: str) -> None:
        self.attrib[name] = value

    def get(self, name: str) -> str | None:
        return self.attrib.get(name)

    def sub(self, tag: str) -> Node:
        child = Node(tag)
        self.children.append(child)
        return child

    def find(self, tag: str) -> Node | None:
        for c in self.children:
            if c.tag == tag:
                return c
        return None

    def findall(self, tag: str) -> list[Node]:
        return [c for c in self.children if c.tag == tag]


# ---------------------------------------------------------------------------------------------------
# Parse state: where we are (for messages) and how strict to be.


@dataclass
class ParseState:
    """The parse of one element: where it is, how strict to be, its children by tag."""

    strict: bool = False  # unknown elements/attributes are errors (like RNG validation)
    path: str = ""
    kids: dict[Any, list[etree._Element]] | None = None

    def at(self, name: str) -> ParseState:
        return ParseState(self.strict, f"{self.path}/{name}")

    def index(self, node: etree._Element) -> None:
        # One pass over the children, so that each field finds its elements without a scan.
        kids: dict[Any, list[etree._Element]] = {}
        for child in node:
            kids.setdefault(child.tag, []).append(child)
        self.kids = kids

    def first(self, tag: str) -> etree._Element | None:
        found = self.kids.get(tag) if self.kids is not None else None
        return found[0] if found else None

    def all(self, tag: str) -> list[etree._Element]:
        return (self.kids.get(tag) if self.kids is not None else None) or []

    def error(self, what: str) -> XMLError:
        return XMLError(f"{what} (in {self.path or '/'})")


# ---------------------------------------------------------------------------------------------------
# Fields


class Field(Generic[V]):
    """A declared part of an element: an attribute, a child element or the element's text."""

    name: str = ""
    kind: ClassVar[str] = "child"  # "attr" | "child" | "body"
    default: Any = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> Field[V]: ...
    @overload
    def __get__(self, obj: XMLObject, owner: type) -> V: ...
    def __get__(self, obj: XMLObject | None, owner: type) -> Field[V] | V:
        if obj is None:
            return self
        try:
            return obj._values[self.name]
        except KeyError:
            pass
        if isinstance(self.default, list):
            # A list field gets its own list on first use, so that appending to it sticks.
            val: Any = []
            obj._values[self.name] = val
            return val
        return self.default

    def __set__(self, obj: XMLObject, value: V) -> None:
        obj._values[self.name] = value

    # What this field consumes in the element: attribute names or child tags.
    def xml_names(self) -> Sequence[str]:
        return ()

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        raise NotImplementedError

    def format(self, obj: XMLObject, elem: Node) -> None:
        raise NotImplementedError

    def is_set(self, obj: XMLObject) -> bool:
        val = obj._values.get(self.name)
        return val is not None and val != []

    # A field that applies only to some forms of its element (the attribute 'bus' of a PCI address is
    # hex, that of a drive address decimal) names the form with a predicate over the parsed object.
    when: Callable[[Any], bool] | None = None

    def applies(self, obj: XMLObject) -> bool:
        return self.when is None or self.when(obj)


class Attr(Field[T | None]):
    """An attribute of the model's element."""

    kind = "attr"

    @overload
    def __init__(self: Attr[str], xmlname: str, conv: None = None, *, default: str | None = None,
                 when: Callable[[Any], bool] | None = None, required: bool = False) -> None: ...
    @overload
    def __init__(self, xmlname: str, conv: Conv[T], *, default: T | None = None,
                 when: Callable[[Any], bool] | None = None, required: bool = False) -> None: ...
    def __init__(self, xmlname: str, conv: Conv[Any] | None = None, *, default: Any = None,
                 when: Callable[[Any], bool] | None = None, required: bool = False) -> None:
        self.xmlname = xmlname
        self.conv: Conv[Any] = conv if conv is not None else Str()
        self.default = default
        self.when = when
        self.required = required  # libvirt refuses the element without it

    def xml_names(self) -> Sequence[str]:
        return (self.xmlname,)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        text = node.get(self.xmlname)
        if text is None:
            return
        try:
            obj._values[self.name] = self.conv.parse(text)
        except ValueError as e:
            raise st.error(f"invalid value of attribute '{self.xmlname}' of element "
                           f"'{_local(node.tag)}': {e}") from None

    def format(self, obj: XMLObject, elem: Node) -> None:
        val = obj._values.get(self.name)
        if val is not None:
            elem.attrib[self.xmlname] = self.conv.format(val)


class Body(Field[T | None]):
    """The text content of the model's own element (``<type arch='x86_64'>hvm</type>``)."""

    kind = "body"

    @overload
    def __init__(self: Body[str], conv: None = None) -> None: ...
    @overload
    def __init__(self, conv: Conv[T]) -> None: ...
    def __init__(self, conv: Conv[Any] | None = None, *, default: Any = None) -> None:
        self.conv: Conv[Any] = conv if conv is not None else Str()
        self.default = default

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        text = node.text
        if text is None:
            return
        try:
            obj._values[self.name] = self.conv.parse(text)
        except ValueError as e:
            raise st.error(f"invalid content of element '{_local(node.tag)}': {e}") from None

    def format(self, obj: XMLObject, elem: Node) -> None:
        val = obj._values.get(self.name)
        if val is not None:
            elem.text = self.conv.format(val)


class Text(Field[T | None]):
    """A child element holding only text (``<name>vm1</name>``)."""

    @overload
    def __init__(self: Text[str], tag: str, conv: None = None, *, keep_empty: bool = False) -> None: ...
    @overload
    def __init__(self, tag: str, conv: Conv[T], *, keep_empty: bool = False) -> None: ...
    def __init__(self, tag: str, conv: Conv[Any] | None = None, *, default: Any = None,
                 keep_empty: bool = False) -> None:
        self.tag = tag
        self.conv: Conv[Any] = conv if conv is not None else Str()
        self.default = default
        self.keep_empty = keep_empty  # libvirt keeps <title/> but drops other empty texts

    def xml_names(self) -> Sequence[str]:
        return (self.tag,)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        child = st.first(self.tag)
        if child is None:
            return
        text = child.text or ""
        if not text and not self.keep_empty:
            return
        try:
            obj._values[self.name] = self.conv.parse(text)
        except ValueError as e:
            raise st.error(f"invalid content of element '{_local(self.tag)}': {e}") from None

    def format(self, obj: XMLObject, elem: Node) -> None:
        val = obj._values.get(self.name)
        if val is not None:
            elem.sub(self.tag).text = self.conv.format(val)


class Flag(Field[bool]):
    """An empty child element whose presence is the value (``<readonly/>``, ``<acpi/>``)."""

    default = False

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def xml_names(self) -> Sequence[str]:
        return (self.tag,)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        if st.first(self.tag) is not None:
            obj._values[self.name] = True

    def format(self, obj: XMLObject, elem: Node) -> None:
        if obj._values.get(self.name):
            elem.sub(self.tag)

    def is_set(self, obj: XMLObject) -> bool:
        return bool(obj._values.get(self.name))


class _ModelRef(Generic[O]):
    """The model class of a child field, possibly given lazily (for classes declared later)."""

    def __init__(self, cls: type[O] | Callable[[], type[O]], tag: str | None = None) -> None:
        self._cls = cls
        self._tag = tag
        self._resolved: tuple[type[O], str, str] | None = None

    @property
    def cls(self) -> type[O]:
        if not isinstance(self._cls, type):
            self._cls = self._cls()
        return self._cls

    @property
    def tag(self) -> str:
        return self._tag or self.cls.TAG

    def resolved(self) -> tuple[type[O], str, str]:
        """(model class, tag, tag without namespace), looked up once."""
        r = self._resolved
        if r is None:
            r = self._resolved = (self.cls, self.tag, _local(self.tag))
        return r


class Child(_ModelRef[O], Field[O | None]):
    """One child element described by another model class."""

    def xml_names(self) -> Sequence[str]:
        return (self.tag,)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        cls, tag, local = self.resolved()
        child = st.first(tag)
        if child is not None:
            obj._values[self.name] = cls.from_node(child, st.at(local))

    def format(self, obj: XMLObject, elem: Node) -> None:
        val: XMLObject | None = obj._values.get(self.name)
        if val is not None:
            sub = val.to_node(self.resolved()[1])
            if sub is not None:
                elem.children.append(sub)


class Children(_ModelRef[O], Field[list[O]]):
    """A list of child elements with one tag, described by another model class."""

    def __init__(self, cls: type[O] | Callable[[], type[O]], tag: str | None = None) -> None:
        super().__init__(cls, tag)
        self.default = []

    def xml_names(self) -> Sequence[str]:
        return (self.tag,)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        cls, tag, local = self.resolved()
        items = [cls.from_node(child, st.at(f"{local}[{i}]")) for i, child in enumerate(st.all(tag), 1)]
        if items:
            obj._values[self.name] = items

    def format(self, obj: XMLObject, elem: Node) -> None:
        tag = self.resolved()[1]
        for val in obj._values.get(self.name) or ():
            sub = val.to_node(tag)
            if sub is not None:
                elem.children.append(sub)


class Raw(Field[etree._Element | None]):
    """A child element whose children are kept verbatim, whatever they hold (``<metadata>``).

    Like libvirt, only namespaced children are kept, one per namespace (the first), and blank text
    between elements is dropped so that the output is indented afresh.
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def xml_names(self) -> Sequence[str]:
        return (self.tag,)

    def parse(self, obj: XMLObject, node: etree._Element, st: ParseState) -> None:
        child = st.first(self.tag)
        if child is None:
            return
        kept = etree.Element(self.tag)
        seen: set[str] = set()
        for sub in child:
            if not isinstance(sub.tag, str) or not sub.tag.startswith("{"):
                continue
            ns = sub.tag[1:].split("}", 1)[0]
            if ns in seen:
                continue
            seen.add(ns)
            copy = deepcopy(sub)
            copy.tail = None
            for el in copy.iter():
                if el.text is not None and not el.text.strip() and len(el):
                    el.text = None
                if el is not copy and el.tail is not None and not el.tail.strip():
                    el.tail = None
            kept.append(copy)
        obj._values[self.name] = kept

    def format(self, obj: XMLObject, elem: Node) -> None:
        val: etree._Element | None = obj._values.get(self.name)
        if val is not None:
            # libvirt prints these children with libxml2's own serialiser (double quotes, namespace
            # declarations as given): so does the writer, from the lxml elements.
            elem.sub(self.tag).verbatim = val


# ---------------------------------------------------------------------------------------------------
# Models

# Tests switch this on (record_parsed_fields) to learn which declared fields some document exercises.
_FIELD_LOG: set[tuple[type, str]] | None = None


@contextmanager
def record_parsed_fields() -> Iterator[set[tuple[type, str]]]:
    """Collect (model class, field name) of every field that held a value while parsing."""
    global _FIELD_LOG
    log: set[tuple[type, str]] = set()
    _FIELD_LOG = log
    try:
        yield log
    finally:
        _FIELD_LOG = None



class XMLObject:
    """A model of one XML element.  Subclasses set ``TAG`` and declare fields."""

    TAG: ClassVar[str] = ""
    # Fields in declaration order, with the attribute names and child tags they consume; computed once.
    _fields: ClassVar[tuple[Field[Any], ...]] = ()
    _attr_names: ClassVar[frozenset[str]] = frozenset()
    _child_tags: ClassVar[frozenset[str]] = frozenset()
    _has_body: ClassVar[bool] = False
    _field_names: ClassVar[frozenset[str]] = frozenset()
    _plain_attrs: ClassVar[dict[str, Field[Any]]] = {}
    _when_attrs: ClassVar[tuple[Field[Any], ...]] = ()
    _elem_fields: ClassVar[tuple[Field[Any], ...]] = ()
    _required: ClassVar[tuple[Field[Any], ...]] = ()
    # Formatted even when empty (libvirt prints e.g. <os> or <devices> always).
    _KEEP_EMPTY: ClassVar[bool] = False
    _TAIL: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        fields: dict[str, Field[Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, val in vars(klass).items():
                if isinstance(val, Field):
                    fields.pop(name, None)
                    fields[name] = val
        # Fields named in _TAIL (device info: boot, alias, address) come after the subclass's own.
        tail = [fields.pop(n) for n in cls._TAIL if n in fields]
        cls._fields = tuple([*fields.values(), *tail])
        cls._attr_names = frozenset(n for f in cls._fields if f.kind == "attr" for n in f.xml_names())
        cls._child_tags = frozenset(n for f in cls._fields if f.kind == "child" for n in f.xml_names())
        cls._has_body = any(f.kind == "body" for f in cls._fields)
        cls._field_names = frozenset(f.name for f in cls._fields)
        cls._plain_attrs = {f.xml_names()[0]: f for f in cls._fields if f.kind == "attr" and f.when is None}
        cls._when_attrs = tuple(f for f in cls._fields if f.kind == "attr" and f.when is not None)
        cls._elem_fields = tuple(f for f in cls._fields if f.kind != "attr")
        cls._required = tuple(f for f in cls._fields if getattr(f, "required", False))

    def __init__(self, **values: Any) -> None:
        self._values: dict[str, Any] = {}
        self._node: etree._Element | None = None
        names = self._field_names
        for k, v in values.items():
            if k not in names:
                raise TypeError(f"{type(self).__name__} has no field '{k}'")
            if v is not None:
                self._values[k] = v

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if v is not None)
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._values == cast(XMLObject, other)._values

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_node(cls: type[O], node: etree._Element, st: ParseState) -> O:
        obj = cls.__new__(cls)
        obj._values = {}
        obj._node = node
        # Attributes: only those present are looked at (most declared ones are absent); those whose
        # meaning depends on another attribute (``when``) once the others are known.
        by_name = cls._plain_attrs
        for name in node.attrib:
            f = by_name.get(name)  # type: ignore[arg-type]
            if f is not None:
                f.parse(obj, node, st)
        for f in cls._when_attrs:
            if f.when(obj):  # type: ignore[misc]
                f.parse(obj, node, st)
        for f in cls._required:
            if f.name not in obj._values:
                raise st.error(f"missing required attribute '{f.xml_names()[0]}' in element "
                               f"'{_local(node.tag)}'")
        if cls._elem_fields:
            st.index(node)
            for f in cls._elem_fields:
                if f.when is None or f.when(obj):
                    f.parse(obj, node, st)
        if _FIELD_LOG is not None:
            _FIELD_LOG.update((cls, f.name) for f in cls._fields if f.name in obj._values)
        if st.strict:
            obj._check_unknown(node, st)
        obj._after_parse(st)
        return obj

    def _check_unknown(self, node: etree._Element, st: ParseState) -> None:
        for name in node.attrib:
            if name not in self._attr_names:
                raise st.error(f"unknown attribute '{_local(str(name))}' on element '{_local(node.tag)}'")
        for child in node:
            if not isinstance(child.tag, str):
                continue  # comments and processing instructions
            if child.tag not in self._child_tags:
                raise st.error(f"unknown element '{_local(child.tag)}' in element '{_local(node.tag)}'")
        if not self._has_body and node.text and node.text.strip():
            raise st.error(f"element '{_local(node.tag)}' must not contain text")

    def _after_parse(self, st: ParseState) -> None:
        """Cross-field checks of a model that libvirt's parser makes; raise ``st.error``."""

    def to_node(self, tag: str | None = None) -> Node | None:
        elem = Node(tag or self.TAG)
        vals = self._values
        for f in self._fields:
            # Every field keeps its value under its name: absent ones have nothing to print.
            if f.name in vals and (f.when is None or f.when(self)):
                f.format(self, elem)
        if not self._KEEP_EMPTY and not elem.attrib and not elem.children and elem.text is None:
            return None
        return elem

    def children(self) -> Iterator[XMLObject]:
        for f in self._fields:
            val = self._values.get(f.name)
            if isinstance(val, XMLObject):
                yield val
            elif isinstance(val, list):
                yield from (v for v in val if isinstance(v, XMLObject))

    def walk(self) -> Iterator[XMLObject]:
        yield self
        for c in self.children():
            yield from c.walk()


def _local(tag: Any) -> str:
    tag = str(tag)
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


# ---------------------------------------------------------------------------------------------------
# Document parsing and formatting


def _make_parser() -> etree.XMLParser:
    # resolve_entities=False keeps entities unexpanded (no billion laughs, no external files);
    # no_network and load_dtd=False stop any fetch; huge_tree=False keeps libxml2's own depth limits.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_comments=True, remove_pis=True, dtd_validation=False, collect_ids=False)


def parse_document(text: str | bytes, root_tag: str, *,
                   max_bytes: int = MAX_DOCUMENT_BYTES) -> etree._Element:
    """Parse an XML document safely; return its root element, which must be ``root_tag``."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > max_bytes:
        raise XMLError(f"XML document is {size} bytes, more than the limit of {max_bytes} bytes")
    data = text.encode() if isinstance(text, str) else text
    try:
        root = etree.fromstring(data, _make_parser())
    except etree.XMLSyntaxError as e:
        raise XMLError(f"malformed XML: {e}") from e
    if root is None:
        raise XMLError("empty XML document")
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.doctype:
        # A DTD is the only way to declare entities; libvirt's documents never need one.
        raise XMLError("XML document must not have a DOCTYPE (entity declarations are not accepted)")
    for el in root.iter():
        if isinstance(el, etree._Entity):
            raise XMLError(f"XML entity reference '{el.text}' is not allowed")
        if isinstance(el.tag, str) and el.tag == "{http://www.w3.org/2001/XInclude}include":
            raise XMLError("XInclude is not allowed in domain XML")
    if root.tag != root_tag:
        raise XMLError(f"unexpected root element <{_local(root.tag)}>, expecting <{root_tag}>")
    return root


_SPECIAL = re.compile(r"[&<>'\"]")


def _escape(s: str) -> str:
    # The escaping of libvirt's XML writer: both quotes are escaped, in text as in attributes.
    if _SPECIAL.search(s) is None:
        return s
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def format_element(elem: Node, nsmap: dict[str, str] | None = None) -> str:
    """Serialise like libvirt: two-space indent, single-quoted attributes, ``<x/>`` for empty."""
    out: list[str] = []
    prefixes = {v: k for k, v in (nsmap or {}).items()}
    _write(elem, out, "", prefixes, nsmap or {})
    return "".join(out)


def _qname(tag: str, prefixes: dict[str, str]) -> str:
    if tag[0] == "{":
        ns, local = tag[1:].split("}", 1)
        pfx = prefixes.get(ns)
        return f"{pfx}:{local}" if pfx else local
    return tag


def _write(el: Node, out: list[str], pad: str, prefixes: dict[str, str], declare: dict[str, str]) -> None:
    tag = _qname(el.tag, prefixes)
    if el.verbatim is not None:
        kids = [c for c in el.verbatim if isinstance(c.tag, str)]
        if not kids:
            out.append(f"{pad}<{tag}/>\n")
            return
        out.append(f"{pad}<{tag}>\n")
        for kid in kids:
            dumped = etree.tostring(kid, encoding="unicode", pretty_print=True, with_tail=False)
            out.extend(f"{pad}  {line}\n" for line in dumped.rstrip("\n").split("\n"))
        out.append(f"{pad}</{tag}>\n")
        return
    parts = [pad, "<", tag]
    for k, v in el.attrib.items():
        parts.append(f" {k}='{_escape(v)}'")
    for pfx, ns in declare.items():
        parts.append(f" xmlns:{pfx}='{_escape(ns)}'" if pfx else f" xmlns='{_escape(ns)}'")
    if not el.children:
        if el.text is None:
            parts.append("/>\n")
        else:
            parts.append(f">{_escape(el.text)}</{tag}>\n")
        out.append("".join(parts))
        return
    parts.append(">\n")
    out.append("".join(parts))
    inner = pad + "  "
    for c in el.children:
        _write(c, out, inner, prefixes, {})
    out.append(f"{pad}</{tag}>\n")
