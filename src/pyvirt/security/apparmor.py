# SPDX-License-Identifier: LGPL-2.1-or-later
"""The AppArmor driver, as libvirt's security_apparmor.c with virt-aa-helper.

Each confined domain gets its own profile, named after its UUID as libvirt names it
(``libvirt-<uuid>``), in a profile directory (the system instance's is ``/etc/apparmor.d/pyvirt``):

==================================  ===============================================================
``TEMPLATE.qemu``                   optional: the administrator's template (else pyvirt's own,
                                    :data:`DEFAULT_TEMPLATE`); markers ``@PROFILE@``, ``@FILES@``,
                                    ``@ABSTRACTION@``
``abstractions/pyvirt-qemu``        what every QEMU needs; written when missing, never overwritten
``libvirt-<uuid>``                  the profile: the template filled in
``libvirt-<uuid>.files``            exactly the domain's own files: disks (``rwk``, or ``rk``
                                    read-only), kernel, initrd, firmware, NVRAM, logs and the
                                    runtime paths the process layer names (monitor socket, pid file)
==================================  ===============================================================

The ``.files`` part is regenerated whenever the domain's files change (:meth:`set_image` and
:meth:`restore_image` for hotplug) and the profile is reloaded. QEMU enters its profile at exec: the
exec shim writes ``exec libvirt-<uuid>`` to ``/proc/self/attr/apparmor/exec``
(:attr:`ChildCredentials.apparmor_exec_profile`), as ``aa_change_onexec`` does.

Paths come from the domain XML, so they are never trusted as AppArmor syntax: each rule's path is
quoted and every character AppArmor would read as a pattern (``* ? [ ] { } ^``) or an escape or
variable (``\\ " @``) is escaped (:func:`quote_path`), so that a rule matches that one literal path
only; a newline, NUL or other control character is refused with an error.

Loading goes through a :class:`ProfileLoader`. :class:`ParserLoader` runs ``apparmor_parser``
(``-r`` to load or replace, ``-R`` to remove) and first checks that the kernel has AppArmor
(``/sys/kernel/security/apparmor``): where it does not, starting a confined domain fails with an
error naming the fix. ``ParserLoader(compile_only=True)`` compiles each profile fully (``-Q -K -T``:
parse and build the policy, load nothing), which catches every syntax error without a kernel; the
tests and ``pyvirt-aa-helper --probe`` use it.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pyvirt.errors import InternalError, NotSupported, OperationFailed, OperationInvalid, codes
from pyvirt.security.manager import SecurityDriver
from pyvirt.security.privileges import ChildCredentials
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind
from pyvirt.security.seclabel import SecLabelLike, SecLabelSpec, requested_label

if TYPE_CHECKING:
    from pyvirt.conf.qemu_conf import QemuConf

__all__ = ["AppArmorDriver", "ProfileLoader", "ParserLoader", "RuntimePath", "ProfileSet",
           "apparmor_status", "quote_path", "profile_name", "file_rules", "render_profile",
           "DEFAULT_TEMPLATE", "DEFAULT_ABSTRACTION", "APPARMOR_SYSFS", "PROFILE_PREFIX"]

log = logging.getLogger(__name__)

APPARMOR_SYSFS = "/sys/kernel/security/apparmor"
PROFILE_PREFIX = "libvirt-"
_DATA = Path(__file__).with_name("apparmor")
DEFAULT_TEMPLATE = _DATA / "TEMPLATE.qemu"
DEFAULT_ABSTRACTION = _DATA / "abstractions" / "pyvirt-qemu"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: characters AppArmor reads as pattern, escape or variable syntax even inside quotes
_SPECIAL = set('\\"*?[]{}^@')
_PERMS = re.compile(r"[rwkml]+")


# --- the host ---------------------------------------------------------------------------------------

def apparmor_status(sysfs: str = APPARMOR_SYSFS) -> str | None:
    """None when the kernel enforces AppArmor; otherwise why not."""
    if os.path.isdir(sysfs):
        return None
    try:
        enabled = Path("/sys/module/apparmor/parameters/enabled").read_text().strip()
    except OSError:
        return f"the kernel has no AppArmor ({sysfs} does not exist)"
    if enabled != "Y":
        return "AppArmor is built into the kernel but disabled (boot with apparmor=1 security=apparmor)"
    return f"securityfs is not mounted on /sys/kernel/security ({sysfs} does not exist)"


def _unavailable(why: str) -> NotSupported:
    return NotSupported(f"security driver 'apparmor' is not usable on this host: {why}; enable "
                        "AppArmor (boot with apparmor=1 security=apparmor and install the apparmor "
                        "package) or set security_driver = \"none\" (or \"selinux\") in qemu.conf",
                        domain=codes.VIR_FROM_SECURITY)


# --- profile text -----------------------------------------------------------------------------------

def profile_name(uuid: str) -> str:
    """``libvirt-<uuid>``, the profile of the domain ``uuid`` (libvirt's naming)."""
    if not _UUID.fullmatch(uuid):
        raise OperationInvalid(f"'{uuid}' is not a domain UUID in canonical form "
                               "(8-4-4-4-12 lowercase hex digits)", domain=codes.VIR_FROM_SECURITY)
    return PROFILE_PREFIX + uuid


def quote_path(path: str) -> str:
    """``path`` as a quoted AppArmor path that matches exactly that path.

    Raises ValueError for what cannot be written in a profile line: a relative path, a newline,
    NUL or any other control character.
    """
    if not path.startswith("/"):
        raise ValueError(f"AppArmor rules need absolute paths, got {path!r}")
    bad = next((c for c in path if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        what = {"\n": "a newline", "\0": "a NUL byte"}.get(bad, f"the control character {bad!r}")
        raise ValueError(f"the path {path!r} contains {what}, which cannot appear in an AppArmor "
                         "rule; rename the file")
    return '"' + "".join("\\" + c if c in _SPECIAL else c for c in path) + '"'


@dataclass(frozen=True)
class RuntimePath:
    """A path QEMU needs that is not one of the domain's resources: a monitor or chardev socket,
    the pid file, QEMU's own log, a per-domain directory (``tree=True``: everything below it)."""

    path: str
    perms: str = "rw"
    tree: bool = False

    def __post_init__(self) -> None:
        if not _PERMS.fullmatch(self.perms):
            raise ValueError(f"AppArmor permissions for {self.path!r} must be letters of 'rwkml', "
                             f"got {self.perms!r}")
        quote_path(self.path)


def _resource_perms(r: Resource) -> str:
    if r.kind in (ResourceKind.SERIAL_LOG, ResourceKind.LOG):
        return "rw"
    if r.read_only:
        return "rk" if r.kind.accepts_block_device else "r"
    return "rwk"


def file_rules(resources: Iterable[Resource], runtime: Iterable[RuntimePath] = ()) -> list[str]:
    """The rules of a ``.files`` include: one per path (and per resolved path when a symlink leads
    elsewhere, as AppArmor checks the resolved one), most permissive wins for duplicates."""
    perms: dict[str, str] = {}

    def add(quoted: str, p: str) -> None:
        have = perms.get(quoted, "")
        perms[quoted] = "".join(c for c in "rwkml" if c in have or c in p)

    for r in resources:
        p = _resource_perms(r)
        add(quote_path(r.path), p)
        resolved = os.path.realpath(r.path)
        if resolved != r.path:
            add(quote_path(resolved), p)
    for rt in runtime:
        if rt.tree:
            quoted = quote_path(rt.path.rstrip("/") or "/")
            add(quoted[:-1] + '/"', "r")
            add(quoted[:-1] + '/**"', rt.perms)
        else:
            add(quote_path(rt.path), rt.perms)
    return [f"  {q} {p}," for q, p in perms.items()]


def _include_path(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"\n\0'):
        raise OperationInvalid(f"the AppArmor profile directory {text!r} contains a quote or a "
                               "newline; choose another directory", domain=codes.VIR_FROM_SECURITY)
    return text


def render_profile(template: str, name: str, files: Path, abstraction: Path) -> str:
    """The profile text: ``template`` with its markers filled in."""
    for marker in ("@PROFILE@", "@FILES@"):
        if marker not in template:
            raise OperationInvalid(f"the AppArmor template lacks the {marker} marker; restore it (see "
                                   f"{DEFAULT_TEMPLATE})", domain=codes.VIR_FROM_SECURITY)
    return (template.replace("@PROFILE@", name).replace("@FILES@", _include_path(files))
            .replace("@ABSTRACTION@", _include_path(abstraction)))


def _files_text(name: str, rules: Sequence[str]) -> str:
    return (f"# The files of the domain of profile {name}; generated by pyvirt, rewritten whenever "
            "they change.\n" + "".join(r + "\n" for r in rules))


# --- the files on disk ------------------------------------------------------------------------------

class ProfileSet:
    """The profile directory: where each domain's two files live and how they are written."""

    def __init__(self, directory: str | os.PathLike[str], template: str | None = None) -> None:
        self.dir = Path(directory)
        self._template = template

    @property
    def abstraction(self) -> Path:
        return self.dir / "abstractions" / "pyvirt-qemu"

    def template(self) -> str:
        if self._template is not None:
            return self._template
        custom = self.dir / "TEMPLATE.qemu"
        return (custom if custom.exists() else DEFAULT_TEMPLATE).read_text()

    def profile(self, name: str) -> Path:
        return self.dir / name

    def files(self, name: str) -> Path:
        return self.dir / (name + ".files")

    def render(self, name: str, rules: Sequence[str]) -> tuple[str, str]:
        """(profile text, files text) for profile ``name``."""
        return (render_profile(self.template(), name, self.files(name), self.abstraction),
                _files_text(name, rules))

    def ensure_abstraction(self) -> None:
        if not self.abstraction.exists():
            self.abstraction.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.abstraction, DEFAULT_ABSTRACTION.read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None


# --- loading ----------------------------------------------------------------------------------------

class ProfileLoader(abc.ABC):
    @abc.abstractmethod
    def load(self, profile: Path) -> None:
        """Load or replace the profile in file ``profile``."""

    @abc.abstractmethod
    def unload(self, profile: Path) -> None:
        """Remove the profile of file ``profile`` from the kernel."""


class ParserLoader(ProfileLoader):
    """``apparmor_parser``. ``compile_only``: compile the policy but load nothing (for hosts whose
    kernel has no AppArmor: every syntax and semantic error of a profile is still found)."""

    def __init__(self, parser: str | None = None, *, compile_only: bool = False,
                 include_dirs: Sequence[str] = (), sysfs: str = APPARMOR_SYSFS) -> None:
        self.parser = parser or shutil.which("apparmor_parser") or "/usr/sbin/apparmor_parser"
        self.compile_only = compile_only
        self.include_dirs = tuple(include_dirs)
        self.sysfs = sysfs
        self.loaded: set[str] = set()  # profile files loaded (or compiled) by this loader

    def _run(self, args: list[str], profile: Path) -> None:
        if not os.path.exists(self.parser):
            raise NotSupported(f"apparmor_parser ({self.parser}) is not installed; install the "
                               "apparmor package", domain=codes.VIR_FROM_SECURITY)
        if not self.compile_only:
            why = apparmor_status(self.sysfs)
            if why is not None:
                raise _unavailable(why)
        cmd = [self.parser, *args]
        for d in self.include_dirs:
            cmd += ["-I", d]
        cmd.append(str(profile))
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("Cache read/write")]
            raise OperationFailed(f"apparmor_parser refused the profile {profile}: "
                                  f"{' '.join(lines).strip() or 'exit status ' + str(res.returncode)}",
                                  domain=codes.VIR_FROM_SECURITY)

    def load(self, profile: Path) -> None:
        self._run(["-Q", "-K", "-T"] if self.compile_only else ["-r"], profile)
        self.loaded.add(str(profile))

    def unload(self, profile: Path) -> None:
        if not self.compile_only:
            self._run(["-R"], profile)
        self.loaded.discard(str(profile))


# --- the driver -------------------------------------------------------------------------------------

@dataclass
class _Domain:
    spec: SecLabelSpec
    runtime: tuple[RuntimePath, ...] = ()
    resources: list[Resource] = field(default_factory=list)
    generated: bool = False   #: whether this driver wrote (and loaded) the profile


class AppArmorDriver(SecurityDriver):
    """libvirt's AppArmor model: one generated profile per dynamically labelled domain."""

    name = "apparmor"
    doi = "0"

    def __init__(self, profiles: ProfileSet, loader: ProfileLoader, *, default_confined: bool = True,
                 require_confined: bool = False) -> None:
        super().__init__()
        self.profiles = profiles
        self.loader = loader
        self.default_confined = default_confined
        self.require_confined = require_confined
        self._lock = threading.RLock()
        self._domains: dict[str, _Domain] = {}

    @classmethod
    def from_conf(cls, conf: QemuConf, profile_dir: str | os.PathLike[str], *,
                  loader: ProfileLoader | None = None) -> AppArmorDriver:
        """The driver qemu.conf asks for, its profiles in ``profile_dir``. Without ``loader``,
        the host's kernel (which must have AppArmor: otherwise a NotSupported error says so)."""
        if loader is None:
            why = apparmor_status()
            if why is not None:
                raise _unavailable(why)
            loader = ParserLoader()
        return cls(ProfileSet(profile_dir), loader, default_confined=conf.security_default_confined,
                   require_confined=conf.security_require_confined)

    def secmodel(self) -> tuple[str, str, dict[str, str]]:
        """(model, doi, base labels): AppArmor has no base labels."""
        return self.name, self.doi, {}

    def label_of(self, uuid: str) -> SecLabelSpec | None:
        with self._lock:
            d = self._domains.get(uuid)
            return d.spec if d is not None else None

    # --- labels ------------------------------------------------------------------------------------

    def gen_label(self, ctx: DomainSecurityContext, seclabels: Iterable[SecLabelLike] = (), *,
                  runtime: Iterable[RuntimePath] = ()) -> SecLabelSpec:
        """The domain's label from its ``<seclabel>`` elements; ``runtime`` names the paths that
        are not resources which its QEMU needs (sockets, pid file, log)."""
        spec = requested_label(seclabels, self.name, domain=ctx.name,
                               default_confined=self.default_confined,
                               require_confined=self.require_confined)
        if spec.type == "dynamic":
            name = profile_name(ctx.uuid)
            spec = SecLabelSpec(self.name, "dynamic", True, label=name, imagelabel=name)
        self._add(ctx, _Domain(spec, tuple(runtime)))
        return spec

    def reserve_label(self, ctx: DomainSecurityContext, spec: SecLabelSpec, *,
                      runtime: Iterable[RuntimePath] = ()) -> None:
        """Take back a running domain's label after a restart (its profile stays loaded)."""
        d = _Domain(spec, tuple(runtime), list(ctx.resources), generated=spec.type == "dynamic")
        self._add(ctx, d)

    def release_label(self, ctx: DomainSecurityContext) -> None:
        with self._lock:
            self._domains.pop(ctx.uuid, None)

    def _add(self, ctx: DomainSecurityContext, d: _Domain) -> None:
        with self._lock:
            if ctx.uuid in self._domains:
                raise InternalError(f"domain '{ctx.name}' already has an AppArmor label; release "
                                    "it first")
            self._domains[ctx.uuid] = d

    def _domain(self, ctx: DomainSecurityContext) -> _Domain:
        d = self._domains.get(ctx.uuid)
        if d is None:
            raise InternalError(f"domain '{ctx.name}' has no AppArmor label: gen_label() or "
                                "reserve_label() must come first")
        return d

    # --- the child ---------------------------------------------------------------------------------

    def set_process_label(self, ctx: DomainSecurityContext, creds: ChildCredentials) -> ChildCredentials:
        spec = self._domain(ctx).spec
        if not spec.confined or not spec.label:
            return creds
        return ChildCredentials(creds.uid, creds.gid, creds.groups, creds.clear_capabilities,
                                creds.no_new_privs, selinux_exec_label=creds.selinux_exec_label,
                                apparmor_exec_profile=spec.label)

    # --- profiles ----------------------------------------------------------------------------------

    def render(self, ctx: DomainSecurityContext, resources: Iterable[Resource] | None = None
               ) -> tuple[str, str]:
        """(profile text, files text) the domain gets, without writing anything."""
        d = self._domain(ctx)
        if d.spec.type != "dynamic" or not d.spec.label:
            raise OperationInvalid(f"domain '{ctx.name}' has no generated AppArmor profile (its "
                                   f"label is {d.spec.type})", domain=codes.VIR_FROM_SECURITY)
        items = list(ctx.resources if resources is None else resources)
        try:
            rules = file_rules(items, d.runtime)
        except ValueError as e:
            raise OperationInvalid(f"domain '{ctx.name}': {e}", domain=codes.VIR_FROM_SECURITY) from e
        return self.profiles.render(d.spec.label, rules)

    def _write(self, ctx: DomainSecurityContext, d: _Domain, resources: list[Resource]) -> None:
        """Write the domain's two files and load them, journalled: undo puts back the previous files
        (and the kernel's previous profile) or removes them."""
        assert d.spec.label is not None
        profile_text, files_text = self.render(ctx, resources)  # checks every path first
        name = d.spec.label
        profile, files = self.profiles.profile(name), self.profiles.files(name)
        old_profile, old_files = _read(profile), _read(files)
        was_loaded, old_resources = d.generated, list(d.resources)

        loaded_now = [False]

        def undo() -> None:
            if loaded_now[0] and not was_loaded:
                self.loader.unload(profile)  # while the file still names it
            for path, text in ((files, old_files), (profile, old_profile)):
                if text is None:
                    path.unlink(missing_ok=True)
                else:
                    _write_atomic(path, text)
            if loaded_now[0] and was_loaded and old_profile is not None:
                self.loader.load(profile)  # the kernel gets the previous rules back
            d.resources, d.generated = old_resources, was_loaded

        self.journal(f"the AppArmor profile {name}", undo)
        try:
            self.profiles.dir.mkdir(parents=True, exist_ok=True)
            self.profiles.ensure_abstraction()
            _write_atomic(files, files_text)
            _write_atomic(profile, profile_text)
        except OSError as e:
            raise OperationFailed(f"domain '{ctx.name}': cannot write the AppArmor profile {name} "
                                  f"in {self.profiles.dir}: {e.strerror}",
                                  domain=codes.VIR_FROM_SECURITY) from e
        self.loader.load(profile)
        loaded_now[0] = True
        d.resources, d.generated = resources, True
        log.info("domain '%s': AppArmor profile %s loaded", ctx.name, name)

    def _set_all(self, ctx: DomainSecurityContext) -> None:
        with self._lock:
            d = self._domain(ctx)
            if d.spec.type != "dynamic":
                return  # a static profile is the administrator's; 'none' is unconfined
            self._write(ctx, d, list(ctx.resources))

    def _set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None:
        with self._lock:
            d = self._domain(ctx)
            if d.spec.type != "dynamic":
                return
            if resource in d.resources:
                return
            self._write(ctx, d, [*d.resources, resource])

    def _restore_image(self, ctx: DomainSecurityContext, resource: Resource) -> list[str]:
        with self._lock:
            d = self._domains.get(ctx.uuid)
            if d is None or d.spec.type != "dynamic" or resource not in d.resources:
                return []
            try:
                self._write(ctx, d, [r for r in d.resources if r != resource])
            except (OperationFailed, OperationInvalid, NotSupported) as e:
                return [f"domain '{ctx.name}': cannot take {resource.describe()} out of its "
                        f"AppArmor profile: {e}"]
            return []

    def _restore_all(self, ctx: DomainSecurityContext) -> list[str]:
        with self._lock:
            d = self._domains.get(ctx.uuid)
            if d is None or d.spec.type != "dynamic" or not d.spec.label:
                return []
            name = d.spec.label
            profile, files = self.profiles.profile(name), self.profiles.files(name)
            problems: list[str] = []
            if d.generated and profile.exists():
                try:
                    self.loader.unload(profile)
                except (OperationFailed, NotSupported) as e:
                    problems.append(f"domain '{ctx.name}': cannot unload AppArmor profile {name}: {e}")
            for path in (profile, files):
                try:
                    path.unlink(missing_ok=True)
                except OSError as e:
                    problems.append(f"domain '{ctx.name}': cannot remove {path}: {e.strerror}")
            d.generated, d.resources = False, []
            return problems
