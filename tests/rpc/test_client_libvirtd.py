# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's RPC client against a real libvirtd 9.0, with libvirt-python as the oracle; then against
a scripted peer for what a real daemon cannot be made to do on demand (reply out of order, send
garbage, hold a call forever)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.rpc import procedures, xdr
from pyvirt.rpc.client import ClientState, ConnectionClosed, RPCClient, _Wire
from pyvirt.rpc.procedures import PROCEDURES, Procedure
from pyvirt.rpc.protocol import (
    FrameDecoder,
    Header,
    KeepaliveProc,
    Message,
    MessageType,
    Program,
    ProtocolError,
    RemoteError,
    Status,
    encode_message,
    remote_error_record,
)
from pyvirt.rpc.sync import Client

from libvirtd_oracle import KEEPALIVE_COUNT, KEEPALIVE_INTERVAL, Libvirtd

T = TypeVar("T")
NOSUCH = "pyvirt-nosuch"
DOMAIN_XML = """<domain type='qemu'>
  <name>pyvirt-rpc-test</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64'>hvm</type></os>
</domain>"""

# ======================= a real libvirtd =======================


@pytest.fixture(scope="session")
def oracle_facts(libvirtd: Libvirtd) -> dict[str, Any]:
    """What libvirt-python gets from the same daemon."""
    return libvirtd.oracle(f"""
try:
    conn.lookupByName({NOSUCH!r})
except libvirt.libvirtError as e:
    err = [e.get_error_code(), e.get_error_domain(), e.get_error_message(), e.get_error_level(),
           e.get_str1(), e.get_str2(), e.get_str3(), e.get_int1(), e.get_int2()]
ro = libvirt.openReadOnly(sys.argv[1])
try:
    ro.defineXML('<domain/>')
except libvirt.libvirtError as e:
    denied = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
result = {{"type": conn.getType(), "version": conn.getVersion(),
          "libversion": conn.getLibVersion(), "hostname": conn.getHostname(),
          "caps": conn.getCapabilities(), "info": conn.getInfo(),
          "domains": [d.name() for d in conn.listAllDomains()], "nosuch": err, "denied": denied}}
""")


@pytest.fixture(params=["unix", "tcp"])
def client(request: pytest.FixtureRequest, libvirtd: Libvirtd) -> Any:
    c = Client.open_uri(libvirtd.uri(request.param))
    yield c
    c.close()


def test_connection_facts_match_libvirt_python(client: Client, oracle_facts: dict[str, Any]) -> None:
    assert client.rpc.is_open
    assert client.call("CONNECT_GET_TYPE").type == "QEMU" == oracle_facts["type"]
    assert client.call("CONNECT_GET_VERSION").hv_ver == oracle_facts["version"]
    assert client.call("CONNECT_GET_LIB_VERSION").lib_ver == oracle_facts["libversion"]
    assert client.call("CONNECT_GET_HOSTNAME").hostname == oracle_facts["hostname"]
    assert client.call("CONNECT_GET_CAPABILITIES").capabilities == oracle_facts["caps"]
    info = client.call("NODE_GET_INFO")
    # libvirt-python reports memory in MiB; the wire carries KiB
    assert [info.model, info.memory // 1024, info.cpus, info.mhz, info.nodes, info.sockets,
            info.cores, info.threads] == oracle_facts["info"]
    listed = client.call("CONNECT_LIST_ALL_DOMAINS", need_results=1, flags=0)
    assert listed.domains == [] and listed.ret == 0 and oracle_facts["domains"] == []
    assert client.call("CONNECT_GET_URI").uri == "qemu:///system"
    closes: list[PyvirtError | None] = []
    client.add_close_callback(closes.append)
    client.close()
    assert closes == [None] and client.state == ClientState.CLOSED


def test_missing_domain_error_matches_libvirt_python(client: Client,
                                                     oracle_facts: dict[str, Any]) -> None:
    with pytest.raises(PyvirtError) as info:
        client.call("DOMAIN_LOOKUP_BY_NAME", name=NOSUCH)
    e = info.value
    assert (e.get_error_code(), e.get_error_domain()) == (codes.VIR_ERR_NO_DOMAIN,
                                                          codes.VIR_FROM_QEMU)
    assert [e.get_error_code(), e.get_error_domain(), e.get_error_message(), e.get_error_level(),
            e.get_str1(), e.get_str2(), e.get_str3(), e.get_int1(), e.get_int2()] \
        == oracle_facts["nosuch"]
    # the connection survives a remote error
    assert client.call("CONNECT_GET_TYPE").type == "QEMU"


def test_read_only_denial_matches_libvirt_python(libvirtd: Libvirtd,
                                                 oracle_facts: dict[str, Any]) -> None:
    with Client.open_uri(libvirtd.uri(readonly=True), readonly=True) as ro:
        with pytest.raises(PyvirtError) as info:
            ro.call("DOMAIN_DEFINE_XML", xml="<domain/>")
    e = info.value
    assert [e.code, e.domain, e.message] == oracle_facts["denied"]
    assert e.code == codes.VIR_ERR_OPERATION_DENIED


def _default(codec: xdr.Codec[Any]) -> Any:
    """Harmless arguments: zeros, empty lists, NULLs, and a domain that does not exist."""
    if codec is xdr.NONNULL_DOMAIN:
        return xdr.NONNULL_DOMAIN(name=NOSUCH, uuid=bytes(16), id=-1)
    if isinstance(codec, xdr.Integer | xdr.SmallInt):
        return 0
    if isinstance(codec, xdr.String):
        return NOSUCH
    if isinstance(codec, xdr.Chars):
        return "" if codec.text else b""
    if isinstance(codec, xdr.FixedOpaque):
        return bytes(codec.size)
    if isinstance(codec, xdr.Opaque):
        return b""
    if isinstance(codec, xdr.Optional | xdr.Void):
        return None
    if isinstance(codec, xdr.Array):
        return []
    if isinstance(codec, xdr.Struct):
        return codec(**{name: _default(c) for name, c in codec.fields})
    raise AssertionError(f"no default for {codec!r}")


# libvirtd looks the callback up before any read-only check, so an unregistered id says nothing.
_UNDECIDABLE = {"QEMU_PROC_CONNECT_DOMAIN_MONITOR_EVENT_DEREGISTER"}
# Not the network and storage procedures: this libvirtd runs the QEMU driver alone and crashes on
# some of them (NETWORK_IS_ACTIVE, STORAGE_POOL_GET_INFO). tests/daemon/test_network_rpc.py sweeps
# the network ones against a libvirtd with its network driver; test_storage_rpc.py checks the
# storage refusals on a read-only connection.
_OTHER_DRIVERS = ("NETWORK", "STORAGE")
_SWEEP = [p for p in PROCEDURES if not p.event and p.program != Program.KEEPALIVE
          and not p.name.startswith("AUTH_") and p.name not in ("CONNECT_OPEN", "CONNECT_CLOSE")
          and p.full_name not in _UNDECIDABLE
          and not any(word in p.name.split("_") for word in _OTHER_DRIVERS)]
# Arguments that libvirt validates before its read-only check.
_ARGS = {"QEMU_PROC_DOMAIN_ATTACH": {"pid_value": 1, "flags": 0}}


def test_read_only_flags_match_libvirtd(libvirtd: Libvirtd) -> None:
    """Every call of the table on a read-only connection: libvirtd refuses exactly those not
    marked ``readonly`` (with harmless arguments, so an allowed call changes nothing)."""
    wrong = []
    with Client.open_uri(libvirtd.uri(readonly=True), readonly=True) as ro:
        for proc in _SWEEP:
            try:
                args = _ARGS.get(proc.full_name) or _default(proc.args)
                if proc.stream:
                    ro.call_stream(proc, args)[1].abort()
                else:
                    ro.call(proc, args)
                code = 0
            except RemoteError as exc:
                code = exc.code
            if (code == codes.VIR_ERR_OPERATION_DENIED) == proc.readonly:
                wrong.append(f"{proc.full_name}: readonly={proc.readonly}, got error {code}")
    assert not wrong, "\n".join(wrong)


def test_keepalive_pings_are_answered(libvirtd: Libvirtd) -> None:
    with Client.open_uri(libvirtd.uri()) as c:
        time.sleep(KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 2))
        assert c.rpc.pings_received >= KEEPALIVE_COUNT
        assert c.call("CONNECT_GET_TYPE").type == "QEMU"


def test_unanswered_pings_make_libvirtd_drop_us(libvirtd: Libvirtd) -> None:
    """The control for the test above: libvirtd really does drop a silent client."""
    closed = threading.Event()
    errors: list[PyvirtError | None] = []
    c = Client.connect_unix(libvirtd.socket, answer_pings=False)
    try:
        def on_close(err: PyvirtError | None) -> None:
            errors.append(err)
            closed.set()

        c.add_close_callback(on_close)
        c.open("qemu:///system")
        assert closed.wait(KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 10))
        assert isinstance(errors[0], ConnectionClosed)
        assert c.state == ClientState.CLOSED
        with pytest.raises(ConnectionClosed, match="client socket is closed") as info:
            c.call("CONNECT_GET_TYPE")
        assert (info.value.code, info.value.domain) == (codes.VIR_ERR_INTERNAL_ERROR,
                                                        codes.VIR_FROM_RPC)
    finally:
        c.close()


def test_dropped_daemon_fails_pending_call(own_libvirtd: Libvirtd) -> None:
    """Freeze libvirtd so a call stays pending, then kill it: the call fails cleanly, at once."""
    c = Client.open_uri(own_libvirtd.uri())
    closed = threading.Event()
    c.add_close_callback(lambda err: closed.set())
    outcome: list[BaseException] = []

    def pending_call() -> None:
        try:
            c.call("CONNECT_GET_HOSTNAME")
        except BaseException as exc:  # handed over to the test's thread
            outcome.append(exc)

    try:
        os.kill(own_libvirtd.pid, signal.SIGSTOP)
        worker = threading.Thread(target=pending_call)
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive(), "the call should be waiting for the frozen daemon"
        os.kill(own_libvirtd.pid, signal.SIGKILL)
        worker.join(10)
        assert not worker.is_alive()
        assert closed.wait(5)
        err = outcome[0]
        assert isinstance(err, ConnectionClosed)
        assert (err.code, err.domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
        # EOF or ECONNRESET (the call was still unread in the dead daemon's buffer)
        assert "CONNECT_GET_HOSTNAME" in err.message and own_libvirtd.socket in err.message
    finally:
        c.close()


def test_lifecycle_events_and_qemu_program(own_libvirtd: Libvirtd) -> None:
    """Define and undefine a domain in the daemon's private namespace: the lifecycle events come
    through, and the QEMU program's monitor command is routed (and refused as libvirt does)."""
    events: list[tuple[int, int, str]] = []
    got = threading.Condition()

    def on_lifecycle(proc: Procedure, rec: Any) -> None:
        with got:
            events.append((rec.msg.event, rec.msg.detail, rec.msg.dom.name))
            got.notify_all()

    with Client.open_uri(own_libvirtd.uri()) as c:
        c.add_event_handler(on_lifecycle, "DOMAIN_EVENT_CALLBACK_LIFECYCLE")
        cb = c.call("CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", eventID=0, dom=None).callbackID
        dom = c.call("DOMAIN_DEFINE_XML", xml=DOMAIN_XML).dom
        assert (dom.name, dom.id) == ("pyvirt-rpc-test", -1)
        assert c.call("DOMAIN_GET_STATE", dom=dom, flags=0).state == 5  # shut off
        with pytest.raises(RemoteError) as info:
            c.call("QEMU_PROC_DOMAIN_MONITOR_COMMAND", dom=dom, cmd='{"execute":"query-status"}',
                   flags=0)
        c.call("DOMAIN_UNDEFINE", dom=dom)
        with got:
            assert got.wait_for(lambda: len(events) >= 2, timeout=10)
        c.call("CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY", callbackID=cb)
    assert events == [(0, 0, "pyvirt-rpc-test"), (1, 0, "pyvirt-rpc-test")]  # DEFINED, UNDEFINED
    oracle = own_libvirtd.oracle(f"""
import libvirt_qemu
dom = conn.defineXML({DOMAIN_XML!r})
try:
    libvirt_qemu.qemuMonitorCommand(dom, '{{"execute":"query-status"}}', 0)
except libvirt.libvirtError as e:
    result = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
dom.undefine()
""")
    assert [info.value.code, info.value.domain, info.value.message] == oracle
    assert info.value.code == codes.VIR_ERR_OPERATION_INVALID


# ======================= a scripted peer =======================


class Peer:
    """A server whose every byte the test chooses."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.connected = asyncio.Event()
        self.messages: asyncio.Queue[Message | None] = asyncio.Queue()
        self.writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connected.set()
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for msg in decoder.feed(data):
                self.messages.put_nowait(msg)
        self.messages.put_nowait(None)

    async def recv(self) -> Message:
        msg = await asyncio.wait_for(self.messages.get(), 5)
        assert msg is not None, "the client closed the connection"
        return msg

    def send(self, prog: int, proc: int, mtype: int, serial: int, status: int = Status.OK,
             payload: bytes = b"") -> None:
        assert self.writer is not None
        self.writer.write(encode_message(Header(prog, 1, proc, mtype, serial, status), payload))

    def reply(self, call: Message, value: Any = None, status: int = Status.OK) -> None:
        proc = PROCEDURES.get(call.header.prog, call.header.proc)
        assert proc is not None
        payload = (xdr.REMOTE_ERROR.encode(value) if status == Status.ERROR
                   else proc.ret.encode(value))
        self.send(call.header.prog, call.header.proc, MessageType.REPLY, call.header.serial,
                  status, payload)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.server.close()


def scenario(tmp_path: Path, body: Callable[[Peer, RPCClient], Awaitable[T]]) -> T:
    async def main() -> T:
        peer = Peer(tmp_path / "peer.sock")
        await peer.start()
        client = await RPCClient.connect_unix(peer.path)
        await peer.connected.wait()
        try:
            return await asyncio.wait_for(body(peer, client), 20)
        finally:
            await client.abort()
            await peer.close()
    return asyncio.run(main())


def _lookup(name: str) -> Procedure:
    return procedures.lookup(name)


def test_prelude_and_close_are_virshs(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> list[tuple[int, int]]:
        opening = asyncio.create_task(client.open("qemu:///system", readonly=True))
        seen = []
        auth = await peer.recv()
        peer.reply(auth, {"types": [0]})
        feature = await peer.recv()
        assert _lookup("CONNECT_SUPPORTS_FEATURE").args.decode(feature.payload).feature == 10
        peer.reply(feature, {"supported": 1})
        open_ = await peer.recv()
        args = _lookup("CONNECT_OPEN").args.decode(open_.payload)
        assert (args.name, args.flags) == ("qemu:///system", 1)
        peer.reply(open_)
        await opening
        closes: list[PyvirtError | None] = []
        client.add_close_callback(closes.append)
        closing = asyncio.create_task(client.close())
        close = await peer.recv()
        peer.reply(close)
        await peer.close()  # as libvirtd does right after the reply
        await closing
        assert closes == [None]  # a close we asked for is no error
        for m in (auth, feature, open_, close):
            assert (m.header.prog, m.header.vers, m.header.type) == (Program.REMOTE, 1, 0)
            seen.append((m.header.proc, m.header.serial))
        return seen

    assert scenario(tmp_path, body) == [(66, 0), (60, 1), (1, 2), (2, 3)]


def test_out_of_order_replies_reach_their_callers(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> tuple[Any, Any]:
        calls = asyncio.gather(client.call("CONNECT_GET_TYPE"), client.call("CONNECT_GET_HOSTNAME"))
        first, second = await peer.recv(), await peer.recv()
        peer.reply(second, {"hostname": "h"})
        peer.reply(first, {"type": "QEMU"})
        return tuple(await calls)

    kind, host = scenario(tmp_path, body)
    assert (kind.type, host.hostname) == ("QEMU", "h")


def test_events_reach_matching_handlers_only(tmp_path: Path) -> None:
    seen: list[tuple[str, Any]] = []

    async def body(peer: Peer, client: RPCClient) -> None:
        client.add_event_handler(lambda p, r: seen.append(("any", p.name)))
        remove = client.add_event_handler(lambda p, r: seen.append(("lifecycle", r.msg.event)),
                                          "DOMAIN_EVENT_CALLBACK_LIFECYCLE")
        lifecycle = _lookup("DOMAIN_EVENT_CALLBACK_LIFECYCLE")
        dom = xdr.NONNULL_DOMAIN(name="vm", uuid=bytes(16), id=1)
        good = lifecycle.args.encode({"callbackID": 1, "msg": {"dom": dom, "event": 2, "detail": 0}})
        peer.send(Program.REMOTE, 318, MessageType.MESSAGE, 1, payload=good)
        peer.send(Program.REMOTE, 9999, MessageType.MESSAGE, 1)          # unknown: ignored
        peer.send(Program.REMOTE, 318, MessageType.MESSAGE, 1, payload=good[:7])  # malformed
        peer.send(Program.REMOTE, 362, MessageType.MESSAGE, 1, payload=b"\0\0\0\x01")
        call = asyncio.create_task(client.call("CONNECT_GET_TYPE"))
        peer.reply(await peer.recv(), {"type": "QEMU"})
        await call  # the connection survived the junk, and events came first
        remove()
        peer.send(Program.REMOTE, 318, MessageType.MESSAGE, 1, payload=good)
        call = asyncio.create_task(client.call("CONNECT_GET_TYPE"))
        peer.reply(await peer.recv(), {"type": "QEMU"})
        await call

    scenario(tmp_path, body)
    assert seen == [("any", "DOMAIN_EVENT_CALLBACK_LIFECYCLE"), ("lifecycle", 2),
                    ("any", "CONNECT_EVENT_CONNECTION_CLOSED"),
                    ("any", "DOMAIN_EVENT_CALLBACK_LIFECYCLE")]


def test_ping_gets_pong(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> Message:
        peer.send(Program.KEEPALIVE, KeepaliveProc.PING, MessageType.MESSAGE, 0)
        return await peer.recv()

    pong = scenario(tmp_path, body)
    assert pong == Message(Header(Program.KEEPALIVE, 1, KeepaliveProc.PONG, MessageType.MESSAGE, 0))


def test_peer_hangup_fails_pending_calls_and_fires_close_callback(tmp_path: Path) -> None:
    closes: list[PyvirtError | None] = []

    async def body(peer: Peer, client: RPCClient) -> BaseException:
        client.add_close_callback(closes.append)
        calls = [asyncio.create_task(client.call("CONNECT_GET_TYPE")) for _ in range(3)]
        for _ in calls:
            await peer.recv()
        await peer.close()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ConnectionClosed) for r in results)
        with pytest.raises(ConnectionClosed, match="client socket is closed"):
            await client.call("CONNECT_GET_TYPE")
        assert isinstance(results[0], BaseException)
        return results[0]

    err = scenario(tmp_path, body)
    assert isinstance(err, ConnectionClosed)
    assert (err.code, err.domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
    assert len(closes) == 1 and isinstance(closes[0], ConnectionClosed)


def test_peer_hanging_up_at_once_is_an_end_of_file(tmp_path: Path) -> None:
    """A server that closes the connection as soon as it accepts it (as a daemon refusing the
    client does): connecting succeeds, the first call fails with the end of the connection, and
    the close callback fires once."""
    async def main() -> None:
        path = str(tmp_path / "rude.sock")
        hung_up = asyncio.Event()

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()
            hung_up.set()
        server = await asyncio.start_unix_server(accepted, path)
        try:
            for _ in range(20):  # the hang-up lands before or after the client takes over
                hung_up.clear()
                client = await RPCClient.connect_unix(path)
                closes: list[PyvirtError | None] = []
                client.add_close_callback(closes.append)
                await hung_up.wait()
                with pytest.raises(ConnectionClosed,
                                   match="End of file while reading data|Connection reset"):
                    await client.call("CONNECT_GET_TYPE")
                assert len(closes) == 1 and isinstance(closes[0], ConnectionClosed)
                await client.abort()
        finally:
            server.close()
    asyncio.run(main())


def test_connection_lost_before_the_client_takes_it_over() -> None:
    """The socket's end can be seen before the client has taken it over (between the transport's
    creation and the end of a TLS set-up): the client then starts as ended, with the end of file
    as its reason, rather than refusing the socket."""
    async def main() -> None:
        ours, theirs = socket.socketpair()
        client = RPCClient()
        wire = _Wire(client)
        await asyncio.get_running_loop().create_unix_connection(lambda: wire, sock=ours)
        theirs.close()
        await asyncio.wait_for(wire.lost, 5)
        client._attach(wire, "the peer")
        assert client.state == ClientState.CLOSED
        with pytest.raises(ConnectionClosed, match="End of file while reading data: "
                                                   "Input/output error \\(from the peer\\)"):
            await client.call("CONNECT_GET_TYPE")
        await client.abort()
    asyncio.run(main())


def test_garbage_from_peer_is_a_protocol_error(tmp_path: Path) -> None:
    closes: list[PyvirtError | None] = []

    async def body(peer: Peer, client: RPCClient) -> BaseException | None:
        client.add_close_callback(closes.append)
        call = asyncio.create_task(client.call("CONNECT_GET_TYPE"))
        await peer.recv()
        assert peer.writer is not None
        peer.writer.write(b"\0\0\0\x05garbage")
        return (await asyncio.gather(call, return_exceptions=True))[0]

    err = scenario(tmp_path, body)
    assert isinstance(err, ProtocolError) and "message length 5" in err.message
    assert isinstance(closes[0], ProtocolError)


def test_bad_reply_fails_only_its_call(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> None:
        call = asyncio.create_task(client.call("CONNECT_GET_TYPE"))
        msg = await peer.recv()
        peer.send(Program.REMOTE, 59, MessageType.REPLY, msg.header.serial, payload=b"\0\0\0\0")
        with pytest.raises(ProtocolError, match="names another procedure"):
            await call
        call = asyncio.create_task(client.call("CONNECT_GET_TYPE"))
        msg = await peer.recv()
        peer.send(Program.REMOTE, 3, MessageType.REPLY, msg.header.serial, payload=b"\0\0\0\x09")
        with pytest.raises(ProtocolError, match="bad reply to REMOTE_PROC_CONNECT_GET_TYPE"):
            await call
        call = asyncio.create_task(client.call("CONNECT_GET_TYPE"))
        msg = await peer.recv()
        peer.reply(msg, remote_error_record(PyvirtError("nope", code=3, domain=10)), Status.ERROR)
        with pytest.raises(RemoteError, match="nope"):
            await call
        assert client.state == ClientState.RUNNING

    scenario(tmp_path, body)


def test_call_timeout_and_late_reply(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> None:
        with pytest.raises(PyvirtError, match="no reply") as info:
            await client.call("CONNECT_GET_TYPE", timeout=0.2)
        assert info.value.code == codes.VIR_ERR_OPERATION_TIMEOUT
        late = await peer.recv()
        peer.reply(late, {"type": "late"})  # dropped: nobody waits for it any more
        call = asyncio.create_task(client.call("CONNECT_GET_HOSTNAME"))
        peer.reply(await peer.recv(), {"hostname": "h"})
        assert (await call).hostname == "h"

    scenario(tmp_path, body)


def test_server_requiring_sasl_is_refused_clearly(tmp_path: Path) -> None:
    # SASL itself is tested in tests/remote/test_sasl.py; here, a server offering only Kerberos
    async def body(peer: Peer, client: RPCClient) -> None:
        opening = asyncio.create_task(client.open())
        peer.reply(await peer.recv(), {"types": [1]})
        peer.reply(await peer.recv(), {"mechlist": "GSSAPI"})
        with pytest.raises(PyvirtError, match="GSSAPI/Kerberos is not supported") as info:
            await opening
        assert info.value.code == codes.VIR_ERR_AUTH_FAILED

    scenario(tmp_path, body)


def test_server_requiring_polkit_is_refused_clearly(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> None:
        opening = asyncio.create_task(client.open())
        peer.reply(await peer.recv(), {"types": [2]})
        with pytest.raises(PyvirtError, match="requires polkit") as info:
            await opening
        assert info.value.code == codes.VIR_ERR_AUTH_UNAVAILABLE

    scenario(tmp_path, body)


def test_client_keepalive_gives_up_on_a_silent_server(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> None:
        closed = asyncio.Event()
        client.add_close_callback(lambda err: closed.set())
        opening = asyncio.create_task(client.open(keepalive_interval=0.1, keepalive_count=2))
        peer.reply(await peer.recv(), {"types": []})
        peer.reply(await peer.recv(), {"supported": 1})
        peer.reply(await peer.recv())
        await opening
        ping = await peer.recv()
        assert (ping.header.prog, ping.header.proc) == (Program.KEEPALIVE, KeepaliveProc.PING)
        await asyncio.wait_for(closed.wait(), 5)
        assert client._close_error is not None and "keepalive" in client._close_error.message

    scenario(tmp_path, body)


def test_stream_receives_until_eof_then_finishes(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> list[bytes]:
        dom = xdr.NONNULL_DOMAIN(name="vm", uuid=bytes(16), id=1)
        call = asyncio.create_task(client.call_stream("DOMAIN_SCREENSHOT", dom=dom, screen=0,
                                                      flags=0))
        msg = await peer.recv()
        serial = msg.header.serial
        peer.reply(msg, {"mime": "image/x-portable-pixmap"})
        for chunk in (b"P6 ", b"1 1", b""):
            peer.send(Program.REMOTE, 211, MessageType.STREAM, serial, Status.CONTINUE, chunk)
        ret, stream = await call
        assert ret.mime == "image/x-portable-pixmap"
        got = [await stream.recv() for _ in range(3)]
        finishing = asyncio.create_task(stream.finish(timeout=5))
        fin = await peer.recv()
        assert (fin.header.type, fin.header.status, fin.header.serial) == (MessageType.STREAM,
                                                                           Status.OK, serial)
        peer.send(Program.REMOTE, 211, MessageType.STREAM, serial, Status.OK)
        await finishing
        return got

    assert scenario(tmp_path, body) == [b"P6 ", b"1 1", b""]


def test_stream_error_from_peer(tmp_path: Path) -> None:
    async def body(peer: Peer, client: RPCClient) -> None:
        dom = xdr.NONNULL_DOMAIN(name="vm", uuid=bytes(16), id=1)
        call = asyncio.create_task(client.call_stream("DOMAIN_OPEN_CONSOLE", dom=dom,
                                                      dev_name=None, flags=0))
        msg = await peer.recv()
        peer.reply(msg)
        err = xdr.REMOTE_ERROR.encode(remote_error_record(PyvirtError("console gone", code=9)))
        peer.send(Program.REMOTE, 201, MessageType.STREAM, msg.header.serial, Status.ERROR, err)
        _, stream = await call
        with pytest.raises(RemoteError, match="console gone"):
            await stream.recv()

    scenario(tmp_path, body)
