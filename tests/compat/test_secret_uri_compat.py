# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt's secret driver URIs in pyvirt (``secret:///embed?root=DIR``, ``secret:///system``,
``secret:///session``) against libvirt 9.0's embedded secret driver: the same secret script gives
the same results, and the calls a secret-only connection does not serve fail with libvirt's words.
The secrets are the instance's: a qemu:///embed connection of the same root sees them and its
encrypted disks use them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvirt import _errcodes as codes
from pyvirt.connection import open as open_conn
from pyvirt.connection import openReadOnly
from pyvirt.errors import InvalidURIError, NoConnectError, PyvirtError

from oracle import SYSTEM_PYTHON, libvirt_available

pytestmark = pytest.mark.oracle

SCRIPT = Path(__file__).with_name("secret_script.py")
U_VOL = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"

#: the steps where pyvirt differs on purpose (see tests/compat/test_secret_compat.py)
KNOWN_DIFFERENCES = {"get private value": (["error", 1, 53], ["error", 65, 30])}

CALLS = r"""
import importlib, json, sys
which, root = sys.argv[1], sys.argv[2]
libvirt = importlib.import_module(which)
if which == "libvirt":
    libvirt.virEventRegisterDefaultImpl()
    libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open("secret:///embed?root=" + root)
out = {}
for name, args in [("getType", ()), ("getLibVersion", ()), ("isAlive", ()), ("isSecure", ()),
                   ("isEncrypted", ()), ("getVersion", ()), ("getHostname", ()), ("getCapabilities", ()),
                   ("listAllDomains", ()), ("numOfDomains", ()), ("listDomainsID", ()),
                   ("lookupByName", ("x",)), ("defineXML", ("<domain/>",)), ("getInfo", ()),
                   ("domainXMLToNative", ("qemu-argv", "<domain/>")), ("getDomainCapabilities", ()),
                   ("listAllNetworks", ()), ("networkLookupByName", ("default",)),
                   ("listAllStoragePools", ()), ("numOfSecrets", ()), ("listSecrets", ())]:
    try:
        out[name] = getattr(conn, name)(*args)
    except libvirt.libvirtError as e:
        out[name] = ["error", e.get_error_code(), e.get_error_domain(), e.get_error_message()]
out["uri"] = conn.getURI() == "secret:///embed?root=" + root
conn.close()
print(json.dumps(out))
"""


@pytest.fixture
def roots() -> Iterator[tuple[Path, Path]]:
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    parent = Path(tempfile.mkdtemp(prefix="su-", dir="/tmp"))
    try:
        yield parent / "lv", parent / "pv"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def run(python: str, args: list[str]) -> dict[str, Any]:
    out = subprocess.run([python, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_the_secret_script_over_secret_embed_gives_libvirts_results(roots: tuple[Path, Path]) -> None:
    lv_root, pv_root = roots
    theirs = run(SYSTEM_PYTHON, [str(SCRIPT), "libvirt", str(lv_root)])
    ours = run(sys.executable, [str(SCRIPT), "pyvirt", str(pv_root), "secret"])
    for step, (libvirt_gives, pyvirt_gives) in KNOWN_DIFFERENCES.items():
        assert (theirs.pop(step), ours.pop(step)) == (libvirt_gives, pyvirt_gives), step
    assert ours == theirs
    # stored where libvirt's embedded secret driver stores them (the script's fixed UUIDs; the
    # others were generated)
    names = [{p.name for p in (r / "etc" / "secrets").glob("*.xml")} for r in (pv_root, lv_root)]
    assert len(names[0]) == len(names[1]) > 0
    fixed = {n for n in names[1] if n[:36] in json.dumps(theirs)}
    assert len(fixed) == 5 and fixed <= names[0]


def test_calls_a_secret_connection_does_not_serve(roots: tuple[Path, Path]) -> None:
    lv_root, pv_root = roots
    theirs = run(SYSTEM_PYTHON, ["-c", CALLS, "libvirt", str(lv_root)])
    ours = run(sys.executable, ["-c", CALLS, "pyvirt", str(pv_root)])
    assert ours == theirs
    assert theirs["listAllDomains"] == ["error", 3, 20, "this function is not supported by the connection "
                                                        "driver: virConnectListAllDomains"]
    assert theirs["getType"] == "secret" and theirs["uri"] is True


def test_secrets_are_the_instances() -> None:
    root = Path(tempfile.mkdtemp(prefix="su-", dir="/tmp")) / "r"
    try:
        sec = open_conn(f"secret:///embed?root={root}")
        qemu = open_conn(f"qemu:///embed?root={root}")
        try:
            s = sec.secretDefineXML(f"<secret><uuid>{U_VOL}</uuid><usage type='volume'><volume>/i.img"
                                    "</volume></usage></secret>")
            s.setValue(b"pass")
            assert qemu.secretLookupByUUIDString(U_VOL).value() == b"pass"
            # a LUKS disk of the qemu connection finds it
            argv = qemu.domainXMLToNative("qemu-argv", (
                "<domain type='qemu'><name>e</name><memory>65536</memory><os><type>hvm</type></os><devices>"
                "<disk type='file'><driver name='qemu' type='raw'/><source file='/i.img'/><target dev='vda'/>"
                "<encryption format='luks'><secret type='passphrase' usage='/i.img'/></encryption></disk>"
                "</devices></domain>"))
            assert '"key-secret":"libvirt-1-format-encryption-secret0"' in argv
            assert s.connect() is sec
        finally:
            qemu.close()
            sec.close()
        with pytest.raises(PyvirtError, match="closed"):
            sec.numOfSecrets()
        # read-only: lookups yes, changes no (libvirt's words and domain)
        ro = openReadOnly(f"secret:///embed?root={root}")
        try:
            assert ro.numOfSecrets() == 1
            with pytest.raises(PyvirtError) as exc:
                ro.secretLookupByUUIDString(U_VOL).undefine()
            assert exc.value.get_error_code() == codes.VIR_ERR_OPERATION_DENIED
            assert str(exc.value) == "operation forbidden: read only access prevents virSecretUndefine"
        finally:
            ro.close()
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


@pytest.mark.parametrize(("uri", "error", "words"), [
    ("secret:///embed", InvalidURIError, "needs a root directory"),
    ("secret:///embed?root=rel", InvalidURIError, "must be an absolute path"),
    ("secret:///foo", InvalidURIError, "unexpected secret URI path '/foo'"),
    ("secret+unix:///system", InvalidURIError, "takes no transport or host"),
    ("secret://host/system", InvalidURIError, "takes no transport or host"),
    ("secret:///system?root=/x", InvalidURIError, "takes no parameters"),
    ("nosuch:///system", NoConnectError, "secret:///embed?root=DIR"),
])
def test_bad_secret_uris(uri: str, error: type[PyvirtError], words: str) -> None:
    with pytest.raises(error, match=words.replace("?", r"\?")):
        open_conn(uri)
