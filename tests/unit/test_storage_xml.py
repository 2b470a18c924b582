# SPDX-License-Identifier: LGPL-2.1-or-later
"""The storage pool and volume XML models (pyvirt.xml.storage) and the image header probe
(pyvirt.storage.images): libvirt 9.0's parse, defaults, format and errors.

The expected documents and messages are what libvirt 9.0's storage driver gives for the same input
(taken from a private libvirtd with its storage driver; tests/compat/test_storage_compat.py checks
the commands against the real one).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.storage import images
from pyvirt.xml.base import Child, Children, XMLObject, record_parsed_fields
from pyvirt.xml.storage import Pool, Volume, format_pool, parse_pool, parse_size, parse_volume

UUID = "c53f6ea3-ad4d-4388-a831-527e92350e3d"


def test_dir_pool_defaults_and_format_are_libvirts() -> None:
    pool = parse_pool(f"<pool type='dir'><name>p1</name><uuid>{UUID}</uuid><target><path>/tmp//st/p1/</path>"
                      "</target><unknown/></pool>")
    assert format_pool(pool, 0, 0, 0) == (
        "<pool type='dir'>\n"
        "  <name>p1</name>\n"
        f"  <uuid>{UUID}</uuid>\n"
        "  <capacity unit='bytes'>0</capacity>\n"
        "  <allocation unit='bytes'>0</allocation>\n"
        "  <available unit='bytes'>0</available>\n"
        "  <source>\n"
        "  </source>\n"
        "  <target>\n"
        "    <path>/tmp/st/p1</path>\n"
        "  </target>\n"
        "</pool>\n")


def test_permissions_are_normalised_and_kept() -> None:
    pool = parse_pool("<pool type='dir'><name>p2</name><target><path>/tmp/st/p2</path><permissions>"
                      "<mode>711</mode><owner>0</owner><group>0</group><label>foo</label></permissions></target>"
                      "</pool>")
    assert pool.uuid is not None and len(pool.uuid) == 36  # generated, as libvirt's parser does
    assert ("    <permissions>\n      <mode>0711</mode>\n      <owner>0</owner>\n      <group>0</group>\n"
            "      <label>foo</label>\n    </permissions>\n") in format_pool(pool, 1, 2, 3)
    assert "<capacity unit='bytes'>1</capacity>" in format_pool(pool, 1, 2, 3)


def test_logical_and_fs_pools_get_libvirts_defaults() -> None:
    lvm = parse_pool("<pool type='logical'><name>y</name><source><device path='/dev/loop9'/><name>vg</name>"
                     "</source><target><path>/dev/vg</path></target></pool>")
    assert ("  <source>\n    <device path='/dev/loop9'/>\n    <name>vg</name>\n    <format type='lvm2'/>\n"
            "  </source>\n  <target>\n    <path>/dev/vg</path>\n  </target>\n") in format_pool(lvm, 0, 0, 0)
    bare = parse_pool("<pool type='logical'><name>y</name><target><path>/tmp/x</path></target></pool>")
    assert bare.source is not None and bare.source.name == "y" and bare.path == "/dev/y"
    fs = parse_pool("<pool type='fs'><name>y</name><source><device path='/dev/loop9'/></source>"
                    "<target><path>/tmp/x</path></target></pool>")
    assert "    <device path='/dev/loop9'/>\n    <format type='auto'/>\n" in format_pool(fs, 0, 0, 0)


@pytest.mark.parametrize(("xml", "code", "message"), [
    ("<pool type='dir'><target><path>/tmp/x</path></target></pool>", codes.VIR_ERR_XML_ERROR,
     "XML error: missing pool source name element"),
    ("<pool type='foo'><name>x</name><target><path>/tmp/x</path></target></pool>", codes.VIR_ERR_XML_ERROR,
     "XML error: Invalid value for attribute 'type' in element 'pool': 'foo'."),
    ("<pool><name>x</name><target><path>/tmp/x</path></target></pool>", codes.VIR_ERR_XML_ERROR,
     "XML error: Missing required attribute 'type' in element 'pool'"),
    ("<pool type='dir'><name>x</name></pool>", codes.VIR_ERR_XML_ERROR,
     "XML error: missing storage pool target path"),
    ("<pool type='dir'><name>x</name><uuid>zz</uuid><target><path>/tmp/x</path></target></pool>",
     codes.VIR_ERR_XML_ERROR, "XML error: malformed uuid element"),
    ("<pool type='dir'><name>x</name><target><path>/tmp/x</path><permissions><mode>999</mode></permissions>"
     "</target></pool>", codes.VIR_ERR_XML_ERROR, "XML error: malformed octal mode"),
    ("<pool type='dir'><name>x</name><target><path>/tmp/x</path><permissions><owner>ab</owner></permissions>"
     "</target></pool>", codes.VIR_ERR_XML_ERROR, "XML error: malformed owner element"),
    ("<pool type='fs'><name>x</name><target><path>/tmp/x</path></target></pool>", codes.VIR_ERR_XML_ERROR,
     "XML error: missing storage pool source device name"),
    ("<pool type='dir'><name>p/2</name><target><path>/tmp/x</path></target></pool>", codes.VIR_ERR_XML_ERROR,
     "XML error: name p/2 cannot contain '/'"),
    ("<domain/>", codes.VIR_ERR_XML_ERROR, "XML error: expecting root element of 'pool', not 'domain'"),
    ("<pool type='dir'><name>x</name>", codes.VIR_ERR_XML_DETAIL, "(storage_pool_definition): "),
])
def test_pool_errors_are_libvirts(xml: str, code: int, message: str) -> None:
    with pytest.raises(PyvirtError) as exc:
        parse_pool(xml)
    assert (exc.value.code, exc.value.domain) == (code, codes.VIR_FROM_STORAGE)
    assert str(exc.value).startswith(message)


def test_volume_sizes_units_and_parts() -> None:
    vol = parse_volume("<volume type='file'><name>q</name><capacity unit='MiB'>16</capacity>"
                       "<allocation unit='KB'>3</allocation><target><format type='qcow2'/><permissions>"
                       "<mode>0644</mode><owner>1000</owner></permissions><encryption format='luks'>"
                       "<secret type='passphrase' uuid='11111111222233334444555555555555'/></encryption>"
                       "<compat>1.1</compat><nocow/><features><lazy_refcounts/></features></target>"
                       "<backingStore><path>/b</path><format type='raw'/></backingStore></volume>")
    assert (vol.capacity_bytes, vol.allocation_bytes) == (16 * 1024 * 1024, 3000)
    assert vol.format_type == "qcow2"
    assert vol.encryption is not None
    assert vol.encryption.secrets[0].uuid == "11111111-2222-3333-4444-555555555555"
    assert vol.target is not None and vol.target.permissions is not None
    assert vol.target.permissions.mode == "0644" and vol.target.nocow
    assert vol.backing is not None and vol.backing.path == "/b"
    assert parse_volume("<volume><name>r</name><capacity>5</capacity></volume>").allocation_bytes is None
    assert parse_size("10", "G", "capacity") == 10 * 2**30
    assert parse_size("10", "GB", "capacity") == 10 * 10**9
    assert parse_size("10", None, "capacity") == 10


@pytest.mark.parametrize(("xml", "code", "message"), [
    ("<volume><capacity>1</capacity></volume>", codes.VIR_ERR_XML_ERROR,
     "XML error: missing volume name element"),
    ("<volume><name>q</name></volume>", codes.VIR_ERR_XML_ERROR, "XML error: missing capacity element"),
    ("<volume><name>q</name><capacity unit='Q'>1</capacity></volume>", codes.VIR_ERR_INVALID_ARG,
     "invalid argument: unknown suffix 'Q'"),
    ("<volume><name>q</name><capacity>abc</capacity></volume>", codes.VIR_ERR_XML_ERROR,
     "XML error: malformed capacity element"),
    ("<volume><name>q</name><capacity>1</capacity><target><format type='foo'/></target></volume>",
     codes.VIR_ERR_CONFIG_UNSUPPORTED, "unsupported configuration: unknown volume format type foo"),
    ("<volume type='foo'><name>q</name><capacity>1</capacity></volume>", codes.VIR_ERR_CONFIG_UNSUPPORTED,
     "unsupported configuration: unknown volume type 'foo'"),
    ("<volume><name>q</name><capacity>99999999999999999999</capacity></volume>", codes.VIR_ERR_OVERFLOW,
     "Numerical result out of range"),
    ("<volume><name>q</name><capacity>1</capacity><target><encryption format='luks'><secret type='x'/>"
     "</encryption></target></volume>", codes.VIR_ERR_XML_ERROR,
     "XML error: unknown volume encryption secret"),
])
def test_volume_errors_are_libvirts(xml: str, code: int, message: str) -> None:
    with pytest.raises(PyvirtError) as exc:
        parse_volume(xml)
    assert (exc.value.code, exc.value.domain) == (code, codes.VIR_FROM_STORAGE)
    assert str(exc.value).startswith(message)


def test_image_headers_read_as_qemu_img_reads_them(tmp_path: Path) -> None:
    def make(*args: str) -> None:
        subprocess.run(["qemu-img", "create", *args], check=True, capture_output=True)

    make("-f", "qcow2", "-o", "compat=0.10", str(tmp_path / "v2.qcow2"), "3M")
    make("-f", "qcow2", "-o", "compat=1.1,lazy_refcounts=on", "-b", str(tmp_path / "v2.qcow2"), "-F", "qcow2",
         str(tmp_path / "v3.qcow2"), "5M")
    make("-f", "raw", str(tmp_path / "r.img"), "1M")
    v2 = images.probe(tmp_path / "v2.qcow2", (tmp_path / "v2.qcow2").stat().st_size)
    assert (v2.format, v2.capacity, v2.compat, v2.backing) == ("qcow2", 3 * 2**20, None, None)
    v3 = images.probe(tmp_path / "v3.qcow2", (tmp_path / "v3.qcow2").stat().st_size)
    assert (v3.format, v3.capacity, v3.compat, v3.lazy_refcounts) == ("qcow2", 5 * 2**20, "1.1", True)
    assert (v3.backing, v3.backing_format) == (str(tmp_path / "v2.qcow2"), "qcow2")
    raw = images.probe(tmp_path / "r.img", 2**20)
    assert (raw.format, raw.capacity, raw.encryption) == ("raw", 2**20, None)


def _declared(cls: type[XMLObject], seen: set[type[XMLObject]]) -> set[tuple[type, str]]:
    if cls in seen:
        return set()
    seen.add(cls)
    found = {(cls, f.name) for f in cls._fields}
    for f in cls._fields:
        if isinstance(f, Child | Children):
            found |= _declared(f.cls, seen)
    return found


def test_every_declared_field_is_exercised() -> None:
    """Like virt-manager's test_checkprops: a field no document here fills is an untested field."""
    with record_parsed_fields() as log:
        test_permissions_are_normalised_and_kept()
        test_logical_and_fs_pools_get_libvirts_defaults()
        test_volume_sizes_units_and_parts()
        parse_pool(f"<pool type='netfs'><name>d</name><uuid>{UUID}</uuid><source><dir path='/x'/>"
                   "<format type='nfs'/></source><target><path>/t</path></target></pool>")
        parse_volume("<volume><name>t</name><key>/k</key><capacity>1</capacity><physical>1</physical>"
                     "<target><path>/p</path><timestamps><atime>1</atime><mtime>1</mtime><ctime>1</ctime>"
                     "<btime>0</btime></timestamps></target><backingStore><permissions><mode>0600</mode>"
                     "</permissions><timestamps><atime>1</atime></timestamps></backingStore></volume>")
        parse_volume("<volume><name>u</name><capacity>1</capacity><target><encryption format='luks'>"
                     "<secret type='passphrase' usage='/p'/></encryption></target></volume>")
    # the runtime sizes of a pool are output only: libvirt ignores them on input
    output_only = {(Pool, "capacity"), (Pool, "allocation"), (Pool, "available")}
    missing = _declared(Pool, set()) | _declared(Volume, set())
    missing -= log | output_only
    assert not missing, sorted((c.__name__, n) for c, n in missing)


def test_storage_state_lives_in_each_instance_tree() -> None:
    from pyvirt.conf.instance import embed_paths, session_paths, system_paths
    from pyvirt.storage.driver import storage_paths

    embed = storage_paths(embed_paths(Path("/r")))
    assert embed == (Path("/r/etc/storage"), Path("/r/etc/storage/autostart"), Path("/r/run/storage"))
    system = storage_paths(system_paths({"PYVIRT_PREFIX": "/p"}))
    assert system == (Path("/p/etc/pyvirt/storage"), Path("/p/etc/pyvirt/storage/autostart"),
                      Path("/p/run/pyvirt/storage"))
    session = storage_paths(session_paths({"HOME": "/h", "XDG_RUNTIME_DIR": "/run/user/7"}, uid=7))
    assert session == (Path("/h/.config/pyvirt/storage"), Path("/h/.config/pyvirt/storage/autostart"),
                       Path("/run/user/7/pyvirt/storage"))
