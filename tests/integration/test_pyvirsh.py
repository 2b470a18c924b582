# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh as a user runs it: separate processes, real QEMU, libvirt 9.0 as the oracle."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from oracle import LibvirtEmbed

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
SCHEMAS = Path("/usr/share/libvirt/schemas")


def pyvirsh(*args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "PYVIRT_DEFAULT_URI"}
    full_env.update(env or {})
    proc = subprocess.run([PYVIRSH, *args], capture_output=True, text=True, env=full_env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def embed(root: Path) -> str:
    return f"qemu:///embed?root={root}"


def relaxng(name: str) -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMAS / name)))


def test_uri_and_tree(embed_root: Path) -> None:
    root = embed_root
    assert pyvirsh("-c", embed(root), "uri").stdout == embed(root) + "\n\n"
    for rel in ("etc/qemu", "etc/pki/qemu", "log/qemu", "log/swtpm", "run/qemu", "run/swtpm",
                "cache/qemu", "lib/qemu", "lib/swtpm"):
        assert (root / rel).is_dir(), rel


def test_default_uri_from_environment(embed_root: Path) -> None:
    uri = embed(embed_root)
    assert pyvirsh("uri", env={"PYVIRT_DEFAULT_URI": uri}).stdout == uri + "\n\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="the default for root is qemu:///system")
def test_default_uri_for_root_is_system(tmp_path: Path) -> None:
    out = pyvirsh("uri", env={"PYVIRT_PREFIX": str(tmp_path)}).stdout
    assert out == "qemu:///system\n\n"
    assert (tmp_path / "run" / "pyvirt" / "qemu").is_dir()
    assert (tmp_path / "etc" / "pyvirt" / "qemu").is_dir()


def test_version_reports_the_probed_qemu(embed_root: Path) -> None:
    out = pyvirsh("-c", embed(embed_root), "version").stdout.splitlines()
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", qemu)
    assert m
    assert out == ["Compiled against library: libvirt 9.0.0", "Using library: libvirt 9.0.0",
                   "Using API: QEMU 9.0.0", f"Running hypervisor: QEMU {'.'.join(m.groups())}", ""]
    assert pyvirsh("--version").stdout == "9.0.0\n"


@pytest.mark.oracle
def test_hostname_matches_virsh(embed_root: Path, libvirt_embed: LibvirtEmbed) -> None:
    theirs = libvirt_embed.virsh("hostname", quiet=False).stdout
    assert pyvirsh("-c", embed(embed_root), "hostname").stdout == theirs


@pytest.mark.slow
def test_capabilities_validate(embed_root: Path) -> None:
    uri = embed(embed_root)
    caps = etree.fromstring(pyvirsh("-c", uri, "capabilities").stdout.encode())
    relaxng("capability.rng").assertValid(caps)
    domcaps = etree.fromstring(pyvirsh("-c", uri, "domcapabilities").stdout.encode())
    relaxng("domaincaps.rng").assertValid(domcaps)
    i686 = etree.fromstring(pyvirsh("-c", uri, "domcapabilities", "--arch", "i686",
                                    "--virttype", "qemu", "--machine", "q35").stdout.encode())
    relaxng("domaincaps.rng").assertValid(i686)
    assert i686.findtext("arch") == "i686"
    assert i686.findtext("path") == "/usr/bin/qemu-system-i386"
    assert i686.findtext("machine", "").startswith("pc-q35-")


def test_domcapabilities_bad_arch(embed_root: Path) -> None:
    proc = pyvirsh("-c", embed(embed_root), "domcapabilities", "--arch", "nosucharch", check=False)
    assert proc.returncode == 1
    assert proc.stdout == "\n"  # virsh's blank line after a command, failed or not
    assert "nosucharch" in proc.stderr


@pytest.mark.parametrize("uri, expect", [
    ("qemu:///embed", "root"),
    ("qemu:///embed?root=relative/dir", "relative"),
    ("qemu:///nowhere", "/nowhere"),
    ("xen:///system", "xen"),
    ("qemu:///system?bogus=1", "bogus"),
])
def test_bad_uri(uri: str, expect: str) -> None:
    proc = pyvirsh("-c", uri, "uri", check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: failed to connect to the hypervisor\nerror: ")
    assert expect in proc.stderr


def test_embed_root_too_long_for_sockets_creates_nothing(embed_root: Path) -> None:
    tmp_path = embed_root.parent
    root = tmp_path / ("d" * (100 - len(str(tmp_path))))
    proc = pyvirsh("-c", embed(root), "uri", check=False)
    assert proc.returncode == 1
    assert "108" in proc.stderr
    assert not root.exists()
    # One byte under the limit is fine; one over is not.
    tail = len("/lib/qemu/domain-2147483647-") + 20 + len("/monitor.sock")
    fits = tmp_path / ("f" * (107 - tail - len(str(tmp_path)) - 1))
    assert len(str(fits)) + tail == 107
    assert pyvirsh("-c", embed(fits), "uri").returncode == 0
    over = Path(str(fits) + "x")
    assert pyvirsh("-c", embed(over), "uri", check=False).returncode == 1
    assert not over.exists()


def test_bad_qemu_conf_names_file_line_and_key_and_creates_nothing(embed_root: Path) -> None:
    root = embed_root
    (root / "etc").mkdir(parents=True)
    conf = root / "etc" / "qemu.conf"
    conf.write_text('# test\nuser = "root"\ndynamic_ownership = "yes"\n')
    proc = pyvirsh("-c", embed(root), "uri", check=False)
    assert proc.returncode == 1
    assert f"{conf}:3" in proc.stderr
    assert "dynamic_ownership" in proc.stderr
    assert sorted(p.name for p in root.iterdir()) == ["etc"]
    assert sorted(p.name for p in (root / "etc").iterdir()) == ["qemu.conf"]


HOLDER = """
import sys, pyvirt.connection as c
conn = c.open(sys.argv[1]); print("open", flush=True); sys.stdin.read(); conn.close()
"""


def test_root_in_use_by_another_process(embed_root: Path) -> None:
    uri = embed(embed_root)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, uri], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        proc = pyvirsh("-c", uri, "uri", check=False)
        assert proc.returncode == 1
        assert f"in use by pid {holder.pid}" in proc.stderr
    finally:
        holder.communicate("")
    assert pyvirsh("-c", uri, "uri").stdout == uri + "\n\n"


def test_same_process_shares_the_driver(embed_root: Path) -> None:
    import pyvirt.connection as libvirt

    uri = embed(embed_root)
    first = libvirt.open(uri)
    second = libvirt.open(uri)
    assert first.driver is second.driver
    first.close()
    assert second.getURI() == uri
    second.close()
    third = libvirt.open(uri)  # the lock was released with the last connection
    third.close()


def test_unknown_command() -> None:
    proc = pyvirsh("frobnicate", check=False)
    assert proc.returncode == 1
    assert "unknown command: 'frobnicate'" in proc.stderr


def test_unknown_qemu_conf_key_is_reported_not_fatal(embed_root: Path) -> None:
    (embed_root / "etc").mkdir(parents=True)
    conf = embed_root / "etc" / "qemu.conf"
    conf.write_text('user = "root"\nvnc_lisen = "0.0.0.0"\n')
    proc = pyvirsh("-c", embed(embed_root), "uri")
    assert proc.stdout == embed(embed_root) + "\n\n"
    assert f"{conf}:2: unknown key 'vnc_lisen'" in proc.stderr
    assert "vnc_listen" in proc.stderr  # the suggestion


def test_session_instance_lives_in_xdg_dirs(tmp_path: Path) -> None:
    """qemu:///session goes through the session pyvirtd, started on demand, whose instance
    lives in the caller's XDG directories (root's too)."""
    from session_support import stop_session_daemons

    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    try:
        assert pyvirsh("-c", "qemu:///session", "uri", env=env).stdout == "qemu:///session\n\n"
        assert (tmp_path / "cfg" / "pyvirt" / "qemu").is_dir()
        assert (tmp_path / "cache" / "pyvirt" / "qemu" / "cache").is_dir()
        assert (tmp_path / "rt" / "pyvirt" / "qemu" / "run").is_dir()
        assert (tmp_path / "rt" / "pyvirt" / "libvirt-sock").is_socket()
        assert not (tmp_path / "home").exists()
    finally:
        stopped = stop_session_daemons(tmp_path / "rt")
    assert len(stopped) == 1
    assert not (tmp_path / "rt" / "pyvirt" / "libvirt-sock").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to an unprivileged user")
def test_system_instance_needs_root(tmp_path: Path) -> None:
    # Debian's python3 and pyvirt's source tree, since the venv's interpreter may live under a
    # home directory that 'nobody' cannot enter; this path imports nothing outside pyvirt.
    prefix = tmp_path / "prefix"
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.run(["/usr/bin/python3", "-m", "pyvirt.cli.pyvirsh", "-c", "qemu:///system", "uri"],
                          capture_output=True, text=True, user="nobody", group="nogroup", extra_groups=[],
                          env={"PYVIRT_PREFIX": str(prefix), "PYTHONPATH": str(src)}, cwd="/")
    assert proc.returncode == 1
    assert "needs root" in proc.stderr and "qemu:///session" in proc.stderr
    assert not prefix.exists()


DOMAIN = ("<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><memory>65536</memory>"
          "<os><type>hvm</type></os>{extra}</domain>")
UUID_A = "11111111-2222-3333-4444-555555555555"
UUID_B = "11111111-2222-3333-4444-666666666666"


def define_file(tmp: Path, text: str) -> Path:
    path = tmp / "dom.xml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expect", [
    ("<domain type='qemu'><name>x</name", "XML"),
    ("<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a SYSTEM 'file:///etc/passwd'>]>"
     "<domain type='qemu'><name>&a;</name><memory>65536</memory><os><type>hvm</type></os></domain>",
     "entit"),
    (DOMAIN.format(name="a/b", uuid=UUID_A, extra=""), "name"),
    (DOMAIN.format(name="x", uuid="not-a-uuid", extra=""), "uuid"),
    (DOMAIN.format(name="x", uuid=UUID_A, extra="<currentMemory>99999999</currentMemory>"),
     "currentMemory"),
    (DOMAIN.format(name="x", uuid=UUID_A, extra="<vcpu>0</vcpu>"), "vcpu"),
    (DOMAIN.format(name="x", uuid=UUID_A, extra="<devices><interface type='user'>"
                   "<mac address='01:00:00:00:00:01'/></interface></devices>"), "multicast"),
])
def test_define_bad_input_stores_nothing(embed_root: Path, tmp_path: Path, text: str, expect: str) -> None:
    path = define_file(tmp_path, text)
    proc = pyvirsh("-c", embed(embed_root), "define", str(path), check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: Failed to define domain from {path}\nerror: ")
    assert expect.lower() in proc.stderr.lower()
    assert list((embed_root / "etc" / "qemu").iterdir()) == []


def test_define_duplicates_are_refused_and_keep_the_original(embed_root: Path, tmp_path: Path) -> None:
    uri = embed(embed_root)
    pyvirsh("-c", uri, "define", str(define_file(tmp_path, DOMAIN.format(name="a", uuid=UUID_A,
                                                                          extra=""))))
    stored = embed_root / "etc" / "qemu" / "a.xml"
    original = stored.read_text()
    same_name = pyvirsh("-c", uri, "define",
                        str(define_file(tmp_path, DOMAIN.format(name="a", uuid=UUID_B, extra=""))),
                        check=False)
    assert same_name.returncode == 1 and UUID_A in same_name.stderr
    same_uuid = pyvirsh("-c", uri, "define",
                        str(define_file(tmp_path, DOMAIN.format(name="b", uuid=UUID_A, extra=""))),
                        check=False)
    assert same_uuid.returncode == 1 and "'a'" in same_uuid.stderr
    assert sorted(p.name for p in stored.parent.iterdir()) == ["a.xml"]
    assert stored.read_text() == original
    # Redefining with the same name and UUID updates the definition.
    pyvirsh("-c", uri, "define", str(define_file(tmp_path, DOMAIN.format(
        name="a", uuid=UUID_A, extra="<description>v2</description>"))))
    assert "<description>v2</description>" in pyvirsh("-c", uri, "dumpxml", "a").stdout


def test_define_validate_rejects_unknown_elements(embed_root: Path, tmp_path: Path) -> None:
    text = DOMAIN.format(name="v", uuid=UUID_A, extra="<bogus/>")
    path = define_file(tmp_path, text)
    strict = pyvirsh("-c", embed(embed_root), "define", "--validate", str(path), check=False)
    assert strict.returncode == 1 and "bogus" in strict.stderr
    assert list((embed_root / "etc" / "qemu").iterdir()) == []
    assert pyvirsh("-c", embed(embed_root), "define", str(path)).returncode == 0
    assert "bogus" not in pyvirsh("-c", embed(embed_root), "dumpxml", "v").stdout
