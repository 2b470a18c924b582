# SPDX-License-Identifier: LGPL-2.1-or-later
"""The synchronous facade of :mod:`pyvirt.rpc.client`: blocking calls, no event loop needed by
the caller (what :mod:`pyvirt.remote` and pyvirsh use).

Each :class:`Client` has an event loop of its own (:class:`_LoopThread`). By default a background
thread runs it, and callbacks run on that thread. A client connected with ``background=False``
(as ``pyvirt.open()`` does) has each call run the loop in the caller's thread until the call's
reply is in, as libvirt's client does without an event loop, and gets a thread only when
something must be heard while the caller is idle. A call sends its frame from the caller's thread
and runs the loop only until the reply's future is done (:meth:`_LoopThread.run_started`).

At exit, each client not closed yet says goodbye to its server (CONNECT_CLOSE), as
libvirt-python's connections do when the interpreter collects them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from pyvirt import _errcodes as codes
from pyvirt.errors import NotSupported
from pyvirt.rpc.client import (
    DEFAULT_SOCKET,
    DEFAULT_SOCKET_RO,
    ClientState,
    CloseCallback,
    ConnectionClosed,
    EventHandler,
    RPCClient,
    Stream,
)
from pyvirt.rpc.procedures import Procedure
from pyvirt.uri import parse_uri

__all__ = ["Client", "SyncStream"]

T = TypeVar("T")


class _LoopThread:
    """The event loop of one :class:`Client`, and who runs it.

    In the background (the default), a daemon thread runs it all along: what arrives while the
    caller does nothing (events, the server's PINGs, the connection's end) is handled at once,
    and each call is handed to that thread. Otherwise each synchronous call runs the loop itself,
    in the caller's thread, until its reply is in, as libvirt's client does without an event
    loop: no thread, and no hand-over to one and back per call. :meth:`background` switches for
    good: when something must be listened for while idle (callbacks, keepalive), or a second
    thread calls while one is running the loop (that one lets go of it mid-call).
    """

    def __init__(self, *, background: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        #: Set once the loop is told to stop: nothing more may be run on it.
        self.stopping = False
        #: Held by whoever runs the loop: a caller, or the background thread for good.
        self._driver = threading.Lock()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None
        #: The caller running the loop for its call, if one is.
        self._caller: threading.Thread | None = None
        #: Called once the loop goes to the background (see :meth:`when_background`).
        self._on_background: list[Callable[[], None]] = []
        if background:
            self.background()

    def when_background(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once the loop runs in the background: now if it does already, else
        from the thread that sends it there."""
        with self._start:
            if self._thread is None:
                self._on_background.append(hook)
                return
        hook()

    def _main(self) -> None:
        with self._driver:
            try:
                self.loop.run_forever()
            finally:
                self.loop.close()

    def background(self) -> None:
        """From now on the loop runs in a thread of its own."""
        with self._start:
            if self._thread is not None or self.stopping:
                return
            self._thread = threading.Thread(target=self._main, name="pyvirt-rpc-loop",
                                            daemon=True)
            self._thread.start()
            for hook in self._on_background:
                hook()
        with contextlib.suppress(RuntimeError):  # (closed meanwhile)
            self.loop.call_soon_threadsafe(self._let_go)

    def _let_go(self) -> None:
        if threading.current_thread() is not self._thread:
            self.loop.stop()  # a caller was running the loop: it hands its call over

    @contextlib.contextmanager
    def _driving(self) -> Iterator[bool]:
        """Whether this thread may run the loop now; if so, it holds the loop until the end."""
        if self._thread is not None or asyncio._get_running_loop() is not None or \
                not self._driver.acquire(blocking=False):
            yield False
            return
        try:
            if self._thread is not None:  # went to the background meanwhile
                yield False
                return
            self._caller = threading.current_thread()
            yield True
        finally:
            self._caller = None
            self._driver.release()

    def _in_loop(self) -> bool:
        """Whether this thread is the one running the loop (a callback of this client's)."""
        return threading.current_thread() in (self._thread, self._caller)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result, from any thread but the loop's."""
        try:
            self._check_caller()
        except BaseException:
            coro.close()
            raise
        return self._complete(lambda: self.loop.create_task(coro), lambda: coro)

    def run_started(self, start: Callable[[], asyncio.Future[T]]) -> T:
        """What :meth:`run` does for work that ``start`` begins synchronously on the loop (an
        RPC sent) and that completes the future it returns (its reply). The caller's thread
        then runs the loop only until that future is done: no task, no extra turns."""
        self._check_caller()

        async def started() -> T:
            return await start()
        return self._complete(start, started)

    def _check_caller(self) -> None:
        if self._in_loop():
            raise RuntimeError("a synchronous pyvirt RPC call from one of its own callbacks "
                               "would deadlock; use the RPCClient from the callback instead")
        if self.stopping:
            raise ConnectionClosed("client socket is closed", code=codes.VIR_ERR_INTERNAL_ERROR)

    def _complete(self, start: Callable[[], asyncio.Future[T]],
                  coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of ``start()``'s future, the loop run by this thread if it may drive it,
        else that of ``coro()`` run on the background thread."""
        with self._driving() as driving:
            if driving:
                future = start()
                try:
                    return self.loop.run_until_complete(future)
                except RuntimeError:
                    if future.done() or self._thread is None:
                        raise
                # Another thread needs the loop in the background: the call finishes there.
                handed = threading.Event()
                future.add_done_callback(lambda _future: handed.set())
        if driving:
            handed.wait()
            return future.result()
        self.background()
        return asyncio.run_coroutine_threadsafe(coro(), self.loop).result()

    def stop(self) -> None:
        """Stop and close the loop (a coroutine left on it is dropped)."""
        self.stopping = True
        with self._start:
            thread = self._thread
        if thread is None:
            if self._in_loop():
                return  # (from a callback: the loop is closed when collected)
            with self._driver:
                if not self.loop.is_closed():
                    self.loop.close()
            return
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not thread:
            thread.join()

    def finish(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro``, then stop; nothing if stopping already."""
        if self.stopping:
            coro.close()
            return
        try:
            self.run(coro)
        finally:
            self.stop()

    def finish_soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro``, then stop: here and now if the loop is not in the background (nor this
        thread in a loop of its own), else on the background thread without waiting for it."""
        if self.stopping:
            coro.close()
            return
        with self._driving() as driving:
            if driving:
                self.stopping = True
                with contextlib.suppress(Exception):
                    self.loop.run_until_complete(coro)
                self.loop.close()
                return
        self.background()
        self.stopping = True

        async def then_stop() -> None:
            try:
                await coro
            finally:
                asyncio.get_running_loop().stop()
        try:
            asyncio.run_coroutine_threadsafe(then_stop(), self.loop)
        except RuntimeError:  # the loop is closed already
            coro.close()


class SyncStream:
    def __init__(self, stream: Stream, loop: _LoopThread) -> None:
        self._stream, self._loop = stream, loop

    def recv(self) -> bytes:
        return self._loop.run(self._stream.recv())

    def recv_nowait(self) -> bytes | None:
        async def take() -> bytes | None:
            return self._stream.recv_nowait()
        return self._loop.run(take())

    def has_data(self) -> bool:
        """A peek from any thread, without a round trip through the loop (which may be gone):
        at worst it answers late by one arrival, and the caller's wake-up covers that."""
        return self._stream.has_data()

    def set_on_ready(self, callback: Callable[[], None] | None) -> None:
        """``callback`` runs on the client's loop thread whenever something arrives: it must not
        call back into this stream (wake another thread instead)."""
        if callback is not None:
            self._loop.background()
        self._stream.on_ready = callback

    def send(self, data: bytes) -> None:
        self._loop.run(self._stream.send(data))

    def finish(self, timeout: float | None = None) -> None:
        self._loop.run(self._stream.finish(timeout))

    def abort(self) -> None:
        self._loop.run(self._stream.abort())


#: Clients not closed yet: at exit, each says goodbye to its server (CONNECT_CLOSE), as
#: libvirt-python's connections do when the interpreter collects them.
_OPEN: weakref.WeakSet[Client] = weakref.WeakSet()
#: How long the goodbye at exit may take, per client.
_EXIT_TIMEOUT = 2.0


@atexit.register
def _close_at_exit() -> None:
    for client in list(_OPEN):
        with contextlib.suppress(Exception):
            client.close(_EXIT_TIMEOUT)


class Client:
    """Blocking access to an :class:`RPCClient`; no event loop needed by the caller."""

    def __init__(self, rpc: RPCClient, loop: _LoopThread) -> None:
        self.rpc, self._loop = rpc, loop
        _OPEN.add(self)
        # Polling for replies (pyvirt.rpc.busypoll) spares a wake-up only to a caller that runs
        # the loop itself. In the background, the caller waits for a hand-over from the loop's
        # thread anyway, and a polling loop thread would only vie with it for the GIL.
        loop.when_background(lambda: setattr(rpc.busy_poll, "window", 0))

    @classmethod
    def _connect(cls, factory: Callable[[], Coroutine[Any, Any, RPCClient]], *,
                 background: bool = True) -> Client:
        """``background``: see :class:`_LoopThread`; without it, call :meth:`listen` before
        relying on anything arriving while no call is made."""
        loop = _LoopThread(background=background)
        try:
            return cls(loop.run(factory()), loop)
        except BaseException:
            loop.stop()
            raise

    @classmethod
    def connect_unix(cls, path: str, *, background: bool = True, **kwargs: Any) -> Client:
        return cls._connect(lambda: RPCClient.connect_unix(path, **kwargs), background=background)

    @classmethod
    def connect_tcp(cls, host: str, port: int, *, background: bool = True,
                    **kwargs: Any) -> Client:
        return cls._connect(lambda: RPCClient.connect_tcp(host, port, **kwargs),
                            background=background)

    @classmethod
    def connect_tls(cls, host: str, port: int, params: Mapping[str, str], *,
                    background: bool = True, **kwargs: Any) -> Client:
        """TLS as libvirt's remote driver sets it up for a URI's ``pkipath``, ``no_verify`` and
        ``no_sanity`` parameters (pyvirt.rpc.tls.client_setup)."""
        from pyvirt.rpc.tls import client_setup

        context, verify = client_setup(params)
        return cls._connect(lambda: RPCClient.connect_tls(host, port, context, verify=verify,
                                                          **kwargs), background=background)

    @classmethod
    def connect_command(cls, argv: Sequence[str], *, env: dict[str, str] | None = None,
                        peer: str, background: bool = True, **kwargs: Any) -> Client:
        return cls._connect(lambda: RPCClient.connect_command(argv, env=env, peer=peer, **kwargs),
                            background=background)

    @classmethod
    def open_uri(cls, uri: str, *, readonly: bool = False, **kwargs: Any) -> Client:
        """Connect and open as libvirt's remote driver would for ``uri``: qemu[+unix]:///...
        (``?socket=`` honoured), qemu+tcp://host[:port]/... or qemu+ssh://[user@]host[:port]/...
        (the system ssh, :mod:`pyvirt.rpc.ssh`); the daemon gets the URI with
        transport, host, port and client parameters stripped."""
        parsed = parse_uri(uri)
        transport = parsed.effective_transport
        if transport == "unix" and parsed.instance != "embed":
            path = parsed.params.get("socket", DEFAULT_SOCKET_RO if readonly else DEFAULT_SOCKET)
            client = cls.connect_unix(path)
        elif transport == "tcp":
            host, port = parsed.effective_host, parsed.effective_port
            assert host is not None and port is not None
            client = cls.connect_tcp(host, port)
        elif transport == "tls":
            host, port = parsed.effective_host, parsed.effective_port
            assert host is not None and port is not None
            client = cls.connect_tls(host, port, parsed.params)
        elif transport == "ssh":
            from pyvirt.rpc.ssh import ssh_command

            ssh = ssh_command(parsed, readonly)
            client = cls.connect_command(ssh.argv, env=ssh.env, peer=ssh.peer)
        else:
            raise NotSupported(f"cannot reach '{uri}' over RPC: pyvirt's client speaks only the "
                               "unix, tcp and ssh transports so far", domain=codes.VIR_FROM_REMOTE)
        from pyvirt.rpc.sasl import AuthOptions

        kwargs.setdefault("auth_options", AuthOptions.for_uri(parsed))
        try:
            client.open(parsed.remote_name(), readonly=readonly, **kwargs)
        except BaseException:
            client.abort()
            raise
        return client

    @property
    def state(self) -> ClientState:
        return self.rpc.state

    def open(self, name: str | None = "", **kwargs: Any) -> None:
        self._loop.run(self.rpc.open(name, **kwargs))

    def call(self, proc: str | Procedure, args: Any = None, /, *, timeout: float | None = None,
             **fields: Any) -> Any:
        return self._loop.run_started(
            lambda: self.rpc.start_call(proc, args, fields, timeout=timeout))

    def call_stream(self, proc: str | Procedure, args: Any = None, /, *,
                    timeout: float | None = None, **fields: Any) -> tuple[Any, SyncStream]:
        ret, stream = self._loop.run(self.rpc.call_stream(proc, args, timeout=timeout, **fields))
        return ret, SyncStream(stream, self._loop)

    def add_event_handler(self, handler: EventHandler,
                          proc: str | Procedure | None = None) -> Callable[[], None]:
        """The handler runs on the client's loop thread."""
        async def add() -> Callable[[], None]:
            return self.rpc.add_event_handler(handler, proc)
        return self._loop.run(add())

    def listen(self) -> None:
        """Have the loop run in the background from now on (:class:`_LoopThread`)."""
        self._loop.background()

    def set_keepalive(self, interval: float | None, count: int = 5) -> None:
        if interval:
            self.listen()

        async def run() -> None:
            self.rpc.set_keepalive(interval, count)
        self._loop.run(run())

    def add_close_callback(self, callback: CloseCallback) -> Callable[[], None]:
        """The callback runs on the client's loop thread."""
        async def add() -> Callable[[], None]:
            return self.rpc.add_close_callback(callback)
        return self._loop.run(add())

    def close(self, timeout: float | None = 10.0) -> None:
        """CONNECT_CLOSE if open, close the socket, stop the loop thread. Idempotent."""
        self._loop.finish(self.rpc.close(timeout))

    def abort(self) -> None:
        self._loop.finish(self.rpc.abort())

    def close_soon(self) -> None:
        """close() without waiting for it, from any thread (a callback of this client's too)."""
        self._loop.finish_soon(self.rpc.close())

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            self.close_soon()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
