# SPDX-License-Identifier: LGPL-2.1-or-later
"""Golden command lines: every corpus document -> tests/data/qemu-argv/<case>.args (one argument per
line, environment first as NAME=value lines) or <case>.err (what the builder does not support yet).

Regenerate with PYVIRT_REGENERATE_GOLDEN=1; review the diff, real QEMU checks the .args files in
tests/integration/test_command_qemu.py and libvirt 9.0 in tests/compat/test_command_compat.py.
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest

from pyvirt.conf.qemu_conf import QemuConf
from pyvirt.qemu.capabilities import KvmStatus, QemuCaps, QemuCapsFlag
from pyvirt.qemu.command import CommandRuntime, CommandUnsupported, QemuCommand, build_command
from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig
from pyvirt.xml.domain import Domain, parse_domain

DATA = Path(__file__).parents[1] / "data"
CORPUS = sorted((DATA / "domain").glob("*.xml"))
GOLDEN = DATA / "qemu-argv"
REGENERATE = os.environ.get("PYVIRT_REGENERATE_GOLDEN") == "1"

# QEMU 7.2 on this machine, as far as the builder looks at it: every flag, no usable KVM.
CAPS = QemuCaps(binary="/usr/bin/qemu-system-x86_64", version=7002000, package="", target="x86_64",
                probe_accel="tcg", machines=[], cpu_models=[], flags=frozenset(QemuCapsFlag),
                types=frozenset(), commands=frozenset(), kvm=KvmStatus(False, False, "tests"))
CONF = QemuConf()


def parse(xml: str) -> Domain:
    # Seeded: UUIDs, genids and MACs the document leaves out must come out the same every run.
    ctx = dataclasses.replace(DEFAULT_X86_64_CONTEXT, rng=random.Random(4))
    return parse_domain(xml, ctx=QemuDomainConfig(ctx))


def runtime_for(dom: Domain, root: str = "/var/lib/pyvirt-test") -> CommandRuntime:
    lib = f"{root}/domain-1-{dom.name}"
    nets = dom.devices.interfaces if dom.devices is not None else []
    return CommandRuntime(domain_id=1, lib_dir=lib, monitor_path=f"{lib}/monitor.sock",
                          channel_dir=f"{root}/channel/domain-1-{dom.name}",
                          tap_fds={f"net{i}": [100 + i] for i in range(len(nets))})


def build(dom: Domain) -> QemuCommand:
    return build_command(dom, CAPS, CONF, runtime_for(dom))


def golden_text(cmd: QemuCommand) -> str:
    lines = [f"{k}={v}" for k, v in cmd.env.items()] + [cmd.binary, *cmd.argv]
    return "\n".join(lines) + "\n"


def _check(path: Path, text: str) -> None:
    if REGENERATE:
        path.write_text(text)
    assert path.exists(), f"{path.name} is missing: run with PYVIRT_REGENERATE_GOLDEN=1"
    assert path.read_text() == text


@pytest.mark.parametrize("doc", CORPUS, ids=lambda p: p.stem)
def test_golden(doc: Path) -> None:
    dom = parse(doc.read_text())
    args, err = GOLDEN / f"{doc.stem}.args", GOLDEN / f"{doc.stem}.err"
    try:
        cmd = build(dom)
    except CommandUnsupported as e:
        if REGENERATE:
            args.unlink(missing_ok=True)
        _check(err, str(e) + "\n")
        return
    if REGENERATE:
        err.unlink(missing_ok=True)
    _check(args, golden_text(cmd))


def test_supported_share_of_the_corpus_does_not_shrink() -> None:
    supported = [p for p in CORPUS if (GOLDEN / f"{p.stem}.args").exists()]
    assert len(supported) >= 41  # a ratchet: raise it as device families are added


def test_no_stale_golden_files() -> None:
    stems = {p.stem for p in CORPUS}
    assert {p.stem for p in GOLDEN.iterdir()} <= stems
