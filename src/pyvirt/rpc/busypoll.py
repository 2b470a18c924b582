# SPDX-License-Identifier: LGPL-2.1-or-later
"""Busy polling: after a message goes out, an event loop keeps polling its sockets for a short
while before it sleeps, for the peer's answer. pyvirtd does it after each reply, TLS handshake
flight and accept (``busy_poll_us`` in pyvirtd.conf); pyvirt's client after each call it sends
and its TLS handshake (``PYVIRT_BUSY_POLL_US`` in the environment). Both default to 200 µs.

Why: a peer answers within tens of microseconds (a client's next call, a server's reply).
Asleep, the waiting thread leaves its CPU idle, and on a virtual machine an idle vCPU is halted:
waking it for the peer's message goes through the host. On the machine this was measured on, a
ping-pong between two processes on different vCPUs took 58 µs a round trip with the receiver
asleep and 21 with it polling (``bench/bench_tls.py --also-no-poll`` shows what it gives a TLS
connection). QEMU's event loop does the same for its I/O threads (``poll-max-ns``), and so does a
guest kernel's haltpoll idle driver (200 µs by default).

The cost is bounded: the loop polls only within the window after the last message out, and each
turn of it that found nothing to do yields the CPU (``sched_yield``), so that a peer running on
the same CPU is not kept waiting by the polling. An idle loop does not poll at all.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

__all__ = ["BusyPoll", "DEFAULT_US", "MAX_US", "client_window"]

#: The window both sides use unless told otherwise, and the most it may be (beyond a few
#: milliseconds, polling only burns CPU).
DEFAULT_US = 200
MAX_US = 10_000


def client_window() -> float:
    """pyvirt's client's window, in seconds: ``PYVIRT_BUSY_POLL_US`` (0 turns polling off), else
    :data:`DEFAULT_US`. Any other value than a number of microseconds from 0 to :data:`MAX_US`
    is a :class:`~pyvirt.errors.ConfigError` naming the variable, raised before connecting."""
    text = os.environ.get("PYVIRT_BUSY_POLL_US")
    if text is None:
        return DEFAULT_US / 1e6
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_US:
        from pyvirt.errors import ConfigError

        raise ConfigError(f"PYVIRT_BUSY_POLL_US must be microseconds from 0 (no polling) to "
                          f"{MAX_US}, got {text!r}; unset it for the default ({DEFAULT_US})",
                          key="PYVIRT_BUSY_POLL_US")
    return value / 1e6


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
        #: Whether a kick came since the last turn.
        self._kicked = False

    def kick(self) -> None:
        """A message left (or came, to be answered): poll for the peer's next one."""
        if self.window <= 0:
            return
        self.until = time.monotonic() + self.window
        self._kicked = True
        if not self.polling:
            if self.loop is None:
                import asyncio

                self.loop = asyncio.get_running_loop()
            self.polling = True
            self.loop.call_soon(self._turn)

    def rest(self) -> None:
        """No peer is left to answer: stop polling at the next turn."""
        self.until = 0.0

    def _turn(self) -> None:
        # A callback that schedules itself keeps the loop from blocking in its poll: while one is
        # ready, the loop polls with no timeout, handles what is there, and comes back here.
        if time.monotonic() < self.until:
            self.turns += 1
            if not self._kicked:
                os.sched_yield()  # nothing came since the last turn: let others run
            self._kicked = False
            assert self.loop is not None
            self.loop.call_soon(self._turn)
        else:
            self.polling = False
