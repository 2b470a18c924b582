# SPDX-License-Identifier: LGPL-2.1-or-later
"""The session pyvirtd a test's ``qemu:///session`` started (pyvirt.rpc.autostart): find it by the
runtime directory it serves, and stop it so that nothing of it stays (process, socket, pid file).

A session daemon is recognised by its command line (pyvirtd, or ``python -m pyvirt.daemon.main``
as the tests' wrapper scripts run it) and by ``XDG_RUNTIME_DIR`` in its environment -- never by
the pid file alone, whose pid may by now be another process's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["session_daemons", "stop_session_daemons", "wait_gone"]

_MARKS = (b"pyvirt.daemon.main", b"/pyvirtd\0")


def session_daemons(runtime_dir: Path) -> list[int]:
    """pyvirtd processes running with ``XDG_RUNTIME_DIR=runtime_dir``."""
    marker = f"XDG_RUNTIME_DIR={runtime_dir}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if any(m in cmdline for m in _MARKS) and marker in environ.split(b"\0"):
            found.append(int(entry))
    return sorted(found)


def wait_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (a zombie counts as gone) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


def stop_session_daemons(runtime_dir: Path, timeout: float = 15.0) -> list[int]:
    """SIGTERM the session daemons of ``runtime_dir`` (they remove their socket and pid file as
    they exit); SIGKILL any that has not exited after ``timeout`` s. Their pids, sorted."""
    pids = session_daemons(runtime_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        if not wait_gone(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5)
    return pids
