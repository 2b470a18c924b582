# SPDX-License-Identifier: LGPL-2.1-or-later
"""virStream and console sessions over a real pty pair: the test holds the side QEMU would hold."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.stream import (
    VIR_STREAM_EVENT_HANGUP,
    VIR_STREAM_EVENT_READABLE,
    VIR_STREAM_NONBLOCK,
    open_console,
    virStream,
)


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    """(the guest side's descriptor, the path a console opens), as QEMU's pty chardev gives."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    try:
        yield master, path
    finally:
        os.close(master)


def _recv(stream: virStream, n: int, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        data = stream.recv(n)
        if isinstance(data, bytes):
            return data
        assert time.monotonic() < deadline, "nothing arrived"
        time.sleep(0.02)


def test_bytes_pass_both_ways_unchanged(pty: tuple[int, str]) -> None:
    guest, path = pty
    stream = virStream(None, VIR_STREAM_NONBLOCK)  # type: ignore[arg-type]
    open_console(stream, path, force=False)
    try:
        assert stream.recv(10) == -2  # nothing yet, and a non-blocking stream does not wait
        os.write(guest, b"login:\r\n\x1b[0m")
        assert _recv(stream, 100) == b"login:\r\n\x1b[0m"
        assert stream.send(b"root\n\x03") == 6
        time.sleep(0.1)
        assert os.read(guest, 100) == b"root\n\x03"  # raw: no echo back, no CR/LF or ^C handling
        assert stream.recv(10) == -2
    finally:
        assert stream.finish() == 0
    with pytest.raises(PyvirtError, match="stream is not open") as exc:
        stream.send(b"x")
    assert (exc.value.get_error_code(), exc.value.get_error_domain()) == (codes.VIR_ERR_INTERNAL_ERROR,
                                                                          codes.VIR_FROM_STREAMS)


def test_a_blocking_recv_waits_for_data(pty: tuple[int, str]) -> None:
    guest, path = pty
    stream = virStream(None, 0)  # type: ignore[arg-type]
    open_console(stream, path, force=False)
    threading.Timer(0.3, os.write, (guest, b"late")).start()
    started = time.monotonic()
    assert stream.recv(10) == b"late"
    assert time.monotonic() - started >= 0.25
    stream.abort()


def test_one_session_per_device_unless_forced(pty: tuple[int, str]) -> None:
    guest, path = pty
    first, second, third = (virStream(None, VIR_STREAM_NONBLOCK) for _ in range(3))  # type: ignore[arg-type]
    open_console(first, path, force=False)
    with pytest.raises(PyvirtError, match="Active console session exists") as exc:
        open_console(second, path, force=False)
    assert exc.value.get_error_code() == codes.VIR_ERR_OPERATION_FAILED
    with pytest.raises(PyvirtError, match="stream is not open"):
        second.recv(1)  # the refused stream was left unattached
    open_console(third, path, force=True)
    with pytest.raises(PyvirtError, match="stream is not open"):
        first.recv(1)  # taken over
    os.write(guest, b"to the new session")
    assert _recv(third, 100) == b"to the new session"
    third.finish()
    open_console(second, path, force=False)  # free again once the session ended
    with pytest.raises(PyvirtError, match="already in use"):
        open_console(second, path, force=True)
    second.abort()


def test_a_console_that_cannot_open_leaves_no_session(tmp_path: Any) -> None:
    stream = virStream(None, 0)  # type: ignore[arg-type]
    with pytest.raises(PyvirtError, match="cannot open console"):
        open_console(stream, str(tmp_path / "no-pty"), force=False)
    other = virStream(None, 0)  # type: ignore[arg-type]
    with pytest.raises(PyvirtError, match="cannot open console"):  # not "session exists"
        open_console(other, str(tmp_path / "no-pty"), force=False)


def test_callbacks_without_an_event_loop(pty: tuple[int, str]) -> None:
    guest, path = pty
    stream = virStream(None, VIR_STREAM_NONBLOCK)  # type: ignore[arg-type]
    open_console(stream, path, force=False)
    got: list[bytes] = []
    done = threading.Event()

    def readable(st: virStream, events: int, opaque: list[bytes]) -> None:
        assert st is stream and events & VIR_STREAM_EVENT_READABLE
        data = st.recv(100)
        if isinstance(data, bytes):
            opaque.append(data)
            if b"".join(opaque).endswith(b"!"):
                done.set()

    stream.eventAddCallback(VIR_STREAM_EVENT_READABLE, readable, got)
    with pytest.raises(PyvirtError, match="already has a callback"):
        stream.eventAddCallback(VIR_STREAM_EVENT_READABLE, readable, got)
    os.write(guest, b"hello, ")
    os.write(guest, b"callback!")
    assert done.wait(5)
    assert b"".join(got) == b"hello, callback!"
    stream.eventRemoveCallback()
    os.write(guest, b"unseen")
    time.sleep(0.3)
    assert b"".join(got) == b"hello, callback!"
    assert _recv(stream, 100) == b"unseen"
    stream.finish()


def test_unknown_stream_flags() -> None:
    with pytest.raises(PyvirtError, match="unsupported flags") as exc:
        virStream(None, 4)  # type: ignore[arg-type]
    assert exc.value.get_error_code() == codes.VIR_ERR_INVALID_ARG


def test_the_guest_side_closing_is_a_hangup() -> None:
    guest, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    stream = virStream(None, VIR_STREAM_NONBLOCK)  # type: ignore[arg-type]
    open_console(stream, path, force=False)
    events: list[int] = []
    stream.eventAddCallback(VIR_STREAM_EVENT_READABLE, lambda st, ev, op: events.append(ev), None)
    os.close(guest)  # QEMU exits
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert len(events) == 1 and events[0] & VIR_STREAM_EVENT_HANGUP  # once, not in a loop
    assert stream.recv(10) == b""  # the end of the stream
    stream.finish()
