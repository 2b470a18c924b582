# SPDX-License-Identifier: LGPL-2.1-or-later
"""Debian's virsh 9.0 and python3-libvirt 9.0, unmodified, against pyvirtd -- and the same
commands against a real libvirtd 9.0: the outputs must be the same, after replacing what
legitimately differs (the URI each was given).

How a real client reaches pyvirtd's embed instance: libvirt's remote driver refuses
``qemu+unix:///embed?...`` ("URI scheme 'qemu+unix' for embedded driver is not valid"), so the
URI is ``qemu+unix:///system?socket=ROOT/run/libvirt-sock``; the client then sends
``qemu:///system`` in CONNECT_OPEN, which an embed daemon takes to mean its own instance.
Over TCP: ``qemu+tcp://127.0.0.1:PORT/system``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pyvirt.rpc.protocol import RemoteError
from pyvirt.rpc.sync import Client

from .testlib import SYSTEM_PYTHON, VIRSH, Pyvirtd

pytestmark = pytest.mark.oracle

_HAVE_CAPS = importlib.util.find_spec("pyvirt.qemu.caps_xml") is not None
needs_caps = pytest.mark.skipif(not _HAVE_CAPS, reason="pyvirt.qemu.caps_xml has not landed yet")


def virsh(uri: str, *args: str, readonly: bool = False) -> tuple[int, str, str]:
    argv = [VIRSH, *(["-r"] if readonly else []), "-c", uri, *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                         env={"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    return out.returncode, out.stdout.replace(uri, "URI"), out.stderr.replace(uri, "URI")


_UUID = "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
#: (command, virsh's exit status). virsh 9.0 prints only "error: failed to get domain 'X'" for a
#: failed lookup (the daemon's message is checked through the APIs below).
COMMANDS = [
    (("uri",), 0),
    (("hostname",), 0),
    (("version",), 0),
    (("list", "--all"), 0),
    (("list",), 0),
    (("list", "--all", "--name"), 0),
    (("list", "--inactive", "--uuid"), 0),
    (("nodeinfo",), 0),
    (("dominfo", "nosuch"), 1),
    (("domstate", "nosuch"), 1),
    (("dominfo", "7"), 1),  # by id, then by name
    (("dominfo", _UUID), 1),  # by uuid, then by name
    (("start", "nosuch"), 1),
    (("qemu-monitor-command", "nosuch", "{}"), 1),
]


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize(("command", "status"), COMMANDS, ids=["-".join(c) for c, _ in COMMANDS])
def test_virsh_same_as_libvirtd(pyvirtd: Pyvirtd, libvirtd: Any, transport: str,
                                command: tuple[str, ...], status: int) -> None:
    ours = virsh(pyvirtd.uri(transport), *command)
    theirs = virsh(libvirtd.uri(transport), *command)
    assert ours == theirs
    # both really connected (a failure to connect would look alike once the URIs are replaced)
    assert ours[0] == status and "failed to connect" not in ours[2]


def test_virsh_readonly_socket(pyvirtd: Pyvirtd, libvirtd: Any, tmp_path: Path) -> None:
    xml = tmp_path / "d.xml"
    xml.write_text("<domain type='kvm'><name>x</name><memory>65536</memory>"
                   "<os><type>hvm</type></os></domain>")
    for command in (("list", "--all"), ("hostname",), ("nodeinfo",), ("define", str(xml)),
                    ("domcapabilities",)):
        ours = virsh(pyvirtd.uri(readonly=True), *command, readonly=True)
        theirs = virsh(libvirtd.uri(readonly=True), *command, readonly=True)
        assert ours == theirs, command
        assert "failed to connect" not in ours[2]
    code, _, err = virsh(pyvirtd.uri(readonly=True), "define", str(xml), readonly=True)
    assert code == 1 and "read only access prevents virDomainDefineXML" in err


@needs_caps
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_virsh_capabilities(pyvirtd: Pyvirtd, transport: str) -> None:
    """What virsh gets through the daemon is the API's answer, byte for byte."""
    code, out, err = virsh(pyvirtd.uri(transport), "capabilities")
    assert code == 0, err
    assert out.rstrip("\n") == python_libvirt(pyvirtd.uri(), "result = conn.getCapabilities()").rstrip("\n")
    with Client.open_uri(pyvirtd.uri()) as client:
        assert out.rstrip("\n") == client.call("CONNECT_GET_CAPABILITIES").capabilities.rstrip("\n")
    assert "<capabilities>" in out and "<host>" in out


@needs_caps
def test_virsh_domcapabilities(pyvirtd: Pyvirtd) -> None:
    code, out, err = virsh(pyvirtd.uri(), "domcapabilities")
    assert code == 0, err
    assert "<domainCapabilities>" in out


# ---- libvirt-python ----------------------------------------------------------------------------

def python_libvirt(uri: str, script: str, *, event_loop: bool = False) -> Any:
    prog = ("import json, sys, libvirt\n"
            "libvirt.registerErrorHandler(lambda *a: None, None)\n"
            + ("libvirt.virEventRegisterDefaultImpl()\n" if event_loop else "")
            + "uri = sys.argv[1]\n"
            "conn = libvirt.open(uri)\n"
            f"{script}\n"
            "conn.close()\n"
            "print(json.dumps(result))\n")
    out = subprocess.run([SYSTEM_PYTHON, "-c", prog, uri], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"libvirt-python failed:\n{out.stderr}")
    return json.loads(out.stdout)


_FACTS = r"""
def err(f):
    try:
        f()
    except libvirt.libvirtError as e:
        return [e.get_error_code(), e.get_error_domain(), e.get_error_message(), e.get_error_level()]
    return None
ro = libvirt.openReadOnly(uri)
result = {
    "type": conn.getType(),
    "hostname": conn.getHostname(),
    "info": conn.getInfo(),
    "libver": conn.getLibVersion(),
    "secure": conn.isSecure(),
    "encrypted": conn.isEncrypted(),
    "alive": conn.isAlive(),
    "secmodel": conn.getSecurityModel(),
    "all": [d.name() for d in conn.listAllDomains()],
    "all_flags": [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)],
    "ids": conn.listDomainsID(),
    "defined": conn.listDefinedDomains(),
    "num": [conn.numOfDomains(), conn.numOfDefinedDomains()],
    "by_name": err(lambda: conn.lookupByName("nosuch")),
    "by_uuid": err(lambda: conn.lookupByUUIDString("4dea22b3-1d52-d8f3-2516-782e98ab3fa0")),
    "by_id": err(lambda: conn.lookupByID(7)),
    "keepalive": err(lambda: conn.setKeepAlive(5, 3)),
    "ro_type": ro.getType(),
    "ro_all": [d.name() for d in ro.listAllDomains()],
    "ro_define": err(lambda: ro.defineXML("<domain type='kvm'><name>x</name></domain>")),
    "ro_domcaps": err(lambda: ro.getDomainCapabilities()),
    "ro_by_name": err(lambda: ro.lookupByName("nosuch")),
}
ro.close()
"""


@pytest.mark.parametrize("event_loop", [False, True], ids=["plain", "event-loop"])
@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_python_libvirt_same_as_libvirtd(pyvirtd: Pyvirtd, libvirtd: Any, transport: str,
                                         event_loop: bool) -> None:
    ours = python_libvirt(pyvirtd.uri(transport), _FACTS, event_loop=event_loop)
    theirs = python_libvirt(libvirtd.uri(transport), _FACTS, event_loop=event_loop)
    assert ours == theirs
    assert ours["by_name"][:3] == [42, 10, "Domain not found: no domain with matching name 'nosuch'"]
    # without an event loop, setKeepAlive fails client-side in both; with one, it works
    assert (ours["keepalive"] is None) == event_loop


@needs_caps
def test_python_libvirt_capabilities_and_version(pyvirtd: Pyvirtd, libvirtd: Any) -> None:
    script = "result = [conn.getVersion(), conn.getCapabilities()]"
    version, caps = python_libvirt(pyvirtd.uri(), script)
    lv_version, _ = python_libvirt(libvirtd.uri(), script)
    assert version == lv_version  # the same QEMU binary
    assert caps.startswith("<capabilities>")


def test_python_libvirt_version(pyvirtd: Pyvirtd, libvirtd: Any) -> None:
    script = "result = [conn.getVersion(), conn.getLibVersion(), conn.getType()]"
    assert python_libvirt(pyvirtd.uri(), script) == python_libvirt(libvirtd.uri(), script)


# ---- pyvirt's own client ---------------------------------------------------------------------

_CALLS = ["CONNECT_GET_TYPE", "CONNECT_GET_LIB_VERSION", "CONNECT_GET_HOSTNAME", "NODE_GET_INFO",
          "NODE_GET_SECURITY_MODEL", "CONNECT_IS_SECURE", "CONNECT_NUM_OF_DOMAINS",
          "CONNECT_NUM_OF_DEFINED_DOMAINS", "CONNECT_GET_VERSION"]


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_pyvirt_client_same_as_libvirtd(pyvirtd: Pyvirtd, libvirtd: Any, transport: str) -> None:
    def facts(uri: str) -> dict[str, Any]:
        with Client.open_uri(uri, keepalive_interval=1) as c:
            out: dict[str, Any] = {name: c.call(name) for name in _CALLS}
            out["all"] = c.call("CONNECT_LIST_ALL_DOMAINS", need_results=1, flags=3)
            out["ids"] = c.call("CONNECT_LIST_DOMAINS", maxids=100)
            out["names"] = c.call("CONNECT_LIST_DEFINED_DOMAINS", maxnames=100)
            out["features"] = [c.call("CONNECT_SUPPORTS_FEATURE", feature=f).supported
                               for f in (10, 99)]
            for name, args in (("DOMAIN_LOOKUP_BY_NAME", {"name": "nosuch"}),
                               ("DOMAIN_LOOKUP_BY_ID", {"id": 3}),
                               ("DOMAIN_LOOKUP_BY_ID", {"id": -3}),
                               ("DOMAIN_LOOKUP_BY_UUID", {"uuid": bytes(range(16))})):
                with pytest.raises(RemoteError) as info:
                    c.call(name, **args)
                e = info.value
                out[f"{name}{args}"] = (e.code, e.domain, e.message, e.str1, e.str2, e.int1)
            return out
    assert facts(pyvirtd.uri(transport)) == facts(libvirtd.uri(transport))


def test_pyvirt_client_uri_is_the_instance(pyvirtd: Pyvirtd) -> None:
    with Client.open_uri(pyvirtd.uri()) as c:
        assert c.call("CONNECT_GET_URI").uri == f"qemu:///embed?root={pyvirtd.root}"
    with Client.connect_unix(pyvirtd.socket) as c:
        c.open(f"qemu:///embed?root={pyvirtd.root}/")  # the same root, spelt differently
        assert c.call("CONNECT_GET_TYPE").type == "QEMU"


def test_pyvirt_client_wrong_instance_refused(pyvirtd: Pyvirtd) -> None:
    for name in ("qemu:///embed?root=/tmp/elsewhere", "test:///default", "qemu+tcp://h/system",
                 "not a uri"):
        with Client.connect_unix(pyvirtd.socket) as c:
            with pytest.raises(RemoteError) as info:
                c.open(name)
            assert info.value.code == 5, name  # VIR_ERR_NO_CONNECT
            assert "this pyvirtd serves qemu:///embed?root=" in info.value.message
            # the connection stays usable: a correct name still opens
            c.open("")
            assert c.call("CONNECT_GET_TYPE").type == "QEMU"
