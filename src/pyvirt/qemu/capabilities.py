# SPDX-License-Identifier: LGPL-2.1-or-later
"""What each QEMU emulator on this host can do, probed over QMP and cached per binary.

Two paths, with very different costs:

* **warm** (every ``pyvirsh capabilities``): find the candidate binaries (a directory scan and a
  ``stat`` each), read one JSON file per binary from ``<cache_dir>/capabilities/`` and compare the
  binary's identity. This module imports nothing heavier than json; asyncio, qemu.qmp and lxml
  are never loaded here.
* **cold** (empty or stale cache): :mod:`pyvirt.qemu.probe` runs every stale emulator at once, and
  :mod:`pyvirt.qemu.kvm` tests KVM for real; results are written atomically (temporary file +
  rename) so that concurrent readers never see half a file. A file that cannot be read or parsed,
  has another :data:`CACHE_FORMAT` or another identity is simply probed again.

A binary's identity is its path, size, ctime and mtime plus the mtime of QEMU's module directory
(Debian ships display and audio backends as loadable modules: installing one changes what the
binary can do without touching it). The KVM verdict has its own key (binary, ``/dev/kvm``, boot
id), so a reboot re-tests KVM without re-probing QEMU.

Emulators looked for, as libvirt's QEMU driver documents: ``qemu``, ``qemu-kvm`` and every
``qemu-system-*`` in /usr/bin and in each directory of ``$PATH`` (first found wins; the same file
reached twice, e.g. through /bin -> /usr/bin, counts once).
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

from pyvirt.errors import OperationFailed
from pyvirt.qemu.kvm import KvmStatus, absent_reason, kvm_key

__all__ = [
    "CACHE_FORMAT",
    "QemuCapsFlag",
    "MachineType",
    "CpuModel",
    "QemuCaps",
    "Emulator",
    "find_emulators",
    "load_all",
    "probe_all",
    "caps_for_binary",
    "hypervisor_version",
    "host_emulator",
    "libvirt_arch",
    "probe_errors",
]

#: bump when the cached JSON changes meaning; older files are then re-probed
CACHE_FORMAT = 1

SEARCH_DIRS_FIRST = ("/usr/bin",)
EXACT_NAMES = ("qemu", "qemu-kvm")
PREFIX = "qemu-system-"

# QEMU's target names where libvirt's architecture names differ
_LIBVIRT_ARCH = {"i386": "i686", "arm": "armv7l"}


def libvirt_arch(target: str) -> str:
    """libvirt's name for a QEMU target (``query-target``'s arch)."""
    return _LIBVIRT_ARCH.get(target, target)


class QemuCapsFlag(enum.Enum):
    """Facts about an emulator that the command builder and validation test.

    Append only, never rename a value: the values are saved in caches and status files.
    """

    KVM = "kvm"                                 # the kvm accelerator is built in
    TCG = "tcg"                                 # the tcg accelerator is built in
    IOTHREAD = "iothread"
    QUERY_CPU_MODEL_EXPANSION = "query-cpu-model-expansion"
    QUERY_HOTPLUGGABLE_CPUS = "query-hotpluggable-cpus"
    BLOCKDEV_BACKUP = "blockdev-backup"
    VIRTIO_BLK = "virtio-blk"
    VIRTIO_SCSI = "virtio-scsi"
    VIRTIO_NET = "virtio-net"
    VIRTIO_RNG = "virtio-rng"
    VIRTIO_GPU = "virtio-gpu"
    VIRTIO_BALLOON = "virtio-balloon"
    VIRTIO_SERIAL = "virtio-serial"
    VIRTIO_9P = "virtio-9p"
    VHOST_USER_FS = "vhost-user-fs"
    VIRTIO_MMIO = "virtio-mmio"
    VIRTIO_TRANSITIONAL = "virtio-pci-transitional"
    AHCI = "ich9-ahci"
    SCSI_LSI = "lsi"
    USB_STORAGE = "usb-storage"
    USB_REDIR = "usb-redir"
    ISA_FDC = "isa-fdc"
    IDE = "ide"
    VFIO_PCI = "vfio-pci"
    VGA = "VGA"
    CIRRUS_VGA = "cirrus-vga"
    VMWARE_SVGA = "vmware-svga"
    QXL = "qxl"
    BOCHS_DISPLAY = "bochs-display"
    RAMFB = "ramfb"
    VNC = "vnc"
    SPICE = "spice"
    SDL = "sdl"
    EGL_HEADLESS = "egl-headless"
    DBUS_DISPLAY = "dbus-display"
    RNG_RANDOM = "rng-random"
    RNG_EGD = "rng-egd"
    RNG_BUILTIN = "rng-builtin"
    TPM_PASSTHROUGH = "tpm-passthrough"
    TPM_EMULATOR = "tpm-emulator"
    TPM_TIS = "tpm-tis"
    TPM_CRB = "tpm-crb"
    MEMORY_BACKEND_FILE = "memory-backend-file"
    MEMORY_BACKEND_MEMFD = "memory-backend-memfd"
    VMCOREINFO = "vmcoreinfo"
    VMGENID = "vmgenid"
    SEV_GUEST = "sev-guest"
    SGX_EPC = "sgx-epc"
    PVPANIC = "pvpanic"
    SECCOMP_SANDBOX = "seccomp-sandbox"


# How each flag is derived: ("type", qom type), ("command", qmp command), ("option", -option name),
# ("display", DisplayType value from the QAPI schema), ("accel", accelerator type).
_FLAG_SOURCES: dict[QemuCapsFlag, tuple[str, ...]] = {
    QemuCapsFlag.KVM: ("accel", "kvm-accel"),
    QemuCapsFlag.TCG: ("accel", "tcg-accel"),
    QemuCapsFlag.IOTHREAD: ("type", "iothread"),
    QemuCapsFlag.QUERY_CPU_MODEL_EXPANSION: ("command", "query-cpu-model-expansion"),
    QemuCapsFlag.QUERY_HOTPLUGGABLE_CPUS: ("command", "query-hotpluggable-cpus"),
    QemuCapsFlag.BLOCKDEV_BACKUP: ("command", "blockdev-backup"),
    QemuCapsFlag.VIRTIO_BLK: ("type", "virtio-blk-pci"),
    QemuCapsFlag.VIRTIO_SCSI: ("type", "virtio-scsi-pci"),
    QemuCapsFlag.VIRTIO_NET: ("type", "virtio-net-pci"),
    QemuCapsFlag.VIRTIO_RNG: ("type", "virtio-rng-pci"),
    QemuCapsFlag.VIRTIO_GPU: ("type", "virtio-gpu-pci"),
    QemuCapsFlag.VIRTIO_BALLOON: ("type", "virtio-balloon-pci"),
    QemuCapsFlag.VIRTIO_SERIAL: ("type", "virtio-serial-pci"),
    QemuCapsFlag.VIRTIO_9P: ("type", "virtio-9p-pci"),
    QemuCapsFlag.VHOST_USER_FS: ("type", "vhost-user-fs-pci"),
    QemuCapsFlag.VIRTIO_MMIO: ("type", "virtio-mmio"),
    QemuCapsFlag.VIRTIO_TRANSITIONAL: ("type", "virtio-blk-pci-transitional"),
    QemuCapsFlag.AHCI: ("type", "ich9-ahci"),
    QemuCapsFlag.SCSI_LSI: ("type", "lsi53c895a"),
    QemuCapsFlag.USB_STORAGE: ("type", "usb-storage"),
    QemuCapsFlag.USB_REDIR: ("type", "usb-redir"),
    QemuCapsFlag.ISA_FDC: ("type", "isa-fdc"),
    QemuCapsFlag.IDE: ("type", "ide-hd"),
    QemuCapsFlag.VFIO_PCI: ("type", "vfio-pci"),
    QemuCapsFlag.VGA: ("type", "VGA"),
    QemuCapsFlag.CIRRUS_VGA: ("type", "cirrus-vga"),
    QemuCapsFlag.VMWARE_SVGA: ("type", "vmware-svga"),
    QemuCapsFlag.QXL: ("type", "qxl-vga"),
    QemuCapsFlag.BOCHS_DISPLAY: ("type", "bochs-display"),
    QemuCapsFlag.RAMFB: ("type", "ramfb"),
    QemuCapsFlag.VNC: ("option", "vnc"),
    QemuCapsFlag.SPICE: ("option", "spice"),
    QemuCapsFlag.SDL: ("display", "sdl"),
    QemuCapsFlag.EGL_HEADLESS: ("display", "egl-headless"),
    QemuCapsFlag.DBUS_DISPLAY: ("display", "dbus"),
    QemuCapsFlag.RNG_RANDOM: ("type", "rng-random"),
    QemuCapsFlag.RNG_EGD: ("type", "rng-egd"),
    QemuCapsFlag.RNG_BUILTIN: ("type", "rng-builtin"),
    QemuCapsFlag.TPM_PASSTHROUGH: ("tpm-type", "passthrough"),
    QemuCapsFlag.TPM_EMULATOR: ("tpm-type", "emulator"),
    QemuCapsFlag.TPM_TIS: ("tpm-model", "tpm-tis"),
    QemuCapsFlag.TPM_CRB: ("tpm-model", "tpm-crb"),
    QemuCapsFlag.MEMORY_BACKEND_FILE: ("type", "memory-backend-file"),
    QemuCapsFlag.MEMORY_BACKEND_MEMFD: ("type", "memory-backend-memfd"),
    QemuCapsFlag.VMCOREINFO: ("type", "vmcoreinfo"),
    QemuCapsFlag.VMGENID: ("type", "vmgenid"),
    QemuCapsFlag.SEV_GUEST: ("type", "sev-guest"),
    QemuCapsFlag.SGX_EPC: ("type", "sgx-epc"),
    QemuCapsFlag.PVPANIC: ("type", "pvpanic"),
    QemuCapsFlag.SECCOMP_SANDBOX: ("option", "sandbox"),
}


class MachineType(NamedTuple):
    name: str
    alias: str | None = None
    is_default: bool = False
    max_cpus: int = 1
    deprecated: bool = False
    default_cpu_type: str | None = None
    hotpluggable_cpus: bool = False


class CpuModel(NamedTuple):
    name: str
    typename: str = ""
    #: usable under the accelerator of the probe (TCG when the binary has it); None: unknown
    usable: bool | None = None
    alias_of: str | None = None
    deprecated: bool = False


class QemuCaps(NamedTuple):
    """One emulator binary, as probed (immutable: records are cheap to define, which matters on
    the warm path where every class definition is paid at import)."""

    binary: str
    version: int                     # 7002022 for QEMU 7.2.22
    package: str
    target: str                      # QEMU's name of the target (query-target): x86_64, i386...
    probe_accel: str                 # the accelerator the probe ran with: tcg or kvm
    machines: list[MachineType]
    cpu_models: list[CpuModel]
    flags: frozenset[QemuCapsFlag]
    types: frozenset[str]            # every QOM type (devices, objects, backends)
    commands: frozenset[str]
    tpm_models: tuple[str, ...] = ()
    tpm_types: tuple[str, ...] = ()
    display_types: tuple[str, ...] = ()
    kvm: KvmStatus = KvmStatus(False, False, "not probed")

    @property
    def arch(self) -> str:
        """libvirt's name of the guest architecture."""
        return libvirt_arch(self.target)

    def has(self, flag: QemuCapsFlag) -> bool:
        return flag in self.flags

    def default_machine(self) -> MachineType | None:
        for m in self.machines:
            if m.is_default:
                return m
        return None

    def find_machine(self, name: str) -> MachineType | None:
        """A machine by its name or alias."""
        for m in self.machines:
            if name in (m.name, m.alias):
                return m
        return None

    # -- probe answers -> model -------------------------------------------------------------

    @classmethod
    def from_probe(cls, binary: str, answers: dict[str, Any]) -> QemuCaps:
        def ok(name: str) -> Any:
            value = answers.get(name)
            return None if isinstance(value, dict) and "error" in value else value

        ver = ok("query-version") or {}
        q = ver.get("qemu", {})
        version = int(q.get("major", 0)) * 1000000 + int(q.get("minor", 0)) * 1000 + int(q.get("micro", 0))
        target = (ok("query-target") or {}).get("arch", "")
        if not version or not target:
            raise OperationFailed(f"emulator {binary} did not report its version and target over QMP")
        machines = [MachineType(
            name=m["name"], alias=m.get("alias"), is_default=bool(m.get("is-default")),
            max_cpus=int(m.get("cpu-max", 1)), deprecated=bool(m.get("deprecated")),
            default_cpu_type=m.get("default-cpu-type"), hotpluggable_cpus=bool(m.get("hotpluggable-cpus")))
            for m in ok("query-machines") or []]
        cpus = []
        for c in ok("query-cpu-definitions") or []:
            unavailable = c.get("unavailable-features")
            cpus.append(CpuModel(name=c["name"], typename=c.get("typename", ""),
                                 usable=None if unavailable is None else not unavailable,
                                 alias_of=c.get("alias-of"), deprecated=bool(c.get("deprecated"))))
        types = frozenset(t["name"] for t in ok("qom-list-types") or [])
        commands = frozenset(c["name"] for c in ok("query-commands") or [])
        options = {o["option"] for o in ok("query-command-line-options") or []}
        tpm_models = tuple(ok("query-tpm-models") or ())
        tpm_types = tuple(ok("query-tpm-types") or ())
        displays = _display_types(ok("query-qmp-schema") or [])
        kvm_info = ok("query-kvm") or {}
        probe_accel = "kvm" if kvm_info.get("enabled") else "tcg"
        sources = {"type": types, "command": commands, "option": options, "display": set(displays),
                   "accel": types, "tpm-type": set(tpm_types), "tpm-model": set(tpm_models)}
        flags = frozenset(flag for flag, (kind, name) in _FLAG_SOURCES.items() if name in sources[kind])
        return cls(binary=binary, version=version, package=str(ver.get("package", "")), target=target,
                   probe_accel=probe_accel, machines=machines, cpu_models=cpus, flags=flags, types=types,
                   commands=commands, tpm_models=tpm_models, tpm_types=tpm_types, display_types=displays)

    # -- cache (de)serialisation ------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "binary": self.binary, "version": self.version, "package": self.package,
            "target": self.target, "probe_accel": self.probe_accel,
            "machines": [[m.name, m.alias, m.is_default, m.max_cpus, m.deprecated, m.default_cpu_type,
                          m.hotpluggable_cpus] for m in self.machines],
            "cpu_models": [[c.name, c.typename, c.usable, c.alias_of, c.deprecated] for c in self.cpu_models],
            "flags": sorted(f.value for f in self.flags),
            "types": sorted(self.types), "commands": sorted(self.commands),
            "tpm_models": list(self.tpm_models), "tpm_types": list(self.tpm_types),
            "display_types": list(self.display_types),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], kvm: KvmStatus) -> QemuCaps:
        flags = []
        for value in d["flags"]:
            try:
                flags.append(QemuCapsFlag(value))
            except ValueError:  # a flag from a newer pyvirt: ignore, it cannot be tested anyway
                pass
        return cls(
            binary=d["binary"], version=int(d["version"]), package=d["package"], target=d["target"],
            probe_accel=d["probe_accel"],
            machines=[MachineType(*m) for m in d["machines"]],
            cpu_models=[CpuModel(*c) for c in d["cpu_models"]],
            flags=frozenset(flags), types=frozenset(d["types"]), commands=frozenset(d["commands"]),
            tpm_models=tuple(d["tpm_models"]), tpm_types=tuple(d["tpm_types"]),
            display_types=tuple(d["display_types"]), kvm=kvm)


def _display_types(schema: list[dict[str, Any]]) -> tuple[str, ...]:
    # query-qmp-schema masks type names; DisplayType is the enum holding both 'none' and 'egl-headless'
    # (or 'sdl'/'gtk' on builds without OpenGL).
    for entry in schema:
        if entry.get("meta-type") != "enum":
            continue
        members = entry.get("members") or entry.get("values") or []
        values = [v["name"] if isinstance(v, dict) else v for v in members]
        if {"none", "default"} <= set(values) and {"egl-headless", "sdl", "gtk", "curses"} & set(values):
            return tuple(values)
    return ()


# -- discovery ----------------------------------------------------------------------------------


class Emulator(NamedTuple):
    """A candidate binary and its identity (what invalidates its cache entry)."""

    path: str
    identity: tuple[Any, ...]


def _moddir_mtime() -> int:
    multiarch = getattr(sys.implementation, "_multiarch", "")
    for d in (f"/usr/lib/{multiarch}/qemu" if multiarch else "", "/usr/lib64/qemu", "/usr/lib/qemu"):
        if d:
            try:
                return os.stat(d).st_mtime_ns
            except OSError:
                continue
    return 0


def _is_candidate(name: str) -> bool:
    return name in EXACT_NAMES or (name.startswith(PREFIX) and len(name) > len(PREFIX))


def find_emulators(search_path: str | None = None, *,
                   cache_dir: str | os.PathLike[str] | None = None) -> list[Emulator]:
    """Every emulator binary pyvirt considers: in /usr/bin, then in ``$PATH``; ``search_path``
    (os.pathsep-separated) replaces both, for tests and callers that know better.

    With ``cache_dir``, the names found in each directory are remembered with the directory's
    mtime (adding, removing or renaming an entry changes it), which spares listing a 2000-entry
    /usr/bin on every call; the candidates themselves are always stat()ed.
    """
    if search_path is None:
        candidates_dirs = [*SEARCH_DIRS_FIRST, *os.environ.get("PATH", "").split(os.pathsep)]
    else:
        candidates_dirs = search_path.split(os.pathsep)
    dirs: list[str] = []
    for d in candidates_dirs:
        if d and os.path.isabs(d) and d not in dirs:
            dirs.append(d)
    listing = _list_dirs(dirs, cache_dir)
    moddir = _moddir_mtime()
    seen_names: set[str] = set()
    seen_files: set[tuple[int, int]] = set()
    found: list[Emulator] = []
    for d in dirs:
        for name in listing.get(d, ()):
            if name in seen_names:  # an earlier directory of the search path wins, like a shell
                continue
            full = os.path.join(d, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if not (st.st_mode & 0o111) or (st.st_mode & 0o170000) != 0o100000:
                continue
            seen_names.add(name)
            if (st.st_dev, st.st_ino) in seen_files:
                continue
            seen_files.add((st.st_dev, st.st_ino))
            found.append(Emulator(full, (full, st.st_size, st.st_ctime_ns, st.st_mtime_ns, moddir)))
    return found


# A directory modified less than this long ago is listed but its listing not remembered: file
# timestamps come from a coarse clock, so a change right after the listing could keep the same mtime.
_RACY_NS = 2_000_000_000


def _list_dirs(dirs: list[str], cache_dir: str | os.PathLike[str] | None) -> dict[str, list[str]]:
    index_path = os.path.join(os.fspath(cache_dir), "capabilities", "dirs.json") if cache_dir else None
    index: dict[str, Any] = {}
    if index_path is not None:
        try:
            with open(index_path, "rb") as f:
                index = json.load(f)
            if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
                index = {}
        except (OSError, ValueError):
            index = {}
    known: dict[str, Any] = index.get("dirs", {}) if isinstance(index.get("dirs"), dict) else {}
    listing: dict[str, list[str]] = {}
    remember: dict[str, Any] = {}
    now = None
    for d in dirs:
        try:
            mtime = os.stat(d).st_mtime_ns
        except OSError:
            continue
        entry = known.get(d)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == mtime:
            listing[d] = entry[1]
            remember[d] = entry
            continue
        try:
            # listdir + a prefix test: the cheapest scan of a large /usr/bin
            names = sorted(n for n in os.listdir(d) if n[:4] == "qemu" and _is_candidate(n))
        except OSError:
            continue
        listing[d] = names
        if now is None:
            import time

            now = time.time_ns()
        if now - mtime > _RACY_NS:
            remember[d] = [mtime, names]
    if index_path is not None and remember != known:
        try:
            _atomic_write_json(index_path, {"format": CACHE_FORMAT, "dirs": remember})
        except OSError:
            pass  # only a speed-up: without it, directories are listed every time
    return listing


def _atomic_write_json(path: str, data: Any) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- cache ----------------------------------------------------------------------------------------


def _cache_file(cache_dir: str | os.PathLike[str], binary: str) -> str:
    # A readable name; the binary's path is also stored inside and checked, so a collision between
    # two escaped names only costs a re-probe.
    return os.path.join(os.fspath(cache_dir), "capabilities", binary.strip("/").replace("/", "_") + ".json")


class _Entry:
    """The cache state of one emulator while loading (mutable, private)."""

    __slots__ = ("emulator", "caps", "error", "kvm", "kvm_key", "fresh")

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.caps: QemuCaps | None = None
        self.error: str | None = None
        self.kvm: KvmStatus | None = None
        self.kvm_key: list[Any] | None = None
        self.fresh = False  # caps (or error) valid for this identity


def _read_entry(cache_dir: str | os.PathLike[str], emu: Emulator, key: list[Any] | None) -> _Entry:
    entry = _Entry(emu)
    try:
        with open(_cache_file(cache_dir, emu.path), "rb") as f:
            data = json.load(f)
        if data.get("format") != CACHE_FORMAT or data.get("identity") != list(emu.identity):
            return entry
        kvm_data = data.get("kvm")
        if kvm_data is not None and kvm_data.get("key") == key:
            entry.kvm = KvmStatus.from_json(kvm_data)
            entry.kvm_key = key
        if data.get("error") is not None:
            # a failed probe is remembered for this boot only: it may have been transient
            if data.get("boot_id") == (key[2] if key else None):
                entry.error = str(data["error"])
                entry.fresh = True
            return entry
        entry.caps = QemuCaps.from_json(data["caps"], entry.kvm or KvmStatus(False, False, "not tested"))
        entry.fresh = True
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        # missing, truncated, corrupt or from an incompatible pyvirt: probe again
        entry.caps = None
        entry.fresh = False
    return entry


def _write_entry(cache_dir: str | os.PathLike[str], entry: _Entry) -> None:
    path = _cache_file(cache_dir, entry.emulator.path)
    data: dict[str, Any] = {"format": CACHE_FORMAT, "identity": list(entry.emulator.identity)}
    if entry.caps is not None:
        data["caps"] = entry.caps.to_json()
    else:
        data["error"] = entry.error
        data["boot_id"] = entry.kvm_key[2] if entry.kvm_key else None
    if entry.kvm is not None and entry.kvm_key is not None:
        data["kvm"] = {"key": entry.kvm_key, **entry.kvm.to_json()}
    try:
        _atomic_write_json(path, data)
    except OSError as e:
        raise OperationFailed(f"cannot write the capability cache {path}: {e}; check that the "
                              "cache directory is writable") from e


def load_all(cache_dir: str | os.PathLike[str], *, search_path: str | None = None) -> list[QemuCaps]:
    """Capabilities of every emulator found, probing (in parallel) those whose cache is stale.

    Emulators that cannot be probed are left out; :func:`probe_errors` tells why.
    """
    return [e.caps for e in _load(cache_dir, search_path) if e.caps is not None]


def probe_errors(cache_dir: str | os.PathLike[str], *, search_path: str | None = None) -> dict[str, str]:
    """{binary: why it could not be probed} for the emulators left out of :func:`load_all`."""
    return {e.emulator.path: e.error for e in _load(cache_dir, search_path) if e.error is not None}


def probe_all(cache_dir: str | os.PathLike[str], *, search_path: str | None = None) -> list[QemuCaps]:
    """Probe every emulator now, ignoring the cache, and refresh the cache."""
    entries = [_Entry(emu) for emu in find_emulators(search_path, cache_dir=cache_dir)]
    _refresh(cache_dir, entries)
    return [e.caps for e in entries if e.caps is not None]


def _load(cache_dir: str | os.PathLike[str], search_path: str | None) -> list[_Entry]:
    entries = []
    for emu in find_emulators(search_path, cache_dir=cache_dir):
        entries.append(_read_entry(cache_dir, emu, kvm_key(list(emu.identity))))
    if any(not e.fresh or (e.caps is not None and e.kvm is None) for e in entries):
        _refresh(cache_dir, entries)
    return entries


def _refresh(cache_dir: str | os.PathLike[str], entries: list[_Entry]) -> None:
    import asyncio

    stale = [e for e in entries if not e.fresh or (e.caps is not None and e.kvm is None)]
    if stale:
        asyncio.run(_refresh_async(stale))
        for e in stale:
            _write_entry(cache_dir, e)


async def _refresh_async(entries: Iterable[_Entry]) -> None:
    import asyncio

    await asyncio.gather(*(_refresh_one(e) for e in entries))


async def _refresh_one(entry: _Entry) -> None:
    import asyncio

    from pyvirt.qemu import kvm, probe

    binary = entry.emulator.path
    entry.kvm_key = kvm_key(list(entry.emulator.identity))
    early: asyncio.Task[tuple[bool, str]] | None = None
    if not entry.fresh:
        # The KVM test usually needs only the binary and its 'pc' machine: for the x86 emulators
        # of an x86 host, start it now, alongside the probe, instead of after it (it is the
        # longest step of a cold start when KVM is broken). The probe's answers confirm below
        # that 'pc' is the machine the test should have used; otherwise the test runs again.
        if (os.path.basename(binary) in _EARLY_KVM_NAMES and os.uname().machine in _PAYLOAD_TARGETS
                and absent_reason() is None):
            early = asyncio.ensure_future(kvm.test_usable(binary, "pc"))
        try:
            try:
                answers = await probe.probe_binary(binary)
                entry.caps = QemuCaps.from_probe(binary, answers)
                entry.error = None
            except OperationFailed as e:
                entry.caps, entry.error = None, str(e)
            entry.fresh = True
            if entry.caps is not None:
                default = entry.caps.default_machine()
                if (early is not None and entry.caps.has(QemuCapsFlag.KVM) and default is not None
                        and "pc" in (default.name, default.alias)
                        and entry.caps.target in _PAYLOAD_TARGETS[os.uname().machine]):
                    usable, reason = await early
                    entry.kvm = KvmStatus(True, usable, reason)
                else:
                    entry.kvm = await _kvm_status(entry.caps)
        finally:
            if early is not None and not early.done():
                early.cancel()
                try:
                    await early
                except (asyncio.CancelledError, Exception):
                    pass  # the early test's own cleanup has run
    if entry.caps is not None:
        if entry.kvm is None:
            entry.kvm = await _kvm_status(entry.caps)
        entry.caps = entry.caps._replace(kvm=entry.kvm)


_EARLY_KVM_NAMES = ("qemu-system-x86_64", "qemu-system-i386")


# Targets the KVM test payload (x86 machine code) can run on; other hosts trust /dev/kvm.
_PAYLOAD_TARGETS = {"x86_64": ("x86_64", "i386"), "i686": ("i386",)}


async def _kvm_status(caps: QemuCaps) -> KvmStatus:
    from pyvirt.qemu import kvm

    if not caps.has(QemuCapsFlag.KVM):
        return KvmStatus(False, False, f"{caps.binary} is built without the kvm accelerator")
    why = absent_reason()
    if why is not None:
        return KvmStatus(False, False, why)
    host = os.uname().machine
    if caps.target not in _PAYLOAD_TARGETS.get(host, (host,)) and not (
            host == "aarch64" and caps.target == "arm"):
        return KvmStatus(True, False, f"KVM on a {host} host cannot run {caps.target} guests")
    if host not in _PAYLOAD_TARGETS:
        return KvmStatus(True, True, f"not tested (no KVM test guest for {host}); /dev/kvm is trusted")
    if not {"isa-debugcon", "isa-debug-exit"} <= caps.types:
        return KvmStatus(True, False, f"not tested: {caps.binary} lacks the isa-debugcon and isa-debug-exit "
                                      "devices the KVM test guest reports through, so KVM is not offered")
    machine = caps.default_machine() or caps.find_machine("pc") or caps.find_machine("microvm")
    if machine is None:
        return KvmStatus(True, False, f"{caps.binary} has no PC machine type to test KVM with")
    usable, reason = await kvm.test_usable(caps.binary, machine.name)
    return KvmStatus(True, usable, reason)


# -- queries used by the driver --------------------------------------------------------------


def caps_for_binary(cache_dir: str | os.PathLike[str], binary: str,
                    all_caps: list[QemuCaps] | None = None) -> QemuCaps:
    """Capabilities of one binary (probed if it is not among the discovered ones); ``all_caps``
    saves a second :func:`load_all` when the caller has it."""
    if all_caps is None:
        all_caps = load_all(cache_dir)
    for c in all_caps:
        if c.binary == binary:
            return c
    real = os.path.realpath(binary)
    for c in all_caps:
        if os.path.realpath(c.binary) == real:
            return c
    try:
        st = os.stat(binary)
    except OSError as e:
        raise OperationFailed(f"emulator {binary} cannot be used: {e.strerror}; give the path of an "
                              "existing QEMU binary") from e
    emu = Emulator(binary, (binary, st.st_size, st.st_ctime_ns, st.st_mtime_ns, _moddir_mtime()))
    entry = _read_entry(cache_dir, emu, kvm_key(list(emu.identity)))
    if not entry.fresh or (entry.caps is not None and entry.kvm is None):
        _refresh(cache_dir, [entry])
    if entry.caps is None:
        raise OperationFailed(entry.error or f"emulator {binary} could not be probed")
    return entry.caps


def host_emulator(all_caps: list[QemuCaps], arch: str | None = None) -> QemuCaps | None:
    """The emulator libvirt would pick for ``arch`` (default: the host's): the one named
    qemu-system-<target>, else qemu-kvm/qemu when they serve that arch, else any."""
    want = arch or _host_arch()
    best: QemuCaps | None = None
    rank = 99
    for c in all_caps:
        if c.arch != want:
            continue
        name = os.path.basename(c.binary)
        r = 0 if name == PREFIX + c.target else 1 if name in EXACT_NAMES else 2
        if r < rank:
            best, rank = c, r
    return best


def _host_arch() -> str:
    m = os.uname().machine
    return {"i386": "i686", "i486": "i686", "i586": "i686", "amd64": "x86_64"}.get(m, m)


def hypervisor_version(cache_dir: str | os.PathLike[str]) -> int:
    """QEMU's version as libvirt reports it (major * 1000000 + minor * 1000 + micro), of the host
    architecture's emulator; 0 when no emulator was found."""
    all_caps = load_all(cache_dir)
    c = host_emulator(all_caps) or (all_caps[0] if all_caps else None)
    return c.version if c is not None else 0
