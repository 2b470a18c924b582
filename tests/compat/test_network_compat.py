# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's network driver against libvirt 9.0's: the same virsh steps, the same output.

libvirt's side is Debian's virsh against a private libvirtd with its network driver, in a mount and
network namespace of its own (tests/network_oracle.py); libvirt cannot embed networks. pyvirt's side
is pyvirsh on an embed root, in a network namespace too (starting a network makes a bridge). pyvirt
defines a 'default' network on first use where libvirt's package installs one: it is removed first,
so both start from no network at all.

Generated values (UUIDs, MACs) are replaced by placeholders on both sides; everything else must be
equal, except that pyvirt's error messages may go on after libvirt's text with where and how to fix.
libvirt 9.0 here starts only networks without firewall rules (it needs iptables, which this host
lacks), so the started network is an 'open' one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from network_oracle import in_netns, start_network_libvirtd, virsh

pytestmark = pytest.mark.oracle

DOCS = {
    "nat": "<network><name>nat1</name><forward/><ip address='10.81.0.1' netmask='255.255.255.0'><dhcp>"
           "<range start='10.81.0.2' end='10.81.0.254'/></dhcp></ip></network>",
    "route": "<network><name>n2</name><forward mode='route'/><bridge stp='off' delay='2'/>"
             "<mac address='52:54:00:AA:BB:CC'/>"
             "<dns><host ip='10.82.0.5'><hostname>h5</hostname></host></dns>"
             "<ip address='10.82.0.1' prefix='24'><dhcp><range start='10.82.0.10' end='10.82.0.20'/>"
             "<host mac='52:54:00:00:00:01' name='g1' ip='10.82.0.11'/></dhcp></ip></network>",
    "isolated": "<network><name>iso</name><ip address='10.83.0.1' prefix='24'/></network>",
    "bridge": "<network><name>br</name><forward mode='bridge'/><bridge name='br0'/></network>",
    "fixed": "<network><name>fixed</name><uuid>11111111-2222-3333-4444-555555555555</uuid>"
             "<bridge name='virbr9'/><ip address='10.84.0.1' prefix='24'/></network>",
    "open": "<network><name>o1</name><forward mode='open'/><bridge name='virbr7'/>"
            "<ip address='10.85.0.1' prefix='24'><dhcp><range start='10.85.0.2' end='10.85.0.9'/></dhcp></ip>"
            "</network>",
    # refused
    "noname": "<network><ip address='10.9.0.1' prefix='24'/></network>",
    "slash": "<network><name>a/b</name></network>",
    "badip": "<network><name>b1</name><ip address='10.9.0.300' prefix='24'/></network>",
    "badprefix": "<network><name>b2</name><ip address='10.9.0.1' prefix='40'/></network>",
    "rangeout": "<network><name>b3</name><ip address='10.9.0.1' prefix='24'><dhcp><range start='10.8.0.2' "
                "end='10.8.0.9'/></dhcp></ip></network>",
    "rangerev": "<network><name>b4</name><ip address='10.9.0.1' prefix='24'><dhcp><range start='10.9.0.9' "
                "end='10.9.0.2'/></dhcp></ip></network>",
    "badmode": "<network><name>b5</name><forward mode='bogus'/></network>",
    "notnet": "<domain/>",
    "dupuuid": "<network><name>other</name><uuid>11111111-2222-3333-4444-555555555555</uuid></network>",
    "dupname": "<network><name>fixed</name><uuid>11111111-2222-3333-4444-555555555556</uuid></network>",
    "dupbridge": "<network><name>ok3</name><bridge name='virbr9'/></network>",
    "badmac": "<network><name>b8</name><mac address='zz'/></network>",
    "mcastmac": "<network><name>b9</name><mac address='01:00:00:00:00:01'/></network>",
    "hostnomac": "<network><name>b10</name><ip address='10.9.0.1' prefix='24'><dhcp><host ip='10.9.0.5'/>"
                 "</dhcp></ip></network>",
    "both": "<network><name>b13</name><ip address='10.9.0.1' netmask='255.255.255.0' prefix='24'/></network>",
}
GOOD = ["nat", "route", "isolated", "bridge", "fixed"]
BAD = ["noname", "slash", "badip", "badprefix", "rangeout", "rangerev", "badmode", "notnet", "dupuuid",
       "dupname", "dupbridge", "badmac", "mcastmac", "hostnomac", "both"]
FIXED_UUID = "11111111-2222-3333-4444-555555555555"


def steps(d: str) -> list[list[str]]:
    """The virsh steps, with document files under ``d``."""
    s = [["net-define", f"{d}/{k}.xml"] for k in GOOD]
    s += [["net-dumpxml", n] for n in ("nat1", "n2", "iso", "br", "fixed")]
    s += [["net-list", "--all"], ["net-list", "--all", "--name"], ["net-list", "--inactive"], ["net-list"],
          ["net-info", "n2"], ["net-info", "br"], ["net-uuid", "fixed"], ["net-name", FIXED_UUID],
          ["net-name", "nosuch"], ["net-autostart", "n2"], ["net-list", "--all", "--autostart"],
          ["net-list", "--all", "--no-autostart", "--name"], ["net-autostart", "--disable", "n2"],
          ["net-create", f"{d}/open.xml"], ["net-list", "--all"], ["net-info", "o1"], ["net-dumpxml", "o1"],
          ["net-dhcp-leases", "o1"], ["net-create", f"{d}/open.xml"], ["net-destroy", "o1"],
          ["net-start", "nosuch"], ["net-destroy", "n2"], ["net-undefine", "iso"], ["net-dumpxml", "iso"],
          ["net-dhcp-leases", "n2"], ["net-list", "--all"], ["net-list", "--table", "--name"],
          ["net-list", "--all", "--name", "--uuid"],
          ["net-dumpxml", "--inactive", "n2"]]
    s += [["net-define", f"{d}/{k}.xml"] for k in BAD + ["nat"]]  # nat: redefined without its UUID
    s += [["net-undefine", n] for n in ("nat1", "n2", "br", "fixed")]
    s += [["net-list", "--all"]]
    return s


def normalize(text: str) -> str:
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                  lambda m: m.group(0) if m.group(0) == FIXED_UUID else "UUID", text)
    return re.sub(r"52:54:00(:[0-9a-f]{2}){3}", lambda m: m.group(0) if m.group(0).endswith("aa:bb:cc")
                  else "MAC", text)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("netdocs")
    for k, v in DOCS.items():
        (d / f"{k}.xml").write_text(v)
    return d


@pytest.fixture(scope="module")
def libvirt_run(docs: Path) -> Iterator[list[tuple[int, str, str]]]:
    daemon = start_network_libvirtd()
    try:
        results = []
        for step in steps(str(docs)):
            r = virsh(daemon, *step)
            results.append((r.returncode, r.stdout, r.stderr))
        yield results
    finally:
        daemon.stop()


PYVIRT_SCENARIO = r"""
import io, json, sys, tempfile
from pathlib import Path
root = Path(tempfile.mkdtemp(prefix="pvc-", dir="/tmp"))
uri = f"qemu:///embed?root={root}"
from pyvirt.cli import pyvirsh
def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    rc = pyvirsh.main(["-c", uri, *argv], out=out, err=err)
    return [rc, out.getvalue(), err.getvalue()]
# libvirt's daemon here has no 'default' network: start from none, as it does
run("net-destroy", "default"); run("net-undefine", "default")
steps = json.loads(sys.argv[1])
results = [run(*s) for s in steps]
run("net-destroy", "o1")
import shutil; shutil.rmtree(root, ignore_errors=True)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def pyvirt_run(docs: Path) -> list[tuple[int, str, str]]:
    return [tuple(r) for r in in_netns(PYVIRT_SCENARIO, json.dumps(steps(str(docs))))]


def _ids() -> list[str]:
    return [" ".join(Path(a).name if "/" in a else a for a in s) for s in steps("D")]


@pytest.mark.parametrize("index", range(len(steps("D"))), ids=_ids())
def test_same_step_same_output(index: int, libvirt_run: Any, pyvirt_run: Any, docs: Path) -> None:
    ref_rc, ref_out, ref_err = libvirt_run[index]
    rc, out, err = pyvirt_run[index]
    assert rc == ref_rc, (out, err, ref_out, ref_err)
    assert normalize(out) == normalize(ref_out)
    if ref_err:
        # libvirt's lines, each perhaps continued by pyvirt with where and how to fix
        ref_lines = normalize(ref_err).splitlines()
        lines = normalize(err).splitlines()
        if steps(str(docs))[index][0] == "net-define" and "(network_definition)" in ref_err:
            ref_lines, lines = ref_lines[:1], lines[:1]  # libxml2's report after the first line differs
        assert len(lines) == len(ref_lines), (err, ref_err)
        for line, ref in zip(lines, ref_lines, strict=True):
            assert line.startswith(ref.rstrip()), (line, ref)
    else:
        assert err == ""
