# SPDX-License-Identifier: LGPL-2.1-or-later
"""Persistent domain definitions of one driver instance: ``<domain_config_dir>/NAME.xml``.

Each file holds the inactive XML exactly as ``dumpxml --inactive`` prints it, written atomically,
so that a crash leaves either the old definition or the new one. Definitions are read when first
needed, parsed with the driver's post-parse and validation hooks (as libvirt re-parses its configs
when the driver starts).
"""

from __future__ import annotations

import functools
import os
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pyvirt import _errcodes as codes
from pyvirt.errors import InternalError, OperationFailed, PyvirtError, XMLError
from pyvirt.fsutil import atomic_write_text

if TYPE_CHECKING:
    from pyvirt.xml.domain import Domain, DomainParserConfig


class NoDomainError(PyvirtError):
    code = codes.VIR_ERR_NO_DOMAIN
    domain = codes.VIR_FROM_QEMU

    @classmethod
    def matching(cls, what: str, value: str) -> NoDomainError:
        """libvirt's wording and extra fields, which remote clients compare."""
        detail = f"no domain with matching {what} '{value}'"
        return cls(f"Domain not found: {detail}", str1="Domain not found: %s", str2=detail)


class DomainExistsError(PyvirtError):
    code = codes.VIR_ERR_OPERATION_FAILED
    domain = codes.VIR_FROM_QEMU


class DomainStore:
    """The defined domains, by name, backed by one XML file each."""

    def __init__(self, config_dir: Path, parser: Callable[[], DomainParserConfig]) -> None:
        """``parser`` makes the driver's parser hooks, when a definition is first parsed."""
        self.config_dir = config_dir
        self._make_parser = parser
        self._parser_config: DomainParserConfig | None = None
        self._lock = threading.RLock()
        #: name -> normalised UUID (32 lower-case hex digits) of every definition; read from the
        #: files' <name> and <uuid> alone, so that listing 1000 domains parses none of them
        self._index: dict[str, str] | None = None
        self._by_uuid: dict[str, str] = {}
        #: the definitions parsed so far (a definition is parsed when first needed)
        self._parsed: dict[str, Domain] = {}
        #: summary() of parsed definitions, by name: (the definition it was read from, it)
        self._summaries: dict[str, tuple[Domain, Summary]] = {}

    @property
    def _parser(self) -> DomainParserConfig:
        if self._parser_config is None:
            self._parser_config = self._make_parser()
        return self._parser_config

    def _names(self) -> dict[str, str]:
        if self._index is None:
            self._index = self._load_index()
            self._by_uuid = {u: n for n, u in self._index.items()}
        return self._index

    def _load_index(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for path in sorted(self.config_dir.glob("*.xml")):
            try:
                data = path.read_bytes()
            except OSError as exc:
                print(f"pyvirt: warning: {path}: definition skipped: {exc.strerror}", file=sys.stderr)
                continue
            head = _HEAD.match(data)
            if head is not None:  # the layout pyvirt writes (libvirt's): name and uuid come first
                name, uuid = _unescape(head.group(1).decode()), head.group(2).decode()
            else:  # written by something else: parse it whole (and keep it)
                dom = self._parse_file(path, data)
                if dom is None:
                    continue
                name, uuid = dom.name or "", dom.uuid or ""
            if path.stem != name:
                print(f"pyvirt: warning: {path}: skipped, it defines domain '{name}'", file=sys.stderr)
                self._parsed.pop(name, None)
                continue
            found[name] = _norm_uuid(uuid)
        return found

    def _parse_file(self, path: Path, data: bytes) -> Domain | None:
        from pyvirt.xml.domain import parse_domain

        try:
            dom = parse_domain(data, ctx=self._parser)
        except XMLError as exc:
            # One bad file must not hide the other domains; libvirt skips it the same way.
            print(f"pyvirt: warning: {path}: definition skipped: {exc}", file=sys.stderr)
            return None
        self._parsed[dom.name or ""] = dom
        return dom

    def _domain(self, name: str) -> Domain | None:
        """The parsed definition of ``name`` (parsed now if need be); None if there is none."""
        if name not in self._names():
            return None
        dom = self._parsed.get(name)
        if dom is None:
            path = self.path_of(name)
            try:
                data = path.read_bytes()
            except OSError:
                return None
            dom = self._parse_file(path, data)
            if dom is None or dom.name != name:
                return None
        return dom

    def path_of(self, name: str) -> Path:
        return self.config_dir / f"{name}.xml"

    @property
    def autostart_dir(self) -> Path:
        return self.config_dir / "autostart"

    def autostart_link(self, name: str) -> Path:
        return self.autostart_dir / f"{name}.xml"

    def parse(self, xml: str | bytes, *, validate: bool = False) -> Domain:
        """A definition parsed with this driver's hooks, neither checked against others nor stored."""
        from pyvirt.xml.domain import parse_domain

        dom = parse_domain(xml, ctx=self._parser, validate=validate)
        if not dom.name:
            raise InternalError("the domain parser accepted a domain without a name")
        return dom

    def parse_live(self, xml: str | bytes) -> Domain:
        """A running domain's live XML (its status), parsed as libvirt parses status XML: the runtime
        names a definition drops (the tap devices' ``vnetN``) are kept."""
        from pyvirt.qemu.postparse import QemuDomainConfig
        from pyvirt.xml.domain import parse_domain

        parser = self._parser
        return parse_domain(xml, ctx=parser.for_status() if isinstance(parser, QemuDomainConfig) else parser)

    def check_conflicts(self, dom: Domain) -> None:
        """Refuse ``dom`` when its name or UUID belongs to another definition."""
        from pyvirt.qemu.validate import check_define_conflicts

        with self._lock:
            others = [_Known(name=n, uuid=_uuid_text(u)) for n, u in self._names().items()]
            try:
                check_define_conflicts(dom, others)  # type: ignore[arg-type]
            except XMLError as exc:
                raise DomainExistsError(str(exc)) from None

    def define(self, xml: str | bytes, *, validate: bool = False) -> Domain:
        """Parse, check against the other definitions, store; the new or updated domain."""
        dom = self.parse(xml, validate=validate)
        name = dom.name or ""
        with self._lock:
            index = self._names()
            self.check_conflicts(dom)
            atomic_write_text(self.path_of(name), dom.to_xml(inactive=True), mode=0o600)
            index[name] = _norm_uuid(dom.uuid)
            self._by_uuid[index[name]] = name
            self._parsed[name] = dom
        return dom

    def get(self, name: str) -> Domain:
        with self._lock:
            dom = self._domain(name)
        if dom is None:
            raise NoDomainError.matching("name", name)
        return dom

    def get_by_uuid(self, uuid: str) -> Domain:
        with self._lock:
            self._names()
            name = self._by_uuid.get(_norm_uuid(uuid))
            dom = self._domain(name) if name is not None else None
        if dom is None:
            raise NoDomainError.matching("uuid", uuid)
        return dom

    def summary(self, name: str) -> Summary | None:
        """The figures virDomainGetInfo/OSType need of an inactive definition, read from its file
        without the XML models (None: no such definition, or a layout not pyvirt's own)."""
        with self._lock:
            if name not in self._names():
                return None
            dom = self._parsed.get(name)
        if dom is not None:
            # Kept per definition object: a definition changes by being replaced (define()
            # parses anew), never in place, and info() of an idle domain is a hot call
            cached = self._summaries.get(name)
            if cached is None or cached[0] is not dom:
                cached = self._summaries[name] = (dom, _summary_of(dom))
            return cached[1]
        try:
            text = self.path_of(name).read_text()
        except OSError:
            return None
        mem, cur, vcpu = _MEMORY.search(text), _CURRENT.search(text), _VCPU.search(text)
        os_block = _OS_BLOCK.search(text)
        os_type = _OS_TYPE.search(os_block.group(1)) if os_block is not None else None
        if mem is None or vcpu is None or os_type is None:
            return None
        current = _VCPU_CURRENT.search(vcpu.group(1))
        return Summary(os_type=os_type.group(1), memory=int(mem.group(1)),
                       current_memory=int(cur.group(1)) if cur else int(mem.group(1)),
                       vcpus=int(current.group(1)) if current else int(vcpu.group(2)))

    def uuid_of(self, name: str) -> str | None:
        """The UUID of definition ``name`` without parsing it (None: no such definition)."""
        index = self._index  # once loaded, changed only in place under the lock: reads need none
        if index is None:
            with self._lock:
                index = self._names()
        u = index.get(name)
        return _uuid_text(u) if u is not None else None

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._names()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._names())

    def undefine(self, name: str) -> None:
        with self._lock:
            self.get(name)
            try:
                os.unlink(self.path_of(name))
            except FileNotFoundError:
                pass  # removed behind our back: the definition is gone either way
            except OSError as exc:
                raise OperationFailed(f"cannot remove {self.path_of(name)}: {exc.strerror}") from exc
            uuid = self._names().pop(name)
            self._parsed.pop(name, None)
            self._summaries.pop(name, None)
            if self._by_uuid.get(uuid) == name:
                del self._by_uuid[uuid]
            # libvirt drops the autostart mark with the definition: a later domain of the same
            # name must not inherit it.
            self.set_autostart(name, False)

    # -- autostart: a symlink etc/qemu/autostart/NAME.xml -> ../NAME.xml, as libvirt keeps it ---------

    def autostart(self, name: str) -> bool:
        return os.path.lexists(self.autostart_link(name))

    def set_autostart(self, name: str, enabled: bool) -> None:
        link = self.autostart_link(name)
        try:
            if enabled:
                self.autostart_dir.mkdir(mode=0o755, exist_ok=True)
                if not os.path.lexists(link):
                    os.symlink(self.path_of(name), link)
            elif os.path.lexists(link):
                os.unlink(link)
        except OSError as exc:
            raise OperationFailed(f"cannot {'create' if enabled else 'remove'} autostart link {link}: "
                                  f"{exc.strerror}") from exc

    def autostart_names(self) -> list[str]:
        """Defined domains marked for autostart (a dangling mark of an unknown domain is skipped)."""
        try:
            marked = sorted(p.name[:-4] for p in self.autostart_dir.iterdir() if p.name.endswith(".xml"))
        except FileNotFoundError:
            return []
        return [n for n in marked if self.has(n)]


def _norm_uuid(uuid: str | None) -> str:
    return (uuid or "").replace("-", "").lower()


#: the head of a definition as pyvirt (and libvirt) writes it: <domain ...>, <name>, <uuid>
_HEAD = re.compile(rb"\s*<domain\b[^>]*>\s*<name>([^<]*)</name>\s*<uuid>([0-9a-fA-F-]{32,36})</uuid>")


class Summary(NamedTuple):
    """What ``virDomainGetInfo`` and ``OSType`` report of an inactive domain."""

    os_type: str
    memory: int          #: KiB, <memory>
    current_memory: int  #: KiB, <currentMemory> (else <memory>)
    vcpus: int           #: <vcpu current=...> (else <vcpu>)


def _summary_of(dom: Domain) -> Summary:
    os_type = dom.os.type if dom.os is not None else None
    memory = dom.memory or 0
    vcpus = (dom.vcpu.current or dom.vcpu.count or 1) if dom.vcpu is not None else 1
    return Summary((os_type.value if os_type is not None else None) or "hvm", memory,
                   dom.current_memory or memory, vcpus)


# The stored layout (libvirt's formatting, top-level elements indented by two spaces). Anything
# else (a hand-written file) does not match, and the caller parses the definition instead.
_MEMORY = re.compile(r"^  <memory\b[^>]*\bunit='KiB'[^>]*>(\d+)</memory>$", re.M)
_CURRENT = re.compile(r"^  <currentMemory\b[^>]*\bunit='KiB'[^>]*>(\d+)</currentMemory>$", re.M)
_VCPU = re.compile(r"^  <vcpu\b([^>]*)>(\d+)</vcpu>$", re.M)
_VCPU_CURRENT = re.compile(r"\bcurrent='(\d+)'")
_OS_BLOCK = re.compile(r"^  <os\b[^>]*>\n(.*?)^  </os>$", re.M | re.S)
_OS_TYPE = re.compile(r"^    <type\b[^>]*>(\w+)</type>$", re.M)


class _Known(NamedTuple):
    name: str
    uuid: str


_ENTITY = re.compile(r"&(lt|gt|quot|apos|amp|#[0-9]+|#x[0-9a-fA-F]+);")
_NAMED = {"lt": "<", "gt": ">", "quot": '"', "apos": "'", "amp": "&"}


def _unescape(text: str) -> str:
    """XML character data to text (xml.sax.saxutils would import urllib and email: 18 ms)."""
    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref[0] != "#":
            return _NAMED[ref]
        return chr(int(ref[2:], 16) if ref[1] == "x" else int(ref[1:]))

    return _ENTITY.sub(one, text) if "&" in text else text


@functools.lru_cache(maxsize=4096)  # the same few UUIDs, asked for at every call of a client
def _uuid_text(norm: str) -> str:
    return f"{norm[:8]}-{norm[8:12]}-{norm[12:16]}-{norm[16:20]}-{norm[20:]}" if len(norm) == 32 else norm
