# SPDX-License-Identifier: LGPL-2.1-or-later
"""The DAC driver: file ownership and the QEMU process's uid/gid, as libvirt's security_dac.c.

With ``dynamic_ownership`` on, starting a domain chowns each of its host files to the user and group
QEMU runs as, and stopping it gives them back. Before changing anything, every file is checked
(:meth:`DACDriver.check`): it must exist (log files are created, empty, when missing), be a regular
file (or a block device for disks), lie outside the system's own trees (:data:`SYSTEM_TREES`), have
no other hard link, and every directory above it must let the QEMU user through (search
permission), which is where the usual ``$HOME`` mistake fails; the error names the directory and the
``chmod`` that fixes it. The checks run even with ``dynamic_ownership`` off (they change nothing);
then, and for ``relabel=False`` resources, QEMU's own access to the file is checked as well.

Remembering owners (``remember_owner``, root only: the ``trusted`` namespace needs CAP_SYS_ADMIN).
pyvirt keeps its own extended attributes, with libvirt's layout but its own names, so that a real
libvirt on the same host neither reads pyvirt's remembered owners nor has its reference counts
changed by pyvirt:

========================================  =============================================================
``trusted.pyvirt.security.dac``           the original owner, ``+UID:+GID``
``trusted.pyvirt.security.ref_dac``       how many running domains use the file (decimal)
``trusted.pyvirt.security.boot_dac``      the boot the two above belong to (``/proc/sys/kernel/random/
                                          boot_id``); other values mean a crash left them: discarded
========================================  =============================================================

libvirt stores a boot *time* (``timestamp_dac``) which it computes from utmp or from uptime, values
that can differ by seconds between readers; a boot id cannot. pyvirt reads libvirt's
``trusted.libvirt.security.ref_dac`` (never writes it) to refuse giving a file that a libvirt domain
of this boot uses to a different owner.

Differences from libvirt, on purpose:

* read-only and shareable disks are remembered and reference counted like every other file, so two
  domains sharing a read-only image give it back only when the last one stops (the issue asks for
  it). libvirt chowns them but never gives them back, because a domain started with
  ``remember_owner`` off would not be counted; pyvirt does the same when ``remember_owner`` is off
  or the file system has no extended attributes. A file in use (count > 0) is never given to a
  different owner: the second domain's start fails instead ("shared images are not relabelled to one
  domain's exclusive owner").
* A chown that fails with EPERM/EROFS/EOPNOTSUPP (root-squashed NFS, read-only mounts, immutable
  files) is ignored by libvirt; pyvirt ignores it only when QEMU can already use the file as it needs
  (read, or read and write), and otherwise fails with the reason, and the transaction undoes the rest.
* System paths are never chowned; a read-only one QEMU can already read (``/boot/vmlinuz-*``,
  firmware under ``/usr/share``) is simply left alone.

Concurrency: one lock per process serialises the read-modify-write of the reference counts. Two
pyvirt processes (two instances) updating the same file at the same instant are not serialised yet
(libvirt takes a POSIX lock on byte 1 of each file for this).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from pyvirt.errors import OperationFailed, OperationInvalid, codes
from pyvirt.security.manager import SecurityDriver, create_empty_file
from pyvirt.security.privileges import ChildCredentials, credentials_for
from pyvirt.security.resources import DomainSecurityContext, Resource

if TYPE_CHECKING:
    from pyvirt.conf.qemu_conf import QemuConf

__all__ = ["DACDriver", "SYSTEM_TREES", "SYSTEM_FILES", "XATTR_PREFIX", "LIBVIRT_XATTR_PREFIX"]

log = logging.getLogger(__name__)

XATTR_PREFIX = "trusted.pyvirt.security."
LIBVIRT_XATTR_PREFIX = "trusted.libvirt.security."

#: directories whose contents pyvirt never chowns (nor the directories themselves)
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
                "/sbin", "/sys", "/usr", "/var/lib/dpkg", "/var/lib/rpm")
#: directories that are system paths themselves (their contents may be images)
SYSTEM_FILES = ("/", "/home", "/root", "/var", "/var/lib", "/tmp", "/var/tmp", "/opt", "/srv",
                "/mnt", "/media", "/run")

#: chown errors that mean "this file system will not do it", which libvirt tolerates
_UNCHANGEABLE = (errno.EPERM, errno.EROFS, errno.EOPNOTSUPP, errno.EINVAL)
#: getxattr/setxattr errors that mean "no extended attributes here"
_NO_XATTRS = (errno.ENOTSUP, errno.ENOSYS)

_R, _W, _X = 4, 2, 1

# one lock for every DAC driver in the process: two domains may share a file
_refcount_lock = threading.RLock()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # no procfs: no way to tell boots apart, every remembered owner stays valid
        return "unknown"


def _boot_time() -> int | None:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def is_system_path(path: str) -> bool:
    """Whether pyvirt refuses to chown ``path`` (an absolute, resolved path)."""
    text = str(PurePosixPath(path))  # normalised: no "//" nor trailing "/"
    if text in SYSTEM_FILES:
        return True
    # String prefixes, not PurePosixPath.parents: this runs for every file of every start.
    return any(text == tree or text.startswith(tree + "/") for tree in SYSTEM_TREES)


def _is_system(path: str, st: os.stat_result | None) -> bool:
    if st is not None and stat.S_ISBLK(st.st_mode) and path.startswith("/dev/"):
        return False  # a host block device is a legitimate disk
    return is_system_path(path)


def _file_type(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "of an unknown type"


@dataclass(frozen=True)
class _Plan:
    """What checking one resource decided."""

    resource: Resource
    path: str               #: the resolved path (what chown and the xattrs act on)
    relabel: bool           #: whether the owner is to be changed
    create: bool = False    #: a missing log file pyvirt creates


class DACDriver(SecurityDriver):
    """libvirt's DAC model. The ids come from each :class:`DomainSecurityContext`."""

    name = "dac"

    def __init__(self, *, dynamic_ownership: bool = True, remember_owner: bool = True,
                 xattr_prefix: str = XATTR_PREFIX) -> None:
        super().__init__()
        self.dynamic_ownership = dynamic_ownership
        self.remember_owner = remember_owner
        self.attr_owner = xattr_prefix + "dac"
        self.attr_ref = xattr_prefix + "ref_dac"
        self.attr_boot = xattr_prefix + "boot_dac"

    @classmethod
    def from_conf(cls, conf: QemuConf) -> DACDriver:
        """The driver qemu.conf asks for (its dynamic_ownership and remember_owner)."""
        return cls(dynamic_ownership=conf.dynamic_ownership, remember_owner=conf.remember_owner)

    def _remembers(self) -> bool:
        # the trusted namespace is invisible to unprivileged processes
        return self.remember_owner and os.geteuid() == 0

    # --- the child ---------------------------------------------------------------------------------

    def set_process_label(self, ctx: DomainSecurityContext, creds: ChildCredentials) -> ChildCredentials:
        mine = credentials_for(ctx.uid, ctx.gid, ctx.groups)
        return ChildCredentials(
            uid=mine.uid if mine.uid is not None else creds.uid,
            gid=mine.gid if mine.gid is not None else creds.gid,
            groups=mine.groups if mine.groups is not None else creds.groups,
            clear_capabilities=mine.clear_capabilities or creds.clear_capabilities,
            no_new_privs=mine.no_new_privs or creds.no_new_privs,
            selinux_exec_label=creds.selinux_exec_label,
            apparmor_exec_profile=creds.apparmor_exec_profile)

    # --- checks ------------------------------------------------------------------------------------

    def check(self, ctx: DomainSecurityContext) -> list[_Plan]:
        """Check every resource of ``ctx`` (changing nothing); raises on the first problem."""
        groups = ctx.effective_groups()
        return [self._check(ctx, groups, r) for r in ctx.resources]

    def _who(self, ctx: DomainSecurityContext) -> str:
        import pwd

        try:
            name = f" '{pwd.getpwuid(ctx.uid).pw_name}'"
        except KeyError:
            name = ""
        return f"QEMU (uid {ctx.uid}{name}, gid {ctx.gid})"

    def _refuse(self, ctx: DomainSecurityContext, r: Resource, why: str) -> OperationInvalid:
        return OperationInvalid(f"domain '{ctx.name}': {r.describe()}: {why}",
                                domain=codes.VIR_FROM_SECURITY)

    def _check(self, ctx: DomainSecurityContext, groups: tuple[int, ...], r: Resource) -> _Plan:
        given = os.path.normpath(r.path)
        resolved = os.path.realpath(given)
        relabel = self.dynamic_ownership and r.relabel
        try:
            st: os.stat_result | None = os.stat(resolved)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise self._refuse(ctx, r, f"cannot stat {given}: {e.strerror}") from e
        if _is_system(resolved, st):
            shown = given if resolved == given else f"{given} (which is {resolved})"
            if not r.read_only or st is None:
                raise self._refuse(ctx, r, f"refusing to change the owner of the system path {shown} "
                                           "or to let QEMU write to it; copy the file to a "
                                           "directory for images (e.g. /var/lib/libvirt/images) "
                                           "and use the copy")
            relabel = False  # left as it is: checked below to be readable, or refused
        if st is None:
            if not r.kind.created_if_missing:
                raise self._refuse(ctx, r, f"{given} does not exist; create it or correct the path "
                                           "in the domain definition")
            parent = os.path.dirname(resolved)
            if not os.path.isdir(parent):
                raise self._refuse(ctx, r, f"cannot create {given}: directory {parent} does not "
                                           "exist")
            self._check_search(ctx, groups, r, given, resolved)
            return _Plan(r, resolved, relabel, create=True)
        if not (stat.S_ISREG(st.st_mode) or (stat.S_ISBLK(st.st_mode) and r.kind.accepts_block_device)):
            wanted = "a regular file or a block device" if r.kind.accepts_block_device else "a regular file"
            raise self._refuse(ctx, r, f"{given} is {_file_type(st)}, but a {r.kind.value} must be "
                                       f"{wanted}; pyvirt never changes the owner of anything else")
        if relabel and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise self._refuse(ctx, r, f"{given} has {st.st_nlink} hard links, and changing its owner "
                                       "would change it for every other name of the file too (one "
                                       "may be a system file); use a copy with a single link, or "
                                       "set relabel='no' and give QEMU access yourself")
        self._check_search(ctx, groups, r, given, resolved)
        if not relabel:
            self._check_file_access(ctx, groups, r, given, resolved, st)
        return _Plan(r, resolved, relabel)

    def _check_search(self, ctx: DomainSecurityContext, groups: tuple[int, ...], r: Resource,
                      given: str, resolved: str) -> None:
        if ctx.uid == 0:
            return  # root QEMU keeps CAP_DAC_READ_SEARCH
        seen: set[str] = set()
        for path in (given, resolved):
            for directory in reversed(PurePosixPath(path).parents):
                d = str(directory)
                if d in seen:
                    continue
                seen.add(d)
                try:
                    dst = os.stat(d)
                except OSError:
                    continue  # a symlink on the way to the resolved path; that one is walked too
                if not may_access(dst, d, ctx.uid, ctx.gid, groups, _X):
                    raise self._refuse(
                        ctx, r, f"{self._who(ctx)} cannot reach {given}: directory {d} (mode "
                                f"{stat.S_IMODE(dst.st_mode):04o}, owner {dst.st_uid}:{dst.st_gid}) "
                                f"denies it search permission; fix: chmod o+x {d} (or grant only "
                                f"this user: setfacl -m u:{ctx.uid}:x {d}), or move the file to a "
                                "directory QEMU can reach")

    def _check_file_access(self, ctx: DomainSecurityContext, groups: tuple[int, ...], r: Resource,
                           given: str, resolved: str, st: os.stat_result) -> None:
        if ctx.uid == 0:
            return
        want = _R if r.read_only else _R | _W
        if not may_access(st, resolved, ctx.uid, ctx.gid, groups, want):
            verb = "read" if r.read_only else "read and write"
            how = ("dynamic_ownership is off in qemu.conf" if not self.dynamic_ownership
                   else "pyvirt does not change its owner")
            raise self._refuse(ctx, r, f"{self._who(ctx)} cannot {verb} {given} (mode "
                                       f"{stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}:{st.st_gid}) "
                                       f"and {how}; fix: chown {ctx.uid}:{ctx.gid} {given}, or turn "
                                       "dynamic_ownership on")

    # --- set ---------------------------------------------------------------------------------------

    def _set_all(self, ctx: DomainSecurityContext) -> None:
        plans = self.check(ctx)  # all checks before the first change
        for plan in plans:
            self._apply(ctx, plan)

    def _set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None:
        self._apply(ctx, self._check(ctx, ctx.effective_groups(), resource))

    def _apply(self, ctx: DomainSecurityContext, plan: _Plan) -> None:
        if plan.create:
            self._create(plan.path)
        if not plan.relabel:
            return
        with _refcount_lock:
            self._label(ctx, plan)

    def _create(self, path: str) -> None:
        create_empty_file(self, path)

    def _label(self, ctx: DomainSecurityContext, plan: _Plan) -> None:
        r, path = plan.resource, plan.path
        st = os.stat(path)
        want = (ctx.uid, ctx.gid)
        have = (st.st_uid, st.st_gid)
        remember = self._remembers()
        if remember:
            try:
                ref = self._read_ref(path)
            except OSError as e:
                if e.errno not in _NO_XATTRS:
                    raise self._fail(ctx, r, path, f"cannot read {self.attr_ref}", e) from e
                remember = False  # like libvirt: no xattrs here, nothing remembered
                ref = 0
            if ref > 0 and have != want:
                raise self._refuse(ctx, r, f"{path} is in use by {ref} other running domain(s) as "
                                           f"{have[0]}:{have[1]}, and giving it to {want[0]}:{want[1]} "
                                           "would cut them off; run this domain as the same "
                                           "user and group, or use a copy of the file")
            self._check_libvirt_user(ctx, r, path, have, want)
        self._snapshot(path, st)
        if remember:
            try:
                if ref == 0:
                    self._setxattr(path, self.attr_owner, f"+{have[0]}:+{have[1]}")
                    self._setxattr(path, self.attr_boot, _boot_id())
                self._setxattr(path, self.attr_ref, str(ref + 1))
            except OSError as e:
                if e.errno in _UNCHANGEABLE:
                    # an immutable file or a read-only mount: the chown would fail too
                    self._unchangeable(ctx, r, path, st, e)
                    return
                if e.errno not in _NO_XATTRS:
                    raise self._fail(ctx, r, path, "cannot remember its owner", e) from e
        if have == want:
            return
        try:
            os.chown(path, *want)
        except OSError as e:
            if e.errno in _UNCHANGEABLE:
                self._unchangeable(ctx, r, path, st, e)
                return
            raise self._fail(ctx, r, path, f"cannot change its owner to {want[0]}:{want[1]}", e) from e
        log.info("domain '%s': %s now owned by %d:%d", ctx.name, path, *want)

    def _unchangeable(self, ctx: DomainSecurityContext, r: Resource, path: str, st: os.stat_result,
                      e: OSError) -> None:
        """The file system refuses the change: fine if QEMU can use the file anyway (libvirt's
        root-squashed NFS case), an error otherwise."""
        want = _R if r.read_only else _R | _W
        if not r.read_only and (e.errno == errno.EROFS or _immutable(path)):
            ok = False  # nobody, root included, writes there
        elif ctx.uid == 0:
            ok = True
        else:
            ok = may_access(st, path, ctx.uid, ctx.gid, ctx.effective_groups(), want)
        if ok:
            log.info("domain '%s': leaving the owner of %s alone (%s); QEMU can use it as it is",
                     ctx.name, path, e.strerror)
            return
        verb = "read" if r.read_only else "read and write"
        raise self._fail(ctx, r, path, f"cannot change its owner to {ctx.uid}:{ctx.gid}, and "
                                       f"{self._who(ctx)} could not {verb} it otherwise", e)

    def _check_libvirt_user(self, ctx: DomainSecurityContext, r: Resource, path: str,
                            have: tuple[int, int], want: tuple[int, int]) -> None:
        """Refuse to take a file from under a running libvirt domain (read-only look at its xattrs)."""
        if have == want:
            return
        try:
            ref = int(os.getxattr(path, LIBVIRT_XATTR_PREFIX + "ref_dac"))
            stamp = int(os.getxattr(path, LIBVIRT_XATTR_PREFIX + "timestamp_dac"))
        except (OSError, ValueError):
            return
        boot = _boot_time()
        # libvirt's boot time comes from utmp or uptime, a few seconds after the kernel's; one from
        # an earlier boot is older than this boot by at least that boot's uptime
        if ref > 0 and (boot is None or stamp >= boot - 5):
            raise self._refuse(ctx, r, f"{path} is in use by {ref} domain(s) of libvirt (its "
                                       f"{LIBVIRT_XATTR_PREFIX}ref_dac says so) as {have[0]}:{have[1]}; "
                                       "pyvirt will not give it to another owner. Stop that domain "
                                       "or use a copy of the file")

    # --- restore -----------------------------------------------------------------------------------

    def _restore_all(self, ctx: DomainSecurityContext) -> list[str]:
        problems: list[str] = []
        for r in reversed(ctx.resources):
            problems += self._restore_image(ctx, r)
        return problems

    def _restore_image(self, ctx: DomainSecurityContext, r: Resource) -> list[str]:
        if not (self.dynamic_ownership and r.relabel):
            return []
        path = os.path.realpath(os.path.normpath(r.path))
        try:
            st = os.stat(path)
        except OSError as e:
            return [f"domain '{ctx.name}': cannot give back {r.describe()}: {e.strerror}"]
        # the same refusals as when labelling: what was never chowned is never chowned back
        if _is_system(path, st):
            return []
        if not (stat.S_ISREG(st.st_mode) or (stat.S_ISBLK(st.st_mode) and r.kind.accepts_block_device)):
            return []
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            return []
        with _refcount_lock:
            try:
                self._give_back(ctx, r, path, st)
            except OSError as e:
                if e.errno in _UNCHANGEABLE:
                    log.info("domain '%s': cannot give back %s (%s)", ctx.name, path, e.strerror)
                    return []
                return [f"domain '{ctx.name}': cannot give back {r.describe()}: {e.strerror}"]
        return []

    def _give_back(self, ctx: DomainSecurityContext, r: Resource, path: str, st: os.stat_result) -> None:
        owner: tuple[int, int] | None = None
        if self._remembers():
            try:
                ref = self._read_ref(path)
            except OSError as e:
                if e.errno not in _NO_XATTRS:
                    raise
                ref = 0
            if ref > 0:
                self._snapshot(path, st)
                if ref > 1:
                    self._setxattr(path, self.attr_ref, str(ref - 1))
                    return  # another domain still uses it
                owner = self._parse_owner(path)
                for name in (self.attr_ref, self.attr_owner, self.attr_boot):
                    _removexattr(path, name)
        if owner is None:
            if r.read_only or r.shared:
                # libvirt's rule without a count: other domains may still use it, leave it
                return
            owner = (0, 0)  # libvirt's default: back to root:root
        if (st.st_uid, st.st_gid) != owner:
            self._snapshot(path, st)
            os.chown(path, *owner)
            log.info("domain '%s': %s given back to %d:%d", ctx.name, path, *owner)

    # --- extended attributes -----------------------------------------------------------------------

    def _read_ref(self, path: str) -> int:
        """The count of domains using ``path``; 0 when none, or when the count is from another boot
        (then every one of pyvirt's attributes on the file is dropped, as libvirt does)."""
        try:
            raw = os.getxattr(path, self.attr_ref)
        except OSError as e:
            if e.errno == errno.ENODATA:
                return 0
            raise
        try:
            boot = os.getxattr(path, self.attr_boot).decode()
        except OSError:
            boot = ""
        try:
            ref = int(raw)
        except ValueError:
            ref = -1
        if boot != _boot_id() or ref < 0:
            log.warning("%s: discarding pyvirt's remembered owner (%s)", path,
                        "left by an earlier boot" if ref >= 0 else f"malformed count {raw!r}")
            for name in (self.attr_ref, self.attr_owner, self.attr_boot):
                _removexattr(path, name)
            return 0
        return ref

    def _parse_owner(self, path: str) -> tuple[int, int] | None:
        try:
            text = os.getxattr(path, self.attr_owner).decode()
            user, group = text.split(":")
            return int(user.lstrip("+")), int(group.lstrip("+"))
        except (OSError, ValueError):
            log.warning("%s: no valid remembered owner in %s", path, self.attr_owner)
            return None

    def _setxattr(self, path: str, name: str, value: str) -> None:
        os.setxattr(path, name, value.encode())

    def _snapshot(self, path: str, st: os.stat_result) -> None:
        """Journal the file's owner and pyvirt's attributes as they are now, to put them back."""
        if not self.in_transaction:
            return
        saved: dict[str, bytes | None] = {}
        for name in (self.attr_owner, self.attr_ref, self.attr_boot):
            try:
                saved[name] = os.getxattr(path, name)
            except OSError:
                saved[name] = None
        owner = (st.st_uid, st.st_gid)

        def undo() -> None:
            for name, value in saved.items():
                if value is None:
                    _removexattr(path, name)
                else:
                    os.setxattr(path, name, value)
            now = os.stat(path)
            if (now.st_uid, now.st_gid) != owner:
                os.chown(path, *owner)

        self.journal(f"the changes to {path} (back to {owner[0]}:{owner[1]})", undo)

    def _fail(self, ctx: DomainSecurityContext, r: Resource, path: str, what: str,
              e: OSError) -> OperationFailed:
        return OperationFailed(f"domain '{ctx.name}': {r.describe()}: {what} ({path}: {e.strerror})",
                               domain=codes.VIR_FROM_SECURITY)


def _removexattr(path: str, name: str) -> None:
    try:
        os.removexattr(path, name)
    except OSError as e:
        if e.errno not in (errno.ENODATA, *_NO_XATTRS):
            raise


# --- access as another user would get it ----------------------------------------------------------

# <linux/posix_acl.h>, <linux/posix_acl_xattr.h>
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
_ACL_XATTR = "system.posix_acl_access"


def _acl(path: str) -> list[tuple[int, int, int]] | None:
    """The POSIX ACL of ``path`` as (tag, permissions, id) entries; None when it has none."""
    import struct

    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError:
        return None
    if len(raw) < 4 or struct.unpack_from("<I", raw)[0] != 2 or (len(raw) - 4) % 8:
        return None
    return [struct.unpack_from("<HHI", raw, off) for off in range(4, len(raw), 8)]


def may_access(st: os.stat_result, path: str, uid: int, gid: int, groups: tuple[int, ...],
               want: int) -> bool:
    """Whether a process of ``uid``/``gid``/``groups`` without capabilities gets ``want`` (a mask of
    4 read, 2 write, 1 search/execute) on the file ``st`` of ``path``: the kernel's algorithm, POSIX
    ACLs included (acl(5)), computed here so that no process has to switch users to ask."""
    if uid == 0:
        return True  # a root QEMU keeps its capabilities
    all_groups = {gid, *groups}
    entries = _acl(path)
    if entries is None:
        mode = st.st_mode
        if uid == st.st_uid:
            bits = (mode >> 6) & 7
        elif st.st_gid in all_groups:
            bits = (mode >> 3) & 7
        else:
            bits = mode & 7
        return bits & want == want
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 7)
    if uid == st.st_uid:
        return next((perm for tag, perm, _ in entries if tag == _ACL_USER_OBJ), 0) & want == want
    for tag, perm, ident in entries:
        if tag == _ACL_USER and ident == uid:
            return perm & mask & want == want
    matched = False
    for tag, perm, ident in entries:
        if (tag == _ACL_GROUP_OBJ and st.st_gid in all_groups) or (tag == _ACL_GROUP and ident in all_groups):
            matched = True
            if perm & mask & want == want:
                return True
    if matched:
        return False
    return next((perm for tag, perm, _ in entries if tag == _ACL_OTHER), 0) & want == want


def _immutable(path: str) -> bool:
    """Whether chattr +i (or +a) is set: not even root may change the file then."""
    import fcntl
    import struct

    FS_IOC_GETFLAGS = 0x80086601  # noqa: N806 - the kernel's name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8))[0]
    except OSError:
        return False
    finally:
        os.close(fd)
    return bool(flags & (0x10 | 0x20))  # FS_IMMUTABLE_FL, FS_APPEND_FL
