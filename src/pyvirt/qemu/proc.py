# SPDX-License-Identifier: LGPL-2.1-or-later
"""Process primitives for QEMU: detached spawn, identity across restarts, exit, termination,
and versioned status files.

Detaching. :func:`spawn_detached` starts QEMU in a new session (``setsid``) so that the terminal's
signals and the caller's exit leave it running. It stays the caller's child while the caller lives:
pyvirt's loop thread watches a pidfd for each child and reaps it the moment it exits (so no zombie
outlives it by more than a loop wake-up, and the exit status is kept, see :func:`exit_status`);
when the caller exits first, the kernel re-parents QEMU to init (or the nearest subreaper), which
reaps it. The spawn itself is ``subprocess.Popen``, i.e. CPython's C fork-exec with ``vfork``:
no Python code runs in the child, which matters because the caller has threads (pyvirt's loop at
least), and it is the fastest way measured (bench/bench_monitor_start.py --detach-methods: start
until the guest runs, median 49 ms, against 54 ms for a double fork and 58 ms for -daemonize):
a Python double fork (``os.fork`` + setsid + spawn + ``_exit``, so that QEMU is never our child)
costs a copy of the caller's page tables and runs Python in a forked threaded process, and QEMU's
own ``-daemonize`` waits for the whole machine set-up, then sends QEMU's stderr to /dev/null. There
is deliberately no Python ``preexec_fn`` hook: it would give up ``vfork`` and run Python in the
child; what must happen between fork and exec is a parameter (user, group, umask, fds, cwd).

Identity. A pid alone is not a process: after QEMU exits its pid may be reused. A
:class:`ProcessIdentity` adds the start time (in clock ticks since boot, from /proc/PID/stat), the
executable and a hash of the command line, which a process started later cannot share.
:func:`wait_for_exit` and :func:`terminate` work on a pidfd, opened before the identity is checked,
so that the check and the signal concern the same process.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyvirt.errors import InternalError, OperationFailed

__all__ = [
    "spawn_detached",
    "exit_status",
    "ProcessIdentity",
    "wait_for_exit",
    "terminate",
    "Ended",
    "listen_unix",
    "StatusFormat",
    "write_status",
    "read_status",
]

log = logging.getLogger(__name__)

#: how long terminate() gives a QEMU to exit after SIGTERM (it flushes disks and exits in ms)
GRACEFUL_TIMEOUT = 10.0
#: how long a SIGKILLed process may take to disappear before terminate() gives up
KILL_TIMEOUT = 10.0


# --- spawning and reaping ------------------------------------------------------------------------

class _Child:
    __slots__ = ("popen", "pidfd", "done")

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int | None) -> None:
        self.popen = popen
        self.pidfd = pidfd
        self.done = threading.Event()


_children_lock = threading.Lock()
_children: dict[int, _Child] = {}
# Exit statuses of reaped children, by pid; an entry goes when the pid is spawned again.
_exited: dict[int, int] = {}
_EXITED_KEEP = 1024


def spawn_detached(argv: Sequence[str], env: Mapping[str, str] | None = None, *,
                   cwd: str | os.PathLike[str] | None = None, log_fd: int | None = None,
                   pass_fds: Sequence[int] = (), umask: int | None = None,
                   user: int | None = None, group: int | None = None,
                   extra_groups: Sequence[int] | None = None,
                   exec_argv: Sequence[str] | None = None) -> int:
    """Start ``argv`` in a new session and return its pid; it outlives the calling process.

    stdin is /dev/null; stdout and stderr go to ``log_fd`` (or /dev/null). Only ``pass_fds``
    (kept at their numbers) and the three standard fds are open in the child. ``env`` is the
    whole environment (None: inherit). ``exec_argv``: what ``argv`` finally execs in the same
    process (after a wrapper such as the privilege shim); the call returns once it runs.
    """
    if not argv:
        raise InternalError("spawn_detached() needs a command")
    out: int = log_fd if log_fd is not None else subprocess.DEVNULL
    try:
        popen = subprocess.Popen(
            list(argv), env=None if env is None else dict(env), cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            pass_fds=tuple(pass_fds), close_fds=True, start_new_session=True,
            umask=-1 if umask is None else umask, user=user, group=group,
            extra_groups=None if extra_groups is None else list(extra_groups))
    except OSError as e:
        raise OperationFailed(f"cannot run {argv[0]}: {e.strerror or e}; check that the emulator "
                              "exists and is executable") from e
    _adopt(popen)
    _wait_exec_done(popen.pid, exec_argv if exec_argv is not None else argv, env)
    return popen.pid


#: how long a new process may take to finish exec() before its /proc view is used anyway
_EXEC_DONE_TIMEOUT = 1.0


def _wait_exec_done(pid: int, argv: Sequence[str], env: Mapping[str, str] | None) -> None:
    """Wait until the kernel has laid out the new program's arguments and environment.

    Popen returns when exec() begins (the close-on-exec error pipe closes early in exec), not
    when it ends: for a moment /proc/PID/cmdline is empty or cut short, and environ too. A pid
    identity read then would never match again, and a stop would take the process for gone.
    """
    want_cmdline = b"".join(os.fsencode(a) + b"\0" for a in argv)
    # As a set: a wrapper that execs the final program (the cgroup-joining shell) may reorder it.
    want_environ = None if env is None else {os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()}
    deadline = time.monotonic() + _EXEC_DONE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            return  # gone already: the caller finds out soon enough
        if cmdline == want_cmdline and (want_environ is None
                                        or set(environ.split(b"\0")[:-1]) == want_environ):
            return
        time.sleep(0.0002)


def _adopt(popen: subprocess.Popen[bytes]) -> None:
    pid = popen.pid
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except OSError as e:  # ENOSYS before Linux 5.3: one waiting thread per child instead
        log.debug("pidfd_open(%d) failed (%s); reaping with a thread", pid, e)
        pidfd = None
    child = _Child(popen, pidfd)
    with _children_lock:
        _children[pid] = child
        _exited.pop(pid, None)
    if pidfd is not None:
        from pyvirt.qemu.loop import get_loop  # asyncio: only once a child is spawned

        loop = get_loop()
        loop.call_soon(loop.loop.add_reader, pidfd, _reap, pid)
    else:
        threading.Thread(target=_reap_blocking, args=(pid,), name=f"pyvirt-reap-{pid}", daemon=True).start()


def _reap(pid: int) -> None:
    """On the loop thread, when the child's pidfd turns readable (it exited)."""
    with _children_lock:
        child = _children.get(pid)
    if child is None:
        return
    if child.popen.poll() is None:
        return  # not yet: pidfds only turn readable at exit, but stay safe
    if child.pidfd is not None:
        from pyvirt.qemu.loop import get_loop

        get_loop().loop.remove_reader(child.pidfd)
        os.close(child.pidfd)
    _finish(pid, child)


def _reap_blocking(pid: int) -> None:
    with _children_lock:
        child = _children.get(pid)
    if child is not None:
        child.popen.wait()
        _finish(pid, child)


def _finish(pid: int, child: _Child) -> None:
    rc = child.popen.returncode
    with _children_lock:
        _children.pop(pid, None)
        _exited[pid] = rc
        while len(_exited) > _EXITED_KEEP:
            del _exited[next(iter(_exited))]
    child.done.set()
    log.debug("child %d reaped, status %s", pid, rc)


def exit_status(pid: int) -> int | None:
    """How a child spawned by this process ended (``Popen.returncode``: -N for signal N), or None
    while it runs or when it was not spawned here (a process that merely reconnected)."""
    with _children_lock:
        return _exited.get(pid)


def _forget_children_after_fork() -> None:
    global _children_lock
    # The parent's children are not the child's; its pidfds belong to a loop that is gone.
    _children_lock = threading.Lock()
    for child in _children.values():
        if child.pidfd is not None:
            try:
                os.close(child.pidfd)
            except OSError:
                pass
    _children.clear()
    _exited.clear()


os.register_at_fork(after_in_child=_forget_children_after_fork)


def listen_unix(path: str | os.PathLike[str], backlog: int = 8) -> socket.socket:
    """A listening UNIX socket at ``path`` (a stale socket file there is replaced).

    Give its fd to QEMU (``-chardev socket,fd=N,server=on``, ``pass_fds``) and close it here once
    QEMU runs: a client may connect at once, before QEMU even listens, without polling for the
    socket to appear, and a QEMU that dies early ends that connection instead of leaving it hang.
    """
    p = os.fspath(path)
    if len(os.fsencode(p)) > 107:
        raise OperationFailed(f"UNIX socket path {p} is {len(os.fsencode(p))} bytes long, more than the "
                              "107 the kernel allows; use a shorter state directory")
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(p)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise OperationFailed(f"cannot listen on {p}: {e.strerror or e}") from e
    return sock


# --- identity ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcessIdentity:
    """Who a pid was when recorded; :meth:`matches` tells whether that same process still runs."""

    pid: int
    #: field 22 of /proc/PID/stat: clock ticks after boot; unique per pid at any one time
    start_time_ticks: int
    #: /proc/PID/exe, without the " (deleted)" an upgrade of the binary appends; None if unreadable
    exe: str | None
    #: sha256 of /proc/PID/cmdline (the NUL-separated argv)
    cmdline_hash: str

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """Read the identity of a running process; raise ProcessLookupError if there is none."""
        start, state = _stat(pid)
        if state in ("Z", "X"):
            raise ProcessLookupError(errno.ESRCH, f"process {pid} has exited")
        return cls(pid=pid, start_time_ticks=start, exe=_exe(pid), cmdline_hash=_cmdline_hash(pid))

    def matches(self) -> bool:
        """True while the very process recorded still runs (not a zombie, not a reused pid)."""
        try:
            now = ProcessIdentity.of(self.pid)
        except (ProcessLookupError, FileNotFoundError):
            return False
        if now.start_time_ticks != self.start_time_ticks or now.cmdline_hash != self.cmdline_hash:
            return False
        return self.exe is None or now.exe is None or now.exe == self.exe

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time_ticks": self.start_time_ticks, "exe": self.exe,
                "cmdline_hash": self.cmdline_hash}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProcessIdentity:
        return cls(pid=int(d["pid"]), start_time_ticks=int(d["start_time_ticks"]),
                   exe=None if d.get("exe") is None else str(d["exe"]), cmdline_hash=str(d["cmdline_hash"]))


def _stat(pid: int) -> tuple[int, str]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
    # comm (field 2) may hold spaces and parentheses: the fields proper start after the last ')'.
    rest = raw[raw.rindex(b")") + 2:].split()
    return int(rest[19]), rest[0].decode()


def _exe(pid: int) -> str | None:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None
    except OSError:  # EACCES: another user's process without CAP_SYS_PTRACE
        return None
    return exe.removesuffix(" (deleted)")


def _cmdline_hash(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from None


# --- waiting and terminating ---------------------------------------------------------------------

Target = int | ProcessIdentity


class Ended(enum.Enum):
    """How :func:`terminate` found or left the process."""

    ALREADY_GONE = "already-gone"  # it had exited before any signal
    TERMINATED = "terminated"      # it exited after SIGTERM, within the graceful timeout
    KILLED = "killed"              # it needed SIGKILL


def _open(target: Target) -> int | None:
    """A pidfd for the target process, or None when it is gone (or its pid belongs to another)."""
    pid = target.pid if isinstance(target, ProcessIdentity) else target
    with _children_lock:
        # A child of ours that was reaped already: its pid may be someone else's now.
        if pid in _exited and pid not in _children:
            return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    # Checked after opening: from now on the pidfd pins this process, whoever it is.
    if isinstance(target, ProcessIdentity) and not target.matches():
        os.close(pidfd)
        return None
    return pidfd


def _poll(pidfd: int, timeout: float | None) -> bool:
    p = select.poll()
    p.register(pidfd, select.POLLIN)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if p.poll(None if remaining is None else remaining * 1000):
            return True
        if remaining == 0.0:
            return False


def _wait_reaped(pid: int, timeout: float | None) -> bool:
    """For our own children: wait until the reaper has the exit status (no zombie left)."""
    with _children_lock:
        child = _children.get(pid)
    return True if child is None else child.done.wait(timeout)


def wait_for_exit(target: Target, timeout: float | None) -> bool:
    """Wait until the process exits; True if it did (or was gone already), False on timeout.

    A bare pid is trusted to be the process meant (right for a child spawned here); pass the
    :class:`ProcessIdentity` recorded at start for any other, so that a reused pid is not waited on.
    """
    pid = target.pid if isinstance(target, ProcessIdentity) else target
    with _children_lock:
        child = _children.get(pid)
    if child is not None:
        # Our unreaped child pins its pid, so the identity check cannot race with a reuse.
        if isinstance(target, ProcessIdentity) and not target.matches():
            return True
        return child.done.wait(timeout)
    pidfd = _open(target)
    if pidfd is None:
        return True
    try:
        return _poll(pidfd, timeout)
    finally:
        os.close(pidfd)


def terminate(target: Target, graceful_timeout: float = GRACEFUL_TIMEOUT,
              kill_timeout: float = KILL_TIMEOUT) -> Ended:
    """SIGTERM, then SIGKILL if the process is still there after ``graceful_timeout`` seconds.

    ``graceful_timeout=0`` kills at once. Raises OperationFailed when even SIGKILL does not end it
    within ``kill_timeout`` (a process stuck in the kernel). As for :func:`wait_for_exit`, give a
    :class:`ProcessIdentity` unless the pid is a child spawned here: then no other process that
    inherited the pid can be signalled. Returns once the process is gone (and, for a child of ours,
    reaped, its status in :func:`exit_status`).
    """
    pid = target.pid if isinstance(target, ProcessIdentity) else target
    pidfd = _open(target)
    if pidfd is None:
        return Ended.ALREADY_GONE
    try:
        if _poll(pidfd, 0):  # a zombie: exited, just not reaped yet
            _wait_reaped(pid, kill_timeout)
            return Ended.ALREADY_GONE
        result = Ended.TERMINATED
        if graceful_timeout > 0:
            _signal(pidfd, pid, signal.SIGTERM)
            if not _poll(pidfd, graceful_timeout):
                result = Ended.KILLED
        else:
            result = Ended.KILLED
        if result is Ended.KILLED:
            log.info("process %d is still there %s s after SIGTERM; sending SIGKILL", pid, graceful_timeout)
            _signal(pidfd, pid, signal.SIGKILL)
            if not _poll(pidfd, kill_timeout):
                raise OperationFailed(f"process {pid} did not exit within {kill_timeout} s of SIGKILL; it "
                                      f"is stuck in the kernel (state D?): see /proc/{pid}/stack")
        _wait_reaped(pid, kill_timeout)
        return result
    finally:
        os.close(pidfd)


def _signal(pidfd: int, pid: int, sig: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, sig)
    except ProcessLookupError:
        pass  # exited in between: the poll that follows sees it
    except PermissionError as e:
        raise OperationFailed(f"cannot send {signal.Signals(sig).name} to process {pid}: {e.strerror}; "
                              "it runs as another user") from e


# --- status files --------------------------------------------------------------------------------

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class StatusFormat:
    """A kind of versioned JSON state file.

    ``upgrades[n]`` turns the data of a version-``n`` file into version ``n + 1``; reading applies
    them in turn, so old files written by an older pyvirt keep working. A file from a newer pyvirt
    is refused rather than misread.
    """

    kind: str
    version: int
    upgrades: Mapping[int, Upgrade] = field(default_factory=dict)

    def upgrade(self, path: str | os.PathLike[str], version: int, data: dict[str, Any]) -> dict[str, Any]:
        if version > self.version:
            raise OperationFailed(f"{os.fspath(path)}: {self.kind} format {version} was written by a newer "
                                  f"pyvirt (this one reads up to {self.version}); upgrade pyvirt")
        while version < self.version:
            step = self.upgrades.get(version)
            if step is None:
                raise OperationFailed(f"{os.fspath(path)}: {self.kind} format {version} is too old for "
                                      f"this pyvirt (no upgrade to {version + 1}); read it with the "
                                      "pyvirt release that wrote it")
            data = step(data)
            version += 1
        return data


def write_status(path: str | os.PathLike[str], data: Mapping[str, Any], fmt: StatusFormat) -> None:
    """Replace ``path`` atomically with ``data`` in format ``fmt`` (mode 0600).

    A crash leaves either the old file or the new one, never a mix (see
    :func:`pyvirt.fsutil.atomic_write_text`).
    """
    from pyvirt.fsutil import atomic_write_text

    p = Path(path)
    doc = {"kind": fmt.kind, "version": fmt.version, "data": dict(data)}
    try:
        text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    except (TypeError, ValueError) as e:
        raise InternalError(f"{p}: the {fmt.kind} cannot be saved as JSON: {e}") from e
    atomic_write_text(p, text)


def read_status(path: str | os.PathLike[str], fmt: StatusFormat) -> dict[str, Any]:
    """The data of a status file, upgraded to ``fmt.version``.

    Raises FileNotFoundError when there is no file, OperationFailed when it cannot be used.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise OperationFailed(f"cannot read {p}: {e.strerror or e}") from e
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise OperationFailed(f"{p}: not a {fmt.kind} file (invalid JSON: {e}); move it away") from e
    if (not isinstance(doc, dict) or doc.get("kind") != fmt.kind or not isinstance(doc.get("version"), int)
            or not isinstance(doc.get("data"), dict)):
        raise OperationFailed(f"{p}: not a {fmt.kind} file (expected an object with kind "
                              f"{fmt.kind!r}, an integer version and data); move it away")
    return fmt.upgrade(p, doc["version"], doc["data"])
