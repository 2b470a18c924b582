# SPDX-License-Identifier: LGPL-2.1-or-later
"""Driver instances (system, session, embed) and the directory tree each one owns.

The embed tree is libvirt's, under the root the URI names::

    ROOT/etc/qemu.conf        ROOT/etc/qemu/NAME.xml    ROOT/etc/pki/qemu/
    ROOT/log/qemu/  ROOT/log/swtpm/   ROOT/run/qemu/  ROOT/run/swtpm/
    ROOT/cache/qemu/          ROOT/lib/qemu/            ROOT/lib/swtpm/

The system instance lives under pyvirt's own directories (``/etc/pyvirt``, ``/var/lib/pyvirt``,
``/run/pyvirt``, ``/var/cache/pyvirt``, ``/var/log/pyvirt``), below an optional prefix
(``PYVIRT_PREFIX``), so that it never touches a real libvirt's state. The session instance follows
the XDG base directories of the calling user.

One process at a time drives an instance: :class:`InstanceLock` holds a POSIX lock on
``run/qemu/driver.pid``; a second process gets an error naming the holder's pid. Inside one process
the driver is shared (see :mod:`pyvirt.qemu.driver`), since POSIX locks are per process.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple

from pyvirt.errors import OperationFailed, OperationInvalid

InstanceKind = Literal["system", "session", "embed"]

#: what the libvirt QEMU driver keeps under lib/qemu for each running domain
MONITOR_SOCKET_NAME = "monitor.sock"


class InstancePaths(NamedTuple):
    """Every directory one driver instance reads or writes."""

    kind: InstanceKind
    config_dir: Path         #: holds qemu.conf
    domain_config_dir: Path  #: persistent domain definitions, NAME.xml
    pki_dir: Path
    log_dir: Path
    swtpm_log_dir: Path
    run_dir: Path
    swtpm_run_dir: Path
    cache_dir: Path
    lib_dir: Path
    swtpm_lib_dir: Path
    root: Path | None = None  #: the embed root

    @property
    def qemu_conf(self) -> Path:
        return self.config_dir / "qemu.conf"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "driver.pid"

    def directories(self) -> tuple[Path, ...]:
        """The directories the instance creates on open, parents first."""
        return (self.config_dir, self.domain_config_dir, self.pki_dir, self.log_dir,
                self.swtpm_log_dir, self.run_dir, self.swtpm_run_dir, self.cache_dir,
                self.lib_dir, self.swtpm_lib_dir)

    def domain_lib_dir(self, domain_id: int, name: str) -> Path:
        """Per-domain private directory (holds the monitor socket), named as libvirt does."""
        return self.lib_dir / f"domain-{domain_id}-{short_domain_name(name)}"

    def monitor_socket(self, domain_id: int, name: str) -> Path:
        return self.domain_lib_dir(domain_id, name) / MONITOR_SOCKET_NAME

    def create(self) -> None:
        """Create the tree with owner-only permissions; existing directories are left as they are.

        The owner-only mode is the safe default; the security layer opens up what the QEMU user must
        reach when it runs QEMU as another user.
        """
        if self.root is not None:
            _mkdir(self.root, 0o755)
        for directory in self.directories():
            _mkdir(directory, 0o700)


def short_domain_name(name: str) -> str:
    """The domain name as libvirt puts it in per-domain paths: at most 20 characters."""
    return name[:20]


def _mkdir(path: Path, mode: int) -> None:
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise OperationFailed(
            f"cannot create directory {path}: {exc.strerror}; check that its parent exists and is "
            f"writable by uid {os.geteuid()}") from exc
    if not path.is_dir():
        raise OperationFailed(f"{path} exists but is not a directory; move it out of the way")


def embed_paths(root: Path) -> InstancePaths:
    return InstancePaths(
        kind="embed",
        root=root,
        config_dir=root / "etc",
        domain_config_dir=root / "etc" / "qemu",
        pki_dir=root / "etc" / "pki" / "qemu",
        log_dir=root / "log" / "qemu",
        swtpm_log_dir=root / "log" / "swtpm",
        run_dir=root / "run" / "qemu",
        swtpm_run_dir=root / "run" / "swtpm",
        cache_dir=root / "cache" / "qemu",
        lib_dir=root / "lib" / "qemu",
        swtpm_lib_dir=root / "lib" / "swtpm",
    )


def system_paths(environ: Mapping[str, str] | None = None) -> InstancePaths:
    env = os.environ if environ is None else environ
    prefix = Path(env.get("PYVIRT_PREFIX") or "/")
    etc = prefix / "etc" / "pyvirt"
    return InstancePaths(
        kind="system",
        config_dir=etc,
        domain_config_dir=etc / "qemu",
        pki_dir=etc / "pki" / "qemu",
        log_dir=prefix / "var" / "log" / "pyvirt" / "qemu",
        swtpm_log_dir=prefix / "var" / "log" / "pyvirt" / "swtpm",
        run_dir=prefix / "run" / "pyvirt" / "qemu",
        swtpm_run_dir=prefix / "run" / "pyvirt" / "qemu" / "swtpm",
        cache_dir=prefix / "var" / "cache" / "pyvirt" / "qemu",
        lib_dir=prefix / "var" / "lib" / "pyvirt" / "qemu",
        swtpm_lib_dir=prefix / "var" / "lib" / "pyvirt" / "swtpm",
    )


def session_paths(environ: Mapping[str, str] | None = None, uid: int | None = None) -> InstancePaths:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "pyvirt"
    cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "pyvirt"
    # Like libvirt: the runtime dir when the session has one, else a private dir in the cache.
    runtime = env.get("XDG_RUNTIME_DIR")
    run = Path(runtime) / "pyvirt" if runtime else cache / "run"
    return InstancePaths(
        kind="session",
        config_dir=config,
        domain_config_dir=config / "qemu",
        pki_dir=config / "pki" / "qemu",
        log_dir=cache / "qemu" / "log",
        swtpm_log_dir=cache / "qemu" / "log" / "swtpm",
        run_dir=run / "qemu" / "run",
        swtpm_run_dir=run / "qemu" / "run" / "swtpm",
        cache_dir=cache / "qemu" / "cache",
        lib_dir=config / "qemu" / "lib",
        swtpm_lib_dir=config / "qemu" / "lib" / "swtpm",
    )


class InstanceLock:
    """Exclusive use of an instance by this process, held as a POSIX lock on its pid file."""

    def __init__(self, paths: InstancePaths) -> None:
        self.paths = paths
        self._fd: int | None = None

    def acquire(self) -> None:
        path = self.paths.pid_file
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise OperationFailed(f"cannot lock {path}: {exc.strerror}") from exc
            holder = _lock_holder(path)
            where = f"root {self.paths.root}" if self.paths.root else f"the {self.paths.kind} instance"
            raise OperationInvalid(
                f"{where} is in use by pid {holder}: only one process may drive it at a time; "
                f"close that process's connection, or give this one another root") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _lock_holder(path: Path) -> str:
    """The pid recorded by the holder; the lock itself, not this text, is what excludes."""
    try:
        text = path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
