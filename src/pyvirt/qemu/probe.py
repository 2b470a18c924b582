# SPDX-License-Identifier: LGPL-2.1-or-later
"""Launch one emulator and ask it, over QMP, what it can do.

Only the cold path imports this module (it needs asyncio). Speed comes from:

* one QEMU per binary, all binaries at once (asyncio subprocesses);
* QMP over a socketpair inherited as a file descriptor (``-chardev socket,fd=N``): no socket path
  to create, wait for or clean up, and no connect round trip;
* every command written in one go right after ``qmp_capabilities`` (QEMU answers in order, so
  nothing waits for the greeting or for a previous answer);
* SIGKILL as soon as the last answer is in: ``-machine none -S`` has no state worth a clean quit.

A minimal JSON-lines reader is used rather than qemu.qmp's QMPClient: the probe is a one-shot,
strictly pipelined exchange with no events to dispatch, and the client's handshake would cost a
round trip and an import on the cold path. The monitor of running guests uses QMPClient.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from pyvirt.errors import OperationFailed

#: seconds a probe may take before the emulator is killed and the probe reported as failed
PROBE_TIMEOUT = 30.0

#: (command, arguments) sent to every emulator; answers are kept under the command's name.
#: A command the emulator lacks is answered with an error, kept as {"error": ...}.
COMMANDS: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("query-version", None),
    ("query-target", None),
    ("query-kvm", None),
    ("query-commands", None),
    ("query-machines", None),
    ("query-cpu-definitions", None),
    ("qom-list-types", None),
    ("query-tpm-models", None),
    ("query-tpm-types", None),
    ("query-sev-capabilities", None),
    ("query-sgx-capabilities", None),
    ("query-command-line-options", None),
    # large (200 kB) but only parsed on the cold path; reduced to a few facts before caching
    ("query-qmp-schema", None),
)


def probe_argv(binary: str, monitor_fd: int) -> list[str]:
    # TCG first so that CPU model usability means "under TCG"; binaries built without TCG (Debian's
    # qemu-system-x86_64-microvm) fall back to KVM, which -machine none can initialise anyway.
    return [binary, "-machine", "none", "-accel", "tcg", "-accel", "kvm", "-nodefaults",
            "-no-user-config", "-display", "none", "-S",
            "-chardev", f"socket,id=probe,fd={monitor_fd}", "-mon", "chardev=probe,mode=control"]


async def probe_binary(binary: str, *, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """Run ``binary`` once and return {command: answer} for :data:`COMMANDS`.

    Raises OperationFailed (naming the binary and QEMU's own message) when it cannot be probed.
    The QEMU process is always killed and reaped before this returns.
    """
    ours, theirs = socket.socketpair()
    proc: asyncio.subprocess.Process | None = None
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *probe_argv(binary, theirs.fileno()), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(),))
        except OSError as e:
            raise OperationFailed(f"cannot run emulator {binary}: {e}") from e
        theirs.close()
        try:
            return await asyncio.wait_for(_converse(ours), timeout)
        except TimeoutError:
            raise OperationFailed(
                f"emulator {binary} did not answer its capability probe within {timeout:g} s") from None
        except (ConnectionError, EOFError, ValueError) as e:
            err = await _stderr(proc)
            raise OperationFailed(
                f"emulator {binary} failed its capability probe: {err or e}; run "
                f"'{' '.join(probe_argv(binary, 3)[:-4])}' by hand to see why") from e
    finally:
        theirs.close()
        ours.close()
        if proc is not None:
            await reap(proc)


async def _converse(sock: socket.socket) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
    try:
        lines = [json.dumps({"execute": "qmp_capabilities", "id": "caps"})]
        for i, (name, args) in enumerate(COMMANDS):
            cmd: dict[str, Any] = {"execute": name, "id": i}
            if args is not None:
                cmd["arguments"] = args
            lines.append(json.dumps(cmd))
        writer.write(("\n".join(lines) + "\n").encode())
        answers: dict[str, Any] = {}
        greeting_seen = False
        while len(answers) < len(COMMANDS):
            line = await reader.readline()
            if not line:
                raise EOFError("the monitor closed before answering")
            msg = json.loads(line)
            if not greeting_seen and "QMP" in msg:
                greeting_seen = True
                continue
            ident = msg.get("id")
            if ident == "caps":
                if "error" in msg:
                    raise ValueError(f"qmp_capabilities failed: {msg['error'].get('desc')}")
                continue
            if isinstance(ident, int) and 0 <= ident < len(COMMANDS):
                name = COMMANDS[ident][0]
                answers[name] = msg["return"] if "return" in msg else {"error": msg.get("error", {})}
        return answers
    finally:
        writer.close()


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    if proc.stderr is None:
        return ""
    try:
        data = await asyncio.wait_for(proc.stderr.read(4000), 2)
    except TimeoutError:
        return ""
    return " ".join(data.decode(errors="replace").split())


async def reap(proc: asyncio.subprocess.Process) -> None:
    """Kill ``proc`` if it still runs and wait for it (shared by the probe and the KVM test)."""
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:  # pragma: no cover - SIGKILL did not end it
        pass
