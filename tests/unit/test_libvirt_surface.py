# SPDX-License-Identifier: LGPL-2.1-or-later
"""``import pyvirt as libvirt``: libvirt-python's names, and the same numbers as libvirt-python."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import pyvirt as libvirt

from oracle import SYSTEM_PYTHON


def test_a_libvirt_script_runs(embed_root: Path) -> None:
    conn = libvirt.open(f"qemu:///embed?root={embed_root}")
    try:
        assert conn.getType() == "QEMU"
        assert libvirt.getVersion() == conn.getLibVersion()
        with pytest.raises(libvirt.libvirtError) as exc:
            conn.lookupByName("nosuch")
        assert exc.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
        assert exc.value.get_error_domain() == libvirt.VIR_FROM_QEMU
    finally:
        conn.close()


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="VIR_NO_SUCH_THING"):
        libvirt.VIR_NO_SUCH_THING  # noqa: B018


@pytest.mark.oracle
def test_constants_equal_libvirt_pythons() -> None:
    names = [n for n in ("VIR_ERR_NO_DOMAIN", "VIR_ERR_XML_ERROR", "VIR_ERR_OPERATION_INVALID",
                         "VIR_FROM_QEMU", "VIR_FROM_DOMAIN", "VIR_DOMAIN_XML_INACTIVE",
                         "VIR_DOMAIN_XML_SECURE", "VIR_DOMAIN_DEFINE_VALIDATE")]
    script = f"import json, libvirt; print(json.dumps({{n: getattr(libvirt, n) for n in {names!r}}}))"
    theirs = json.loads(subprocess.run([SYSTEM_PYTHON, "-c", script], capture_output=True, text=True,
                                       check=True).stdout)
    assert {n: getattr(libvirt, n) for n in names} == theirs
