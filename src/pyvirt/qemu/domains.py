# SPDX-License-Identifier: LGPL-2.1-or-later
"""Persistent domain definitions of one driver instance: ``<domain_config_dir>/NAME.xml``.

Each file holds the inactive XML exactly as ``dumpxml --inactive`` prints it, written atomically,
so that a crash leaves either the old definition or the new one. Definitions are read when first
needed, parsed with the driver's post-parse and validation hooks (as libvirt re-parses its configs
when the driver starts).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

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

    def __init__(self, config_dir: Path, parser: DomainParserConfig) -> None:
        self.config_dir = config_dir
        self._parser = parser
        self._lock = threading.RLock()
        self._by_name: dict[str, Domain] | None = None

    def _domains(self) -> dict[str, Domain]:
        if self._by_name is None:
            self._by_name = self._load()
        return self._by_name

    def _load(self) -> dict[str, Domain]:
        from pyvirt.xml.domain import parse_domain

        found: dict[str, Domain] = {}
        for path in sorted(self.config_dir.glob("*.xml")):
            try:
                dom = parse_domain(path.read_bytes(), ctx=self._parser)
            except (OSError, XMLError) as exc:
                # One bad file must not hide the other domains; libvirt skips it the same way.
                print(f"pyvirt: warning: {path}: definition skipped: {exc}", file=sys.stderr)
                continue
            if path.stem != dom.name:
                print(f"pyvirt: warning: {path}: skipped, it defines domain '{dom.name}'",
                      file=sys.stderr)
                continue
            found[path.stem] = dom
        return found

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

    def check_conflicts(self, dom: Domain) -> None:
        """Refuse ``dom`` when its name or UUID belongs to another definition."""
        from pyvirt.qemu.validate import check_define_conflicts

        with self._lock:
            try:
                check_define_conflicts(dom, self._domains().values())
            except XMLError as exc:
                raise DomainExistsError(str(exc)) from None

    def define(self, xml: str | bytes, *, validate: bool = False) -> Domain:
        """Parse, check against the other definitions, store; the new or updated domain."""
        dom = self.parse(xml, validate=validate)
        name = dom.name or ""
        with self._lock:
            domains = self._domains()
            self.check_conflicts(dom)
            atomic_write_text(self.path_of(name), dom.to_xml(inactive=True), mode=0o600)
            domains[name] = dom
        return dom

    def get(self, name: str) -> Domain:
        with self._lock:
            dom = self._domains().get(name)
        if dom is None:
            raise NoDomainError.matching("name", name)
        return dom

    def get_by_uuid(self, uuid: str) -> Domain:
        wanted = uuid.replace("-", "").lower()
        with self._lock:
            for dom in self._domains().values():
                if (dom.uuid or "").replace("-", "").lower() == wanted:
                    return dom
        raise NoDomainError.matching("uuid", uuid)

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._domains()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._domains())

    def undefine(self, name: str) -> None:
        with self._lock:
            self.get(name)
            try:
                os.unlink(self.path_of(name))
            except FileNotFoundError:
                pass  # removed behind our back: the definition is gone either way
            except OSError as exc:
                raise OperationFailed(f"cannot remove {self.path_of(name)}: {exc.strerror}") from exc
            del self._domains()[name]
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
