# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers of the pyvirtd tests: pyvirtd as a real process on a private embed root, the private
libvirtd of tests/rpc as the oracle, and a raw-socket client for sending what well-behaved clients
never send."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyvirt.rpc import procedures
from pyvirt.rpc.protocol import (
    FrameDecoder,
    Header,
    Message,
    MessageType,
    Program,
    encode_message,
)
from pyvirt.rpc.xdr import REMOTE_ERROR

VIRSH = "/usr/bin/virsh"
SYSTEM_PYTHON = "/usr/bin/python3"
_START_TIMEOUT = 30.0


import libvirtd_oracle as rpc_conftest  # noqa: E402

Libvirtd = rpc_conftest.Libvirtd
free_port = rpc_conftest.free_port


@dataclass
class Pyvirtd:
    """A running pyvirtd process serving ``root``."""

    root: Path
    proc: subprocess.Popen[bytes]
    tcp_port: int | None
    stderr_path: Path

    @property
    def socket(self) -> str:
        return str(self.root / "run" / "libvirt-sock")

    @property
    def socket_ro(self) -> str:
        return str(self.root / "run" / "libvirt-sock-ro")

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "pyvirtd.pid"

    def uri(self, transport: str = "unix", *, readonly: bool = False) -> str:
        if transport == "tcp":
            return f"qemu+tcp://127.0.0.1:{self.tcp_port}/system"
        return f"qemu+unix:///system?socket={self.socket_ro if readonly else self.socket}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        return self.proc.returncode


def short_tmpdir(prefix: str = "pvd-") -> Path:
    """UNIX socket paths hold at most 107 bytes: keep roots short."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextlib.contextmanager
def own_pyvirtd(prefix: str = "pvd-", *, listen: bool = False) -> Iterator[Pyvirtd]:
    """A pyvirtd on a root of its own (a module's, apart from the shared session one); stopped
    afterwards, with any QEMU it left killed and its tree removed."""
    from lifecycle_support import kill_qemus

    parent = short_tmpdir(prefix)
    d = start_pyvirtd(parent / "r", listen=listen)
    try:
        yield d
    finally:
        d.stop()
        kill_qemus(str(parent))
        shutil.rmtree(parent, ignore_errors=True)


def pyvirtd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pyvirt.daemon.main", *args]


def start_pyvirtd(root: Path, *, config: str | None = None, listen: bool = False,
                  args: tuple[str, ...] = (), wait: bool = True,
                  env: dict[str, str] | None = None) -> Pyvirtd:
    """Start pyvirtd on ``root``; with ``listen``, TCP on a free 127.0.0.1 port, auth none.
    Returns once the pid file is there (the daemon's readiness signal)."""
    root.mkdir(parents=True, exist_ok=True)
    port = None
    argv = ["--root", str(root), *args]
    if listen:
        port = free_port()
        config = (config or "") + (f'listen_tcp = 1\nlisten_addr = "127.0.0.1"\n'
                                   f'tcp_port = "{port}"\nauth_tcp = "none"\n')
        argv.append("--listen")
    if config is not None:
        conf = root.parent / f"{root.name}-pyvirtd.conf"
        conf.write_text(config)
        argv += ["--config", str(conf)]
    stderr_path = root.parent / f"{root.name}-stderr.txt"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(pyvirtd_command(*argv), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr,
                                env={**os.environ, **(env or {})},
                                preexec_fn=rpc_conftest.die_with_parent)
    daemon = Pyvirtd(root, proc, port, stderr_path)
    if wait:
        try:
            wait_ready(daemon)
        except BaseException:
            daemon.stop(signal.SIGKILL)
            raise
    return daemon


def wait_ready(daemon: Pyvirtd, timeout: float = _START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.pid_file.exists() and daemon.pid_file.read_text().strip() == str(daemon.proc.pid):
            return
        if daemon.proc.poll() is not None:
            raise AssertionError(f"pyvirtd exited with {daemon.proc.returncode}:\n{daemon.stderr()}")
        time.sleep(0.02)
    raise AssertionError(f"pyvirtd not ready within {timeout} s:\n{daemon.stderr()}")


# ---- a raw client -------------------------------------------------------------------------

class Raw:
    """A blocking socket speaking frames by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.pending: list[Message] = []
        self.serial = 100

    @classmethod
    def unix(cls, path: str) -> Raw:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        return cls(s)

    @classmethod
    def tcp(cls, port: int) -> Raw:
        return cls(socket.create_connection(("127.0.0.1", port)))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, proc: int, payload: bytes = b"", *, prog: int = Program.REMOTE, vers: int = 1,
             type: int = MessageType.CALL, serial: int | None = None, status: int = 0) -> int:
        if serial is None:
            self.serial += 1
            serial = self.serial
        self.sock.sendall(encode_message(Header(prog, vers, proc, type, serial, status), payload))
        return serial

    def recv(self, timeout: float = 15.0) -> Message | None:
        """The next message; None on EOF; raises TimeoutError when nothing comes."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no message") from None
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def eof(self, timeout: float = 5.0) -> bool:
        """True when the peer closes (after any messages it still sends)."""
        try:
            while True:
                if self.recv(timeout) is None:
                    return True
        except TimeoutError:
            return False

    def call(self, proc_name: str, /, prog: int | None = None, **args: Any) -> Any:
        """Call by name; returns the decoded reply, or the decoded REMOTE_ERROR record."""
        proc = procedures.lookup(proc_name)
        payload = proc.args.encode(args or None)
        serial = self.send(proc.number, payload, prog=proc.program if prog is None else prog)
        msg = self.recv()
        # open() says the client supports keepalive (as virsh does), so a connection left silent
        # for keepalive_interval gets the daemon's PINGs first: a client lets them pass.
        while msg is not None and msg.header.prog == Program.KEEPALIVE:
            msg = self.recv()
        assert msg is not None, f"connection closed instead of answering {proc_name}"
        assert msg.header.serial == serial
        return decode_reply(msg)

    def open(self, name: str = "", flags: int = 0) -> None:
        assert self.call("AUTH_LIST").types == [0]
        assert self.call("CONNECT_SUPPORTS_FEATURE", feature=10).supported == 1
        result = self.call("CONNECT_OPEN", name=name, flags=flags)
        assert result is None, result


def ask(raw: Raw) -> Raw:
    """``raw``, having sent AUTH_LIST (to see with :func:`state` whether the daemon answers)."""
    raw.send(procedures.lookup("AUTH_LIST").number)
    return raw


def state(raw: Raw, timeout: float) -> Any:
    """What a client that sent AUTH_LIST sees within ``timeout``: the auth types, "waiting" (no
    answer, no hang-up: e.g. in the listen backlog of a daemon at its client limits), or
    "hung up"."""
    try:
        msg = raw.recv(timeout)
    except TimeoutError:
        return "waiting"
    return "hung up" if msg is None else list(decode_reply(msg).types)


def decode_reply(msg: Message) -> Any:
    if msg.header.status == 1:
        return REMOTE_ERROR.decode(msg.payload)
    proc = procedures.get(msg.header.prog, msg.header.proc)
    assert proc is not None
    return proc.ret.decode(msg.payload)


def error_fields(rec: Any) -> tuple[Any, ...]:
    """What a client sees of an error record."""
    return (rec.code, rec.domain, rec.message, rec.level, rec.str1, rec.str2, rec.str3,
            rec.int1, rec.int2)


def is_error(rec: Any) -> bool:
    return isinstance(rec, REMOTE_ERROR.cls)
