# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's command line against libvirt 9.0's ``domxml-to-native qemu-argv``, document by document.

The documents are run through Debian's python3-libvirt in one embedded root (one capability probe for
the module).  The argument lists must be equal after this normalisation, and nothing else:

* libvirt names the master key file absolutely, pyvirt relative to QEMU's working directory (its
  private directory, so that an unprivileged QEMU needs no search permission above it);
* ``-netdev`` values are left out: domxml-to-native turns every interface into a tap with a made-up
  fd, where pyvirt builds user networking for type 'user' (the NIC -device must still be equal);
* the per-domain directories (libvirt's root vs the test runtime's) become LIB/ and CHAN/.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from test_command_golden import CORPUS, build, parse  # noqa: E402

from pyvirt.qemu.command import QemuCommand, format_argv_line  # noqa: E402

from oracle import SYSTEM_PYTHON, LibvirtEmbed, libvirt_available  # noqa: E402

pytestmark = pytest.mark.oracle

# The reference's example configs first, then documents that exercise each device family.
CASES = ["drvqemu-example-qemu", "drvqemu-example-kvm", "drvqemu-commandline", "chardev-types",
         "watchdog-balloon-rng", "disk-bus-inference-pc", "many-pci-devices-pc", "controllers-q35",
         "graphics-vnc", "graphics-multi-video", "cpu-topology-only", "watchdog-q35", "console-only",
         "panic-isa"]

ORACLE_SCRIPT = r"""
import json, sys, libvirt
libvirt.virEventRegisterDefaultImpl()
libvirt.registerErrorHandler(lambda *a: None, None)
conn = libvirt.open("qemu:///embed?root=" + sys.argv[1])
out = {}
for path in sys.argv[2:]:
    out[path] = conn.domainXMLToNative("qemu-argv", open(path).read(), 0)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def libvirt_lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not libvirt_available():
        pytest.fail("libvirt 9.0 (virsh) is missing: run scripts/setup.sh --test")
    embed = LibvirtEmbed.create(tmp_path_factory.mktemp("lv") / "root")
    paths = [str(p) for p in CORPUS if p.stem in CASES]
    res = subprocess.run([SYSTEM_PYTHON, "-c", ORACLE_SCRIPT, str(embed.root), *paths], capture_output=True,
                         text=True, check=True, timeout=300)
    return {Path(path).stem: line for path, line in json.loads(res.stdout).items()}


@pytest.fixture(scope="module")
def libvirt_argv(libvirt_lines: dict[str, str]) -> dict[str, list[str]]:
    out = {}
    for case, line in libvirt_lines.items():
        words = shlex.split(line)
        start = next(i for i, w in enumerate(words) if w.startswith("/usr/bin/qemu"))
        out[case] = words[start + 1:]
    return out


def normalise(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for w in argv:
        if skip:
            skip = False
            continue
        if w == "-netdev":
            skip = True
            continue
        w = re.sub(r"/[^,\"]*/domain-+1-[^/]*/", "LIB/", w)
        w = w.replace('"file":"LIB/master-key.aes"', '"file":"master-key.aes"')
        w = re.sub(r"LIB/(org\.)", r"CHAN/\1", w)
        out.append(w)
    return out


def devices(argv: list[str]) -> list[tuple[object, ...]]:
    """(driver, id, bus, addr, unit, scsi-id, bootindex) of every -device, in order."""
    out: list[tuple[object, ...]] = []
    for opt, val in pairwise(argv):
        if opt == "-device" and val.startswith("{"):
            p = json.loads(val)
            out.append((p["driver"], p.get("id"), p.get("bus"), p.get("addr"), p.get("unit"),
                        p.get("scsi-id"), p.get("bootindex")))
    return out


def test_cases_are_supported() -> None:
    assert set(CASES) <= {p.stem for p in CORPUS}


@pytest.mark.parametrize("case", CASES)
def test_same_devices_buses_and_boot_order(case: str, libvirt_argv: dict[str, list[str]]) -> None:
    ours = build(parse((CORPUS[0].parent / f"{case}.xml").read_text())).argv
    theirs = libvirt_argv[case]
    assert devices(ours) == devices(theirs)


@pytest.mark.parametrize("case", CASES)
def test_same_command_line(case: str, libvirt_argv: dict[str, list[str]]) -> None:
    ours = build(parse((CORPUS[0].parent / f"{case}.xml").read_text())).argv
    assert normalise(ours) == normalise(libvirt_argv[case])


@pytest.mark.parametrize("case", CASES)
def test_same_shell_quoting(case: str, libvirt_lines: dict[str, str]) -> None:
    """pyvirt's printer, fed libvirt's own words, prints libvirt's line."""
    line = libvirt_lines[case]
    words = shlex.split(line)
    start = next(i for i, w in enumerate(words) if w.startswith("/usr/bin/qemu"))
    env = dict(w.split("=", 1) for w in words[:start])
    cmd = QemuCommand(binary=words[start], argv=words[start + 1:], env=env)
    assert format_argv_line(cmd) == line


NETWORKED = ("<domain type='qemu'><name>nets</name><uuid>2b1e6f0a-4c1d-4f5e-8a3b-9c0d1e2f3a4b</uuid>"
             "<memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices>"
             "<interface type='network'><mac address='52:54:00:aa:bb:01'/><source network='default'/>"
             "<model type='virtio'/></interface>"
             "<interface type='bridge'><mac address='52:54:00:aa:bb:02'/><source bridge='br0'/></interface>"
             "</devices></domain>\n")


def test_domxml_to_native_turns_network_and_bridge_nics_into_taps(libvirt_embed: LibvirtEmbed, tmp_path: Path,
                                                                   embed_root: Path) -> None:
    """A pretend start opens no tap: both print a tap with a descriptor number (libvirt's are whatever
    its process had free: 4 from python3-libvirt, 5 from virsh), so the numbers are not compared."""
    import pyvirt

    xml = tmp_path / "nets.xml"
    xml.write_text(NETWORKED)
    theirs = libvirt_embed.virsh("domxml-to-native", "qemu-argv", str(xml)).stdout
    with pyvirt.open(f"qemu:///embed?root={embed_root}") as conn:
        ours = conn.domainXMLToNative("qemu-argv", NETWORKED)

    def netdevs(line: str) -> list[str]:
        words = shlex.split(line)
        taps = [re.sub(r'"fd":"\d+"', '"fd":"N"', b) for a, b in pairwise(words) if a == "-netdev"]
        return taps + [b for a, b in pairwise(words) if a == "-device" and '"netdev"' in b]

    assert netdevs(ours) == netdevs(theirs) and len(netdevs(ours)) == 4
