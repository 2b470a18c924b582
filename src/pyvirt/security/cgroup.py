# SPDX-License-Identifier: LGPL-2.1-or-later
"""One control group per QEMU: device ACL, memory and CPU limits (libvirt's ``qemu_cgroup.c``).

Layout. In every hierarchy pyvirt uses (each mounted cgroup v1 hierarchy holding a controller it
uses, or the cgroup v2 hierarchy when the host runs its controllers there), a domain's group is::

    MOUNT/OWN_PLACEMENT/pyvirt/INSTANCE/dom-NAME

* ``OWN_PLACEMENT`` is where the calling process itself sits in that hierarchy
  (``/proc/self/cgroup``), so a QEMU never escapes a limit its starter runs under (a sandbox, a
  systemd service). A later process (reconnect, stop) may sit elsewhere, so the full paths are
  recorded: :meth:`DomainCgroup.to_status` / :meth:`DomainCgroup.from_status` go into the domain's
  status file.
* ``INSTANCE`` (:func:`instance_tag`) keeps driver instances apart: ``system``, ``session-UID-HASH``,
  ``embed-HASH`` (a hash of the embed root), so two instances with a domain of the same name never
  share a group.
* ``dom-NAME`` is the domain name with every byte outside ``[A-Za-z0-9_+.-]`` written ``\\xHH``
  (as systemd escapes unit names), so no name can reach outside the instance directory or collide
  with a control file; over-long names are cut and end with a hash.

libvirt 9.0 names its groups differently (``machine.slice`` scopes through systemd-machined, or
``/machine/qemu-ID-NAME.libvirt-qemu``); pyvirt's own tree keeps it from ever touching a real
libvirt's groups.

What goes in (:func:`create`), as libvirt does for the QEMU driver:

* devices (v1): deny everything (``a``), then allow the domain's disks that are host block devices
  (their backing chains too; read-only disks, CD-ROMs and backing layers get ``r`` only), character
  devices of type ``dev``, the ``random`` RNG backend's device, every pty (``c 136:* rw``) and
  qemu.conf's ``cgroup_device_acl`` (libvirt's default list); paths that do not exist, and files
  that are not devices, are skipped as libvirt does.
* memory: ``<memtune>`` hard_limit, soft_limit, swap_hard_limit (v1: ``memory.limit_in_bytes``,
  ``memory.soft_limit_in_bytes``, ``memory.memsw.limit_in_bytes``; v2: ``memory.max``,
  ``memory.high``, ``memory.swap.max``).
* cpu: ``<cputune>`` shares (v1 ``cpu.shares``; v2 ``cpu.weight``, which libvirt also writes
  unchanged) and global_period/global_quota (``cpu.cfs_period_us``/``cpu.cfs_quota_us``, v2
  ``cpu.max``). libvirt applies period/quota to each vCPU thread in a ``vcpuN`` sub-group; pyvirt has
  no per-thread groups yet, so when only period/quota are given it caps the whole QEMU at
  ``quota * vcpus`` per period: the same total, without the per-vCPU split.
* cpuset (v1): a new group gets its parent's ``cpuset.cpus``/``cpuset.mems`` (an empty cpuset
  refuses tasks).

Device ACLs on cgroup v2 need an eBPF program attached to the group, which pyvirt does not build:
:attr:`DomainCgroup.devices_enforced` is then False and :attr:`DomainCgroup.devices_reason` says
why, for the caller to report. A failure half way through :func:`create` removes what it created.

Getting QEMU in before it can open anything: the child must join the groups before exec. Two ways:

* :func:`wrap_command` prefixes the command with a POSIX shell script that writes ``0`` to each
  ``cgroup.procs`` (moving itself), then execs the command in the same process, which may be the
  privileges shim. A shell, not Python: 0.7 ms where an interpreter costs 6-11 ms per start. (The
  kernel's own cost of moving a process between v1 groups, an RCU grace period that can reach
  10-16 ms when the groups were idle, comes on top and cannot be avoided on v1; v2 could create the
  child in its group directly, with clone3's CLONE_INTO_CGROUP.)
* :func:`join` is the same step as a function, for a child that already runs Python.

:meth:`DomainCgroup.attach` moves a running process from the parent's side.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyvirt.conf.qemu_conf import DEFAULT_CGROUP_DEVICE_ACL
from pyvirt.errors import OperationFailed, PyvirtError, codes

if TYPE_CHECKING:
    from pyvirt.conf.instance import InstancePaths
    from pyvirt.conf.qemu_conf import QemuConf
    from pyvirt.xml.domain import Domain

log = logging.getLogger(__name__)

#: exit status of the join script when it cannot join a group (it never execs the command then)
JOIN_FAILED = 125
#: exit status of the join script when exec of the command itself fails (the shell's own)
JOIN_EXEC_FAILED = 127

#: "$1".. up to "--" are cgroup.procs files, the rest the command. The shell exports PWD, which
#: the command's environment must not gain: unset unless the caller's environment has it.
_JOIN_SCRIPT = ('while [ "$1" != -- ]; do echo 0 > "$1" || { echo "pyvirt: cannot join cgroup $1 (the '
                'shell said why above)" >&2; exit 125; }; shift; done; shift; exec "$@"')


def join(procs_paths: Sequence[str]) -> None:
    """Move the calling process into each group: write ``0`` to each ``cgroup.procs`` path.

    An OSError names the file.
    """
    for path in procs_paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"cannot join cgroup {path}: {e.strerror}") from e

__all__ = [
    "join",
    "wrap_command",
    "JOIN_FAILED",
    "JOIN_EXEC_FAILED",
    "LIBVIRT_CONTROLLERS",
    "Hierarchy",
    "CgroupHost",
    "DeviceRule",
    "DomainCgroup",
    "Group",
    "device_acl",
    "instance_tag",
    "group_dir_name",
    "create",
    "create_for",
    "apply_settings",
    "devices_enforcement",
    "MEMORY_UNLIMITED_KIB",
    "PTY_MAJOR",
]

#: the controllers libvirt's QEMU driver uses (virCgroupController), in its order
LIBVIRT_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio",
                       "net_cls", "perf_event", "name=systemd")
#: libvirt's "unlimited" for memtune values, in KiB (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED)
MEMORY_UNLIMITED_KIB = 9007199254740991
#: the major number of Unix98 ptys (/dev/pts/N)
PTY_MAJOR = 136

_TOP = "pyvirt"
_DOMAIN_PREFIX = "dom-"
_NAME_SAFE = re.compile(rb"[A-Za-z0-9_+.-]")
_NAME_MAX = 200  # bytes of a group's directory name; NAME_MAX is 255
_INSTANCE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_RMDIR_WAIT = 2.0  # seconds to wait for a group's last tasks to go away


def _error(message: str) -> OperationFailed:
    return OperationFailed(message, domain=codes.VIR_FROM_CGROUP)


def _unsupported(message: str) -> PyvirtError:
    return PyvirtError(message, code=codes.VIR_ERR_CONFIG_UNSUPPORTED, domain=codes.VIR_FROM_CGROUP)


def wrap_command(argv: Sequence[str], procs_paths: Sequence[str],
                 env: Mapping[str, str] | None = None) -> list[str]:
    """The command that joins ``procs_paths`` (see :meth:`DomainCgroup.procs_paths`) and then execs
    ``argv`` in the same process (pid, environment and file descriptors kept); ``argv`` itself when
    there is nothing to join. ``env``: the environment the command will get (None: this one's)."""
    if not procs_paths:
        return list(argv)
    if not argv or not os.path.isabs(argv[0]):
        raise _error(f"the command to run in a cgroup must start with an absolute path, got "
                     f"{list(argv)[:1]!r}")
    keep_pwd = "PWD" in (os.environ if env is None else env)
    script = _JOIN_SCRIPT if keep_pwd else f"unset PWD; {_JOIN_SCRIPT}"
    return ["/bin/sh", "-c", script, "pyvirt-cgroup-join", *procs_paths, "--", *argv]


# --- naming ----------------------------------------------------------------------------------------

def _hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def instance_tag(paths: InstancePaths, *, uid: int | None = None) -> str:
    """The name of a driver instance's directory: ``system`` (``system-HASH`` below a
    ``PYVIRT_PREFIX``), ``session-UID-HASH`` or ``embed-HASH``; HASH is of the instance's tree, so
    distinct instances never share one."""
    if paths.kind == "embed":
        assert paths.root is not None
        return f"embed-{_hash(os.path.realpath(paths.root))}"
    where = os.path.realpath(paths.lib_dir)
    if paths.kind == "system":
        return "system" if where == "/var/lib/pyvirt/qemu" else f"system-{_hash(where)}"
    return f"session-{os.getuid() if uid is None else uid}-{_hash(where, 8)}"


def group_dir_name(domain_name: str) -> str:
    """The directory of a domain's group: ``dom-`` and the name with every byte outside
    ``[A-Za-z0-9_+.-]`` written ``\\xHH``; a name too long for a directory is cut and ends with a
    hash of the whole name. The result never contains '/', a control character or starts with '.'.
    """
    raw = domain_name.encode("utf-8", "surrogateescape")
    escaped = "".join(chr(b) if _NAME_SAFE.fullmatch(bytes([b])) else f"\\x{b:02x}" for b in raw)
    name = _DOMAIN_PREFIX + escaped
    if len(name) > _NAME_MAX:
        name = f"{name[:_NAME_MAX - 17]}-{_hash(domain_name, 16)}"
    return name


# --- the host's hierarchies ------------------------------------------------------------------------

@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and where the calling process sits in it."""

    version: int                   #: 1 or 2
    mount: str                     #: where it is mounted
    controllers: tuple[str, ...]   #: v1: the mount's controllers; v2: those cgroup.controllers lists
    placement: str                 #: the caller's group, relative to the mount ("/" at the top)

    @property
    def base(self) -> str:
        """The caller's own group directory, under which pyvirt creates its groups."""
        return os.path.normpath(self.mount + "/" + self.placement.lstrip("/"))


def _unescape_mountinfo(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


class CgroupHost:
    """The cgroup hierarchies of a host as the calling process sees them.

    :meth:`probe` reads ``/proc/self/mountinfo`` and ``/proc/self/cgroup``; tests may build one
    from :class:`Hierarchy` values over a directory laid out like a cgroup mount.
    """

    def __init__(self, hierarchies: Iterable[Hierarchy]) -> None:
        self.hierarchies = tuple(hierarchies)

    @classmethod
    def probe(cls, mountinfo: str = "/proc/self/mountinfo",
              self_cgroup: str = "/proc/self/cgroup") -> CgroupHost:
        placements_v1: dict[str, str] = {}
        placement_v2 = None
        with open(self_cgroup) as f:
            for line in f:
                num, names, path = line.rstrip("\n").split(":", 2)
                if num == "0" and names == "":
                    placement_v2 = path
                else:
                    for c in names.split(","):
                        placements_v1[c] = path
        found: list[Hierarchy] = []
        seen: set[str] = set()
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.rstrip("\n").partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) < 5 or len(rfields) < 3:
                    continue
                fstype, options = rfields[0], rfields[2].split(",")
                root, mount = _unescape_mountinfo(fields[3]), _unescape_mountinfo(fields[4])
                if fstype == "cgroup":
                    ctrls = tuple(o for o in options
                                  if o in LIBVIRT_CONTROLLERS or o == "pids" or o.startswith("name="))
                    if not ctrls or ctrls in (h.controllers for h in found if h.version == 1):
                        continue
                    placement = placements_v1.get(ctrls[0])
                    if placement is None:
                        continue
                elif fstype == "cgroup2" and placement_v2 is not None and "cgroup2" not in seen:
                    seen.add("cgroup2")
                    try:
                        with open(os.path.join(mount, "cgroup.controllers")) as cf:
                            ctrls = tuple(cf.read().split())
                    except OSError:
                        continue
                    placement = placement_v2
                else:
                    continue
                # a mount of a sub-tree (a container's view): placements are relative to its root
                if root != "/" and (placement == root or placement.startswith(root + "/")):
                    placement = placement[len(root):] or "/"
                found.append(Hierarchy(1 if fstype == "cgroup" else 2, mount, ctrls, placement))
        return cls(found)

    def select(self, controllers: Sequence[str] | None) -> list[tuple[Hierarchy, tuple[str, ...]]]:
        """The hierarchies to use for ``controllers`` (None: every one libvirt uses), each with the
        controllers it serves; a v1 hierarchy wins over v2 for the same controller, as the kernel
        binds each controller to one of them. ``name=systemd`` alone is v1 only."""
        wanted = LIBVIRT_CONTROLLERS if controllers is None else tuple(controllers)
        out: list[tuple[Hierarchy, tuple[str, ...]]] = []
        taken: set[str] = set()
        for h in self.hierarchies:
            if h.version == 1:
                mine = tuple(c for c in h.controllers if c in wanted)
                if mine:
                    out.append((h, mine))
                    taken.update(mine)
        for h in self.hierarchies:
            if h.version == 2:
                mine = tuple(c for c in h.controllers if c in wanted and c not in taken)
                if mine or (not taken and wanted and controllers is None):
                    out.append((h, mine))
        return out


# --- the device ACL --------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceRule:
    """One line of a v1 ``devices.allow``: ``TYPE MAJOR:MINOR PERMS`` (None: every minor)."""

    type: str                 #: "c" or "b"
    major: int
    minor: int | None
    perms: str                #: "r" or "rw"
    path: str | None = field(default=None, compare=False)  #: the path it was made for

    def __str__(self) -> str:
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {self.major}:{minor} {self.perms}"


def _rule_for(path: str, perms: str) -> DeviceRule | None:
    """The rule for a device path; None when it does not exist or is no device (libvirt skips)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _error(f"cannot stat {path} for the cgroup device ACL: {e.strerror}") from e
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    else:
        return None
    return DeviceRule(kind, os.major(st.st_rdev), os.minor(st.st_rdev), perms, path)


def _disk_paths(domain: Domain) -> Iterable[tuple[str, bool]]:
    """(path, read-only) of every local disk source and backing layer."""
    for disk in domain.disks:
        readonly = bool(disk.readonly) or disk.device == "cdrom"
        layer: Any = disk
        while layer is not None:
            src = layer.source
            path = None
            if src is not None and layer.type in ("block", "file", None):
                path = src.dev if layer.type == "block" else src.file
            if path:
                yield path, readonly
            layer = layer.backing_store if layer is disk else layer.backing
            readonly = True  # QEMU only reads backing layers


def device_acl(domain: Domain, conf_acl: Sequence[str]) -> list[DeviceRule]:
    """The devices a domain's QEMU may open, in the order libvirt allows them: disks, character
    devices, RNG, ptys, then qemu.conf's ``cgroup_device_acl`` (``conf_acl``)."""
    rules: list[DeviceRule] = []

    def add(path: str, perms: str) -> None:
        rule = _rule_for(path, perms)
        if rule is not None and rule not in rules:
            rules.append(rule)

    for path, readonly in _disk_paths(domain):
        add(path, "r" if readonly else "rw")
    devices = domain.devices
    if devices is not None:
        for chardev in (*devices.serials, *devices.parallels, *devices.consoles, *devices.channels):
            if chardev.type == "dev":
                for src in chardev.sources:
                    if src.path:
                        add(src.path, "rw")
        for rng in devices.rngs:
            backend = rng.backend
            if backend is not None and backend.model == "random":
                add(backend.path or "/dev/urandom", "rw")
    rules.append(DeviceRule("c", PTY_MAJOR, None, "rw", "/dev/pts/*"))
    for path in conf_acl:
        add(path, "rw")
    return rules


# --- one domain's groups ---------------------------------------------------------------------------

@dataclass
class Group:
    """One of a domain's group directories, in one hierarchy."""

    version: int
    path: str                      #: the domain's group directory
    controllers: tuple[str, ...]

    @property
    def instance_dir(self) -> str:
        return os.path.dirname(self.path)

    @property
    def base(self) -> str:
        """The group it was created under (the creator's own placement)."""
        return os.path.dirname(os.path.dirname(self.instance_dir))


@dataclass
class DomainCgroup:
    """A domain's groups, one per hierarchy used; made by :func:`create` or :meth:`from_status`."""

    name: str
    instance: str
    groups: list[Group]
    rules: list[DeviceRule] = field(default_factory=list)  #: what devices.allow was given
    #: whether the device ACL is in force; when False, :attr:`devices_reason` says why
    devices_enforced: bool = False
    devices_reason: str = ""

    STATUS_VERSION = 1

    # --- for the process layer ----------------------------------------------------------------------

    def procs_paths(self) -> list[str]:
        """The ``cgroup.procs`` files the QEMU child writes ``0`` to before exec (:func:`join`,
        :func:`wrap_command`)."""
        return [os.path.join(g.path, "cgroup.procs") for g in self.groups]

    def path_of(self, controller: str) -> str | None:
        """The group directory serving ``controller`` (None if no group does)."""
        for g in self.groups:
            if controller in g.controllers:
                return g.path
        return None

    def attach(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into every group."""
        for g in self.groups:
            _write(os.path.join(g.path, "cgroup.procs"), str(pid))

    def pids(self) -> set[int]:
        """The processes in any of the groups (missing groups count as empty)."""
        found: set[int] = set()
        for g in self.groups:
            found.update(_procs(g.path))
        return found

    def remove(self) -> list[str]:
        """Remove the groups; best effort, returning the problems as messages.

        Processes still in a group are moved back to the group it was created under; a group that
        is already gone is fine. The instance and ``pyvirt`` directories go too when nothing else is
        in them (the kernel refuses to remove a group with children, so a concurrent start in
        the same instance is never disturbed).
        """
        problems: list[str] = []
        for g in self.groups:
            stragglers = _procs(g.path)
            for pid in stragglers:
                try:
                    _write(os.path.join(g.base, "cgroup.procs"), str(pid))
                except PyvirtError as e:
                    if os.path.exists(f"/proc/{pid}"):
                        problems.append(str(e))
            problem = _rmdir(g.path, wait=_RMDIR_WAIT)
            if problem:
                problems.append(problem)
                continue
            for parent in (g.instance_dir, os.path.dirname(g.instance_dir)):
                try:
                    os.rmdir(parent)
                except OSError:
                    break  # not empty (another domain or instance), or gone: leave it
        return problems

    # --- status ---------------------------------------------------------------------------------

    def to_status(self) -> dict[str, Any]:
        """A JSON-able record for the domain's status file."""
        return {
            "version": self.STATUS_VERSION,
            "name": self.name,
            "instance": self.instance,
            "groups": [{"cgroup": g.version, "path": g.path, "controllers": list(g.controllers)}
                       for g in self.groups],
            "devices": [str(r) for r in self.rules],
            "devices_enforced": self.devices_enforced,
            "devices_reason": self.devices_reason,
        }

    @classmethod
    def from_status(cls, data: Mapping[str, Any]) -> DomainCgroup:
        """Read back :meth:`to_status`; a record that does not name pyvirt's own groups (a
        damaged or foreign status file) is an error, so :meth:`remove` can never touch others."""
        try:
            if data["version"] != cls.STATUS_VERSION:
                raise ValueError(f"unknown version {data['version']!r}")
            name, instance = str(data["name"]), str(data["instance"])
            if not _INSTANCE_RE.fullmatch(instance):
                raise ValueError(f"bad instance tag {instance!r}")
            groups = []
            for g in data["groups"]:
                path = str(g["path"])
                version = int(g["cgroup"])
                parts = path.split("/")
                if (version not in (1, 2) or not os.path.isabs(path) or os.path.normpath(path) != path
                        or parts[-3:] != [_TOP, instance, group_dir_name(name)]):
                    raise ValueError(f"{path!r} is not pyvirt's group for domain {name!r}")
                groups.append(Group(version, path, tuple(str(c) for c in g["controllers"])))
            rules = [_parse_rule(str(r)) for r in data.get("devices", [])]
            return cls(name, instance, groups, rules, bool(data["devices_enforced"]),
                       str(data.get("devices_reason", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise _error(f"invalid cgroup record in the domain's status: {e}; remove the domain's "
                         "status file if QEMU is no longer running") from e


def _parse_rule(text: str) -> DeviceRule:
    m = re.fullmatch(r"([cb]) (\d+):(\d+|\*) (rw|r)", text)
    if m is None:
        raise ValueError(f"bad device rule {text!r}")
    return DeviceRule(m[1], int(m[2]), None if m[3] == "*" else int(m[3]), m[4])


# --- file helpers ----------------------------------------------------------------------------------

def _write(path: str, value: str) -> None:
    try:
        # O_TRUNC as a shell's '>' does: cgroupfs ignores it; a stand-in regular file needs it
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise _error(f"cannot write '{value}' to {path}: {e.strerror}") from e


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _procs(group: str) -> list[int]:
    try:
        return [int(p) for p in _read(os.path.join(group, "cgroup.procs")).split()]
    except OSError:  # gone, or not a group: nothing in it to wait for
        return []


def _rmdir(path: str, *, wait: float) -> str | None:
    """Remove one group, waiting up to ``wait`` seconds for exiting tasks to leave it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.EBUSY and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            left = _procs(path)
            extra = f" (processes still in it: {' '.join(map(str, left))})" if left else ""
            return f"cannot remove cgroup {path}: {e.strerror}{extra}"


# --- creation --------------------------------------------------------------------------------------

def _memory_v1(kib: int) -> str:
    return "-1" if kib >= MEMORY_UNLIMITED_KIB else str(kib * 1024)


def _memory_v2(kib: int) -> str:
    return "max" if kib >= MEMORY_UNLIMITED_KIB else str(kib * 1024)


def _check_tunables(domain: Domain, used: set[str]) -> None:
    mt = domain.memtune
    if mt is not None and any(v is not None for v in (mt.hard_limit, mt.soft_limit, mt.swap_hard_limit)):
        if "memory" not in used:
            raise _unsupported(f"domain '{domain.name}' has <memtune> limits but the memory cgroup "
                               "controller is not available (or not in qemu.conf's "
                               "cgroup_controllers); remove <memtune> or enable the controller")
        if (mt.hard_limit is not None and mt.swap_hard_limit is not None
                and mt.swap_hard_limit < mt.hard_limit):
            raise _unsupported(f"domain '{domain.name}': <memtune> hard_limit ({mt.hard_limit} KiB) "
                               f"must be lower than or equal to swap_hard_limit "
                               f"({mt.swap_hard_limit} KiB)")
    ct = domain.cputune
    if ct is not None and any(v is not None for v in (ct.shares, ct.period, ct.quota,
                                                      ct.global_period, ct.global_quota)):
        if "cpu" not in used:
            raise _unsupported(f"domain '{domain.name}' has <cputune> shares/period/quota but the cpu "
                               "cgroup controller is not available (or not in qemu.conf's "
                               "cgroup_controllers); remove them or enable the controller")


def _cpu_limit(domain: Domain) -> tuple[int | None, int | None]:
    """(period, quota) for the whole QEMU; see the module docstring for period/quota."""
    ct = domain.cputune
    if ct is None:
        return None, None
    if ct.global_period is not None or ct.global_quota is not None:
        return ct.global_period, ct.global_quota
    quota = ct.quota
    if quota is not None and quota > 0:
        vcpu = domain.vcpu
        count = vcpu.count if vcpu is not None and vcpu.count else 1
        quota *= count
    return ct.period, quota


class _Creation:
    """Directories made so far, removed leaf first if creation fails."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def mkdir(self, path: str) -> bool:
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            return False
        except OSError as e:
            raise _error(f"cannot create cgroup {path}: {e.strerror}") from e
        self.made.append(path)
        return True

    def undo(self) -> None:
        for path in reversed(self.made):
            _rmdir(path, wait=_RMDIR_WAIT)


def _copy_cpuset(path: str) -> None:
    parent = os.path.dirname(path)
    for name in ("cpuset.cpus", "cpuset.mems"):
        mine = os.path.join(path, name)
        if os.path.exists(mine) and not _read(mine):
            _write(mine, _read(os.path.join(parent, name)))


def _make_group(h: Hierarchy, ctrls: tuple[str, ...], instance: str, dirname: str,
                work: _Creation) -> str:
    top = os.path.join(h.base, _TOP)
    inst = os.path.join(top, instance)
    leaf = os.path.join(inst, dirname)
    v2_enable = " ".join(f"+{c}" for c in ctrls)
    for _attempt in range(5):
        try:
            for parent_dir, path in ((h.base, top), (top, inst)):
                if h.version == 2 and v2_enable:
                    _write(os.path.join(parent_dir, "cgroup.subtree_control"), v2_enable)
                work.mkdir(path)
                if h.version == 1 and "cpuset" in ctrls:
                    _copy_cpuset(path)  # also when it exists: an earlier start may have died here
            if h.version == 2 and v2_enable:
                _write(os.path.join(inst, "cgroup.subtree_control"), v2_enable)
            if not work.mkdir(leaf):
                # left behind by a process that died: reuse nothing of it
                if _procs(leaf):
                    raise _error(f"cgroup {leaf} is in use by processes "
                                 f"{' '.join(map(str, _procs(leaf)))}: another QEMU of this domain "
                                 "seems to run in this instance; stop it first")
                problem = _rmdir(leaf, wait=0)
                if problem:
                    raise _error(problem)
                if not work.mkdir(leaf):
                    raise _error(f"cannot create cgroup {leaf}: it exists")
            if h.version == 1 and "cpuset" in ctrls:
                _copy_cpuset(leaf)
            return leaf
        except OperationFailed as e:
            # a concurrent remove() may take the instance directory away between two mkdirs
            if isinstance(e.__cause__, FileNotFoundError) and _attempt < 4:
                continue
            raise
    raise AssertionError("unreachable")


def _apply_v1(domain: Domain, g: Group, rules: Sequence[DeviceRule]) -> None:
    p = g.path
    if "devices" in g.controllers:
        _write(os.path.join(p, "devices.deny"), "a")
        for rule in rules:
            _write(os.path.join(p, "devices.allow"), str(rule))
    mt = domain.memtune
    if "memory" in g.controllers and mt is not None:
        if mt.hard_limit is not None:
            _write(os.path.join(p, "memory.limit_in_bytes"), _memory_v1(mt.hard_limit))
        if mt.soft_limit is not None:
            _write(os.path.join(p, "memory.soft_limit_in_bytes"), _memory_v1(mt.soft_limit))
        if mt.swap_hard_limit is not None:
            memsw = os.path.join(p, "memory.memsw.limit_in_bytes")
            if not os.path.exists(memsw):
                raise _unsupported(f"domain '{domain.name}' sets <memtune><swap_hard_limit> but "
                                   f"this host has no swap accounting ({memsw} is missing; boot "
                                   "with swapaccount=1); remove swap_hard_limit")
            _write(memsw, _memory_v1(mt.swap_hard_limit))
    ct = domain.cputune
    if "cpu" in g.controllers and ct is not None:
        if ct.shares is not None:
            _write(os.path.join(p, "cpu.shares"), str(ct.shares))
        period, quota = _cpu_limit(domain)
        if period is not None:
            _write(os.path.join(p, "cpu.cfs_period_us"), str(period))
        if quota is not None:
            _write(os.path.join(p, "cpu.cfs_quota_us"), str(quota))


def _apply_v2(domain: Domain, g: Group) -> None:
    p = g.path
    mt = domain.memtune
    if "memory" in g.controllers and mt is not None:
        if mt.hard_limit is not None:
            _write(os.path.join(p, "memory.max"), _memory_v2(mt.hard_limit))
        if mt.soft_limit is not None:
            _write(os.path.join(p, "memory.high"), _memory_v2(mt.soft_limit))
        if mt.swap_hard_limit is not None:
            # v2 limits swap alone: what libvirt's swap_hard_limit (memory + swap) leaves over
            swap = mt.swap_hard_limit
            if swap < MEMORY_UNLIMITED_KIB and mt.hard_limit is not None:
                swap -= mt.hard_limit
            _write(os.path.join(p, "memory.swap.max"), _memory_v2(swap))
    ct = domain.cputune
    if "cpu" in g.controllers and ct is not None:
        if ct.shares is not None:
            if not 1 <= ct.shares <= 10000:
                raise _unsupported(f"domain '{domain.name}': <cputune><shares> {ct.shares} is out of "
                                   "range for cgroup v2 (cpu.weight takes 1 to 10000)")
            _write(os.path.join(p, "cpu.weight"), str(ct.shares))
        period, quota = _cpu_limit(domain)
        if period is not None or quota is not None:
            text = "max" if quota is None or quota < 0 else str(quota)
            _write(os.path.join(p, "cpu.max"), f"{text} {period if period is not None else 100000}")


def prime_migration(host: CgroupHost) -> None:
    """Make the coming move of a QEMU into its v1 groups cheap, starting now, in the background.

    Moving a process between cgroups takes a kernel lock whose first writer after a quiet period
    waits for an RCU grace period (7-16 ms measured here); writers soon after it pass at once
    (0.05 ms). A thread of ours moving itself into the group it is already in (which changes
    nothing) pays that wait while the start does its other work, so the child's join before exec
    does not. Best effort: nothing depends on it.
    """
    h = next((h for h in host.hierarchies if h.version == 1), None)
    if h is None:
        return
    tasks = os.path.join(h.base, "tasks")

    def move_self() -> None:
        try:
            with open(tasks, "w") as f:
                f.write(str(threading.get_native_id()))
        except OSError as e:
            log.debug("%s: %s", tasks, e)

    threading.Thread(target=move_self, name="pyvirt-cgroup-prime", daemon=True).start()


def create(domain: Domain, *, instance: str, controllers: Sequence[str] | None = None,
           device_acl_paths: Sequence[str] = DEFAULT_CGROUP_DEVICE_ACL,
           host: CgroupHost | None = None) -> DomainCgroup | None:
    """Create and fill a domain's groups; None when no controller is to be used.

    ``instance`` is :func:`instance_tag`; ``controllers`` and ``device_acl_paths`` are qemu.conf's
    ``cgroup_controllers`` (None: all available; empty: no cgroups) and ``cgroup_device_acl``;
    ``host`` defaults to :meth:`CgroupHost.probe`. Errors (:class:`OperationFailed` naming the file
    and value, or a CONFIG_UNSUPPORTED error for tunables the host cannot apply) leave nothing
    behind.
    """
    if controllers is not None and not controllers:
        _check_tunables(domain, set())
        return None
    if not _INSTANCE_RE.fullmatch(instance):
        raise _error(f"invalid cgroup instance tag {instance!r}: use instance_tag()")
    name = domain.name or ""
    host = CgroupHost.probe() if host is None else host
    chosen = host.select(controllers)
    used = {c for _h, ctrls in chosen for c in ctrls}
    _check_tunables(domain, used)
    if not chosen:
        return None
    rules = device_acl(domain, device_acl_paths) if "devices" in used else []
    dirname = group_dir_name(name)
    work = _Creation()
    groups: list[Group] = []
    try:
        for h, ctrls in chosen:
            groups.append(Group(h.version, _make_group(h, ctrls, instance, dirname, work), ctrls))
        for g in groups:
            apply_settings(domain, g.path, g.version, g.controllers, rules)
    except BaseException:
        work.undo()
        raise
    enforced, reason = devices_enforcement(chosen)
    return DomainCgroup(name, instance, groups, rules if enforced else [], enforced, reason)


def devices_enforcement(chosen: Sequence[tuple[Hierarchy, tuple[str, ...]]]) -> tuple[bool, str]:
    """Whether groups in the hierarchies :meth:`CgroupHost.select` chose enforce a device ACL, and
    if not, why (a sentence for the caller to report)."""
    if any(h.version == 1 and "devices" in ctrls for h, ctrls in chosen):
        return True, ""
    if any(h.version == 2 for h, _c in chosen):
        return False, ("device access is not restricted: on cgroup v2 it needs an eBPF program, which "
                       "pyvirt does not install yet")
    return False, ("device access is not restricted: the devices cgroup controller is not available "
                   "or not in qemu.conf's cgroup_controllers")


def apply_settings(domain: Domain, group: str, version: int, controllers: Sequence[str],
                   rules: Sequence[DeviceRule] = ()) -> None:
    """Write a domain's device ACL (v1) and memory/CPU limits into the existing group directory
    ``group`` of cgroup ``version``, for the ``controllers`` that group serves."""
    g = Group(version, group, tuple(controllers))
    if version == 1:
        _apply_v1(domain, g, rules)
    else:
        _apply_v2(domain, g)


def create_for(domain: Domain, conf: QemuConf, paths: InstancePaths, *,
               host: CgroupHost | None = None) -> DomainCgroup | None:
    """:func:`create` with the settings of a driver instance and its qemu.conf.

    None for the session instance: like libvirt, an unprivileged driver uses no cgroups (and so
    applies no <memtune>/<cputune> limits).
    """
    if paths.kind == "session":
        return None
    return create(domain, instance=instance_tag(paths), controllers=conf.cgroup_controllers,
                  device_acl_paths=conf.cgroup_device_acl, host=host)
