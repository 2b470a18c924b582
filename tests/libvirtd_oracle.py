# SPDX-License-Identifier: LGPL-2.1-or-later
"""Tests' oracle: a real libvirtd 9.0 on private sockets, fully private from the host's libvirt.

libvirtd running as root is "privileged": its QEMU driver uses fixed system paths (/run/libvirt,
/var/lib/libvirt, /var/cache/libvirt, /etc/libvirt) whatever its config says, and takes a lock
(/run/libvirt/qemu/driver.pid) that a second daemon -- another xdist worker, or a libvirtd the host
already runs -- would collide with. So each daemon runs in its own mount namespace
(``unshare --mount --propagation private``) where:

* /run/libvirt and /var/lib/libvirt (and /var/log/libvirt if present) are fresh tmpfs;
* /etc/libvirt is a bind mount of a private directory holding only our qemu.conf, so no host
  network, storage pool or nwfilter definition is read and nothing autostarts;
* /var/cache/libvirt is a bind mount of a persistent per-worker directory, so QEMU's capabilities
  are probed once per machine rather than once per session (libvirt revalidates the cache itself);
* ``LIBVIRT_DRIVER_DIR`` points at a directory holding only the QEMU driver module, so the network,
  nwfilter, nodedev, interface, storage and secret drivers never load and never touch the host.

The mount points are the directories Debian's libvirt-daemon-system package would own; without that
package (the tests install only the daemon and its drivers) they may not exist, so any missing one
is made, empty, on the host before the namespace mounts over it (:data:`_MOUNT_POINTS`).

qemu.conf runs QEMU as root so that libvirt's check of /dev/kvm for the QEMU user passes and the
cached capabilities stay valid (with the default user, libvirt re-probes on every
getCapabilities, taking seconds). The sockets, pid file and log are in a short /tmp directory (a
UNIX socket path must stay under 108 bytes). The daemon is stopped with SIGTERM (SIGKILL after a
grace period) even when a test fails -- and by the kernel if pytest itself is killed -- and
its namespace and mounts vanish with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

LIBVIRTD = "/usr/sbin/libvirtd"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-libvirt is built for this interpreter
_DRIVER_PATTERN = "/usr/lib/*/libvirt/connection-driver/libvirt_driver_{}.so"
_START_TIMEOUT = 30.0

_NAMESPACE_SCRIPT = r"""
set -eu
mount -t tmpfs -o mode=0755 pyvirt-test /run/libvirt
mount -t tmpfs -o mode=0755 pyvirt-test /var/lib/libvirt
if [ -d /var/log/libvirt ]; then mount -t tmpfs -o mode=0755 pyvirt-test /var/log/libvirt; fi
mount --bind "$PYVIRT_LVD_CACHE" /var/cache/libvirt
mount --bind "$PYVIRT_LVD_ETC" /etc/libvirt
exec "$PYVIRT_LVD_BIN" --listen --config "$PYVIRT_LVD_CONF" --pid-file "$PYVIRT_LVD_PID"
"""

# Where the namespace script mounts; made on the host first when missing (an empty directory).
_MOUNT_POINTS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/etc/libvirt")


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG survives exec: if pytest is killed outright, the kernel stops the daemon,
    # so no libvirtd outlives its test run.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Libvirtd:
    """One running private libvirtd."""

    root: Path
    tcp_port: int
    proc: subprocess.Popen[bytes]
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def socket(self) -> str:
        return str(self.root / "libvirt-sock")

    @property
    def socket_ro(self) -> str:
        return str(self.root / "libvirt-sock-ro")

    @property
    def log(self) -> Path:
        return self.root / "libvirtd.log"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def uri(self, transport: str = "unix", *, readonly: bool = False) -> str:
        if transport == "tcp":
            return f"qemu+tcp://127.0.0.1:{self.tcp_port}/system"
        sock = self.socket_ro if readonly else self.socket
        return f"qemu+unix:///system?socket={sock}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a test may have frozen it
                self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)

    def oracle(self, script: str, *, uri: str | None = None, timeout: float = 120) -> Any:
        """Run ``script`` with Debian's libvirt-python; ``conn`` is open to this daemon and the
        script assigns ``result``, which comes back through JSON."""
        prog = ("import json, sys, libvirt\n"
                "libvirt.registerErrorHandler(lambda *a: None, None)\n"
                "conn = libvirt.open(sys.argv[1])\n"
                f"{script}\n"
                "conn.close()\n"
                "print(json.dumps(result))\n")
        out = subprocess.run([SYSTEM_PYTHON, "-c", prog, uri or self.uri()], capture_output=True,
                             text=True, timeout=timeout)
        if out.returncode != 0:
            raise AssertionError(f"libvirt-python oracle failed:\n{out.stderr}")
        return json.loads(out.stdout)


def _cache_dir() -> Path:
    # One cache per xdist worker: concurrent daemons never write the same files.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = base / "pyvirt" / "libvirtd-test-cache" / worker
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_libvirtd(**config: str) -> Libvirtd:
    """Start a private libvirtd; ``config`` adds libvirtd.conf settings (values written raw)."""
    drivers = require_drivers("qemu")
    root = Path(tempfile.mkdtemp(prefix="pyvirt-lvd-", dir="/tmp"))
    port = _free_port()
    return launch(root, drivers, {**base_settings(root, port), **config}, tcp_port=port)


def require_drivers(*drivers: str, tools: tuple[str, ...] = ()) -> dict[str, str]:
    """The installed module of each named connection driver; fails the test when libvirtd 9.0,
    one of the drivers or one of ``tools`` is missing, skips it without root (namespaces)."""
    found = {d: sorted(glob.glob(_DRIVER_PATTERN.format(d))) for d in drivers}
    if (not os.path.exists(LIBVIRTD) or not all(found.values())
            or any(shutil.which(t) is None for t in ("unshare", *tools))):
        pytest.fail(f"libvirtd 9.0 with its {'/'.join(drivers)} driver(s) or one of "
                    f"{', '.join(('unshare', *tools))} is missing: run scripts/setup.sh --test")
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root (namespaces)")
    return {d: paths[0] for d, paths in found.items()}


def base_settings(root: Path, tcp_port: int) -> dict[str, str]:
    """libvirtd.conf of a private daemon: sockets in ``root``, TCP on loopback, no auth."""
    return {
        "unix_sock_dir": f'"{root}"',
        "unix_sock_rw_perms": '"0700"',
        "auth_unix_rw": '"none"',
        "auth_unix_ro": '"none"',
        "listen_tls": "0",
        "listen_tcp": "1",
        "listen_addr": '"127.0.0.1"',
        "tcp_port": f'"{tcp_port}"',
        "auth_tcp": '"none"',
        "log_outputs": f'"3:file:{root}/libvirtd.log"',
    }


def launch(root: Path, drivers: dict[str, str], settings: dict[str, str], *, tcp_port: int,
           env: dict[str, str] | None = None, netns: bool = False) -> Libvirtd:
    """Start libvirtd on ``root`` (made by the caller; :meth:`Libvirtd.stop` removes it) with only
    ``drivers`` loadable and ``settings`` as its libvirtd.conf, in a mount namespace of its own
    (:data:`_NAMESPACE_SCRIPT`) and, with ``netns``, a network namespace with only ``lo`` up, so
    that what its network driver makes never reaches the host (its TCP port is then unreachable
    from here: only the UNIX socket is waited for). ``env`` adds to its environment."""
    for point in _MOUNT_POINTS:
        os.makedirs(point, mode=0o755, exist_ok=True)
    (root / "drivers").mkdir()
    for name, path in drivers.items():
        os.symlink(path, root / "drivers" / f"libvirt_driver_{name}.so")
    etc = root / "etc"
    etc.mkdir()
    # stdio_handler "file": the namespace has no virtlogd, without which no domain would start.
    (etc / "qemu.conf").write_text('user = "root"\ngroup = "root"\nstdio_handler = "file"\n')
    conf = root / "libvirtd.conf"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    if netns:
        cache = root / "cache"  # a daemon of another network namespace: a cache of its own
        cache.mkdir()
    else:
        cache = _cache_dir()
    full_env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(root),
        "LIBVIRT_DRIVER_DIR": str(root / "drivers"),
        "PYVIRT_LVD_CACHE": str(cache),
        "PYVIRT_LVD_ETC": str(etc),
        "PYVIRT_LVD_BIN": LIBVIRTD,
        "PYVIRT_LVD_CONF": str(conf),
        "PYVIRT_LVD_PID": str(root / "libvirtd.pid"),
        **(env or {}),
    }
    script = (_NAMESPACE_SCRIPT.replace("set -eu\n", "set -eu\nip link set lo up\n", 1) if netns
              else _NAMESPACE_SCRIPT)
    unshare = ["unshare", "--mount", *(["--net"] if netns else []), "--propagation", "private", "--"]
    with open(root / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen([*unshare, "/bin/sh", "-c", script],
                                env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, preexec_fn=_die_with_parent)
    daemon = Libvirtd(root, tcp_port, proc, settings)
    try:
        _wait_ready(daemon, tcp=not netns)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _wait_ready(daemon: Libvirtd, *, tcp: bool = True) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            err = (daemon.root / "stderr.txt").read_text(errors="replace")
            raise AssertionError(f"libvirtd exited with {daemon.proc.returncode}:\n{err}\n"
                                 f"{daemon.log_tail()}")
        if os.path.exists(daemon.socket) and (not tcp or _tcp_listening(daemon.tcp_port)):
            return
        time.sleep(0.05)
    raise AssertionError(f"libvirtd did not listen within {_START_TIMEOUT} s:\n{daemon.log_tail()}")


def _tcp_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


#: Keepalive settings of the shared daemon: short, so a client that does not answer PINGs is
#: dropped within seconds (libvirtd's default is 5 s x 5).
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 3

free_port = _free_port
die_with_parent = _die_with_parent


def start_with_drivers(drivers: tuple[str, ...], prefix: str) -> Libvirtd:
    """Start a private libvirtd that can load only the named connection drivers (stop it with
    .stop()): the oracle of the secondary drivers' tests. Same isolation as start_libvirtd."""
    found = require_drivers(*drivers)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    port = _free_port()
    return launch(root, found, base_settings(root, port), tcp_port=port)
