# SPDX-License-Identifier: LGPL-2.1-or-later
"""Busy polling: after a client's message or a reply, pyvirtd's event loop keeps polling its
sockets for a short while (``busy_poll_us``) before it sleeps.

Why: a client answers a reply within tens of microseconds (its next call, its next TLS flight).
Asleep, the daemon's thread leaves its CPU idle, and on a virtual machine an idle vCPU is halted:
waking it for the client's next message goes through the host. On the machine this was measured
on, a ping-pong between two processes on different vCPUs took 58 µs a round trip with the
receiver asleep and 21 with it polling (``bench/bench_tls.py`` shows what it gives a TLS
connection). QEMU's event loop does the same for its I/O threads (``poll-max-ns``), and so does a
guest kernel's haltpoll idle driver.

The cost is bounded: the loop polls only within ``busy_poll_us`` of the last message or reply,
and each turn of it that found nothing to do yields the CPU (``sched_yield``), so that a client
running on the same CPU is not kept waiting by the daemon's polling. An idle daemon does not poll
at all.
"""

from __future__ import annotations

import asyncio
import os
import time

__all__ = ["BusyPoll"]


class BusyPoll:
    """Keeps the running event loop turning (polling its file descriptors without sleeping)
    until ``window`` seconds after the last :meth:`kick`. A window of 0 never polls."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.loop: asyncio.AbstractEventLoop | None = None
        self.until = 0.0
        self.polling = False
        #: Turns taken so far (for tests and diagnostics).
        self.turns = 0
        #: Kicks so far, and as many as the last turn saw.
        self.kicks = 0
        self._seen = 0

    def kick(self) -> None:
        """A message came or a reply left: poll for the client's next one."""
        if self.window <= 0:
            return
        self.until = time.monotonic() + self.window
        self.kicks += 1
        if not self.polling:
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            self.polling = True
            self.loop.call_soon(self._turn)

    def _turn(self) -> None:
        # A callback that schedules itself keeps the loop from blocking in its poll: while one is
        # ready, the loop polls with no timeout, handles what is there, and comes back here.
        if time.monotonic() < self.until:
            self.turns += 1
            if self.kicks == self._seen:
                os.sched_yield()  # nothing came since the last turn: let others run
            self._seen = self.kicks
            assert self.loop is not None
            self.loop.call_soon(self._turn)
        else:
            self.polling = False
