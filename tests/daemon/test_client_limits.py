# SPDX-License-Identifier: LGPL-2.1-or-later
"""max_clients on a real pyvirtd process (on uvloop, as it runs) and on a private libvirtd 9.0,
through raw sockets: at the limit neither daemon accepts, so one more client connects (the
kernel's backlog) and waits, unanswered but not hung up on, until a client leaves -- on every
socket alike. (max_anonymous_clients is tested with SASL in tests/remote/test_sasl.py.) The same
for a daemon out of file descriptors, which rests its socket for 5 s."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import pytest

from .testlib import Raw, ask, rpc_conftest, start_pyvirtd, state

pytestmark = pytest.mark.oracle

#: libvirtd refuses max_anonymous_clients above max_clients (its default is 20), as pyvirtd does.
LIMITS = {"max_clients": "2", "max_anonymous_clients": "2"}


def scenario(unix: str, unix_ro: str, tcp_port: int) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    first, second = Raw.unix(unix), Raw.tcp(tcp_port)
    first.open()
    second.open()
    with second:
        third = ask(Raw.unix(unix_ro))  # connect() succeeds: the kernel's backlog holds it
        with third:
            seen.append(("third, at the limit", state(third, 0.5)))
            first.close()
            seen.append(("third, once the first left", state(third, 5)))
            fourth = ask(Raw.tcp(tcp_port))
            with fourth:
                seen.append(("fourth, at the limit", state(fourth, 0.5)))
                # connected clients are served meanwhile
                seen.append(("second calls", second.call("CONNECT_GET_TYPE").type))
                seen.append(("third calls", third.call("CONNECT_SUPPORTS_FEATURE", feature=10)
                             .supported))
                third.close()
                seen.append(("fourth, once the third left", state(fourth, 5)))
    return seen


def test_max_clients_like_libvirtd(own_root: Path) -> None:
    config = "".join(f"{k} = {v}\n" for k, v in LIMITS.items()) + "log_level = 2\n"
    pyvirtd = start_pyvirtd(own_root, config=config, listen=True)
    try:
        assert pyvirtd.tcp_port is not None
        mine = scenario(pyvirtd.socket, pyvirtd.socket_ro, pyvirtd.tcp_port)
        log = pyvirtd.stderr()
    finally:
        pyvirtd.stop()
    libvirtd = rpc_conftest.start_libvirtd(**LIMITS)
    try:
        theirs = scenario(libvirtd.socket, libvirtd.socket_ro, libvirtd.tcp_port)
    finally:
        libvirtd.stop()
    assert mine == theirs
    assert [s for _, s in mine] == ["waiting", [0], "waiting", "QEMU", 1, [0]]
    assert "2 clients (max_clients 2), 0 not authenticated (max_anonymous_clients 2): not " \
           "accepting new connections until a client leaves or authenticates" in log
    assert "1 clients (max_clients 2), 0 not authenticated (max_anonymous_clients 2): " \
           "accepting new connections again" in log
    assert "refused" not in log


# ---- out of descriptors ----

def _starve(pid: int) -> tuple[int, int]:
    """Make ``pid`` unable to open one more descriptor (its soft RLIMIT_NOFILE at its lowest free
    descriptor number); returns its limits before, to restore."""
    before = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = min(set(range(len(used) + 1)) - used)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, before[1]))
    return before


def emfile_scenario(pid: int, unix: str) -> list[tuple[str, Any]]:
    """A daemon out of descriptors cannot accept: it rests its socket for 5 s (not retrying
    at once, which would spin), the client waits in the backlog, and is accepted after the rest
    even though descriptors are free again before it ends; connected clients are served all
    along."""
    seen: list[tuple[str, Any]] = []
    with Raw.unix(unix) as first:
        first.open()
        before = _starve(pid)
        try:
            second = ask(Raw.unix(unix))  # the kernel's backlog takes it
            starved = time.monotonic()
            seen.append(("second, out of descriptors", state(second, 1.0)))
        finally:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, before)
        with second:
            seen.append(("first calls", first.call("CONNECT_GET_TYPE").type))
            seen.append(("second, descriptors free, resting", state(second, 2.0)))
            seen.append(("second, after the rest", state(second, 8.0)))
            rested = time.monotonic() - starved
            seen.append(("rested about 5 s", 4.0 <= rested <= 9.0))
            second.open()
            seen.append(("second calls", second.call("CONNECT_GET_TYPE").type))
    return seen


def test_out_of_descriptors_like_libvirtd(own_root: Path) -> None:
    pyvirtd = start_pyvirtd(own_root, config="log_level = 2\n")
    try:
        mine = emfile_scenario(pyvirtd.proc.pid, pyvirtd.socket)
        assert pyvirtd.alive()
        log = pyvirtd.stderr()
    finally:
        pyvirtd.stop()
    libvirtd = rpc_conftest.start_libvirtd()
    try:
        assert Path(f"/proc/{libvirtd.pid}/comm").read_text().strip() == "libvirtd"
        theirs = emfile_scenario(libvirtd.pid, libvirtd.socket)
    finally:
        libvirtd.stop()
    assert mine == theirs
    assert [s for _, s in mine] == ["waiting", "QEMU", "waiting", [0], True, "QEMU"]
    assert "Too many open files; trying again in 5 s" in log
