# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd.conf: every key's type, the refusals, and what listening the options lead to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyvirt.daemon.config import (
    INERT_KEYS,
    SCHEMA,
    DaemonConfig,
    Kind,
    LogOutput,
    load_daemon_config,
    parse_daemon_config,
    parse_log_outputs,
)
from pyvirt.daemon.instance import OpenRefused, served_instance
from pyvirt.daemon.listen import plan_listeners
from pyvirt.daemon.server import DaemonOptions
from pyvirt.errors import ConfigError


def test_defaults() -> None:
    config = parse_daemon_config("")
    assert config == DaemonConfig(path="pyvirtd.conf")
    assert (config.tcp_port, config.unix_sock_rw_perms, config.unix_sock_ro_perms) == (16509, 0o700, 0o777)
    assert (config.max_workers, config.keepalive_interval, config.keepalive_count) == (20, 5, 5)
    assert (config.max_clients, config.max_queued_clients, config.max_anonymous_clients) == \
        (5000, 1000, 20)
    assert config.auth_tcp == "sasl" and not config.explicit("auth_tcp")
    assert config.busy_poll_us == 200
    assert config.outputs == (LogOutput(3, "stderr"),)


def test_every_key_read() -> None:
    text = """
listen_tls = 0
listen_tcp = 1
tls_port = "16600"
tcp_port = 16601
listen_addr = "127.0.0.1"
unix_sock_group = "kvm"
unix_sock_ro_perms = "0775"
unix_sock_rw_perms = "0770"
unix_sock_dir = "/run/x"
auth_unix_ro = "none"
auth_unix_rw = "none"
auth_tcp = "none"
auth_tls = "none"
key_file = "/k"
cert_file = "/c"
ca_file = "/ca"
crl_file = "/crl"
tls_no_verify_certificate = 1
tls_no_sanity_certificate = 1
tls_priority = "NORMAL:-VERS-TLS1.2"
tls_allowed_dn_list = [ "C=GB,*", "O=x" ]
sasl_allowed_username_list = [ "admin@EXAMPLE.COM" ]
sasl_max_failures = 3
sasl_failure_window = 30
max_clients = 10
max_queued_clients = 5
max_anonymous_clients = 4
max_workers = 3
prio_workers = 0
max_client_requests = 7
keepalive_interval = -1
keepalive_count = 0
busy_poll_us = 0
log_level = 1
log_outputs = "1:file:/var/log/x 3:stderr 2:syslog:pyvirtd"
"""
    config = parse_daemon_config(text, "/etc/pyvirtd.conf")
    assert set(config.lines) == set(SCHEMA), "a key of the schema is not exercised here"
    assert config.warnings == ()
    assert (config.tls_port, config.tcp_port) == (16600, 16601)
    assert (config.unix_sock_ro_perms, config.unix_sock_rw_perms) == (0o775, 0o770)
    assert config.tls_allowed_dn_list == ("C=GB,*", "O=x")
    assert config.tls_no_verify_certificate is True and config.listen_tcp is True
    assert config.tls_no_sanity_certificate is True
    assert config.tls_priority == "NORMAL:-VERS-TLS1.2"
    assert (config.sasl_max_failures, config.sasl_failure_window) == (3, 30)
    assert config.keepalive_interval == -1 and config.prio_workers == 0
    assert config.busy_poll_us == 0
    assert (config.max_clients, config.max_queued_clients, config.max_anonymous_clients) == (10, 5, 4)
    assert config.outputs == (LogOutput(1, "file", "/var/log/x"), LogOutput(3, "stderr"),
                              LogOutput(2, "syslog", "pyvirtd"))


@pytest.mark.parametrize(("line", "key"), [
    ('listen_tcp = "yes"', "listen_tcp"),
    ("listen_tcp = 2", "listen_tcp"),
    ('tcp_port = "http"', "tcp_port"),
    ("tcp_port = 70000", "tcp_port"),
    ("unix_sock_rw_perms = 0770", "unix_sock_rw_perms"),
    ('unix_sock_rw_perms = "0789"', "unix_sock_rw_perms"),
    ('auth_tcp = "kerberos"', "auth_tcp"),
    ('tls_allowed_dn_list = "C=GB"', "tls_allowed_dn_list"),
    ("max_workers = -1", "max_workers"),
    ("listen_addr = 127", "listen_addr"),
    ("tls_priority = 1", "tls_priority"),
    ('auth_unix_rw = "polkit"', "auth_unix_rw"),
    ("max_client_requests = 0", "max_client_requests"),
    ("max_anonymous_clients = 31", "max_anonymous_clients"),
    ("max_anonymous_clients = -1", "max_anonymous_clients"),
    ("keepalive_interval = -2", "keepalive_interval"),
    ("log_level = 5", "log_level"),
    ("busy_poll_us = 10001", "busy_poll_us"),
    ("busy_poll_us = -1", "busy_poll_us"),
    ('log_outputs = "9:stderr"', "log_outputs"),
    ('log_outputs = "1:file:relative"', "log_outputs"),
    ('log_outputs = "1:syslog"', "log_outputs"),
    ('log_outputs = ""', "log_outputs"),
])
def test_bad_values_name_file_line_key(line: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_daemon_config(f"# first\nmax_clients = 30\n{line}\n", "/etc/p.conf")
    assert info.value.path == "/etc/p.conf" and info.value.line == 3 and info.value.key == key
    assert str(info.value).startswith("/etc/p.conf:3: ")
    assert key in str(info.value)


def test_unknown_inert_and_repeated_keys_warn() -> None:
    config = parse_daemon_config('max_worker = 3\nlog_filters = "1:qemu"\nmax_workers = 4\n'
                                 "max_workers = 5\n", "/p.conf")
    assert config.max_workers == 4
    assert config.warnings == (
        "/p.conf:1: unknown key 'max_worker' ignored (did you mean 'max_workers'?)",
        "/p.conf:2: key 'log_filters' has no effect in pyvirtd yet",
        "/p.conf:4: key 'max_workers' is set again; the value from line 3 is used, as libvirtd does",
    )
    assert not INERT_KEYS & set(SCHEMA)


@pytest.mark.parametrize(("text", "line", "words"), [
    # libvirtd 9.0 refuses to start as well (virNetServerNew)
    ("max_clients = 2\n", 1, "max_anonymous_clients (20, its default) is more than max_clients (2)"),
    ("max_anonymous_clients = 9\nmax_clients = 8\n", 1,
     "max_anonymous_clients (9) is more than max_clients (8)"),
])
def test_anonymous_clients_within_max_clients(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_daemon_config(text, "/p.conf")
    assert info.value.line == line and words in str(info.value)
    message = str(info.value)
    assert "set max_anonymous_clients = " in message and "0 turns that limit off" in message
    # at most max_clients, or 0 (no limit)
    for anonymous in (2, 0):
        config = parse_daemon_config(f"max_clients = 2\nmax_anonymous_clients = {anonymous}\n")
        assert config.max_anonymous_clients == anonymous


def test_kinds_documented() -> None:
    assert {kind for kind, _ in SCHEMA.values()} == set(Kind)


def test_log_outputs() -> None:
    assert parse_log_outputs("4:stderr") == (LogOutput(4, "stderr"),)
    with pytest.raises(ValueError, match="journald output is not supported"):
        parse_log_outputs("1:journald")
    with pytest.raises(ValueError, match="unknown output 'tty'"):
        parse_log_outputs("1:tty")


def test_load(tmp_path: Path) -> None:
    assert load_daemon_config(tmp_path / "none.conf", required=False) == DaemonConfig()
    with pytest.raises(ConfigError, match="does not exist"):
        load_daemon_config(tmp_path / "none.conf", required=True)
    conf = tmp_path / "p.conf"
    conf.write_text("max_clients = 20\n")
    assert load_daemon_config(conf, required=True).max_clients == 20
    conf.write_bytes(b"a = \0")
    with pytest.raises(ConfigError, match="NUL"):
        load_daemon_config(conf, required=True)


def _plans(text: str, *, listen: bool, root: Path = Path("/tmp/r")) -> list[str]:
    options = DaemonOptions(served_instance(root), parse_daemon_config(text), listen=listen)
    return [p.describe() for p in plan_listeners(options)]


def test_listeners() -> None:
    assert _plans("", listen=False) == ["/tmp/r/run/libvirt-sock (read-write)",
                                        "/tmp/r/run/libvirt-sock-ro (read-only)"]
    assert _plans("listen_tcp = 1\n", listen=False)[2:] == []  # TCP only with --listen
    assert _plans('listen_tcp = 1\nauth_tcp = "none"\n', listen=True)[2:] == ["tcp *:16509"]
    assert _plans('listen_tcp = 1\nauth_tcp = "none"\nlisten_addr = "::1"\ntcp_port = "1234"\n',
                  listen=True)[2:] == ["tcp ::1:1234"]
    assert _plans("listen_tls = 1\n", listen=False)[2:] == []  # TLS only with --listen
    assert _plans('listen_tls = 1\ntls_port = "1234"\n', listen=True)[2:] == ["tls *:1234"]
    assert _plans("", listen=True)[2:] == []


@pytest.mark.parametrize(("text", "message"), [
    ("listen_tcp = 1\n", 'auth_tcp is not set (its default is "sasl")'),
    ('listen_tcp = 1\nauth_tcp = "sasl"\n', 'auth_tcp = "sasl" on the plain TCP listener'),
    ('listen_tcp = 1\nauth_tcp = "polkit"\n', 'auth_tcp = "polkit"'),
    (f'unix_sock_dir = "/tmp/{"d" * 100}"\n', "longer than 107 bytes"),
])
def test_listen_refusals(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _plans(text, listen=True)
    assert message in str(info.value)
    assert info.value.line is not None


def test_served_instance_names(tmp_path: Path) -> None:
    embed = served_instance(Path("/tmp/r"))
    assert (embed.kind, embed.uri, embed.run_dir) == ("embed", "qemu:///embed?root=/tmp/r",
                                                      Path("/tmp/r/run"))
    for ok in (None, "", "qemu:///embed?root=/tmp/r", "qemu:///embed?root=/tmp//r/",
               "qemu:///system", "qemu:///session"):
        embed.check_name(ok)
    for bad in ("qemu:///embed?root=/tmp/other", "qemu+unix:///system", "xen:///", "garbage"):
        with pytest.raises(OpenRefused):
            embed.check_name(bad)
    system = served_instance(None, euid=0)
    assert system.kind == "system" and system.run_dir == Path("/run/pyvirt")
    assert system.config_file == Path("/etc/pyvirt/pyvirtd.conf")
    system.check_name("qemu:///system")
    with pytest.raises(OpenRefused, match="this pyvirtd serves qemu:///system only"):
        system.check_name("qemu:///session")
    session = served_instance(None, euid=1000)
    assert session.kind == "session" and not session.has_ro_socket
