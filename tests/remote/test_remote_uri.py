# SPDX-License-Identifier: LGPL-2.1-or-later
"""Which URIs pyvirt.open() sends to its remote client, and where they lead: the default sockets
(pyvirtd's own, libvirt's with mode=legacy), socket= honoured, transports not supported yet refused
with a pointer to qemu+tcp, and an unreachable server named in the error."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon.testlib import pyvirtd_command, short_tmpdir

from pyvirt import _errcodes as codes
from pyvirt.connection import open as open_connection
from pyvirt.connection import openReadOnly, virConnect
from pyvirt.errors import PyvirtError
from pyvirt.remote import RemoteConnect, socket_path
from pyvirt.uri import parse_uri


def test_default_sockets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYVIRT_PREFIX", str(tmp_path))
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    sys_sock = str(tmp_path / "run" / "pyvirt" / "libvirt-sock")
    cases = {
        ("qemu+unix:///system", False): sys_sock,
        ("qemu+unix:///system", True): sys_sock + "-ro",
        ("qemu+unix:///system?mode=direct", True): sys_sock + "-ro",
        ("qemu+unix:///system?mode=legacy", False): "/run/libvirt/libvirt-sock",
        ("qemu+unix:///system?mode=legacy", True): "/run/libvirt/libvirt-sock-ro",
        ("qemu+unix:///session", False): "/run/user/4242/pyvirt/libvirt-sock",
        ("qemu+unix:///session", True): "/run/user/4242/pyvirt/libvirt-sock",
        ("qemu+unix:///session?mode=legacy", False): "/run/user/4242/libvirt/libvirt-sock",
        ("qemu+unix:///system?socket=/x/y&mode=legacy", True): "/x/y",
    }
    got = {key: socket_path(parse_uri(key[0]), key[1]) for key in cases}
    assert got == cases


@pytest.mark.parametrize("uri", ["qemu://example.org/system?pkipath=PKI",
                                 "qemu+tls://example.org:16514/system?pkipath=PKI"])
def test_tls_without_ca_names_the_file(uri: str, tmp_path: Path) -> None:
    """qemu://HOST is TLS; without the CA certificate nothing is sent anywhere, and libvirt's
    error names the file (tests/remote/test_tls.py has the TLS connections themselves)."""
    with pytest.raises(PyvirtError) as info:
        open_connection(uri.replace("PKI", str(tmp_path)))
    assert (info.value.code, info.value.domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
    assert info.value.message == (f"Cannot read CA certificate '{tmp_path}/cacert.pem': "
                                  "No such file or directory")


def test_unreachable_servers_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nosuch-sock"
    with pytest.raises(PyvirtError) as info:
        open_connection(f"qemu+unix:///system?socket={missing}")
    assert (info.value.code, info.value.domain) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_RPC)
    assert info.value.message == f"Failed to connect socket to '{missing}': No such file or directory"
    from daemon.testlib import free_port

    port = free_port()
    with pytest.raises(PyvirtError) as info:
        openReadOnly(f"qemu+tcp://127.0.0.1:{port}/system")
    assert info.value.message == f"unable to connect to server at '127.0.0.1:{port}': Connection refused"


def test_local_uris_stay_in_process(embed_root: Path) -> None:
    conn = open_connection(f"qemu:///embed?root={embed_root}")
    try:
        assert type(conn) is virConnect
    finally:
        conn.close()


@pytest.fixture
def prefix() -> Iterator[Path]:
    path = short_tmpdir("pvrp-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _system_pyvirtd(prefix: Path) -> Iterator[Path]:
    """pyvirtd without --root: the system instance below $PYVIRT_PREFIX (a cold capability cache)."""
    env = {**os.environ, "PYVIRT_PREFIX": str(prefix)}
    stderr = prefix / "stderr.txt"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(pyvirtd_command(), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        sock = prefix / "run" / "pyvirt" / "libvirt-sock"
        deadline = time.monotonic() + 30
        while not (sock.exists() and (prefix / "run" / "pyvirt" / "pyvirtd.pid").exists()):
            assert proc.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_system_uri_reaches_pyvirtds_own_socket(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyvirtd without --root serves qemu:///system at pyvirt's run directory (below
    $PYVIRT_PREFIX); qemu+unix:///system with no socket= finds it, read-write and read-only."""
    with _system_pyvirtd(prefix) as sock:
        monkeypatch.setenv("PYVIRT_PREFIX", str(prefix))
        conn = open_connection("qemu+unix:///system")
        ro = openReadOnly("qemu+unix:///system")
        try:
            assert isinstance(conn, RemoteConnect) and isinstance(ro, RemoteConnect)
            assert conn.peer == str(sock) and ro.peer == str(sock) + "-ro"
            assert conn.getURI() == "qemu+unix:///system" and conn.getType() == "QEMU"
            assert conn.listDomainsID() == [] and ro.numOfDomains() == 0
            with pytest.raises(PyvirtError) as info:
                ro.defineXML("<domain type='qemu'><name>x</name></domain>")
            assert info.value.code == codes.VIR_ERR_OPERATION_DENIED
        finally:
            conn.close()
            ro.close()


def test_system_pyvirtd_lists_domains_with_a_cold_cache(prefix: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first listing makes the system daemon probe QEMU (its capability cache is cold): the
    probe must not run on the daemon's event loop."""
    with _system_pyvirtd(prefix):
        monkeypatch.setenv("PYVIRT_PREFIX", str(prefix))
        conn = open_connection("qemu+unix:///system")
        try:
            assert conn.listAllDomains() == [] and conn.listDefinedDomains() == []
        finally:
            conn.close()


def test_plain_system_uri_goes_through_a_running_system_pyvirtd(prefix: Path) -> None:
    """qemu:///system reaches the system pyvirtd while one runs (that daemon holds the instance),
    read-write and read-only; once it has stopped, a root process drives the instance itself.
    Each side runs in a process of its own, as the driver registry is per process."""
    script = ("import pyvirt, sys\n"
              "c = pyvirt.openReadOnly('qemu:///system') if sys.argv[1] == 'ro' else "
              "pyvirt.open('qemu:///system')\n"
              "print(type(c).__name__, c.getURI(), sorted(c.listDefinedDomains()))\n"
              "c.close()\n")
    env = {**os.environ, "PYVIRT_PREFIX": str(prefix)}

    def run(mode: str) -> str:
        proc = subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    with _system_pyvirtd(prefix) as sock:
        conn = open_connection(f"qemu+unix:///system?socket={sock}")
        try:
            conn.defineXML("<domain type='qemu'><name>via-daemon</name><memory>65536</memory>"
                           "<os><type>hvm</type></os></domain>")
        finally:
            conn.close()
        assert run("rw") == "RemoteConnect qemu:///system ['via-daemon']"
        assert run("ro") == "RemoteConnect qemu:///system ['via-daemon']"
    assert run("rw") == "virConnect qemu:///system ['via-daemon']"
