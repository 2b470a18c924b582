# SPDX-License-Identifier: LGPL-2.1-or-later
"""The storage procedures of pyvirtd, with real clients: virsh 9.0 runs the pool-*/vol-* sequence
of tests/storage_steps.py against pyvirtd and against a private libvirtd with its storage driver
(the outputs must be equal), Debian's libvirt-python uploads and downloads through a volume stream,
and pyvirt's own remote client does the same over RemoteStorageMethods."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import pyvirt
from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

from .testlib import Pyvirtd, own_pyvirtd, short_tmpdir

pytestmark = pytest.mark.oracle

VIRSH = "/usr/bin/virsh"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Pyvirtd]:
    with own_pyvirtd("pvs-") as d:
        yield d


@pytest.fixture
def workdir() -> Iterator[Path]:
    parent = short_tmpdir("pvsw-")
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def test_virsh_pool_and_volume_commands_match_libvirtd(workdir: Path) -> None:
    from storage_oracle import start_storage_libvirtd
    from storage_steps import compare, run_all

    work = workdir / "w"
    work.mkdir()
    libvirtd = start_storage_libvirtd()
    try:
        theirs = run_all(VIRSH, libvirtd.uri(), work)
    finally:
        libvirtd.stop()
    shutil.rmtree(work)
    work.mkdir()
    with own_pyvirtd("pvs-") as d:  # a fresh root: no pool of another test
        ours = run_all(VIRSH, d.uri(), work)
    differ = compare(ours, theirs)
    assert not differ, "\n".join(differ)
    assert (work / "down").read_bytes() == bytes(range(256)) * 40  # uploaded, then downloaded


_PYTHON_CLIENT = r"""
import json, os, sys, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open(sys.argv[1])
path = sys.argv[2]
out = {}
pool = conn.storagePoolCreateXML(
    "<pool type='dir'><name>py</name><target><path>%s</path></target></pool>" % path, 0)
vol = pool.createXML("<volume><name>v.img</name><capacity unit='M'>1</capacity></volume>", 0)
payload = bytes(range(251)) * 400
st = conn.newStream(0)
vol.upload(st, 512, len(payload), 0)
chunks = [payload[i:i + 65536] for i in range(0, len(payload), 65536)]
st.sendAll(lambda s, n, o: o.pop(0) if o else b"", chunks)
st.finish()
st = conn.newStream(0)
vol.download(st, 512, len(payload), 0)
got = []
st.recvAll(lambda s, d, o: o.append(d), got)
st.finish()
out["roundtrip"] = b"".join(got) == payload
out["info"] = vol.info()
out["pool"] = [p.name() for p in conn.listAllStoragePools(0)]
out["by_path"] = conn.storageVolLookupByPath(vol.path()).name()
try:
    pool.createXML("<volume><name>../x</name><capacity>1</capacity></volume>", 0)
except libvirt.libvirtError as e:
    out["evil"] = [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
vol.delete(0)
pool.destroy()
out["after"] = conn.listStoragePools()
print(json.dumps(out))
"""


def test_libvirt_python_streams_volumes_through_pyvirtd(daemon: Pyvirtd, workdir: Path) -> None:
    pool_dir = workdir / "pool"
    pool_dir.mkdir()
    run = subprocess.run([SYSTEM_PYTHON, "-c", _PYTHON_CLIENT, daemon.uri(), str(pool_dir)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    import json

    out = json.loads(run.stdout)
    assert out["roundtrip"] is True
    assert out["info"] == [0, 1024 * 1024, 1024 * 1024]
    assert out["pool"] == ["py"] and out["by_path"] == "v.img"
    assert out["evil"] == [codes.VIR_ERR_OPERATION_INVALID, codes.VIR_FROM_STORAGE,
                           "Requested operation is not valid: volume name '../x' cannot contain '/'"]
    assert out["after"] == []
    assert list(pool_dir.iterdir()) == []


def test_pyvirt_remote_client_storage(daemon: Pyvirtd, workdir: Path) -> None:
    pool_dir = workdir / "pool"
    conn = pyvirt.open(daemon.uri())
    try:
        pool = conn.storagePoolDefineXML(f"<pool type='dir'><name>rc</name><target><path>{pool_dir}</path>"
                                         "</target></pool>", 0)
        pool.build(0)
        pool.create(0)
        assert (pool.isActive(), pool.isPersistent(), pool.info()[0]) == (1, 1, 2)
        assert conn.storagePoolLookupByUUIDString(pool.UUIDString()).name() == "rc"
        base = pool.createXML("<volume><name>b.qcow2</name><capacity unit='M'>4</capacity><target>"
                              "<format type='qcow2'/></target></volume>", 0)
        top = pool.createXML("<volume><name>t.qcow2</name><capacity unit='M'>4</capacity><target>"
                             f"<format type='qcow2'/></target><backingStore><path>{base.path()}</path>"
                             "</backingStore></volume>", 0)
        clone = pool.createXMLFrom("<volume><name>c.qcow2</name><capacity>1</capacity><target>"
                                   "<format type='qcow2'/></target></volume>", top, 0)
        assert sorted(pool.listVolumes()) == ["b.qcow2", "c.qcow2", "t.qcow2"]
        assert "<backingStore>" in top.XMLDesc(0) and "<backingStore>" not in clone.XMLDesc(0)
        raw = pool.createXML("<volume><name>r.img</name><capacity unit='K'>64</capacity></volume>", 0)
        data = os.urandom(10_000)
        st = conn.newStream(0)
        raw.upload(st, 100, len(data), 0)
        st.send(data)
        st.finish()
        assert (pool_dir / "r.img").read_bytes()[100:100 + len(data)] == data
        st = conn.newStream(0)
        raw.download(st, 100, len(data), 0)
        got = b""
        while chunk := st.recv(65536):
            assert isinstance(chunk, bytes)
            got += chunk
        st.finish()
        assert got == data
        with pytest.raises(PyvirtError) as exc:
            raw.resize(1024, 0)
        assert exc.value.get_error_code() == codes.VIR_ERR_INVALID_ARG
        assert (pool_dir / "r.img").stat().st_size == 64 * 1024
        with pytest.raises(PyvirtError) as exc:
            conn.storageVolLookupByPath("/nope")
        assert (exc.value.get_error_code(), exc.value.get_error_domain()) == (codes.VIR_ERR_NO_STORAGE_VOL,
                                                                              codes.VIR_FROM_STORAGE)
        for vol in pool.listAllVolumes(0):
            vol.delete(0)
        pool.destroy()
        pool.delete(0)
        pool.undefine()
        assert conn.listAllStoragePools(0) == [] and not pool_dir.exists()
    finally:
        conn.close()


def test_read_only_clients_are_refused_changes(daemon: Pyvirtd, workdir: Path) -> None:
    out = subprocess.run([VIRSH, "-r", "-c", daemon.uri(), "pool-define-as", "ro", "dir", "--target",
                          str(workdir / "p")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "read only access prevents virStoragePoolDefineXML" in out.stderr
    listed = subprocess.run([VIRSH, "-r", "-c", daemon.uri(), "pool-list", "--all"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0 and " ro " not in listed.stdout
