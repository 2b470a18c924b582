# SPDX-License-Identifier: LGPL-2.1-or-later
"""LUKS disks: pyvirt's ``domxml-to-native`` against libvirt 9.0's (a private libvirtd with its QEMU
and secret drivers, tests/secret_oracle.py), for the same secrets and the same domain XML.

The argument lists must be equal after this normalisation only: the secret objects' ``data`` and
``iv`` (a random IV each, and a random master key, so the ciphertext differs on every call -- their
shape is checked instead), the per-domain directory, and the master key's file name (libvirt's is
absolute, pyvirt's relative to QEMU's working directory). Each way of getting the secret wrong must
give libvirt's error code, domain and message.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from secret_oracle import secret_libvirtd  # noqa: E402

from pyvirt.connection import open as open_conn  # noqa: E402
from pyvirt.errors import PyvirtError  # noqa: E402

import libvirtd_oracle as lo  # noqa: E402

pytestmark = pytest.mark.oracle

U_RAW = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"
U_QCOW = "5e4f5c1e-86f1-4e33-9a0c-3d6b2d8f1a10"
U_CEPH = "3c1d2a4b-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
U_NOVALUE = "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a"
RAW, QCOW = "/var/tmp/pyvirt-no-such-dir/a.luks", "/var/tmp/pyvirt-no-such-dir/b.qcow2"
SECRETS = [
    f"<secret private='yes'><uuid>{U_RAW}</uuid><usage type='volume'><volume>{RAW}</volume></usage></secret>",
    f"<secret><uuid>{U_QCOW}</uuid><usage type='volume'><volume>{QCOW}</volume></usage></secret>",
    f"<secret><uuid>{U_CEPH}</uuid><usage type='ceph'><name>client.a</name></usage></secret>",
    f"<secret><uuid>{U_NOVALUE}</uuid><usage type='volume'><volume>/x</volume></usage></secret>",
]
VALUED = (U_RAW, U_QCOW, U_CEPH)


def disk(dev: str, path: str, fmt: str, encryption: str, *, inside_source: bool = False) -> str:
    source = (f"<source file='{path}'>{encryption}</source>" if inside_source else
              f"<source file='{path}'/>")
    return (f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>{source}"
            f"<target dev='{dev}' bus='virtio'/>{'' if inside_source else encryption}</disk>")


def luks(ref: str) -> str:
    return f"<encryption format='luks'><secret type='passphrase' {ref}/></encryption>"


def domain(disks: str) -> str:
    return ("<domain type='qemu'><name>enc</name><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>"
            "<memory unit='MiB'>128</memory><os><type arch='x86_64' machine='pc'>hvm</type></os>"
            f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{disks}"
            "<memballoon model='none'/></devices></domain>")


CASES: dict[str, str] = {
    "raw by uuid, qcow2 by usage": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_RAW}'"))
                                          + disk("vdb", QCOW, "qcow2", luks(f"usage='{QCOW}'"))),
    "inside source": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_RAW}'"), inside_source=True)),
    "ide cdrom": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_RAW}'")).replace(
        "device='disk'", "device='cdrom'").replace("dev='vda' bus='virtio'", "dev='hdc' bus='ide'")),
    "missing secret": domain(disk("vda", RAW, "raw", luks("uuid='11111111-2222-3333-4444-555555555555'"))),
    "no value": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_NOVALUE}'"))),
    "ceph usage": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_CEPH}'"))),
    "unknown usage": domain(disk("vda", RAW, "raw", luks("usage='/nope'"))),
    "luks2": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_RAW}'").replace("'luks'", "'luks2'"))),
    "qcow": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_RAW}'").replace("'luks'", "'qcow'"))),
    "librbd": domain(disk("vda", RAW, "raw",
                          luks(f"uuid='{U_RAW}'").replace("'luks'", "'luks' engine='librbd'"))),
    "no format": domain(disk("vda", RAW, "raw", luks(f"uuid='{U_RAW}'").replace(" format='luks'", ""))),
}
#: libvirt says only "missing secret info for 'luks' driver"; pyvirt adds which disk and the fix
PREFIX_ONLY = {"no secret": "internal error: missing secret info for 'luks' driver",
               "luks2": "unsupported configuration: luks2 is currently not supported by the qemu "
                        "encryption engine"}
CASES["no secret"] = domain(disk("vda", RAW, "raw", "<encryption format='luks'></encryption>"))
#: the cases both accept
ACCEPTED = ("raw by uuid, qcow2 by usage", "inside source", "ide cdrom")

ORACLE = r"""
for xml in SECRETS:
    s = conn.secretDefineXML(xml)
    if s.UUIDString() in VALUED:
        s.setValue(b"the passphrase")
result = {}
for name, xml in CASES.items():
    try:
        result[name] = ["ok", conn.domainXMLToNative("qemu-argv", xml, 0)]
    except libvirt.libvirtError as e:
        result[name] = ["error", e.get_error_code(), e.get_error_domain(), str(e)]
"""


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[lo.Libvirtd]:
    yield from secret_libvirtd()


@pytest.fixture(scope="module")
def theirs(libvirtd: lo.Libvirtd) -> dict[str, Any]:
    script = (f"SECRETS = {SECRETS!r}\nVALUED = {VALUED!r}\nCASES = {CASES!r}\n{ORACLE}")
    result: dict[str, Any] = libvirtd.oracle(script)
    return result


@pytest.fixture(scope="module")
def ours() -> Iterator[dict[str, Any]]:
    # short: an embed root may be at most 46 bytes long (pytest's tmp_path under xdist is longer)
    parent = Path(tempfile.mkdtemp(prefix="pv-enc-", dir="/tmp"))
    try:
        yield _ours(parent / "r")
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _ours(root: Path) -> dict[str, Any]:
    conn = open_conn(f"qemu:///embed?root={root}")
    try:
        for xml in SECRETS:
            s = conn.secretDefineXML(xml)
            if s.UUIDString() in VALUED:
                s.setValue(b"the passphrase")
        out: dict[str, Any] = {}
        for name, xml in CASES.items():
            try:
                out[name] = ["ok", conn.domainXMLToNative("qemu-argv", xml, 0)]
            except PyvirtError as e:
                out[name] = ["error", e.get_error_code(), e.get_error_domain(), str(e)]
        return out
    finally:
        conn.close()


def argv(line: str) -> list[str]:
    words = shlex.split(line)
    start = next(i for i, w in enumerate(words) if w.startswith("/usr/bin/qemu"))
    return words[start + 1:]


def normalise(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if w.startswith("{") and '"qom-type":"secret"' in w and '"keyid"' in w:
            obj = json.loads(w)
            assert len(base64.b64decode(obj["iv"], validate=True)) == 16
            data = base64.b64decode(obj["data"], validate=True)
            assert len(data) % 16 == 0 and data  # AES-CBC blocks of the padded passphrase
            obj["data"], obj["iv"] = "DATA", "IV"
            w = json.dumps(obj, separators=(",", ":"))
        w = re.sub(r"/[^,\"]*/domain--1-enc/", "LIB/", w)
        w = w.replace('"file":"LIB/master-key.aes"', '"file":"master-key.aes"')
        out.append(w)
    return out


def test_cases_give_the_same_outcome_kind(theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    assert {k: v[0] for k, v in ours.items()} == {k: v[0] for k, v in theirs.items()}
    assert tuple(k for k, v in theirs.items() if v[0] == "ok") == ACCEPTED


@pytest.mark.parametrize("case", ACCEPTED)
def test_same_command_line(case: str, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    mine, libvirts = argv(ours[case][1]), argv(theirs[case][1])
    assert normalise(mine) == normalise(libvirts)
    # the passphrase is nowhere in either, in plain text or base64
    encoded = base64.b64encode(b"the passphrase").decode()
    for words in (mine, libvirts):
        assert not any("the passphrase" in w or encoded in w for w in words)


@pytest.mark.parametrize("case", [c for c in CASES if c not in ACCEPTED])
def test_same_error(case: str, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    assert theirs[case][0] == "error"
    code, dom, message = ours[case][1:]
    assert (code, dom) == tuple(theirs[case][1:3]), (ours[case], theirs[case])
    if case in PREFIX_ONLY:
        assert theirs[case][3] == PREFIX_ONLY[case]
        assert message.startswith(PREFIX_ONLY[case]), message
    elif case == "no format":
        assert theirs[case][3] == "XML error: unknown volume encryption format"
        assert message.startswith("unknown volume encryption format"), message
    else:
        assert message == theirs[case][3]
