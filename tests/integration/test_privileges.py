# SPDX-License-Identifier: LGPL-2.1-or-later
"""QEMU's identity and capabilities, read from /proc/PID/status of a real QEMU.

QEMU is started the way the process layer starts it: the security stack wraps the command
(:meth:`SecurityStack.wrap_command`) and :func:`pyvirt.qemu.proc.spawn_detached` spawns it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pyvirt.qemu.proc import spawn_detached, terminate
from pyvirt.security.dac import DACDriver
from pyvirt.security.manager import SecurityStack, build_security_stack
from pyvirt.security.privileges import (
    SHIM_EXEC_FAILED,
    SHIM_PATH,
    SHIM_SETUP_FAILED,
    ChildCredentials,
    credentials_for,
    supplementary_groups,
    wrap_command,
)
from pyvirt.security.resources import DomainSecurityContext

QEMU = "/usr/bin/qemu-system-x86_64"
# the test user cannot run the venv's interpreter (it lives under /root); a session user runs its own
USER_PYTHON = "/usr/bin/python3"
QEMU_ARGS = ["-accel", "tcg", "-machine", "none", "-S", "-display", "none", "-nodefaults",
             "-monitor", "none", "-serial", "none", "-parallel", "none"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching QEMU's user needs root")


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def wait_for_exec(pid: int, comm: str, timeout: float = 10.0) -> None:
    """Until the shim (a python process) has become ``comm``, its exec complete: the kernel
    renames a process early in exec, and sets out its arguments and environment only later
    (until then /proc/PID/cmdline and environ read empty)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/comm") as f:
                renamed = f.read().strip() == comm
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if renamed and f.read():
                    return
        except FileNotFoundError:
            break
        time.sleep(0.01)
    pytest.fail(f"pid {pid} never became {comm}")


@pytest.fixture
def launched() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        terminate(pid, graceful_timeout=2)


def launch(stack: SecurityStack, ctx: DomainSecurityContext, pids: list[int], **kw: object) -> int:
    argv = stack.wrap_command(ctx, [QEMU, *QEMU_ARGS])
    pid = spawn_detached(argv, **kw)  # type: ignore[arg-type]
    pids.append(pid)
    wait_for_exec(pid, "qemu-system-x86")
    return pid


def ctx(uid: int, gid: int, groups: tuple[int, ...] | None = None) -> DomainSecurityContext:
    return DomainSecurityContext("vm", "4dea22b3-1d52-d8f3-2516-782e98ab3fa0", uid, gid, groups)


def test_non_root_qemu_has_no_capability_at_all(qemu_user: tuple[int, int], launched: list[int]) -> None:
    uid, gid = qemu_user
    stack = build_security_stack(("none",), DACDriver())
    r, w = os.pipe()
    try:
        pid = launch(stack, ctx(uid, gid), launched, env={"PATH": "/usr/bin", "PYVIRT_MARK": "1"},
                     pass_fds=[r])
        st = status(pid)
        assert st["Uid"].split() == [str(uid)] * 4
        assert st["Gid"].split() == [str(gid)] * 4
        assert sorted(map(int, st["Groups"].split())) == sorted(supplementary_groups(uid, gid))
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, cap
        assert st["NoNewPrivs"] == "1"
        # the shim exec'd QEMU in place: same pid, the environment and the passed fd survive
        assert os.readlink(f"/proc/{pid}/exe") == QEMU
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert b"PYVIRT_MARK=1" in f.read().split(b"\0")
        assert os.readlink(f"/proc/{pid}/fd/{r}") == os.readlink(f"/proc/self/fd/{r}")
    finally:
        os.close(r)
        os.close(w)


def test_explicit_supplementary_groups(qemu_user: tuple[int, int], launched: list[int]) -> None:
    uid, gid = qemu_user
    stack = build_security_stack(("none",), DACDriver())
    pid = launch(stack, ctx(uid, gid, (gid, 6, 44)), launched)  # e.g. disk and video
    assert sorted(map(int, status(pid)["Groups"].split())) == sorted([gid, 6, 44])  # the kernel sorts


def test_root_qemu_keeps_every_capability(launched: list[int]) -> None:
    stack = build_security_stack(("none",), DACDriver())
    root = ctx(0, 0)
    assert stack.wrap_command(root, [QEMU]) == [QEMU]  # no shim, no cost
    pid = launch(stack, root, launched)
    mine, st = status(os.getpid()), status(pid)
    assert st["Uid"].split() == ["0"] * 4
    for cap in ("CapPrm", "CapEff", "CapBnd"):
        assert st[cap] == mine[cap], cap
    assert int(st["CapEff"], 16) != 0
    assert st["NoNewPrivs"] == "0"


def test_session_instance_switches_nothing_and_drops_what_it_can(qemu_user: tuple[int, int]) -> None:
    """An unprivileged caller (the session instance) running the shim for its own QEMU."""
    uid, gid = qemu_user
    creds = credentials_for(uid, gid, caller_uid=uid)
    assert creds == ChildCredentials(clear_capabilities=True, no_new_privs=True)
    out = subprocess.run(wrap_command(["/bin/cat", "/proc/self/status"], creds, python=USER_PYTHON),
                         user=uid, group=gid,
                         extra_groups=[gid], capture_output=True, text=True, check=True).stdout
    st = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
    assert st["Uid"].split() == [str(uid)] * 4
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(st[cap], 16) == 0, cap
    assert st["NoNewPrivs"].strip() == "1"


def test_shim_resets_signals_python_ignores(qemu_user: tuple[int, int]) -> None:
    uid, gid = qemu_user
    out = subprocess.run(wrap_command(["/bin/cat", "/proc/self/status"], credentials_for(uid, gid)),
                         capture_output=True, text=True, check=True).stdout
    sigign = int(next(line.split()[1] for line in out.splitlines() if line.startswith("SigIgn:")), 16)
    assert sigign & (1 << (signal.SIGPIPE - 1)) == 0
    assert sigign & (1 << (signal.SIGXFSZ - 1)) == 0


def test_shim_failures_are_reported_and_never_exec(qemu_user: tuple[int, int]) -> None:
    uid, gid = qemu_user
    # an unprivileged process asking for root: setup fails, QEMU never runs
    run = subprocess.run([USER_PYTHON, "-I", "-S", SHIM_PATH, "--uid", "0", "--", "/bin/true"],
                         user=uid, group=gid, extra_groups=[], capture_output=True, text=True)
    assert run.returncode == SHIM_SETUP_FAILED
    assert "pyvirt exec shim: cannot switch to uid 0: Operation not permitted" in run.stderr
    run = subprocess.run(wrap_command(["/nonexistent/qemu"], credentials_for(uid, gid)),
                         capture_output=True, text=True)
    assert run.returncode == SHIM_EXEC_FAILED
    assert "cannot run /nonexistent/qemu: No such file or directory" in run.stderr
    run = subprocess.run([sys.executable, "-I", "-S", SHIM_PATH, "--bogus", "--", "/bin/true"],
                         capture_output=True, text=True)
    assert run.returncode == SHIM_SETUP_FAILED and "unknown option '--bogus'" in run.stderr


def test_inherited_inheritable_and_ambient_capabilities_are_cleared(qemu_user: tuple[int, int]) -> None:
    """A caller holding inheritable and ambient capabilities (capsh sets them up) passes none on."""
    uid, gid = qemu_user
    shim = " ".join(wrap_command(["/bin/cat", "/proc/self/status"], credentials_for(uid, gid)))
    probe = "grep -E '^Cap(Inh|Amb)' /proc/self/status; exec " + shim
    out = subprocess.run(["/usr/sbin/capsh", "--inh=cap_net_raw", "--addamb=cap_net_raw", "--", "-c", probe],
                         capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in out.splitlines() if line.startswith(("CapInh", "CapAmb"))]
    before, after = lines[:2], lines[2:]
    assert all(int(v, 16) == 1 << 13 for _, v in before), before  # CAP_NET_RAW, set up for real
    assert [int(v, 16) for _, v in after] == [0, 0], after
