# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's QEMU program (libvirt-qemu: monitor passthrough, monitor events, attach), driven by
Debian's virsh 9.0 and python3-libvirt 9.0 and compared with a real libvirtd 9.0 on the same domain
(tests/libvirtd_oracle.py), after normalising what legitimately differs: the id libvirt or pyvirt
gives a passed-through QMP command, and event timestamps. Domains run paused under TCG."""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import pytest

from . import test_events as te
from .test_domains import XML, Side, python_libvirt
from .testlib import Libvirtd, Pyvirtd, Raw, error_fields, is_error

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

# the fixtures of test_events: a pyvirtd of this module, the test guest, both sides of a domain
daemon = te.daemon
workdir = te.workdir
name = te.name
sides = te.sides


def _norm_id(text: str) -> str:
    return re.sub(r'"id": ?"(libvirt|pyvirt)-\d+"', '"id":"ID"', text)


def same(ours: Side, theirs: Side, *args: str, status: int = 0) -> str:
    a, b = ((code, _norm_id(out), _norm_id(err))
            for code, out, err in (ours.virsh(*args), theirs.virsh(*args)))
    assert a == b, f"virsh {' '.join(args)}:\npyvirtd:  {a}\nlibvirtd: {b}"
    assert a[0] == status, a
    return str(a[1])


def test_virsh_qemu_monitor_command_same_as_libvirtd(sides: tuple[Side, Side, str],
                                                     name: str) -> None:
    ours, theirs, _ = sides
    same(ours, theirs, "define", XML)
    # not running: libvirt's error
    same(ours, theirs, "qemu-monitor-command", name, '{"execute":"query-status"}', status=1)
    same(ours, theirs, "start", "--paused", name)
    try:
        out = same(ours, theirs, "qemu-monitor-command", name, '{"execute":"query-status"}')
        assert out == ('{"return":{"status":"prelaunch","singlestep":false,"running":false},'
                       '"id":"ID"}\n\n')
        same(ours, theirs, "qemu-monitor-command", "--pretty", name, '{"execute":"query-status"}')
        assert same(ours, theirs, "qemu-monitor-command", "--hmp", name, "info status") \
            .startswith("VM status: paused (prelaunch)")
        same(ours, theirs, "qemu-monitor-command", "--hmp", name, "info", "status")
        # virsh turns a bare QMP command name into {"execute": NAME} itself
        same(ours, theirs, "qemu-monitor-command", name, "query-status")
        # QEMU refuses: its error comes back as the command's output, not as a failure
        same(ours, theirs, "qemu-monitor-command", name, '{"execute":"no-such-command"}')
        same(ours, theirs, "qemu-monitor-command", name,
             '{"execute":"query-status","arguments":{"bogus":1}}')
        same(ours, theirs, "qemu-monitor-command", "--hmp", name, "no-such-hmp-command")
        # a command that changes the domain: both see it
        same(ours, theirs, "qemu-monitor-command", name, '{"execute":"cont"}')
        same(ours, theirs, "qemu-monitor-command", "--hmp", name, "info status")
        same(ours, theirs, "qemu-monitor-command", name, '{"execute":"stop"}')
    finally:
        same(ours, theirs, "destroy", name)
        same(ours, theirs, "undefine", name)


_PY = """
import libvirt_qemu
d = conn.lookupByName(THE_NAME)
out = {}
out["off"] = err(lambda: libvirt_qemu.qemuMonitorCommand(d, '{"execute":"query-status"}', 0))
d.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
out["qmp"] = libvirt_qemu.qemuMonitorCommand(d, '{"execute":"query-status"}', 0)
out["hmp"] = libvirt_qemu.qemuMonitorCommand(d, "info status", 1)
out["bad_flags"] = err(lambda: libvirt_qemu.qemuMonitorCommand(d, "info status", 4))
out["attach"] = err(lambda: libvirt_qemu.qemuAttach(conn, 1, 0))
d.destroy()
result = out
"""


def test_python_libvirt_qemu_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, _ = sides
    got = {}
    for side in (ours, theirs):
        assert side.virsh("define", XML)[0] == 0
        got[side.label] = _norm_id(repr(side.python(_PY.replace("THE_NAME", repr(name)))))
    assert got["pyvirtd"] == got["libvirtd"]


def test_readonly_socket_refuses_monitor_commands(daemon: Pyvirtd, libvirtd: Libvirtd) -> None:
    script = """
import libvirt_qemu
libvirt.virEventRegisterDefaultImpl()
conn = libvirt.open(uri)
result = [err(lambda: libvirt_qemu.qemuMonitorEventRegister(conn, None, None, lambda *a: None,
                                                            None, 0))]
"""
    a = python_libvirt(daemon.uri(readonly=True), script)
    b = python_libvirt(libvirtd.uri(readonly=True), script)
    assert a == b and a[0][0] == 29  # VIR_ERR_OPERATION_DENIED
    got: list[Any] = []
    for sock in (daemon.socket_ro, libvirtd.socket_ro):
        with Raw.unix(sock) as raw:
            raw.open()
            rec = raw.call("QEMU_PROC_DOMAIN_MONITOR_COMMAND",
                           dom={"name": "x", "uuid": bytes(16), "id": -1}, cmd="{}", flags=0)
            assert is_error(rec)
            got.append(error_fields(rec))
    assert got[0] == got[1] and got[0][0] == 29


def _monitor_events(side: Side, name: str, *filters: str) -> list[str]:
    """What ``qemu-monitor-event --loop`` prints while the paused domain is resumed, suspended and
    resumed (timestamps normalised)."""
    expected = {(): 3, ("--event", "STOP"): 1}.get(filters, 2)
    watcher = te.EventWatcher(side.uri, "--timeout", "120", "--domain", name, *filters,
                              command="qemu-monitor-event")
    try:
        time.sleep(1.5)  # virsh prints nothing until the first event: give it time to register
        for step in ("resume", "suspend", "resume"):
            assert side.virsh(step, name)[0] == 0
        deadline = time.monotonic() + 30
        while len([x for x in watcher.lines if x.startswith("event ")]) < expected:
            assert time.monotonic() < deadline, watcher.lines
            time.sleep(0.05)
        time.sleep(0.5)  # and nothing more comes
    finally:
        lines = watcher.stop()
    return [re.sub(r" at \d+\.\d+ ", " at T ", line) for line in lines]


@pytest.mark.parametrize("filters", [(), ("--event", "STOP"),
                                     ("--event", "res|shut", "--regex", "--no-case")])
def test_virsh_qemu_monitor_event_same_as_libvirtd(sides: tuple[Side, Side, str], name: str,
                                                   filters: tuple[str, ...]) -> None:
    ours, theirs, _ = sides
    seen = {}
    for side in (ours, theirs):
        assert side.virsh("define", XML)[0] == 0
        assert side.virsh("start", "--paused", name)[0] == 0
        try:
            seen[side.label] = _monitor_events(side, name, *filters)
        finally:
            side.virsh("destroy", name)
            side.virsh("undefine", name)
    assert seen["pyvirtd"] == seen["libvirtd"]
    assert any(line.startswith("event ") for line in seen["pyvirtd"])


def test_monitor_event_shutdown_on_destroy(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, _ = sides
    seen = {}
    for side in (ours, theirs):
        assert side.virsh("define", XML)[0] == 0
        assert side.virsh("start", "--paused", name)[0] == 0
        watcher = te.EventWatcher(side.uri, "--timeout", "120", "--event", "SHUTDOWN",
                                  command="qemu-monitor-event")
        try:
            time.sleep(1.5)
            assert side.virsh("destroy", name)[0] == 0
            with contextlib.suppress(AssertionError):
                watcher.wait_for("event SHUTDOWN", timeout=5)
        finally:
            seen[side.label] = [re.sub(r" at \d+\.\d+ ", " at T ", x) for x in watcher.stop()]
            side.virsh("undefine", name)
    assert seen["pyvirtd"] == seen["libvirtd"]


def test_wire_monitor_event_registration(daemon: Pyvirtd, sides: tuple[Side, Side, str],
                                         name: str) -> None:
    """QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_REGISTER, the MESSAGE's fields, and DEREGISTER."""
    ours, _, dom_uuid = sides
    assert ours.virsh("define", XML)[0] == 0
    assert ours.virsh("start", "--paused", name)[0] == 0
    try:
        with Raw.unix(daemon.socket) as raw:
            raw.open()
            cb = raw.call("QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_REGISTER", dom=None,
                          event="RESUME", flags=0).callbackID
            before = time.time()
            assert ours.virsh("resume", name)[0] == 0
            (proc, body), = te._events(raw, 1)
            assert proc == "QEMU_PROC_DOMAIN_MONITOR_EVENT"
            assert (body.callbackID, body.dom.name, body.event, body.details) == (
                cb, name, "RESUME", None)
            assert body.dom.id > 0 and before - 5 < body.seconds + body.micros / 1e6 < time.time() + 5
            assert raw.call("QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_DEREGISTER",
                            callbackID=cb) is None
            again = raw.call("QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_DEREGISTER", callbackID=cb)
            assert is_error(again)
            assert ours.virsh("suspend", name)[0] == 0
            assert ours.virsh("resume", name)[0] == 0
            with pytest.raises(TimeoutError):
                te._events(raw, 1, timeout=1.0)
    finally:
        ours.virsh("destroy", name)


def test_attach_is_refused_as_by_libvirtd(daemon: Pyvirtd, libvirtd: Libvirtd) -> None:
    got: list[Any] = []
    for sock in (daemon.socket, libvirtd.socket):
        with Raw.unix(sock) as raw:
            raw.open()
            rec = raw.call("QEMU_PROC_DOMAIN_ATTACH", pid_value=1, flags=0)
            assert is_error(rec)
            got.append(error_fields(rec))
    assert got[0] == got[1]
