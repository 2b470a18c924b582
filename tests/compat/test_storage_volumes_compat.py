# SPDX-License-Identifier: LGPL-2.1-or-later
"""Encrypted volumes resized and cloned, and every wipe algorithm, against libvirt 9.0's storage
driver (a private libvirtd, tests/storage_oracle.py).

One script of libvirt-python calls runs twice: with Debian's libvirt-python against the private
libvirtd, and with pyvirt's API on an embed root, each over a pool directory of its own. Every
call's outcome (return value or error code, domain and message), the volumes' info and the
qemu-img facts of the files must be equal once the pool path is masked. Wiped files are compared
by content where scrub's pattern is fixed (zero, nnsa, dod, bsi) and by size and scrub's signature
where its passes are random.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import test_storage_compat as pool_commands

pytestmark = pytest.mark.oracle
workdir = pool_commands.workdir  # a short private /tmp directory, removed after

SCRIPT = r'''
import hashlib, json, os, subprocess
res = {}

def call(f, *a):
    for attempt in range(25):  # QEMU's PBKDF benchmark may read a CPU time of zero: libvirt fails then
        try:
            r = f(*a)
            return ["ok", r.name() if hasattr(r, "name") else r]
        except libvirt.libvirtError as e:
            if "Unable to get accurate CPU usage" in str(e) and attempt < 24:
                continue
            return [e.get_error_code(), e.get_error_domain(), str(e)]

def secret(name, uuid, value):
    s = conn.secretDefineXML(f"<secret ephemeral='no' private='no'><uuid>{uuid}</uuid><usage type='volume'>"
                             f"<volume>POOLDIR/{name}</volume></usage></secret>")
    s.setValue(value)
    return uuid

def xml(name, mib, fmt, uuid=None):
    enc = f"<encryption format='luks'><secret type='passphrase' uuid='{uuid}'/></encryption>" if uuid else ""
    return (f"<volume><name>{name}</name><capacity unit='M'>{mib}</capacity>"
            f"<target><format type='{fmt}'/>{enc}</target></volume>")

def facts(name):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", f"POOLDIR/{name}"], capture_output=True,
                         text=True, check=True)
    d = json.loads(out.stdout)
    return [d["format"], d["virtual-size"], bool(d.get("encrypted"))]

p = conn.storagePoolCreateXML("<pool type='dir'><name>p</name><target><path>POOLDIR</path></target></pool>",
                              0)
n = 0
def sid():
    global n
    n += 1
    return f"3d5e7f90-1a2b-4c3d-8e4f-{n:012d}"

res["create_e"] = call(p.createXML, xml("e.img", 8, "raw", secret("e.img", sid(), b"pass-e")), 0)
res["create_q"] = call(p.createXML, xml("q.qcow2", 8, "qcow2", secret("q.qcow2", sid(), b"pass-q")), 0)
res["create_plain"] = call(p.createXML, xml("plain.img", 8, "raw"), 0)
e, q, plain = (p.storageVolLookupByName(v) for v in ("e.img", "q.qcow2", "plain.img"))
for label, vol, cap, flags in (("grow", e, 12 << 20, 0), ("shrink_refused", e, 4 << 20, 0),
                               ("shrink", e, 4 << 20, 4), ("delta", e, (1 << 20) + 100, 2),
                               ("allocate", e, 20 << 20, 1), ("q_grow", q, 12 << 20, 0),
                               ("q_shrink", q, 4 << 20, 4), ("q_allocate", q, 20 << 20, 1)):
    res[f"resize_{label}"] = [call(vol.resize, cap, flags), vol.info()[:2], facts(vol.name())]
for new, fmt, enc, src in (("e2.img", "raw", True, e), ("q2.qcow2", "qcow2", True, q),
                           ("eq.qcow2", "qcow2", True, e), ("ep.img", "raw", False, e),
                           ("qp.qcow2", "qcow2", False, q),
                           ("pe.img", "raw", True, plain), ("pq.qcow2", "qcow2", True, plain)):
    uuid = secret(new, sid(), b"pass-" + new.encode()) if enc else None
    r = call(p.createXMLFrom, xml(new, 6, fmt, uuid), src, 0)
    res[f"clone_{new}"] = [r, facts(new) if r[0] == "ok" else None]
res["clone_unknown_secret"] = call(p.createXMLFrom,
                                   xml("x.img", 6, "raw", "3d5e7f90-1a2b-4c3d-8e4f-999999999999"), e, 0)
conn.secretLookupByUUIDString("3d5e7f90-1a2b-4c3d-8e4f-000000000001").undefine()
# libvirt keeps the secret uuid a volume was made with until the pool is refreshed (then it looks
# the secret up by the volume's path, as pyvirt always does)
p.refresh(0)
e = p.storageVolLookupByName("e.img")
res["resize_no_secret"] = call(e.resize, 16 << 20, 0)
res["clone_no_secret"] = call(p.createXMLFrom, xml("y.img", 6, "raw"), e, 0)
for alg in range(11):
    name = f"w{alg}.img"
    v = p.createXML(xml(name, 1, "raw"), 0)
    with open(f"POOLDIR/{name}", "r+b") as f:
        f.write(b"\x5a" * 1048576)
    r = call(v.wipePattern, alg, 0)
    data = open(f"POOLDIR/{name}", "rb").read()
    fixed = alg <= 3 or alg >= 9  # zero, nnsa, dod, bsi write fixed patterns; trim and 10 write nothing
    res[f"wipe_{alg}"] = [r, len(data), data[:13].hex(), b"\x5a" * 64 in data,
                          hashlib.sha256(data).hexdigest() if fixed else None, v.info()]
s = p.createXML(xml("s.img", 4, "raw").replace("</capacity>", "</capacity><allocation>0</allocation>"), 0)
res["wipe_sparse"] = [call(s.wipe, 0), os.stat("POOLDIR/s.img").st_size, s.info()]
qz = p.createXML(xml("z.qcow2", 1, "qcow2"), 0)
res["wipe_qcow2"] = [call(qz.wipe, 0), os.stat("POOLDIR/z.qcow2").st_size]
res["wipe_flags"] = call(qz.wipePattern, 0, 1)
os.mkdir("POOLDIR/sub")
p.refresh(0)
res["wipe_dir"] = call(p.storageVolLookupByName("sub").wipePattern, 1, 0)
res["files"] = sorted(os.listdir("POOLDIR"))
result = res
'''

_OURS = r'''
import json, sys
from pyvirt.connection import open as open_conn
from pyvirt.errors import PyvirtError

class libvirt:
    libvirtError = PyvirtError

conn = open_conn(sys.argv[1])
exec(sys.stdin.read())
conn.close()
print(json.dumps(result))
'''


def masked(result: Any, pool: Path) -> Any:
    return json.loads(json.dumps(result).replace(str(pool), "POOL"))


def test_encrypted_resize_clone_and_wipe_match_libvirt(workdir: Path) -> None:
    if shutil.which("scrub") is None:
        pytest.fail("scrub is missing: run scripts/setup.sh")
    from storage_oracle import start_storage_libvirtd

    theirs_pool, ours_pool = workdir / "lp", workdir / "pp"
    theirs_pool.mkdir()
    ours_pool.mkdir()
    daemon = start_storage_libvirtd()
    try:
        theirs = daemon.oracle(SCRIPT.replace("POOLDIR", str(theirs_pool)), timeout=600)
    finally:
        daemon.stop()
    out = subprocess.run([sys.executable, "-c", _OURS, f"qemu:///embed?root={workdir / 'r'}"],
                         input=SCRIPT.replace("POOLDIR", str(ours_pool)), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    ours = json.loads(out.stdout)
    theirs, ours = masked(theirs, theirs_pool), masked(ours, ours_pool)
    differ = [f"{k}:\n  libvirt: {theirs[k]}\n  pyvirt:  {ours.get(k)}"
              for k in theirs if theirs[k] != ours.get(k)]
    assert not differ, "\n".join(differ)
    assert sorted(ours) == sorted(theirs)
    # the script exercises refusals and every algorithm, not only successes
    assert theirs["wipe_9"][0][0] == 74 and theirs["wipe_10"][0][0] == 8
    assert theirs["resize_allocate"][0][0] == 84 and theirs["clone_no_secret"][0] == 8
    assert all(theirs[f"wipe_{a}"][0] == ["ok", 0] and not theirs[f"wipe_{a}"][3] for a in range(9))
    assert theirs["clone_pe.img"][1] == ["luks", 8 << 20, True]
