# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's secret driver against libvirt 9.0's embedded secret driver (``secret:///embed``).

tests/compat/secret_script.py runs once with /usr/bin/python3 and Debian's python3-libvirt on
libvirt's embedded secret driver, once with pyvirt on a pyvirt embed root: every step (XML output,
values, lookups, list filters, error code and domain of each mistake) must give the same result,
apart from the difference below. Then the definition files both left under ROOT/etc/secrets, and
virsh's and pyvirsh's secret commands over the two roots, are compared.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oracle import SYSTEM_PYTHON, VIRSH, libvirt_available

pytestmark = pytest.mark.oracle

SCRIPT = Path(__file__).with_name("secret_script.py")
PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))

#: Steps where pyvirt differs from the embedded libvirt on purpose, with what each side gives.
KNOWN_DIFFERENCES: dict[str, tuple[Any, Any]] = {
    # libvirt's secret driver refuses a private secret's value unless the caller's identity is the
    # driver's own (virIdentityIsCurrentElevated). An embedded libvirt has no client identity, so
    # the check itself fails: "internal error: No current identity", VIR_FROM_IDENTITY (53). Through
    # libvirtd the same check gives VIR_ERR_INVALID_SECRET "secret is private", which is what pyvirt
    # reports to every API caller (pyvirt's own users of the value, such as QEMU's encrypted disks,
    # go through SecretDriver.secret_value instead).
    "get private value": (["error", 1, 53], ["error", 65, 30]),
}


@pytest.fixture
def roots() -> Iterator[tuple[Path, Path]]:
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    parent = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))
    try:
        yield parent / "lv", parent / "pv"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def run_script(python: str, which: str, root: Path) -> dict[str, Any]:
    out = subprocess.run([python, str(SCRIPT), which, str(root)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{which} run failed:\n{out.stderr}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


_UUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def generated_uuids(root: Path, fixed: set[str]) -> set[str]:
    return {p.name[:36] for p in (root / "etc" / "secrets").glob("*.xml")} - fixed


def test_the_same_script_gives_the_same_results(roots: tuple[Path, Path]) -> None:
    lv_root, pv_root = roots
    theirs = run_script(SYSTEM_PYTHON, "libvirt", lv_root)
    ours = run_script(sys.executable, "pyvirt", pv_root)
    assert set(theirs) == set(ours)
    for step, (libvirt_gives, pyvirt_gives) in KNOWN_DIFFERENCES.items():
        assert (theirs.pop(step), ours.pop(step)) == (libvirt_gives, pyvirt_gives), step
    assert ours == theirs
    # the script's mistakes are among the steps compared: bad XML, unknown UUID, duplicate usage
    assert theirs["bad xml: malformed"] == ["error", 35, 30]
    assert theirs["lookup unknown uuid"] == ["error", 66, 30]
    assert theirs["duplicate usage"] == ["error", 1, 30]

    # The definitions are stored alike (the files' names and content); values are not: libvirt 9.0
    # keeps them as plain base64, pyvirt sealed (pyvirt.secret.vault).
    lv_dir, pv_dir = lv_root / "etc" / "secrets", pv_root / "etc" / "secrets"
    fixed = {p.name[:36] for p in lv_dir.glob("*.xml") if p.name[:36] in json.dumps(theirs)}
    assert len(fixed) == 5
    for uuid in fixed:
        assert (pv_dir / f"{uuid}.xml").read_text() == (lv_dir / f"{uuid}.xml").read_text(), uuid
    assert len(generated_uuids(lv_root, fixed)) == len(generated_uuids(pv_root, fixed)) == 4
    assert sorted(p.suffix for p in lv_dir.iterdir() if p.suffix != ".xml") == [".base64", ".base64"]
    assert sorted(p.suffix for p in pv_dir.iterdir() if p.suffix != ".xml") == [".aes256gcm", ".aes256gcm"]

    # pyvirt reads the definitions libvirt wrote (a root moved from libvirt to pyvirt keeps them)
    moved = lv_root.parent / "moved"
    (moved / "etc").mkdir(parents=True)
    shutil.copytree(lv_dir, moved / "etc" / "secrets", ignore=shutil.ignore_patterns("*.base64"))
    listed = subprocess.run([sys.executable, "-c", "import sys, pyvirt\n"
                             "c = pyvirt.open('qemu:///embed?root=' + sys.argv[1])\n"
                             "print('\\n'.join(s.XMLDesc() for s in c.listAllSecrets()))", str(moved)],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    stored = [(lv_dir / f"{u}.xml").read_text() for u in sorted(p.name[:36] for p in lv_dir.glob("*.xml"))]
    assert listed.stdout == "\n".join(stored) + "\n"

    # virsh and pyvirsh over the two roots
    def normal(text: str, root: Path) -> list[str]:
        generated = generated_uuids(root, fixed)
        text = _UUID.sub(lambda m: "UUID" if m.group(0) in generated else m.group(0), text)
        return sorted(text.splitlines())

    vol = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"
    for args in (("secret-list",), ("secret-list", "--private"), ("secret-list", "--no-private"),
                 ("secret-list", "--ephemeral"), ("secret-dumpxml", vol),
                 ("secret-dumpxml", "11111111-2222-3333-4444-555555555555"), ("secret-get-value", "nope")):
        virsh = subprocess.run([VIRSH, "-c", f"secret:///embed?root={lv_root}", *args], capture_output=True,
                               text=True, timeout=60)
        pyvirsh = subprocess.run([PYVIRSH, "-c", f"qemu:///embed?root={pv_root}", *args], capture_output=True,
                                 text=True, timeout=60)
        assert pyvirsh.returncode == virsh.returncode, args
        assert normal(pyvirsh.stdout, pv_root) == normal(virsh.stdout, lv_root), args
        assert pyvirsh.stderr == virsh.stderr, args
    # get-value prints base64 (the vol secret was made private by the script: set a public one)
    tls = "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a"
    value = tempfile.NamedTemporaryFile("w", suffix=".b64", dir="/tmp", delete=False)
    try:
        value.write(base64.b64encode(b"tls key\n").decode())
        value.close()
        for tool, uri in ((VIRSH, f"secret:///embed?root={lv_root}"), (PYVIRSH, f"qemu:///embed?root={pv_root}")):
            done = subprocess.run([tool, "-c", uri, "secret-set-value", tls, "--file", value.name],
                                  capture_output=True, text=True, timeout=60)
            assert (done.returncode, done.stdout) == (0, "Secret value set\n\n"), (tool, done.stderr)
    finally:
        Path(value.name).unlink()
    as_base64 = base64.b64encode(b"tls key\n").decode() + "\n"
    for plain, expected in (((), as_base64), (("--plain",), "tls key\n\n")):
        got = [subprocess.run([tool, "-c", uri, "secret-get-value", tls, *plain], capture_output=True,
                              text=True, timeout=60).stdout
               for tool, uri in ((VIRSH, f"secret:///embed?root={lv_root}"),
                                 (PYVIRSH, f"qemu:///embed?root={pv_root}"))]
        assert got[0] == got[1] == expected, plain
