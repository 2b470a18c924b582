# SPDX-License-Identifier: LGPL-2.1-or-later
"""A real OpenSSH server for the qemu+ssh tests and benchmark: Debian's /usr/sbin/sshd on a free
127.0.0.1 port, with everything private to one directory.

* a throwaway host key, a throwaway authorised client key (and a second key that is *not*
  authorised), ``known_hosts`` holding the host key, and a second ``known_hosts`` holding another
  key for the same host (a host key mismatch);
* ``sshd_config``: no PAM, no passwords, root by key only, ``AuthorizedKeysFile`` and ``PidFile``
  in the directory, ``StrictModes no`` (the directory is under /tmp), and ``SetEnv PATH=...``
  putting this virtualenv's bin first, so that the remote shell finds ``pyvirt-ssh-helper`` (the
  same as installing pyvirt on a real host);
* sshd runs in the foreground (``-D -e``), logging to a file, and dies with the test process.

sshd needs its privilege separation directory /run/sshd (Debian's service creates it at start):
it is created if missing and left in place (empty), since another sshd may be using it.

virsh and python3-libvirt read no ``known_hosts=`` for qemu+ssh (libvirt 9.0 ignores it), so they
get ``command=`` naming :attr:`SSHServer.wrapper`: a script running the system ssh with
``-F /dev/null`` and this directory's known_hosts -- nothing is read from or written to root's
~/.ssh. pyvirt's client gets ``keyfile=`` and ``known_hosts=`` directly.
"""

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

import libvirtd_oracle

SSHD = "/usr/sbin/sshd"
_PRIVSEP_DIR = Path("/run/sshd")
_START_TIMEOUT = 15.0


@dataclass
class SSHServer:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def client_key(self) -> Path:
        return self.dir / "client_key"

    @property
    def stranger_key(self) -> Path:
        """A key sshd does not accept."""
        return self.dir / "stranger_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def wrong_known_hosts(self) -> Path:
        """Another host key for this server's address: ssh must refuse to connect."""
        return self.dir / "wrong_known_hosts"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    def wrapper(self, known_hosts: Path | None = None) -> Path:
        """An ssh for libvirt's command=: the system ssh with no user config and our known_hosts."""
        kh = known_hosts or self.known_hosts
        path = self.dir / f"ssh-{kh.name}"
        if not path.exists():
            path.write_text("#!/bin/sh\n"
                            f"exec /usr/bin/ssh -F /dev/null -o UserKnownHostsFile={kh} "
                            "-o GlobalKnownHostsFile=/dev/null \"$@\"\n")
            path.chmod(0o755)
        return path

    def uri(self, socket_path: str | None = None, *, key: Path | None = None,
            known_hosts: Path | None = None, extra: str = "", path: str = "system") -> str:
        """A qemu+ssh URI for pyvirt's client (keyfile= and known_hosts= as parameters)."""
        params = [f"keyfile={key or self.client_key}",
                  f"known_hosts={known_hosts or self.known_hosts}", "no_tty=1"]
        if socket_path is not None:
            params.append(f"socket={socket_path}")
        if extra:
            params.append(extra)
        return f"qemu+ssh://root@127.0.0.1:{self.port}/{path}?{'&'.join(params)}"

    def libvirt_uri(self, socket_path: str | None = None, *, key: Path | None = None,
                    known_hosts: Path | None = None, extra: str = "") -> str:
        """The same for libvirt's clients (the known_hosts file through command=)."""
        params = [f"keyfile={key or self.client_key}", "no_tty=1",
                  f"command={self.wrapper(known_hosts)}"]
        if socket_path is not None:
            params.append(f"socket={socket_path}")
        if extra:
            params.append(extra)
        return f"qemu+ssh://root@127.0.0.1:{self.port}/system?{'&'.join(params)}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_sshd(prefix: str = "pvssh-") -> SSHServer:
    if not os.path.exists(SSHD):
        raise RuntimeError("OpenSSH's sshd is missing: run scripts/setup.sh --test")
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        _keygen(work / "host_key", "pyvirt-test-host")
        _keygen(work / "other_host_key", "pyvirt-test-other-host")
        _keygen(work / "client_key", "pyvirt-test-client")
        _keygen(work / "stranger_key", "pyvirt-test-stranger")
        (work / "authorized_keys").write_text((work / "client_key.pub").read_text())
        port = libvirtd_oracle.free_port()
        host = f"[127.0.0.1]:{port}"
        (work / "known_hosts").write_text(f"{host} {(work / 'host_key.pub').read_text()}")
        (work / "wrong_known_hosts").write_text(f"{host} {(work / 'other_host_key.pub').read_text()}")
        venv_bin = Path(sys.executable).parent
        (work / "sshd_config").write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {work / 'host_key'}\n"
            f"PidFile {work / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {work / 'authorized_keys'}\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "StrictModes no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "MaxStartups 100\n"
            f"SetEnv PATH={venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
        if not _PRIVSEP_DIR.is_dir():
            _PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        with open(work / "sshd.log", "wb") as log:
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(work / "sshd_config")],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    preexec_fn=libvirtd_oracle.die_with_parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    server = SSHServer(work, port, proc)
    deadline = time.monotonic() + _START_TIMEOUT
    while not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            text = server.log.read_text(errors="replace")
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(f"sshd did not start on port {port}:\n{text}")
        time.sleep(0.02)
    return server


@contextlib.contextmanager
def running_sshd(prefix: str = "pvssh-") -> Iterator[SSHServer]:
    server = start_sshd(prefix)
    try:
        yield server
    finally:
        server.stop()
        # sessions still open (a client that did not close) end with their sshd
        for pid in ssh_processes(str(server.dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(server.dir, ignore_errors=True)


def ssh_processes(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (the server's directory is in every key
    and known_hosts path a client gets): ssh clients that outlived their connection."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"sshd" not in cmdline.split(b"\0")[0]:
            found.append(int(entry))
    return found
