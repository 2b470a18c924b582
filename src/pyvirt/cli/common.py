# SPDX-License-Identifier: LGPL-2.1-or-later
"""What pyvirsh's commands share: virsh's domain lookup, state words, tables and failures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyvirt.connection import virConnect


class CommandFailed(Exception):
    """A command's own failure, printed as virsh prints it: one 'error: ...' line per line; with
    no message, the command has said all it had to and only fails (exit status 1)."""


def lookup(conn: virConnect, name: str) -> Any:
    """A domain as virsh finds it: by id when the argument is a number, by UUID when it looks like
    one, else by name (each later way is tried when the earlier one finds nothing)."""
    from pyvirt.errors import PyvirtError

    try:
        if name.isdigit():
            try:
                return conn.lookupByID(int(name))
            except PyvirtError:
                pass
        if len(name) == 36 and name.count("-") == 4:
            try:
                return conn.lookupByUUIDString(name)
            except PyvirtError:
                pass
        return conn.lookupByName(name)
    except PyvirtError:
        raise CommandFailed(f"failed to get domain '{name}'") from None


def api_call(failure: str | None, call: Any, *args: Any) -> Any:
    """``call(*args)``, with a pyvirt error printed as virsh does: its own line after ``failure``
    (virsh's message naming what failed), or alone."""
    from pyvirt.errors import PyvirtError

    try:
        return call(*args)
    except PyvirtError as exc:
        raise CommandFailed(f"{failure}\n{exc}" if failure else str(exc)) from None


def require_api(obj: object, method: str) -> Any:
    """A method of pyvirt's public API that this pyvirt may not have yet: a clear error if not."""
    found = getattr(obj, method, None)
    if found is None:
        raise CommandFailed(f"this function is not supported by the connection driver: {method}")
    return found


def read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise CommandFailed(f"Failed to open file '{path}': {exc.strerror}") from None


# virsh's words for libvirt's states and reasons (tools/virsh-domain-monitor.c), by number.
STATES = ("no state", "running", "idle", "paused", "in shutdown", "shut off", "crashed", "pmsuspended")
REASONS: dict[int, tuple[str, ...]] = {
    0: ("unknown",),
    1: ("unknown", "booted", "migrated", "restored", "from snapshot", "unpaused", "migration canceled",
        "save canceled", "event wakeup", "crashed", "post-copy", "post-copy failed"),
    2: ("unknown",),
    3: ("unknown", "user", "migrating", "saving", "dumping", "I/O error", "watchdog", "from snapshot",
        "shutting down", "creating snapshot", "crashed", "starting up", "post-copy", "post-copy failed"),
    4: ("unknown", "user"),
    5: ("unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot",
        "daemon"),
    6: ("unknown", "panicked"),
    7: ("unknown",),
}


def state_text(state: int) -> str:
    return STATES[state] if 0 <= state < len(STATES) else "no state"


def reason_text(state: int, reason: int) -> str:
    names = REASONS.get(state, ("unknown",))
    return names[reason] if 0 <= reason < len(names) else "unknown"


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None) -> str:
    """virsh's vshTable: a leading space, columns 3 apart, the last one unpadded, a dashed rule two
    wider than the header; quiet (no header) sizes by rows only."""
    lines = [*([header] if header else []), *rows]
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]

    def fmt(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)] + [cells[-1]]
        return " " + "   ".join(padded)

    text = ""
    if header:
        text += fmt(header) + "\n" + "-" * (1 + sum(widths) + 3 * (len(widths) - 1) + 2) + "\n"
    return text + "".join(fmt(r) + "\n" for r in rows)
