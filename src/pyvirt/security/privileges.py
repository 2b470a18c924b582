# SPDX-License-Identifier: LGPL-2.1-or-later
"""What happens to QEMU's credentials between fork and exec: identity and capabilities.

Policy (libvirt >= 6.0 does the same for the first two points):

* QEMU running as root keeps every capability the caller has: nothing is changed, and QEMU is
  exec'd directly.
* QEMU running as anyone else has none: the bounding set is emptied (while the child still holds
  CAP_SETPCAP, i.e. before the uid switch), then supplementary groups, gid and uid are switched (all
  three of real/effective/saved), which makes the kernel clear the effective and permitted sets; the
  inheritable and ambient sets are then cleared explicitly, because a uid switch leaves the
  inheritable set alone, and ``no_new_privs`` is set so that no setuid binary or file capability can
  hand privileges back to QEMU or to anything it runs. (The bridge helper, which is setuid, must
  therefore be run by pyvirt, not by QEMU, as libvirt does.)
* A mandatory access control driver (SELinux, AppArmor) names the label QEMU is exec'd into; the
  child writes it to its ``/proc/self/attr`` exec attribute first, while that file is still its own
  (an identity switch makes the process non-dumpable and the file root's). If the kernel refuses,
  the child stops instead of running QEMU unconfined.
* The session instance runs QEMU as the calling user: no identity switch is attempted, and only what
  an unprivileged process may drop is dropped (the bounding set needs CAP_SETPCAP and is left alone
  when the caller lacks it).

How the child gets there. The process layer spawns with ``subprocess.Popen`` without a Python
``preexec_fn`` (see :mod:`pyvirt.qemu.proc`): a preexec hook runs Python in a forked copy of a
threaded process (locks held by other threads stay locked forever) and forbids ``vfork``.
``Popen(user=, group=, extra_groups=)`` switches identity without Python in the child, but before
exec, leaving no moment with CAP_SETPCAP to empty the bounding set, and it cannot touch the
inheritable or ambient sets or ``no_new_privs``. So pyvirt execs a small shim first: this very file,
run as a script by an isolated interpreter (``python -I -S``), which applies the credentials and then
execs QEMU in the same process, so QEMU keeps the pid the caller was given, its environment and the
file descriptors passed to it. Cost of one spawn of /bin/true, median of 200, on the 2-core test
machine (Python 3.11):

=============================================  ========
direct ``Popen`` (vfork), what root QEMU gets    0.8 ms
``Popen(user=, group=, extra_groups=)``          1.2 ms
``Popen(preexec_fn=...)`` doing everything       2.4 ms  (unsafe with threads: rejected)
``setpriv`` (util-linux) doing everything        2.1 ms  (external tool, version-dependent flags)
this shim (``python -I -S``)                    11.4 ms
=============================================  ========

About 10 ms more per non-root start, small beside QEMU's own start-up (tens to hundreds of ms),
buys a spawn path with no Python in a forked threaded process and every rule here in pyvirt's own,
tested code. To keep the shim that cheap, everything the shim executes comes first in this file and
imports only ``os``, ``sys``, ``_signal`` and ``ctypes`` (``dataclasses``, ``typing``, ``enum`` or
``ctypes.util`` would each add 3-40 ms); the guard that runs it sits before the parent-side API.
Root QEMU pays nothing: :func:`wrap_command` returns the command unchanged.
"""

from __future__ import annotations

import _signal  # the C module: 'signal' would import enum, several ms more for the shim
import ctypes
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see the docstring)
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ChildCredentials",
    "credentials_for",
    "supplementary_groups",
    "wrap_command",
    "apply_credentials",
    "SHIM_PATH",
    "SHIM_SETUP_FAILED",
    "SHIM_EXEC_FAILED",
]

#: exit status of the shim when it cannot set up the child (it never execs QEMU then)
SHIM_SETUP_FAILED = 126
#: exit status of the shim when exec of the program itself fails (as a shell reports it)
SHIM_EXEC_FAILED = 127

# <linux/prctl.h> and <linux/capability.h>
_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_EPERM = 1


class ChildCredentials:
    """What the child does to itself before exec'ing QEMU; None means 'leave as it is'.

    (A plain class rather than a dataclass: the shim must not import dataclasses.)
    """

    __slots__ = ("uid", "gid", "groups", "clear_capabilities", "no_new_privs", "selinux_exec_label",
                 "apparmor_exec_profile")

    def __init__(self, uid: int | None = None, gid: int | None = None,
                 groups: tuple[int, ...] | None = None, clear_capabilities: bool = False,
                 no_new_privs: bool = False, selinux_exec_label: str | None = None,
                 apparmor_exec_profile: str | None = None) -> None:
        self.uid = uid
        self.gid = gid
        #: the supplementary groups, replacing the caller's; None keeps the caller's
        self.groups = None if groups is None else tuple(groups)
        #: empty every capability set (the bounding set too when the child may)
        self.clear_capabilities = clear_capabilities
        self.no_new_privs = no_new_privs
        #: the SELinux context QEMU is exec'd into (written to /proc/self/attr/exec first)
        self.selinux_exec_label = selinux_exec_label
        #: the AppArmor profile QEMU is exec'd into ("exec NAME" to /proc/self/attr/apparmor/exec)
        self.apparmor_exec_profile = apparmor_exec_profile

    def _key(self) -> tuple[object, ...]:
        return (self.uid, self.gid, self.groups, self.clear_capabilities, self.no_new_privs,
                self.selinux_exec_label, self.apparmor_exec_profile)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChildCredentials) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return ("ChildCredentials(uid={!r}, gid={!r}, groups={!r}, clear_capabilities={!r}, "
                "no_new_privs={!r}, selinux_exec_label={!r}, apparmor_exec_profile={!r})"
                .format(*self._key()))

    @property
    def is_noop(self) -> bool:
        return (self.uid is None and self.gid is None and self.groups is None
                and not self.clear_capabilities and not self.no_new_privs
                and self.selinux_exec_label is None and self.apparmor_exec_profile is None)

    def to_options(self) -> list[str]:
        """The shim's command-line options for these credentials."""
        opts: list[str] = []
        if self.uid is not None:
            opts += ["--uid", str(self.uid)]
        if self.gid is not None:
            opts += ["--gid", str(self.gid)]
        if self.groups is not None:
            opts += ["--groups", ",".join(str(g) for g in self.groups)]
        if self.clear_capabilities:
            opts.append("--clear-caps")
        if self.no_new_privs:
            opts.append("--no-new-privs")
        if self.selinux_exec_label is not None:
            opts += ["--selinux-exec", self.selinux_exec_label]
        if self.apparmor_exec_profile is not None:
            opts += ["--apparmor-exec", self.apparmor_exec_profile]
        return opts

    @classmethod
    def from_options(cls, opts: Sequence[str]) -> ChildCredentials:
        creds = cls()
        it = iter(opts)
        for opt in it:
            if opt == "--uid":
                creds.uid = int(next(it))
            elif opt == "--gid":
                creds.gid = int(next(it))
            elif opt == "--groups":
                text = next(it)
                creds.groups = tuple(int(g) for g in text.split(",")) if text else ()
            elif opt == "--clear-caps":
                creds.clear_capabilities = True
            elif opt == "--no-new-privs":
                creds.no_new_privs = True
            elif opt == "--selinux-exec":
                creds.selinux_exec_label = next(it)
            elif opt == "--apparmor-exec":
                creds.apparmor_exec_profile = next(it)
            else:
                raise ValueError(f"unknown option {opt!r}")
        return creds


# --- in the child: what the shim runs --------------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    # dlopen(NULL): the interpreter links libc, so prctl and capset resolve without ctypes.util,
    # whose import alone costs more than the rest of the shim
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 63  # PR_CAPBSET_READ answers EINVAL past the last one, which ends the loop


def _drop_bounding_set(libc: ctypes.CDLL) -> None:
    for cap in range(_last_cap() + 1):
        held = libc.prctl(_PR_CAPBSET_READ, cap, 0, 0, 0)
        if held < 0:
            break  # beyond what this kernel knows
        if held == 0:
            continue
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err == _EPERM and os.geteuid() != 0:
                # an unprivileged caller cannot shrink its bounding set; with no_new_privs set and
                # no capability held, nothing it runs can use those capabilities anyway
                return
            raise OSError(err, f"cannot drop capability {cap} from the bounding set: "
                               f"{os.strerror(err)}")


def _write_exec_attr(paths: tuple[str, ...], value: bytes, what: str) -> None:
    """Write ``value`` to the first of ``paths`` that exists (the LSM's per-process exec attribute)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise OSError(e.errno, f"cannot set {what}: {path}: {e.strerror}") from e
        try:
            os.write(fd, value)
        except OSError as e:
            raise OSError(e.errno, f"cannot set {what}: {path}: {e.strerror}") from e
        finally:
            os.close(fd)
        return
    raise OSError(2, f"cannot set {what}: none of {', '.join(paths)} exists (is the security "
                     "module enabled in this kernel?)")


def apply_credentials(creds: ChildCredentials) -> None:
    """Apply ``creds`` to the calling process; an OSError names the step that failed.

    For a single-threaded process about to exec (the shim): in a threaded process the capability
    calls would change the calling thread only.
    """
    # The exec labels first: they take effect at the next exec only, and once the uid changes the
    # process is no longer dumpable, which makes its /proc/self/attr files root's and unwritable.
    if creds.selinux_exec_label is not None:
        # as libselinux's setexeccon: the context with its terminating NUL
        _write_exec_attr(("/proc/thread-self/attr/exec", "/proc/self/attr/exec"),
                         creds.selinux_exec_label.encode() + b"\0",
                         f"the SELinux exec label {creds.selinux_exec_label}")
    if creds.apparmor_exec_profile is not None:
        # as libapparmor's aa_change_onexec: the AppArmor-specific file where the kernel has it
        _write_exec_attr(("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"),
                         b"exec " + creds.apparmor_exec_profile.encode(),
                         f"the AppArmor exec profile {creds.apparmor_exec_profile}")
    libc = _libc() if creds.clear_capabilities or creds.no_new_privs else None
    if creds.clear_capabilities and libc is not None:
        # first, while CAP_SETPCAP may still be held: the uid switch below loses it
        _drop_bounding_set(libc)
    if creds.groups is not None:
        try:
            os.setgroups(list(creds.groups))
        except OSError as e:
            raise OSError(e.errno, f"cannot set supplementary groups {list(creds.groups)}: "
                                   f"{e.strerror}") from e
    if creds.gid is not None:
        try:
            os.setresgid(creds.gid, creds.gid, creds.gid)
        except OSError as e:
            raise OSError(e.errno, f"cannot switch to gid {creds.gid}: {e.strerror}") from e
    if creds.uid is not None:
        try:
            os.setresuid(creds.uid, creds.uid, creds.uid)
        except OSError as e:
            raise OSError(e.errno, f"cannot switch to uid {creds.uid}: {e.strerror}") from e
    if creds.clear_capabilities and libc is not None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()  # all zero: no effective, permitted or inheritable capability
        _check(libc.capset(ctypes.byref(header), data), "cannot clear the capability sets")
        _check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
               "cannot clear the ambient capability set")
    if creds.no_new_privs and libc is not None:
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "cannot set no_new_privs")


def _shim(args: Sequence[str]) -> int:
    """``privileges.py [OPTIONS] -- PROGRAM ARGS...``: apply OPTIONS, then exec PROGRAM."""
    args = list(args)
    split = args.index("--") if "--" in args else -1
    if split < 0 or split == len(args) - 1:
        print("pyvirt exec shim: usage: privileges.py [OPTIONS] -- PROGRAM [ARGS...]", file=sys.stderr)
        return SHIM_SETUP_FAILED
    try:
        apply_credentials(ChildCredentials.from_options(args[:split]))
    except (OSError, ValueError, StopIteration) as e:
        # OSErrors raised above carry the whole message in strerror ("cannot switch to uid 0: ...")
        message = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"pyvirt exec shim: {message or 'an option lacks its value'}", file=sys.stderr)
        return SHIM_SETUP_FAILED
    argv = args[split + 1:]
    # Python ignores these two at start-up, and an ignored disposition survives exec: give QEMU the
    # defaults a plain fork-exec would
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    try:
        os.execv(argv[0], argv)
    except OSError as e:
        print(f"pyvirt exec shim: cannot run {argv[0]}: {e.strerror}", file=sys.stderr)
    return SHIM_EXEC_FAILED


if __name__ == "__main__":
    # Here, before the parent-side part below is even compiled into functions: see the docstring.
    sys.exit(_shim(sys.argv[1:]))


# --- in the parent ---------------------------------------------------------------------------------

#: the file the shim runs; absolute, so that the child does not depend on its working directory
SHIM_PATH = os.path.abspath(__file__)


def supplementary_groups(uid: int, gid: int) -> tuple[int, ...]:
    """The groups a process of ``uid`` gets, as login gives them (libvirt's virGetGroupList).

    A uid with no passwd entry (qemu.conf's ``+N`` form) gets just ``gid``.
    """
    import pwd

    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return (gid,)
    return tuple(dict.fromkeys([gid, *os.getgrouplist(name, gid)]))


def credentials_for(uid: int, gid: int, groups: Sequence[int] | None = None, *,
                    caller_uid: int | None = None) -> ChildCredentials:
    """The credentials for a QEMU that must run as ``uid``:``gid`` (with ``groups``).

    ``groups`` defaults to the user's groups (:func:`supplementary_groups`). When QEMU runs as the
    unprivileged caller itself (the session instance), no identity switch is requested. Root QEMU
    keeps all capabilities.
    """
    me = os.geteuid() if caller_uid is None else caller_uid
    if me == 0:
        if uid == 0:
            # root keeps everything; only the group may differ (user = "root", group = "kvm")
            if gid == os.getegid() and groups is None:
                return ChildCredentials()
            return ChildCredentials(gid=gid, groups=None if groups is None else tuple(groups))
        return ChildCredentials(uid=uid, gid=gid,
                                groups=tuple(groups) if groups is not None
                                else supplementary_groups(uid, gid),
                                clear_capabilities=True, no_new_privs=True)
    if uid != me:
        raise _error(f"cannot run QEMU as uid {uid} from an unprivileged process (uid {me}): the "
                     "session instance runs QEMU as its own user; set user and group in qemu.conf "
                     "to your own, or use the system instance")
    return ChildCredentials(clear_capabilities=True, no_new_privs=True)


def wrap_command(argv: Sequence[str], creds: ChildCredentials, *,
                 python: str | None = None) -> list[str]:
    """The command to spawn so that ``argv`` runs with ``creds`` (``argv`` itself when no change).

    The result runs the shim, which applies the credentials and execs ``argv[0]`` with the
    environment and file descriptors it was given, in the same process. ``argv[0]`` must be a path:
    the shim does not search PATH.
    """
    if not argv:
        from pyvirt.errors import InternalError

        raise InternalError("wrap_command() needs a command")
    if creds.is_noop:
        return list(argv)
    if not os.path.isabs(argv[0]):
        raise _error(f"the emulator must be given as an absolute path, got {argv[0]!r}")
    interpreter = python or sys.executable or "/usr/bin/python3"
    # -I: ignore PYTHON* variables and the user's site directory (the shim starts as root);
    # -S: no site import, which pyvirt's shim does not need and which halves the start-up time
    return [interpreter, "-I", "-S", SHIM_PATH, *creds.to_options(), "--", *argv]


def _error(message: str) -> Exception:
    from pyvirt.errors import OperationInvalid, codes

    return OperationInvalid(message, domain=codes.VIR_FROM_SECURITY)
