# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt-aa-helper: write a domain's AppArmor profile from its XML (libvirt's virt-aa-helper).

::

    pyvirt-aa-helper -d DIR -p [FILE]          print the profile and its .files, write nothing
    pyvirt-aa-helper -d DIR -c [FILE]          create DIR/libvirt-UUID(.files); fails if present
    pyvirt-aa-helper -d DIR -r [FILE]          replace them (or create)
    pyvirt-aa-helper -d DIR -R -u UUID         remove them

The domain XML comes from FILE or standard input. ``-f PATH`` adds a file QEMU may read and write
(repeatable). Every profile written is first compiled with ``apparmor_parser`` (``-Q -K -T``,
which needs no AppArmor in the kernel); a profile that does not compile is not left behind.
``--load`` loads (or with ``-R`` unloads) it in the kernel as well; ``--no-check`` skips the compile
(for hosts without apparmor_parser). Exit status: 0 on success, 1 on any error (on standard error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pyvirt.security.apparmor import ProfileLoader, RuntimePath
    from pyvirt.security.resources import Resource
    from pyvirt.xml.domain import Domain

__all__ = ["main", "domain_files"]

DEFAULT_DIR = "/etc/apparmor.d/pyvirt"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyvirt-aa-helper",
                                description="Write the AppArmor profile of a domain from its XML.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("-p", "--probe", action="store_true", help="print the profile, write nothing")
    mode.add_argument("-c", "--create", action="store_true", help="create the profile files")
    mode.add_argument("-r", "--replace", action="store_true", help="replace (or create) them")
    mode.add_argument("-R", "--remove", action="store_true", help="remove them (needs -u)")
    p.add_argument("-d", "--dir", default=DEFAULT_DIR, help=f"profile directory ({DEFAULT_DIR})")
    p.add_argument("-u", "--uuid", help="the domain's UUID (checked against the XML)")
    p.add_argument("-f", "--file", action="append", default=[], metavar="PATH",
                   help="another file QEMU reads and writes (repeatable)")
    p.add_argument("--load", action="store_true", help="also load (unload with -R) in the kernel")
    p.add_argument("--no-check", action="store_true", help="do not compile with apparmor_parser")
    p.add_argument("xml", nargs="?", help="the domain XML file (default: standard input)")
    return p


def domain_files(dom: Domain) -> tuple[list[Resource], list[RuntimePath]]:
    """The host files of ``dom`` that its QEMU opens, as resources, and the other paths it needs
    (sockets of chardevs, the emulator). Network disks have no file and are left out."""
    from pyvirt.security.apparmor import RuntimePath
    from pyvirt.security.resources import Resource, ResourceKind

    resources: list[Resource] = []
    runtime: list[RuntimePath] = []
    kinds = {"cdrom": ResourceKind.CDROM, "floppy": ResourceKind.FLOPPY}
    for disk in dom.disks:
        src = disk.source
        if src is None:
            continue
        kind = kinds.get(disk.device or "disk", ResourceKind.DISK)
        if disk.type == "dir" and src.dir:
            runtime.append(RuntimePath(src.dir, "r" if disk.readonly else "rwk", tree=True))
            continue
        path = src.file if disk.type in (None, "file") else src.dev if disk.type == "block" else None
        if path:
            resources.append(Resource(path, kind, readonly=disk.readonly, shared=disk.shareable))
    os_ = dom.os
    if os_ is not None:
        for value, kind in ((os_.kernel, ResourceKind.KERNEL), (os_.initrd, ResourceKind.INITRD),
                            (os_.dtb, ResourceKind.DTB)):
            if value:
                resources.append(Resource(value, kind))
        if os_.loader is not None and os_.loader.path:
            resources.append(Resource(os_.loader.path, ResourceKind.LOADER))
        if os_.nvram is not None and os_.nvram.path:
            resources.append(Resource(os_.nvram.path, ResourceKind.NVRAM))
    devices = dom.devices
    if devices is not None:
        if devices.emulator:
            runtime.append(RuntimePath(devices.emulator, "rm"))
        for chardev in [*devices.serials, *devices.consoles, *devices.parallels, *devices.channels]:
            for csrc in chardev.sources:
                if not csrc.path:
                    continue
                if chardev.type == "file":
                    resources.append(Resource(csrc.path, ResourceKind.SERIAL_LOG))
                elif chardev.type in ("unix", "dev"):
                    runtime.append(RuntimePath(csrc.path, "rw"))
            if chardev.log is not None and chardev.log.file:
                resources.append(Resource(chardev.log.file, ResourceKind.LOG))
    return resources, runtime


def _loader(args: argparse.Namespace) -> ProfileLoader:
    from pyvirt.security.apparmor import ParserLoader, ProfileLoader

    class NoLoader(ProfileLoader):
        """--no-check without --load: nothing compiles or loads the profile."""

        def load(self, profile: Path) -> None:
            return None

        def unload(self, profile: Path) -> None:
            return None

    if args.load:
        return ParserLoader()
    if args.no_check:
        return NoLoader()
    return ParserLoader(compile_only=True)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from pyvirt.errors import OperationInvalid, codes
    from pyvirt.security.apparmor import AppArmorDriver, ProfileSet, profile_name
    from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind

    profiles = ProfileSet(args.dir)
    if args.remove:
        if not args.uuid:
            raise OperationInvalid("-R needs the domain's UUID (-u UUID)", domain=codes.VIR_FROM_SECURITY)
        name = profile_name(args.uuid.lower())
        profile = profiles.profile(name)
        if args.load and profile.exists():
            _loader(args).unload(profile)
        for path in (profile, profiles.files(name)):
            path.unlink(missing_ok=True)
        return 0

    from pyvirt.xml.domain import parse_domain

    text = Path(args.xml).read_bytes() if args.xml else sys.stdin.buffer.read()
    dom = parse_domain(text, post_parse=False)
    if not dom.uuid:
        raise OperationInvalid("the domain XML has no <uuid>; the profile is named after it",
                               domain=codes.VIR_FROM_SECURITY)
    uuid = dom.uuid.lower()
    if args.uuid and args.uuid.lower() != uuid:
        raise OperationInvalid(f"-u {args.uuid} is not the UUID of the domain XML ({uuid})",
                               domain=codes.VIR_FROM_SECURITY)
    try:
        resources, runtime = domain_files(dom)
        resources += [Resource(f, ResourceKind.OTHER) for f in args.file]
    except ValueError as e:
        raise OperationInvalid(f"domain '{dom.name}': {e}", domain=codes.VIR_FROM_SECURITY) from e
    ctx = DomainSecurityContext(dom.name or uuid, uuid, 0, 0, (), tuple(resources))
    driver = AppArmorDriver(profiles, _loader(args))
    spec = driver.gen_label(ctx, dom.seclabels, runtime=runtime)
    if spec.type != "dynamic":
        raise OperationInvalid(f"domain '{ctx.name}' has a {spec.type} AppArmor label: no profile is "
                               "generated for it", domain=codes.VIR_FROM_SECURITY)
    if args.probe:
        profile_text, files_text = driver.render(ctx)
        out.write(profile_text)
        out.write(f"\n# --- {profiles.files(spec.label or '')} ---\n")
        out.write(files_text)
        return 0
    if args.create and profiles.profile(spec.label or "").exists():
        raise OperationInvalid(f"the profile {profiles.profile(spec.label or '')} already exists; use "
                               "-r to replace it", domain=codes.VIR_FROM_SECURITY)
    driver.set_all(ctx)
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = _parser().parse_args(argv)
    from pyvirt.errors import PyvirtError

    try:
        return _run(args, out)
    except PyvirtError as e:
        err.write(f"pyvirt-aa-helper: error: {e}\n")
        for note in getattr(e, "__notes__", []):
            err.write(f"pyvirt-aa-helper: {note}\n")
        return 1
    except OSError as e:
        err.write(f"pyvirt-aa-helper: error: {e.filename or ''}: {e.strerror}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
