# SPDX-License-Identifier: LGPL-2.1-or-later
"""Busy polling (busy_poll_us): after a reply the event loop goes on turning, without sleeping,
for the window, then sleeps; with 0 it never polls. On asyncio's loop and uvloop alike, and on a
real pyvirtd process, where the polling shows as CPU time spent right after a call and none once
the window is over. When the last client leaves, the polling stops at once (watched inside an
in-process Daemon: from outside, tearing the connection down costs more CPU than the window)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pyvirt.rpc.busypoll import BusyPoll

from .testlib import Raw, start_pyvirtd


def _loops() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    loops: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the daemon's extra
        return loops
    return [*loops, uvloop.new_event_loop]


@pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])
def test_polls_for_the_window_then_sleeps(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def scenario() -> tuple[int, int, int, bool]:
        poll = BusyPoll(0.3)
        poll.kick()
        await asyncio.sleep(0.1)  # within the window: the loop turns all along
        within = poll.turns
        await asyncio.sleep(0.4)  # past it
        after = poll.turns
        await asyncio.sleep(0.1)
        return within, after, poll.turns, poll.polling

    loop = new_loop()
    try:
        within, after, later, polling = loop.run_until_complete(scenario())
    finally:
        loop.close()
    # A sleeping loop takes no turn; a polling one, thousands in 0.1 s on an idle machine (each
    # turn with nothing to do yields the CPU: on a busy machine, as few as others leave it).
    assert within >= 2
    assert after > within
    assert later == after and not polling


@pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])
def test_no_window_never_polls(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def scenario() -> tuple[int, bool]:
        poll = BusyPoll(0)
        poll.kick()
        await asyncio.sleep(0.03)
        return poll.turns, poll.polling

    loop = new_loop()
    try:
        assert loop.run_until_complete(scenario()) == (0, False)
    finally:
        loop.close()


def _cpu_ns(pid: int) -> int:
    """How long the process's threads were runnable, in nanoseconds: on a CPU, or waiting for
    one (a polling loop that yields its CPU on a busy machine is the latter)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
            total += int(on_cpu) + int(waiting)
    return total


def _cpu_after_calls(root: Path, busy_poll_us: int) -> tuple[list[int], int]:
    """How long the daemon is runnable in the 0.2 s after each of three calls, and over the next
    0.3 s."""
    daemon = start_pyvirtd(root, config=f"busy_poll_us = {busy_poll_us}\n")
    try:
        with Raw.unix(daemon.socket) as raw:
            raw.open()
            time.sleep(0.3)
            spent = []
            for _ in range(3):
                before = _cpu_ns(daemon.proc.pid)
                assert raw.call("CONNECT_GET_TYPE").type == "QEMU"
                time.sleep(0.2)
                spent.append(_cpu_ns(daemon.proc.pid) - before)
            before = _cpu_ns(daemon.proc.pid)
            time.sleep(0.3)
            idle = _cpu_ns(daemon.proc.pid) - before
    finally:
        daemon.stop()
    return spent, idle


def test_daemon_polls_after_a_call_then_sleeps(own_root: Path) -> None:
    # 10 ms of polling after each reply: runnable all along, on a CPU or (on a busy machine,
    # having yielded it) waiting for one.
    spent, idle = _cpu_after_calls(own_root, 10_000)
    assert max(spent) > 7_000_000, spent
    assert idle < 3_000_000, idle  # the window is over: asleep


def test_daemon_without_polling(own_root: Path) -> None:
    spent, idle = _cpu_after_calls(own_root, 0)
    assert min(spent) < 3_000_000, spent  # a call alone takes a fraction of a millisecond
    assert idle < 3_000_000, idle


@dataclass
class _Leaving:
    """What the daemon's polling did around the moment a client left."""
    left_in_window: bool  # the client left while the window after its reply was still open
    polling_then: bool  # polling right after the departure was counted
    turns_after: int  # turns taken after it, over 0.05 s
    polling_after: bool


def _a_call_and_leaving(root: Path, staying: int, monkeypatch: pytest.MonkeyPatch) -> _Leaving:
    """pyvirtd's Daemon in this process (10 ms windows): a client calls and leaves at once while
    ``staying`` others stay connected; its departure is watched from inside the daemon. Tried
    again while the departure came after the window had run out anyway (a loaded machine), which
    would show nothing either way."""
    from pyvirt.daemon.config import DaemonConfig
    from pyvirt.daemon.instance import served_instance
    from pyvirt.daemon.server import Daemon, DaemonOptions
    from pyvirt.rpc.client import RPCClient

    monkeypatch.setenv("PYVIRT_BUSY_POLL_US", "0")  # (the clients here share the daemon's loop)

    async def main() -> _Leaving:
        daemon = Daemon(DaemonOptions(served_instance(root), DaemonConfig(busy_poll_us=10_000)))
        await daemon.start(handle_signals=False)
        poll = daemon.busy_poll
        release = daemon.release
        seen: list[tuple[bool, bool, int]] = []

        def watched(slot: Any) -> None:
            in_window = time.monotonic() < poll.until
            release(slot)
            seen.append((in_window, poll.polling, poll.turns))

        daemon.release = watched  # type: ignore[method-assign]
        clients: list[RPCClient] = []
        try:
            for _ in range(staying):
                clients.append(await RPCClient.connect_unix(str(root / "run" / "libvirt-sock")))
                await clients[-1].open("")
            for _ in range(20):
                leaving = await RPCClient.connect_unix(str(root / "run" / "libvirt-sock"))
                await leaving.open("")
                await asyncio.sleep(0.03)  # every window over
                seen.clear()
                assert (await leaving.call("CONNECT_GET_TYPE")).type == "QEMU"
                await leaving.abort()
                while not seen:
                    await asyncio.sleep(0)
                in_window, polling_then, turns = seen[0]
                await asyncio.sleep(0.05)
                if in_window:
                    return _Leaving(in_window, polling_then, poll.turns - turns, poll.polling)
            pytest.fail("in 20 tries, no client left within 10 ms of its reply")
        finally:
            for client in clients:
                await client.abort()
            await daemon.shutdown()

    return asyncio.run(main())


def test_daemon_rests_once_its_last_client_left(own_root: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody is left to answer: the polling after the reply stops when the client leaves."""
    leaving = _a_call_and_leaving(own_root, 0, monkeypatch)
    assert leaving.left_in_window
    # At most the turn already scheduled, which finds the window closed.
    assert leaving.turns_after == 0 and not leaving.polling_after, leaving


def test_daemon_polls_on_while_another_client_stays(own_root: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    leaving = _a_call_and_leaving(own_root, 1, monkeypatch)
    assert leaving.polling_then and leaving.turns_after > 0, leaving
    assert not leaving.polling_after  # until the window ran out


# ---- pyvirt's client: polls for the reply after each call ----

def _client_turns(daemon_socket: str) -> int:
    from pyvirt.rpc.sync import Client

    client = Client.connect_unix(daemon_socket, background=False)
    try:
        client.open("qemu:///system")
        for _ in range(20):
            client.call("CONNECT_GET_TYPE")
        return client.rpc.busy_poll.turns
    finally:
        client.close()


def test_client_polls_for_its_replies(own_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = start_pyvirtd(own_root, config="busy_poll_us = 0\n")  # (only the client polls)
    try:
        monkeypatch.delenv("PYVIRT_BUSY_POLL_US", raising=False)
        assert _client_turns(daemon.socket) > 0  # turns while a reply was on its way
        monkeypatch.setenv("PYVIRT_BUSY_POLL_US", "0")
        assert _client_turns(daemon.socket) == 0
    finally:
        daemon.stop()


def test_client_in_the_background_does_not_poll(own_root: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Its caller waits for a hand-over from the loop's thread anyway: no polling there, from
    the start or from when the loop goes to the background."""
    from pyvirt.rpc.sync import Client

    monkeypatch.delenv("PYVIRT_BUSY_POLL_US", raising=False)
    daemon = start_pyvirtd(own_root)
    try:
        for background in (True, False):
            client = Client.connect_unix(daemon.socket, background=background)
            try:
                client.open("qemu:///system")
                assert (client.rpc.busy_poll.window == 0) is background
                client.listen()
                time.sleep(0.01)  # (a window left from the foreground has run out)
                turns = client.rpc.busy_poll.turns
                for _ in range(10):
                    client.call("CONNECT_GET_TYPE")
                assert client.rpc.busy_poll.window == 0 and client.rpc.busy_poll.turns == turns
            finally:
                client.close()
    finally:
        daemon.stop()


@pytest.mark.parametrize("value", ["-1", "10001", "2ms", ""])
def test_client_window_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyvirt.errors import ConfigError
    from pyvirt.rpc.busypoll import client_window
    from pyvirt.rpc.client import RPCClient

    monkeypatch.setenv("PYVIRT_BUSY_POLL_US", value)
    with pytest.raises(ConfigError, match=r"PYVIRT_BUSY_POLL_US must be microseconds from 0 "
                                          r"\(no polling\) to 10000, got") as info:
        client_window()
    assert info.value.key == "PYVIRT_BUSY_POLL_US"
    with pytest.raises(ConfigError):
        RPCClient()  # before any connection is made


def test_client_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyvirt.rpc.busypoll import client_window

    monkeypatch.delenv("PYVIRT_BUSY_POLL_US", raising=False)
    assert client_window() == 200e-6
    monkeypatch.setenv("PYVIRT_BUSY_POLL_US", "0")
    assert client_window() == 0
    monkeypatch.setenv("PYVIRT_BUSY_POLL_US", "10000")
    assert client_window() == 0.01
