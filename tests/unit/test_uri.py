# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import annotations

from pathlib import Path

import pytest

from pyvirt import _errcodes as codes
from pyvirt.errors import InvalidURIError, NoConnectError
from pyvirt.uri import (
    MONITOR_SOCKET_MAX,
    SUN_PATH_MAX,
    TRANSPORT_PARAMS,
    ConnectURI,
    check_embed_root,
    default_uri,
    parse_uri,
)

# uri, transport, user, host, port, path, params, effective transport, remote, remote_name
VALID = [
    ("qemu:///session", None, None, None, None, "/session", {}, "unix", False, "qemu:///session"),
    ("qemu+unix:///session", "unix", None, None, None, "/session", {}, "unix", False,
     "qemu:///session"),
    ("qemu:///system", None, None, None, None, "/system", {}, "unix", False, "qemu:///system"),
    ("qemu+unix:///system", "unix", None, None, None, "/system", {}, "unix", False, "qemu:///system"),
    ("qemu://host/system", None, None, "host", None, "/system", {}, "tls", True, "qemu:///system"),
    ("qemu+tls://host/system", "tls", None, "host", None, "/system", {}, "tls", True,
     "qemu:///system"),
    ("qemu+tcp://host/system", "tcp", None, "host", None, "/system", {}, "tcp", True,
     "qemu:///system"),
    ("qemu+ssh://user@host:2222/system", "ssh", "user", "host", 2222, "/system", {}, "ssh", True,
     "qemu:///system"),
    ("qemu+ssh://host/session", "ssh", None, "host", None, "/session", {}, "ssh", True,
     "qemu:///session"),
    ("qemu+tcp://[::1]:16509/system", "tcp", None, "::1", 16509, "/system", {}, "tcp", True,
     "qemu:///system"),
    ("qemu+ssh:///system", "ssh", None, None, None, "/system", {}, "ssh", True, "qemu:///system"),
    ("qemu:///embed?root=/srv/vm", None, None, None, None, "/embed", {"root": "/srv/vm"}, "unix",
     False, "qemu:///embed?root=/srv/vm"),
    ("qemu+unix:///system?socket=/run/x.sock&mode=direct", "unix", None, None, None, "/system",
     {"socket": "/run/x.sock", "mode": "direct"}, "unix", False, "qemu:///system"),
    ("qemu:///session?mode=legacy", None, None, None, None, "/session", {"mode": "legacy"}, "unix",
     False, "qemu:///session"),
    ("qemu+ssh://root@h/system?keyfile=/k&no_verify=1&no_tty=0&netcat=/bin/nc&command=/usr/bin/ssh"
     "&proxy=native&socket=/s&mode=auto", "ssh", "root", "h", None, "/system",
     {"keyfile": "/k", "no_verify": "1", "no_tty": "0", "netcat": "/bin/nc",
      "command": "/usr/bin/ssh", "proxy": "native", "socket": "/s", "mode": "auto"},
     "ssh", True, "qemu:///system"),
    ("qemu+tls://h:1/system?pkipath=/pki&tls_priority=NORMAL:-VERS-SSL3.0&no_verify=1&no_sanity=1",
     "tls", None, "h", 1, "/system",
     {"pkipath": "/pki", "tls_priority": "NORMAL:-VERS-SSL3.0", "no_verify": "1", "no_sanity": "1"},
     "tls", True, "qemu:///system"),
    ("qemu://h/system?name=qemu:///session", None, None, "h", None, "/system",
     {"name": "qemu:///session"}, "tls", True, "qemu:///session"),
    ("qemu+tcp://h/system?auth=sasl.gssapi&authfile=/etc/auth.conf", "tcp", None, "h", None,
     "/system", {"auth": "sasl.gssapi", "authfile": "/etc/auth.conf"}, "tcp", True, "qemu:///system"),
]


@pytest.mark.parametrize(
    "text,transport,user,host,port,path,params,eff,remote,name", VALID, ids=[v[0] for v in VALID])
def test_valid(text: str, transport: str | None, user: str | None, host: str | None,
               port: int | None, path: str, params: dict[str, str], eff: str, remote: bool,
               name: str) -> None:
    uri = parse_uri(text)
    assert (uri.raw, uri.driver, uri.transport, uri.user, uri.host, uri.port, uri.path) == (
        text, "qemu", transport, user, host, port, path)
    assert dict(uri.params) == params
    assert uri.effective_transport == eff
    assert uri.is_remote is remote
    assert uri.remote_name() == name
    assert uri.instance == path[1:]


def test_embed_root_and_instance() -> None:
    uri = parse_uri("qemu:///embed?root=/srv/vm/")
    assert uri.instance == "embed"
    assert uri.embed_root == Path("/srv/vm")
    assert parse_uri("qemu:///system").embed_root is None


def test_effective_host_and_port() -> None:
    assert parse_uri("qemu://h/system").effective_port == 16514
    assert parse_uri("qemu+tcp://h/system").effective_port == 16509
    assert parse_uri("qemu+tcp://h:99/system").effective_port == 99
    assert parse_uri("qemu+ssh://h/system").effective_port is None
    assert parse_uri("qemu+ssh:///system").effective_host == "localhost"
    assert parse_uri("qemu:///system").effective_host is None
    assert parse_uri("qemu:///system").effective_port is None


def test_percent_decoding() -> None:
    uri = parse_uri("qemu+ssh://us%65r@ho%73t/sys%74em?keyfile=/a%20b/k%2Bey&name=qemu%3A%2F%2F%2Fsession")
    assert uri.user == "user"
    assert uri.host == "host"
    assert uri.path == "/system"
    # '+' is a plain character in libvirt's query parsing, not a space
    assert uri.params["keyfile"] == "/a b/k+ey"
    assert uri.remote_name() == "qemu:///session"
    # a name is decoded too, and matched case-insensitively as libvirt does
    assert parse_uri("qemu:///system?%53ocket=/x").params == {"socket": "/x"}
    assert parse_uri("qemu:///system?SOCKET=/x").params == {"socket": "/x"}


def test_embed_root_non_utf8_survives() -> None:
    uri = parse_uri("qemu:///embed?root=/tmp/%FF")
    assert bytes(uri.embed_root) == b"/tmp/\xff"  # type: ignore[arg-type]
    assert uri.remote_name() == "qemu:///embed?root=/tmp/%FF"


def test_query_syntax_follows_libvirt() -> None:
    # ';' separates only when the rest has no '&'; empty sections and '=value' are skipped
    assert dict(parse_uri("qemu:///system?mode=direct;socket=/s").params) == {
        "mode": "direct", "socket": "/s"}
    assert dict(parse_uri("qemu:///system?&&mode=direct&=x&").params) == {"mode": "direct"}
    assert dict(parse_uri("qemu:///system?").params) == {}


def test_frozen_and_hashable() -> None:
    a, b = parse_uri("qemu:///system?mode=auto"), parse_uri("qemu:///system?mode=auto")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.host = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.params["mode"] = "x"  # type: ignore[index]
    assert isinstance(a, ConnectURI)


# uri, fragments the message must contain
INVALID = [
    ("", ["empty connection URI"]),
    ("system", ["no scheme", "qemu:///system"]),
    ("qemu:/system", ["expected '//' after 'qemu:'"]),
    ("qemu:///sys tem", ["' ' at offset 11", "%20"]),
    ("qemu+foo:///system", ["unknown transport 'foo'", "unix, tcp, tls, ssh"]),
    ("qemu+ssh+x://h/system", ["unknown transport 'ssh+x'"]),
    ("qemu:///bogus", ["unexpected QEMU URI path '/bogus'", "try qemu:///system or qemu:///session"]),
    ("qemu:///system/", ["unexpected QEMU URI path '/system/'"]),
    ("qemu:///", ["unexpected QEMU URI path '/'"]),
    ("qemu://host", ["unexpected QEMU URI path ''"]),
    ("qemu:///embed", ["needs a root directory", "qemu:///embed?root=/some/dir"]),
    ("qemu:///embed?root=relative/dir", ["embed root 'relative/dir' must be an absolute path"]),
    ("qemu://host/embed?root=/srv", ["cannot run on remote host 'host'"]),
    ("qemu+unix:///embed?root=/srv", ["takes no transport ('qemu+unix')"]),
    ("qemu+ssh://h/embed?root=/srv", ["takes no transport ('qemu+ssh')"]),
    ("qemu:///embed?root=/srv&socket=/s", ["parameter 'socket' does not apply to qemu:///embed",
                                          "accepted here: root"]),
    ("qemu:///system?foo=bar", ["unknown parameter 'foo'", "a local connection",
                                "auth, authfile, mode, name, socket"]),
    ("qemu+ssh://h/system?sokcet=/s", ["unknown parameter 'sokcet'", "the ssh transport", "socket"]),
    ("qemu:///system?keyfile=/k", ["parameter 'keyfile' does not apply to a local connection",
                                   "used by the ssh transport"]),
    ("qemu+unix:///system?keyfile=/k", ["does not apply to the unix transport"]),
    ("qemu+tcp://h/system?no_verify=1", ["parameter 'no_verify' does not apply to the tcp "
                                         "transport", "ssh, tls transports"]),
    ("qemu+ssh://h/system?pkipath=/p", ["'pkipath' does not apply to the ssh transport"]),
    ("qemu+ssh://h/system?sshauth=agent", ["'sshauth' does not apply",
                                           "libssh, libssh2 transports"]),
    ("qemu+tcp://h/system?known_hosts=/k", ["'known_hosts' does not apply",
                                            "ssh, libssh, libssh2 transports"]),
    ("qemu:///system?root=/x", ["'root' only applies to qemu:///embed"]),
    ("qemu:///system?mode=xyz", ["parameter 'mode' must be one of auto, legacy, direct, got 'xyz'"]),
    ("qemu+ssh://h/system?proxy=xyz", ["parameter 'proxy' must be one of auto, netcat, native"]),
    ("qemu+ssh://h/system?no_tty=2", ["parameter 'no_tty' must be 0 or 1, got '2'"]),
    ("qemu+ssh://h/system?no_verify=yes", ["parameter 'no_verify' must be 0 or 1, got 'yes'"]),
    ("qemu+ssh://h/system?no_tty", ["parameter 'no_tty' needs a value"]),
    ("qemu:///system?mode=auto&mode=direct", ["parameter 'mode' is given more than once"]),
    ("qemu://host:abc/system", ["port 'abc' is not a number", "1-65535"]),
    ("qemu://host:99999/system", ["port 99999 is out of range; expected 1-65535"]),
    ("qemu://host:0/system", ["port 0 is out of range"]),
    ("qemu://host:/system", ["port '' is not a number"]),
    ("qemu+tcp://:16509/system", ["port 16509 given without a host name"]),
    ("qemu+ssh://me@/system", ["user name 'me' given without a host name"]),
    ("qemu+ssh://me:secret@h/system", ["a password in the URI is not supported"]),
    ("qemu://me@h/system", ["a user name is only used by the ssh transport, not the tls transport"]),
    ("qemu+unix://host/system", ["the unix transport cannot reach remote host 'host'"]),
    ("qemu:///system#frag", ["a fragment ('#frag') is not allowed"]),
    ("qemu:///system?socket=/a%2", ["bad percent-escape '%2'", "%25"]),
    ("qemu+tcp://[::1/system", ["IPv6 address opened with '[' but not closed"]),
]


@pytest.mark.parametrize("text,fragments", INVALID, ids=[v[0] or "<empty>" for v in INVALID])
def test_invalid(text: str, fragments: list[str]) -> None:
    with pytest.raises(InvalidURIError) as info:
        parse_uri(text)
    for fragment in fragments:
        assert fragment in str(info.value)
    if text:
        assert f"'{text}'" in str(info.value)
    assert info.value.get_error_code() == codes.VIR_ERR_INVALID_ARG


@pytest.mark.parametrize("transport", ["ext", "libssh", "libssh2", "LIBSSH2"])
def test_unsupported_transports(transport: str) -> None:
    with pytest.raises(InvalidURIError) as info:
        parse_uri(f"qemu+{transport}://host/system")
    assert f"the '{transport.lower()}' transport is not supported by pyvirt yet" in str(info.value)
    assert info.value.get_error_code() == codes.VIR_ERR_NO_SUPPORT


def test_transport_is_case_insensitive_like_libvirt() -> None:
    assert parse_uri("qemu+SSH://h/system").transport == "ssh"


@pytest.mark.parametrize("text,shown", [
    ("xen:///system", "no connection driver available for xen:///system"),
    ("test+unix:///default", "no connection driver available for test:///default"),
    ("QEMU:///system", "scheme names are case-sensitive"),
    ("remote:///system", "no connection driver available for remote:///system"),
])
def test_other_drivers(text: str, shown: str) -> None:
    with pytest.raises(NoConnectError) as info:
        parse_uri(text)
    assert shown in str(info.value)
    assert "qemu:///system" in str(info.value)
    assert info.value.get_error_code() == codes.VIR_ERR_NO_CONNECT


def test_transport_param_table_is_consistent() -> None:
    for transport, names in TRANSPORT_PARAMS.items():
        if transport != "embed":
            assert {"name", "auth", "authfile"} <= names
    for name in TRANSPORT_PARAMS["ssh"]:
        parse_uri(f"qemu+ssh://h/system?{name}=" + ("1" if name.startswith("no_") else
                                                    "auto" if name in ("mode", "proxy") else "/x"))


# -- embed root length --------------------------------------------------------------------------

TAIL = len("/lib/qemu/domain-") + 10 + 1 + 20 + len("/monitor.sock")


def test_socket_limit_constants() -> None:
    # CPython (like libvirt's virStrcpyStatic) needs room for the NUL: 107 bytes at most.
    assert SUN_PATH_MAX == 108
    assert MONITOR_SOCKET_MAX == 107
    assert TAIL == 61


def _root_of(length: int) -> str:
    return "/" + "r" * (length - 1)


def test_longest_embed_root_is_accepted() -> None:
    root = _root_of(MONITOR_SOCKET_MAX - TAIL)
    check_embed_root(Path(root))
    assert parse_uri(f"qemu:///embed?root={root}").embed_root == Path(root)


def test_too_long_embed_root_is_refused_naming_limit_and_length(tmp_path: Path) -> None:
    root = tmp_path / ("r" * 60)
    text = f"qemu:///embed?root={root}"
    with pytest.raises(InvalidURIError) as info:
        parse_uri(text)
    message = str(info.value)
    expected = len(str(root)) + TAIL
    assert f"can reach {expected} bytes" in message
    assert "shorter than 108 bytes" in message
    assert str(root) in message
    assert f"at most {MONITOR_SOCKET_MAX - TAIL} bytes" in message
    assert not root.exists()  # refused before anything is created


def test_embed_root_limit_off_by_one() -> None:
    with pytest.raises(InvalidURIError, match=r"can reach 108 bytes"):
        check_embed_root(Path(_root_of(MONITOR_SOCKET_MAX - TAIL + 1)))


def test_embed_root_length_counts_bytes() -> None:
    # 'é' takes two bytes: this 46-byte root still fits, the 47-byte one does not.
    check_embed_root(Path("/" + "é" * 22 + "x"))
    with pytest.raises(InvalidURIError):
        check_embed_root(Path("/" + "é" * 23))


# -- default URI ---------------------------------------------------------------------------------

@pytest.mark.parametrize("environ,euid,expected", [
    ({}, 0, "qemu:///system"),
    ({}, 1000, "qemu:///session"),
    ({"PYVIRT_DEFAULT_URI": "qemu+ssh://h/system"}, 0, "qemu+ssh://h/system"),
    ({"PYVIRT_DEFAULT_URI": ""}, 1000, "qemu:///session"),
    ({"LIBVIRT_DEFAULT_URI": "qemu:///system"}, 1000, "qemu:///session"),
])
def test_default_uri(environ: dict[str, str], euid: int, expected: str) -> None:
    assert default_uri(environ, euid) == expected


def test_default_uri_uses_process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.delenv("PYVIRT_DEFAULT_URI", raising=False)
    assert default_uri() == ("qemu:///system" if os.geteuid() == 0 else "qemu:///session")
    monkeypatch.setenv("PYVIRT_DEFAULT_URI", "qemu:///embed?root=/x")
    assert default_uri() == "qemu:///embed?root=/x"
