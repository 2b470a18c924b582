# SPDX-License-Identifier: LGPL-2.1-or-later
"""The SELinux driver (sVirt), as libvirt's security_selinux.c.

sVirt model (the default). Every confined domain with a dynamic label gets a unique pair of MCS
categories: QEMU runs as ``system_u:system_r:svirt_tcg_t:s0:cX,cY`` (``svirt_t`` for KVM) and its
exclusive files are labelled ``system_u:object_r:svirt_image_t:s0:cX,cY``, so that one QEMU cannot
open another's images even though both run in the same type. No two running domains of a driver
share a pair: the pairs in use are reserved (:meth:`SELinuxDriver.reserve_label` puts back the
pairs of domains found running when a driver restarts). Shareable disks get
``svirt_image_t:s0`` (every sVirt QEMU may use them), read-only ones and kernels, initrds and
firmware get the content type ``virt_content_t:s0`` (read by all, written by none). A static label is
used as given and, unless ``relabel='yes'``, no file is touched. Stopping the domain puts back each
exclusive file's original label, remembered in the ``trusted.pyvirt.security.selinux`` attribute
(pyvirt's own name, as for DAC); shared and read-only files keep the generic label, as in libvirt,
because another domain may still use them. The types come from the host policy's
``contexts/virtual_domain_context`` and ``virtual_image_context`` when it has them.

Basic model (``mode="basic"``): no per-domain categories; every QEMU runs in ``qemu_t`` and pyvirt
changes no file label, but refuses to start a domain whose disks do not carry ``virt_image_t`` (or
``virt_content_t`` for read-only ones), naming the ``chcon`` that fixes it.

How labels reach the host. Files: the ``security.selinux`` extended attribute (what libselinux's
``setfilecon`` writes). The process: the exec shim writes the context to ``/proc/self/attr/exec``
before exec'ing QEMU (:attr:`ChildCredentials.selinux_exec_label`). Both go through a
:class:`LabelStore`: :class:`XattrLabelStore` is the real one; :class:`MemoryLabelStore` keeps
labels in a dict, for tests on hosts without SELinux (a kernel without SELinux stores
``security.selinux`` like any attribute but enforces nothing, and the machine pyvirt is tested on
has none). A driver asked for on a host without SELinux refuses to start (:func:`selinux_status`),
rather than pretending to confine.
"""

from __future__ import annotations

import abc
import errno
import logging
import os
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pyvirt.errors import InternalError, NotSupported, OperationFailed, OperationInvalid, codes
from pyvirt.security.manager import SecurityDriver, create_empty_file
from pyvirt.security.privileges import ChildCredentials
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind
from pyvirt.security.seclabel import SecLabelLike, SecLabelSpec, requested_label

if TYPE_CHECKING:
    from pyvirt.conf.qemu_conf import QemuConf

__all__ = ["SELinuxDriver", "SELinuxContexts", "Context", "LabelStore", "XattrLabelStore",
           "MemoryLabelStore", "selinux_status", "SELINUX_XATTR", "REMEMBER_XATTR"]

log = logging.getLogger(__name__)

SELINUX_XATTR = "security.selinux"
REMEMBER_XATTR = "trusted.pyvirt.security.selinux"
#: remembered for a file that had no label (only where the kernel does not label every file)
_UNLABELLED = "-"
#: libvirt's category range: c0.c1023
MCS_CATEGORIES = 1024


# --- the host ---------------------------------------------------------------------------------------

def selinux_status(sysfs: str = "/sys/fs/selinux",
                   proc_filesystems: str = "/proc/filesystems") -> str | None:
    """None when the host enforces SELinux policy (selinuxfs is mounted with a policy); otherwise why
    not, in words that fit 'SELinux is not usable on this host: ...'."""
    if os.path.exists(os.path.join(sysfs, "enforce")):
        return None
    try:
        with open(proc_filesystems) as f:
            known = any(line.split()[-1:] == ["selinuxfs"] for line in f)
    except OSError:
        known = False
    if known:
        return (f"the kernel supports SELinux but {sysfs} is not mounted (SELinux is disabled or no "
                "policy is loaded)")
    return "the kernel has no SELinux (no selinuxfs in /proc/filesystems)"


def _unavailable(why: str) -> NotSupported:
    return NotSupported(f"security driver 'selinux' is not usable on this host: {why}; boot with "
                        "SELinux enabled (selinux=1 security=selinux, a policy installed) or set "
                        "security_driver = \"none\" (or \"apparmor\") in qemu.conf",
                        domain=codes.VIR_FROM_SECURITY)


# --- contexts ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    """An SELinux security context ``user:role:type[:level]``."""

    user: str
    role: str
    type: str
    level: str = ""

    @classmethod
    def parse(cls, text: str) -> Context:
        parts = text.strip().split(":", 3)
        if len(parts) < 3 or not all(parts[:3]) or any(c in text for c in "\n\0 "):
            raise ValueError(f"'{text}' is not an SELinux context (user:role:type[:level])")
        return cls(*parts) if len(parts) == 4 else cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return f"{self.user}:{self.role}:{self.type}" + (f":{self.level}" if self.level else "")

    @property
    def sensitivity(self) -> str:
        return self.level.split(":", 1)[0] if self.level else ""

    @property
    def categories(self) -> str:
        """The category part of the level (``c12,c345``), empty when none."""
        return self.level.split(":", 1)[1] if ":" in self.level else ""

    def with_level(self, level: str) -> Context:
        return replace(self, level=level)


@dataclass(frozen=True)
class SELinuxContexts:
    """The base contexts: what the host policy says, libvirt's defaults otherwise."""

    domain: str = "system_u:system_r:svirt_t:s0"           #: KVM guests
    alt_domain: str = "system_u:system_r:svirt_tcg_t:s0"   #: TCG guests (type='qemu')
    file: str = "system_u:object_r:svirt_image_t:s0"       #: exclusive and shared images
    content: str = "system_u:object_r:virt_content_t:s0"   #: read-only files
    basic_domain: str = "system_u:system_r:qemu_t:s0"      #: the basic model's QEMU
    basic_image_type: str = "virt_image_t"                 #: what the basic model wants on images

    @classmethod
    def from_host(cls, root: str = "/etc/selinux") -> SELinuxContexts:
        """The contexts of the policy named by ``ROOT/config`` (SELINUXTYPE), defaults for any file
        the policy lacks."""
        policy = "targeted"
        try:
            for line in Path(root, "config").read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "SELINUXTYPE" and value.strip():
                    policy = value.strip()
        except OSError:
            pass
        base = Path(root, policy, "contexts")
        values: dict[str, str] = {}
        for name, keys in (("virtual_domain_context", ("domain", "alt_domain")),
                           ("virtual_image_context", ("file", "content"))):
            try:
                lines = [ln.strip() for ln in (base / name).read_text().splitlines() if ln.strip()]
            except OSError:
                continue
            for key, line in zip(keys, lines, strict=False):
                Context.parse(line)  # refuse garbage rather than hand it to the kernel later
                values[key] = line
        return cls(**values)


# --- where labels live ------------------------------------------------------------------------------

class LabelStore(abc.ABC):
    """Reads and writes file labels and the remembered original labels."""

    @abc.abstractmethod
    def get(self, path: str) -> str | None:
        """The label of ``path`` (None when it has none)."""

    @abc.abstractmethod
    def set(self, path: str, label: str) -> None: ...

    @abc.abstractmethod
    def remove(self, path: str) -> None:
        """Drop the label of ``path`` (only to undo labelling a file that had none)."""

    @abc.abstractmethod
    def remembered(self, path: str) -> str | None:
        """The label ``path`` had before pyvirt first labelled it, if remembered."""

    @abc.abstractmethod
    def remember(self, path: str, label: str | None) -> None:
        """Remember ``label`` as the original of ``path`` (None forgets it)."""


class XattrLabelStore(LabelStore):
    """The host's labels: the ``security.selinux`` attribute, as libselinux reads and writes it (the
    context followed by a NUL byte), and pyvirt's ``trusted`` attribute for the original."""

    def __init__(self, remember_xattr: str = REMEMBER_XATTR) -> None:
        self.remember_xattr = remember_xattr

    @staticmethod
    def _read(path: str, name: str) -> str | None:
        try:
            raw = os.getxattr(path, name)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP):
                return None
            raise
        return raw.rstrip(b"\0").decode() or None

    def get(self, path: str) -> str | None:
        return self._read(path, SELINUX_XATTR)

    def set(self, path: str, label: str) -> None:
        os.setxattr(path, SELINUX_XATTR, label.encode() + b"\0")

    def remove(self, path: str) -> None:
        try:
            os.removexattr(path, SELINUX_XATTR)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise

    def remembered(self, path: str) -> str | None:
        return self._read(path, self.remember_xattr)

    def remember(self, path: str, label: str | None) -> None:
        if label is None:
            try:
                os.removexattr(path, self.remember_xattr)
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOTSUP):
                    raise
        else:
            os.setxattr(path, self.remember_xattr, label.encode())


class MemoryLabelStore(LabelStore):
    """Labels in a dict, for tests where the kernel has no SELinux. It behaves as the real store
    does where it matters: a path must exist to be labelled (ENOENT otherwise), and labels follow
    the file, not the name (keyed by device and inode, like an extended attribute)."""

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self.labels: dict[tuple[int, int], str] = {}
        self.saved: dict[tuple[int, int], str] = {}
        self.writes = 0
        for path, label in (initial or {}).items():
            self.set(path, label)

    @staticmethod
    def _key(path: str) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_dev, st.st_ino

    def get(self, path: str) -> str | None:
        return self.labels.get(self._key(path))

    def set(self, path: str, label: str) -> None:
        Context.parse(label)  # the kernel refuses what is not a context (EINVAL)
        self.labels[self._key(path)] = label
        self.writes += 1

    def remove(self, path: str) -> None:
        self.labels.pop(self._key(path), None)

    def remembered(self, path: str) -> str | None:
        return self.saved.get(self._key(path))

    def remember(self, path: str, label: str | None) -> None:
        if label is None:
            self.saved.pop(self._key(path), None)
        else:
            self.saved[self._key(path)] = label


# --- the driver -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    resource: Resource
    path: str            #: resolved
    label: str | None    #: what to set (None: leave it)
    create: bool = False


class SELinuxDriver(SecurityDriver):
    """libvirt's SELinux model over a :class:`LabelStore`."""

    name = "selinux"
    doi = "0"

    def __init__(self, store: LabelStore, *, contexts: SELinuxContexts | None = None,
                 mode: str = "svirt", default_confined: bool = True, require_confined: bool = False,
                 rng: random.Random | None = None, categories: int = MCS_CATEGORIES) -> None:
        super().__init__()
        if mode not in ("svirt", "basic"):
            raise InternalError(f"unknown SELinux mode {mode!r}")
        if categories < 2:
            raise InternalError("the MCS allocator needs at least two categories")
        self.store = store
        self.contexts = contexts or SELinuxContexts()
        self.mode = mode
        self.default_confined = default_confined
        self.require_confined = require_confined
        self.categories = categories
        self._rng = rng or random.SystemRandom()
        self._lock = threading.Lock()
        self._labels: dict[str, SecLabelSpec] = {}       # uuid -> assigned label
        self._names: dict[str, str] = {}                 # uuid -> domain name, for messages
        self._levels: dict[str, set[str]] = {}           # MCS level -> uuids using it

    @classmethod
    def from_conf(cls, conf: QemuConf, *, store: LabelStore | None = None,
                  contexts: SELinuxContexts | None = None) -> SELinuxDriver:
        """The driver qemu.conf asks for. Without ``store``, the host's (which must run SELinux:
        otherwise a NotSupported error says so and how to fix it)."""
        if store is None:
            why = selinux_status()
            if why is not None:
                raise _unavailable(why)
            store = XattrLabelStore()
            contexts = contexts or SELinuxContexts.from_host()
        return cls(store, contexts=contexts, default_confined=conf.security_default_confined,
                   require_confined=conf.security_require_confined)

    # --- what the driver reports -------------------------------------------------------------------

    def secmodel(self) -> tuple[str, str, dict[str, str]]:
        """(model, doi, base labels by domain type) for the capabilities XML's <secmodel>."""
        if self.mode == "basic":
            return self.name, self.doi, {"kvm": self.contexts.basic_domain,
                                         "qemu": self.contexts.basic_domain}
        return self.name, self.doi, {"kvm": self.contexts.domain, "qemu": self.contexts.alt_domain}

    def label_of(self, uuid: str) -> SecLabelSpec | None:
        """The label assigned to the domain ``uuid`` (what its live XML shows), if any."""
        with self._lock:
            return self._labels.get(uuid)

    def levels_in_use(self) -> dict[str, frozenset[str]]:
        with self._lock:
            return {level: frozenset(uuids) for level, uuids in self._levels.items()}

    # --- labels: generate, reserve, release --------------------------------------------------------

    def gen_label(self, ctx: DomainSecurityContext, seclabels: Iterable[SecLabelLike] = (), *,
                  virt_type: str = "qemu") -> SecLabelSpec:
        """Choose the domain's label from its ``<seclabel>`` elements and reserve it (libvirt's
        GenLabel); :meth:`release_label` gives it up when the domain stops."""
        spec = requested_label(seclabels, self.name, domain=ctx.name,
                               default_confined=self.default_confined,
                               require_confined=self.require_confined)
        with self._lock:
            if ctx.uuid in self._labels:
                raise InternalError(f"domain '{ctx.name}' already has an SELinux label; release it "
                                    "first")
            if spec.confined and self.mode == "basic":
                image = Context.parse(self.contexts.file)
                spec = SecLabelSpec(self.name, "static", False, label=self.contexts.basic_domain,
                                    imagelabel=str(replace(image, type=self.contexts.basic_image_type)))
            elif spec.type == "dynamic":
                base = Context.parse(spec.baselabel or (self.contexts.domain if virt_type == "kvm"
                                                        else self.contexts.alt_domain))
                level = self._allocate_level(base.sensitivity or "s0")
                image = Context.parse(self.contexts.file)
                spec = replace(spec, label=str(base.with_level(level)),
                               imagelabel=str(image.with_level(level)))
            elif spec.type == "static":
                label = self._parse(ctx, spec.label or "", "<label>")
                if spec.relabel and not spec.imagelabel:
                    image = Context.parse(self.contexts.file)
                    spec = replace(spec, imagelabel=str(image.with_level(label.level or "s0")))
                elif spec.imagelabel:
                    self._parse(ctx, spec.imagelabel, "<imagelabel>")
            self._record(ctx, spec)
        return spec

    def reserve_label(self, ctx: DomainSecurityContext, spec: SecLabelSpec) -> None:
        """Take back the label of a domain found running (from its live XML) after a restart, so
        that no new domain gets its categories; refuses a label another domain holds."""
        if spec.model != self.name:
            raise InternalError(f"reserve_label: a {spec.model} label given to the SELinux driver")
        with self._lock:
            if ctx.uuid in self._labels:
                raise InternalError(f"domain '{ctx.name}' already has an SELinux label")
            if spec.type == "dynamic" and spec.label:
                level = self._parse(ctx, spec.label, "<label>").level
                others = self._levels.get(level, set()) - {ctx.uuid}
                if others:
                    holder = ", ".join(sorted(f"'{self._names.get(u, u)}'" for u in others))
                    raise OperationInvalid(f"domain '{ctx.name}': its SELinux categories {level} "
                                           f"are already used by domain {holder}; two running "
                                           "domains may never share them: stop one of the two",
                                           domain=codes.VIR_FROM_SECURITY)
            self._record(ctx, spec)

    def release_label(self, ctx: DomainSecurityContext) -> None:
        """Give up the domain's label (after :meth:`restore_all`, when it has stopped)."""
        with self._lock:
            spec = self._labels.pop(ctx.uuid, None)
            self._names.pop(ctx.uuid, None)
            if spec is not None and spec.label:
                level = Context.parse(spec.label).level
                users = self._levels.get(level)
                if users is not None:
                    users.discard(ctx.uuid)
                    if not users:
                        del self._levels[level]

    def _record(self, ctx: DomainSecurityContext, spec: SecLabelSpec) -> None:
        self._labels[ctx.uuid] = spec
        self._names[ctx.uuid] = ctx.name
        if spec.confined and spec.label:
            self._levels.setdefault(Context.parse(spec.label).level, set()).add(ctx.uuid)

    def _allocate_level(self, sensitivity: str) -> str:
        pairs = self.categories * (self.categories - 1) // 2
        if sum(1 for level in self._levels if level.startswith(sensitivity + ":")) >= pairs:
            raise OperationFailed(f"every one of the {pairs} SELinux category pairs is in use",
                                  domain=codes.VIR_FROM_SECURITY)
        while True:  # random, as libvirt: a free pair is found quickly while few are used
            c1, c2 = sorted(self._rng.sample(range(self.categories), 2))
            level = f"{sensitivity}:c{c1},c{c2}"
            if level not in self._levels:
                return level

    def _parse(self, ctx: DomainSecurityContext, text: str, what: str) -> Context:
        try:
            return Context.parse(text)
        except ValueError as e:
            raise OperationInvalid(f"domain '{ctx.name}': SELinux {what}: {e}",
                                   domain=codes.VIR_FROM_SECURITY) from e

    def _spec(self, ctx: DomainSecurityContext) -> SecLabelSpec:
        spec = self._labels.get(ctx.uuid)
        if spec is None:
            raise InternalError(f"domain '{ctx.name}' has no SELinux label: gen_label() or "
                                "reserve_label() must come first")
        return spec

    # --- the child ---------------------------------------------------------------------------------

    def set_process_label(self, ctx: DomainSecurityContext, creds: ChildCredentials) -> ChildCredentials:
        spec = self._spec(ctx)
        if not spec.confined or not spec.label:
            return creds
        return ChildCredentials(creds.uid, creds.gid, creds.groups, creds.clear_capabilities,
                                creds.no_new_privs, selinux_exec_label=spec.label,
                                apparmor_exec_profile=creds.apparmor_exec_profile)

    # --- files -------------------------------------------------------------------------------------

    def _image_label(self, spec: SecLabelSpec, r: Resource) -> str | None:
        """The label ``r`` gets (None: left alone)."""
        if not spec.confined or not spec.relabel or not r.relabel or self.mode == "basic":
            return None
        if r.shared:
            return str(Context.parse(self.contexts.file).with_level("s0"))
        if r.read_only:
            return self.contexts.content
        return spec.imagelabel

    def _refuse(self, ctx: DomainSecurityContext, r: Resource, why: str) -> OperationInvalid:
        return OperationInvalid(f"domain '{ctx.name}': {r.describe()}: {why}",
                                domain=codes.VIR_FROM_SECURITY)

    def _plan(self, ctx: DomainSecurityContext, spec: SecLabelSpec, r: Resource) -> _Plan:
        from pyvirt.security.dac import is_system_path

        path = os.path.realpath(os.path.normpath(r.path))
        label = self._image_label(spec, r)
        exists = os.path.exists(path)
        if not exists and not r.kind.created_if_missing:
            raise self._refuse(ctx, r, f"{r.path} does not exist; create it or correct the path in "
                                       "the domain definition")
        if self.mode == "basic" and spec.confined and exists and r.kind in (
                ResourceKind.DISK, ResourceKind.CDROM, ResourceKind.FLOPPY):
            self._check_basic(ctx, r, path)
        if label is not None and is_system_path(path):
            if not r.read_only:
                raise self._refuse(ctx, r, f"refusing to relabel the system path {path} for QEMU "
                                           "to write; copy it to a directory for images")
            label = None  # system files keep their own (readable) label, as with DAC
        if label is None:
            return _Plan(r, path, None)
        if exists and not r.read_only and not r.shared:
            self._check_not_taken(ctx, r, path, label)
        return _Plan(r, path, label, create=not exists)

    def _check_basic(self, ctx: DomainSecurityContext, r: Resource, path: str) -> None:
        current = self._get(ctx, r, path)
        want = {self.contexts.basic_image_type}
        if r.read_only:
            want.add(Context.parse(self.contexts.content).type)
        have = Context.parse(current).type if current else None
        if have not in want:
            raise self._refuse(ctx, r, f"{path} is labelled {current or 'with nothing'}, but QEMU in "
                                       f"qemu_t may only use files of type {' or '.join(sorted(want))}; "
                                       f"fix: chcon -t {self.contexts.basic_image_type} {path} (and "
                                       "semanage fcontext -a to keep it across relabels)")

    def _check_not_taken(self, ctx: DomainSecurityContext, r: Resource, path: str, label: str) -> None:
        current = self._get(ctx, r, path)
        if not current or current == label:
            return
        try:
            level = Context.parse(current).level
        except ValueError:
            return
        with self._lock:
            others = self._levels.get(level, set()) - {ctx.uuid}
            holders = sorted(f"'{self._names.get(u, u)}'" for u in others)
        if holders and Context.parse(current).categories:
            raise self._refuse(ctx, r, f"{path} is labelled for running domain {', '.join(holders)} "
                                       f"({current}); a file can be exclusive to one domain only: "
                                       "mark the disk <shareable/> in both domains, or use a copy")

    def _get(self, ctx: DomainSecurityContext, r: Resource, path: str) -> str | None:
        try:
            return self.store.get(path)
        except OSError as e:
            raise OperationFailed(f"domain '{ctx.name}': {r.describe()}: cannot read the SELinux "
                                  f"label of {path}: {e.strerror}", domain=codes.VIR_FROM_SECURITY) from e

    def _set_all(self, ctx: DomainSecurityContext) -> None:
        spec = self._spec(ctx)
        plans = [self._plan(ctx, spec, r) for r in ctx.resources]  # every check before a change
        for plan in plans:
            self._apply(ctx, plan)

    def _set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None:
        self._apply(ctx, self._plan(ctx, self._spec(ctx), resource))

    def _apply(self, ctx: DomainSecurityContext, plan: _Plan) -> None:
        if plan.label is None:
            return
        r, path = plan.resource, plan.path
        if plan.create:
            _create(self, path)
        before = self._get(ctx, r, path)
        if before == plan.label:
            return
        exclusive = not (r.read_only or r.shared)
        try:
            saved = self.store.remembered(path) if exclusive else None
        except OSError:
            saved = None

        def undo() -> None:
            if before is not None:
                self.store.set(path, before)
            else:
                self.store.remove(path)
            if exclusive:
                self.store.remember(path, saved)

        self.journal(f"the SELinux label of {path} (back to {before})", undo)
        try:
            if exclusive and saved is None:
                try:
                    self.store.remember(path, before or _UNLABELLED)
                except OSError as e:
                    if e.errno not in (errno.ENOTSUP, errno.EPERM):
                        raise
                    log.info("%s: cannot remember its SELinux label (%s)", path, e.strerror)
            self.store.set(path, plan.label)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) else str(e)
            raise OperationFailed(f"domain '{ctx.name}': {r.describe()}: cannot label {path} "
                                  f"{plan.label}: {why}", domain=codes.VIR_FROM_SECURITY) from e
        log.info("domain '%s': %s labelled %s", ctx.name, path, plan.label)

    def _restore_all(self, ctx: DomainSecurityContext) -> list[str]:
        problems: list[str] = []
        for r in reversed(ctx.resources):
            problems += self._restore_image(ctx, r)
        return problems

    def _restore_image(self, ctx: DomainSecurityContext, r: Resource) -> list[str]:
        spec = self._labels.get(ctx.uuid)
        if spec is None:
            return []
        label = self._image_label(spec, r)
        if label is None or r.read_only or r.shared:
            return []  # generic labels stay: another domain may use the file (libvirt does so)
        path = os.path.realpath(os.path.normpath(r.path))
        try:
            current = self.store.get(path)
            if current != label:
                return []  # not (or no longer) ours
            original = self.store.remembered(path)
            if original is None:
                return [f"domain '{ctx.name}': {r.describe()}: no remembered SELinux label for "
                        f"{path}; left as {current}; fix: restorecon {path}"]
            if original == _UNLABELLED:
                self.store.remove(path)
            else:
                self.store.set(path, original)
            self.store.remember(path, None)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) else str(e)
            return [f"domain '{ctx.name}': cannot restore the SELinux label of {r.describe()}: {why}"]
        return []


def _create(driver: SecurityDriver, path: str) -> None:
    """Create a missing log file (empty), journalled: DAC does the same, but runs after us."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise OperationInvalid(f"cannot create {path}: directory {parent} does not exist",
                               domain=codes.VIR_FROM_SECURITY)
    create_empty_file(driver, path)
