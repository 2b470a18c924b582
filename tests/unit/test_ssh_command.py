# SPDX-License-Identifier: LGPL-2.1-or-later
"""The ssh command of qemu+ssh (pyvirt.rpc.ssh), checked against what really reads it:

* Debian's virsh 9.0 builds the same argv for the same URI (with ``mode=legacy``, which selects
  libvirt's helper and socket): virsh is run with ``command=`` naming a stand-in ssh that records
  its arguments, so nothing connects anywhere;
* the remote command survives the two shells of the remote side (the login shell, then
  ``sh -c``) for any value the URI can carry: ``/bin/sh`` and ``bash`` run it here with stand-ins
  for nc and the helper on PATH that record the arguments they get;
* ssh itself reads the key and known-hosts file names back as given (``ssh -G`` prints its
  resolved configuration without connecting).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.rpc.ssh import HELPER, remote_command, shell_quote, ssh_command
from pyvirt.uri import parse_uri

VIRSH = "/usr/bin/virsh"

_RECORDER = """#!/bin/sh
if [ "$#" = 1 ] && [ "$1" = "-q" ]; then echo "nc: option requires an argument -- 'q'" >&2; exit 1; fi
printf '%s\\0' "$0" > "$RECORD"
for a in "$@"; do printf '%s\\0' "$a" >> "$RECORD"; done
"""


def _recorder(path: Path) -> None:
    path.write_text(_RECORDER)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _argv_of(uri: str, readonly: bool = False) -> list[str]:
    return list(ssh_command(parse_uri(uri), readonly).argv)


# ---- the same argv as virsh ------------------------------------------------------------------

VIRSH_CASES = [
    ("qemu+ssh://bob@example.com:2222/system", False),
    ("qemu+ssh://example.com/system", False),
    ("qemu+ssh://example.com/session", True),
    ("qemu+ssh://example.com/system?proxy=netcat", False),
    ("qemu+ssh://example.com/system?proxy=native", False),
    ("qemu+ssh://example.com/system?proxy=native", True),
    ("qemu+ssh://example.com/system?socket=/x/libvirt-sock", False),
    ("qemu+ssh://example.com/system?netcat=/usr/bin/nc", False),
    ("qemu+ssh://example.com/system?netcat=/opt/my%20nc", False),
    ("qemu+ssh://example.com/system?keyfile=/k/id&no_verify=1&no_tty=1", False),
    ("qemu+ssh://example.com/system?name=qemu:///session", False),
    ("qemu+ssh://u@[::1]:22/system", False),
]


@pytest.mark.oracle
@pytest.mark.parametrize(("uri", "readonly"), VIRSH_CASES)
def test_argv_is_virsh_argv(uri: str, readonly: bool, tmp_path: Path) -> None:
    record = tmp_path / "argv"
    fake = tmp_path / "ssh"
    # libvirt passes ssh only a few environment variables: the record's name is in the script
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf \'%s\\0\' "$a"; done > {record}\n'
                    # virsh's first call lands before the stand-in leaves (else SIGPIPE)
                    'sleep 0.3\necho "stand-in ssh: refused" >&2\nexit 255\n')
    fake.chmod(0o755)
    sep = "&" if "?" in uri else "?"
    with_command = f"{uri}{sep}command={fake}"
    out = subprocess.run([VIRSH, *(["-r"] if readonly else []), "-c", with_command, "uri"],
                         capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "LANG": "C", "HOME": str(tmp_path)})
    # (virsh's message races with the stand-in's exit: "Cannot recv data: stand-in ssh:
    # refused: ..." or "client socket is closed")
    assert out.returncode == 1 and "failed to connect to the hypervisor" in out.stderr
    theirs = record.read_bytes().decode().split("\0")[:-1]
    ours = _argv_of(f"{with_command}&mode=legacy", readonly)
    assert ours == [str(fake), *theirs]


def test_argv_shape() -> None:
    argv = _argv_of("qemu+ssh://root@h:2022/system?keyfile=/k&no_tty=1&known_hosts=/kh")
    assert argv[:-1] == ["ssh", "-p", "2022", "-l", "root", "-i", "/k", "-T", "-e", "none", "-o",
                         "BatchMode=yes", "-o", "UserKnownHostsFile=/kh", "--", "h"]
    assert argv[-1].startswith(f"sh -c 'which {HELPER} 1>/dev/null 2>&1;")
    assert "/run/pyvirt/libvirt-sock" in argv[-1]
    # no host: localhost, as libvirt; no port, no user: ssh's own defaults
    assert _argv_of("qemu+ssh:///system")[:6] == ["ssh", "-T", "-e", "none", "--", "localhost"]
    assert "/run/pyvirt/libvirt-sock-ro" in _argv_of("qemu+ssh://h/system", readonly=True)[-1]


def test_proxy_choice() -> None:
    assert _argv_of("qemu+ssh://h/system?socket=/s")[-1].startswith("sh -c 'if 'nc' -q")
    assert _argv_of("qemu+ssh://h/system?netcat=nc")[-1].startswith("sh -c 'if 'nc' -q")
    native = _argv_of("qemu+ssh://h/system?proxy=native&socket=/r/run/libvirt-sock")[-1]
    # pyvirt hands socket= to its helper (libvirt's helper has no way to take it)
    assert native == (f"sh -c '{HELPER} '''\\''qemu:///system?socket=/r/run/libvirt-sock'\\'''''")
    legacy = _argv_of("qemu+ssh://h/system?proxy=native&mode=legacy")[-1]
    assert legacy == "sh -c 'virt-ssh-helper 'qemu:///system''"
    with pytest.raises(PyvirtError) as info:
        _argv_of("qemu+ssh://h/system?proxy=native&netcat=/bin/nc")
    assert (info.value.code, info.value.domain) == (codes.VIR_ERR_INVALID_ARG, codes.VIR_FROM_REMOTE)
    assert "netcat path not valid with native proxy mode" in info.value.message


def test_environment() -> None:
    env = ssh_command(parse_uri("qemu+ssh://h/system"), False,
                      {"PATH": "/p", "HOME": "/h", "SSH_AUTH_SOCK": "/a", "SECRET": "x",
                       "LC_ALL": "de_DE"}).env
    assert env == {"PATH": "/p", "HOME": "/h", "SSH_AUTH_SOCK": "/a", "LC_ALL": "C"}


@pytest.mark.parametrize(("uri", "words"), [
    ("qemu+ssh://h/system?keyfile=/k/$%7BHOME%7D/id", ["keyfile", "'${'"]),
    ("qemu+ssh://h/system?known_hosts=/k/a%0Ab", ["known_hosts", "control character"]),
    ("qemu+ssh://a%40b/system", ["host name 'a@b'"]),
])
def test_values_ssh_cannot_take_are_refused(uri: str, words: list[str]) -> None:
    with pytest.raises(PyvirtError) as info:
        _argv_of(uri)
    assert info.value.code == codes.VIR_ERR_INVALID_ARG
    for word in words:
        assert word in info.value.message


# ---- what ssh reads back ----------------------------------------------------------------------

NAMES = ["/tmp/plain", "/tmp/with space", "/tmp/per%cent", "/tmp/quo\"te", "/tmp/apo'strophe",
         "/tmp/back\\slash", "/tmp/hash#mark", "/tmp/eq=ual", "/tmp/%%d"]


def _ssh_config(argv: list[str]) -> list[str]:
    # argv of ssh_command without the remote command; -G prints the configuration and exits
    opts = argv[1:argv.index("--")]
    out = subprocess.run(["ssh", "-G", "-F", "/dev/null", *opts, "h"], capture_output=True,
                         text=True, timeout=30, check=True)
    return out.stdout.splitlines()


@pytest.mark.parametrize("name", NAMES)
def test_ssh_reads_known_hosts_back(name: str) -> None:
    from urllib.parse import quote

    argv = _argv_of(f"qemu+ssh://h/system?known_hosts={quote(name, safe='/')}")
    assert f"userknownhostsfile {name}" in _ssh_config(argv)


@pytest.mark.parametrize("name", NAMES)
def test_ssh_reads_keyfile_back(name: str, tmp_path: Path) -> None:
    from urllib.parse import quote

    key = tmp_path / name.removeprefix("/tmp/")
    key.write_text("")
    argv = _argv_of(f"qemu+ssh://h/system?keyfile={quote(str(key), safe='/')}")
    # ssh lists -i names as given, and -o IdentityFile names (used for a '%') before expanding
    assert f"identityfile {str(key).replace('%', '%%')}" in _ssh_config(argv)


# ---- the two remote shells ------------------------------------------------------------------

def _run_remote(command: str, shell: str, bindir: Path, record: Path) -> list[str]:
    """Run ``command`` as sshd would (``$SHELL -c COMMAND``); what a stand-in got."""
    if record.exists():
        record.unlink()
    subprocess.run([shell, "-c", command], check=True, timeout=30, capture_output=True,
                   env={"PATH": f"{bindir}:/usr/bin:/bin", "RECORD": str(record)})
    words = [a.decode("utf-8", "surrogateescape") for a in record.read_bytes().split(b"\0")[:-1]]
    return [os.path.basename(words[0]), *words[1:]]


_TEXT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=16)
_FILE = st.text(st.characters(blacklist_characters="\0/", blacklist_categories=["Cs"]),
                min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bindir = tmp_path_factory.mktemp("bin")
    _recorder(bindir / "nc")
    _recorder(bindir / HELPER)
    return bindir


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(socket=_TEXT, uri=_TEXT, readonly=st.booleans())
def test_values_survive_both_shells(stand_ins: Path, tmp_path: Path, shell: str, socket: str,
                                    uri: str, readonly: bool) -> None:
    record = tmp_path / "record"
    nc = remote_command("netcat", netcat=None, socket=socket, helper=HELPER, helper_uri=uri,
                        readonly=readonly)
    assert _run_remote(nc, shell, stand_ins, record)[1:] == ["-q0", "-U", socket]
    native = remote_command("native", netcat=None, socket=socket, helper=HELPER, helper_uri=uri,
                            readonly=readonly)
    assert _run_remote(native, shell, stand_ins, record) == [HELPER, *(["-r"] if readonly else []),
                                                            uri]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_FILE)
def test_netcat_path_survives_both_shells(stand_ins: Path, tmp_path_factory: pytest.TempPathFactory,
                                          name: str) -> None:
    bindir = tmp_path_factory.mktemp("nc")
    netcat = bindir / name
    _recorder(netcat)
    record = bindir / "record"
    command = remote_command("netcat", netcat=str(netcat), socket="/s", helper=HELPER,
                             helper_uri="qemu:///system", readonly=False)
    got = _run_remote(command, "/bin/sh", stand_ins, record)
    assert got == [name, "-q0", "-U", "/s"]


def test_auto_prefers_the_helper(stand_ins: Path, tmp_path: Path) -> None:
    record = tmp_path / "record"
    command = remote_command("auto", netcat=None, socket="/a b/s", helper=HELPER,
                             helper_uri="qemu:///system", readonly=True)
    assert _run_remote(command, "/bin/sh", stand_ins, record) == [HELPER, "-r", "qemu:///system"]
    nc_only = tmp_path / "nc-only"
    nc_only.mkdir()
    _recorder(nc_only / "nc")
    # without the helper on the remote PATH: netcat to the socket
    assert _run_remote(command, "/bin/sh", nc_only, record) == ["nc", "-q0", "-U", "/a b/s"]


def test_shell_quote_is_libvirts() -> None:
    assert shell_quote("") == "''"
    assert shell_quote("qemu:///system") == "qemu:///system"
    assert shell_quote("a=b,c%d@e+f") == "a=b,c%d@e+f"
    assert shell_quote("it's") == "'it'\\''s'"
    assert shell_quote("a b") == "'a b'"


_PARAM = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]),
                 min_size=1, max_size=16)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(socket=_PARAM)
def test_socket_from_the_uri_reaches_the_remote_program(stand_ins: Path, tmp_path: Path,
                                                        socket: str) -> None:
    """From the URI text to what nc or pyvirt-ssh-helper gets, through both remote shells."""
    from urllib.parse import quote

    from pyvirt.cli.ssh_helper import helper_socket

    record = tmp_path / "record"
    uri = f"qemu+ssh://h/system?socket={quote(socket, safe='/')}"
    netcat = ssh_command(parse_uri(uri), False).argv[-1]
    assert _run_remote(netcat, "/bin/sh", stand_ins, record) == ["nc", "-q0", "-U", socket]
    native = ssh_command(parse_uri(uri + "&proxy=native"), True).argv[-1]
    got = _run_remote(native, "/bin/sh", stand_ins, record)
    assert got[:2] == [HELPER, "-r"]
    # the helper, reading the URI it was given, picks that very socket
    assert helper_socket(got[2], True) == socket
