# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain procedures of pyvirtd, driven by Debian's unmodified virsh 9.0 and python3-libvirt 9.0:
the project's test guest defined, listed, started paused, queried, suspended, resumed, destroyed
and undefined -- each command run against pyvirtd and against a real libvirtd 9.0 (tests/
libvirtd_oracle.py) for the same domain (same name, same UUID), outputs compared after replacing
what legitimately differs: the XML file's and serial log's paths, the domain id, the CPU time.

Error cases are also compared with what pyvirt's embedded API raises on an embed root of its own,
so that the daemon is shown to carry the API's error (code, domain, message) unchanged; where
pyvirt's driver words an error differently from libvirt, that is listed (KNOWN_DRIVER_DIFFERENCES)
and the error code must still agree. Gaps of the driver or API that show through the daemon are
strict xfails (the live XML), so that closing one is noticed.

Domains run paused under TCG (``start --paused``) where that is enough; one test boots the test
guest to reboot and shut it down through ACPI. Every QEMU started here is destroyed by the test
and, whatever fails, killed by the fixtures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lifecycle_support import domain_xml, kill_qemus, qemu_workdir

from pyvirt.errors import PyvirtError
from pyvirt.testing import guest as tg

from .testlib import SYSTEM_PYTHON, VIRSH, Libvirtd, Pyvirtd, own_pyvirtd

pytestmark = [pytest.mark.oracle, pytest.mark.slow]


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon() -> Iterator[Pyvirtd]:
    """A pyvirtd of this module's own (the session one is shared with tests that expect no
    domains), over UNIX and TCP."""
    with own_pyvirtd(listen=True) as d:
        yield d


@pytest.fixture
def workdir() -> Iterator[Path]:
    """XML files and serial logs of one test; any QEMU still using them fails the test."""
    with qemu_workdir("pvdt-") as path:
        yield path


@pytest.fixture
def name() -> str:
    return f"pvd{uuid.uuid4().hex[:8]}"


def guest_xml(name: str, dom_uuid: str, guest: tg.Guest, serial: Path) -> str:
    """The project's test guest with a UUID, so that both daemons hold the very same domain."""
    return domain_xml(name, guest, serial, uuid=dom_uuid)


#: Stands for the side's own XML file in a virsh command line.
XML = "{xml}"


class Side:
    """One server (pyvirtd or libvirtd) with the XML file of the test's domain."""

    def __init__(self, label: str, uri: str, workdir: Path, xml: str) -> None:
        self.label = label
        self.uri = uri
        self.xml_path = workdir / f"{label}.xml"
        self.xml_path.write_text(xml)
        self.serial = workdir / f"{label}-serial.log"

    def virsh(self, *args: str) -> tuple[int, str, str]:
        args = tuple(str(self.xml_path) if a == XML else a for a in args)
        argv = [VIRSH, "-c", self.uri, *args]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                             env={"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
        return out.returncode, self.norm(out.stdout), self.norm(out.stderr)

    def norm(self, text: str) -> str:
        text = text.replace(str(self.xml_path), "XMLFILE").replace(self.uri, "URI")
        text = text.replace(str(self.serial), "SERIAL")
        text = re.sub(r"(?m)^(Id:\s+)\d+$", r"\g<1>ID", text)
        text = re.sub(r"(?m)^ +\d+( +\S+ +(running|paused|idle))", r" ID\g<1>", text)
        return re.sub(r"(?m)^(CPU time:\s+)\S+$", r"\g<1>T", text)

    def python(self, script: str) -> Any:
        return python_libvirt(self.uri, script)


def python_libvirt(uri: str, script: str) -> Any:
    prog = ("import json, sys, libvirt\n"
            "libvirt.registerErrorHandler(lambda *a: None, None)\n"
            "uri = sys.argv[1]\n"
            "conn = libvirt.open(uri)\n"
            "def err(f):\n"
            "    try:\n"
            "        f()\n"
            "    except libvirt.libvirtError as e:\n"
            "        return [e.get_error_code(), e.get_error_domain(), e.get_error_message()]\n"
            "    return None\n"
            f"{script}\n"
            "conn.close()\n"
            "print(json.dumps(result))\n")
    out = subprocess.run([SYSTEM_PYTHON, "-c", prog, uri], capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"libvirt-python failed:\n{out.stderr}")
    return json.loads(out.stdout)


_CLEANUP = """
for d in conn.listAllDomains():
    if d.name() == NAME:
        if d.isActive():
            d.destroy()
        if d.isPersistent():
            d.undefine()
result = None
"""


@pytest.fixture(params=["unix"])
def transport(request: pytest.FixtureRequest) -> str:
    """The transport of the test's clients; a test widens it with indirect parametrization."""
    return str(request.param)


@pytest.fixture
def sides(daemon: Pyvirtd, libvirtd: Libvirtd, workdir: Path, guest: tg.Guest, name: str,
          transport: str) -> Iterator[tuple[Side, Side, str]]:
    """pyvirtd and libvirtd, each with its XML file for the same domain (not yet defined)."""
    dom_uuid = str(uuid.uuid4())
    ours = Side("pyvirtd", daemon.uri(transport), workdir,
                guest_xml(name, dom_uuid, guest, workdir / "pyvirtd-serial.log"))
    assert ours.serial == workdir / "pyvirtd-serial.log"
    theirs = Side("libvirtd", libvirtd.uri(transport), workdir,
                  guest_xml(name, dom_uuid, guest, workdir / "libvirtd-serial.log"))
    try:
        yield ours, theirs, dom_uuid
    finally:
        for side in (ours, theirs):
            with contextlib.suppress(AssertionError):
                side.python(_CLEANUP.replace("NAME", repr(name)))


def _without_messages(result: tuple[int, str, str]) -> tuple[int, str, str]:
    code, out, err = result
    return code, re.sub(r"(?m)^Messages: .*\n(^ {16}.*\n)*", "", out), err


def same(ours: Side, theirs: Side, *args: str, status: int = 0,
         messages: bool = True) -> str:
    """Run one virsh command on both; the outputs must be equal. Returns pyvirtd's stdout.

    ``messages=False`` drops dominfo's "Messages:" (libvirt's taint messages): pyvirt's driver
    keeps no taints and its API has no virDomain.messages yet -- test_dominfo_messages tracks that gap.
    """
    a = ours.virsh(*args)
    b = theirs.virsh(*args)
    if not messages:
        a, b = _without_messages(a), _without_messages(b)
    assert a == b, f"virsh {' '.join(args)}:\npyvirtd:  {a}\nlibvirtd: {b}"
    assert a[0] == status, f"virsh {' '.join(args)}: {a}"
    return a[1]


# ---- virsh ------------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["unix", "tcp"], indirect=True)
def test_virsh_lifecycle_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, dom_uuid = sides
    assert same(ours, theirs, "define", XML) == f"Domain '{name}' defined from XMLFILE\n\n"
    listing = same(ours, theirs, "list", "--all")
    assert f" -    {name}   shut off" in listing
    same(ours, theirs, "list", "--inactive", "--name")
    same(ours, theirs, "list", "--all", "--uuid")
    same(ours, theirs, "list")
    info = same(ours, theirs, "dominfo", name)
    assert f"UUID:           {dom_uuid}" in info and "State:          shut off" in info
    assert same(ours, theirs, "domstate", "--reason", name) == "shut off (unknown)\n\n"
    assert same(ours, theirs, "domid", name) == "-\n\n"
    assert same(ours, theirs, "domuuid", name) == f"{dom_uuid}\n\n"
    assert same(ours, theirs, "domname", dom_uuid) == f"{name}\n\n"
    same(ours, theirs, "dominfo", dom_uuid)
    same(ours, theirs, "autostart", name)
    same(ours, theirs, "dominfo", name)
    same(ours, theirs, "autostart", "--disable", name)
    same(ours, theirs, "dumpxml", "--inactive", name)
    # gone in libvirt 9.0; pyvirt's API adds how to do without it to libvirt's words
    a, b = (side.virsh("domxml-from-native", "qemu-argv", XML) for side in (ours, theirs))
    assert a[:2] == b[:2] == (1, "\n") and a[2].startswith(b[2].rstrip("\n")), (a, b)

    assert same(ours, theirs, "start", "--paused", name) == f"Domain '{name}' started\n\n"
    same(ours, theirs, "list")
    info = same(ours, theirs, "dominfo", name, messages=False)
    assert "State:          paused" in info and "CPU time:       T" in info
    assert same(ours, theirs, "domstate", "--reason", name) == "paused (user)\n\n"
    same(ours, theirs, "start", name, status=1)  # already active
    assert same(ours, theirs, "reset", name) == f"Domain '{name}' was reset\n\n"
    assert same(ours, theirs, "reboot", name) == f"Domain '{name}' is being rebooted\n\n"
    same(ours, theirs, "shutdown", name, status=1)  # paused: libvirt presses no button
    same(ours, theirs, "shutdown", "--mode", "acpi", name, status=1)
    assert same(ours, theirs, "domstate", "--reason", name) == "paused (user)\n\n"
    same(ours, theirs, "resume", name)
    assert same(ours, theirs, "domstate", "--reason", name) == "running (unpaused)\n\n"
    same(ours, theirs, "suspend", name)
    assert same(ours, theirs, "domstate", "--reason", name) == "paused (user)\n\n"
    same(ours, theirs, "list", "--state-paused", "--name")
    same(ours, theirs, "destroy", name)
    assert same(ours, theirs, "domstate", "--reason", name) == "shut off (destroyed)\n\n"
    same(ours, theirs, "undefine", name)
    same(ours, theirs, "list", "--all")
    same(ours, theirs, "dominfo", name, status=1)


def test_dominfo_messages(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, _ = sides
    same(ours, theirs, "define", XML)
    same(ours, theirs, "start", "--paused", name)
    try:
        same(ours, theirs, "dominfo", name)
    finally:
        same(ours, theirs, "destroy", name)


def test_virsh_transient_domain_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, dom_uuid = sides
    assert same(ours, theirs, "create", "--paused", XML) == f"Domain '{name}' created from XMLFILE\n\n"
    same(ours, theirs, "list", "--all")
    same(ours, theirs, "list", "--transient", "--name")
    info = same(ours, theirs, "dominfo", name, messages=False)
    assert "Persistent:     no" in info
    assert same(ours, theirs, "domstate", "--reason", name) == "paused (user)\n\n"
    same(ours, theirs, "autostart", name, status=1)  # transient: refused
    same(ours, theirs, "undefine", name, status=1)   # transient: refused
    same(ours, theirs, "create", XML, status=1)      # already active
    same(ours, theirs, "destroy", name)
    same(ours, theirs, "list", "--all")
    same(ours, theirs, "domstate", name, status=1)   # gone with its run


#: libvirt's <cpu> of a running domain is the model QEMU checked (check='full' and the features
#: QEMU added to it); pyvirt's live XML keeps the definition's
_LIVE_CPU = re.compile(r"  <cpu .*?</cpu>\n", re.S)
#: the run's id: each daemon counts its own starts, and earlier tests of the module may have
#: started a domain on one side only (a failed start) -- ids are normalised, as in the issue
_LIVE_ID = re.compile(r"^(<domain type='\w+') id='\d+'>", re.M)


def _live(xml: str, cpu: bool = False) -> str:
    xml = _LIVE_ID.sub(r"\1 id='ID'>", xml)
    return _LIVE_CPU.sub("", xml) if cpu else xml


def _live_dumpxml(sides: tuple[Side, Side, str], name: str) -> tuple[str, str]:
    """virsh dumpxml of the same domain, created paused, on both: (pyvirtd's, libvirtd's)."""
    ours, theirs, _ = sides
    same(ours, theirs, "create", "--paused", XML)
    try:
        a, b = ours.virsh("dumpxml", name), theirs.virsh("dumpxml", name)
    finally:
        same(ours, theirs, "destroy", name)
    assert a[0] == b[0] == 0, (a, b)
    return a[1], b[1]


def test_live_dumpxml_same_as_libvirtd_but_cpu(sides: tuple[Side, Side, str], name: str) -> None:
    """Device aliases, <resource> and the DAC <seclabel> of the live XML are libvirt's."""
    ours, theirs = _live_dumpxml(sides, name)
    assert "<alias name='serial0'/>" in ours and "<partition>/machine</partition>" in ours
    assert _live(ours, cpu=True) == _live(theirs, cpu=True)


@pytest.mark.xfail(strict=True, reason="pyvirt's live XML lacks libvirt's expanded <cpu check='full'> "
                   "(the features QEMU added to the model)")
def test_live_dumpxml_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs = _live_dumpxml(sides, name)
    assert _live(ours) == _live(theirs)


# ---- libvirt-python -----------------------------------------------------------------------------

_PY_LIFECYCLE = """
out = {}
d = conn.defineXML(THE_XML)
out["defined"] = [d.name(), d.UUIDString(), d.ID(), d.isActive(), d.isPersistent()]
out["all"] = sorted(x.name() for x in conn.listAllDomains() if x.name() == THE_NAME)
out["inactive"] = THE_NAME in conn.listDefinedDomains()
out["info_off"] = d.info()
out["state_off"] = d.state()
out["maxmem"] = d.maxMemory()
out["ostype"] = d.OSType()
out["autostart"] = [d.autostart(), d.setAutostart(1), d.autostart(), d.setAutostart(0)]
out["managed"] = d.hasManagedSaveImage()
out["seclabel_off"] = d.securityLabel()
out["xml_inactive"] = d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == conn.lookupByName(THE_NAME).XMLDesc()
out["start"] = d.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
out["id_positive"] = d.ID() > 0
out["by_id"] = conn.lookupByID(d.ID()).name()
out["by_uuid"] = conn.lookupByUUIDString(d.UUIDString()).name()
out["ids"] = d.ID() in conn.listDomainsID()
out["running"] = [x.name() for x in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                  if x.name() == THE_NAME]
info = d.info()
out["info_paused"] = info[:4]
out["cpu_time_positive"] = info[4] > 0
out["state_paused"] = d.state()
out["seclabel_on"] = d.securityLabel()
out["resume"] = [d.resume(), d.state()]
out["suspend"] = [d.suspend(), d.state()]
out["destroy"] = [d.destroy(), d.state(), d.ID(), conn.lookupByName(THE_NAME).ID()]
out["undefine"] = d.undefine()
out["gone"] = err(lambda: conn.lookupByName(THE_NAME))
out["stale"] = err(d.info)
result = out
"""


def test_python_libvirt_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, dom_uuid = sides

    def run(side: Side) -> Any:
        script = _PY_LIFECYCLE.replace("THE_XML", repr(side.xml_path.read_text()))
        return side.python(script.replace("THE_NAME", repr(name)))

    a, b = run(ours), run(theirs)
    assert a == b
    assert a["defined"] == [name, dom_uuid, -1, 0, 1]
    assert a["state_paused"] == [3, 1] and a["destroy"] == [0, [5, 2], -1, -1]
    assert a["stale"] == [42, 10, f"Domain not found: no domain with matching uuid '{dom_uuid}' "
                          f"({name})"]


# ---- errors -------------------------------------------------------------------------------------

#: Error cases, as a libvirt-python script: it runs unchanged on pyvirt's embedded API
#: (``import pyvirt as libvirt``), and through Debian's libvirt-python on pyvirtd and libvirtd.
_ERRORS = """
out = {}
out["no_name"] = err(lambda: conn.lookupByName("nosuch"))
out["no_uuid"] = err(lambda: conn.lookupByUUIDString("4dea22b3-1d52-d8f3-2516-782e98ab3fa0"))
out["no_id"] = err(lambda: conn.lookupByID(4242))
out["bad_not_well_formed"] = err(lambda: conn.defineXML("<domain type='qemu'><name>x</name>"))
out["bad_root"] = err(lambda: conn.defineXML("<notadomain/>"))
out["bad_no_name"] = err(lambda: conn.defineXML(
    "<domain type='qemu'><memory>65536</memory><os><type>hvm</type></os></domain>"))
out["bad_os_type"] = err(lambda: conn.defineXML(
    "<domain type='qemu'><name>y</name><memory>65536</memory><os><type>linux</type></os></domain>"))
d = conn.defineXML(THE_XML)
out["dup_name"] = err(lambda: conn.defineXML(THE_XML.replace(THE_UUID, OTHER_UUID)))
out["destroy_off"] = err(d.destroy)
out["suspend_off"] = err(d.suspend)
out["resume_off"] = err(d.resume)
out["shutdown_off"] = err(d.shutdown)
out["reboot_off"] = err(lambda: d.reboot(0))
out["reset_off"] = err(lambda: d.reset(0))
out["start"] = err(lambda: d.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED))
out["start_running"] = err(d.create)
out["create_running"] = err(lambda: conn.createXML(THE_XML, 0))
out["destroy"] = err(d.destroy)
out["undefine"] = err(d.undefine)
result = out
"""


def _errors_script(side: Side, name: str, dom_uuid: str) -> str:
    return (_ERRORS.replace("THE_XML", repr(side.xml_path.read_text()))
            .replace("THE_UUID", repr(dom_uuid))
            .replace("OTHER_UUID", repr("0b1c1b0d-7e57-4a11-8b0b-5e1f0e4d2a9c")))


@pytest.fixture
def embedded(embed_root: Path) -> Iterator[Any]:
    """pyvirt's embedded API on a root of its own, in this process."""
    import pyvirt.connection

    conn = pyvirt.connection.open(f"qemu:///embed?root={embed_root}")
    try:
        yield conn
    finally:
        for dom in conn.listAllDomains():
            with contextlib.suppress(PyvirtError):
                dom.destroy()
        conn.close()
        assert kill_qemus(str(embed_root)) == []


def _run_embedded(conn: Any, script: str) -> Any:
    import pyvirt

    def err(f: Any) -> Any:
        try:
            f()
        except PyvirtError as e:
            return [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
        return None

    scope: dict[str, Any] = {"libvirt": pyvirt, "conn": conn, "err": err}
    exec(script, scope)  # noqa: S102 - the test's own script
    return scope["result"]


def test_errors_are_the_embedded_apis(sides: tuple[Side, Side, str], name: str,
                                      embedded: Any) -> None:
    """What a client of pyvirtd gets is what the embedded API raises: code, domain, message."""
    ours, _, dom_uuid = sides
    through_daemon = ours.python(_errors_script(ours, name, dom_uuid))
    direct = _run_embedded(embedded, _errors_script(ours, name, dom_uuid))
    assert through_daemon == direct
    assert direct["start"] is None and direct["destroy"] is None and direct["undefine"] is None
    for key in ("destroy_off", "start_running", "create_running", "bad_root"):
        assert direct[key] is not None, key

    # and virsh prints that message verbatim
    bad = ours.xml_path.with_name("bad.xml")
    bad.write_text("<notadomain/>")
    code, _, err = ours.virsh("define", str(bad))
    assert (code, err) == (1, f"error: Failed to define domain from {bad}\n"
                              f"error: {direct['bad_root'][2]}\n")
    ours.virsh("define", XML)
    code, _, err = ours.virsh("destroy", name)
    assert (code, err) == (1, f"error: Failed to destroy domain '{name}'\n"
                              f"error: {direct['destroy_off'][2]}\n")
    code, _, err = ours.virsh("suspend", name)
    assert (code, err) == (1, f"error: Failed to suspend domain '{name}'\n"
                              f"error: {direct['suspend_off'][2]}\n")
    code, _, err = ours.virsh("dominfo", "nosuch")
    assert (code, err) == (1, "error: failed to get domain 'nosuch'\n")


#: Cases where pyvirt's driver may answer differently from libvirt 9.0 (its words or its error
#: code, never the daemon's): its own XML parse errors, its own duplicate-name message, "domain
#: 'NAME' is ..." for libvirt's "domain is ...". Every other case must be equal.
KNOWN_DRIVER_DIFFERENCES = {
    "bad_not_well_formed", "bad_root", "bad_no_name", "bad_os_type", "dup_name",
    "destroy_off", "suspend_off", "resume_off", "reboot_off", "reset_off",
    "start_running", "create_running",
}


def test_errors_same_as_libvirtd(sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, dom_uuid = sides
    a = ours.python(_errors_script(ours, name, dom_uuid))
    b = theirs.python(_errors_script(theirs, name, dom_uuid))
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k] != b[k]}
    assert differ <= KNOWN_DRIVER_DIFFERENCES, {k: (a[k], b[k]) for k in differ
                                                 - KNOWN_DRIVER_DIFFERENCES}
    assert a["no_name"] == [42, 10, "Domain not found: no domain with matching name 'nosuch'"]
    # where they differ, it is the same error code
    assert all(a[k][0] == b[k][0] for k in differ if k.endswith("_off") or "running" in k)


def test_error_records_field_for_field(sides: tuple[Side, Side, str], name: str) -> None:
    """pyvirt's own client sees every field of remote_error, for errors the daemon words itself:
    a stale domain handle, a lookup, flags the driver refuses."""
    from pyvirt.rpc.protocol import RemoteError
    from pyvirt.rpc.sync import Client

    ours, theirs, dom_uuid = sides

    def fields(side: Side) -> list[Any]:
        out: list[Any] = []
        with Client.open_uri(side.uri) as c:
            dom = c.call("DOMAIN_DEFINE_XML", xml=side.xml_path.read_text()).dom
            assert (dom.name, str(uuid.UUID(bytes=dom.uuid)), dom.id) == (name, dom_uuid, -1)
            for proc, args in (("CONNECT_LIST_ALL_DOMAINS", {"need_results": 0, "flags": 2}),
                               ("CONNECT_LIST_DEFINED_DOMAINS", {"maxnames": 0}),
                               ("CONNECT_LIST_DOMAINS", {"maxids": -1}),
                               ("CONNECT_LIST_DOMAINS", {"maxids": 16385}),
                               ("DOMAIN_LOOKUP_BY_ID", {"id": -2}),
                               ("DOMAIN_GET_STATE", {"dom": dom, "flags": 1}),
                               ("DOMAIN_GET_XML_DESC", {"dom": dom, "flags": 1 << 8}),
                               ("DOMAIN_UNDEFINE_FLAGS", {"dom": dom, "flags": 1 << 9}),
                               ("DOMAIN_CREATE_WITH_FLAGS", {"dom": dom, "flags": 1 << 10}),
                               ("DOMAIN_CREATE_WITH_FLAGS", {"dom": dom, "flags": 16}),
                               ("DOMAIN_CREATE_XML", {"xml_desc": "<domain/>", "flags": 8}),
                               ("DOMAIN_SHUTDOWN_FLAGS", {"dom": dom, "flags": 1 << 6}),
                               ("DOMAIN_HAS_MANAGED_SAVE_IMAGE", {"dom": dom, "flags": 1}),
                               ("DOMAIN_GET_MAX_MEMORY", {"dom": dom}),
                               ("DOMAIN_IS_UPDATED", {"dom": dom}),
                               ("DOMAIN_GET_AUTOSTART", {"dom": dom}),
                               ("DOMAIN_SET_AUTOSTART", {"dom": dom, "autostart": 1}),
                               ("DOMAIN_GET_AUTOSTART", {"dom": dom}),
                               ("DOMAIN_LOOKUP_BY_NAME", {"name": "nosuch"}),
                               ("DOMAIN_UNDEFINE", {"dom": dom}),
                               ("DOMAIN_GET_INFO", {"dom": dom}),
                               ("DOMAIN_CREATE", {"dom": dataclasses.replace(dom, id=7)})):
                try:
                    out.append(c.call(proc, **args))
                except RemoteError as e:
                    out.append([e.code, e.domain, e.level, e.message, e.str1, e.str2, e.str3,
                                e.int1, e.int2])
        return out

    a, b = fields(ours), fields(theirs)
    assert a == b
    assert a[-2][3] == f"Domain not found: no domain with matching uuid '{dom_uuid}' ({name})"


def test_readonly_socket_refuses_domain_writes(daemon: Pyvirtd, libvirtd: Libvirtd,
                                               sides: tuple[Side, Side, str], name: str) -> None:
    ours, theirs, _ = sides
    same(ours, theirs, "define", XML)
    for command in (("start", name), ("destroy", name), ("undefine", name),
                    ("autostart", name), ("dominfo", name), ("domstate", "--reason", name),
                    ("dumpxml", name), ("list", "--all")):
        results = []
        for side, server in ((ours, daemon), (theirs, libvirtd)):
            argv = [VIRSH, "-r", "-c", server.uri(readonly=True), *command]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                 env={"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
            results.append((out.returncode, side.norm(out.stdout), out.stderr))
        assert results[0] == results[1], command
        if command[0] in ("start", "destroy", "undefine", "autostart"):
            assert "read only access prevents" in results[0][2], command


# ---- domxml-to-native -------------------------------------------------------------------------

def test_domxml_to_native_is_the_apis(daemon: Pyvirtd, sides: tuple[Side, Side, str],
                                      embedded: Any, embed_root: Path) -> None:
    ours, _, _ = sides
    code, out, err = ours.virsh("domxml-to-native", "qemu-argv", XML)
    assert code == 0, err
    direct = embedded.domainXMLToNative("qemu-argv", ours.xml_path.read_text(), 0)
    assert out.rstrip("\n").replace(str(daemon.root), "ROOT") == \
        ours.norm(direct).rstrip("\n").replace(str(embed_root), "ROOT")
    assert "/usr/bin/qemu-system-x86_64 -name guest=" in out
    code, _, err = ours.virsh("domxml-to-native", "xen-xm", XML)
    assert code == 1 and "xen-xm" in err


# ---- a booted guest -----------------------------------------------------------------------------

_BOOT_TIMEOUT = 90.0


def _wait(cond: Any, what: str, timeout: float = _BOOT_TIMEOUT) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _markers(side: Side) -> int:
    try:
        return side.serial.read_bytes().count(tg.READY_MARKER.encode())
    except FileNotFoundError:
        return 0


def _boot_transcript(side: Side, name: str) -> list[tuple[int, str, str]]:
    steps = [side.virsh("define", XML), side.virsh("start", name)]
    _wait(lambda: _markers(side) == 1, f"{side.label}: the guest's ready marker")
    steps += [side.virsh("domstate", "--reason", name),
              side.virsh("shutdown", "--mode", "agent", name),
              side.virsh("reboot", name)]
    _wait(lambda: _markers(side) == 2, f"{side.label}: the ready marker after the reboot")
    steps += [side.virsh("domstate", "--reason", name), side.virsh("shutdown", name)]
    _wait(lambda: side.virsh("domstate", name)[1] == "shut off\n\n",
          f"{side.label}: the guest's power-off")
    steps += [side.virsh("domstate", "--reason", name), side.virsh("undefine", name)]
    return steps


def test_virsh_reboot_and_shutdown_of_a_booted_guest(sides: tuple[Side, Side, str],
                                                     name: str) -> None:
    """The guest really boots, reboots through the ACPI button and powers off; both daemons
    report each step alike. One side at a time: two TCG guests on two cores boot slowly."""
    ours, theirs, _ = sides
    transcripts = [_boot_transcript(side, name) for side in (ours, theirs)]
    # pyvirt's refusal of the agent mode adds how to fix it to libvirt's words
    agent_ours, agent_theirs = transcripts[0].pop(3), transcripts[1].pop(3)
    assert agent_ours[0] == agent_theirs[0] == 1
    assert agent_ours[2].startswith(agent_theirs[2].rstrip("\n")), (agent_ours, agent_theirs)
    assert transcripts[0] == transcripts[1]
    assert transcripts[0][2][1] == "running (booted)\n\n"
    assert transcripts[0][-2][1] == "shut off (shutdown)\n\n"


def test_readonly_client_fields(sides: tuple[Side, Side, str], name: str) -> None:
    """What a raw read-only client gets, field for field (virsh and libvirt-python check some of
    this on their side and never send it)."""
    from pyvirt.rpc.protocol import RemoteError
    from pyvirt.rpc.sync import Client

    ours, theirs, _ = sides
    same(ours, theirs, "define", XML)

    def fields(side: Side) -> list[Any]:
        out: list[Any] = []
        with Client.open_uri(side.uri, readonly=True) as c:
            dom = c.call("DOMAIN_LOOKUP_BY_NAME", name=name).dom
            for proc, args in (("DOMAIN_GET_XML_DESC", {"dom": dom, "flags": 1}),
                               ("DOMAIN_GET_XML_DESC", {"dom": dom, "flags": 2}),
                               ("DOMAIN_GET_STATE", {"dom": dom, "flags": 0}),
                               ("DOMAIN_CREATE", {"dom": dom}),
                               ("DOMAIN_SET_AUTOSTART", {"dom": dom, "autostart": 1}),
                               ("CONNECT_DOMAIN_XML_TO_NATIVE",
                                {"nativeFormat": "qemu-argv", "domainXml": "<domain/>",
                                 "flags": 0})):
                try:
                    reply = c.call(proc, **args)
                    out.append(side.norm(reply.xml) if proc == "DOMAIN_GET_XML_DESC" else reply)
                except RemoteError as e:
                    out.append([e.code, e.domain, e.message, e.str1, e.str2, e.int1, e.int2])
        return out

    a, b = fields(ours), fields(theirs)
    assert a == b
    assert a[0][2] == "operation forbidden: virDomainGetXMLDesc with secure flag"
