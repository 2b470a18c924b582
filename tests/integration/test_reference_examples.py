# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver page's two example configs, started for real through pyvirsh.

Only their host paths change (images made by qemu-img in the root). Their interface asks for
network 'default', which does not exist without a network driver: the start is refused with
libvirt's 'network not found' error, and succeeds once the interface is swapped to type='user'.
The kvm example is first refused for what it is on a host whose KVM cannot run guests (this one:
a nested hypervisor), and then run as type='qemu'.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from lifecycle_support import nothing_left, pyvirsh, uri_of

CORPUS = Path(__file__).parents[1] / "data" / "domain"

#: example -> (domain name, the host paths it names, first VNC port of its root)
EXAMPLES = {
    "drvqemu-example-qemu": ("QEmu-fedora-i686", ["/home/user/boot.iso", "/home/user/fedora.img"], 5960),
    "drvqemu-example-kvm": ("demo2", ["/var/lib/libvirt/images/demo2.img"], 5980),
}


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_reference_example_starts(root: Path, example: str) -> None:
    name, paths, first_port = EXAMPLES[example]
    (root / "etc").mkdir(parents=True)
    # A VNC range of its own: autoport reserves ports within one process only, and the other tests
    # of a parallel run start VNC servers from other processes.
    (root / "etc" / "qemu.conf").write_text(f"remote_display_port_min = {first_port}\n")
    xml = (CORPUS / f"{example}.xml").read_text()
    for path in paths:
        image = root / Path(path).name
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
        xml = xml.replace(path, str(image))
    uri = uri_of(root)
    source = root / "dom.xml"
    source.write_text(xml)
    pyvirsh(uri, "define", str(source))

    if "<domain type='kvm'" in xml and not _kvm_usable(root):
        refused = pyvirsh(uri, "start", name, check=False)
        assert refused.returncode == 1
        assert "requires KVM, but KVM is not usable" in refused.stderr, refused.stderr
        nothing_left(root, name)
        xml = xml.replace("<domain type='kvm'", "<domain type='qemu'")
        source.write_text(xml)
        pyvirsh(uri, "define", str(source))

    refused = pyvirsh(uri, "start", name, check=False)
    assert refused.returncode == 1
    assert "Network not found: no network with matching name 'default'" in refused.stderr
    assert pyvirsh(uri, "domstate", name).stdout == "shut off\n\n"
    nothing_left(root, name)

    user = re.sub(r"<interface type='network'>\s*<source network='default'/>",
                  "<interface type='user'>", xml)
    assert user != xml
    source.write_text(user)
    pyvirsh(uri, "define", str(source))
    assert pyvirsh(uri, "start", name).stdout == f"Domain '{name}' started\n\n"
    try:
        state = pyvirsh(uri, "domstate", "--reason", name).stdout
        log = (root / "log" / "qemu" / f"{name}.log").read_text()
        assert state == "running (booted)\n\n", log
        live = pyvirsh(uri, "dumpxml", name).stdout
        port = re.search(r"<graphics type='vnc' port='(\d+)'", live)
        assert port is not None and int(port.group(1)) >= first_port, live
    finally:
        pyvirsh(uri, "destroy", name, check=False)
    assert pyvirsh(uri, "domstate", "--reason", name).stdout == "shut off (destroyed)\n\n"
    nothing_left(root, name)


def _kvm_usable(root: Path) -> bool:
    from pyvirt.qemu import capabilities

    cache = root / "cache" / "qemu"
    caps = capabilities.caps_for_binary(cache, "/usr/bin/qemu-system-x86_64", capabilities.load_all(cache))
    return caps.kvm.usable
