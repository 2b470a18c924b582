# SPDX-License-Identifier: LGPL-2.1-or-later
"""LUKS-encrypted disks end to end: images made by qemu-img (passphrase from a 0600 file, never in
argv), secrets in pyvirt's embedded secret driver, real QEMU and the real test guest reading a marker
written into the image before encryption; and every way a secret can be wrong."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets as _random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle_support import BOOT_TIMEOUT, alive, domain_xml, qemus_of, serial_has, status_pid, wait_for

from pyvirt import _errcodes as codes
from pyvirt.connection import open as open_conn
from pyvirt.connection import virConnect
from pyvirt.errors import PyvirtError
from pyvirt.testing import guest as tg

RAW_SECRET = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"
QCOW_SECRET = "5e4f5c1e-86f1-4e33-9a0c-3d6b2d8f1a10"
RAW_PASS = b"raw passphrase \xc3\xa9 42"
QCOW_PASS = b"qcow2-passphrase-7"


@dataclasses.dataclass(frozen=True)
class Images:
    raw: Path     #: LUKS, as the raw format reads it (QEMU's 'luks' driver)
    qcow2: Path   #: qcow2 with encrypt.format=luks
    marker: str   #: the first line of both images' plaintext


def _qemu_img_convert(src: Path, dst: Path, passphrase: bytes, opts: list[str], workdir: Path) -> None:
    pw = workdir / f"{dst.name}.pass"
    fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(passphrase)
    try:
        for _ in range(20):
            # QEMU times PBKDF2 with the thread's CPU time, counted in scheduler ticks: when its first
            # round ends within one tick it reads 0 ms and gives up ("Unable to get accurate CPU
            # usage"), a matter of chance that a retry cures.
            run = subprocess.run(["qemu-img", "convert", "--object", f"secret,id=sec0,file={pw}", *opts,
                                  str(src), str(dst)], capture_output=True, text=True, timeout=120)
            if run.returncode == 0:
                return
            dst.unlink(missing_ok=True)
            if "accurate CPU usage" not in run.stderr:
                break
            time.sleep(0.05)
        raise AssertionError(f"qemu-img convert failed: {run.stderr}")
    finally:
        pw.unlink()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    work = tmp_path_factory.mktemp("luks")
    marker = f"PYVIRT-LUKS-MARKER-{_random.token_hex(8)}"
    plain = work / "plain.img"
    with open(plain, "wb") as f:
        f.write(marker.encode() + b"\n")
        f.truncate(1 << 20)
    raw, qcow2 = work / "disk.luks", work / "disk.qcow2"
    _qemu_img_convert(plain, raw, RAW_PASS, ["-O", "luks", "-o", "key-secret=sec0,iter-time=50"], work)
    _qemu_img_convert(plain, qcow2, QCOW_PASS, ["-O", "qcow2", "-o",
                                                "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50"],
                      work)
    assert marker.encode() not in raw.read_bytes() and marker.encode() not in qcow2.read_bytes()
    return Images(raw, qcow2, marker)


@pytest.fixture
def conn(root: Path) -> Iterator[virConnect]:
    c = open_conn(f"qemu:///embed?root={root}")
    try:
        yield c
    finally:
        c.close()


def luks_disk(dev: str, path: Path, fmt: str, secret: str) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/><source file='{path}'/>"
            f"<target dev='{dev}' bus='virtio'/><encryption format='luks'>{secret}</encryption></disk>")


def volume_secret(conn: virConnect, uuid: str, path: Path, value: bytes | None, *, private: bool = True,
                  usage: str = "volume") -> None:
    what = f"<volume>{path}</volume>" if usage == "volume" else f"<name>{path}</name>"
    s = conn.secretDefineXML(f"<secret private='{'yes' if private else 'no'}'><uuid>{uuid}</uuid>"
                             f"<usage type='{usage}'>{what}</usage></secret>")
    if value is not None:
        s.setValue(value)


def files_text(root: Path) -> bytes:
    out = b""
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_socket():
                out += path.read_bytes()
    return out


def start_error(conn: virConnect, xml: str) -> PyvirtError:
    dom = conn.defineXML(xml)
    with pytest.raises(PyvirtError) as exc:
        dom.create()
    return exc.value


def assert_nothing_running(root: Path, name: str) -> None:
    assert [p for p in qemus_of(root) if alive(p)] == []
    assert not (root / "run" / "qemu" / f"{name}.json").exists()
    assert list((root / "lib" / "qemu").glob("domain-*")) == []


@pytest.mark.slow
def test_guest_reads_raw_and_qcow2_luks_disks(root: Path, conn: virConnect, guest: tg.Guest,
                                              images: Images) -> None:
    # vda's secret is named by UUID, vdb's by usage (the image's path), as libvirt allows
    volume_secret(conn, RAW_SECRET, images.raw, RAW_PASS)
    volume_secret(conn, QCOW_SECRET, images.qcow2, QCOW_PASS, private=False)
    disks = (luks_disk("vda", images.raw, "raw", f"<secret type='passphrase' uuid='{RAW_SECRET}'/>")
             + luks_disk("vdb", images.qcow2, "qcow2", f"<secret type='passphrase' usage='{images.qcow2}'/>"))
    booted = dataclasses.replace(guest, cmdline=f"{guest.cmdline} pyvirt.show_disk=vda pyvirt.show_disk=vdb")
    serial = root / "serial.log"
    dom = conn.defineXML(domain_xml("enc", booted, serial, extra_devices=disks))
    dom.create()
    try:
        wait_for(lambda: serial_has(serial, tg.READY_MARKER), BOOT_TIMEOUT, "the guest's ready marker")
        console = serial.read_text(errors="replace")
        assert f"PYVIRT-DISK vda: {images.marker}." in console, console
        assert f"PYVIRT-DISK vdb: {images.marker}." in console, console

        pid = status_pid(root, "enc")
        assert pid is not None
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        objects = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == b"-object"]
        secrets = {o["id"]: o for o in objects if o["qom-type"] == "secret"}
        assert set(secrets) == {"masterKey0", "libvirt-2-format-encryption-secret0",
                                "libvirt-1-format-encryption-secret0"}
        for alias in ("libvirt-2-format-encryption-secret0", "libvirt-1-format-encryption-secret0"):
            obj = secrets[alias]
            assert (obj["keyid"], obj["format"]) == ("masterKey0", "base64")
            assert len(base64.b64decode(obj["iv"])) == 16
        nodes = {b["node-name"]: b for b in (json.loads(argv[i + 1]) for i, a in enumerate(argv)
                                             if a == b"-blockdev")}
        assert nodes["libvirt-2-format"]["driver"] == "luks"
        assert nodes["libvirt-2-format"]["key-secret"] == "libvirt-2-format-encryption-secret0"
        assert nodes["libvirt-1-format"]["encrypt"] == {"format": "luks",
                                                        "key-secret": "libvirt-1-format-encryption-secret0"}

        # the passphrases appear nowhere: not in QEMU's argv, its log, the status or any file of the
        # root (the secret driver keeps them sealed), in plain text or in base64
        everything = b"\0".join(argv) + files_text(root)
        for value in (RAW_PASS, QCOW_PASS):
            assert value not in everything
            assert base64.b64encode(value) not in everything
        status = (root / "run" / "qemu" / "enc.json").read_text()
        assert RAW_SECRET in status and "encryption-secret0" not in status
    finally:
        dom.destroy()
    assert_nothing_running(root, "enc")


def test_wrong_passphrase_names_disk_and_secret(root: Path, conn: virConnect, guest: tg.Guest,
                                                images: Images) -> None:
    volume_secret(conn, RAW_SECRET, images.raw, b"not the passphrase")
    serial = root / "serial.log"
    err = start_error(conn, domain_xml("enc", guest, serial, extra_devices=luks_disk(
        "vda", images.raw, "raw", f"<secret type='passphrase' uuid='{RAW_SECRET}'/>")))
    text = str(err)
    assert "disk 'vda'" in text and str(images.raw) in text and RAW_SECRET in text, text
    assert "passphrase" in text and "secret-set-value" in text
    assert b"not the passphrase" not in files_text(root)
    assert_nothing_running(root, "enc")


def test_wrong_passphrase_of_the_second_disk(root: Path, conn: virConnect, guest: tg.Guest,
                                             images: Images) -> None:
    volume_secret(conn, RAW_SECRET, images.raw, RAW_PASS)
    volume_secret(conn, QCOW_SECRET, images.qcow2, RAW_PASS)  # vdb's image has another passphrase
    disks = (luks_disk("vda", images.raw, "raw", f"<secret type='passphrase' uuid='{RAW_SECRET}'/>")
             + luks_disk("vdb", images.qcow2, "qcow2", f"<secret type='passphrase' usage='{images.qcow2}'/>"))
    text = str(start_error(conn, domain_xml("enc", guest, root / "serial.log", extra_devices=disks)))
    assert "disk 'vdb'" in text and f"usage '{images.qcow2}'" in text, text
    assert_nothing_running(root, "enc")


@pytest.mark.parametrize(("case", "code", "domain", "message"), [
    ("missing", codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET,
     f"Secret not found: no secret with matching uuid '{RAW_SECRET}'"),
    ("no value", codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET,
     f"Secret not found: secret '{RAW_SECRET}' does not have a value"),
    ("ceph usage", codes.VIR_ERR_INVALID_ARG, codes.VIR_FROM_NONE,
     f"invalid argument: secret with uuid {RAW_SECRET} is of type 'ceph' not expected 'volume' type"),
    ("unknown usage", codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET,
     "Secret not found: no secret with matching usage '/nope'"),
])
def test_secret_errors_come_before_qemu_runs(root: Path, conn: virConnect, guest: tg.Guest, images: Images,
                                             case: str, code: int, domain: int, message: str) -> None:
    ref = f"<secret type='passphrase' uuid='{RAW_SECRET}'/>"
    if case == "no value":
        volume_secret(conn, RAW_SECRET, images.raw, None)
    elif case == "ceph usage":
        volume_secret(conn, RAW_SECRET, Path("client.admin"), RAW_PASS, usage="ceph")
    elif case == "unknown usage":
        volume_secret(conn, RAW_SECRET, images.raw, RAW_PASS)
        ref = "<secret type='passphrase' usage='/nope'/>"
    disk = luks_disk("vda", images.raw, "raw", ref)
    xml = domain_xml("enc", guest, root / "serial.log", extra_devices=disk)
    err = start_error(conn, xml)
    assert (err.get_error_code(), err.get_error_domain(), str(err)) == (code, domain, message)
    # refused before the host was touched: no QEMU, no log, no private directory
    assert not (root / "log" / "qemu" / "enc.log").exists()
    assert_nothing_running(root, "enc")
    # domxml-to-native refuses the same way
    with pytest.raises(PyvirtError) as native:
        conn.domainXMLToNative("qemu-argv", xml)
    assert str(native.value) == message


def test_encryption_without_a_secret_is_refused(root: Path, conn: virConnect, guest: tg.Guest,
                                                images: Images) -> None:
    xml = domain_xml("enc", guest, root / "serial.log", extra_devices=luks_disk("vda", images.raw, "raw", ""))
    err = start_error(conn, xml)
    assert err.get_error_code() == codes.VIR_ERR_INTERNAL_ERROR
    assert str(err).startswith("internal error: missing secret info for 'luks' driver (disk 'vda'")
    assert_nothing_running(root, "enc")


@pytest.mark.parametrize(("encryption", "message"), [
    ("format='luks2'", "unsupported configuration: luks2 is currently not supported by the qemu encryption "
                       "engine"),
    ("format='qcow'", "unsupported configuration: old qcow/qcow2 encryption is not supported"),
    ("format='luks' engine='librbd'", "unsupported configuration: librbd encryption is supported only "
                                      "with RBD backed disks"),
])
def test_encryption_qemu_cannot_open_is_refused(root: Path, conn: virConnect, guest: tg.Guest, images: Images,
                                                encryption: str, message: str) -> None:
    volume_secret(conn, RAW_SECRET, images.raw, RAW_PASS)
    disk = luks_disk("vda", images.raw, "raw", f"<secret type='passphrase' uuid='{RAW_SECRET}'/>")
    xml = domain_xml("enc", guest, root / "serial.log",
                     extra_devices=disk.replace("format='luks'", encryption))
    with pytest.raises(PyvirtError) as exc:
        conn.domainXMLToNative("qemu-argv", xml)
    assert str(exc.value).startswith(message), str(exc.value)
    assert exc.value.get_error_code() == codes.VIR_ERR_CONFIG_UNSUPPORTED
    err = start_error(conn, xml)
    assert str(err).startswith(message)
    assert_nothing_running(root, "enc")


def test_values_are_encrypted_as_qemus_secret_object_decrypts_them() -> None:
    """AES-256-CBC with PKCS#7 padding under the master key, a fresh IV each time (QEMU itself
    decrypts them in the boot test above; here the padding edges and the IVs are checked)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from pyvirt.secret.disk import encrypt_for_qemu

    key = os.urandom(32)
    values = {"vda": b"x", "vdb": b"sixteen bytes!!!", "vdc": bytes(range(256))}
    first, second = encrypt_for_qemu(key, values), encrypt_for_qemu(key, values)
    for dev, value in values.items():
        data, iv = base64.b64decode(first[dev].data), base64.b64decode(first[dev].iv)
        assert len(iv) == 16 and len(data) == (len(value) // 16 + 1) * 16
        dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        assert unpadder.update(dec.update(data) + dec.finalize()) + unpadder.finalize() == value
        assert first[dev].iv != second[dev].iv and first[dev].data != second[dev].data
    assert encrypt_for_qemu(key, {}) == {}
