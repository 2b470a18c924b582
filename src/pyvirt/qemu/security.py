# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the QEMU driver tells the security layer about a domain (libvirt's qemu_security.c).

The security drivers never read domain XML (see :mod:`pyvirt.security.resources`): this module
turns a definition and qemu.conf into a :class:`DomainSecurityContext` (who QEMU runs as, which
host files it opens and how), and keeps that context in the domain's status file so that whichever
process stops the domain restores exactly what was labelled at its start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pyvirt.conf.qemu_conf import ConfigError, resolve_group, resolve_user, resolve_user_group
from pyvirt.errors import XMLError
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind

if TYPE_CHECKING:
    from pyvirt.conf.qemu_conf import QemuConf
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.security.cgroup import CgroupHost
    from pyvirt.xml.domain import Domain

log = logging.getLogger(__name__)

__all__ = ["qemu_identity", "domain_resources", "security_context", "context_to_status",
           "context_from_status", "LaunchSecurity", "restore", "reserve"]

_DISK_KINDS = {"disk": ResourceKind.DISK, "lun": ResourceKind.DISK, "cdrom": ResourceKind.CDROM,
               "floppy": ResourceKind.FLOPPY}


def _dac_seclabel(dom: Domain) -> Any | None:
    return next((s for s in dom.seclabels if s.model == "dac"), None)


def qemu_identity(dom: Domain, conf: QemuConf, *, privileged: bool) -> tuple[int, int, bool]:
    """(uid, gid, relabel): who QEMU runs as and whether DAC may change file owners for it.

    A per-domain ``<seclabel model='dac' type='static'><label>USER:GROUP</label>`` wins (relabel
    only when it says relabel='yes', as libvirt); ``type='none'`` keeps the instance's identity and
    relabels nothing. Otherwise qemu.conf's user/group for a privileged instance, the caller for the
    session instance.
    """
    if privileged:
        uid, gid = resolve_user_group(conf)
    else:
        uid, gid = os.getuid(), os.getgid()
    relabel = bool(conf.dynamic_ownership)
    label = _dac_seclabel(dom)
    if label is not None:
        if label.type == "none":
            return uid, gid, False
        if label.type == "static":
            if not label.label or ":" not in label.label:
                raise XMLError(f"domain '{dom.name}': <seclabel model='dac' type='static'> needs a "
                               "<label>USER:GROUP</label> (names, or +UID:+GID)")
            user, _, group = label.label.partition(":")
            try:
                uid, gid = resolve_user(user), resolve_group(group)
            except ConfigError as e:
                raise XMLError(f"domain '{dom.name}': <seclabel model='dac'> label '{label.label}': "
                               f"{e.message}") from e
            relabel = label.relabel is True
        elif label.relabel is False:
            relabel = False
    return uid, gid, relabel


def _relabel(seclabels: Any, default: bool) -> bool:
    for s in seclabels:
        if s.model in (None, "dac") and s.relabel is False:
            return False
    return default


def domain_resources(dom: Domain, *, relabel: bool = True) -> Iterator[Resource]:
    """Every host file QEMU opens for ``dom``, with how it uses it."""
    os_ = dom.os
    if os_ is not None:
        for path, kind in ((os_.kernel, ResourceKind.KERNEL), (os_.initrd, ResourceKind.INITRD),
                           (os_.dtb, ResourceKind.DTB),
                           (os_.loader.path if os_.loader is not None else None, ResourceKind.LOADER),
                           (os_.nvram.path if os_.nvram is not None else None, ResourceKind.NVRAM)):
            if path:
                yield Resource(path, kind, relabel=relabel)
    devs = dom.devices
    if devs is None:
        return
    for disk in devs.disks:
        src = disk.source
        if src is None or disk.type not in ("file", "block"):
            continue  # network disks, pools and empty drives have no host file
        path = src.file if disk.type == "file" else src.dev
        if not path:
            continue
        yield Resource(path, _DISK_KINDS.get(disk.device or "disk", ResourceKind.DISK),
                       readonly=bool(disk.readonly), shared=bool(disk.shareable),
                       relabel=_relabel(src.seclabels, relabel))
    for chr_ in (*devs.serials, *devs.parallels, *devs.consoles, *devs.channels):
        if chr_.type == "file":
            for chr_src in chr_.sources:
                if chr_src.path:
                    yield Resource(chr_src.path, ResourceKind.SERIAL_LOG,
                                   relabel=_relabel(chr_src.seclabels, relabel))
        if chr_.log is not None and chr_.log.file:
            yield Resource(chr_.log.file, ResourceKind.LOG, relabel=relabel)


def security_context(dom: Domain, conf: QemuConf, *, privileged: bool) -> DomainSecurityContext:
    uid, gid, relabel = qemu_identity(dom, conf, privileged=privileged)
    seen: set[tuple[str, ResourceKind]] = set()
    resources = []
    for r in domain_resources(dom, relabel=relabel):
        if (r.path, r.kind) not in seen:  # a console that repeats its serial is one file
            seen.add((r.path, r.kind))
            resources.append(r)
    return DomainSecurityContext(name=dom.name or "", uuid=dom.uuid or "", uid=uid, gid=gid,
                                 resources=tuple(resources))


def context_to_status(ctx: DomainSecurityContext) -> dict[str, Any]:
    return {"name": ctx.name, "uuid": ctx.uuid, "uid": ctx.uid, "gid": ctx.gid,
            "groups": list(ctx.groups) if ctx.groups is not None else None,
            "resources": [{"path": r.path, "kind": r.kind.value, "readonly": r.readonly, "shared": r.shared,
                           "relabel": r.relabel} for r in ctx.resources]}


def context_from_status(data: dict[str, Any]) -> DomainSecurityContext:
    groups = data.get("groups")
    return DomainSecurityContext(
        name=str(data["name"]), uuid=str(data["uuid"]), uid=int(data["uid"]), gid=int(data["gid"]),
        groups=tuple(int(g) for g in groups) if groups is not None else None,
        resources=tuple(Resource(str(r["path"]), ResourceKind(r["kind"]), readonly=bool(r["readonly"]),
                                 shared=bool(r["shared"]), relabel=bool(r["relabel"]))
                        for r in data["resources"]))


# --- one start's security: labels, the child's credentials, the cgroup -------------------------------

def uses_cgroups(driver: QemuDriver) -> bool:
    """Whether the domains of ``driver`` get cgroups (not the session instance's, as libvirt's)."""
    return driver.paths.kind != "session" and driver.conf.cgroup_controllers != ()


def prime_cgroup_migration(driver: QemuDriver) -> CgroupHost | None:
    """Called first thing in a start (see :func:`pyvirt.security.cgroup.prime_migration`); returns
    the host's hierarchies for :class:`LaunchSecurity` (None: no cgroups for this instance)."""
    if not uses_cgroups(driver):
        return None
    from pyvirt.security import cgroup

    host = cgroup.CgroupHost.probe()
    cgroup.prime_migration(host)
    return host


class LaunchSecurity:
    """What one start of a domain set up for its security, as one transaction.

    Created before QEMU is launched: it labels the domain's files (every driver of the stack),
    computes the child's credentials and creates the domain's cgroup. :meth:`commit` once QEMU runs;
    :meth:`rollback` on any failure undoes all of it. Afterwards :meth:`status` is what the status
    file keeps for :func:`restore` at stop.
    """

    def __init__(self, driver: QemuDriver, dom: Domain, cgroup_host: CgroupHost | None) -> None:
        """Labels ``dom``'s files and adds the labels it was given to its (live) ``<seclabel>``s;
        ``cgroup_host`` is what :func:`prime_cgroup_migration` returned (None: no cgroups)."""
        from pyvirt.security import cgroup
        from pyvirt.security.seclabel import gen_labels, release_labels, to_xml

        self.stack = driver.security
        self.ctx = security_context(dom, driver.conf, privileged=driver.privileged)
        self.cgroup: cgroup.DomainCgroup | None = None
        labelling = any(m in ("selinux", "apparmor") for m in self.stack.models)
        # SELinux categories / AppArmor profile names first: set_all labels with them.
        specs = gen_labels(self.stack, self.ctx, dom.seclabels, virt_type=dom.type or "qemu") \
            if labelling else []
        self.stack.begin()
        try:
            self.stack.set_all(self.ctx)
            self.creds = self.stack.child_credentials(self.ctx)
            if cgroup_host is not None:
                self.cgroup = cgroup.create_for(dom, driver.conf, driver.paths, host=cgroup_host)
        except BaseException:
            self.rollback()
            if specs:
                release_labels(self.stack, self.ctx)
            raise
        self._labelled = bool(specs)
        # The live XML shows every label the domain runs with (libvirt's, DAC's included).
        given = {s.model for s in specs}
        dom.seclabels = [*(s for s in dom.seclabels if s.model not in given), *(to_xml(s) for s in specs)]
        if not any(s.model == "dac" for s in dom.seclabels):
            from pyvirt.xml.domain_os import SecLabel

            ids = f"+{self.ctx.uid}:+{self.ctx.gid}"
            dom.seclabels.append(SecLabel(type="dynamic", model="dac", relabel=True, label=ids,
                                          imagelabel=ids))
        if self.cgroup is not None and not self.cgroup.devices_enforced:
            log.warning("domain '%s': device access is not restricted: %s", dom.name,
                        self.cgroup.devices_reason)

    def own(self, path: os.PathLike[str] | str) -> None:
        """Give a directory pyvirt made for the domain to the user QEMU runs as."""
        if (self.ctx.uid, self.ctx.gid) != (os.geteuid(), os.getegid()):
            os.chown(path, self.ctx.uid, self.ctx.gid)

    def command(self, argv: list[str], env: Mapping[str, str]) -> list[str]:
        """What to spawn so that ``argv`` runs in the domain's cgroup with its credentials."""
        from pyvirt.security import cgroup
        from pyvirt.security.privileges import wrap_command

        wrapped = wrap_command(argv, self.creds)
        procs = self.cgroup.procs_paths() if self.cgroup is not None else []
        return cgroup.wrap_command(wrapped, procs, env)

    def commit(self) -> None:
        self.stack.commit()

    def rollback(self) -> None:
        from pyvirt.security.seclabel import release_labels

        problems = self.stack.rollback() if self.stack.in_transaction else []
        if getattr(self, "_labelled", False):
            release_labels(self.stack, self.ctx)
        if self.cgroup is not None:
            problems += self.cgroup.remove()
            self.cgroup = None
        for p in problems:
            log.warning("domain '%s': undoing its start: %s", self.ctx.name, p)

    def status(self) -> dict[str, Any]:
        return {"context": context_to_status(self.ctx),
                "cgroup": self.cgroup.to_status() if self.cgroup is not None else None}


def restore(driver: QemuDriver, status: dict[str, Any]) -> list[str]:
    """Undo what :class:`LaunchSecurity` set up, from the status file's record; never raises."""
    from pyvirt.security.cgroup import DomainCgroup
    from pyvirt.security.seclabel import release_labels

    problems: list[str] = []
    try:
        ctx = context_from_status(status["context"])
        problems += driver.security.restore_all(ctx)
        release_labels(driver.security, ctx)
    except Exception as e:  # noqa: BLE001 - a stop must go on
        problems.append(f"cannot restore the labels: {e}")
    if status.get("cgroup"):
        try:
            problems += DomainCgroup.from_status(status["cgroup"]).remove()
        except Exception as e:  # noqa: BLE001
            problems.append(f"cannot remove the cgroup: {e}")
    return problems


def reserve(driver: QemuDriver, status: dict[str, Any], live: Domain) -> None:
    """After a restart: take back the labels of a domain found running, so that none is given twice
    (SELinux categories; AppArmor profiles). Nothing to do for DAC."""
    if not any(m in ("selinux", "apparmor") for m in driver.security.models):
        return
    from pyvirt.security.seclabel import reserve_labels

    reserve_labels(driver.security, context_from_status(status["context"]), live.seclabels)
