# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's interactive and QEMU-level commands: qemu-monitor-command, qemu-monitor-event, event
and console."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from pyvirt.cli.common import CommandFailed, api_call, lookup, require_api

if TYPE_CHECKING:
    from pyvirt.cli.options import Args
    from pyvirt.connection import virConnect

_MONITOR_HMP = 1


def _qmp_text(words: list[str]) -> str:
    """virsh's wrapping: one word that is not JSON names a command without arguments; several words
    are the command and its arguments' JSON members ('query-block' or 'eject "id":"cd"')."""
    import json

    text = " ".join(words)
    if text.lstrip().startswith("{"):
        return text
    first, rest = words[0], " ".join(words[1:])
    wrapped = json.dumps({"execute": first})
    if rest:
        wrapped = wrapped[:-1] + ', "arguments": {' + rest + "}}"
    try:
        json.loads(wrapped)
    except ValueError as exc:
        raise CommandFailed(f"failed to wrap arguments '{rest}' into a QMP command wrapper\n"
                            f"error: internal error: cannot parse json {{{rest}}}: {exc}") from None
    return wrapped


def cmd_qemu_monitor_command(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    import json

    if args.hmp and args.pretty:
        raise CommandFailed("Options --hmp and --pretty are mutually exclusive")
    if args.hmp and args.return_value:
        raise CommandFailed("Options --hmp and --return-value are mutually exclusive")
    if args.pass_fds:
        raise CommandFailed("passing file descriptors to QEMU is not supported by pyvirsh")
    dom = lookup(conn, args.domain)
    from pyvirt import qemu as libvirt_qemu

    monitor_command = require_api(libvirt_qemu, "qemuMonitorCommand")
    command = " ".join(args.cmd) if args.hmp else _qmp_text(args.cmd)
    result: str = api_call(None, monitor_command, dom, command, _MONITOR_HMP if args.hmp else 0)
    if args.hmp:
        out.write(result + "\n")
        return
    if args.pretty or args.return_value:
        try:
            reply = json.loads(result)
        except ValueError as exc:
            raise CommandFailed(f"failed to parse the reply of the monitor as JSON: {exc}") from None
        if args.return_value:
            if not isinstance(reply, dict) or "return" not in reply:
                raise CommandFailed("'return' member missing")
            reply = reply["return"]
        out.write((json.dumps(reply, indent=2) if args.pretty else json.dumps(reply, separators=(",", ":")))
                  + "\n")
        return
    out.write(result + "\n")


# -- events ------------------------------------------------------------------------------------------

# virsh's names of libvirt's domain event ids (virDomainEventID), by number
EVENT_NAMES = ("lifecycle", "reboot", "rtc-change", "watchdog", "io-error", "graphics", "io-error-reason",
               "control-error", "block-job", "disk-change", "tray-change", "pm-wakeup", "pm-suspend",
               "balloon-change", "pm-suspend-disk", "device-removed", "block-job-2", "tunable",
               "agent-lifecycle", "device-added", "migration-iteration", "job-completed",
               "device-removal-failed", "metadata-change", "block-threshold", "memory-failure",
               "memory-device-size-change")
# Events pyvirt delivers, with virsh's words for their codes
_LIFECYCLE = (
    ("Defined", ("Added", "Updated", "Renamed", "Snapshot")),
    ("Undefined", ("Removed", "Renamed")),
    ("Started", ("Booted", "Migrated", "Restored", "Snapshot", "Event wakeup")),
    ("Suspended", ("Paused", "Migrated", "I/O Error", "Watchdog", "Restored", "Snapshot", "API error",
                   "Post-copy", "Post-copy Error")),
    ("Resumed", ("Unpaused", "Migrated", "Snapshot", "Post-copy", "Post-copy Error")),
    ("Stopped", ("Shutdown", "Destroyed", "Crashed", "Migrated", "Saved", "Failed", "Snapshot")),
    ("Shutdown", ("Finished", "Finished after guest request", "Finished after host request")),
    ("PMSuspended", ("Memory", "Disk")),
    ("Crashed", ("Panicked", "Crashloaded")),
)


def _lifecycle_words(event: int, detail: int) -> str:
    if not 0 <= event < len(_LIFECYCLE):
        return "unknown unknown"
    name, details = _LIFECYCLE[event]
    return f"{name} {details[detail] if 0 <= detail < len(details) else 'unknown'}"


class _Waiter:
    """Counts printed events and wakes the command when it should stop (one-shot, or --loop)."""

    def __init__(self, out: TextIO, loop: bool, timestamp: bool) -> None:
        import threading

        self.out, self.loop, self.timestamp = out, loop, timestamp
        self.count = 0
        self.done = threading.Event()

    def emit(self, text: str) -> None:
        if self.timestamp:
            import datetime

            now = datetime.datetime.now(datetime.UTC)
            text = now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000: " + text
        self.out.write(text + "\n")
        self.out.flush()
        self.count += 1
        if not self.loop:
            self.done.set()

    def wait(self, timeout: int | None) -> bool:
        """True when stopped by an event or Ctrl-C, False when the timeout ran out."""
        try:
            return self.done.wait(timeout) if timeout else self._forever()
        except KeyboardInterrupt:
            return True

    def _forever(self) -> bool:
        while not self.done.wait(3600):
            pass
        return True


def _finish(waiter: _Waiter, stopped: bool, out: TextIO) -> None:
    if not stopped:
        out.write("event loop timed out\n")
    out.write(f"events received: {waiter.count}\n")
    if not stopped:
        raise CommandFailed()


def cmd_event(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    if args.list:
        out.write("".join(n + "\n" for n in EVENT_NAMES))
        return
    if not (args.all or args.event):
        raise CommandFailed("one of --list, --all, or --event <type> is required")
    if args.event and args.event not in EVENT_NAMES:
        raise CommandFailed(f"unknown event type {args.event}")
    if args.timeout is not None and args.timeout < 1:
        raise CommandFailed(f"invalid timeout value '{args.timeout}'")
    dom = lookup(conn, args.domain) if args.domain else None
    register = require_api(conn, "domainEventRegisterAny")
    deregister = require_api(conn, "domainEventDeregisterAny")
    waiter = _Waiter(out, args.loop, args.timestamp)

    def on_lifecycle(_conn: Any, d: Any, event: int, detail: int, _opaque: Any) -> None:
        waiter.emit(f"event 'lifecycle' for domain '{d.name()}': {_lifecycle_words(event, detail)}")

    def on_reboot(_conn: Any, d: Any, _opaque: Any) -> None:
        waiter.emit(f"event 'reboot' for domain '{d.name()}'")

    handlers = {0: on_lifecycle, 1: on_reboot}
    wanted = range(len(EVENT_NAMES)) if args.all else [EVENT_NAMES.index(args.event)]
    ids = []
    try:
        for event_id in wanted:
            if event_id not in handlers:
                if args.all:
                    continue  # pyvirt never raises it: nothing to wait for
                raise CommandFailed(f"pyvirt does not deliver '{EVENT_NAMES[event_id]}' events; it "
                                    "delivers 'lifecycle' and 'reboot'")
            ids.append(api_call("Failed to register event", register, dom, event_id, handlers[event_id],
                                None))
        stopped = waiter.wait(args.timeout)
    finally:
        for callback_id in ids:
            try:
                deregister(callback_id)
            except Exception:  # noqa: BLE001 - the connection closes next anyway
                pass
    _finish(waiter, stopped, out)


def cmd_qemu_monitor_event(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    import json

    if args.timeout is not None and args.timeout < 1:
        raise CommandFailed(f"invalid timeout value '{args.timeout}'")
    dom = lookup(conn, args.domain) if args.domain else None
    from pyvirt import qemu as libvirt_qemu

    register = require_api(libvirt_qemu, "qemuMonitorEventRegister")
    deregister = require_api(libvirt_qemu, "qemuMonitorEventDeregister")
    waiter = _Waiter(out, args.loop, args.timestamp)
    flags = (1 if args.regex else 0) | (2 if args.no_case else 0)  # ..._REGISTER_REGEX, _NOCASE

    def on_event(_conn: Any, d: Any, event: str, seconds: int, micros: int, details: Any,
                 _opaque: Any) -> None:
        text = details if isinstance(details, str) or details is None else json.dumps(details)
        if args.pretty and text:
            text = json.dumps(json.loads(text), indent=2)
        waiter.emit(f"event {event} at {seconds}.{micros:06d} for domain '{d.name()}': {text or ''}")

    callback_id = api_call("Failed to register event", register, conn, dom, args.event, on_event, None,
                           flags)
    try:
        stopped = waiter.wait(args.timeout)
    finally:
        try:
            deregister(conn, callback_id)
        except Exception:  # noqa: BLE001 - the connection closes next anyway
            pass
    _finish(waiter, stopped, out)


# -- console -----------------------------------------------------------------------------------------

_ESCAPE = b"\x1d"  # Ctrl-]
_STREAM_NONBLOCK = 1
_CONSOLE_FORCE = 1
_EVENT_READABLE, _EVENT_ERROR, _EVENT_HANGUP = 1, 4, 8


def run_console(dom: Any, devname: str | None, force: bool, out: TextIO) -> None:
    """virsh's console: the guest's pty (through the API's console stream) relayed to this terminal
    in raw mode until Ctrl-], or until the domain's side closes."""
    import os
    import select
    import signal
    import termios
    import threading
    import tty

    if not dom.isActive():
        raise CommandFailed("The domain is not running")
    stdin = sys.stdin.fileno()
    if not os.isatty(stdin):
        raise CommandFailed("Cannot run interactive console without a controlling TTY")
    # virsh says it is connected before it opens the console, and errs after that when it cannot
    out.write(f"Connected to domain '{dom.name()}'\nEscape character is ^] (Ctrl + ])\n")
    out.flush()
    conn = dom.connect()
    stream = require_api(conn, "newStream")(_STREAM_NONBLOCK)
    api_call(None, require_api(dom, "openConsole"), devname, stream, _CONSOLE_FORCE if force else 0)
    wake_r, wake_w = os.pipe()  # the stream's watcher thread wakes the terminal loop through it
    ended = threading.Event()

    def on_stream(st: Any, events: int, _opaque: Any) -> None:
        from pyvirt.errors import PyvirtError

        try:
            while True:
                data = st.recv(4096)
                if data == -2:
                    break
                if not data:
                    raise EOFError
                os.write(sys.stdout.fileno(), data)
        except (EOFError, PyvirtError, OSError):
            ended.set()
            os.write(wake_w, b"x")
        if events & (_EVENT_HANGUP | _EVENT_ERROR):
            ended.set()
            os.write(wake_w, b"x")

    def on_term(_signo: int, _frame: Any) -> None:
        ended.set()
        os.write(wake_w, b"x")

    saved = termios.tcgetattr(stdin)
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        tty.setraw(stdin, termios.TCSANOW)  # keeps what was typed ahead (TCSAFLUSH would drop it)
        stream.eventAddCallback(_EVENT_READABLE | _EVENT_ERROR | _EVENT_HANGUP, on_stream, None)
        while not ended.is_set():
            ready, _, _ = select.select([stdin, wake_r], [], [])
            if stdin not in ready:
                continue
            data = os.read(stdin, 1024)
            if not data:
                break
            if _ESCAPE in data:
                data = data[:data.index(_ESCAPE)]
                ended.set()
            while data:
                sent = stream.send(data)
                if sent == -2:
                    select.select([], [], [], 0.01)
                    continue
                data = data[sent:]
    finally:
        signal.signal(signal.SIGTERM, previous)
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        try:
            stream.eventRemoveCallback()
        except Exception:  # noqa: BLE001 - a stream the domain already closed
            pass
        try:
            stream.finish()
        except Exception:  # noqa: BLE001
            pass
        os.close(wake_r)
        os.close(wake_w)
    out.write("\n")


def cmd_console(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    if args.safe:
        raise CommandFailed("argument unsupported: safe console handling is not supported by pyvirt")
    run_console(lookup(conn, args.domain), args.devname, args.force, out)
