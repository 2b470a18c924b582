# SPDX-License-Identifier: LGPL-2.1-or-later
"""How pyvirtd makes an accepted connection's transport (pyvirt.daemon.listen.run_now): at once,
in the loop turn that accepted it, not on the next one (where an asyncio Task would take its first
step), on asyncio's loop and on uvloop; and what goes wrong is reported, not lost."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from pyvirt.daemon.listen import Listener, ListeningSocket, run_now


def _loops() -> list[Callable[[], asyncio.AbstractEventLoop]]:
    loops: list[Callable[[], asyncio.AbstractEventLoop]] = [asyncio.new_event_loop]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the daemon
        return loops
    return [*loops, uvloop.new_event_loop]


LOOPS = pytest.mark.parametrize("new_loop", _loops(), ids=lambda f: f.__module__.split(".")[0])


def _run(new_loop: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], object]) -> None:
    loop = new_loop()
    try:
        loop.run_until_complete(main())  # type: ignore[arg-type]
    finally:
        loop.close()


@LOOPS
def test_runs_at_once_then_on_when_what_it_waits_for_is_done(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    seen: list[str] = []
    failures: list[BaseException] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = loop.create_future()

        async def work() -> str:
            seen.append("started")
            seen.append(f"got {await gate}")
            await asyncio.sleep(0)  # a bare yield: on at the next turn
            seen.append("after a turn")
            return "ignored"

        run_now(work(), failures.append)
        assert seen == ["started"]  # before the loop turned once
        await asyncio.sleep(0.01)
        assert seen == ["started"]  # waiting
        gate.set_result(7)
        await asyncio.sleep(0.01)

    _run(new_loop, main)
    assert seen == ["started", "got 7", "after a turn"] and failures == []


@LOOPS
def test_failures_before_and_after_waiting_are_reported(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    failures: list[BaseException] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = loop.create_future()

        async def at_once() -> None:
            raise OSError(24, "Too many open files")

        async def later() -> None:
            await gate
            raise ValueError("after the wait")

        run_now(at_once(), failures.append)
        assert [type(f) for f in failures] == [OSError]
        run_now(later(), failures.append)
        gate.cancel()  # what it waits for is cancelled: reported too, not raised in the loop
        await asyncio.sleep(0.01)

    _run(new_loop, main)
    assert [type(f) for f in failures] == [OSError, asyncio.CancelledError]


@LOOPS
def test_an_accepted_socket_is_connected_before_the_loop_turns(
        new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """As pyvirtd attaches an accepted connection: connect_accepted_socket has made the protocol
    by the time run_now returns, and the connection then works; the loop set TCP_NODELAY (so that
    small replies leave at once), even where the listening socket's protocol number was 0."""
    events: list[str] = []
    made: list[asyncio.BaseTransport] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            events.append("connection_made")
            self.transport = transport
            made.append(transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with socket.create_server(("127.0.0.1", 0)) as listener:  # (its protocol: 0)
            client = socket.create_connection(listener.getsockname())
            fd, _ = listener._accept()  # type: ignore[attr-defined]
            listening = ListeningSocket(listener, Listener("tcp"), False, lambda slot: Echo)
            conn = socket.socket(*listening.kind, fileno=fd)  # as pyvirtd makes it

            def factory() -> asyncio.Protocol:
                events.append("factory")
                return Echo()

            run_now(loop.connect_accepted_socket(factory, conn), lambda exc: events.append(
                f"failed: {exc}"))
            assert events == ["factory"]
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            client.setblocking(False)
            with client:
                await loop.sock_sendall(client, b"ping")
                assert await asyncio.wait_for(loop.sock_recv(client, 16), 5) == b"ping"
        for transport in made:
            transport.close()
        await asyncio.sleep(0.01)
        assert events == ["factory", "connection_made"]

    _run(new_loop, main)
