# SPDX-License-Identifier: LGPL-2.1-or-later
"""The embedded secret driver through the API and through pyvirsh (a separate process that
reconnects to the same root): real files, real encryption, nothing mocked."""

from __future__ import annotations

import base64
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pyvirt
from pyvirt import _constants as const
from pyvirt import _errcodes as codes
from pyvirt.connection import open as open_conn
from pyvirt.connection import openReadOnly, virConnect
from pyvirt.errors import PyvirtError
from pyvirt.secret.driver import VALUE_SUFFIX, driver_for

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
UUID = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"
UUID2 = "5e4f5c1e-86f1-4e33-9a0c-3d6b2d8f1a10"
VALUE = b"correct horse battery staple \x00\xff"


def volume_secret(uuid: str = UUID, path: str = "/var/lib/images/a.qcow2", *, private: bool = False,
                  ephemeral: bool = False) -> str:
    flags = f"ephemeral='{'yes' if ephemeral else 'no'}' private='{'yes' if private else 'no'}'"
    return (f"<secret {flags}><uuid>{uuid}</uuid><description>disk a</description>"
            f"<usage type='volume'><volume>{path}</volume></usage></secret>")


@pytest.fixture
def conn(embed_root: Path) -> Iterator[virConnect]:
    c = open_conn(f"qemu:///embed?root={embed_root}")
    try:
        yield c
    finally:
        c.close()


def error_of(call: Callable[..., object], *args: object) -> tuple[int, int, str]:
    with pytest.raises(PyvirtError) as exc:
        call(*args)
    return exc.value.get_error_code(), exc.value.get_error_domain(), str(exc.value)


def pyvirsh(root: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([PYVIRSH, "-c", f"qemu:///embed?root={root}", *args], input=stdin,
                          capture_output=True, timeout=120)


def secrets_dir(root: Path) -> Path:
    return root / "etc" / "secrets"


def key_file(root: Path) -> Path:
    return root / "lib" / "secrets" / "secrets-encryption-key"


def test_names_of_libvirt_python() -> None:
    from pyvirt.secret.api import virSecret

    assert pyvirt.virSecret is virSecret
    assert (pyvirt.VIR_SECRET_USAGE_TYPE_VOLUME, pyvirt.VIR_SECRET_USAGE_TYPE_VTPM) == (1, 5)
    assert pyvirt.VIR_CONNECT_LIST_SECRETS_NO_PRIVATE == 8 and pyvirt.VIR_SECRET_DEFINE_VALIDATE == 1


# -- the API ------------------------------------------------------------------------------------------


def test_define_lookup_list_set_get_undefine(conn: virConnect, embed_root: Path) -> None:
    s = conn.secretDefineXML(volume_secret())
    assert (s.UUIDString(), s.usageType(), s.usageID()) == (UUID, const.VIR_SECRET_USAGE_TYPE_VOLUME,
                                                            "/var/lib/images/a.qcow2")
    assert s.UUID() == bytes.fromhex(UUID.replace("-", ""))
    assert conn.secretLookupByUUIDString(UUID).UUIDString() == UUID
    assert conn.secretLookupByUUIDString(UUID.replace("-", "")).UUIDString() == UUID
    assert conn.secretLookupByUUID(s.UUID()).UUIDString() == UUID
    assert conn.secretLookupByUsage(const.VIR_SECRET_USAGE_TYPE_VOLUME,
                                    "/var/lib/images/a.qcow2").UUIDString() == UUID
    other = conn.secretDefineXML(f"<secret><uuid>{UUID2}</uuid><usage type='ceph'><name>client.a</name>"
                                 "</usage></secret>")
    assert [x.UUIDString() for x in conn.listAllSecrets()] == sorted([UUID, UUID2])
    assert sorted(conn.listSecrets()) == sorted([UUID, UUID2]) and conn.numOfSecrets() == 2
    assert s.XMLDesc() == ("<secret ephemeral='no' private='no'>\n"
                           f"  <uuid>{UUID}</uuid>\n"
                           "  <description>disk a</description>\n"
                           "  <usage type='volume'>\n"
                           "    <volume>/var/lib/images/a.qcow2</volume>\n"
                           "  </usage>\n"
                           "</secret>\n")
    assert (secrets_dir(embed_root) / f"{UUID}.xml").read_text() == s.XMLDesc()
    assert error_of(s.value)[:2] == (codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET)  # no value yet
    assert s.setValue(VALUE) == 0
    assert s.value() == VALUE
    assert other.undefine() == 0
    assert not (secrets_dir(embed_root) / f"{UUID2}.xml").exists()
    assert error_of(other.XMLDesc)[:2] == (codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET)
    assert s.undefine() == 0
    assert sorted(p.name for p in secrets_dir(embed_root).iterdir()) == []
    assert conn.listAllSecrets() == [] and conn.numOfSecrets() == 0


def test_lookup_mistakes(conn: virConnect) -> None:
    no_secret = (codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET)
    invalid = (codes.VIR_ERR_INVALID_ARG, codes.VIR_FROM_SECRET)
    assert error_of(conn.secretLookupByUUIDString, UUID)[:2] == no_secret
    assert error_of(conn.secretLookupByUUIDString, "nope")[:2] == invalid
    assert error_of(conn.secretLookupByUUID, b"short")[:2] == invalid
    conn.secretDefineXML(volume_secret())
    # a usage is a type and an id: the same id with another type is another usage
    assert error_of(conn.secretLookupByUsage, const.VIR_SECRET_USAGE_TYPE_CEPH,
                    "/var/lib/images/a.qcow2")[:2] == (codes.VIR_ERR_NO_SECRET, codes.VIR_FROM_SECRET)
    code, domain, text = error_of(conn.listAllSecrets, 16)
    assert (code, domain) == (codes.VIR_ERR_INVALID_ARG, codes.VIR_FROM_SECRET) and "0x10" in text


def test_list_filters(conn: virConnect) -> None:
    conn.secretDefineXML(volume_secret(UUID, "/a", private=True))
    conn.secretDefineXML(volume_secret(UUID2, "/b", ephemeral=True))
    def uuids(flags: int) -> list[str]:
        return [s.UUIDString() for s in conn.listAllSecrets(flags)]
    assert uuids(const.VIR_CONNECT_LIST_SECRETS_EPHEMERAL) == [UUID2]
    assert uuids(const.VIR_CONNECT_LIST_SECRETS_NO_EPHEMERAL) == [UUID]
    assert uuids(const.VIR_CONNECT_LIST_SECRETS_PRIVATE) == [UUID]
    assert uuids(const.VIR_CONNECT_LIST_SECRETS_NO_PRIVATE) == [UUID2]
    assert uuids(const.VIR_CONNECT_LIST_SECRETS_EPHEMERAL | const.VIR_CONNECT_LIST_SECRETS_NO_EPHEMERAL) \
        == sorted([UUID, UUID2])
    assert uuids(const.VIR_CONNECT_LIST_SECRETS_EPHEMERAL | const.VIR_CONNECT_LIST_SECRETS_PRIVATE) == []


def test_values_are_encrypted_at_rest_under_a_0600_master_key(conn: virConnect,
                                                                 embed_root: Path) -> None:
    s = conn.secretDefineXML(volume_secret())
    assert not key_file(embed_root).exists()  # made on first use: the first stored value
    s.setValue(VALUE)
    key = key_file(embed_root)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    stored = secrets_dir(embed_root) / f"{UUID}{VALUE_SUFFIX}"
    blob = stored.read_bytes()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE((secrets_dir(embed_root) / f"{UUID}.xml").stat().st_mode) == 0o600
    for plain in (VALUE, VALUE[:12], base64.b64encode(VALUE), base64.b64encode(VALUE)[:12]):
        assert plain not in blob
    assert not (secrets_dir(embed_root) / f"{UUID}.base64").exists()  # libvirt 9.0's plaintext form
    # a second value gets another nonce: the same plaintext never gives the same file
    s.setValue(VALUE)
    assert stored.read_bytes() != blob
    assert key.read_bytes() == key.read_bytes() and s.value() == VALUE
    # nothing else in the tree holds the value
    for path in embed_root.rglob("*"):
        if path.is_file():
            assert VALUE[:12] not in path.read_bytes(), path


def test_a_damaged_or_swapped_value_file_is_refused(conn: virConnect, embed_root: Path) -> None:
    a = conn.secretDefineXML(volume_secret(UUID, "/a"))
    b = conn.secretDefineXML(volume_secret(UUID2, "/b"))
    a.setValue(b"alpha-canary")
    b.setValue(b"bravo-canary")
    d = secrets_dir(embed_root)
    (d / f"{UUID2}{VALUE_SUFFIX}").write_bytes((d / f"{UUID}{VALUE_SUFFIX}").read_bytes())
    code, domain, text = error_of(b.value)
    assert (code, domain) == (codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_SECRET)
    assert "cannot be decrypted" in text and "canary" not in text
    blob = bytearray((d / f"{UUID}{VALUE_SUFFIX}").read_bytes())
    blob[-1] ^= 1
    (d / f"{UUID}{VALUE_SUFFIX}").write_bytes(bytes(blob))
    assert "cannot be decrypted" in error_of(a.value)[2]


def test_a_master_key_readable_by_others_is_refused(embed_root: Path) -> None:
    c = open_conn(f"qemu:///embed?root={embed_root}")
    c.secretDefineXML(volume_secret()).setValue(VALUE)
    c.close()
    key_file(embed_root).chmod(0o644)
    c = open_conn(f"qemu:///embed?root={embed_root}")
    try:
        code, _, text = error_of(c.secretLookupByUUIDString(UUID).value)
        assert code == codes.VIR_ERR_OPERATION_FAILED
        assert "0644" in text and "chmod 600" in text
    finally:
        c.close()


def test_a_lost_master_key_is_not_silently_replaced(embed_root: Path) -> None:
    c = open_conn(f"qemu:///embed?root={embed_root}")
    c.secretDefineXML(volume_secret()).setValue(VALUE)
    c.secretDefineXML(volume_secret(UUID2, "/b"))
    c.close()
    key_file(embed_root).unlink()
    c = open_conn(f"qemu:///embed?root={embed_root}")
    try:
        code, _, text = error_of(c.secretLookupByUUIDString(UUID).value)
        assert code == codes.VIR_ERR_INTERNAL_ERROR and "is missing" in text
        code, _, text = error_of(c.secretLookupByUUIDString(UUID2).setValue, b"new")
        assert code == codes.VIR_ERR_OPERATION_FAILED and f"{UUID}{VALUE_SUFFIX}" in text
        assert not key_file(embed_root).exists()
    finally:
        c.close()


def test_private_secret_values_are_refused_to_callers_but_not_to_pyvirt(conn: virConnect) -> None:
    s = conn.secretDefineXML(volume_secret(private=True))
    s.setValue(VALUE)
    code, domain, text = error_of(s.value)
    assert (code, domain) == (codes.VIR_ERR_INVALID_SECRET, codes.VIR_FROM_SECRET)
    assert "secret is private" in text
    assert driver_for(conn.driver).secret_value(UUID) == VALUE  # for QEMU's encrypted disks
    # a private secret cannot be made public by redefining it
    code, domain, text = error_of(conn.secretDefineXML, volume_secret(private=False))
    assert (code, domain) == (codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_SECRET)
    assert "private flag" in text


def test_the_value_a_domain_names_is_found_for_pyvirt(conn: virConnect) -> None:
    conn.secretDefineXML(volume_secret(private=True)).setValue(VALUE)
    conn.secretDefineXML(f"<secret><uuid>{UUID2}</uuid><usage type='ceph'><name>client.a</name></usage>"
                         "</secret>").setValue(b"cephx")
    secrets = driver_for(conn.driver)
    volume, ceph = const.VIR_SECRET_USAGE_TYPE_VOLUME, const.VIR_SECRET_USAGE_TYPE_CEPH
    assert secrets.secret_for(volume, uuid=UUID) == VALUE
    assert secrets.secret_for(volume, usage_id="/var/lib/images/a.qcow2") == VALUE
    assert secrets.secret_for(ceph, usage_id="client.a") == b"cephx"
    code, domain, text = error_of(lambda: secrets.secret_for(volume, uuid=UUID2))
    assert (code, domain) == (codes.VIR_ERR_INVALID_ARG, codes.VIR_FROM_NONE)  # libvirt's (virsecret.c)
    assert text == f"invalid argument: secret with uuid {UUID2} is of type 'ceph' not expected 'volume' type"
    assert error_of(lambda: secrets.secret_for(volume, usage_id="/nope"))[0] == codes.VIR_ERR_NO_SECRET


def test_ephemeral_secrets_never_touch_the_disk(conn: virConnect, embed_root: Path) -> None:
    s = conn.secretDefineXML(volume_secret(ephemeral=True))
    s.setValue(VALUE)
    assert s.value() == VALUE
    assert not secrets_dir(embed_root).exists() or list(secrets_dir(embed_root).iterdir()) == []
    assert not key_file(embed_root).exists()
    for path in embed_root.rglob("*"):
        if path.is_file():
            assert VALUE[:12] not in path.read_bytes() and UUID not in path.read_text(errors="replace"), path
    # made persistent: the value is stored (sealed); made ephemeral again: the files go, the value stays
    conn.secretDefineXML(volume_secret())
    assert (secrets_dir(embed_root) / f"{UUID}{VALUE_SUFFIX}").exists()
    conn.secretDefineXML(volume_secret(ephemeral=True))
    assert list(secrets_dir(embed_root).iterdir()) == []
    assert s.value() == VALUE
    s.undefine()
    assert conn.numOfSecrets() == 0


def test_ephemeral_secrets_vanish_with_the_instance(embed_root: Path) -> None:
    c = open_conn(f"qemu:///embed?root={embed_root}")
    c.secretDefineXML(volume_secret(ephemeral=True))
    c.close()
    c = open_conn(f"qemu:///embed?root={embed_root}")
    try:
        assert c.listAllSecrets() == []
    finally:
        c.close()


def test_a_usage_belongs_to_one_secret(conn: virConnect, embed_root: Path) -> None:
    conn.secretDefineXML(volume_secret())
    code, domain, text = error_of(conn.secretDefineXML, volume_secret(UUID2))
    assert (code, domain) == (codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_SECRET)
    assert text == (f"internal error: a secret with UUID {UUID} already defined for use with "
                    "/var/lib/images/a.qcow2")
    assert not (secrets_dir(embed_root) / f"{UUID2}.xml").exists()
    # the same UUID may not change its usage id
    code, _, text = error_of(conn.secretDefineXML, volume_secret(UUID, "/other"))
    assert code == codes.VIR_ERR_INTERNAL_ERROR and "is already defined for use with" in text
    # the same id under another usage type is another usage; usage type 'none' is never taken
    conn.secretDefineXML(f"<secret><uuid>{UUID2}</uuid><usage type='iscsi'><target>/var/lib/images/a.qcow2"
                         "</target></usage></secret>")
    conn.secretDefineXML("<secret/>")
    conn.secretDefineXML("<secret/>")
    assert conn.numOfSecrets() == 4


def test_bad_xml_changes_nothing(conn: virConnect, embed_root: Path) -> None:
    for doc, code in (("<secret", codes.VIR_ERR_XML_DETAIL), ("<secret><usage type='x'/></secret>",
                                                             codes.VIR_ERR_CONFIG_UNSUPPORTED),
                      ("<domain/>", codes.VIR_ERR_XML_ERROR)):
        assert error_of(conn.secretDefineXML, doc)[0] == code
    assert error_of(conn.secretDefineXML, "<secret/>", 2)[0] == codes.VIR_ERR_INVALID_ARG
    assert conn.numOfSecrets() == 0
    assert not secrets_dir(embed_root).exists() or list(secrets_dir(embed_root).iterdir()) == []


def test_a_read_only_connection_reads_but_changes_nothing(conn: virConnect, embed_root: Path) -> None:
    conn.secretDefineXML(volume_secret()).setValue(VALUE)
    ro = openReadOnly(f"qemu:///embed?root={embed_root}")
    try:
        s = ro.secretLookupByUUIDString(UUID)
        assert "<volume>" in s.XMLDesc()
        for call, args in ((ro.secretDefineXML, (volume_secret(UUID2, "/b"),)), (s.value, ()),
                           (s.setValue, (b"x",)), (s.undefine, ())):
            assert error_of(call, *args)[:2] == (codes.VIR_ERR_OPERATION_DENIED, codes.VIR_FROM_SECRET)
    finally:
        ro.close()
    assert conn.secretLookupByUUIDString(UUID).value() == VALUE


def test_values_are_never_logged(conn: virConnect, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pyvirt"):
        s = conn.secretDefineXML(volume_secret())
        s.setValue(b"loggable-canary")
        assert s.value() == b"loggable-canary"
        s.undefine()
    assert caplog.records  # the operations are logged...
    for record in caplog.records:
        assert "canary" not in record.getMessage()  # ...their values never


def test_a_new_process_finds_definitions_and_values(embed_root: Path) -> None:
    c = open_conn(f"qemu:///embed?root={embed_root}")
    c.secretDefineXML(volume_secret()).setValue(VALUE)
    c.close()
    out = subprocess.run([sys.executable, "-c", (
        "import sys, pyvirt\n"
        f"c = pyvirt.open('qemu:///embed?root={embed_root}')\n"
        f"sys.stdout.buffer.write(c.secretLookupByUsage(1, '/var/lib/images/a.qcow2').value())\n")],
        capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == VALUE


def test_a_broken_definition_file_is_skipped(embed_root: Path) -> None:
    c = open_conn(f"qemu:///embed?root={embed_root}")
    c.secretDefineXML(volume_secret())
    c.close()
    (secrets_dir(embed_root) / f"{UUID2}.xml").write_text("<secret")
    (secrets_dir(embed_root) / "5e4f5c1e-0000-4e33-9a0c-3d6b2d8f1a10.xml").write_text(
        volume_secret(UUID2, "/x"))  # its <uuid> is not its file's name
    c = open_conn(f"qemu:///embed?root={embed_root}")
    try:
        assert c.listSecrets() == [UUID]
    finally:
        c.close()


# -- pyvirsh --------------------------------------------------------------------------------------------


def test_pyvirsh_secret_commands(embed_root: Path, tmp_path: Path) -> None:
    xml = tmp_path / "s.xml"
    xml.write_text(volume_secret())
    r = pyvirsh(embed_root, "secret-define", str(xml))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Secret {UUID} created\n\n".encode()
    r = pyvirsh(embed_root, "secret-list")
    assert r.stdout.decode() == (
        " UUID                                   Usage\n"
        + "-" * (1 + 36 + 3 + len("volume /var/lib/images/a.qcow2") + 2) + "\n"
        f" {UUID}   volume /var/lib/images/a.qcow2\n\n")
    r = pyvirsh(embed_root, "secret-dumpxml", UUID)
    assert r.stdout.decode() == volume_secret_xml() + "\n"
    value_file = tmp_path / "v.b64"
    value_file.write_text(base64.b64encode(VALUE).decode() + "\n")
    r = pyvirsh(embed_root, "secret-set-value", UUID, "--file", str(value_file))
    assert (r.returncode, r.stdout) == (0, b"Secret value set\n\n"), r.stderr
    r = subprocess.run([PYVIRSH, "-q", "-c", f"qemu:///embed?root={embed_root}", "secret-get-value", UUID],
                       capture_output=True, timeout=120)
    assert r.stdout == base64.b64encode(VALUE)  # as virsh: no newline of its own
    assert pyvirsh(embed_root, "secret-get-value", UUID, "--plain").stdout == VALUE + b"\n"
    raw = tmp_path / "raw"
    raw.write_bytes(b"raw bytes\n")
    assert pyvirsh(embed_root, "secret-set-value", UUID, "--file", str(raw), "--plain").returncode == 0
    assert pyvirsh(embed_root, "secret-get-value", UUID, "--plain").stdout == b"raw bytes\n\n"
    r = pyvirsh(embed_root, "secret-set-value", UUID, "--interactive", stdin=b"typed secret\n")
    assert r.returncode == 0 and r.stdout.startswith(b"Enter new value for secret:"), r.stderr
    assert pyvirsh(embed_root, "secret-get-value", UUID, "--plain").stdout == b"typed secret\n"
    r = pyvirsh(embed_root, "secret-undefine", UUID)
    assert (r.returncode, r.stdout) == (0, f"Secret {UUID} deleted\n\n".encode())
    assert pyvirsh(embed_root, "-q", "secret-list").stdout == b""


def volume_secret_xml() -> str:
    return ("<secret ephemeral='no' private='no'>\n"
            f"  <uuid>{UUID}</uuid>\n"
            "  <description>disk a</description>\n"
            "  <usage type='volume'>\n"
            "    <volume>/var/lib/images/a.qcow2</volume>\n"
            "  </usage>\n"
            "</secret>\n")


def test_pyvirsh_never_takes_a_value_from_the_command_line(embed_root: Path, tmp_path: Path) -> None:
    xml = tmp_path / "s.xml"
    xml.write_text(volume_secret())
    assert pyvirsh(embed_root, "secret-define", str(xml)).returncode == 0
    for args in (("--base64", "aGk="), ("aGk=",)):
        r = pyvirsh(embed_root, "secret-set-value", UUID, *args)
        assert r.returncode == 1
        assert b"insecure" in r.stderr and b"--file" in r.stderr and b"Nothing was set" in r.stderr
    assert b"does not have a value" in pyvirsh(embed_root, "secret-get-value", UUID).stderr
    r = pyvirsh(embed_root, "secret-set-value", UUID)
    assert r.returncode == 1 and b"Input secret value is missing" in r.stderr
    r = pyvirsh(embed_root, "secret-set-value", UUID, "--interactive", "--plain")
    assert b"mutually exclusive" in r.stderr


def test_pyvirsh_mistakes(embed_root: Path, tmp_path: Path) -> None:
    xml = tmp_path / "s.xml"
    xml.write_text(volume_secret(private=True))
    assert pyvirsh(embed_root, "secret-define", str(xml)).returncode == 0
    bad = tmp_path / "bad"
    bad.write_bytes(b"not base64!")
    r = pyvirsh(embed_root, "secret-set-value", UUID, "--file", str(bad))
    assert r.returncode == 1 and b"is not base64" in r.stderr and b"--plain" in r.stderr
    big = tmp_path / "big"
    big.write_bytes(b"A" * 2048)
    assert b"too large" in pyvirsh(embed_root, "secret-set-value", UUID, "--file", str(big)).stderr
    plain = tmp_path / "plain"
    plain.write_bytes(b"hidden")
    assert pyvirsh(embed_root, "secret-set-value", UUID, "--file", str(plain), "--plain").returncode == 0
    r = pyvirsh(embed_root, "secret-get-value", UUID)
    assert r.returncode == 1 and r.stderr == b"error: Invalid secret: secret is private\n"
    assert b"hidden" not in r.stdout
    r = pyvirsh(embed_root, "secret-dumpxml", UUID2)
    assert r.stderr.decode().splitlines() == [
        f"error: failed to get secret '{UUID2}'",
        f"error: Secret not found: no secret with matching uuid '{UUID2}'"]
    (tmp_path / "dup.xml").write_text(volume_secret(UUID2))
    r = pyvirsh(embed_root, "secret-define", str(tmp_path / "dup.xml"))
    assert r.stderr.decode().splitlines()[0] == f"error: Failed to set attributes from {tmp_path / 'dup.xml'}"
    assert "already defined for use with" in r.stderr.decode()
    assert os.path.exists(embed_root / "etc" / "secrets" / f"{UUID}.xml")
