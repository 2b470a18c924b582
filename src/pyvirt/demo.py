# SPDX-License-Identifier: LGPL-2.1-or-later
"""The README's demo: pyvirt's QEMU driver embedded in this process, in a root of its own.

For now it shows what the driver found on this host (the capabilities XML); the domain lifecycle
will make it boot the project's test guest and show its console.
"""

from __future__ import annotations

import argparse
import sys
import time

DEFAULT_ROOT = "/var/tmp/pyvirt-demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyvirt-demo", description=__doc__)
    parser.add_argument("--root", default=DEFAULT_ROOT, help=f"embed root (default {DEFAULT_ROOT})")
    args = parser.parse_args(argv)

    import pyvirt.connection as libvirt
    from pyvirt.errors import PyvirtError

    uri = f"qemu:///embed?root={args.root}"
    started = time.monotonic()
    try:
        with libvirt.open(uri) as conn:
            caps = conn.getCapabilities()
            version = conn.getVersion()
    except PyvirtError as exc:
        print(f"pyvirt-demo: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(caps, end="")
    print(f"# {uri}: QEMU {version // 1000000}.{version // 1000 % 1000}.{version % 1000}, "
          f"capabilities in {elapsed:.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
