# SPDX-License-Identifier: LGPL-2.1-or-later
"""The pool-* and vol-* command sequence that tests/compat/test_storage_compat.py (embedded pyvirt)
and tests/daemon/test_storage_rpc.py (pyvirtd) run against virsh on libvirt 9.0's storage driver,
and the masking of what differs between any two runs (generated UUIDs, file timestamps, the free
space of the host's file system)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

__all__ = ["UUID", "steps", "run_all", "compare"]

UUID = "8a1c1a7e-3c2e-4f43-9a61-5e1d2a3b4c5d"
_UUID = UUID


def steps(work: Path) -> list[list[str]]:
    pool = work / "pool"
    pool_xml = work / "pool.xml"
    pool_xml.write_text(f"<pool type='dir'><name>sp</name><uuid>{_UUID}</uuid>"
                        f"<target><path>{pool}/</path><permissions><mode>0750</mode></permissions></target>"
                        "</pool>\n")
    vol_xml = work / "vol.xml"
    vol_xml.write_text("<volume><name>x.qcow2</name><capacity unit='MiB'>8</capacity>"
                       "<allocation>0</allocation>"
                       "<target><format type='qcow2'/><permissions><mode>0644</mode></permissions>"
                       "<compat>1.1</compat><features><lazy_refcounts/></features></target></volume>\n")
    from_xml = work / "from.xml"
    from_xml.write_text("<volume><name>y.img</name><capacity unit='MiB'>1</capacity>"
                        "<target><format type='raw'/></target></volume>\n")
    bad = work / "bad.xml"
    bad.write_text("<pool type='dir'><name>x</name>")
    payload = work / "payload"
    payload.write_bytes(bytes(range(256)) * 40)
    down = work / "down"
    return [
        ["pool-list", "--all"],
        ["pool-define", str(pool_xml)],
        ["pool-define", str(bad)],
        ["pool-define-as", "sp", "dir", "--target", "/tmp/elsewhere"],
        ["pool-define-as", "a/b", "dir", "--target", "/tmp/elsewhere"],
        ["pool-info", "sp"],
        ["pool-dumpxml", "sp"],
        ["vol-list", "sp"],
        ["pool-start", "sp"],
        ["pool-build", "sp"],
        ["pool-start", "sp"],
        ["pool-start", "sp"],
        ["pool-list", "--all"],
        ["pool-list", "--all", "--details"],
        ["pool-info", _UUID],
        ["pool-dumpxml", "sp"],
        ["pool-dumpxml", "--inactive", "sp"],
        ["pool-autostart", "sp"],
        ["pool-list", "--autostart"],
        ["pool-autostart", "--disable", "sp"],
        ["vol-create-as", "sp", "a.img", "10M"],
        ["vol-create-as", "sp", "a.img", "10M"],
        ["vol-create-as", "sp", "../evil", "1M"],
        ["vol-create-as", "sp", "q", "12Q"],
        ["vol-create-as", "sp", "b.qcow2", "20M", "--format", "qcow2"],
        ["vol-create-as", "sp", "c.qcow2", "20M", "--format", "qcow2", "--backing-vol", str(pool / "b.qcow2"),
         "--backing-vol-format", "qcow2"],
        ["vol-create", "sp", str(vol_xml)],
        ["vol-create-from", "sp", str(from_xml), "--inputpool", "sp", "a.img"],
        ["vol-clone", "--pool", "sp", "c.qcow2", "d.qcow2"],
        ["vol-list", "sp"],
        ["vol-list", "sp", "--details"],
        ["vol-info", "--pool", "sp", "c.qcow2"],
        ["vol-info", "--pool", "sp", "--bytes", "y.img"],
        ["vol-dumpxml", "--pool", "sp", "c.qcow2"],
        ["vol-dumpxml", "--pool", "sp", "x.qcow2"],
        ["vol-dumpxml", str(pool / "a.img")],
        ["vol-path", "--pool", "sp", "a.img"],
        ["vol-key", str(pool / "a.img")],
        ["vol-name", str(pool / "a.img")],
        ["vol-pool", str(pool / "a.img")],
        ["vol-info", "--pool", "sp", "nope"],
        ["vol-info", "--pool", "nopool", "a.img"],
        ["vol-resize", "--pool", "sp", "a.img", "5M"],
        ["vol-resize", "--pool", "sp", "a.img", "16M"],
        ["vol-resize", "--pool", "sp", "b.qcow2", "10M"],
        ["vol-resize", "--pool", "sp", "b.qcow2", "30M"],
        ["vol-info", "--pool", "sp", "--bytes", "b.qcow2"],
        ["vol-upload", "--pool", "sp", "a.img", str(payload)],
        ["vol-download", "--pool", "sp", "a.img", str(down), "--length", "10240"],
        ["vol-wipe", "--pool", "sp", "y.img"],
        ["vol-delete", "--pool", "sp", "d.qcow2"],
        ["vol-delete", "--pool", "sp", "d.qcow2"],
        ["pool-refresh", "sp"],
        ["vol-list", "sp"],
        ["pool-undefine", "sp"],
        ["pool-delete", "sp"],
        ["pool-destroy", "sp"],
        ["pool-destroy", "sp"],
        ["pool-info", "sp"],
        ["vol-list", "sp"],
        ["pool-list", "--all", "--details"],
        ["pool-delete", "sp"],
        ["pool-undefine", "sp"],
        ["pool-list", "--all"],
    ]


_MASKS = [
    (re.compile(r"<(atime|mtime|ctime)>[0-9.]+</"), r"<\1>T</"),
    # the host file system's sizes (pool capacity/allocation/available) move as files are written
    (re.compile(r"<(capacity|allocation|available) unit='bytes'>[1-9][0-9]{9,}</"), r"<\1 unit='bytes'>FS</"),
    (re.compile(r"^(Capacity|Allocation|Available):( +)[0-9.]+ GiB$", re.M), r"\1:\2FS"),
    (re.compile(r"[0-9.]+ GiB"), "FS"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
     lambda m: m.group(0) if m.group(0) == _UUID else "UUID"),
]


def _mask(text: str) -> str:
    # libxml2's report of a malformed document: libvirt adds the offending line and a caret under
    # a column of its own reckoning; pyvirt gives libxml2's message with line and column. Only
    # the first words are compared.
    text = re.sub(r"\(storage_pool_definition\):.*?(?=\n(?!-|<)|\Z)", "(storage_pool_definition): XML",
                  text, flags=re.S)
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)  # type: ignore[arg-type]
    # tables are padded to their widest cell: collapse runs of spaces and dashes
    text = re.sub(r" {2,}", "  ", text)
    return re.sub(r"-{5,}", "-----", text)


def run_all(binary: str, uri: str, work: Path) -> list[tuple[str, str, str, int]]:
    results = []
    for step in steps(work):
        out = subprocess.run([binary, "-c", uri, *step], capture_output=True, text=True, timeout=120)
        results.append((" ".join(step), _mask(out.stdout), _mask(out.stderr), out.returncode))
    return results



def compare(ours: list[tuple[str, str, str, int]], theirs: list[tuple[str, str, str, int]]) -> list[str]:
    """The steps whose stdout, stderr or status differ, each with both sides."""
    return [f"{lib[0]}:\n  virsh:   {lib[1:]!r}\n  pyvirt: {mine[1:]!r}"
            for mine, lib in zip(ours, theirs, strict=True) if mine != lib]
