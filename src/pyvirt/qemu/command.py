# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU command line of a domain (libvirt's qemuBuildCommandLine), as a pure function.

:func:`build_command` reads the post-parsed definition, the emulator's capabilities, qemu.conf and a
:class:`CommandRuntime` of ids the process layer chose (domain id, socket paths, file descriptors) and
returns a :class:`QemuCommand`.  It opens nothing and asks the host nothing (Ganeti's rule): taps,
fds and host checks belong to the process layer.  The argument order and syntax follow libvirt 9.0,
so :func:`format_argv_line` prints what ``virsh domxml-to-native qemu-argv`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyvirt.conf.qemu_conf import QemuConf
from pyvirt.qemu.capabilities import QemuCaps, QemuCapsFlag
from pyvirt.qemu.command_devices import DeviceBuilder
from pyvirt.qemu.command_util import CommandUnsupported, json_arg, keyval, shell_quote
from pyvirt.secret.disk import QemuSecret
from pyvirt.xml.domain import Domain

__all__ = ["QemuCommand", "CommandRuntime", "CommandUnsupported", "build_command", "format_argv_line",
           "effective_flags"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class CommandRuntime:
    """Ids of one start of the domain, chosen by the process layer before building the command."""

    domain_id: int
    lib_dir: str                         #: the per-domain private directory (HOME of QEMU)
    monitor_path: str | None = None      #: QEMU listens on this UNIX socket for QMP ...
    monitor_fd: int | None = None        #: ... or on this already-listening socket passed as an fd
    channel_dir: str | None = None       #: where unix channels without a path get their socket
    vnc_port: int | None = None          #: the port picked for autoport VNC; None: pretend (5900)
    tap_fds: Mapping[str, Sequence[int]] = field(default_factory=dict)  #: "net0" -> tap fds
    #: "vda" -> the LUKS passphrase encrypted with the master key (pyvirt.secret.disk.encrypt_for_qemu)
    disk_secrets: Mapping[str, QemuSecret] = field(default_factory=dict)
    path_env: str = DEFAULT_PATH         #: PATH handed to QEMU


@dataclass(frozen=True)
class QemuCommand:
    binary: str
    argv: list[str]           #: the arguments after the binary
    env: dict[str, str]       #: the whole environment of QEMU, in libvirt's order


def effective_flags(dom: Domain, caps: QemuCaps) -> frozenset[QemuCapsFlag]:
    """The emulator's flags with the domain's ``<qemu:capabilities>`` add/del applied.

    Names that are not pyvirt flags (libvirt's own, such as 'blockdev') change nothing: pyvirt has
    no alternative code path for them.
    """
    flags = set(caps.flags)
    qc = dom.qemu_capabilities
    if qc is not None:
        by_value = {f.value: f for f in QemuCapsFlag}
        for cap in qc.add:
            if cap.capability in by_value:
                flags.add(by_value[cap.capability])
        for cap in qc.delete:
            if cap.capability in by_value:
                flags.discard(by_value[cap.capability])
    return frozenset(flags)


#: the per-domain master key: 32 random bytes in the private directory, QEMU's secret object of that id
MASTER_KEY_FILE = "master-key.aes"
MASTER_KEY_ALIAS = "masterKey0"


def build_command(dom: Domain, caps: QemuCaps, conf: QemuConf, runtime: CommandRuntime) -> QemuCommand:
    """The command line starting ``dom`` paused (-S); raises :class:`CommandUnsupported` for what
    pyvirt cannot express yet."""
    if dom.devices is None or dom.os is None or dom.os.type is None:
        raise CommandUnsupported("the domain was not post-parsed: <devices> and <os><type> are missing")
    flags = effective_flags(dom, caps)
    args: list[str] = []
    name = dom.name or ""
    args += ["-name", keyval(("guest", name), ("debug-threads", True))]
    args += ["-S"]
    # libvirt's per-domain master key (the process layer writes it): secrets reach QEMU encrypted
    # with it. Named relative to QEMU's working directory, its private one: an unprivileged QEMU
    # then needs no search permission on the directories above (libvirt names it absolutely).
    args += ["-object", json_arg({"qom-type": "secret", "id": MASTER_KEY_ALIAS, "format": "raw",
                                  "file": MASTER_KEY_FILE})]
    _machine(dom, conf, args)
    args += ["-accel", _accel(dom, caps)]
    _cpu(dom, args)
    _memory(dom, args)
    args += ["-overcommit", "mem-lock=off"]
    _smp(dom, args)
    _iothreads(dom, args)
    args += ["-uuid", dom.uuid or ""]
    if dom.genid:
        if QemuCapsFlag.VMGENID not in flags:
            raise CommandUnsupported("<genid> needs QEMU's vmgenid device, which this emulator lacks")
        args += ["-device", json_arg({"driver": "vmgenid", "guid": dom.genid, "id": "vmgenid0"})]
    if not dom.devices.graphics:
        args += ["-display", "none"]
    args += ["-no-user-config", "-nodefaults"]
    _monitor(runtime, args)
    _clock(dom, args)
    args += ["-no-shutdown"]
    if dom.features is None or not dom.features.acpi:
        args += ["-no-acpi"]
    _boot(dom, args)
    devices = DeviceBuilder(dom, flags, conf, runtime)
    devices.build(args)
    if dom.qemu_commandline is not None:
        args += [a.value or "" for a in dom.qemu_commandline.args]
    if QemuCapsFlag.SECCOMP_SANDBOX in flags and conf.seccomp_sandbox != 0:
        args += ["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
    devices.panics(args)
    args += ["-msg", "timestamp=on"]
    env = {"LC_ALL": "C", "PATH": runtime.path_env, "HOME": runtime.lib_dir,
           "XDG_DATA_HOME": f"{runtime.lib_dir}/.local/share",
           "XDG_CACHE_HOME": f"{runtime.lib_dir}/.cache",
           "XDG_CONFIG_HOME": f"{runtime.lib_dir}/.config"}
    if dom.qemu_commandline is not None:
        for e in dom.qemu_commandline.envs:
            env[e.name or ""] = e.value or ""
    return QemuCommand(binary=dom.devices.emulator or caps.binary, argv=args, env=env)


def format_argv_line(cmd: QemuCommand) -> str:
    """One line like ``virsh domxml-to-native qemu-argv``: environment, binary, arguments."""
    words = [f"{k}={shell_quote(v)}" for k, v in cmd.env.items()]
    words += [shell_quote(cmd.binary), *(shell_quote(a) for a in cmd.argv)]
    return " ".join(words)


# --- domain-wide options ---------------------------------------------------------------------------

def _iothreads(dom: Domain, args: list[str]) -> None:
    ids = [t.id for t in dom.iothreadids.iothreads] if dom.iothreadids is not None else []
    if not ids:
        ids = list(range(1, (dom.iothreads or 0) + 1))
    for i in ids:
        args += ["-object", json_arg({"qom-type": "iothread", "id": f"iothread{i}"})]


# Features the builder expresses (or that need no option); any other one is refused.
_FEATURES_DONE = ("acpi", "apic", "pae", "vmport")


def _machine(dom: Domain, conf: QemuConf, args: list[str]) -> None:
    assert dom.os is not None and dom.os.type is not None
    machine = dom.os.type.machine or ""
    vmport = None
    feats = dom.features
    if feats is not None:
        for name in ("hap", "privnet", "hyperv", "kvm", "pvspinlock", "pmu", "smm", "ioapic", "vmcoreinfo"):
            if getattr(feats, name, None):
                raise CommandUnsupported(f"the <{name}> feature is not supported by the command builder "
                                         "yet")
    if feats is not None and feats.vmport is not None and feats.vmport.state is not None:
        vmport = feats.vmport.state
    dump = dom.dump_core if dom.dump_core is not None else conf.dump_guest_core
    if dom.memory_backing is not None or (dom.cpu is not None and dom.cpu.numa is not None):
        raise CommandUnsupported("memory backing and guest NUMA are not supported by the command builder yet")
    args += ["-machine", keyval(machine, ("usb", False), ("vmport", vmport), ("dump-guest-core", dump),
                                ("memory-backend", "pc.ram"))]


def _accel(dom: Domain, caps: QemuCaps) -> str:
    # As libvirt: type='kvm' asks for KVM. Where KVM is not usable the process layer refuses the
    # start (it never falls back to TCG silently); this pure builder only states the request.
    if dom.type == "kvm":
        return "kvm"
    if dom.type not in ("kvm", "qemu"):
        raise CommandUnsupported(f"domain type '{dom.type}' cannot run on QEMU: use 'kvm' or 'qemu'")
    return "tcg"


def _cpu(dom: Domain, args: list[str]) -> None:
    cpu = dom.cpu
    if cpu is None:
        return
    if cpu.features or cpu.cache is not None or cpu.vendor is not None:
        raise CommandUnsupported("CPU features, cache and vendor are not supported by the command "
                                 "builder yet")
    if cpu.mode == "host-passthrough":
        args += ["-cpu", keyval("host", ("migratable", cpu.migratable if cpu.migratable is not None
                                          else True))]
    elif cpu.mode == "maximum":
        args += ["-cpu", keyval("max", ("migratable", cpu.migratable if cpu.migratable is not None
                                         else True))]
    elif cpu.mode == "custom" and cpu.model is not None and cpu.model.name:
        if "," in cpu.model.name or "=" in cpu.model.name:
            raise CommandUnsupported(f"invalid CPU model name '{cpu.model.name}'")
        args += ["-cpu", cpu.model.name]
    else:
        raise CommandUnsupported(f"CPU mode '{cpu.mode}' is not supported by the command builder yet")


def _memory(dom: Domain, args: list[str]) -> None:
    kib = dom.memory or 0
    mib = (kib + 1023) // 1024  # QEMU's RAM size is rounded up to whole MiB, as libvirt does
    args += ["-m", str(mib)]
    args += ["-object", json_arg({"qom-type": "memory-backend-ram", "id": "pc.ram", "size": mib << 20})]


def _smp(dom: Domain, args: list[str]) -> None:
    vcpu = dom.vcpu
    count = vcpu.count if vcpu is not None and vcpu.count else 1
    current = vcpu.current if vcpu is not None and vcpu.current else count
    topo = dom.cpu.topology if dom.cpu is not None else None
    parts: list[str | tuple[str, object] | None] = [str(current)]
    if current != count:
        parts.append(("maxcpus", count))
    if topo is not None:
        parts += [("sockets", topo.sockets), ("dies", topo.dies), ("cores", topo.cores),
                  ("threads", topo.threads)]
    else:
        parts += [("sockets", count), ("cores", 1), ("threads", 1)]
    args += ["-smp", keyval(*parts)]


def _monitor(runtime: CommandRuntime, args: list[str]) -> None:
    if runtime.monitor_fd is not None:
        chardev = keyval("socket", ("id", "charmonitor"), ("fd", runtime.monitor_fd),
                         ("server", True), ("wait", False))
    elif runtime.monitor_path is not None:
        chardev = keyval("socket", ("id", "charmonitor"), ("path", runtime.monitor_path),
                         ("server", True), ("wait", False))
    else:
        raise CommandUnsupported("no monitor socket: the runtime must give a monitor path or fd")
    args += ["-chardev", chardev, "-mon", "chardev=charmonitor,id=monitor,mode=control"]


def _clock(dom: Domain, args: list[str]) -> None:
    clock = dom.clock
    offset = clock.offset if clock is not None else "utc"
    if offset not in ("utc", "localtime"):
        raise CommandUnsupported(f"clock offset '{offset}' is not supported by the command builder yet")
    driftfix = None
    extra: list[str] = []
    for t in clock.timers if clock is not None else []:
        if t.name == "rtc" and t.tickpolicy == "catchup":
            driftfix = "slew"
        elif t.name == "pit" and t.tickpolicy == "delay":
            extra += ["-global", "kvm-pit.lost_tick_policy=delay"]
        elif t.name == "hpet" and t.present is False:
            extra += ["-no-hpet"]
        elif t.name in ("rtc", "pit", "hpet") and t.tickpolicy is None and t.track is None:
            continue
        else:
            raise CommandUnsupported(f"timer '{t.name}' with these settings is not supported by the "
                                     "command builder yet")
    args += ["-rtc", keyval(("base", offset), ("driftfix", driftfix))]
    args += extra


def _boot(dom: Domain, args: list[str]) -> None:
    os_ = dom.os
    assert os_ is not None
    pm = dom.pm
    if pm is not None:
        q35 = (os_.type.machine or "").startswith("pc-q35") if os_.type else False
        dev = "ICH9-LPC" if q35 else "PIIX4_PM"
        for name, key in (("suspend_to_mem", "disable_s3"), ("suspend_to_disk", "disable_s4")):
            state = getattr(pm, name, None)
            enabled = getattr(state, "enabled", None) if state is not None else None
            if enabled is not None:
                args += ["-global", f"{dev}.{key}={0 if enabled else 1}"]
    parts: list[str | tuple[str, object] | None] = []
    if os_.bootmenu is not None and os_.bootmenu.enable is not None:
        parts.append(("menu", os_.bootmenu.enable))
    if os_.bios is not None and os_.bios.reboot_timeout is not None:
        parts.append(("reboot-timeout", os_.bios.reboot_timeout))
    if os_.bootmenu is not None and os_.bootmenu.timeout is not None and os_.bootmenu.enable:
        parts.append(("splash-time", os_.bootmenu.timeout))
    parts.append(("strict", True))
    args += ["-boot", keyval(*parts)]
    # These take one whole argument each: no option syntax to escape.
    if os_.kernel is not None:
        args += ["-kernel", os_.kernel]
    if os_.initrd is not None:
        args += ["-initrd", os_.initrd]
    if os_.cmdline is not None:
        args += ["-append", os_.cmdline]
    if os_.dtb is not None:
        args += ["-dtb", os_.dtb]
    if os_.loader is not None or os_.nvram is not None or os_.firmware is not None:
        raise CommandUnsupported("firmware loaders and NVRAM are not supported by the command builder yet")
    if os_.acpi is not None and os_.acpi.tables:
        raise CommandUnsupported("ACPI tables are not supported by the command builder yet")
    if dom.sysinfo or (os_.smbios is not None):
        raise CommandUnsupported("SMBIOS tables are not supported by the command builder yet")

