# SPDX-License-Identifier: LGPL-2.1-or-later
"""One libvirt-python script, run unchanged by two clients: Debian's python3-libvirt
(``/usr/bin/python3``, ``import libvirt``) and pyvirt (the venv's python, ``import pyvirt as
libvirt``), each in a process of its own, with the result back as JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pyvirt.testing import guest as tg

SYSTEM_PYTHON = "/usr/bin/python3"

#: Both clients: the module, an event loop thread (libvirt-python delivers events and close
#: callbacks only while one runs; pyvirt's functions are accepted and need none), and err(),
#: which gives an error's fields (all of them with FULL, else code, domain and message).
_PRELUDE = """
import json, os, signal, sys, threading, time
MOD, uri, FULL, READONLY = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
ARGS = json.loads(sys.argv[5])
if MOD == "libvirt":
    import libvirt
    libvirt.registerErrorHandler(lambda *a: None, None)
else:
    import pyvirt as libvirt
libvirt.virEventRegisterDefaultImpl()
def _loop():
    while True:
        libvirt.virEventRunDefaultImpl()
threading.Thread(target=_loop, daemon=True).start()
conn = (libvirt.openReadOnly if READONLY else libvirt.open)(uri)
def err(f):
    try:
        f()
    except libvirt.libvirtError as e:
        if FULL:
            return [e.get_error_code(), e.get_error_domain(), e.get_error_message(),
                    e.get_error_level(), e.get_str1(), e.get_str2(), e.get_str3(),
                    e.get_int1(), e.get_int2()]
        return [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
    return None
def settle(items, done=None, timeout=30.0):
    # until done(items) holds (else until nothing new arrived for a second), then a grace second
    # for anything unexpected that follows
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        if done is not None and done(items):
            break
        if done is None and seen == len(items):
            break
        seen = len(items)
        time.sleep(0.1 if done is not None else 1.0)
    time.sleep(1.0)
    return list(items)
"""

_EPILOGUE = """
if conn.isAlive():
    conn.close()
print("RESULT " + json.dumps(result))
"""


def run_script(client: str, uri: str, script: str, *, full: bool = False, readonly: bool = False,
               args: dict[str, Any] | None = None, timeout: float = 180) -> Any:
    """``client`` is "libvirt" (Debian's python3-libvirt) or "pyvirt" (this venv)."""
    python = SYSTEM_PYTHON if client == "libvirt" else sys.executable
    argv = [python, "-c", _PRELUDE + script + _EPILOGUE, client, uri, "1" if full else "0",
            "1" if readonly else "0", json.dumps(args or {})]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise AssertionError(f"{client} script failed ({out.returncode}):\n{out.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def guest_xml(name: str, dom_uuid: str, guest: tg.Guest, serial: Path) -> str:
    """The project's test guest with a fixed UUID, its serial port to a file."""
    from lifecycle_support import domain_xml

    return domain_xml(name, guest, serial, uuid=dom_uuid)
