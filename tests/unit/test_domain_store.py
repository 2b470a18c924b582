# SPDX-License-Identifier: LGPL-2.1-or-later
"""The store of definitions reads names, UUIDs and the figures of virDomainGetInfo from the files
without the XML models; for every document of the corpus that must equal what the models say."""

from __future__ import annotations

import dataclasses
import random
import sys
from pathlib import Path

import pytest

from pyvirt.qemu.domains import DomainStore, _summary_of
from pyvirt.qemu.postparse import DEFAULT_X86_64_CONTEXT, QemuDomainConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_command_golden import CORPUS  # noqa: E402


def store(d: Path) -> DomainStore:
    return DomainStore(d, lambda: QemuDomainConfig(dataclasses.replace(DEFAULT_X86_64_CONTEXT,
                                                                       rng=random.Random(4))))


@pytest.mark.parametrize("doc", CORPUS, ids=lambda p: p.stem)
def test_names_uuids_and_summaries_without_parsing_equal_the_models(doc: Path, tmp_path: Path) -> None:
    dom = store(tmp_path).define(doc.read_text())
    fresh = store(tmp_path)  # a later process: nothing parsed yet
    name = dom.name or ""
    assert fresh.names() == [name] and fresh.uuid_of(name) == dom.uuid
    assert fresh.summary(name) == _summary_of(dom)
    assert fresh._parsed == {}  # none of that needed the models
    again = fresh.get_by_uuid(dom.uuid or "")
    assert (again.name, again.uuid, again.memory) == (dom.name, dom.uuid, dom.memory)


def test_a_hand_written_file_is_parsed_instead(tmp_path: Path) -> None:
    (tmp_path / "odd.xml").write_text(
        "<domain type='qemu'><uuid>8f2c4a1e-1b2c-4d5e-8f90-0a1b2c3d4e5f</uuid><name>odd</name>"
        "<memory unit='MiB'>64</memory><vcpu current='1'>2</vcpu><os><type>hvm</type></os></domain>")
    s = store(tmp_path)
    assert s.names() == ["odd"] and s.uuid_of("odd") == "8f2c4a1e-1b2c-4d5e-8f90-0a1b2c3d4e5f"
    summary = s.summary("odd")
    assert summary is not None and (summary.memory, summary.vcpus) == (65536, 1)
