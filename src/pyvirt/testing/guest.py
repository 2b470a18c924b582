# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's real test guest: Debian's own kernel plus a busybox initramfs.

Lifecycle tests need a guest that really boots, really answers the ACPI power button and really
reboots, yet builds with nothing but Debian's package registry. :func:`build` assembles one:

* the kernel and its modules come from the package ``linux-image-amd64`` depends on, fetched with
  ``apt-get download`` and unpacked with ``dpkg-deb -x`` (never installed, so no initramfs
  trigger and no change to the host);
* the initramfs (gzip'd newc cpio) holds the static ``/bin/busybox`` of the installed
  ``busybox-static``, the modules a test guest needs (ACPI button, evdev, virtio, ATA/SCSI, e1000)
  with their dependencies, and ``init.sh`` as ``/init``.

The booted guest prints :data:`READY_MARKER` on its own line on the first serial port (ttyS0) once
its modules are loaded and acpid listens, then offers a root shell there with prompt
:data:`PROMPT`. The ACPI power button (QMP ``system_powerdown``) prints :data:`POWEROFF_MARKER`
and powers off at once; ``reboot -f`` typed on the shell resets the machine, after which QEMU boots
the same kernel again and the ready marker is printed anew.

Results are cached under ``${XDG_CACHE_HOME:-~/.cache}/pyvirt/test-guest/`` (or
``$PYVIRT_TEST_GUEST_DIR``) and rebuilt only when an input changes::

    debs/<package>_<version>_amd64.deb   downloaded once, reused by every rebuild
    <key>/vmlinux                        the kernel, uncompressed: QEMU boots it through PVH, which
                                         halves the boot under TCG (vmlinuz, the bzImage, otherwise)
    <key>/initrd.img                     the initramfs
    <key>/guest.json                     what went in (written last: its presence means complete)
    .lock                                serialises concurrent builds (pytest-xdist workers)

The guest boots under TCG in a few seconds; ``pyvirt-test-guest boot`` shows it to a human.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, NoReturn

from pyvirt.errors import OperationFailed

__all__ = [
    "READY_MARKER",
    "POWEROFF_MARKER",
    "PROMPT",
    "CMDLINE",
    "MODULES",
    "Guest",
    "build",
    "default_cache_dir",
    "main",
]

log = logging.getLogger(__name__)

READY_MARKER = "PYVIRT-GUEST-READY"
POWEROFF_MARKER = "PYVIRT-GUEST: powering off"
PROMPT = "pyvirt-guest# "

# "quiet" keeps the kernel's own messages off the serial console so that the markers and the shell
# stand out. Boot speed options (mitigations=off, tsc=reliable, ...) gained nothing measurable under
# TCG; PVH boot of the uncompressed kernel is what halves the time. No "panic=": a panic should stay
# on the console for the failing test to show, not turn into a reset that looks like a reboot.
CMDLINE = "console=ttyS0 quiet"

# Debian builds these as modules; each is skipped cleanly when the kernel lacks it or has it built in.
MODULES: tuple[str, ...] = (
    "button", "evdev",                                   # acpid and the ACPI power button
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_scsi", "virtio_balloon",
    "ata_piix", "ahci", "sd_mod", "sr_mod",              # IDE/SATA disks and CD-ROMs
    "e1000",                                             # QEMU's default NIC model
    "pvpanic", "pvpanic_mmio",                           # <panic model='isa'>: GUEST_PANICKED
)

# Bump whenever the layout or content of what build() writes changes for the same inputs.
FORMAT_VERSION = 4

KERNEL_METAPACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_BINARY = Path("/bin/busybox")

_LOAD_LIST = "pyvirt-load.list"
_INIT_TEMPLATE = Path(__file__).with_name("init.sh")
_POWER_BUTTON_SCRIPT = f"""#!/bin/sh
# Run by busybox acpid on the ACPI power button (event "PWRF 00000080").
echo "{POWEROFF_MARKER}" > /dev/console
poweroff -f
"""


@dataclasses.dataclass(frozen=True)
class Guest:
    """A built test guest, ready for ``qemu-system-x86_64``."""

    kernel: Path
    initrd: Path
    cmdline: str
    key: str
    # True when build() found everything in the cache and ran no apt-get or dpkg-deb.
    cached: bool = dataclasses.field(default=False, compare=False)

    def boot_args(self) -> list[str]:
        """QEMU's direct-kernel-boot arguments for this guest."""
        return ["-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.cmdline]


class _Package(NamedTuple):
    name: str
    version: str


class _StaleLists(OperationFailed):
    """An apt query or download failed in a way ``apt-get update`` may cure."""


def default_cache_dir() -> Path:
    env = os.environ.get("PYVIRT_TEST_GUEST_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "pyvirt" / "test-guest"


def build(cache_dir: Path | None = None) -> Guest:
    """Return the test guest, building it unless the cache already holds this exact one."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OperationFailed(f"cannot create the test guest cache {cache}: {e}; "
                              "set PYVIRT_TEST_GUEST_DIR to a writable directory") from e
    with _locked(cache / ".lock"):
        # Holding the lock, nobody else builds here: staging left by a killed build is garbage.
        for leftover in [*cache.glob(".build-*"), *cache.glob("debs/.download-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            return _build(cache)
        except _StaleLists as stale:
            log.info("%s; refreshing the package lists", stale)
            try:
                _run(["apt-get", "update", "-q"],
                     fix="run 'apt-get update' as root or check the access to the Debian mirror")
            except OperationFailed as e:
                raise OperationFailed(f"{stale}; refreshing the package lists failed too: {e}") from stale
            return _build(cache)


def _build(cache: Path) -> Guest:
    kernel_pkg = _resolve_kernel_package()
    busybox_version = _busybox_version()
    init_text = _render_init()
    key = _cache_key(kernel_pkg, busybox_version, init_text)
    out = cache / key
    cached = _cached_guest(out, key)
    if cached is not None:
        log.debug("test guest %s found in %s", key, out)
        return cached

    deb = _fetch_deb(kernel_pkg, cache / "debs")
    log.info("building test guest %s from %s", key, deb.name)
    staging = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
    try:
        unpacked = staging / "deb"
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)],
             fix=f"delete {deb} so that it is downloaded again")
        kver, vmlinuz = _find_kernel(unpacked, kernel_pkg)
        moddir = unpacked / "lib" / "modules" / kver
        order = _load_order(moddir, MODULES)
        log.info("initramfs modules in load order: %s", " ".join(m.name for m in order))

        result = staging / key
        result.mkdir()
        vmlinux = _pvh_kernel(vmlinuz.read_bytes())
        if vmlinux is not None:
            (result / "vmlinux").write_bytes(vmlinux)
            kernel_file = "vmlinux"
        else:
            log.info("%s cannot boot through PVH; using the slower bzImage", vmlinuz.name)
            shutil.copyfile(vmlinuz, result / "vmlinuz")
            kernel_file = "vmlinuz"
        (result / "initrd.img").write_bytes(_initramfs(kver, moddir, order, init_text))
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "kernel_package": f"{kernel_pkg.name}={kernel_pkg.version}",
            "kernel_release": kver,
            "kernel_file": kernel_file,
            "busybox": f"{BUSYBOX_PACKAGE}={busybox_version}",
            "modules": [m.path for m in order],
            "cmdline": CMDLINE,
        }
        (result / "guest.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            # Only an interrupted build of an older pyvirt can leave this; it has no guest.json.
            shutil.rmtree(out)
        os.rename(result, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _prune(cache, keep_deb=deb)
    return Guest(kernel=out / kernel_file, initrd=out / "initrd.img", cmdline=CMDLINE, key=key)


def _cached_guest(out: Path, key: str) -> Guest | None:
    try:
        meta = json.loads((out / "guest.json").read_text())
    except (OSError, ValueError):
        return None
    kernel, initrd = out / str(meta.get("kernel_file")), out / "initrd.img"
    if meta.get("key") != key or not kernel.is_file() or not initrd.is_file():
        return None
    with contextlib.suppress(OSError):
        os.utime(out / "guest.json")
    return Guest(kernel=kernel, initrd=initrd, cmdline=CMDLINE, key=key, cached=True)


def _cache_key(kernel: _Package, busybox_version: str, init_text: str) -> str:
    material = json.dumps({
        "format": FORMAT_VERSION,
        "kernel": [kernel.name, kernel.version],
        "busybox": busybox_version,
        "init": init_text,
        "power_button": _POWER_BUTTON_SCRIPT,
        "modules": MODULES,
        "cmdline": CMDLINE,
    }, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(argv: Sequence[str], *, fix: str, cwd: Path | None = None,
         stale_lists: bool = False) -> str:
    """Run a command; on failure raise an error naming the command, its stderr and the fix."""
    log.debug("running %s", argv)
    try:
        proc = subprocess.run(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, check=False)
    except OSError as e:
        raise OperationFailed(f"cannot run {argv[0]}: {e}; {fix}") from e
    if proc.returncode != 0:
        stderr = proc.stderr.strip() or f"exit status {proc.returncode}"
        cls = _StaleLists if stale_lists else OperationFailed
        raise cls(f"{' '.join(argv)} failed: {stderr}; {fix}")
    return proc.stdout


# --- packages ------------------------------------------------------------------------------------

def _resolve_kernel_package() -> _Package:
    """The real kernel package behind the metapackage (linux-image-6.1.0-NN-amd64) and its version."""
    out = _run(["apt-cache", "show", "--no-all-versions", KERNEL_METAPACKAGE], stale_lists=True,
               fix="run 'apt-get update' as root")
    # Debian pins the metapackage to the exact kernel: "Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)".
    m = re.search(r"^Depends:.*?\b(linux-image-[0-9][^\s,(]*)(?:\s*\(=\s*([^)\s]+)\))?", out, re.MULTILINE)
    if not m:
        raise OperationFailed(f"{KERNEL_METAPACKAGE} names no linux-image-<version> dependency in "
                              f"'apt-cache show': {out.strip()[:500]!r}; is this Debian on amd64?")
    name, version = m.group(1), m.group(2)
    if version is None:
        policy = _run(["apt-cache", "policy", name], stale_lists=True, fix="run 'apt-get update' as root")
        cm = re.search(r"^\s*Candidate:\s*(\S+)", policy, re.MULTILINE)
        if not cm or cm.group(1) == "(none)":
            raise _StaleLists(f"apt knows no candidate version of {name}; run 'apt-get update' as root")
        version = cm.group(1)
    return _Package(name, version)


def _busybox_version() -> str:
    fix = f"install it: apt-get install {BUSYBOX_PACKAGE}"
    try:
        out = _run(["dpkg-query", "-W", "-f=${Status}\\t${Version}", BUSYBOX_PACKAGE], fix=fix)
    except OperationFailed as e:
        raise OperationFailed(f"{BUSYBOX_PACKAGE} is needed for the test guest's initramfs; {fix}") from e
    status, _, version = out.partition("\t")
    # Only busybox-static's /bin/busybox runs without the host's libc inside the initramfs.
    if status != "install ok installed" or not BUSYBOX_BINARY.is_file():
        raise OperationFailed(f"{BUSYBOX_PACKAGE} is not installed (dpkg status {status!r}); {fix}")
    return version


def _deb_glob(pkg: _Package) -> str:
    # apt-get download escapes the epoch colon of the version in file names.
    return f"{pkg.name}_{pkg.version.replace(':', '%3a')}_*.deb"


def _fetch_deb(pkg: _Package, debs: Path) -> Path:
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(_deb_glob(pkg)))
    if found:
        return found[0]
    log.info("downloading %s=%s", pkg.name, pkg.version)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=debs))
    try:
        _run(["apt-get", "download", "-q", f"{pkg.name}={pkg.version}"], cwd=tmp, stale_lists=True,
             fix="run 'apt-get update' as root and check the access to the Debian mirror")
        got = sorted(tmp.glob(_deb_glob(pkg)))
        if not got:
            raise OperationFailed(f"apt-get download {pkg.name}={pkg.version} left no .deb in {tmp} "
                                  f"(found {sorted(p.name for p in tmp.iterdir())}); report a pyvirt bug")
        dest = debs / got[0].name
        os.rename(got[0], dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# A build unused this long is from an older kernel or pyvirt; other checkouts sharing the cache
# keep theirs alive, since every cache hit refreshes the mtime of guest.json.
_UNUSED_BUILD_SECONDS = 14 * 24 * 3600


def _prune(cache: Path, keep_deb: Path) -> None:
    """Drop superseded kernel packages (~70 MB each) and long-unused builds (~70 MB each)."""
    for old in (cache / "debs").glob("linux-image-*.deb"):
        if old != keep_deb:
            log.info("removing superseded %s", old.name)
            old.unlink(missing_ok=True)
    now = time.time()
    for meta in cache.glob("*/guest.json"):
        try:
            unused = now - meta.stat().st_mtime
        except OSError:
            continue
        if unused > _UNUSED_BUILD_SECONDS:
            log.info("removing test guest %s, unused for %d days", meta.parent.name, unused // 86400)
            shutil.rmtree(meta.parent, ignore_errors=True)


# --- kernel and modules --------------------------------------------------------------------------

def _find_kernel(root: Path, pkg: _Package) -> tuple[str, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise OperationFailed(f"{pkg.name}={pkg.version} holds {len(kernels)} boot/vmlinuz-* files, "
                              "expected exactly one; is it a Debian kernel image package?")
    kver = kernels[0].name.removeprefix("vmlinuz-")
    if not (root / "lib" / "modules" / kver).is_dir():
        raise OperationFailed(f"{pkg.name}={pkg.version} has no lib/modules/{kver}; "
                              "is it a Debian kernel image package?")
    return kver, kernels[0]


def _pvh_kernel(bzimage: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage, when QEMU can boot it directly through PVH.

    Under TCG, decompressing Debian's xz bzImage takes longer than the rest of the boot (about
    2.5 of 4.7 s); QEMU loads an ELF kernel carrying the Xen PVH entry note as it is. Returns None
    when the payload is not xz/gzip or the kernel has no PVH entry, and the bzImage is used.
    """
    import struct

    if bzimage[0x202:0x206] != b"HdrS" or struct.unpack_from("<H", bzimage, 0x206)[0] < 0x208:
        return None
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start:start + payload_length]
    try:
        if payload.startswith(b"\xfd7zXZ\x00"):
            import lzma
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif payload.startswith(b"\x1f\x8b"):
            import zlib
            elf = zlib.decompressobj(wbits=31).decompress(payload)
        else:
            return None
    except (OSError, ValueError, EOFError):
        return None
    return elf if _has_pvh_entry(elf) else None


def _has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit ELF kernel has the XEN_ELFNOTE_PHYS32_ENTRY note QEMU's PVH loader needs."""
    import struct

    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _fl, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and n_type == 18:  # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


class _Module(NamedTuple):
    name: str
    path: str  # relative to lib/modules/<kver>/, always uncompressed ".ko" inside the initramfs
    source: Path


_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def _module_name(filename: str) -> str:
    for suffix in _MODULE_SUFFIXES:
        if filename.endswith(suffix):
            filename = filename[: -len(suffix)]
            break
    # Like kmod: module names treat "-" and "_" alike (depends= says "t10-pi", the file is t10-pi.ko).
    return filename.replace("-", "_")


def _module_index(moddir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(moddir / "kernel"):
        for f in files:
            if f.endswith(_MODULE_SUFFIXES):
                index[_module_name(f)] = Path(dirpath, f)
    return index


def _builtin_modules(moddir: Path) -> set[str]:
    try:
        lines = (moddir / "modules.builtin").read_text().split()
    except OSError:
        return set()
    return {_module_name(os.path.basename(line)) for line in lines}


def _module_bytes(path: Path) -> bytes:
    """The module as insmod needs it: busybox insmod cannot decompress, so this is done at build time."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        import lzma
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        import gzip
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        proc = subprocess.run(["zstd", "-q", "-d", "-c", str(path)], capture_output=True, check=False)
        if proc.returncode != 0:
            raise OperationFailed(f"cannot decompress kernel module {path.name} with zstd: "
                                  f"{proc.stderr.decode(errors='replace').strip()}; apt-get install zstd")
        return proc.stdout
    return data


def _modinfo(data: bytes, what: str) -> dict[str, list[str]]:
    """The key=value pairs of a module's ELF .modinfo section (what modinfo(8) prints)."""
    import struct

    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise OperationFailed(f"kernel module {what} is not a 64-bit little-endian ELF file; "
                              "the kernel package looks damaged: delete it from the cache")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    _n, _t, _f, _a, stroff, strsize = sections[shstrndx]
    names = data[stroff:stroff + strsize]
    info: dict[str, list[str]] = {}
    for name_off, _t, _f, _a, offset, size in sections:
        if names[name_off:names.index(b"\0", name_off)] == b".modinfo":
            for entry in data[offset:offset + size].split(b"\0"):
                key, sep, value = entry.decode(errors="replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
    return info


def _dependencies(info: dict[str, list[str]]) -> list[str]:
    """Hard dependencies, then soft "pre:" ones (which modules.dep would omit but modprobe honours)."""
    deps = [d for v in info.get("depends", []) for d in v.split(",") if d]
    for v in info.get("softdep", []):
        section = ""
        for token in v.split():
            if token.endswith(":"):
                section = token[:-1]
            elif section == "pre":
                deps.append(token)
    return [_module_name(d) for d in deps]


def _load_order(moddir: Path, wanted: Iterable[str]) -> list[_Module]:
    """``wanted`` plus their dependencies, each after what it depends on.

    The package carries no modules.dep (depmod writes it at install time), so the dependencies come
    from each module's own .modinfo, the same data depmod reads.
    """
    index = _module_index(moddir)
    builtin = _builtin_modules(moddir)
    order: list[_Module] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(name: str, needed_by: str | None) -> None:
        if name in done or name in builtin:
            return
        if name in visiting:
            raise OperationFailed(f"kernel modules depend on each other in a cycle: "
                                  f"{' -> '.join([*visiting, name])}; the kernel package looks broken")
        source = index.get(name)
        if source is None:
            # A soft dependency may name an alias (crc_t10dif's "crct10dif"); the module then falls back.
            log.debug("module %s%s is not in the kernel package; skipped", name,
                     f" (needed by {needed_by})" if needed_by else "")
            return
        visiting.append(name)
        for dep in _dependencies(_modinfo(_module_bytes(source), source.name)):
            visit(dep, name)
        visiting.pop()
        done.add(name)
        rel = source.relative_to(moddir).as_posix()
        order.append(_Module(name, rel[: rel.index(".ko") + 3], source))

    for name in wanted:
        visit(_module_name(name), None)
    return order


# --- initramfs -----------------------------------------------------------------------------------

def _render_init() -> str:
    try:
        template = _INIT_TEMPLATE.read_text()
    except OSError as e:
        raise OperationFailed(f"cannot read the test guest's init script {_INIT_TEMPLATE}: {e}; "
                              "reinstall pyvirt") from e
    values = {"READY_MARKER": READY_MARKER, "PROMPT": PROMPT, "LOAD_LIST": _LOAD_LIST}
    text = re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], template)
    return text


class _Newc:
    """A "newc" cpio archive, the format the kernel unpacks as initramfs.

    Written here rather than with cpio(1) so that device nodes and root ownership need no
    privileges and the archive is byte-for-byte reproducible (all times are 0).
    """

    S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._ino = 0
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._chunks += [header, encoded, _pad(len(header) + len(encoded)), data, _pad(len(data))]

    def dir(self, name: str, perm: int = 0o755) -> None:
        """``name`` and its missing parents; the archive's root is the initramfs root, never listed."""
        if not name or name in self._dirs:
            return
        self.dir(os.path.dirname(name))
        self._dirs.add(name)
        self._entry(name, self.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self.dir(os.path.dirname(name))
        self._entry(name, self.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self.dir(os.path.dirname(name))
        self._entry(name, self.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self.dir(os.path.dirname(name))
        self._entry(name, self.S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._chunks)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _busybox_applets() -> list[str]:
    out = _run([str(BUSYBOX_BINARY), "--list-full"], fix=f"reinstall {BUSYBOX_PACKAGE}")
    return [line.strip() for line in out.splitlines() if line.strip()]


def _initramfs(kver: str, moddir: Path, order: list[_Module], init_text: str) -> bytes:
    import gzip

    cpio = _Newc()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "root", "run",
              "var/log"):  # acpid refuses to start without /var/log
        cpio.dir(d)
    cpio.dir("tmp", 0o1777)
    # The kernel opens /dev/console for /init's stdio before /init can mount devtmpfs.
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", BUSYBOX_BINARY.read_bytes(), 0o755)
    for applet in _busybox_applets():
        if os.path.dirname(applet) in ("bin", "sbin", "usr/bin", "usr/sbin") and applet != "bin/busybox":
            cpio.symlink(applet, "/bin/busybox")
    cpio.file("init", init_text.encode(), 0o755)
    # No /etc/acpi.map: acpid would read it instead of its built-in table, in a format of its own;
    # the built-in table already sends the power button to PWRF/00000080.
    cpio.file("etc/acpi/PWRF/00000080", _POWER_BUTTON_SCRIPT.encode(), 0o755)
    base = f"lib/modules/{kver}"
    cpio.dir(base)
    for m in order:
        cpio.file(f"{base}/{m.path}", _module_bytes(m.source))
    cpio.file(f"{base}/{_LOAD_LIST}", "".join(f"{m.path}\n" for m in order).encode())
    # Level 9 would save under 1 % for 7x the time; mtime=0 keeps the file reproducible.
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


# --- command line --------------------------------------------------------------------------------

def _boot(guest: Guest, qemu: str, memory: int, extra: Sequence[str]) -> NoReturn:
    import shlex

    argv = [qemu, "-accel", "tcg", "-m", str(memory), "-nodefaults", "-no-user-config",
            "-display", "none", "-serial", "mon:stdio", *guest.boot_args(), *extra]
    print("pyvirt-test-guest: " + shlex.join(argv), file=sys.stderr)
    print("pyvirt-test-guest: Ctrl-A X quits QEMU; 'reboot -f' reboots the guest, "
          "'poweroff -f' stops it", file=sys.stderr, flush=True)
    try:
        os.execvp(qemu, argv)
    except OSError as e:
        raise OperationFailed(f"cannot run {qemu}: {e}; apt-get install qemu-system-x86") from e


def main(argv: Sequence[str] | None = None) -> int:
    """``pyvirt-test-guest build`` prints where the guest is; ``boot`` runs it on this terminal."""
    import argparse
    import shlex

    parser = argparse.ArgumentParser(
        prog="pyvirt-test-guest", description="Build or boot pyvirt's test guest (Debian kernel + busybox).")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $PYVIRT_TEST_GUEST_DIR "
                        "or ${XDG_CACHE_HOME:-~/.cache}/pyvirt/test-guest")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build (or find in the cache) and print kernel, initrd and cmdline")
    boot = sub.add_parser("boot", help="boot the guest under TCG on this terminal's serial console")
    boot.add_argument("--qemu", default="qemu-system-x86_64")
    boot.add_argument("-m", "--memory", type=int, default=256, help="MiB (default 256)")
    boot.add_argument("qemu_args", nargs="*", help="extra QEMU arguments (after --)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="pyvirt-test-guest: %(message)s")
    try:
        guest = build(args.cache_dir)
        if args.command == "boot":
            _boot(guest, args.qemu, args.memory, args.qemu_args)
    except OperationFailed as e:
        print(f"pyvirt-test-guest: error: {e}", file=sys.stderr)
        return 1
    # Shell-quoted so that `eval "$(pyvirt-test-guest build)"` sets the three variables.
    print(f"kernel={shlex.quote(str(guest.kernel))}")
    print(f"initrd={shlex.quote(str(guest.initrd))}")
    print(f"cmdline={shlex.quote(guest.cmdline)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
