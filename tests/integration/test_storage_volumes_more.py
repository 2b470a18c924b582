# SPDX-License-Identifier: LGPL-2.1-or-later
"""Encrypted volumes resized and cloned, and every wipe algorithm, through the embedded storage
driver: real LUKS images made and read by qemu-img/qemu-io with real secrets, real scrub.

Nothing is mocked. A wrapper in front of qemu-img and scrub records each command line and the mode
of every file named by ``file=`` (to show that no passphrase is among the arguments and that the
passphrase files are 0600), then runs the real tool. The missing-scrub case runs with a PATH that
really lacks scrub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_storage as first

from pyvirt import _errcodes as codes
from pyvirt.connection import virConnect
from pyvirt.storage.api import virStoragePool, virStorageVol

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
MiB = 1024 * 1024
SCRUB_SIGNATURE = b"\x01\x02\x03SCRUBBED!"  # scrub marks the start of a file it has scrubbed
# the embed root's connection and its pool 'p' on pool_dir, as the first storage tests make them
conn, pool_dir, pool = first.conn, first.pool_dir, first.pool
error_of, qemu_img_info = first.error_of, first.qemu_img_info


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """qemu-img and scrub behind wrappers that log their argv (and the mode of each ``file=``)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    for tool in ("qemu-img", "scrub"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True,
                              text=True).stdout.strip()
        assert real, f"{tool} is missing: run scripts/setup.sh"
        wrapper = bindir / tool
        wrapper.write_text("#!/bin/sh\n"
                           f"echo \"{tool} $*\" >> {log}\n"
                           "for a in \"$@\"; do case \"$a\" in *file=/*) f=${a##*file=}; f=${f%%,*}; "
                           f"stat -c 'mode %a' \"$f\" >> {log};; esac; done\n"
                           f"exec {real} \"$@\"\n")
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def vol_xml(name: str, capacity_mib: int, fmt: str, secret: str | None = None) -> str:
    enc = (f"<encryption format='luks'><secret type='passphrase' uuid='{secret}'/></encryption>"
           if secret else "")
    return (f"<volume><name>{name}</name><capacity unit='MiB'>{capacity_mib}</capacity>"
            f"<target><format type='{fmt}'/>{enc}</target></volume>")


def add_secret(conn: virConnect, path: Path, uuid: str, value: bytes) -> str:
    """A volume secret whose usage is ``path`` (how libvirt finds an existing volume's secret)."""
    conn.secretDefineXML(f"<secret ephemeral='no' private='yes'><uuid>{uuid}</uuid><usage type='volume'>"
                         f"<volume>{path}</volume></usage></secret>").setValue(value)
    return uuid


def opts(path: Path, fmt: str, alias: str | None) -> str:
    """``--image-opts`` of an image: the LUKS driver for an encrypted raw file."""
    if alias is None:
        return f"driver={fmt},file.filename={path}"
    if fmt == "raw":
        return f"driver=luks,file.filename={path},key-secret={alias}"
    return f"driver=qcow2,file.filename={path},encrypt.key-secret={alias}"


class Secrets:
    """Passphrase files for qemu-io/qemu-img run by the test itself."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def object(self, value: bytes) -> tuple[list[str], str]:
        self.count += 1
        alias = f"t{self.count}"
        f = self.directory / f"pw{self.count}"
        f.write_bytes(value)
        return ["--object", f"secret,id={alias},file={f}"], alias


def qemu_io(secrets: Secrets, path: Path, fmt: str, value: bytes | None,
            command: str) -> subprocess.CompletedProcess[str]:
    obj, alias = secrets.object(value) if value is not None else ([], None)
    return subprocess.run(["qemu-io", *obj, "--image-opts", opts(path, fmt, alias), "-c", command],
                          capture_output=True, text=True, timeout=120)


def compare(secrets: Secrets, a: tuple[Path, str, bytes | None], b: tuple[Path, str, bytes | None]) -> int:
    """qemu-img compare's status for two images read through their secrets (0: same content)."""
    args: list[str] = []
    names = []
    for path, fmt, value in (a, b):
        obj, alias = secrets.object(value) if value is not None else ([], None)
        args += obj
        names.append(opts(path, fmt, alias))
    return subprocess.run(["qemu-img", "compare", *args, "--image-opts", *names], capture_output=True,
                          text=True, timeout=120).returncode


def assert_no_secret_in_argv(log: Path, *passphrases: bytes) -> None:
    text = log.read_text()
    for p in passphrases:
        assert p.decode() not in text
    modes = [line for line in text.splitlines() if line.startswith("mode ")]
    assert modes and set(modes) == {"mode 600"}


PW_A, PW_B = b"first luks passphrase", b"second, other passphrase"


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_an_encrypted_volume_is_resized_by_its_payload(pool: virStoragePool, pool_dir: Path, root: Path,
                                                       recorded: Path, tmp_path: Path, fmt: str) -> None:
    conn = pool.connect()
    path = pool_dir / f"e.{fmt}"
    uuid = add_secret(conn, path, "5a0c1c35-0b7e-4a55-9c0e-3f0e1b2c3d01", PW_A)
    vol = pool.createXML(vol_xml(path.name, 8, fmt, uuid))
    secrets = Secrets(tmp_path)
    wrote = qemu_io(secrets, path, fmt, PW_A, "write -P 0x5a 0 1M")
    assert wrote.returncode == 0, wrote.stderr
    assert qemu_img_info(path)["virtual-size"] == 8 * MiB

    recorded.write_text("")
    vol.resize(12 * MiB, 0)
    assert "--image-opts" in recorded.read_text()
    assert_no_secret_in_argv(recorded, PW_A)
    assert qemu_img_info(path)["virtual-size"] == 12 * MiB == vol.info()[1]
    code, _, msg = error_of(vol.resize, 4 * MiB, 0)
    assert code == codes.VIR_ERR_INVALID_ARG and "unless shrink flag explicitly specified" in msg
    assert error_of(vol.resize, 16 * MiB, 1)[:3] == (  # VIR_STORAGE_VOL_RESIZE_ALLOCATE
        codes.VIR_ERR_OPERATION_UNSUPPORTED, codes.VIR_FROM_STORAGE,
        "Operation not supported: preallocate is only supported for "
        + ("an unencrypted raw volume" if fmt == "raw" else "raw type volume"))
    vol.resize(MiB + 100, 2)  # DELTA: grown by 1 MiB + 100 bytes, rounded up to a whole sector
    assert qemu_img_info(path)["virtual-size"] == 13 * MiB + 512
    vol.resize(4 * MiB, 4)  # SHRINK
    assert qemu_img_info(path)["virtual-size"] == 4 * MiB == vol.info()[1]
    # the data survived, and the volume still opens with its passphrase only
    read = qemu_io(secrets, path, fmt, PW_A, "read -P 0x5a 0 1M")
    assert read.returncode == 0 and "Pattern verification failed" not in read.stdout, read.stderr
    assert "Invalid password" in qemu_io(secrets, path, fmt, PW_B, "read 0 512").stderr
    assert not any((root / "run" / "storage").glob("*.secret.*"))


def test_resizing_an_encrypted_volume_without_its_secret_changes_nothing(pool: virStoragePool,
                                                                         pool_dir: Path) -> None:
    conn = pool.connect()
    path = pool_dir / "e.img"
    uuid = add_secret(conn, path, "5a0c1c35-0b7e-4a55-9c0e-3f0e1b2c3d02", PW_A)
    vol = pool.createXML(vol_xml("e.img", 8, "raw", uuid))
    conn.secretLookupByUUIDString(uuid).undefine()
    before = path.read_bytes()
    assert error_of(vol.resize, 12 * MiB, 0) == (
        codes.VIR_ERR_XML_ERROR, codes.VIR_FROM_STORAGE, "XML error: no secret provided for luks encryption")
    assert path.read_bytes() == before


# (source format, source encrypted, new format, new encrypted): libvirt 9.0 copies all of these
CLONES = [("raw", True, "raw", True), ("qcow2", True, "qcow2", True), ("raw", True, "qcow2", True),
          ("raw", True, "raw", False), ("qcow2", True, "qcow2", False), ("raw", False, "raw", True),
          ("raw", False, "qcow2", True)]


@pytest.mark.parametrize("src_fmt,src_enc,new_fmt,new_enc", CLONES)
def test_clones_of_and_to_encrypted_volumes_have_the_same_content(
        pool: virStoragePool, pool_dir: Path, root: Path, recorded: Path, tmp_path: Path,
        src_fmt: str, src_enc: bool, new_fmt: str, new_enc: bool) -> None:
    conn = pool.connect()
    src_path, new_path = pool_dir / f"src.{src_fmt}", pool_dir / f"new.{new_fmt}"
    src_pw = PW_A if src_enc else None
    new_pw = PW_B if new_enc else None
    src_uuid = add_secret(conn, src_path, "6b1d2d46-1c8f-4b66-8d1f-4a1f2c3d4e01", PW_A) if src_enc else None
    new_uuid = add_secret(conn, new_path, "6b1d2d46-1c8f-4b66-8d1f-4a1f2c3d4e02", PW_B) if new_enc else None
    src = pool.createXML(vol_xml(src_path.name, 6, src_fmt, src_uuid))
    secrets = Secrets(tmp_path)
    for command in ("write -P 0x11 0 512k", "write -P 0x22 3M 64k"):
        done = qemu_io(secrets, src_path, src_fmt, src_pw, command)
        assert done.returncode == 0, done.stderr
    recorded.write_text("")

    # the XML asks for less than the source holds: the source's size wins
    new = pool.createXMLFrom(vol_xml(new_path.name, 4, new_fmt, new_uuid), src)
    assert isinstance(new, virStorageVol)
    assert "convert --image-opts -n --target-image-opts" in recorded.read_text()
    assert_no_secret_in_argv(recorded, PW_A, PW_B)
    new_info = qemu_img_info(new_path)
    assert new_info["format"] == ("luks" if new_enc and new_fmt == "raw" else new_fmt)
    assert bool(new_info.get("encrypted")) == new_enc
    assert new_info["virtual-size"] == 6 * MiB == new.info()[1]
    assert compare(secrets, (src_path, src_fmt, src_pw), (new_path, new_fmt, new_pw)) == 0
    if new_enc:  # the copy has its own passphrase, not the source's
        assert "Invalid password" in qemu_io(secrets, new_path, new_fmt, PW_A, "read 0 512").stderr
    assert not any((root / "run" / "storage").glob("*.secret.*"))
    # the comparison can fail: a changed byte in the copy is seen
    changed = qemu_io(secrets, new_path, new_fmt, new_pw, "write -P 0x33 4096 512")
    assert changed.returncode == 0, changed.stderr
    assert compare(secrets, (src_path, src_fmt, src_pw), (new_path, new_fmt, new_pw)) == 1


def test_a_clone_of_an_encrypted_volume_without_its_secret_leaves_nothing(pool: virStoragePool,
                                                                         pool_dir: Path) -> None:
    conn = pool.connect()
    uuid = add_secret(conn, pool_dir / "e.img", "7c2e3e57-2d90-4c77-9e20-5b2a3d4e5f01", PW_A)
    src = pool.createXML(vol_xml("e.img", 4, "raw", uuid))
    conn.secretLookupByUUIDString(uuid).undefine()
    code, _, msg = error_of(pool.createXMLFrom, vol_xml("c.img", 4, "raw"), src)
    assert code == codes.VIR_ERR_INVALID_ARG and "A single <secret type='passphrase'...>" in msg
    # a secret uuid in the new XML that names no secret: the secret driver's error
    missing = "7c2e3e57-2d90-4c77-9e20-5b2a3d4e5f09"
    assert error_of(pool.createXMLFrom, vol_xml("d.img", 4, "raw", missing), src)[:2] == (
        codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET)
    assert sorted(p.name for p in pool_dir.iterdir()) == ["e.img"]


PATTERNS = ["nnsa", "dod", "bsi", "gutmann", "schneier", "pfitzner7", "pfitzner33", "random"]


def test_every_wipe_algorithm_as_libvirt_runs_it(pool: virStoragePool, pool_dir: Path,
                                                 recorded: Path) -> None:
    vols = {}
    for alg in range(11):
        vols[alg] = pool.createXML(vol_xml(f"w{alg}.img", 1, "raw"))
        (pool_dir / f"w{alg}.img").write_bytes(b"\x5a" * MiB)
    vols[0].wipePattern(0, 0)
    assert (pool_dir / "w0.img").read_bytes() == bytes(MiB)
    for alg, pattern in enumerate(PATTERNS, start=1):
        vols[alg].wipePattern(alg, 0)
        data = (pool_dir / f"w{alg}.img").read_bytes()
        assert len(data) == MiB and data.startswith(SCRUB_SIGNATURE) and b"\x5a" * 64 not in data, pattern
    assert recorded.read_text().splitlines() == [f"scrub -f -p {p} {pool_dir}/w{i}.img"
                                                 for i, p in enumerate(PATTERNS, start=1)]
    assert error_of(vols[9].wipePattern, 9, 0) == (codes.VIR_ERR_ARGUMENT_UNSUPPORTED, codes.VIR_FROM_STORAGE,
                                                   "argument unsupported: 'trim' algorithm not supported")
    assert error_of(vols[10].wipePattern, 10, 0) == (codes.VIR_ERR_INVALID_ARG, codes.VIR_FROM_STORAGE,
                                                     "invalid argument: wiping algorithm 10 not supported")
    for alg in (9, 10):
        assert (pool_dir / f"w{alg}.img").read_bytes() == b"\x5a" * MiB
    # a sparse file is emptied and extended back (libvirt's way), a qcow2 file zeroed whole
    sparse = pool.createXML(vol_xml("s.img", 4, "raw").replace("</capacity>",
                                                               "</capacity><allocation>0</allocation>"))
    with open(pool_dir / "s.img", "r+b") as f:
        f.seek(2 * MiB)
        f.write(b"\x77" * 4096)
    sparse.wipe(0)
    assert (pool_dir / "s.img").read_bytes() == bytes(4 * MiB)
    q = pool.createXML(vol_xml("q.qcow2", 1, "qcow2"))
    q.wipe(0)
    assert set((pool_dir / "q.qcow2").read_bytes()) == {0}
    os.mkdir(pool_dir / "sub")
    pool.refresh(0)
    assert error_of(pool.storageVolLookupByName("sub").wipePattern, 1, 0) == (
        codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_STORAGE,
        f"Failed to open storage volume with path '{pool_dir}/sub': Is a directory")


def test_a_pattern_wipe_without_scrub_is_libvirts_error(pool: virStoragePool, pool_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    vol = pool.createXML(vol_xml("w.img", 1, "raw"))
    (pool_dir / "w.img").write_bytes(b"\x5a" * MiB)
    empty = tmp_path / "noscrub"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a host without scrub: nothing on PATH
    assert error_of(vol.wipePattern, 1, 0) == (codes.VIR_ERR_SYSTEM_ERROR, codes.VIR_FROM_NONE,
                                               "Cannot find 'scrub' in path: No such file or directory")
    assert (pool_dir / "w.img").read_bytes() == b"\x5a" * MiB
    vol.wipePattern(0, 0)  # zeros need no tool
    assert (pool_dir / "w.img").read_bytes() == bytes(MiB)


def test_pyvirsh_vol_wipe_takes_virshs_algorithm_names(pool: virStoragePool, pool_dir: Path,
                                                       root: Path) -> None:
    pool.createXML(vol_xml("w.img", 1, "raw"))
    (pool_dir / "w.img").write_bytes(b"\x5a" * MiB)
    pool.connect().close()  # one process drives a root at a time
    uri = f"qemu:///embed?root={root}"
    run = subprocess.run([PYVIRSH, "-c", uri, "vol-wipe", "--pool", "p", "w.img", "--algorithm", "dod"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "Vol w.img wiped\n\n", run.stderr
    assert (pool_dir / "w.img").read_bytes().startswith(SCRUB_SIGNATURE)
    for bad in ("DOD", "bogus"):
        run = subprocess.run([PYVIRSH, "-c", uri, "vol-wipe", "--pool", "p", "w.img", "--algorithm", bad],
                             capture_output=True, text=True, timeout=120)
        assert (run.returncode, run.stderr) == (1, f"error: Unsupported algorithm '{bad}'\n")
    run = subprocess.run([PYVIRSH, "-c", uri, "vol-wipe", "--pool", "p", "w.img", "--algorithm", "trim"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr == ("error: Failed to wipe vol w.img\n"
                          "error: argument unsupported: 'trim' algorithm not supported\n")


_DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>
<driver name='qemu' type='qcow2'/><source file='{file}'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>"""


def test_a_volume_in_a_disks_backing_chain_is_not_deleted(pool: virStoragePool, pool_dir: Path,
                                                          tmp_path: Path) -> None:
    """libvirt 9.0 checks no domain at all (it deletes a volume a domain uses, directly or through
    an overlay); pyvirt refuses both, naming the domain, and follows relative backing names."""
    conn = pool.connect()
    base = pool.createXML(vol_xml("base.img", 1, "raw"))
    mid = pool.createXML(vol_xml("mid.qcow2", 1, "qcow2").replace(
        "</target>", f"</target><backingStore><path>{pool_dir}/base.img</path><format type='raw'/>"
                     "</backingStore>"))
    top = tmp_path / "top.qcow2"  # an overlay outside the pool, naming its backing file relatively
    os.symlink(pool_dir, tmp_path / "pooldir")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", "pooldir/mid.qcow2", "-F", "qcow2", str(top)],
                   check=True, capture_output=True, cwd=tmp_path)
    conn.defineXML(_DOMAIN.format(name="overlay-user", file=top))
    for vol in (base, mid):
        code, edom, msg = error_of(vol.delete, 0)
        assert (code, edom) == (codes.VIR_ERR_OPERATION_INVALID, codes.VIR_FROM_STORAGE)
        assert "in use by domain 'overlay-user'" in msg
        assert error_of(vol.wipePattern, 0, 0)[0] == codes.VIR_ERR_OPERATION_INVALID
    assert (pool_dir / "base.img").exists() and (pool_dir / "mid.qcow2").exists()
    conn.lookupByName("overlay-user").undefine()
    mid.delete(0)
    base.delete(0)
    assert sorted(p.name for p in pool_dir.iterdir()) == []
