# SPDX-License-Identifier: LGPL-2.1-or-later
"""The server in-process, with handlers the test controls: concurrency, bounds, out-of-order
replies, clients leaving mid-call, handlers that fail."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from pyvirt import _errcodes as codes
from pyvirt.daemon import handlers as real
from pyvirt.daemon.config import DaemonConfig
from pyvirt.daemon.dispatch import ClientSession, HandlerTable, api_name
from pyvirt.daemon.instance import served_instance
from pyvirt.daemon.server import Daemon, DaemonOptions
from pyvirt.errors import OperationFailed
from pyvirt.rpc import procedures
from pyvirt.rpc.client import RPCClient
from pyvirt.rpc.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    Header,
    Message,
    MessageType,
    RemoteError,
    encode_message,
)


class Gate:
    """Slow handlers wait here; the test counts them and lets them go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.finished = 0

    def wait(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if not self.release.wait(timeout=20):
                raise AssertionError("the test never released the gate")
        finally:
            with self.lock:
                self.running -= 1
                self.finished += 1


def _table(gate: Gate) -> HandlerTable:
    table = HandlerTable()
    for name, fn, kw in (("AUTH_LIST", real.auth_list, {"needs_open": False, "blocking": False}),
                         ("CONNECT_SUPPORTS_FEATURE", real.supports_feature,
                          {"needs_open": False, "blocking": False}),
                         ("CONNECT_OPEN", real.connect_open, {"needs_open": False}),
                         ("CONNECT_CLOSE", real.connect_close, {"needs_open": False}),
                         ("CONNECT_GET_TYPE", real.get_type, {})):
        table.register(name, **kw)(fn)

    @table.register("CONNECT_GET_CAPABILITIES")  # an ordinary (not high-priority) procedure
    def slow(session: ClientSession, args: None) -> Any:
        gate.wait()
        return {"capabilities": "<slow/>"}

    @table.register("CONNECT_GET_SYSINFO")  # high priority
    def fast(session: ClientSession, args: Any) -> Any:
        return {"sysinfo": "<fast/>"}

    @table.register("CONNECT_GET_HOSTNAME")
    def broken(session: ClientSession, args: None) -> Any:
        raise KeyError("a bug")

    @table.register("NODE_GET_FREE_MEMORY")
    def failing(session: ClientSession, args: None) -> Any:
        raise OperationFailed("the host is on fire")

    @table.register("CONNECT_GET_URI")
    def huge(session: ClientSession, args: None) -> Any:
        return {"uri": "x" * (5 * 1024 * 1024)}

    return table


Scenario = Callable[[Daemon, Gate, Callable[[], Awaitable[RPCClient]]], Awaitable[None]]


def run_daemon(root: Path, scenario: Scenario, **config: Any) -> None:
    gate = Gate()

    async def main() -> None:
        options = DaemonOptions(served_instance(root), DaemonConfig(**config))
        daemon = Daemon(options, handlers=_table(gate))
        await daemon.start(handle_signals=False)
        clients: list[RPCClient] = []

        async def connect() -> RPCClient:
            client = await RPCClient.connect_unix(str(root / "run" / "libvirt-sock"))
            await client.open("")
            clients.append(client)
            return client
        try:
            await scenario(daemon, gate, connect)
        finally:
            gate.release.set()
            for client in clients:
                await client.abort()
            await daemon.shutdown()

    asyncio.run(main())


async def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition never met"
        await asyncio.sleep(0.01)


def test_replies_out_of_order(own_root: Path) -> None:
    async def scenario(daemon: Daemon, gate: Gate, connect: Any) -> None:
        client = await connect()
        slow = asyncio.create_task(client.call("CONNECT_GET_CAPABILITIES"))
        await _eventually(lambda: gate.running == 1)
        assert (await client.call("CONNECT_GET_SYSINFO", flags=0)).sysinfo == "<fast/>"
        assert (await client.call("CONNECT_GET_TYPE")).type == "QEMU"
        assert not slow.done()
        gate.release.set()
        assert (await slow).capabilities == "<slow/>"

    run_daemon(own_root, scenario)


def test_worker_pools_bounded_and_priority_still_served(own_root: Path) -> None:
    async def scenario(daemon: Daemon, gate: Gate, connect: Any) -> None:
        clients = [await connect() for _ in range(4)]
        slow = [asyncio.create_task(c.call("CONNECT_GET_CAPABILITIES")) for c in clients]
        await _eventually(lambda: gate.running == 2)
        await asyncio.sleep(0.2)
        assert gate.running == 2  # max_workers: the other two wait their turn
        other = await connect()
        # high-priority calls have their own threads: answered while the workers are busy
        assert (await asyncio.wait_for(other.call("CONNECT_GET_SYSINFO", flags=0), 5)).sysinfo
        gate.release.set()
        assert [(await t).capabilities for t in slow] == ["<slow/>"] * 4
        assert gate.most == 2

    run_daemon(own_root, scenario, max_workers=2, prio_workers=1)


def test_per_client_request_limit(own_root: Path) -> None:
    async def scenario(daemon: Daemon, gate: Gate, connect: Any) -> None:
        greedy = await connect()
        calls = [asyncio.create_task(greedy.call("CONNECT_GET_CAPABILITIES")) for _ in range(6)]
        await _eventually(lambda: gate.running == 2)
        await asyncio.sleep(0.2)
        assert gate.running == 2  # max_client_requests, though workers are free
        polite = await connect()
        assert (await polite.call("CONNECT_GET_TYPE")).type == "QEMU"
        gate.release.set()
        assert len([await c for c in calls]) == 6
        assert gate.most <= 3  # 2 of greedy's (+1 in the gap between release and return)

    run_daemon(own_root, scenario, max_client_requests=2)


def test_client_vanishing_mid_call(own_root: Path) -> None:
    async def scenario(daemon: Daemon, gate: Gate, connect: Any) -> None:
        leaver = await connect()
        asyncio.create_task(leaver.call("CONNECT_GET_CAPABILITIES"))
        await _eventually(lambda: gate.running == 1)
        await leaver.abort()
        stayer = await connect()
        assert (await stayer.call("CONNECT_GET_TYPE")).type == "QEMU"
        assert len(daemon.clients) == 2  # the leaver's call still runs
        gate.release.set()
        await _eventually(lambda: len(daemon.clients) == 1)  # then it is cleaned up
        assert gate.finished == 1
        assert (await stayer.call("CONNECT_GET_TYPE")).type == "QEMU"

    run_daemon(own_root, scenario)


async def _waiting_client(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent AUTH_LIST and is not answered within half a second, nor hung up
    on: it waits in the listen backlog."""
    reader, writer = await asyncio.open_unix_connection(path)  # the kernel completes it
    proc = procedures.lookup("AUTH_LIST")
    writer.write(encode_message(Header(proc.program, PROTOCOL_VERSION, proc.number,
                                       MessageType.CALL, 7, 0)))
    with pytest.raises(TimeoutError):  # (an EOF would be b"" here, at once)
        await asyncio.wait_for(reader.read(1), 0.5)
    return reader, writer


async def _auth_list_reply(reader: asyncio.StreamReader) -> list[int]:
    decoder = FrameDecoder()
    messages: list[Message] = []
    while not messages:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, "hung up instead of answering"
        messages = decoder.feed(data)
    assert messages[0].header.serial == 7
    return list(procedures.lookup("AUTH_LIST").ret.decode(messages[0].payload).types)


def test_max_clients_waits_in_the_backlog(own_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """At max_clients the daemon stops accepting, as libvirtd does: one more client connects (the
    kernel's backlog holds it) but is neither answered nor hung up on until a client leaves."""
    path = str(own_root / "run" / "libvirt-sock")

    async def scenario(daemon: Daemon, gate: Gate, connect: Any) -> None:
        kept = [await connect() for _ in range(3)]
        assert daemon.connected == 3
        reader, writer = await _waiting_client(path)
        await kept[0].abort()
        assert await _auth_list_reply(reader) == [0]  # its call, answered once it is accepted
        assert (daemon.connected, len(daemon.clients)) == (3, 3)
        later, later_writer = await _waiting_client(path)  # full again
        writer.close()
        assert await _auth_list_reply(later) == [0]
        later_writer.close()

    with caplog.at_level(logging.INFO, logger="pyvirt.daemon"):
        run_daemon(own_root, scenario, max_clients=3, max_anonymous_clients=3)
    assert ("3 clients (max_clients 3), 0 not authenticated (max_anonymous_clients 3): not "
            "accepting new connections until a client leaves or authenticates") in caplog.text
    assert ("2 clients (max_clients 3), 0 not authenticated (max_anonymous_clients 3): "
            "accepting new connections again") in caplog.text
    assert "refused" not in caplog.text


def test_failing_handlers(own_root: Path) -> None:
    async def scenario(daemon: Daemon, gate: Gate, connect: Any) -> None:
        client = await connect()
        with pytest.raises(RemoteError) as info:
            await client.call("CONNECT_GET_HOSTNAME")
        assert (info.value.code, info.value.domain) == (codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_RPC)
        assert "KeyError" in info.value.message and "a bug" in info.value.message
        with pytest.raises(RemoteError) as info:
            await client.call("NODE_GET_FREE_MEMORY")
        assert (info.value.code, info.value.message) == (codes.VIR_ERR_OPERATION_FAILED,
                                                         "the host is on fire")
        with pytest.raises(RemoteError) as info:
            await client.call("CONNECT_GET_URI")
        assert "cannot encode the reply" in info.value.message
        assert (await client.call("CONNECT_GET_TYPE")).type == "QEMU"

    run_daemon(own_root, scenario)


def test_shutdown_with_a_call_in_flight(own_root: Path) -> None:
    async def scenario(daemon: Daemon, gate: Gate, connect: Any) -> None:
        client = await connect()
        call = asyncio.create_task(client.call("CONNECT_GET_CAPABILITIES"))
        await _eventually(lambda: gate.running == 1)
        gate.release.set()
        await daemon.shutdown()
        with pytest.raises(Exception):  # noqa: B017 - answered or cut, but never hanging
            await asyncio.wait_for(call, 5)
            raise RuntimeError("answered")
        assert not (own_root / "run" / "libvirt-sock").exists()

    run_daemon(own_root, scenario)


# ---- pieces ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "api"), [
    ("DOMAIN_DEFINE_XML", "virDomainDefineXML"),
    ("DOMAIN_DEFINE_XML_FLAGS", "virDomainDefineXMLFlags"),
    ("DOMAIN_LOOKUP_BY_UUID", "virDomainLookupByUUID"),
    ("CONNECT_GET_DOMAIN_CAPABILITIES", "virConnectGetDomainCapabilities"),
    ("NODE_GET_INFO", "virNodeGetInfo"),
    ("DOMAIN_GET_OS_TYPE", "virDomainGetOSType"),
    ("QEMU_PROC_DOMAIN_MONITOR_COMMAND", "virDomainQemuMonitorCommand"),
    ("QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_REGISTER", "virConnectDomainQemuMonitorEventRegister"),
])
def test_api_name(name: str, api: str) -> None:
    assert api_name(procedures.lookup(name)) == api


def test_every_handler_matches_a_call() -> None:
    table = real.HANDLERS
    for name in ("AUTH_LIST", "CONNECT_OPEN", "CONNECT_CLOSE", "CONNECT_GET_TYPE",
                 "CONNECT_GET_VERSION", "CONNECT_GET_LIB_VERSION", "CONNECT_GET_HOSTNAME",
                 "CONNECT_GET_CAPABILITIES", "CONNECT_GET_DOMAIN_CAPABILITIES", "NODE_GET_INFO",
                 "NODE_GET_SECURITY_MODEL", "CONNECT_IS_SECURE", "CONNECT_LIST_ALL_DOMAINS",
                 "CONNECT_NUM_OF_DOMAINS", "CONNECT_LIST_DOMAINS", "CONNECT_NUM_OF_DEFINED_DOMAINS",
                 "CONNECT_LIST_DEFINED_DOMAINS", "DOMAIN_LOOKUP_BY_NAME", "DOMAIN_LOOKUP_BY_UUID",
                 "DOMAIN_LOOKUP_BY_ID", "CONNECT_REGISTER_CLOSE_CALLBACK",
                 "CONNECT_UNREGISTER_CLOSE_CALLBACK", "CONNECT_SUPPORTS_FEATURE"):
        assert name in table
    with pytest.raises(ValueError):
        table.register("CONNECT_GET_TYPE")(real.get_type)  # one handler per procedure
    with pytest.raises(ValueError):
        HandlerTable().register("DOMAIN_EVENT_LIFECYCLE")  # events are sent, not called


class _BareConnection:
    """A connection without the API methods a handler needs (the real one grows over time)."""


def _args(proc_name: str, /, **fields: Any) -> Any:
    codec: Any = procedures.lookup(proc_name).args
    return codec(**fields)


def test_handler_of_a_missing_api_method_is_no_support(own_root: Path) -> None:
    session = ClientSession(served_instance(own_root), readonly_socket=False, transport="unix",
                            peer="test")
    session.conn = _BareConnection()  # type: ignore[assignment]
    with pytest.raises(RemoteError) as info:  # a method the API lacks: NO_SUPPORT
        real.get_sysinfo(session, _args("CONNECT_GET_SYSINFO", flags=0))
    assert info.value.code == codes.VIR_ERR_NO_SUPPORT
    assert "virConnectGetSysinfo" in info.value.message

