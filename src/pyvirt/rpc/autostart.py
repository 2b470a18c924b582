# SPDX-License-Identifier: LGPL-2.1-or-later
"""The session pyvirtd, started on demand, as libvirt's remote driver starts a session daemon.

``qemu:///session`` and ``qemu+unix:///session`` always reach the session instance through
pyvirtd's socket (``$XDG_RUNTIME_DIR/pyvirt/libvirt-sock``, or ``~/.cache/pyvirt/run/libvirt-sock``
without a runtime directory). When no daemon accepts there, the client starts one for the user:
``pyvirtd --session --timeout 120``, which exits two minutes after its last client leaves, unless
domains still run. The rules are libvirt's (remote_sockets.c, virnetsocket.c):

* only for the session instance, only over the UNIX socket whose path the client chooses (no
  ``socket=`` parameter) -- and here only for pyvirtd's own socket: ``mode=legacy`` means
  libvirt's libvirtd socket, whose daemon pyvirt does not start;
* ``PYVIRT_AUTOSTART=0`` turns it off; so does libvirt's own ``LIBVIRT_AUTOSTART=0`` (read when
  ``PYVIRT_AUTOSTART`` is unset). A session URI then fails as libvirt's does, with "Failed to
  connect socket to ...", and the message says how to go on (:func:`require_running_daemon`);
* the daemon binary: ``$PYVIRTD_PATH`` if set, else the ``pyvirtd`` beside the running Python
  (a virtualenv's), else ``pyvirtd`` on ``$PATH``;
* clients that race serialise on a lock file in the runtime directory (``flock``, so that two
  threads of one process exclude each other too): the first one starts the daemon and waits until
  it accepts, the others then find it accepting. Only "no such socket" and "connection refused"
  start a daemon; any other connect error is reported as it is.

What differs from libvirt, and why: root gets a session daemon too. libvirt 9.0 sends root's
``qemu:///session`` to the system daemon, whose QEMU driver serves it as the system instance;
pyvirt's session instance of root is a separate instance in root's XDG directories
(pyvirt.conf.instance.session_paths), so root's session daemon is ``pyvirtd --session`` (a plain
``pyvirtd`` run by root serves ``qemu:///system``). The daemon's output goes to ``pyvirtd.log``
in the user's pyvirt cache directory (libvirt's session daemon logs to
``~/.cache/libvirt/libvirtd.log``) so that a daemon that cannot start is reported with its own
words; the wait for the socket is longer than libvirt's 5 s (a Python daemon that loads the driver
and may probe QEMU starts in seconds); the lock file stays (libvirt unlinks it, which lets a third
client lock a new file while a second still holds the old one).
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.uri import ConnectURI

__all__ = ["AutostartError", "wants_autostart", "ensure_daemon", "daemon_binary",
           "require_running_daemon", "daemon_accepting", "session_socket", "AUTOSTART_TIMEOUT"]

#: The daemon's --timeout, libvirt's (virNetSocketForkDaemon).
AUTOSTART_TIMEOUT = 120
#: How long a client waits for the daemon it started to accept connections.
_START_WAIT = 60.0
_POLL = 0.01
_SOCKET_NAME = "libvirt-sock"
_LOCK_NAME = "pyvirtd.lock"
_LOG_NAME = "pyvirtd.log"
#: Set by a service manager for the client's own service: never the daemon's to read.
_SERVICE_VARS = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID",
                 "WATCHDOG_USEC")


class AutostartError(PyvirtError):
    """The session daemon is not there and could not be started; libvirt reports its connect
    failures as system errors of the RPC domain."""

    code = codes.VIR_ERR_SYSTEM_ERROR
    domain = codes.VIR_FROM_RPC


def _disabled_by(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """The variable that turns autostart off, if one does."""
    for name in ("PYVIRT_AUTOSTART", "LIBVIRT_AUTOSTART"):
        value = environ.get(name)
        if value is not None:
            return name if value == "0" else None
    return None


def _reaches_session_socket(uri: ConnectURI) -> bool:
    """Whether ``uri`` leads to pyvirtd's session socket, the one a client may start a daemon on."""
    return (uri.instance == "session" and uri.effective_transport == "unix"
            and uri.host is None and "socket" not in uri.params
            and uri.params.get("mode", "auto") != "legacy")


def wants_autostart(uri: ConnectURI) -> bool:
    """Whether connecting to ``uri`` may start the session daemon (see the module docstring)."""
    return _reaches_session_socket(uri) and _disabled_by(os.environ) is None


def require_running_daemon(uri: ConnectURI) -> None:
    """With autostart turned off, fail a connection to ``uri`` that no daemon would accept with
    libvirt's connect error and the ways out, before anything else is tried."""
    switch = _disabled_by(os.environ)
    if switch is None or not _reaches_session_socket(uri):
        return
    path = session_socket()
    err = _try_connect(path)
    if err in (errno.ENOENT, errno.ECONNREFUSED):
        who = "pyvirtd --session" if os.geteuid() == 0 else "pyvirtd"
        raise AutostartError(f"Failed to connect socket to '{path}': {os.strerror(err)}: no "
                             f"session pyvirtd runs and {switch}=0 stops pyvirt from starting "
                             f"one; start '{who}' yourself, unset {switch}, or drive an instance "
                             "in this process with qemu:///embed?root=DIR")


def daemon_binary() -> str:
    """The pyvirtd to start, or an :class:`AutostartError` naming the ways to provide one."""
    explicit = os.environ.get("PYVIRTD_PATH")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise AutostartError(f"cannot start the session daemon: PYVIRTD_PATH={explicit} is not an "
                             "executable file; point PYVIRTD_PATH at pyvirtd, or unset it to use "
                             "the pyvirtd on PATH")
    beside = Path(sys.executable).parent / "pyvirtd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    import shutil

    found = shutil.which("pyvirtd")
    if found:
        return found
    raise AutostartError("cannot start the session daemon: no pyvirtd executable beside "
                         f"{sys.executable} nor on PATH; install pyvirt's console scripts "
                         "(pip install pyvirt), put pyvirtd on PATH or set PYVIRTD_PATH, or start "
                         "'pyvirtd' yourself (PYVIRT_AUTOSTART=0 turns autostart off)")


def _try_connect(path: str) -> int:
    """0 when a daemon accepts on ``path``, else the connect errno."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as exc:
            return exc.errno or errno.ENAMETOOLONG  # no errno: a path too long for AF_UNIX
    return 0


def daemon_accepting(path: str) -> bool:
    """Whether a daemon accepts connections on ``path`` now (one connect attempt)."""
    return _try_connect(path) == 0


def session_socket() -> str:
    """The session pyvirtd's socket (pyvirt.daemon.instance.served_instance puts it there)."""
    from pyvirt.conf.instance import session_paths

    # session_paths().run_dir is <runtime>/pyvirt/qemu/run: the daemon's socket is two up
    return str(session_paths().run_dir.parent.parent / _SOCKET_NAME)


def _log_path() -> Path:
    from pyvirt.conf.instance import session_paths

    # session_paths().log_dir is <cache>/pyvirt/qemu/log: the daemon's own log goes two up
    return session_paths().log_dir.parent.parent / _LOG_NAME


def ensure_daemon(path: str) -> bool:
    """Make sure a daemon accepts on the session socket ``path``, starting one if none does.
    True when this call started it. The caller connects afterwards: a daemon that was just
    connected to counts its idle time from that connection's end, so it is still there."""
    err = _try_connect(path)
    if err == 0:
        return False
    if err not in (errno.ENOENT, errno.ECONNREFUSED):
        raise AutostartError(f"Failed to connect socket to '{path}': {os.strerror(err)}")
    import fcntl

    binary = daemon_binary()  # before anything is created: a missing binary changes nothing
    run_dir = os.path.dirname(path)
    try:
        os.makedirs(run_dir, mode=0o700, exist_ok=True)
        lock_fd = os.open(os.path.join(run_dir, _LOCK_NAME),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise AutostartError(f"cannot start the session daemon: cannot create its lock in "
                             f"{run_dir}: {exc.strerror}; check XDG_RUNTIME_DIR") from exc
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another client may be starting it: wait for it
        err = _try_connect(path)
        if err == 0:
            return False
        if err not in (errno.ENOENT, errno.ECONNREFUSED):
            raise AutostartError(f"Failed to connect socket to '{path}': {os.strerror(err)}")
        _start(binary, path)
        return True
    finally:
        os.close(lock_fd)  # drops the lock


def _start(binary: str, path: str) -> None:
    import contextlib
    import subprocess
    import threading
    import time

    log_path = _log_path()
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_VARS}
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    except OSError as exc:
        raise AutostartError(f"cannot start the session daemon: cannot open its log "
                             f"{log_path}: {exc.strerror}") from exc
    with log:
        offset = log.tell()
        try:
            # --session: root's plain pyvirtd would serve qemu:///system
            proc = subprocess.Popen([binary, "--session", "--timeout", str(AUTOSTART_TIMEOUT)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                    cwd="/", start_new_session=True, close_fds=True)
        except OSError as exc:
            raise AutostartError(f"cannot start the session daemon {binary}: {exc.strerror}; "
                                 "point PYVIRTD_PATH at a working pyvirtd") from exc
    # The daemon outlives this call, maybe this process: reap it whenever it ends, so that it
    # never lingers as a zombie of a long-lived client (if the client ends first, init reaps it).
    def reap() -> None:
        with contextlib.suppress(ChildProcessError):  # SIGCHLD ignored: the kernel reaps it
            proc.wait()

    threading.Thread(target=reap, name=f"pyvirtd-reaper-{proc.pid}", daemon=True).start()
    deadline = time.monotonic() + _START_WAIT
    while True:
        if _try_connect(path) == 0:
            return
        status = proc.poll()
        if status is not None:
            if _try_connect(path) == 0:  # another daemon, started by hand meanwhile, won
                return
            raise AutostartError(f"the session daemon {binary} exited with status {status} "
                                 f"before accepting connections on {path}: "
                                 f"{_log_tail(log_path, offset) or 'it said nothing'} "
                                 f"(its log: {log_path})")
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            raise AutostartError(f"the session daemon {binary} (pid {proc.pid}) did not accept "
                                 f"connections on {path} within {_START_WAIT:.0f} s and was "
                                 f"stopped; see {log_path}")
        time.sleep(_POLL)


def _log_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read(8192).decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(lines[-3:])
