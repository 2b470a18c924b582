# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's own asyncio event loop, running in one background daemon thread per process.

The driver is synchronous and callable from any thread, yet qemu.qmp is asyncio. Rather than ask
the user for an event loop (or run one per call, which would drop the monitor's event stream
between calls), every monitor of the process shares this loop: :func:`get_loop` starts it lazily
on first use. Coroutines are handed over with :meth:`LoopThread.run` / :meth:`LoopThread.submit`;
nothing but pyvirt's I/O code ever runs on the loop thread, so it never blocks.

A daemon thread, because a process that merely started or inspected domains must be free to exit:
the QEMUs it started keep running and a later process reconnects to them.

After ``fork()`` the child has no loop thread (only the forking thread survives), so the child
forgets the parent's loop and starts its own on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pyvirt.errors import InternalError

__all__ = ["LoopThread", "get_loop"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_THREAD_NAME = "pyvirt-loop"


class LoopThread:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self, name: str = _THREAD_NAME) -> None:
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(started,), name=name, daemon=True)
        self._thread.start()
        started.wait()

    def _main(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        try:
            self.loop.run_forever()
        finally:
            log.debug("pyvirt event loop stopped")

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; the caller gets a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block the calling thread until it finishes.

        ``timeout`` is a last-resort guard for a wedged loop: callers put their real deadline
        inside the coroutine, where cancellation is clean.
        """
        if self.in_loop_thread():
            coro.close()
            # Waiting here would wait for ourselves forever.
            raise InternalError("a blocking pyvirt call was made from pyvirt's event loop thread; "
                                "callbacks must not run on the loop thread")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise InternalError(f"pyvirt's event loop did not finish an operation within {timeout} s; "
                                "the loop thread is blocked (a bug in pyvirt)") from None
        except BaseException:
            # KeyboardInterrupt in the waiting thread: do not leave the coroutine running for nobody.
            fut.cancel()
            raise

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run a plain function on the loop thread (from any thread)."""
        self.loop.call_soon_threadsafe(fn, *args)


_lock = threading.Lock()
_instance: LoopThread | None = None


def get_loop() -> LoopThread:
    """The process-wide pyvirt loop, started on first use."""
    global _instance
    inst = _instance
    if inst is not None:
        return inst
    with _lock:
        if _instance is None:
            _instance = LoopThread()
        return _instance


def _forget_after_fork() -> None:
    global _instance, _lock
    # The thread does not exist in the child, and _lock may have been held by another parent thread.
    _instance = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
