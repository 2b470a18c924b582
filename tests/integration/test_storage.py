# SPDX-License-Identifier: LGPL-2.1-or-later
"""The embedded storage driver through the API and pyvirsh: real directories, real images made by
qemu-img (their sizes checked with ``qemu-img info``), real secrets for LUKS, real domain
definitions for the in-use check. Nothing is mocked; a wrapper in front of qemu-img only records
the command lines it is given (to show that no passphrase is among them) and runs the real one."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyvirt import _errcodes as codes
from pyvirt.connection import open as open_conn
from pyvirt.connection import openReadOnly, virConnect
from pyvirt.errors import PyvirtError
from pyvirt.storage.api import virStoragePool

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
MiB = 1024 * 1024


@pytest.fixture
def conn(root: Path) -> Iterator[virConnect]:
    c = open_conn(f"qemu:///embed?root={root}")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def pool_dir(root: Path) -> Path:
    return root.parent / "pool"


def pool_xml(path: Path, name: str = "p", uuid: str | None = None) -> str:
    u = f"<uuid>{uuid}</uuid>" if uuid else ""
    return f"<pool type='dir'><name>{name}</name>{u}<target><path>{path}</path></target></pool>"


def vol_xml(name: str, capacity: str = "8M", fmt: str = "raw", extra: str = "", target: str = "") -> str:
    num, unit = capacity[:-1], capacity[-1]
    return (f"<volume><name>{name}</name><capacity unit='{unit}'>{num}</capacity>"
            f"<target><format type='{fmt}'/>{target}</target>{extra}</volume>")


@pytest.fixture
def pool(conn: virConnect, pool_dir: Path) -> virStoragePool:
    p = conn.storagePoolDefineXML(pool_xml(pool_dir))
    p.build()
    p.create()
    return p


def error_of(call: Callable[..., object], *args: object) -> tuple[int, int, str]:
    with pytest.raises(PyvirtError) as exc:
        call(*args)
    return exc.value.get_error_code(), exc.value.get_error_domain(), str(exc.value)


def qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def pyvirsh(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYVIRSH, "-c", f"qemu:///embed?root={root}", *args], capture_output=True,
                          text=True, timeout=120)


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# ---- pools ------------------------------------------------------------------------------------------

def test_pool_lifecycle_keeps_libvirts_layout_and_survives_the_process(root: Path, pool_dir: Path) -> None:
    conn = open_conn(f"qemu:///embed?root={root}")
    p = conn.storagePoolDefineXML(pool_xml(pool_dir))
    config = root / "etc" / "storage" / "p.xml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert "<path>" + str(pool_dir) + "</path>" in config.read_text()
    assert (p.isActive(), p.isPersistent(), p.info()[0]) == (0, 1, 0)
    code, dom, msg = error_of(p.create)
    assert (code, dom) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_STORAGE)
    assert msg == f"cannot open directory '{pool_dir}': No such file or directory"
    p.build()
    assert stat.S_IMODE(pool_dir.stat().st_mode) == 0o711  # libvirt's default for a pool it builds
    p.create()
    assert (root / "run" / "storage" / "p.xml").exists()
    p.setAutostart(1)
    link = root / "etc" / "storage" / "autostart" / "p.xml"
    assert link.is_symlink() and os.readlink(link) == str(config)
    # another process sees the pool active, and its autostart mark
    conn.close()
    out = pyvirsh(root, "pool-list", "--all", "--details")
    assert out.returncode == 0, out.stderr
    assert " p " in out.stdout and "running" in out.stdout and " yes " in out.stdout
    conn = open_conn(f"qemu:///embed?root={root}")
    p = conn.storagePoolLookupByName("p")
    code, _, msg = error_of(p.undefine)
    assert (code, msg) == (codes.VIR_ERR_OPERATION_INVALID,
                           "Requested operation is not valid: storage pool 'p' is still active")
    p.destroy()
    assert not (root / "run" / "storage" / "p.xml").exists()
    p.delete()
    assert not pool_dir.exists()
    p.undefine()
    assert not config.exists() and not os.path.lexists(link)
    assert conn.listAllStoragePools() == []
    conn.close()


def test_autostart_runs_once_per_boot(root: Path, pool_dir: Path) -> None:
    uri = f"qemu:///embed?root={root}"
    c = open_conn(uri)
    p = c.storagePoolDefineXML(pool_xml(pool_dir))
    p.build()
    p.setAutostart(1)
    c.close()
    # the first open already ran this boot's autostart (before the mark): a new process leaves it off
    assert "inactive" in pyvirsh(root, "pool-list", "--all").stdout
    (root / "run" / "storage" / "autostarted").unlink()  # as after a reboot (RUN is a tmpfs)
    out = pyvirsh(root, "pool-list", "--all")
    assert " p      active   yes" in out.stdout, out.stdout


def test_list_filters_lookups_and_transient_pools(conn: virConnect, pool_dir: Path, root: Path) -> None:
    defined = conn.storagePoolDefineXML(pool_xml(pool_dir, "def", "11111111-2222-3333-4444-555555555555"))
    pool_dir.mkdir()
    other = root.parent / "other"
    other.mkdir()
    transient = conn.storagePoolCreateXML(pool_xml(other, "tra"), 0)
    assert (transient.isActive(), transient.isPersistent()) == (1, 0)
    names = lambda flags: [p.name() for p in conn.listAllStoragePools(flags)]  # noqa: E731
    assert names(0) == ["def", "tra"]
    assert names(1) == ["def"] and names(2) == ["tra"]   # inactive / active
    assert names(4) == ["def"] and names(8) == ["tra"]   # persistent / transient
    assert names(64) == ["def", "tra"] and names(128) == []  # type dir / type fs
    assert conn.listStoragePools() == ["tra"] and conn.listDefinedStoragePools() == ["def"]
    assert (conn.numOfStoragePools(), conn.numOfDefinedStoragePools()) == (1, 1)
    assert conn.storagePoolLookupByUUIDString(defined.UUIDString()).name() == "def"
    assert conn.storagePoolLookupByUUID(defined.UUID()).name() == "def"
    assert error_of(conn.storagePoolLookupByName, "nope") == (
        codes.VIR_ERR_NO_STORAGE_POOL, codes.VIR_FROM_STORAGE,
        "Storage pool not found: no storage pool with matching name 'nope'")
    assert error_of(conn.storagePoolLookupByUUIDString, "zz")[0] == codes.VIR_ERR_INVALID_ARG
    code, _, msg = error_of(transient.setAutostart, 1)
    assert code == codes.VIR_ERR_OPERATION_INVALID
    transient.destroy()  # a transient pool is gone once stopped
    assert names(0) == ["def"] and other.is_dir()
    with pytest.raises(PyvirtError):
        conn.storagePoolCreateXML(pool_xml(pool_dir, "def2", defined.UUIDString()), 0)
    assert names(0) == ["def"]


def test_bad_pool_input_is_refused_and_leaves_nothing(conn: virConnect, root: Path, pool_dir: Path) -> None:
    conn.storagePoolDefineXML(pool_xml(pool_dir, "p", "11111111-2222-3333-4444-555555555555"))
    before = tree(root / "etc")
    XML, FAILED = codes.VIR_ERR_XML_ERROR, codes.VIR_ERR_OPERATION_FAILED  # noqa: N806
    cases = {
        "<pool type='dir'><name>x</name>": codes.VIR_ERR_XML_DETAIL,
        "<pool type='dir'><name>a/b</name><target><path>/tmp/q</path></target></pool>": XML,
        "<pool type='nope'><name>x</name><target><path>/tmp/q</path></target></pool>": XML,
        "<pool type='dir'><name>x</name></pool>": codes.VIR_ERR_XML_ERROR,
        "<pool type='dir'><name>x</name><uuid>zz</uuid><target><path>/q</path></target></pool>":
            codes.VIR_ERR_XML_ERROR,
        "<pool type='dir'><name>x</name><target><path>/q</path><permissions><mode>0999</mode>"
        "</permissions></target></pool>": codes.VIR_ERR_XML_ERROR,
        "<pool type='fs'><name>x</name><target><path>/q</path></target></pool>": codes.VIR_ERR_XML_ERROR,
        "<volume/>": codes.VIR_ERR_XML_ERROR,
        # duplicates: same name with another UUID, same UUID with another name, same directory
        pool_xml(Path("/tmp/q"), "p"): codes.VIR_ERR_OPERATION_FAILED,
        pool_xml(Path("/tmp/q"), "p2", "11111111-2222-3333-4444-555555555555"): FAILED,
        pool_xml(pool_dir, "p3"): codes.VIR_ERR_OPERATION_FAILED,
    }
    for xml, code in cases.items():
        got = error_of(conn.storagePoolDefineXML, xml)
        assert got[:2] == (code, codes.VIR_FROM_STORAGE), (xml, got)
    assert error_of(conn.storagePoolDefineXML, "<pool type='dir'><name>a/b</name><target><path>/tmp/q</path>"
                    "</target></pool>")[2] == "XML error: name a/b cannot contain '/'"
    assert tree(root / "etc") == before
    assert [p.name() for p in conn.listAllStoragePools()] == ["p"]


def test_a_pool_path_that_is_a_file_is_refused_and_the_file_kept(conn: virConnect, pool_dir: Path) -> None:
    pool_dir.write_bytes(b"precious")
    p = conn.storagePoolDefineXML(pool_xml(pool_dir))
    code, dom, msg = error_of(p.build)
    assert (code, dom) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_STORAGE)
    assert f"cannot create directory '{pool_dir}': the path exists and is not a directory" in msg
    assert error_of(p.create)[2] == f"cannot open directory '{pool_dir}': Not a directory"
    assert pool_dir.read_bytes() == b"precious" and p.isActive() == 0


def test_fs_logical_and_netfs_pools_refuse_what_they_cannot_do(conn: virConnect) -> None:
    """fs and logical pools on real devices: tests/integration/test_storage_pools_fs_logical.py."""
    fs = conn.storagePoolDefineXML("<pool type='fs'><name>f</name><source><device path='/dev/loop99x'/>"
                                   "</source><target><path>/tmp/pyvirt-nowhere</path></target></pool>")
    assert "<format type='auto'/>" in fs.XMLDesc()
    lvm = conn.storagePoolDefineXML("<pool type='logical'><name>vg0pyvirtnone</name><target><path>/x</path>"
                                    "</target></pool>")
    xml = lvm.XMLDesc()
    assert "<name>vg0pyvirtnone</name>\n    <format type='lvm2'/>" in xml
    assert "<path>/dev/vg0pyvirtnone</path>" in xml
    code, _, msg = error_of(fs.build, 4)  # NO_OVERWRITE: mkfs on a device that does not exist
    assert code == codes.VIR_ERR_OPERATION_INVALID
    assert msg == "Requested operation is not valid: Source device does not exist when formatting pool 'f'"
    code, _, msg = error_of(fs.create)
    assert code == codes.VIR_ERR_OPERATION_INVALID and "'/dev/loop99x'" in msg
    if shutil.which("pvs", path="/usr/sbin:/sbin"):
        code, _, msg = error_of(lvm.create)
        assert code == codes.VIR_ERR_CONFIG_UNSUPPORTED
        assert msg == "unsupported configuration: cannot find logical volume group name 'vg0pyvirtnone'"
    assert not os.path.exists("/tmp/pyvirt-nowhere")
    netfs = conn.storagePoolDefineXML("<pool type='netfs'><name>n</name><source><host name='h'/>"
                                      "<dir path='/e'/></source><target><path>/tmp/pyvirt-nowhere</path>"
                                      "</target></pool>")
    for call in (netfs.build, netfs.create):
        code, dom, msg = error_of(call)
        assert (code, dom) == (codes.VIR_ERR_NO_SUPPORT, codes.VIR_FROM_STORAGE)
        assert "mounting a network file system" in msg and "use a pool of type 'dir'" in msg
    assert not os.path.exists("/tmp/pyvirt-nowhere")


def test_read_only_connections_look_but_change_nothing(conn: virConnect, root: Path, pool_dir: Path,
                                                       pool: object) -> None:
    ro = openReadOnly(f"qemu:///embed?root={root}")
    try:
        p = ro.storagePoolLookupByName("p")
        assert p.info()[0] == 2
        code, dom, msg = error_of(ro.storagePoolDefineXML, pool_xml(pool_dir, "q"))
        assert (code, dom) == (codes.VIR_ERR_OPERATION_DENIED, codes.VIR_FROM_STORAGE)
        assert msg == "operation forbidden: read only access prevents virStoragePoolDefineXML"
        assert error_of(p.createXML, vol_xml("a"))[0] == codes.VIR_ERR_OPERATION_DENIED
        assert error_of(p.destroy)[0] == codes.VIR_ERR_OPERATION_DENIED
    finally:
        ro.close()
    assert list(pool_dir.iterdir()) == []


# ---- volumes ---------------------------------------------------------------------------------------

def test_volume_sizes_and_formats_come_from_the_files(pool: virStoragePool,
                                                      pool_dir: Path) -> None:
    raw = pool.createXML(vol_xml("a.img", "10M"))
    sparse = pool.createXML(vol_xml("s.img", "10M", extra="<allocation>0</allocation>"))
    base = pool.createXML(vol_xml("b.qcow2", "20M", "qcow2"))
    top = pool.createXML(vol_xml("c.qcow2", "30M", "qcow2", target="<compat>1.1</compat><features>"
                                 "<lazy_refcounts/></features>",
                                 extra=f"<backingStore><path>{pool_dir}/b.qcow2</path></backingStore>"))
    for vol in (raw, sparse, base, top):
        path = Path(vol.path())
        info = qemu_img_info(path)
        st = path.stat()
        kind, capacity, allocation = vol.info()
        assert (kind, capacity, allocation) == (0, info["virtual-size"], st.st_blocks * 512), vol.name()
        assert f"<format type='{info['format']}'/>" in vol.XMLDesc()
        assert stat.S_IMODE(st.st_mode) == 0o600
    assert raw.info()[2] == 10 * MiB and sparse.info()[2] == 0  # preallocated unless told otherwise
    top_info = qemu_img_info(pool_dir / "c.qcow2")
    assert top_info["backing-filename"] == f"{pool_dir}/b.qcow2"
    assert top_info["backing-filename-format"] == "qcow2"  # probed from the backing file
    assert top_info["format-specific"]["data"]["lazy-refcounts"] is True  # type: ignore[index]
    xml = top.XMLDesc()
    assert "<compat>1.1</compat>" in xml and "<lazy_refcounts/>" in xml
    assert f"<backingStore>\n    <path>{pool_dir}/b.qcow2</path>\n    <format type='qcow2'/>" in xml
    assert "<compat>" not in base.XMLDesc()  # libvirt makes qcow2 v2 (compat 0.10) by default
    assert pool.listVolumes() == ["a.img", "b.qcow2", "c.qcow2", "s.img"]
    assert pool.numOfVolumes() == 4
    conn = pool.connect()
    assert conn.storageVolLookupByPath(str(pool_dir / "a.img")).name() == "a.img"
    assert conn.storageVolLookupByKey(str(pool_dir / "a.img")).name() == "a.img"
    assert raw.storagePoolLookupByVolume().name() == "p"
    # a file put there by hand is a volume at once
    (pool_dir / "hand.img").write_bytes(b"x" * 4096)
    assert pool.storageVolLookupByName("hand.img").info()[1] == 4096


def test_clone_of_a_qcow2_with_backing_is_a_whole_copy(pool: virStoragePool,
                                                       pool_dir: Path) -> None:
    conn = pool.connect()
    base = pool.createXML(vol_xml("base.img", "4M"))
    stream = conn.newStream(0)
    base.upload(stream, MiB, 0, 0)
    stream.send(b"data in the base image" * 100)
    stream.finish()
    top = pool.createXML(vol_xml("top.qcow2", "4M", "qcow2", extra=f"<backingStore><path>{pool_dir}/base.img"
                                 "</path><format type='raw'/></backingStore>"))
    clone = pool.createXMLFrom(vol_xml("clone.qcow2", "4M", "qcow2"), top, 0)
    info = qemu_img_info(pool_dir / "clone.qcow2")
    assert info["format"] == "qcow2" and "backing-filename" not in info
    same = subprocess.run(["qemu-img", "compare", "-U", str(pool_dir / "top.qcow2"),
                           str(pool_dir / "clone.qcow2")], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    assert clone.info()[1] == 4 * MiB
    raw_copy = pool.createXMLFrom(vol_xml("copy.img", "8M"), base, 0)
    data = (pool_dir / "copy.img").read_bytes()
    assert len(data) == 8 * MiB and data[:4 * MiB] == (pool_dir / "base.img").read_bytes()
    assert raw_copy.name() == "copy.img"


def test_bad_volume_input_is_refused_and_leaves_nothing(pool: virStoragePool,
                                                        pool_dir: Path) -> None:
    pool.createXML(vol_xml("a.img", "1M"))
    before = tree(pool_dir.parent)
    cases = [
        (vol_xml("../x"), codes.VIR_ERR_OPERATION_INVALID, "volume name '../x' cannot contain '/'"),
        (vol_xml(".."), codes.VIR_ERR_OPERATION_INVALID, "volume name '..' is not a file name"),
        (vol_xml("a.img"), codes.VIR_ERR_STORAGE_VOL_EXIST, "storage volume 'a.img' exists already"),
        ("<volume><name>z</name><capacity>12abc</capacity></volume>", codes.VIR_ERR_XML_ERROR,
         "malformed capacity element"),
        ("<volume><name>z</name><capacity unit='Q'>1</capacity></volume>", codes.VIR_ERR_INVALID_ARG,
         "unknown suffix 'Q'"),
        ("<volume><name>z</name></volume>", codes.VIR_ERR_XML_ERROR, "missing capacity element"),
        ("<volume><capacity>1</capacity></volume>", codes.VIR_ERR_XML_ERROR, "missing volume name element"),
        ("<volume><name>z</name><capacity>1</capacity>", codes.VIR_ERR_XML_DETAIL,
         "storage_volume_definition"),
        (vol_xml("z", fmt="nope"), codes.VIR_ERR_CONFIG_UNSUPPORTED, "unknown volume format type nope"),
        (vol_xml("z", fmt="qcow2", extra="<backingStore><path>/nonexistent</path></backingStore>"),
         codes.VIR_ERR_SYSTEM_ERROR, "inaccessible backing store volume /nonexistent"),
        (vol_xml("z", fmt="qcow2", target="<encryption format='luks'/>"), codes.VIR_ERR_XML_ERROR,
         "missing encryption secret"),
        (vol_xml("z", fmt="qcow2", target="<encryption format='luks'><secret type='passphrase' "
                 "uuid='99999999-2222-3333-4444-555555555555'/></encryption>"), codes.VIR_ERR_NO_SECRET,
         "Secret not found"),
    ]
    for xml, code, text in cases:
        got = error_of(pool.createXML, xml)
        assert got[0] == code and text in got[2], (xml, got)
    assert tree(pool_dir.parent) == before
    assert not (pool_dir.parent / "x").exists()


def test_resize_wipe_and_delete_touch_data_only_when_asked(pool: virStoragePool,
                                                           pool_dir: Path) -> None:
    vol = pool.createXML(vol_xml("a.img", "8M", extra="<allocation>0</allocation>"))
    path = pool_dir / "a.img"
    with open(path, "r+b") as f:  # 1 MiB of data, the rest a hole
        f.write(b"\x01" * MiB)
    code, _, msg = error_of(vol.resize, 4 * MiB, 0)
    assert code == codes.VIR_ERR_INVALID_ARG and "unless shrink flag explicitly specified" in msg
    assert path.stat().st_size == 8 * MiB
    vol.resize(12 * MiB, 0)
    assert path.stat().st_size == 12 * MiB and path.read_bytes()[:MiB] == b"\x01" * MiB
    vol.resize(2 * MiB, 4)  # VIR_STORAGE_VOL_RESIZE_SHRINK
    assert path.stat().st_size == 2 * MiB
    q = pool.createXML(vol_xml("q.qcow2", "8M", "qcow2"))
    assert error_of(q.resize, 4 * MiB, 0)[0] == codes.VIR_ERR_INVALID_ARG
    q.resize(MiB, 2)  # VIR_STORAGE_VOL_RESIZE_DELTA: grow by 1 MiB
    assert qemu_img_info(pool_dir / "q.qcow2")["virtual-size"] == 9 * MiB
    vol.wipe(0)
    assert path.read_bytes() == bytes(2 * MiB)
    assert error_of(vol.wipePattern, 9, 0)[0] == codes.VIR_ERR_ARGUMENT_UNSUPPORTED  # TRIM: not for files
    vol.delete(0)
    assert not path.exists()
    assert error_of(vol.info) == (codes.VIR_ERR_NO_STORAGE_VOL, codes.VIR_FROM_STORAGE,
                                  "Storage volume not found: no storage vol with matching name 'a.img'")


def test_upload_and_download_through_streams(pool: virStoragePool,
                                             pool_dir: Path) -> None:
    conn = pool.connect()
    vol = pool.createXML(vol_xml("a.img", "1M"))
    payload = os.urandom(100_000)
    up = conn.newStream(0)
    vol.upload(up, 4096, len(payload), 0)
    view = memoryview(payload)
    while view:
        view = view[up.send(bytes(view[:65536])):]
    up.finish()
    data = (pool_dir / "a.img").read_bytes()
    assert data[4096:4096 + len(payload)] == payload and len(data) == MiB
    down = conn.newStream(0)
    vol.download(down, 4096, len(payload), 0)
    got = b""
    while True:
        chunk = down.recv(65536)
        if not chunk:
            break
        assert isinstance(chunk, bytes)
        got += chunk
    down.finish()
    assert got == payload
    whole = conn.newStream(0)
    vol.download(whole, 0, 0, 0)
    total = 0
    while chunk := whole.recv(1 << 20):
        assert isinstance(chunk, bytes)
        total += len(chunk)
    whole.finish()
    assert total == MiB


_DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices>{disk}</devices></domain>"""


def test_a_volume_used_by_a_domain_is_not_deleted(pool: virStoragePool,
                                                  pool_dir: Path) -> None:
    conn = pool.connect()
    by_path = pool.createXML(vol_xml("a.img", "1M"))
    by_volume = pool.createXML(vol_xml("b.qcow2", "1M", "qcow2"))
    conn.defineXML(_DOMAIN.format(name="uses-file", disk=f"<disk type='file' device='disk'><source "
                                  f"file='{pool_dir}/a.img'/><target dev='vda' bus='virtio'/></disk>"))
    conn.defineXML(_DOMAIN.format(name="uses-vol", disk="<disk type='volume' device='disk'>"
                                  "<driver name='qemu' type='qcow2'/><source pool='p' volume='b.qcow2'/>"
                                  "<target dev='vda' bus='virtio'/></disk>"))
    code, dom, msg = error_of(by_path.delete, 0)
    assert (code, dom) == (codes.VIR_ERR_OPERATION_INVALID, codes.VIR_FROM_STORAGE)
    assert "in use by domain 'uses-file'" in msg
    assert "in use by domain 'uses-vol'" in error_of(by_volume.delete, 0)[2]
    assert "in use by domain 'uses-vol'" in error_of(by_volume.wipe, 0)[2]
    assert (pool_dir / "a.img").exists() and (pool_dir / "b.qcow2").exists()
    root = Path(conn.getURI().split("root=")[1])
    conn.close()  # one process drives a root at a time
    out = pyvirsh(root, "vol-delete", "--pool", "p", "a.img")
    assert out.returncode == 1 and "in use by domain 'uses-file'" in out.stderr
    conn = open_conn(f"qemu:///embed?root={root}")
    conn.lookupByName("uses-file").undefine()
    conn.storageVolLookupByPath(str(pool_dir / "a.img")).delete(0)
    conn.close()
    assert not (pool_dir / "a.img").exists()


def test_volume_disks_resolve_to_their_files(pool: virStoragePool,
                                             pool_dir: Path) -> None:
    conn = pool.connect()
    pool.createXML(vol_xml("d.qcow2", "1M", "qcow2"))
    xml = _DOMAIN.format(name="v", disk="<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>"
                         "<source pool='p' volume='d.qcow2'/><target dev='vda' bus='virtio'/></disk>")
    argv = conn.domainXMLToNative("qemu-argv", xml, 0)
    assert f'"filename":"{pool_dir}/d.qcow2"' in argv
    missing = xml.replace("d.qcow2", "gone.qcow2")
    assert error_of(conn.domainXMLToNative, "qemu-argv", missing, 0)[:2] == (codes.VIR_ERR_NO_STORAGE_VOL,
                                                                           codes.VIR_FROM_STORAGE)
    no_pool = xml.replace("pool='p'", "pool='q'")
    assert error_of(conn.domainXMLToNative, "qemu-argv", no_pool, 0)[0] == codes.VIR_ERR_NO_STORAGE_POOL
    dom = conn.defineXML(xml)
    pool.destroy()
    code, edom, msg = error_of(dom.create)
    assert (code, edom) == (codes.VIR_ERR_OPERATION_INVALID, codes.VIR_FROM_STORAGE)
    assert msg.startswith("Requested operation is not valid: storage pool 'p' containing volume 'd.qcow2' "
                          "referenced by disk 'vda' is not active")
    assert dom.isActive() == 0


@pytest.fixture
def recording_qemu_img(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """qemu-img behind a wrapper that logs its argv and the mode of each file it names (the real
    qemu-img still does the work)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    wrapper = bindir / "qemu-img"
    real = subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True, text=True).stdout.strip()
    wrapper.write_text("#!/bin/sh\n"
                       f"echo \"$*\" >> {log}\n"
                       "for a in \"$@\"; do case \"$a\" in *file=/*) f=${a##*file=}; f=${f%%,*}; "
                       f"stat -c 'mode %a' \"$f\" >> {log};; esac; done\n"
                       f"exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def test_luks_volumes_get_their_passphrase_from_the_secret_driver(
        pool: virStoragePool, pool_dir: Path, root: Path,
        recording_qemu_img: Path, tmp_path: Path) -> None:
    conn = pool.connect()
    passphrase = b"s3cret passphrase for luks"
    uuid = "2f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    secret = conn.secretDefineXML(f"<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid>"
                                  f"<usage type='volume'><volume>{pool_dir}/enc.qcow2</volume></usage>"
                                  "</secret>")
    secret.setValue(passphrase)
    enc = f"<encryption format='luks'><secret type='passphrase' uuid='{uuid}'/></encryption>"
    vol = pool.createXML(vol_xml("enc.qcow2", "16M", "qcow2", target=enc))
    info = qemu_img_info(pool_dir / "enc.qcow2")
    assert info["encrypted"] is True
    assert info["format-specific"]["data"]["encrypt"]["format"] == "luks"  # type: ignore[index]
    xml = vol.XMLDesc()
    assert f"<encryption format='luks'>\n      <secret type='passphrase' uuid='{uuid}'/>" in xml
    assert vol.info()[1] == 16 * MiB
    log = recording_qemu_img.read_text()
    assert "key-secret=vol_encrypt0" in log and passphrase.decode() not in log
    assert "mode 600" in log
    assert not any((root / "run" / "storage").glob("*.secret.*"))  # the passphrase file is gone
    # the real test of the passphrase: QEMU opens the image with it, and not with another
    pw = tmp_path / "pw"
    pw.write_bytes(passphrase)
    read = ["qemu-io", "-r", "-U", "--object", f"secret,id=s0,file={pw}", "--image-opts",
            f"driver=qcow2,encrypt.key-secret=s0,file.filename={pool_dir}/enc.qcow2", "-c", "read 0 512"]
    opened = subprocess.run(read, capture_output=True, text=True)
    assert opened.returncode == 0, opened.stderr
    pw.write_bytes(b"wrong")
    refused = subprocess.run(read, capture_output=True, text=True)
    assert refused.returncode != 0 and "Invalid password" in refused.stderr
    # a raw LUKS volume: the whole file is LUKS, its capacity the payload's size
    conn.secretDefineXML(f"<secret ephemeral='no' private='no'><uuid>{uuid[:-1]}0</uuid><usage type='volume'>"
                         f"<volume>{pool_dir}/enc.img</volume></usage></secret>").setValue(passphrase)
    raw = pool.createXML(vol_xml("enc.img", "8M", target=enc.replace(uuid, uuid[:-1] + "0")))
    raw_info = qemu_img_info(pool_dir / "enc.img")
    assert raw_info["format"] == "luks" and raw_info["virtual-size"] == 8 * MiB
    assert raw.info()[1] == 8 * MiB
    assert "<format type='raw'/>" in raw.XMLDesc() and "<encryption format='luks'>" in raw.XMLDesc()


@pytest.mark.slow
def test_the_test_guest_reads_a_volume_disk(pool: virStoragePool, pool_dir: Path, guest: object,
                                            root: Path) -> None:
    """<disk type='volume'> at a real start: QEMU gets the volume's file and the guest reads it."""
    from lifecycle_support import domain_xml, serial_has, wait_for

    conn = pool.connect()
    vol = pool.createXML(vol_xml("data.img", "1M"))
    stream = conn.newStream(0)
    vol.upload(stream, 0, 0, 0)
    stream.send(b"STORAGE-VOLUME-SEEN-BY-GUEST")
    stream.finish()
    serial = root.parent / "serial.log"
    disk = ("<disk type='volume' device='disk'><driver name='qemu' type='raw'/><source pool='p' "
            "volume='data.img'/><target dev='vda' bus='virtio'/></disk>")
    xml = domain_xml("volguest", guest, serial, extra_devices=disk)  # type: ignore[arg-type]
    xml = xml.replace("</cmdline>", " pyvirt.show_disk=vda</cmdline>")
    dom = conn.createXML(xml, 0)
    try:
        wait_for(lambda: serial_has(serial, "PYVIRT-GUEST-READY"), 120, "the guest to be ready")
        assert serial_has(serial, "PYVIRT-DISK vda: STORAGE-VOLUME-SEEN-BY-GUEST")
        code, _, msg = error_of(vol.delete, 0)
        assert code == codes.VIR_ERR_OPERATION_INVALID and "in use by domain 'volguest'" in msg
    finally:
        dom.destroy()
    assert (pool_dir / "data.img").exists()
