# SPDX-License-Identifier: LGPL-2.1-or-later
"""The README's demo: pyvirt's QEMU driver embedded in this process boots a real guest.

It builds the project's test guest (a Debian kernel and a busybox initramfs; cached after the first
run), defines it in an embedded root, starts it, shows its serial console until the guest says it is
ready, shuts it down through the ACPI power button, and prints how long each step took. The domain
stays defined in the root for pyvirsh to play with.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyvirt.connection import virConnect
    from pyvirt.testing.guest import Guest

DEFAULT_ROOT = "/var/tmp/pyvirt-demo"
NAME = "pyvirt-demo"
UUID = "5c0f8a2e-6f1d-4e57-9c3b-2d7a4b1e9f01"
BOOT_TIMEOUT = 120.0
SHUTDOWN_TIMEOUT = 60.0


def domain_xml(kernel: str, initrd: str, cmdline: str, console_log: Path) -> str:
    from xml.sax.saxutils import escape, quoteattr

    return f"""<domain type='qemu'>
  <name>{NAME}</name>
  <uuid>{UUID}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{escape(kernel)}</kernel>
    <initrd>{escape(initrd)}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    <serial type='file'><source path={quoteattr(str(console_log))}/></serial>
  </devices>
</domain>
"""


class Steps:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.last = self.t0

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"[{now - self.t0:7.3f} s] {what} ({(now - self.last) * 1000:.0f} ms)", flush=True)
        self.last = now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyvirt-demo", description=__doc__)
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"embed root (default {DEFAULT_ROOT})")
    args = parser.parse_args(argv)

    import pyvirt.connection as libvirt
    from pyvirt.errors import PyvirtError
    from pyvirt.testing import guest as tg

    steps = Steps()
    guest = tg.build()
    steps.done(f"test guest {'found in the cache' if guest.cached else 'built'}: {guest.kernel.parent}")
    uri = f"qemu:///embed?root={args.root}"
    try:
        conn = libvirt.open(uri)
    except PyvirtError as exc:
        print(f"pyvirt-demo: {exc}", file=sys.stderr)
        return 1
    try:
        version = conn.getVersion()
        steps.done(f"opened {uri}: QEMU {version // 1000000}.{version // 1000 % 1000}.{version % 1000}, "
                   "driver embedded in this process")
        return _run(conn, guest, Path(args.root), steps)
    except PyvirtError as exc:
        print(f"pyvirt-demo: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()


def _run(conn: virConnect, guest: Guest, root: Path, steps: Steps) -> int:
    from pyvirt import _constants as C  # noqa: N812 - libvirt's constant names
    from pyvirt.errors import PyvirtError
    console_log = root / "log" / "qemu" / f"{NAME}.console.log"
    stopped = threading.Event()

    def on_lifecycle(c: object, dom: object, event: int, detail: int, opaque: object) -> None:
        if event == C.VIR_DOMAIN_EVENT_STOPPED:
            stopped.set()

    conn.domainEventRegisterAny(None, C.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None)
    try:
        old = conn.lookupByName(NAME)
        if old.isActive():
            old.destroy()  # left running by an interrupted run
    except PyvirtError:
        pass
    dom = conn.defineXML(domain_xml(str(guest.kernel), str(guest.initrd), guest.cmdline, console_log))
    steps.done(f"defined domain '{NAME}' ({root}/etc/qemu/{NAME}.xml)")
    console_log.parent.mkdir(parents=True, exist_ok=True)
    console_log.write_bytes(b"")
    try:
        dom.create()
        steps.done(f"started: QEMU pid {_pid(root)}, domain id {dom.ID()}, state running")
        print("----- guest console (ttyS0) -----", flush=True)
        _show_console(console_log, "PYVIRT-GUEST-READY", BOOT_TIMEOUT)
        print("---------------------------------", flush=True)
        steps.done("guest ready (its marker on the console)")
        stopped.clear()
        dom.shutdown()
        if not stopped.wait(SHUTDOWN_TIMEOUT):
            print(f"pyvirt-demo: the guest did not power off within {SHUTDOWN_TIMEOUT:.0f} s",
                  file=sys.stderr)
            return 1
        state, reason = dom.state()
        steps.done(f"ACPI shutdown: shut off (reason {'shutdown' if reason == 1 else reason})")
    except BaseException:
        if dom.isActive():
            dom.destroy()
        raise
    print(f"\nThe domain stays defined: .venv/bin/pyvirsh -c 'qemu:///embed?root={root}' list --all")
    return 0


def _show_console(path: Path, marker: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = b""
    with open(path, "rb") as f:
        while time.monotonic() < deadline:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode(errors="replace").replace("\r", ""))
                sys.stdout.flush()
                seen += chunk
                if marker.encode() in seen:
                    return
            else:
                time.sleep(0.05)
    raise TimeoutError(f"the guest showed no '{marker}' within {timeout:.0f} s; see {path}")


def _pid(root: Path) -> str:
    import json

    try:
        status = json.loads((root / "run" / "qemu" / f"{NAME}.json").read_text())
        return str(status["data"]["identity"]["pid"])
    except (OSError, KeyError, ValueError, TypeError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
