# SPDX-License-Identifier: LGPL-2.1-or-later
"""max_clients on a real pyvirtd process (on uvloop, as it runs) and on a private libvirtd 9.0,
through raw sockets: at the limit neither daemon accepts, so one more client connects (the
kernel's backlog) and waits, unanswered but not hung up on, until a client leaves -- on every
socket alike. (max_anonymous_clients is tested with SASL in tests/remote/test_sasl.py.)"""

from __future__ import annotations

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
