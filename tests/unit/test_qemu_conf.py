# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from pyvirt.conf.qemu_conf import (
    DEFAULT_CGROUP_DEVICE_ACL,
    OBSOLETE_KEYS,
    SCHEMA,
    Kind,
    QemuConf,
    load_qemu_conf,
    parse_qemu_conf,
    resolve_group,
    resolve_user,
    resolve_user_group,
)
from pyvirt.errors import ConfigError

LENS = Path("/usr/share/augeas/lenses/libvirtd_qemu.aug")
LENS_TEST = Path("/usr/share/augeas/lenses/tests/test_libvirtd_qemu.aug")

REALISTIC = '''\
# Master configuration file for the QEMU driver, as an administrator edits it.
# All settings are optional.

# Listen on every interface, but keep VNC behind TLS.
vnc_listen = "0.0.0.0"
vnc_tls = 1
vnc_tls_x509_verify = 1
#vnc_password = "XYZ12345"

spice_listen = "::"

remote_display_port_min = 5910
remote_display_port_max = 6000   # leave the rest for other services

security_driver = [ "selinux" ]
security_default_confined = 1
#security_require_confined = 1

user = "+107"
group = "kvm"
dynamic_ownership = 1
remember_owner = 0

cgroup_controllers = [ "cpu", "devices", "memory", "blkio", "cpuset", "cpuacct" ]

cgroup_device_acl = [
    "/dev/null", "/dev/full", "/dev/zero",
    "/dev/random", "/dev/urandom",
    "/dev/ptmx", "/dev/kvm",
    "/dev/userfaultfd",
]

save_image_format = "zstd"
max_processes = 4096
max_files = 32768
max_core = "unlimited"
stdio_handler = "file"
log_timestamp = 0
keepalive_interval = -1
seccomp_sandbox = 0
namespaces = [ "mount" ]
memory_backing_dir = "/var/lib/libvirt/qemu/ram"
nvram = [
   "/usr/share/OVMF/OVMF_CODE.fd:/usr/share/OVMF/OVMF_VARS.fd",
]
'''


def test_realistic_file(tmp_path: Path) -> None:
    path = tmp_path / "qemu.conf"
    path.write_text(REALISTIC)
    conf = load_qemu_conf(path, privileged=True)
    assert conf.path == str(path)
    assert conf.vnc_listen == "0.0.0.0" and conf.vnc_tls is True and conf.vnc_tls_x509_verify is True
    assert conf.vnc_password is None
    assert conf.spice_listen == "::"
    assert (conf.remote_display_port_min, conf.remote_display_port_max) == (5910, 6000)
    assert conf.security_driver == ("selinux",)
    assert conf.security_default_confined is True and conf.security_require_confined is False
    assert (conf.user, conf.group) == ("+107", "kvm")
    assert conf.dynamic_ownership is True and conf.remember_owner is False
    assert conf.cgroup_controllers == ("cpu", "devices", "memory", "blkio", "cpuset", "cpuacct")
    assert conf.cgroup_device_acl == DEFAULT_CGROUP_DEVICE_ACL + ("/dev/userfaultfd",)
    assert conf.save_image_format == "zstd"
    assert (conf.max_processes, conf.max_files, conf.max_core) == (4096, 32768, "unlimited")
    assert conf.stdio_handler == "file"
    assert conf.log_timestamp is False
    assert conf.keepalive_interval == -1 and conf.seccomp_sandbox == 0
    assert conf.namespaces == ("mount",)
    assert conf.nvram == ("/usr/share/OVMF/OVMF_CODE.fd:/usr/share/OVMF/OVMF_VARS.fd",)
    assert conf.unknown_keys == () and conf.warnings == ()


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    conf = load_qemu_conf(tmp_path / "qemu.conf", privileged=True)
    assert conf == QemuConf(path=None, privileged=True)
    assert conf.path is None


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the file"):
        load_qemu_conf(tmp_path, privileged=True)  # a directory


def test_system_defaults() -> None:
    conf = parse_qemu_conf("", privileged=True)
    assert (conf.user, conf.group) == ("root", "root")
    assert conf.dynamic_ownership is True and conf.remember_owner is True
    assert conf.namespaces == ("mount",)
    assert conf.vnc_listen == "127.0.0.1" and conf.spice_listen == "127.0.0.1"
    assert conf.vnc_auto_unix_socket is False
    assert (conf.remote_display_port_min, conf.remote_display_port_max) == (5900, 65535)
    assert (conf.remote_websocket_port_min, conf.remote_websocket_port_max) == (5700, 65535)
    assert (conf.migration_port_min, conf.migration_port_max) == (49152, 49215)
    assert conf.security_driver is None
    assert conf.security_default_confined is True and conf.security_require_confined is False
    assert conf.cgroup_controllers is None
    assert conf.cgroup_device_acl == DEFAULT_CGROUP_DEVICE_ACL
    assert conf.stdio_handler == "logd"
    assert (conf.max_processes, conf.max_files, conf.max_core) == (0, 0, None)
    assert conf.log_timestamp is True
    assert conf.seccomp_sandbox == -1
    assert (conf.keepalive_interval, conf.keepalive_count) == (5, 5)
    assert conf.gluster_debug_level == 4
    assert conf.default_tls_x509_cert_dir == "/etc/pki/qemu"
    assert conf.default_tls_x509_verify is None


def test_session_defaults() -> None:
    conf = parse_qemu_conf("", privileged=False)
    assert (conf.user, conf.group) == (f"+{os.getuid()}", f"+{os.getgid()}")
    assert conf.dynamic_ownership is False and conf.remember_owner is False
    assert conf.namespaces == ()
    assert conf.privileged is False


def test_security_driver_string_or_list() -> None:
    assert parse_qemu_conf('security_driver = "apparmor"', privileged=True).security_driver == (
        "apparmor",)
    assert parse_qemu_conf('security_driver = "none"', privileged=True).security_driver == ("none",)
    assert parse_qemu_conf("security_driver = []", privileged=True).security_driver == ()
    assert parse_qemu_conf('security_driver = ["selinux", "apparmor"]',
                           privileged=True).security_driver == ("selinux", "apparmor")


# text, line, exact message after "qemu.conf:LINE: "
ERRORS = [
    ('dynamic_ownership = "yes"', 1, "key 'dynamic_ownership' expects 0 or 1, got \"yes\""),
    ("dynamic_ownership = 2", 1, "key 'dynamic_ownership' expects 0 or 1, got 2"),
    ("log_timestamp = [1]", 1, "key 'log_timestamp' expects 0 or 1, got [ 1 ]"),
    ("vnc_listen = 0", 1, "key 'vnc_listen' expects a quoted string, got 0"),
    ('\n\nuser = 5', 3, "key 'user' expects a quoted string, got 5"),
    ('max_processes = "many"', 1, "key 'max_processes' expects an integer, got \"many\""),
    ("max_processes = -1", 1, "key 'max_processes' expects an integer in 0..4294967295, got -1"),
    ("max_files = 4294967296", 1, "key 'max_files' expects an integer in 0..4294967295, got 4294967296"),
    ("seccomp_sandbox = 2147483648", 1,
     "key 'seccomp_sandbox' expects an integer in -2147483648..2147483647, got 2147483648"),
    ('max_core = "big"', 1, "key 'max_core' expects a size in bytes or \"unlimited\", got \"big\""),
    ("max_core = -1", 1, "key 'max_core' expects an integer in 0..18446744073709551615, got -1"),
    ('cgroup_controllers = "cpu"', 1,
     "key 'cgroup_controllers' expects a list of strings like [ \"a\", \"b\" ], got \"cpu\""),
    ("cgroup_device_acl = [1]", 1,
     "key 'cgroup_device_acl' expects a list of strings like [ \"a\", \"b\" ], got [ 1 ]"),
    ("security_driver = 1", 1,
     "key 'security_driver' expects a string or a list of strings like [ \"a\", \"b\" ], got 1"),
    ('cgroup_controllers = ["cpu", "bogus"]', 1,
     "key 'cgroup_controllers' expects one of \"cpu\", \"cpuacct\", \"cpuset\", \"memory\", "
     "\"devices\", \"freezer\", \"blkio\", \"net_cls\", \"perf_event\", \"name=systemd\", got \"bogus\""),
    ('namespaces = ["net"]', 1, "key 'namespaces' expects one of \"mount\", got \"net\""),
    ('stdio_handler = "syslog"', 1, "key 'stdio_handler' expects one of \"logd\", \"file\", got \"syslog\""),
    ('sched_core = "all"', 1,
     "key 'sched_core' expects one of \"none\", \"vcpus\", \"emulator\", \"full\", got \"all\""),
    ('deprecation_behavior = "warn"', 1,
     "key 'deprecation_behavior' expects one of \"none\", \"omit\", \"reject\", \"crash\", got \"warn\""),
    ('security_driver = "smack"', 1,
     "key 'security_driver' expects one of \"none\", \"selinux\", \"apparmor\", \"dac\", got \"smack\""),
    ('security_driver = ["selinux", "selinux"]', 1, "security driver 'selinux' is listed twice"),
    ('security_driver = "dac"', 1,
     "security driver 'dac' must not be listed: DAC is always enabled, stacked under the others"),
    ('security_driver = ["none", "selinux"]', 1,
     "security driver 'none' cannot be combined with others; use it alone"),
    ("remote_display_port_min = 5000", 1, "key 'remote_display_port_min' must be at least 5900, got 5000"),
    ("remote_display_port_max = 70000", 1,
     "'remote_display_port_max' (70000) must be between 'remote_display_port_min' (5900) and 65535"),
    ("remote_display_port_min = 6000\nremote_display_port_max = 5999", 2,
     "'remote_display_port_max' (5999) must be between 'remote_display_port_min' (6000) and 65535"),
    ("remote_display_port_min = 65535\nremote_display_port_max = 65535", None, None),
    ("remote_websocket_port_min = 5699", 1,
     "key 'remote_websocket_port_min' must be at least 5700, got 5699"),
    ("migration_port_min = 0", 1, "key 'migration_port_min' must be at least 1, got 0"),
    ("migration_port_min = 60000", 1,
     "'migration_port_max' (49215) must be between 'migration_port_min' (60000) and 65535"),
    ('user = "+abc"', 1, "key 'user' expects a name or '+N' with N a numeric id, got \"+abc\""),
    ('group = ""', 1, "key 'group' expects a name or '+N' with N a numeric id, got \"\""),
    ('migration_host = "localhost.localdomain"', 1,
     "key 'migration_host' must not be an address of the local machine, got \"localhost.localdomain\"; "
     "other hosts must be able to reach it"),
    ('migration_address = "[::1]"', 1,
     "key 'migration_address' must not be an address of the local machine, got \"[::1]\"; "
     "other hosts must be able to reach it"),
    ("allow_disk_format_probing = 1", 1,
     "allow_disk_format_probing = 1 is no longer supported; remove the line or set it to 0"),
    ('allow_disk_format_probing = "no"', 1, "key 'allow_disk_format_probing' expects 0 or 1, got \"no\""),
]


@pytest.mark.parametrize("text,line,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_value_errors(text: str, line: int | None, message: str | None) -> None:
    if message is None:
        parse_qemu_conf(text, privileged=True)
        return
    with pytest.raises(ConfigError) as info:
        parse_qemu_conf(text, privileged=True, path="qemu.conf")
    assert str(info.value) == f"qemu.conf:{line}: {message}"
    assert info.value.line == line


def test_max_core_wording() -> None:
    # the message for a string names both accepted forms
    with pytest.raises(ConfigError, match=r'"unlimited"'):
        parse_qemu_conf('max_core = "big"', privileged=True)


def test_namespaces_refused_for_session() -> None:
    with pytest.raises(ConfigError, match=r"qemu.conf:1: namespaces cannot be used by the session"):
        parse_qemu_conf('namespaces = [ "mount" ]', privileged=False)
    assert parse_qemu_conf("namespaces = []", privileged=False).namespaces == ()


def test_error_from_file_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "qemu.conf"
    path.write_text("# comment\n" * 11 + 'dynamic_ownership = "yes"\n')
    with pytest.raises(ConfigError) as info:
        load_qemu_conf(path, privileged=True)
    assert str(info.value) == f"{path}:12: key 'dynamic_ownership' expects 0 or 1, got \"yes\""
    assert (info.value.path, info.value.line, info.value.key) == (str(path), 12, "dynamic_ownership")


def test_syntax_errors_propagate() -> None:
    with pytest.raises(ConfigError, match=r"^qemu.conf:2: expected a value for 'group'"):
        parse_qemu_conf('user = "root"\ngroup =\n', privileged=True)


def test_unknown_keys_are_reported_not_raised() -> None:
    conf = parse_qemu_conf('vnc_lisen = "0.0.0.0"\nuser = "root"\ntotally_new_option = 1\n',
                           privileged=True)
    assert conf.unknown_keys == (("vnc_lisen", 1), ("totally_new_option", 3))
    assert conf.vnc_listen == "127.0.0.1"
    assert conf.warnings == (
        "qemu.conf:1: unknown key 'vnc_lisen' ignored (did you mean 'vnc_listen'?)",
        "qemu.conf:3: unknown key 'totally_new_option' ignored (libvirt 9.0 does not know it either)",
    )


def test_repeated_key_first_wins_with_warning() -> None:
    conf = parse_qemu_conf('user = "qemu"\ngroup = "kvm"\nuser = "root"\n', privileged=True)
    assert conf.user == "qemu"
    assert conf.warnings == (
        "qemu.conf:3: key 'user' is set again; the value from line 1 is used, as libvirt does",)


def test_obsolete_keys_are_accepted_with_warning() -> None:
    conf = parse_qemu_conf('clear_emulator_capabilities = "anything"\nallow_disk_format_probing = 0\n',
                           privileged=True)
    assert conf.unknown_keys == ()
    assert [w.split(":", 2)[1] for w in conf.warnings] == ["1", "2"]
    assert "key 'clear_emulator_capabilities' is obsolete and ignored" in conf.warnings[0]


# One valid, non-default value for every key: a key added to the schema must be added here.
EVERY_KEY: dict[str, tuple[str, Any]] = {
    "default_tls_x509_cert_dir": ('"/pki"', "/pki"),
    "default_tls_x509_verify": ("0", False),
    "default_tls_x509_secret_uuid": ('"u0"', "u0"),
    "vnc_listen": ('"0.0.0.0"', "0.0.0.0"),
    "vnc_auto_unix_socket": ("1", True),
    "vnc_tls": ("1", True),
    "vnc_tls_x509_cert_dir": ('"/vnc"', "/vnc"),
    "vnc_tls_x509_secret_uuid": ('"u1"', "u1"),
    "vnc_tls_x509_verify": ("1", True),
    "vnc_password": ('"pw"', "pw"),
    "vnc_sasl": ("1", True),
    "vnc_sasl_dir": ('"/sasl"', "/sasl"),
    "vnc_allow_host_audio": ("1", True),
    "spice_listen": ('"::"', "::"),
    "spice_tls": ("1", True),
    "spice_tls_x509_cert_dir": ('"/spice"', "/spice"),
    "spice_auto_unix_socket": ("1", True),
    "spice_password": ('"pw2"', "pw2"),
    "spice_sasl": ("1", True),
    "spice_sasl_dir": ('"/sasl2"', "/sasl2"),
    "chardev_tls": ("1", True),
    "chardev_tls_x509_cert_dir": ('"/chr"', "/chr"),
    "chardev_tls_x509_verify": ("0", False),
    "chardev_tls_x509_secret_uuid": ('"u2"', "u2"),
    "migrate_tls_x509_cert_dir": ('"/mig"', "/mig"),
    "migrate_tls_x509_verify": ("0", False),
    "migrate_tls_x509_secret_uuid": ('"u3"', "u3"),
    "migrate_tls_force": ("1", True),
    "backup_tls_x509_cert_dir": ('"/bak"', "/bak"),
    "backup_tls_x509_verify": ("0", False),
    "backup_tls_x509_secret_uuid": ('"u4"', "u4"),
    "vxhs_tls": ("1", True),
    "vxhs_tls_x509_cert_dir": ('"/vxhs"', "/vxhs"),
    "vxhs_tls_x509_secret_uuid": ('"u5"', "u5"),
    "nbd_tls": ("1", True),
    "nbd_tls_x509_cert_dir": ('"/nbd"', "/nbd"),
    "nbd_tls_x509_secret_uuid": ('"u6"', "u6"),
    "nographics_allow_host_audio": ("1", True),
    "remote_display_port_min": ("5901", 5901),
    "remote_display_port_max": ("6001", 6001),
    "remote_websocket_port_min": ("5701", 5701),
    "remote_websocket_port_max": ("5801", 5801),
    "security_driver": ('"selinux"', ("selinux",)),
    "security_default_confined": ("0", False),
    "security_require_confined": ("1", True),
    "user": ('"qemu"', "qemu"),
    "group": ('"+36"', "+36"),
    "dynamic_ownership": ("0", False),
    "remember_owner": ("0", False),
    "cgroup_controllers": ('[ "cpu" ]', ("cpu",)),
    "cgroup_device_acl": ('[ "/dev/null" ]', ("/dev/null",)),
    "seccomp_sandbox": ("1", 1),
    "namespaces": ("[]", ()),
    "save_image_format": ('"xz"', "xz"),
    "dump_image_format": ('"gzip"', "gzip"),
    "snapshot_image_format": ('"lzop"', "lzop"),
    "auto_dump_path": ('"/dump"', "/dump"),
    "auto_dump_bypass_cache": ("1", True),
    "auto_start_bypass_cache": ("1", True),
    "hugetlbfs_mount": ('[ "/hp2M", "/hp1G" ]', ("/hp2M", "/hp1G")),
    "bridge_helper": ('"/usr/libexec/qemu-bridge-helper"', "/usr/libexec/qemu-bridge-helper"),
    "pr_helper": ('"/usr/bin/qemu-pr-helper"', "/usr/bin/qemu-pr-helper"),
    "slirp_helper": ('"/usr/bin/slirp-helper"', "/usr/bin/slirp-helper"),
    "dbus_daemon": ('"/usr/bin/dbus-daemon"', "/usr/bin/dbus-daemon"),
    "set_process_name": ("1", True),
    "max_processes": ("10", 10),
    "max_files": ("20", 20),
    "max_threads_per_process": ("30", 30),
    "max_core": ("1073741824", 1073741824),
    "dump_guest_core": ("1", True),
    "stdio_handler": ('"file"', "file"),
    "sched_core": ('"vcpus"', "vcpus"),
    "mac_filter": ("1", True),
    "relaxed_acs_check": ("1", True),
    "lock_manager": ('"lockd"', "lockd"),
    "max_queued": ("3", 3),
    "keepalive_interval": ("-1", -1),
    "keepalive_count": ("0", 0),
    "migration_address": ('"0.0.0.0"', "0.0.0.0"),
    "migration_host": ('"host.example.com"', "host.example.com"),
    "migration_port_min": ("50000", 50000),
    "migration_port_max": ("50010", 50010),
    "log_timestamp": ("0", False),
    "nvram": ('[ "/c.fd:/v.fd" ]', ("/c.fd:/v.fd",)),
    "gluster_debug_level": ("9", 9),
    "virtiofsd_debug": ("1", True),
    "deprecation_behavior": ('"crash"', "crash"),
    "memory_backing_dir": ('"/ram"', "/ram"),
    "swtpm_user": ('"tss"', "tss"),
    "swtpm_group": ('"+59"', "+59"),
    "capability_filters": ('[ "capname" ]', ("capname",)),
}


def test_every_key_is_declared_and_read() -> None:
    assert set(EVERY_KEY) == set(SCHEMA)
    text = "".join(f"{key} = {literal}\n" for key, (literal, _) in EVERY_KEY.items())
    conf = parse_qemu_conf(text, privileged=True)
    default = parse_qemu_conf("", privileged=True)
    assert conf.warnings == ()
    for key, (_, expected) in EVERY_KEY.items():
        assert getattr(conf, key) == expected, key
        assert getattr(default, key) != expected, f"{key}: pick a value that is not the default"


def test_schema_table_rows() -> None:
    loaded_only = {"path", "privileged", "unknown_keys", "warnings", "lines"}
    attributes = {name for name in dir(QemuConf) if not name.startswith("_")} - {"replace"}
    assert set(SCHEMA) == attributes - loaded_only
    conf = QemuConf()
    for key in SCHEMA:
        getattr(conf, key)
    with pytest.raises(AttributeError, match="read-only"):
        conf.user = "x"  # type: ignore[misc]
    assert conf.replace(user="x").user == "x" and conf.user == "root"
    with pytest.raises(TypeError, match="no field nosuch"):
        QemuConf(nosuch=1)
    for info in SCHEMA.values():
        assert info.doc and info.doc.endswith(".")
    assert SCHEMA["user"].default_for(True) == "root"
    assert SCHEMA["user"].default_for(False) == f"+{os.getuid()}"
    assert SCHEMA["dynamic_ownership"].kind is Kind.BOOL


_LENS_KINDS = {"str_entry": {Kind.STR, Kind.STR_OR_LIST}, "bool_entry": {Kind.BOOL},
               "int_entry": {Kind.INT, Kind.UINT}, "str_array_entry": {Kind.STR_LIST},
               "limits_entry": {Kind.SIZE}}


@pytest.mark.skipif(not LENS.exists(), reason="libvirt's augeas lens for qemu.conf is not installed")
def test_schema_matches_libvirt_lens() -> None:
    lens_keys = {key: kind for kind, key in re.findall(r'\b(\w+_entry)\s+"(\w+)"', LENS.read_text())}
    assert len(lens_keys) > 80  # the lens was understood
    assert set(lens_keys) == set(SCHEMA) | set(OBSOLETE_KEYS)
    for key, lens_kind in lens_keys.items():
        kind = SCHEMA[key].kind if key in SCHEMA else OBSOLETE_KEYS[key][0] or Kind.BOOL
        assert kind in _LENS_KINDS[lens_kind], key


@pytest.mark.skipif(not LENS_TEST.exists(), reason="libvirt's augeas tests are not installed")
def test_libvirts_sample_configuration_loads() -> None:
    # libvirt's lens test embeds a qemu.conf that sets every key; pyvirt must read all of it.
    match = re.search(r'let conf = "(.*?)"\n\s*test ', LENS_TEST.read_text(), re.S)
    assert match is not None
    text = match.group(1).replace('\\"', '"')
    conf = parse_qemu_conf(text, privileged=True)
    assert conf.unknown_keys == ()
    assert conf.user == "libvirt-qemu"
    assert conf.cgroup_device_acl == DEFAULT_CGROUP_DEVICE_ACL
    assert conf.max_core == "unlimited"


def test_resolve_user_and_group() -> None:
    assert resolve_user("root") == 0
    assert resolve_group("root") == 0
    assert resolve_user("+1234") == 1234
    assert resolve_group("+0") == 0
    # digits that name no user are read as an id, as libvirt does
    assert resolve_user("4242") == 4242
    with pytest.raises(ConfigError, match=r"no user named 'no-such-user-xyz'"):
        resolve_user("no-such-user-xyz")
    with pytest.raises(ConfigError, match=r"no group named '\+x'"):
        resolve_group("+x")


# -- libvirt 9.0 as the oracle: the same files are accepted or refused ---------------------------

ORACLE_CASES = [
    'user = "root"\ngroup = "root"\n',
    'dynamic_ownership = "yes"\n',
    "dynamic_ownership = 2\n",
    'cgroup_device_acl = [\n "/dev/null",\n "/dev/full",\n]\n',
    'cgroup_device_acl = [\n "/dev/null", # c\n "/dev/full"\n]\n',
    "some_future_key = 1\n",
    "user = 'root' ; group = \"root\"\n",
    "x = 12abc\n",
    "remote_display_port_min = 5000\n",
    "remote_display_port_min = 6000\nremote_display_port_max = 5999\n",
    'stdio_handler = "foo"\n',
    'security_driver = ["none", "none"]\n',
    'security_driver = "none"\n',
    'namespaces = ["net"]\n',
    'cgroup_controllers = ["cpu", "bogus"]\n',
    'cgroup_controllers = "cpu"\n',
    'max_core = "unlimitedx"\n',
    "max_processes = -1\n",
    "max_processes = 4294967296\n",
    "keepalive_interval = -1\n",
    'user = "root"\nuser = 5\n',
    'a = [1, [2, 3]]\n',
    'a = "x\n',
    "a = \n",
    'a = ["x" "y"]\n',
    'sched_core = "bogus"\n',
    "allow_disk_format_probing = 1\n",
    'clear_emulator_capabilities = "x"\n',
    'vxhs_tls = "x"\n',
    'migration_host = "localhost"\n',
    "log_timestamp = +1\n",
]


@pytest.mark.oracle
@pytest.mark.parametrize("text", ORACLE_CASES)
def test_same_verdict_as_libvirt(text: str, libvirt_embed: Any) -> None:
    (libvirt_embed.root / "etc" / "qemu.conf").write_text(text)
    libvirt_ok = libvirt_embed.virsh("uri", check=False, timeout=60).returncode == 0
    try:
        parse_qemu_conf(text, privileged=os.geteuid() == 0)
        pyvirt_ok = True
    except ConfigError:
        pyvirt_ok = False
    assert pyvirt_ok == libvirt_ok


def test_resolve_user_group_names_the_line(tmp_path: Path) -> None:
    assert resolve_user_group(parse_qemu_conf('user = "+7"\ngroup = "root"', privileged=True)) == (7, 0)
    assert resolve_user_group(parse_qemu_conf("", privileged=False)) == (os.getuid(), os.getgid())
    path = tmp_path / "qemu.conf"
    path.write_text('# who runs QEMU\n\ngroup = "no-such-group-xyz"\n')
    conf = load_qemu_conf(path, privileged=True)
    assert conf.lines == {"group": 3}
    with pytest.raises(ConfigError) as info:
        resolve_user_group(conf)
    assert str(info.value) == (f"{path}:3: key 'group': no group named 'no-such-group-xyz' "
                               "(write '+N' for the numeric id N)")
