# SPDX-License-Identifier: LGPL-2.1-or-later
"""One libvirt-python secret script, run unchanged against libvirt's embedded secret driver and
against pyvirt's.

    python secret_script.py libvirt|pyvirt ROOT [qemu|secret]

``libvirt`` (run with /usr/bin/python3) opens ``secret:///embed?root=ROOT``, libvirt 9.0's embedded
secret driver; ``pyvirt`` opens ``qemu:///embed?root=ROOT``, whose connection embeds pyvirt's secret
driver in the same root. The script prints one JSON object: each step's result, or
["error", code, domain] for a libvirtError. Generated UUIDs are replaced by "UUID".

Left out because libvirt 9.0's embedded secret driver crashes on them (segmentation fault in
Debian's 9.0.0 build, after the change is made): defining an ephemeral secret and undefining.
tests/integration/test_secrets.py covers both for pyvirt.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable
from typing import Any

WHICH, ROOT = sys.argv[1], sys.argv[2]
libvirt: Any = importlib.import_module("pyvirt" if WHICH == "pyvirt" else "libvirt")

U_VOL = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"
U_CEPH = "5e4f5c1e-86f1-4e33-9a0c-3d6b2d8f1a10"
U_ISCSI = "3c1d2a4b-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
U_TLS = "9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b5a"
U_VTPM = "1a2b3c4d-5e6f-4071-8293-a4b5c6d7e8f9"

results: dict[str, Any] = {}
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_FIXED = {U_VOL, U_CEPH, U_ISCSI, U_TLS, U_VTPM}


def normal(value: Any) -> Any:
    if isinstance(value, str):
        return _UUID_RE.sub(lambda m: m.group(0) if m.group(0) in _FIXED else "UUID", value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [normal(v) for v in value]
    if hasattr(value, "UUIDString"):
        return ["secret", normal(value.UUIDString())]
    return value


def step(name: str, fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
    except libvirt.libvirtError as e:
        results[name] = ["error", e.get_error_code(), e.get_error_domain()]
        return None
    except AttributeError:  # an earlier step that should have made the object failed
        results[name] = ["no object"]
        return None
    results[name] = normal(value)
    return value


def usage(kind: str, tag: str, ident: str) -> str:
    return f"<usage type='{kind}'><{tag}>{ident}</{tag}></usage>"


def main() -> None:
    if WHICH == "pyvirt":
        # pyvirt's secrets through the instance's qemu:/// URI, or (a third argument 'secret')
        # through libvirt's own secret:///embed URI
        scheme = sys.argv[3] if len(sys.argv) > 3 else "qemu"
        conn = libvirt.open(f"{scheme}:///embed?root={ROOT}")
    else:
        libvirt.registerErrorHandler(lambda *a: None, None)
        libvirt.virEventRegisterDefaultImpl()
        conn = libvirt.open(f"secret:///embed?root={ROOT}")

    vol = step("define volume", lambda: conn.secretDefineXML(
        f"<secret ephemeral='no' private='no'><uuid>{U_VOL}</uuid><description>disk &amp; 'a'"
        f"</description>{usage('volume', 'volume', '/var/lib/images/a.qcow2')}</secret>"))
    step("volume xml", lambda: vol.XMLDesc())
    step("volume ids", lambda: [vol.UUIDString(), vol.UUID(), vol.usageType(), vol.usageID()])
    ceph = step("define ceph private", lambda: conn.secretDefineXML(
        f"<secret private='yes'><uuid>{U_CEPH}</uuid>{usage('ceph', 'name', 'client.admin')}</secret>"))
    step("ceph xml", lambda: ceph.XMLDesc())
    for name, uuid, kind, tag, ident in (("iscsi", U_ISCSI, "iscsi", "target", "iqn.2013-07.com.example:x"),
                                         ("tls", U_TLS, "tls", "name", "tls&lt;1&gt;"),
                                         ("vtpm", U_VTPM, "vtpm", "name", "vm1")):
        s = step(f"define {name}", lambda uuid=uuid, kind=kind, tag=tag, ident=ident: conn.secretDefineXML(
            f"<secret><uuid>{uuid.upper().replace('-', '')}</uuid>\n<description>\n two\n lines \n"
            f"</description>{usage(kind, tag, ident)}<unknown/></secret>"))
        step(f"{name} xml", lambda s=s: s.XMLDesc())
        step(f"{name} ids", lambda s=s: [s.usageType(), s.usageID()])
    plain = step("define plain", lambda: conn.secretDefineXML("<secret><usage type='none'/></secret>"))
    step("plain xml", lambda: plain.XMLDesc())
    step("plain ids", lambda: [plain.usageType(), plain.usageID()])
    step("define another plain", lambda: conn.secretDefineXML("<secret/>").usageType())

    step("value before any", lambda: vol.value())
    step("set value", lambda: vol.setValue(b"s3cr3t\x00\xff"))
    step("get value", lambda: vol.value())
    step("set private value", lambda: ceph.setValue(b"AQBL7fpd"))
    step("get private value", lambda: ceph.value())
    step("set empty value", lambda: plain.setValue(b""))
    step("get empty value", lambda: plain.value())
    step("set value flags", lambda: vol.setValue(b"x", 1))
    step("get value flags", lambda: vol.value(1))
    step("xml flags", lambda: vol.XMLDesc(1))

    step("lookup uuid string", lambda: conn.secretLookupByUUIDString(U_VOL).UUIDString())
    step("lookup uuid string no hyphens",
         lambda: conn.secretLookupByUUIDString(U_VOL.replace("-", "")).usageID())
    step("lookup uuid bytes",
         lambda: conn.secretLookupByUUID(bytes.fromhex(U_CEPH.replace("-", ""))).usageID())
    step("lookup unknown uuid", lambda: conn.secretLookupByUUIDString("11111111-2222-3333-4444-555555555555"))
    step("lookup malformed uuid", lambda: conn.secretLookupByUUIDString("not-a-uuid"))
    step("lookup usage", lambda: conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI,
                                                          "iqn.2013-07.com.example:x").UUIDString())
    step("lookup usage wrong type", lambda: conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_CEPH,
                                                                     "/var/lib/images/a.qcow2"))
    step("lookup usage unknown",
         lambda: conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_VOLUME, "/no"))
    step("lookup usage none", lambda: conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_NONE, ""))

    step("duplicate usage", lambda: conn.secretDefineXML(
        f"<secret>{usage('volume', 'volume', '/var/lib/images/a.qcow2')}</secret>"))
    step("same id other type", lambda: conn.secretDefineXML(
        f"<secret>{usage('ceph', 'name', '/var/lib/images/a.qcow2')}</secret>").usageType())
    step("redefine other usage", lambda: conn.secretDefineXML(
        f"<secret><uuid>{U_VOL}</uuid>{usage('volume', 'volume', '/other')}</secret>"))
    step("redefine private as public", lambda: conn.secretDefineXML(
        f"<secret private='no'><uuid>{U_CEPH}</uuid>{usage('ceph', 'name', 'client.admin')}</secret>"))
    step("redefine same usage", lambda: conn.secretDefineXML(
        f"<secret><uuid>{U_VOL}</uuid><description>new</description>"
        f"{usage('volume', 'volume', '/var/lib/images/a.qcow2')}</secret>").XMLDesc())
    step("value kept by redefinition", lambda: vol.value())
    step("redefine public as private", lambda: conn.secretDefineXML(
        f"<secret private='yes'><uuid>{U_VOL}</uuid>{usage('volume', 'volume', '/var/lib/images/a.qcow2')}"
        "</secret>").XMLDesc())

    for name, doc in (("malformed", "<secret"), ("empty", ""), ("wrong root", "<domain/>"),
                      ("bad ephemeral", "<secret ephemeral='maybe'/>"),
                      ("bad private", "<secret private='1'/>"),
                      ("usage without type", "<secret><usage/></secret>"),
                      ("unknown usage type", "<secret><usage type='bogus'/></secret>"),
                      ("volume without path", "<secret><usage type='volume'/></secret>"),
                      ("ceph empty name", "<secret><usage type='ceph'><name></name></usage></secret>"),
                      ("iscsi without target", "<secret><usage type='iscsi'><name>x</name></usage></secret>"),
                      ("bad uuid", "<secret><uuid>zz</uuid></secret>")):
        step(f"bad xml: {name}", lambda doc=doc: conn.secretDefineXML(doc))
    step("define flags", lambda: conn.secretDefineXML("<secret/>", 2))
    step("validate unknown element", lambda: conn.secretDefineXML("<secret><foo/></secret>",
                                                                  libvirt.VIR_SECRET_DEFINE_VALIDATE))
    step("validate ok", lambda: conn.secretDefineXML(
        f"<secret>{usage('tls', 'name', 'validated')}</secret>",
        libvirt.VIR_SECRET_DEFINE_VALIDATE).usageID())

    for flags in (0, 1, 2, 4, 8, 3, 5, 10, 16):
        step(f"list all {flags}", lambda flags=flags: sorted(normal(s.UUIDString())
                                                             for s in conn.listAllSecrets(flags)))
    step("list secrets", lambda: sorted(normal(u) for u in conn.listSecrets()))
    step("number", lambda: conn.numOfSecrets())
    print(json.dumps(results, sort_keys=True), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
