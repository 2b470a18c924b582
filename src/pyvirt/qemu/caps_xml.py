# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver's policy for the capabilities documents: probed emulators + host facts ->
the pure models of :mod:`pyvirt.xml.capabilities`.

Public API (what the driver calls):

* :func:`get_capabilities` / :func:`capabilities_xml` — ``virsh capabilities``
* :func:`domain_capabilities` / :func:`domain_capabilities_xml` — ``virsh domcapabilities``

Where pyvirt deliberately differs from libvirt 9.0:

* ``<domain type='kvm'/>`` is offered only when KVM is *usable* (a test guest ran, see
  :mod:`pyvirt.qemu.kvm`), not merely present; libvirt offers it whenever /dev/kvm exists.
* One guest per architecture, from the emulator named ``qemu-system-<target>`` (else ``qemu-kvm`` or
  ``qemu``, else any other emulator of that architecture, e.g. ``qemu-system-x86_64-microvm`` when it
  is the only one). Variant binaries such as ``qemu-system-x86_64-microvm`` are probed but do not add
  a second x86_64 guest; libvirt ignores them entirely. ``domcapabilities --emulatorbin`` accepts them.
* The host CPU has no ``<model>`` (libvirt derives it from its CPU map, which pyvirt does not have)
  and lists every feature flag of /proc/cpuinfo rather than those beyond the model.
* Custom CPU models: QEMU's own list minus versioned aliases (``-vN``) and ``max``/``base``/``host``;
  libvirt further restricts it to models in its CPU map. Under KVM usability of a model is
  ``unknown`` (only the TCG probe ran); host-model has no model details.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.qemu.capabilities import (
    QemuCaps,
    QemuCapsFlag,
    caps_for_binary,
    host_emulator,
    libvirt_arch,
    load_all,
)
from pyvirt.xml.capabilities import (
    Capabilities,
    CpuCaps,
    CustomCpuModel,
    DomainCaps,
    Enum,
    Guest,
    GuestFeature,
    GuestMachine,
    Host,
    HostModel,
    Loader,
    OsCaps,
    SecModel,
    SevCaps,
    Supported,
    format_capabilities,
    format_domain_capabilities,
)

__all__ = [
    "SecModelSpec",
    "get_capabilities",
    "capabilities_xml",
    "domain_capabilities",
    "domain_capabilities_xml",
]

#: (model, doi, {domain type: base label}) as the driver derives it from qemu.conf
SecModelSpec = tuple[str, str, dict[str, str]]

# libvirt lists guests in the order of its architecture enum
_ARCH_ORDER = ("alpha", "armv6l", "armv7b", "armv7l", "aarch64", "cris", "i686", "lm32", "m68k",
               "microblaze", "microblazeel", "mips", "mipsel", "mips64", "mips64el", "openrisc",
               "parisc", "parisc64", "ppc", "ppcle", "ppc64", "ppc64le", "ppcemb", "riscv32",
               "riscv64", "s390", "s390x", "sh4", "sh4eb", "sparc", "sparc64", "unicore32", "x86_64",
               "xtensa", "xtensaeb")
_WORDSIZE_64 = {"x86_64", "aarch64", "alpha", "mips64", "mips64el", "parisc64", "ppc64", "ppc64le",
                "riscv64", "s390x", "sparc64"}
_X86 = {"i686", "x86_64"}

# QEMU's x86 CPU models and the vendor their CPUID reports (QEMU does not say over QMP)
_CPU_VENDOR_PREFIXES = (
    ("Intel", ("Broadwell", "Cascadelake", "Conroe", "Cooperlake", "Denverton", "GraniteRapids",
               "Haswell", "Icelake", "IvyBridge", "KnightsMill", "Nehalem", "Penryn", "SandyBridge",
               "SapphireRapids", "Skylake", "Snowridge", "Westmere", "coreduo", "core2duo", "n270")),
    ("AMD", ("EPYC", "Opteron", "athlon", "phenom")),
    ("Hygon", ("Dhyana",)),
)

FIRMWARE_DIRS = ("/usr/share/qemu/firmware", "/etc/qemu/firmware")


def _invalid(message: str) -> PyvirtError:
    return PyvirtError(message, code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_QEMU)


def _host_arch() -> str:
    m = os.uname().machine
    return "i686" if m in ("i386", "i486", "i586") else m


def _kvm_can_run(arch: str) -> bool:
    host = _host_arch()
    return arch == host or (host == "x86_64" and arch == "i686") or (host == "aarch64" and arch == "armv7l")


def domain_types(caps: QemuCaps) -> list[str]:
    types = []
    if caps.has(QemuCapsFlag.TCG):
        types.append("qemu")
    if caps.kvm.usable and _kvm_can_run(caps.arch):
        types.append("kvm")
    return types


def _machines(caps: QemuCaps) -> list[GuestMachine]:
    ordered = sorted(caps.machines, key=lambda m: not m.is_default)  # stable: default first
    out: list[GuestMachine] = []
    for m in ordered:
        if m.name == "none":  # only useful to probe; no guest can run on it
            continue
        out.append(GuestMachine(m.name, None, m.max_cpus, m.deprecated))
        if m.alias:
            out.append(GuestMachine(m.alias, m.name, m.max_cpus, m.deprecated))
    return out


def _guest_features(arch: str) -> list[GuestFeature]:
    feats: list[GuestFeature] = []
    if arch == "i686":
        feats += [GuestFeature("pae"), GuestFeature("nonpae")]
    if arch in _X86 or arch == "aarch64":
        feats.append(GuestFeature("acpi", True, True))
    if arch in _X86:
        feats.append(GuestFeature("apic", True, False))
    feats += [GuestFeature("cpuselection"), GuestFeature("deviceboot"),
              GuestFeature("disksnapshot", True, False)]
    return feats


def guest_emulators(all_caps: Sequence[QemuCaps]) -> list[QemuCaps]:
    """The one emulator per architecture that the capabilities list, in libvirt's arch order."""
    arches = sorted({c.arch for c in all_caps},
                    key=lambda a: (_ARCH_ORDER.index(a) if a in _ARCH_ORDER else len(_ARCH_ORDER), a))
    chosen = []
    for arch in arches:
        c = host_emulator(list(all_caps), arch)
        if c is not None and domain_types(c):
            chosen.append(c)
    return chosen


def get_capabilities(cache_dir: str | os.PathLike[str], secmodels: Sequence[SecModelSpec]) -> Capabilities:
    from pyvirt.qemu.host import host_facts

    facts = host_facts()
    host = Host(cpu=facts.cpu, uuid=facts.uuid, power_management=[], iommu=facts.iommu,
                migration_live=True, migration_transports=["tcp", "rdma"], cells=facts.cells,
                cache=facts.cache, secmodels=[SecModel(m, d, dict(labels)) for m, d, labels in secmodels])
    guests = []
    for c in guest_emulators(load_all(cache_dir)):
        guests.append(Guest(os_type="hvm", arch=c.arch, wordsize=64 if c.arch in _WORDSIZE_64 else 32,
                            emulator=c.binary, machines=_machines(c), domains=domain_types(c),
                            features=_guest_features(c.arch)))
    return Capabilities(host=host, guests=guests)


def capabilities_xml(cache_dir: str | os.PathLike[str], secmodels: Sequence[SecModelSpec]) -> str:
    """``virsh capabilities`` for the driver whose cache is ``cache_dir``."""
    return format_capabilities(get_capabilities(cache_dir, secmodels))


# -- domain capabilities ------------------------------------------------------------------------


def _select(cache_dir: str | os.PathLike[str], all_caps: list[QemuCaps], emulatorbin: str | None,
            arch: str | None) -> QemuCaps:
    if emulatorbin is not None:
        if not os.path.isabs(emulatorbin):
            raise _invalid(f"emulator binary '{emulatorbin}' must be an absolute path")
        if not os.path.exists(emulatorbin):
            known = ", ".join(c.binary for c in all_caps) or "none"
            raise _invalid(f"emulator binary '{emulatorbin}' does not exist; emulators found: {known}")
        caps = caps_for_binary(cache_dir, emulatorbin, all_caps)
        if arch is not None and arch != caps.arch:
            raise _invalid(f"emulator '{caps.binary}' does not support arch '{arch}', only '{caps.arch}'; "
                           "leave --arch out or pick the emulator of that arch")
        return caps
    want = arch or _host_arch()
    caps_or_none = host_emulator(all_caps, want)
    if caps_or_none is None:
        arches = sorted({c.arch for c in all_caps})
        raise _invalid(f"no emulator found for arch '{want}'; architectures available: "
                       f"{', '.join(arches) or 'none (install qemu-system-*)'}")
    return caps_or_none


def _cpu_vendor(model: str) -> str:
    for vendor, prefixes in _CPU_VENDOR_PREFIXES:
        if model.startswith(prefixes):
            return vendor
    return "unknown"


def _custom_models(caps: QemuCaps, virttype: str) -> list[CustomCpuModel]:
    accel = "kvm" if virttype == "kvm" else "tcg"
    models = []
    for m in caps.cpu_models:
        name = m.name
        if name in ("max", "base", "host") or _is_versioned(name):
            continue
        if accel == caps.probe_accel and m.usable is not None:
            usable = "yes" if m.usable else "no"
        else:
            usable = "unknown"
        models.append(CustomCpuModel(name, usable, _cpu_vendor(name), m.deprecated))
    models.sort(key=lambda m: m.name, reverse=True)  # libvirt's order
    return models


def _is_versioned(name: str) -> bool:
    head, sep, tail = name.rpartition("-v")
    return bool(sep and head and tail.isdigit())


def _firmware(arch: str, machine: str, target: str) -> tuple[list[str], bool]:
    """(executables, any secure-boot) of the firmware descriptors matching."""
    descriptors: dict[str, str] = {}
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    for d in (*FIRMWARE_DIRS, os.path.join(home, "qemu", "firmware")):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if name.endswith(".json"):
                descriptors[name] = os.path.join(d, name)  # later directories override earlier
    paths: list[str] = []
    secure = False
    for name in sorted(descriptors):
        try:
            with open(descriptors[name]) as f:
                desc: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            continue
        mapping = desc.get("mapping", {})
        if mapping.get("device") != "flash" or "uefi" not in desc.get("interface-types", []):
            continue
        if not any(t.get("architecture") == target and
                   any(fnmatch.fnmatchcase(machine, g) for g in t.get("machines", []))
                   for t in desc.get("targets", [])):
            continue
        features = desc.get("features", [])
        if "requires-smm" in features and "q35" not in machine:
            continue  # secure boot needs SMM, which only q35 has
        exe = mapping.get("executable", {}).get("filename")
        if not exe or not os.path.exists(exe):
            continue
        if exe not in paths:
            paths.append(exe)
        if "secure-boot" in features:
            secure = True
    return paths, secure


def _os_caps(caps: QemuCaps, machine: str) -> OsCaps:
    paths, secure = _firmware(caps.arch, machine, caps.target)
    # As libvirt: a loader without secure boot is always possible (a plain ROM, if nothing
    # else); "yes" only when a secure-boot firmware is installed.
    secure_values = (["yes"] if secure else []) + ["no"]
    loader = Loader(supported=True, values=paths, enums=[
        Enum("type", ["rom", "pflash"]), Enum("readonly", ["yes", "no"]), Enum("secure", secure_values)])
    return OsCaps(supported=True, enums=[Enum("firmware", ["efi"] if paths else [])], loader=loader)


def _kvm_max_vcpus() -> int | None:
    # KVM_CHECK_EXTENSION(KVM_CAP_MAX_VCPUS) on /dev/kvm
    import fcntl

    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        value = fcntl.ioctl(fd, 0xAE03, 66)
        return value if isinstance(value, int) and value > 0 else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _devices(caps: QemuCaps, machine: str) -> list[Supported]:
    f = caps.has
    # q35 has AHCI (sata) instead of the PIIX IDE controller; libvirt offers no ide bus there
    ide = f(QemuCapsFlag.IDE) and "q35" not in machine
    transitional = (["virtio-transitional", "virtio-non-transitional"]
                    if f(QemuCapsFlag.VIRTIO_TRANSITIONAL) else [])
    bus = [b for b, ok in (("ide", ide), ("fdc", f(QemuCapsFlag.ISA_FDC)), ("scsi", True),
                           ("virtio", f(QemuCapsFlag.VIRTIO_BLK)), ("usb", f(QemuCapsFlag.USB_STORAGE)),
                           ("sata", f(QemuCapsFlag.AHCI))) if ok]
    disk = Supported("disk", True, [
        Enum("diskDevice", ["disk", "cdrom", "floppy", "lun"]), Enum("bus", bus),
        Enum("model", ["virtio", *transitional])])
    graphics = [g for g, flag in (("sdl", QemuCapsFlag.SDL), ("vnc", QemuCapsFlag.VNC),
                                  ("spice", QemuCapsFlag.SPICE), ("egl-headless", QemuCapsFlag.EGL_HEADLESS),
                                  ("dbus", QemuCapsFlag.DBUS_DISPLAY)) if f(flag)]
    video = [v for v, ok in (("vga", f(QemuCapsFlag.VGA)), ("cirrus", f(QemuCapsFlag.CIRRUS_VGA)),
                             ("vmvga", f(QemuCapsFlag.VMWARE_SVGA)), ("qxl", f(QemuCapsFlag.QXL)),
                             ("virtio", f(QemuCapsFlag.VIRTIO_GPU)), ("none", True),
                             ("bochs", f(QemuCapsFlag.BOCHS_DISPLAY)),
                             ("ramfb", f(QemuCapsFlag.RAMFB))) if ok]
    subsys = ["usb"] + (["pci"] if f(QemuCapsFlag.VFIO_PCI) else []) + ["scsi"]
    pci_backend = ["vfio"] if f(QemuCapsFlag.VFIO_PCI) and os.path.exists("/dev/vfio/vfio") else []
    hostdev = Supported("hostdev", True, [
        Enum("mode", ["subsystem"]), Enum("startupPolicy", ["default", "mandatory", "requisite", "optional"]),
        Enum("subsysType", subsys), Enum("capsType", []), Enum("pciBackend", pci_backend)])
    rng_backends = [b for b, flag in (("random", QemuCapsFlag.RNG_RANDOM), ("egd", QemuCapsFlag.RNG_EGD),
                                      ("builtin", QemuCapsFlag.RNG_BUILTIN)) if f(flag)]
    rng = Supported("rng", f(QemuCapsFlag.VIRTIO_RNG), [
        Enum("model", ["virtio", *transitional]), Enum("backendModel", rng_backends)])
    fs_types = ["path", "handle"] if f(QemuCapsFlag.VIRTIO_9P) else []
    if f(QemuCapsFlag.VHOST_USER_FS):
        fs_types.append("virtiofs")
    filesystem = Supported("filesystem", bool(fs_types), [Enum("driverType", fs_types)])
    tpm_models: list[str] = [m for m in ("tpm-tis", "tpm-crb", "tpm-spapr", "spapr-tpm-proxy")
                             if m in caps.tpm_models]
    # As libvirt: the emulator backend (and the external one, an swtpm reached the same way) and
    # the TPM versions are offered only when swtpm is installed, the versions its swtpm_setup has.
    tpm_versions = swtpm_versions()
    tpm_backends: list[str] = ["passthrough"] if "passthrough" in caps.tpm_types else []
    if "emulator" in caps.tpm_types and tpm_versions is not None:
        tpm_backends += ["emulator", "external"]
    tpm = Supported("tpm", bool(tpm_models and tpm_backends), [
        Enum("model", tpm_models), Enum("backendModel", tpm_backends),
        *([Enum("backendVersion", list(tpm_versions))] if tpm_versions is not None else [])])
    redirdev = Supported("redirdev", f(QemuCapsFlag.USB_REDIR), [Enum("bus", ["usb"])])
    channel = Supported("channel", True, [
        Enum("type", ["pty", "unix", *(["spicevmc"] if f(QemuCapsFlag.SPICE) else [])])])
    return [disk, Supported("graphics", bool(graphics), [Enum("type", graphics)]),
            Supported("video", True, [Enum("modelType", video)]), hostdev, rng, filesystem, tpm, redirdev,
            channel]


_SWTPM_TOOLS = ("swtpm", "swtpm_setup", "swtpm_ioctl")


def swtpm_versions() -> tuple[str, ...] | None:
    """The TPM versions ("1.2", "2.0") the installed swtpm can emulate, as its swtpm_setup's
    ``--print-capabilities`` says; None when swtpm, swtpm_setup or swtpm_ioctl is missing.
    Asked once per set of the three executables (their paths and modification times)."""
    import shutil

    stamps: list[tuple[str, int]] = []
    for tool in _SWTPM_TOOLS:
        path = shutil.which(tool)
        if path is None:
            return None
        try:
            stamps.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            return None
    return _swtpm_setup_versions(tuple(stamps))


@functools.lru_cache(maxsize=4)
def _swtpm_setup_versions(stamps: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    import subprocess

    setup = stamps[_SWTPM_TOOLS.index("swtpm_setup")][0]
    try:
        out = subprocess.run([setup, "--print-capabilities"], capture_output=True,
                             text=True, timeout=10, stdin=subprocess.DEVNULL).stdout
        features = set(json.loads(out).get("features", []))
    except (OSError, ValueError, AttributeError, subprocess.SubprocessError):
        features = set()  # an swtpm_setup too old to say: libvirt offers no version either
    return tuple(v for v, feature in (("1.2", "tpm-1.2"), ("2.0", "tpm-2.0"))
                 if feature in features)


def _features(caps: QemuCaps, virttype: str) -> list[Supported | SevCaps]:
    x86 = caps.arch in _X86
    return [
        Supported("gic", False),
        Supported("vmcoreinfo", caps.has(QemuCapsFlag.VMCOREINFO)),
        Supported("genid", caps.has(QemuCapsFlag.VMGENID)),
        Supported("backingStoreInput", True),
        Supported("backup", caps.has(QemuCapsFlag.BLOCKDEV_BACKUP)),
        # SEV and SGX need KVM and host support; the probe runs under TCG, where QEMU reports
        # neither, so pyvirt does not claim them.
        SevCaps(False),
        Supported("sgx", False),
        Supported("hyperv", x86, [Enum("features", ["spinlocks", "vendor_id"])] if x86 else []),
    ]


def domain_capabilities(cache_dir: str | os.PathLike[str], emulatorbin: str | None = None,
                        arch: str | None = None, machine: str | None = None,
                        virttype: str | None = None) -> DomainCaps:
    """The domain capabilities for one (emulator, arch, machine, virttype); unset ones default as
    libvirt's do: host arch, that arch's emulator, its default machine, kvm if usable else qemu.

    Raises a PyvirtError (VIR_ERR_INVALID_ARG) naming the bad value and the valid choices.
    """
    all_caps = load_all(cache_dir)
    caps = _select(cache_dir, all_caps, emulatorbin, arch)
    arch = caps.arch
    types = domain_types(caps)
    if virttype is None:
        virttype = "kvm" if "kvm" in types else "qemu"
    if virttype not in ("qemu", "kvm"):
        raise _invalid(f"unknown virttype '{virttype}'; this driver supports: qemu, kvm")
    if virttype not in types:
        if virttype == "kvm":
            raise _invalid(f"KVM cannot be used with '{caps.binary}' on this host: {caps.kvm.reason}; "
                           f"use virttype 'qemu' (TCG) instead")
        raise _invalid(f"emulator '{caps.binary}' cannot run virttype '{virttype}'; it supports: "
                       f"{', '.join(types) or 'nothing on this host'}")
    if machine is None:
        m = caps.default_machine()
        if m is None:
            names = ", ".join(x.name for x in caps.machines if x.name != "none")
            raise _invalid(f"emulator '{caps.binary}' has no default machine type; give one of: {names}")
    else:
        found = caps.find_machine(machine)
        if found is None or found.name == "none":
            names = ", ".join(sorted({n for x in caps.machines if x.name != "none"
                                      for n in (x.name, x.alias) if n}))
            raise _invalid(f"machine type '{machine}' is not supported by emulator '{caps.binary}'; "
                           f"valid machine types: {names}")
        m = found
    vcpu_max = m.max_cpus
    if virttype == "kvm":
        kvm_max = _kvm_max_vcpus()
        if kvm_max is not None:
            vcpu_max = min(vcpu_max, kvm_max)
    x86 = arch in _X86
    migratable = [Enum(n, ["on", "off"]) for n in ("hostPassthroughMigratable",)]
    cpu = CpuCaps(
        host_passthrough=Supported("mode", virttype == "kvm", migratable if virttype == "kvm" else []),
        maximum=Supported("mode", True, [Enum("maximumMigratable", ["on", "off"])] if x86 else []),
        host_model=HostModel(supported=caps.has(QemuCapsFlag.QUERY_CPU_MODEL_EXPANSION) or virttype == "kvm"),
        custom_supported=True,
        custom_models=_custom_models(caps, virttype))
    backing = ["file"] if caps.has(QemuCapsFlag.MEMORY_BACKEND_FILE) else []
    backing.append("anonymous")
    if caps.has(QemuCapsFlag.MEMORY_BACKEND_MEMFD):
        backing.append("memfd")
    return DomainCaps(
        path=caps.binary, domain=virttype, arch=arch, machine=m.name, vcpu_max=vcpu_max,
        iothreads=caps.has(QemuCapsFlag.IOTHREAD), os=_os_caps(caps, m.name), cpu=cpu,
        memory_backing=Supported("memoryBacking", True, [Enum("sourceType", backing)]),
        devices=_devices(caps, m.name), features=_features(caps, virttype))


def domain_capabilities_xml(cache_dir: str | os.PathLike[str], emulatorbin: str | None = None,
                            arch: str | None = None, machine: str | None = None,
                            virttype: str | None = None) -> str:
    """``virsh domcapabilities``."""
    return format_domain_capabilities(domain_capabilities(cache_dir, emulatorbin, arch, machine, virttype))


__all__ += ["domain_types", "guest_emulators", "libvirt_arch"]
