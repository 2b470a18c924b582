# SPDX-License-Identifier: LGPL-2.1-or-later
"""The qemu.conf schema: every key libvirt 9.0's QEMU driver reads, declared once.

Each field of :class:`QemuConf` is one row of the table: its name is the key, its metadata holds the
value type, description and allowed values, its default is libvirt's (``None`` where libvirt derives
the value from the host or the driver's directories, which the driver fills in). The keys and types
follow libvirt 9.0's qemu.conf and its augeas lens; value checks follow ``qemu_conf.c``.

Differences from libvirt, on purpose:

* Unknown keys: libvirt ignores them silently; pyvirt ignores them too (an old or newer qemu.conf
  must keep working) but lists them in :attr:`QemuConf.unknown_keys` and :attr:`QemuConf.warnings`,
  with the closest known key, so that a misspelt key does not go unnoticed. It never raises for them.
* A key set twice: the first assignment wins as in libvirt, and the later ones are reported as
  warnings.
* ``user``/``group`` are only checked for form here; resolving them to ids
  (:func:`resolve_user`, :func:`resolve_group`) is a separate step, so that loading the file never
  depends on the host's user database.
* A few values libvirt only checks when a domain starts (``deprecation_behavior``) are checked here.
* An unreadable qemu.conf is an error (libvirt silently uses defaults); a missing one means defaults.
* ``security_driver`` may not list ``dac``: the DAC driver is always stacked, and libvirt 9.0 fails to
  initialise its security drivers with it; pyvirt says so at load time.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from pyvirt.conf.syntax import ConfFile, ConfValue, format_value, parse_conf, read_conf
from pyvirt.errors import ConfigError

__all__ = [
    "Kind",
    "QemuConf",
    "KeyInfo",
    "SCHEMA",
    "OBSOLETE_KEYS",
    "load_qemu_conf",
    "parse_qemu_conf",
    "qemu_conf_from",
    "resolve_user",
    "resolve_group",
    "resolve_user_group",
    "DEFAULT_CGROUP_DEVICE_ACL",
]


class Kind(enum.Enum):
    """Value types of qemu.conf keys, as libvirt's virConfGetValue* helpers read them."""

    STR = "string"
    BOOL = "0 or 1"
    INT = "signed integer"  # a C int
    UINT = "unsigned integer"  # a C unsigned int
    SIZE = "size"  # unsigned long long, or the string "unlimited" (max_core)
    STR_LIST = "list of strings"
    STR_OR_LIST = "string or list of strings"


_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_UINT_MAX = 2**32 - 1
_ULLONG_MAX = 2**64 - 1

# libvirt's defaultDeviceACL in qemu_cgroup.c (9.0).
DEFAULT_CGROUP_DEVICE_ACL = ("/dev/null", "/dev/full", "/dev/zero", "/dev/random", "/dev/urandom",
                             "/dev/ptmx", "/dev/kvm")

# virCgroupController names.
_CGROUP_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio",
                       "net_cls", "perf_event", "name=systemd")
_SECURITY_DRIVERS = ("none", "selinux", "apparmor", "dac")


class _Privileged:
    """Marks a default that differs between the system (privileged) and session instances."""

    def __init__(self, system: Any, session: Any) -> None:
        self.system = system
        self.session = session


def _ids_of_caller(kind: str) -> str:
    # The session driver runs QEMU as the calling user; the '+N' form needs no lookup.
    return f"+{os.getuid()}" if kind == "user" else f"+{os.getgid()}"


class _Field:
    """One attribute of :class:`QemuConf`: a qemu.conf key (``kind`` set) or what loading found."""

    __slots__ = ("name", "kind", "doc", "choices", "default")

    def __init__(self, kind: Kind | None, doc: str, default: Any, choices: tuple[str, ...]) -> None:
        self.name = ""
        self.kind = kind
        self.doc = doc
        self.default = default
        self.choices = choices

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: QemuConf | None, owner: type) -> Any:
        if obj is None:
            return self
        return obj._values[self.name]


def _key(kind: Kind, doc: str, default: Any = None, *, choices: tuple[str, ...] = ()) -> Any:
    return _Field(kind, doc, default, choices)


def _loaded(default: Any) -> Any:
    return _Field(None, "", default, ())


class KeyInfo(NamedTuple):
    name: str
    kind: Kind
    doc: str
    choices: tuple[str, ...]
    #: The default for the system instance; see :meth:`default_for`.
    default: Any

    def default_for(self, privileged: bool) -> Any:
        raw = self.default
        if isinstance(raw, _Privileged):
            raw = raw.system if privileged else raw.session
        return raw() if callable(raw) else raw


_TLS_DIR = "Directory of x509 certificates; None falls back to default_tls_x509_cert_dir."
_TLS_VERIFY = "Require client certificates; None inherits default_tls_x509_verify."
_TLS_SECRET = "UUID of the secret decrypting server-key.pem; None inherits the default one."


class QemuConf:
    """The QEMU driver configuration: one field per qemu.conf key, plus what loading reported.

    Read-only. A hand-made record rather than a dataclass: generating a dataclass of ~100 fields
    costs milliseconds at import, and every pyvirsh run imports this module.
    """

    __slots__ = ("_values",)
    _values: dict[str, Any]

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise TypeError(f"QemuConf has no field {', '.join(sorted(unknown))}")
        full = {}
        for name, fld in _FIELDS.items():
            if name in values:
                full[name] = values[name]
            else:
                default = fld.default.system if isinstance(fld.default, _Privileged) else fld.default
                full[name] = default
        object.__setattr__(self, "_values", full)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"QemuConf is read-only: cannot set '{name}'; use replace()")

    def replace(self, **changes: Any) -> QemuConf:
        return QemuConf(**{**self._values, **changes})

    def _compared(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if k != "lines"}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QemuConf):
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(tuple(self._compared().items()))

    def __repr__(self) -> str:
        changed = ", ".join(f"{k}={v!r}" for k, v in self._values.items()
                            if k in SCHEMA and v != _FIELDS[k].default)
        return f"QemuConf(path={self.path!r}, {changed})"

    default_tls_x509_cert_dir: str = _key(Kind.STR, "Default directory of TLS x509 certificates.",
                                          "/etc/pki/qemu")
    default_tls_x509_verify: bool | None = _key(
        Kind.BOOL, "Default for the *_tls_x509_verify keys; None lets each user pick its own.")
    default_tls_x509_secret_uuid: str | None = _key(Kind.STR, "UUID of the secret decrypting "
                                                              "server-key.pem.")

    vnc_listen: str = _key(Kind.STR, "Address VNC servers listen on.", "127.0.0.1")
    vnc_auto_unix_socket: bool = _key(Kind.BOOL, "Serve VNC on a UNIX socket when no address is "
                                                 "given.", False)
    vnc_tls: bool = _key(Kind.BOOL, "Use TLS (VeNCrypt) for VNC.", False)
    vnc_tls_x509_cert_dir: str | None = _key(Kind.STR, _TLS_DIR)
    vnc_tls_x509_secret_uuid: str | None = _key(Kind.STR, _TLS_SECRET)
    vnc_tls_x509_verify: bool | None = _key(Kind.BOOL, _TLS_VERIFY + " Else 0.")
    vnc_password: str | None = _key(Kind.STR, "Default VNC password when the domain gives none.")
    vnc_sasl: bool = _key(Kind.BOOL, "Use SASL for VNC.", False)
    vnc_sasl_dir: str | None = _key(Kind.STR, "Directory of the SASL configuration for VNC.")
    vnc_allow_host_audio: bool = _key(Kind.BOOL, "Honour QEMU_AUDIO_DRV with VNC.", False)

    spice_listen: str = _key(Kind.STR, "Address SPICE servers listen on.", "127.0.0.1")
    spice_tls: bool = _key(Kind.BOOL, "Use TLS for SPICE.", False)
    spice_tls_x509_cert_dir: str | None = _key(Kind.STR, _TLS_DIR)
    spice_auto_unix_socket: bool = _key(Kind.BOOL, "Serve SPICE on a UNIX socket when no address "
                                                   "is given.", False)
    spice_password: str | None = _key(Kind.STR, "Default SPICE password when the domain gives none.")
    spice_sasl: bool = _key(Kind.BOOL, "Use SASL for SPICE.", False)
    spice_sasl_dir: str | None = _key(Kind.STR, "Directory of the SASL configuration for SPICE.")

    chardev_tls: bool = _key(Kind.BOOL, "Use TLS for TCP character devices.", False)
    chardev_tls_x509_cert_dir: str | None = _key(Kind.STR, _TLS_DIR)
    chardev_tls_x509_verify: bool | None = _key(Kind.BOOL, _TLS_VERIFY + " Else 1.")
    chardev_tls_x509_secret_uuid: str | None = _key(Kind.STR, _TLS_SECRET)

    migrate_tls_x509_cert_dir: str | None = _key(Kind.STR, _TLS_DIR)
    migrate_tls_x509_verify: bool | None = _key(Kind.BOOL, _TLS_VERIFY + " Else 1.")
    migrate_tls_x509_secret_uuid: str | None = _key(Kind.STR, _TLS_SECRET)
    migrate_tls_force: bool = _key(Kind.BOOL, "Refuse migrations that do not use TLS.", False)

    backup_tls_x509_cert_dir: str | None = _key(Kind.STR, _TLS_DIR)
    backup_tls_x509_verify: bool | None = _key(Kind.BOOL, _TLS_VERIFY + " Else 1.")
    backup_tls_x509_secret_uuid: str | None = _key(Kind.STR, _TLS_SECRET)

    vxhs_tls: bool = _key(Kind.BOOL, "Ignored: VxHS support was removed (kept readable).", False)
    vxhs_tls_x509_cert_dir: str | None = _key(Kind.STR, "Ignored: VxHS support was removed.")
    vxhs_tls_x509_secret_uuid: str | None = _key(Kind.STR, "Ignored: VxHS support was removed.")

    nbd_tls: bool = _key(Kind.BOOL, "Use TLS for NBD disks that do not disable it.", False)
    nbd_tls_x509_cert_dir: str | None = _key(Kind.STR, _TLS_DIR)
    nbd_tls_x509_secret_uuid: str | None = _key(Kind.STR, _TLS_SECRET)

    nographics_allow_host_audio: bool = _key(Kind.BOOL, "Honour QEMU_AUDIO_DRV without graphics.",
                                             False)

    remote_display_port_min: int = _key(Kind.UINT, "First port for VNC/SPICE (>= 5900).", 5900)
    remote_display_port_max: int = _key(Kind.UINT, "Last port for VNC/SPICE (<= 65535).", 65535)
    remote_websocket_port_min: int = _key(Kind.UINT, "First VNC WebSocket port (>= 5700).", 5700)
    remote_websocket_port_max: int = _key(Kind.UINT, "Last VNC WebSocket port (<= 65535).", 65535)

    security_driver: tuple[str, ...] | None = _key(
        Kind.STR_OR_LIST, "Security drivers to stack over DAC; None probes the host "
                          "(SELinux, then AppArmor); ('none',) disables confinement.",
        choices=_SECURITY_DRIVERS)
    security_default_confined: bool = _key(Kind.BOOL, "Confine guests by default.", True)
    security_require_confined: bool = _key(Kind.BOOL, "Refuse unconfined guests.", False)
    user: str = _key(Kind.STR, "User QEMU runs as: a name, or '+N' for uid N.",
                     _Privileged("root", lambda: _ids_of_caller("user")))
    group: str = _key(Kind.STR, "Group QEMU runs as: a name, or '+N' for gid N.",
                      _Privileged("root", lambda: _ids_of_caller("group")))
    dynamic_ownership: bool = _key(Kind.BOOL, "Chown files QEMU uses to user:group.",
                                   _Privileged(True, False))
    remember_owner: bool = _key(Kind.BOOL, "Remember and restore the original owner of relabelled "
                                           "files (in extended attributes).", _Privileged(True, False))
    cgroup_controllers: tuple[str, ...] | None = _key(
        Kind.STR_LIST, "Cgroup controllers to use; None uses every one available.",
        choices=_CGROUP_CONTROLLERS)
    cgroup_device_acl: tuple[str, ...] = _key(Kind.STR_LIST, "Devices every guest may open.",
                                              DEFAULT_CGROUP_DEVICE_ACL)
    seccomp_sandbox: int = _key(Kind.INT, "QEMU seccomp filter: 1 on, 0 off, -1 QEMU's default.", -1)
    namespaces: tuple[str, ...] = _key(Kind.STR_LIST, "Private namespaces per domain (system only).",
                                       _Privileged(("mount",), ()), choices=("mount",))

    save_image_format: str | None = _key(Kind.STR, "Format of save images; None means raw.")
    dump_image_format: str | None = _key(Kind.STR, "Format of core dumps; None means raw.")
    snapshot_image_format: str | None = _key(Kind.STR, "Format of snapshot memory images; None means "
                                                       "raw.")
    auto_dump_path: str | None = _key(Kind.STR, "Directory of watchdog dumps; None: {libdir}/dump.")
    auto_dump_bypass_cache: bool = _key(Kind.BOOL, "Bypass the page cache for automatic dumps.", False)
    auto_start_bypass_cache: bool = _key(Kind.BOOL, "Bypass the page cache when autostart restores "
                                                    "managed saves.", False)

    hugetlbfs_mount: tuple[str, ...] | None = _key(Kind.STR_OR_LIST, "hugetlbfs mount points; None "
                                                                     "detects them.")
    bridge_helper: str = _key(Kind.STR, "Setuid helper creating taps for the session instance.",
                              "qemu-bridge-helper")
    pr_helper: str = _key(Kind.STR, "SCSI persistent reservation helper.", "qemu-pr-helper")
    slirp_helper: str | None = _key(Kind.STR, "SLIRP networking helper.")
    dbus_daemon: str = _key(Kind.STR, "dbus-daemon binary.", "dbus-daemon")
    set_process_name: bool = _key(Kind.BOOL, "Name QEMU processes qemu:VM_NAME.", False)
    max_processes: int = _key(Kind.UINT, "RLIMIT_NPROC for QEMU; 0 keeps the host's.", 0)
    max_files: int = _key(Kind.UINT, "RLIMIT_NOFILE for QEMU; 0 keeps the host's.", 0)
    max_threads_per_process: int = _key(Kind.UINT, "Thread limit per QEMU; 0 keeps the host's.", 0)
    max_core: int | str | None = _key(Kind.SIZE, "RLIMIT_CORE for QEMU in bytes, or 'unlimited'; "
                                                 "None keeps the inherited limit.")
    dump_guest_core: bool = _key(Kind.BOOL, "Include guest RAM in QEMU core dumps.", False)
    stdio_handler: str = _key(Kind.STR, "Where QEMU's stdout/stderr go: virtlogd or a plain file.",
                              "logd", choices=("logd", "file"))
    sched_core: str = _key(Kind.STR, "Core scheduling groups.", "none",
                           choices=("none", "vcpus", "emulator", "full"))

    mac_filter: bool = _key(Kind.BOOL, "Filter bridge ports by MAC address (ebtables).", False)
    relaxed_acs_check: bool = _key(Kind.BOOL, "Allow assigning PCI devices below non-ACS switches.",
                                   False)
    lock_manager: str | None = _key(Kind.STR, "Disk lock manager plugin (lockd, sanlock).")

    max_queued: int = _key(Kind.UINT, "Maximum jobs waiting per domain; 0 is unlimited.", 0)
    keepalive_interval: int = _key(Kind.INT, "Seconds between keepalives in p2p migration; -1 off.", 5)
    keepalive_count: int = _key(Kind.UINT, "Unanswered keepalives before the peer is dropped.", 5)

    migration_address: str | None = _key(Kind.STR, "Listen address of incoming migrations.")
    migration_host: str | None = _key(Kind.STR, "Host name migration sources connect to.")
    migration_port_min: int = _key(Kind.UINT, "First port of incoming migrations (> 0).", 49152)
    migration_port_max: int = _key(Kind.UINT, "Last port of incoming migrations (<= 65535).", 49215)

    log_timestamp: bool = _key(Kind.BOOL, "Timestamp QEMU's log messages.", True)
    nvram: tuple[str, ...] | None = _key(Kind.STR_LIST, "Obsolete 'CODE:VARS' firmware pairs; "
                                                        "firmware descriptors take precedence.")
    gluster_debug_level: int = _key(Kind.UINT, "libgfapi log level, 0-9.", 4)
    virtiofsd_debug: bool = _key(Kind.BOOL, "Debug output of virtiofsd.", False)
    deprecation_behavior: str = _key(Kind.STR, "What QEMU does with deprecated interfaces.", "none",
                                     choices=("none", "omit", "reject", "crash"))
    memory_backing_dir: str | None = _key(Kind.STR, "Directory of file-backed guest memory; None: "
                                                    "{libdir}/ram.")
    swtpm_user: str | None = _key(Kind.STR, "User swtpm runs as; None: tss if it exists, else root.")
    swtpm_group: str | None = _key(Kind.STR, "Group swtpm runs as; None: tss if it exists, else root.")
    capability_filters: tuple[str, ...] = _key(Kind.STR_LIST, "QEMU capabilities to pretend are "
                                                              "missing (testing only).", ())

    # What loading found; not qemu.conf keys.
    path: str | None = _loaded(None)
    privileged: bool = _loaded(True)
    #: Keys pyvirt does not know, with their line numbers; they are ignored, as libvirt does.
    unknown_keys: tuple[tuple[str, int], ...] = _loaded(())
    #: Messages for the caller to show (unknown, repeated and obsolete keys), "file:line: ...".
    warnings: tuple[str, ...] = _loaded(())
    #: The line each key read from the file is on, for errors found after loading (not compared).
    lines: Mapping[str, int] = _loaded(MappingProxyType({}))


_FIELDS: dict[str, _Field] = {name: value for name, value in vars(QemuConf).items()
                              if isinstance(value, _Field)}

#: The schema table, in qemu.conf order.
SCHEMA: Mapping[str, KeyInfo] = MappingProxyType({
    name: KeyInfo(name, fld.kind, fld.doc, fld.choices, fld.default)
    for name, fld in _FIELDS.items() if fld.kind is not None
})

#: Keys libvirt 9.0 still accepts but no longer uses: (type libvirt checks or None, why ignored).
OBSOLETE_KEYS: Mapping[str, tuple[Kind | None, str]] = MappingProxyType({
    "clear_emulator_capabilities": (None, "QEMU never keeps capabilities any more"),
    "allow_disk_format_probing": (Kind.BOOL, "disk format probing was removed; only 0 is accepted"),
})


class _Loader:
    def __init__(self, conf: ConfFile, privileged: bool) -> None:
        self.conf = conf
        self.privileged = privileged

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.conf.path, line=self.conf[key].line, key=key)

    def expect(self, key: str, what: str) -> ConfigError:
        return self.error(key, f"key '{key}' expects {what}, got {format_value(self.conf[key].value)}")

    def convert(self, info: KeyInfo, value: ConfValue) -> Any:
        key, kind = info.name, info.kind
        if kind is Kind.STR:
            if not isinstance(value, str):
                raise self.expect(key, "a quoted string")
            out: Any = value
        elif kind is Kind.BOOL:
            if not isinstance(value, int) or value not in (0, 1):
                raise self.expect(key, "0 or 1")
            out = value == 1
        elif kind in (Kind.INT, Kind.UINT, Kind.SIZE):
            if kind is Kind.SIZE and value == "unlimited":
                return "unlimited"
            if not isinstance(value, int):
                raise self.expect(key, 'a size in bytes or "unlimited"' if kind is Kind.SIZE
                                  else "an integer")
            low, high = {Kind.INT: (_INT_MIN, _INT_MAX), Kind.UINT: (0, _UINT_MAX),
                         Kind.SIZE: (0, _ULLONG_MAX)}[kind]
            if not low <= value <= high:
                raise self.expect(key, f"an integer in {low}..{high}")
            out = value
        else:
            if kind is Kind.STR_OR_LIST and isinstance(value, str):
                value = (value,)
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                raise self.expect(key, 'a list of strings like [ "a", "b" ]' if kind is Kind.STR_LIST
                                  else 'a string or a list of strings like [ "a", "b" ]')
            out = value
        items = out if isinstance(out, tuple) else (out,)
        if info.choices:
            for item in items:
                if item not in info.choices:
                    raise self.error(key, f"key '{key}' expects one of "
                                          f"{', '.join(format_value(c) for c in info.choices)}, "
                                          f"got {format_value(item)}")
        return out

    def load(self) -> QemuConf:
        conf = self.conf
        values: dict[str, Any] = {name: info.default_for(self.privileged)
                                  for name, info in SCHEMA.items()}
        unknown: list[tuple[str, int]] = []
        warnings: list[str] = []
        for key, (value, line) in conf.items():
            info = SCHEMA.get(key)
            if info is not None:
                values[key] = self.convert(info, value)
            elif key in OBSOLETE_KEYS:
                kind, why = OBSOLETE_KEYS[key]
                if kind is not None:
                    flag = self.convert(KeyInfo(key, kind, why, (), None), value)
                    if key == "allow_disk_format_probing" and flag:
                        raise self.error(key, "allow_disk_format_probing = 1 is no longer supported; "
                                              "remove the line or set it to 0")
                warnings.append(f"{conf.path}:{line}: key '{key}' is obsolete and ignored ({why})")
            else:
                unknown.append((key, line))
                warnings.append(f"{conf.path}:{line}: unknown key '{key}' ignored{_suggest(key)}")
        for dup in conf.duplicates:
            warnings.append(f"{conf.path}:{dup.line}: key '{dup.key}' is set again; the value from "
                            f"line {dup.first_line} is used, as libvirt does")
        self.check(values)
        return QemuConf(**values, path=conf.path, privileged=self.privileged,
                        unknown_keys=tuple(unknown), warnings=tuple(warnings),
                        lines=MappingProxyType({key: setting.line for key, setting in conf.items()}))

    def check_ports(self, values: dict[str, Any], prefix: str, lowest: int) -> None:
        low_key, high_key = f"{prefix}_min", f"{prefix}_max"
        low, high = values[low_key], values[high_key]
        if low < lowest:
            if low_key in self.conf:
                raise self.error(low_key, f"key '{low_key}' must be at least {lowest}, got {low}")
        if not low <= high <= 65535:
            blame = high_key if high_key in self.conf else low_key
            raise self.error(blame, f"'{high_key}' ({high}) must be between '{low_key}' ({low}) "
                                    "and 65535")

    def check(self, values: dict[str, Any]) -> None:
        self.check_ports(values, "remote_display_port", 5900)
        self.check_ports(values, "remote_websocket_port", 5700)
        self.check_ports(values, "migration_port", 1)

        drivers = values["security_driver"]
        if drivers:
            seen: set[str] = set()
            for name in drivers:
                if name in seen:
                    raise self.error("security_driver", f"security driver '{name}' is listed twice")
                seen.add(name)
            if "dac" in seen:
                raise self.error("security_driver", "security driver 'dac' must not be listed: DAC is "
                                                    "always enabled, stacked under the others")
            if "none" in seen and len(drivers) > 1:
                raise self.error("security_driver", "security driver 'none' cannot be combined with "
                                                    "others; use it alone")

        for key in ("user", "group", "swtpm_user", "swtpm_group"):
            spec = values[key]
            if key in self.conf and (not spec or spec.startswith("+") and not spec[1:].isdigit()):
                raise self.error(key, f"key '{key}' expects a name or '+N' with N a numeric id, "
                                      f"got {format_value(spec)}")

        if "namespaces" in self.conf and values["namespaces"] and not self.privileged:
            raise self.error("namespaces", "namespaces cannot be used by the session instance; "
                                           "set namespaces = [] or remove the line")

        for key in ("migration_host", "migration_address"):
            host = values[key]
            if host is not None and _is_local_address(host):
                raise self.error(key, f"key '{key}' must not be an address of the local machine, "
                                      f"got {format_value(host)}; other hosts must be able to reach it")


def _is_local_address(host: str) -> bool:
    import ipaddress  # only needed when a migration address is configured

    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare.startswith("localhost"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _suggest(key: str) -> str:
    import difflib  # only on the unusual path of an unknown key

    close = difflib.get_close_matches(key, list(SCHEMA) + list(OBSOLETE_KEYS), n=1)
    return f" (did you mean '{close[0]}'?)" if close else " (libvirt 9.0 does not know it either)"


def qemu_conf_from(conf: ConfFile, *, privileged: bool) -> QemuConf:
    """Check an already parsed file against the schema."""
    return _Loader(conf, privileged).load()


def parse_qemu_conf(text: str, *, privileged: bool, path: str = "qemu.conf") -> QemuConf:
    return qemu_conf_from(parse_conf(text, path), privileged=privileged)


def load_qemu_conf(path: Path, *, privileged: bool) -> QemuConf:
    """Read qemu.conf; a missing file yields the defaults for the instance."""
    try:
        conf = read_conf(path)
    except FileNotFoundError:
        return qemu_conf_from(parse_conf("", str(path)), privileged=privileged).replace(path=None)
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror}", path=str(path)) from e
    return qemu_conf_from(conf, privileged=privileged)


def _resolve(spec: str, what: str) -> int:
    import grp
    import pwd

    if spec.startswith("+"):
        if spec[1:].isdigit():
            return int(spec[1:])
    else:
        try:
            return pwd.getpwnam(spec).pw_uid if what == "user" else grp.getgrnam(spec).gr_gid
        except KeyError:
            pass
        # libvirt, too, reads a name that does not exist as a numeric id.
        if spec.isdigit():
            return int(spec)
    raise ConfigError(f"no {what} named '{spec}' (write '+N' for the numeric id N)")


def resolve_user_group(conf: QemuConf) -> tuple[int, int]:
    """The uid and gid QEMU runs as; an error names the qemu.conf line that set them."""
    ids = []
    for key, resolve in (("user", resolve_user), ("group", resolve_group)):
        try:
            ids.append(resolve(getattr(conf, key)))
        except ConfigError as e:
            raise ConfigError(f"key '{key}': {e.message}", path=conf.path, line=conf.lines.get(key),
                              key=key) from e
    return ids[0], ids[1]


def resolve_user(spec: str) -> int:
    """The uid of a qemu.conf user: a name, '+N', or digits that name no user."""
    return _resolve(spec, "user")


def resolve_group(spec: str) -> int:
    """The gid of a qemu.conf group: a name, '+N', or digits that name no group."""
    return _resolve(spec, "group")
