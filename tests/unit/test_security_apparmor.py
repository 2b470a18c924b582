# SPDX-License-Identifier: LGPL-2.1-or-later
"""The AppArmor driver: profile text, the driver's files and transactions, the helper command.

This machine's kernel has no AppArmor, so no profile is loaded here. The loader the driver is given
in these tests is the real ``apparmor_parser`` in compile-only mode (``-Q -K -T``: the whole policy
is built, nothing goes to the kernel); loading for real is checked to fail with a clear error.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pyvirt.cli import aa_helper
from pyvirt.errors import InternalError, NotSupported, OperationFailed, OperationInvalid, codes
from pyvirt.security.apparmor import (
    AppArmorDriver,
    ParserLoader,
    ProfileLoader,
    ProfileSet,
    RuntimePath,
    apparmor_status,
    file_rules,
    profile_name,
    quote_path,
)
from pyvirt.security.dac import DACDriver
from pyvirt.security.manager import NoneDriver, SecurityStack, build_security_stack
from pyvirt.security.privileges import SHIM_SETUP_FAILED, ChildCredentials, wrap_command
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind
from pyvirt.security.seclabel import gen_labels, live_seclabels, secmodels
from pyvirt.xml.domain_os import SecLabel

UUID = "8d1e3e2a-1111-4c4c-9d9d-0123456789ab"
PROFILE = f"libvirt-{UUID}"
HAVE_PARSER = shutil.which("apparmor_parser") is not None or os.path.exists("/usr/sbin/apparmor_parser")
needs_parser = pytest.mark.skipif(not HAVE_PARSER, reason="apparmor_parser is not installed (Debian "
                                                          "package apparmor)")


class RecordingLoader(ProfileLoader):
    """Records what would be loaded, and fails on demand; for the transaction tests only (the
    profile text itself is compiled by the tests that use ParserLoader)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[str, str]] = []

    def load(self, profile: Path) -> None:
        if self.fail:
            raise OperationFailed("apparmor_parser refused the profile (test)")
        files = profile.parent / (profile.name + ".files")
        self.calls.append(("load", profile.read_text() + files.read_text()))

    def unload(self, profile: Path) -> None:
        self.calls.append(("unload", profile.name))


def _ctx(*resources: Resource, name: str = "a") -> DomainSecurityContext:
    return DomainSecurityContext(name, UUID, 0, 0, (), resources)


# --- profile text ----------------------------------------------------------------------------------

def test_paths_are_quoted_and_every_pattern_character_escaped() -> None:
    assert quote_path("/var/lib/img/disk.qcow2") == '"/var/lib/img/disk.qcow2"'
    assert quote_path('/i/a*b?c[d]e{f}g^h') == r'"/i/a\*b\?c\[d\]e\{f\}g\^h"'
    assert quote_path('/i/sp ace/q"uote\\b') == r'"/i/sp ace/q\"uote\\b"'
    assert quote_path("/i/@{HOME}") == r'"/i/\@\{HOME\}"'
    assert quote_path("/i/x, /etc/shadow r") == '"/i/x, /etc/shadow r"'  # inside quotes: one path


@pytest.mark.parametrize(("path", "what"), [("/i/a\nb", "a newline"), ("/i/a\0b", "a NUL byte"),
                                            ("/i/a\tb", "control character"), ("rel/x", "absolute")])
def test_paths_that_cannot_be_written_are_refused(path: str, what: str) -> None:
    with pytest.raises(ValueError, match=what):
        quote_path(path)


def test_profile_names_follow_libvirt_and_need_a_canonical_uuid() -> None:
    assert profile_name(UUID) == PROFILE
    for bad in ("x", UUID.upper(), UUID + "/../x", "../" + UUID):
        with pytest.raises(OperationInvalid, match="not a domain UUID"):
            profile_name(bad)


def test_file_rules_give_each_kind_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "real.img"
    target.touch()
    link = tmp_path / "link.img"
    link.symlink_to(target)
    rules = file_rules([Resource(str(link)), Resource("/i/ro.iso", ResourceKind.CDROM),
                        Resource("/i/k", ResourceKind.KERNEL), Resource("/i/s.log", ResourceKind.SERIAL_LOG),
                        Resource("/i/ro.img", readonly=True), Resource("/i/ro.img")],
                       [RuntimePath("/run/x/mon.sock"), RuntimePath("/var/lib/x/dom-1", "rwk", tree=True)])
    assert rules == [f'  "{link}" rwk,', f'  "{target}" rwk,', '  "/i/ro.iso" rk,', '  "/i/k" r,',
                     '  "/i/s.log" rw,', '  "/i/ro.img" rwk,',  # the most permissive use wins
                     '  "/run/x/mon.sock" rw,', '  "/var/lib/x/dom-1/" r,', '  "/var/lib/x/dom-1/**" rwk,']
    with pytest.raises(ValueError, match="letters of 'rwkml'"):
        RuntimePath("/x", "rwx")


# --- the driver ------------------------------------------------------------------------------------

@needs_parser
def test_set_all_writes_a_compiling_profile_and_restore_all_removes_it(tmp_path: Path) -> None:
    d = tmp_path / "profiles"
    disk = "/var/lib/images/weird *name?.qcow2"
    loader = ParserLoader(compile_only=True)
    drv = AppArmorDriver(ProfileSet(d), loader)
    ctx = _ctx(Resource(disk), Resource("/boot/vmlinuz", ResourceKind.KERNEL))
    spec = drv.gen_label(ctx, runtime=[RuntimePath(str(tmp_path / "mon.sock"))])
    assert (spec.type, spec.label, spec.imagelabel, spec.relabel) == ("dynamic", PROFILE, PROFILE, True)
    drv.set_all(ctx)
    profile, files = d / PROFILE, d / f"{PROFILE}.files"
    assert loader.loaded == {str(profile)}  # compiled by apparmor_parser
    text = profile.read_text()
    assert f"profile {PROFILE} flags=(attach_disconnected) {{" in text
    assert f'#include "{files}"' in text and f'#include "{d}/abstractions/pyvirt-qemu"' in text
    rules = files.read_text().splitlines()[1:]
    assert rules == [r'  "/var/lib/images/weird \*name\?.qcow2" rwk,', '  "/boot/vmlinuz" r,',
                     f'  "{tmp_path}/mon.sock" rw,']
    assert (d / "abstractions" / "pyvirt-qemu").exists()
    assert drv.restore_all(ctx) == []
    assert not profile.exists() and not files.exists() and loader.loaded == set()
    drv.release_label(ctx)
    assert drv.label_of(UUID) is None


@needs_parser
def test_hotplug_regenerates_the_files_and_reloads(tmp_path: Path) -> None:
    loader = ParserLoader(compile_only=True)
    drv = AppArmorDriver(ProfileSet(tmp_path), loader)
    ctx = _ctx(Resource("/i/disk.img"))
    drv.gen_label(ctx)
    drv.set_all(ctx)
    files = tmp_path / f"{PROFILE}.files"
    drv.set_image(ctx, Resource("/i/hot[1].img", readonly=True))
    assert r'  "/i/hot\[1\].img" rk,' in files.read_text().splitlines()
    assert drv.restore_image(ctx, Resource("/i/hot[1].img", readonly=True)) == []
    assert "hot" not in files.read_text() and '"/i/disk.img" rwk,' in files.read_text()


def test_a_failed_reload_keeps_the_previous_files(tmp_path: Path) -> None:
    loader = RecordingLoader()
    drv = AppArmorDriver(ProfileSet(tmp_path), loader)
    ctx = _ctx(Resource("/i/disk.img"))
    drv.gen_label(ctx)
    drv.set_all(ctx)
    files = tmp_path / f"{PROFILE}.files"
    before = files.read_text()
    loader.fail = True
    with pytest.raises(OperationFailed, match="refused"):
        drv.set_image(ctx, Resource("/i/hot.img"))
    assert files.read_text() == before
    loader.fail = False
    drv.set_image(ctx, Resource("/i/other.img"))  # the failed one was not remembered
    assert "hot" not in files.read_text() and "other" in files.read_text()


def test_a_failure_after_the_profile_rolls_it_back(tmp_path: Path) -> None:
    loader = RecordingLoader()
    drv = AppArmorDriver(ProfileSet(tmp_path), loader)
    stack = SecurityStack([drv, NoneDriver()])
    ctx = _ctx(Resource("/i/disk.img"))
    drv.gen_label(ctx)
    with pytest.raises(RuntimeError), stack.transaction():
        stack.set_all(ctx)
        assert (tmp_path / PROFILE).exists()
        raise RuntimeError("QEMU failed to start")
    assert not (tmp_path / PROFILE).exists() and not (tmp_path / f"{PROFILE}.files").exists()
    assert [c[0] for c in loader.calls] == ["load", "unload"]


def test_a_path_that_cannot_be_written_changes_nothing(tmp_path: Path) -> None:
    loader = RecordingLoader()
    drv = AppArmorDriver(ProfileSet(tmp_path), loader)
    ctx = _ctx(Resource("/i/ok.img"), Resource("/i/evil\n/etc/shadow rw,"))
    drv.gen_label(ctx)
    with pytest.raises(OperationInvalid, match="contains a newline") as e:
        drv.set_all(ctx)
    assert e.value.domain == codes.VIR_FROM_SECURITY
    assert list(tmp_path.iterdir()) == [] and loader.calls == []


def test_the_administrators_template_is_used_and_checked(tmp_path: Path) -> None:
    (tmp_path / "TEMPLATE.qemu").write_text("profile @PROFILE@ {\n  #include \"@FILES@\"\n  /custom r,\n}\n")
    drv = AppArmorDriver(ProfileSet(tmp_path), RecordingLoader())
    ctx = _ctx()
    drv.gen_label(ctx)
    profile, _ = drv.render(ctx)
    assert profile == f'profile {PROFILE} {{\n  #include "{tmp_path}/{PROFILE}.files"\n  /custom r,\n}}\n'
    (tmp_path / "TEMPLATE.qemu").write_text("profile x {}\n")
    with pytest.raises(OperationInvalid, match="lacks the @PROFILE@ marker"):
        drv.render(ctx)


def test_static_and_unconfined_labels_generate_no_profile(tmp_path: Path) -> None:
    loader = RecordingLoader()
    drv = AppArmorDriver(ProfileSet(tmp_path), loader)
    ctx = _ctx(Resource("/i/disk.img"))
    spec = drv.gen_label(ctx, [SecLabel(type="static", model="apparmor", label="my-qemu")])
    drv.set_all(ctx)
    assert list(tmp_path.iterdir()) == [] and loader.calls == []
    assert drv.set_process_label(ctx, ChildCredentials()).apparmor_exec_profile == "my-qemu"
    assert spec.relabel is False
    drv.release_label(ctx)
    drv.gen_label(ctx, [SecLabel(type="none")])
    drv.set_all(ctx)
    assert drv.set_process_label(ctx, ChildCredentials()) == ChildCredentials()
    with pytest.raises(InternalError, match="already has an AppArmor label"):
        drv.gen_label(ctx)


def test_the_child_execs_into_the_profile_with_the_dac_identity(tmp_path: Path) -> None:
    drv = AppArmorDriver(ProfileSet(tmp_path), RecordingLoader())
    stack = SecurityStack([drv, DACDriver()])
    ctx = DomainSecurityContext("a", UUID, 107, 108, (108,))
    [spec] = gen_labels(stack, ctx, [])
    creds = stack.child_credentials(ctx)
    assert creds.apparmor_exec_profile == PROFILE == spec.label
    if os.geteuid() == 0:
        assert (creds.uid, creds.gid) == (107, 108)
    assert ChildCredentials.from_options(creds.to_options()) == creds
    [elem] = live_seclabels(stack, UUID)
    assert (elem.type, elem.model, elem.relabel, elem.label, elem.imagelabel) == (
        "dynamic", "apparmor", True, PROFILE, PROFILE)
    assert secmodels(stack, "+0:+0")[0] == ("apparmor", "0", {})


@pytest.mark.skipif(apparmor_status() is None, reason="this host runs AppArmor")
def test_asking_for_apparmor_on_a_host_without_it_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match="'apparmor' is not usable on this host") as e:
        build_security_stack(("apparmor",), DACDriver(), apparmor_dir=str(tmp_path))
    assert 'security_driver = "none"' in str(e.value)
    # loading for real says the same, and nothing stays behind
    drv = AppArmorDriver(ProfileSet(tmp_path), ParserLoader())
    ctx = _ctx(Resource("/i/disk.img"))
    drv.gen_label(ctx)
    if HAVE_PARSER:
        with pytest.raises(NotSupported, match="kernel has no AppArmor"):
            drv.set_all(ctx)
        assert not (tmp_path / PROFILE).exists()
    assert build_security_stack(None, DACDriver(), apparmor_dir=str(tmp_path)).models[0] == "none"


# --- pyvirt-aa-helper --------------------------------------------------------------------------------

DOMAIN = f"""<domain type='qemu'>
  <name>t1</name>
  <uuid>{UUID}</uuid>
  <memory>65536</memory>
  <os><type arch='x86_64'>hvm</type><kernel>/i/vmlinuz</kernel><initrd>/i/initrd.img</initrd></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><source file='DISK'/><target dev='vda'/></disk>
    <disk type='file' device='cdrom'><source file='/i/ro.iso'/><target dev='hdc'/><readonly/></disk>
    <disk type='network' device='disk'>
      <source protocol='nbd' name='x'><host name='h'/></source><target dev='vdb'/>
    </disk>
    <serial type='file'><source path='/i/serial.log'/><log file='/i/console.log'/></serial>
    <channel type='unix'><source mode='bind' path='/i/agent.sock'/></channel>
  </devices>
</domain>
"""


def _helper(*args: str, xml: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = aa_helper.main([*args, *([str(xml)] if xml else [])], out, err)
    return rc, out.getvalue(), err.getvalue()


@needs_parser
def test_helper_probe_create_replace_remove(tmp_path: Path) -> None:
    xml = tmp_path / "dom.xml"
    xml.write_text(DOMAIN.replace("DISK", "/i/disk {1}.qcow2"))
    d = tmp_path / "profiles"
    rc, out, err = _helper("-d", str(d), "-p", xml=xml)
    assert (rc, err) == (0, "")
    assert f"profile {PROFILE} " in out and not d.exists()
    for rule in (r'"/i/disk \{1\}.qcow2" rwk,', '"/i/ro.iso" rk,', '"/i/vmlinuz" r,', '"/i/initrd.img" r,',
                 '"/i/serial.log" rw,', '"/i/console.log" rw,', '"/i/agent.sock" rw,',
                 '"/usr/bin/qemu-system-x86_64" rm,'):
        assert f"  {rule}\n" in out
    assert _helper("-d", str(d), "-c", xml=xml)[0] == 0
    files = d / f"{PROFILE}.files"
    assert files.read_text() == out.split(f"# --- {files} ---\n")[1]
    rc, _, err = _helper("-d", str(d), "-c", xml=xml)
    assert rc == 1 and "already exists; use -r" in err
    xml.write_text(DOMAIN.replace("DISK", "/i/new.qcow2"))
    assert _helper("-d", str(d), "-r", "-f", "/i/extra.img", xml=xml)[0] == 0
    assert '"/i/new.qcow2" rwk,' in files.read_text() and '"/i/extra.img" rw' in files.read_text()
    rc, _, err = _helper("-d", str(d), "-r", "-u", "00000000-0000-0000-0000-000000000000", xml=xml)
    assert rc == 1 and "is not the UUID of the domain XML" in err
    assert _helper("-d", str(d), "-R", "-u", UUID)[0] == 0
    assert not files.exists() and not (d / PROFILE).exists()


def test_helper_refuses_a_hostile_path_and_writes_nothing(tmp_path: Path) -> None:
    xml = tmp_path / "dom.xml"
    xml.write_text(DOMAIN.replace("DISK", "/i/x&#10;/etc/shadow rw,"))
    d = tmp_path / "profiles"
    rc, out, err = _helper("-d", str(d), "-c", "--no-check", xml=xml)
    assert rc == 1 and "contains a newline" in err and out == ""
    assert not (d / PROFILE).exists()


@pytest.mark.skipif(apparmor_status() is None, reason="this host runs AppArmor")
def test_the_shim_refuses_to_run_qemu_when_the_profile_cannot_be_entered() -> None:
    # a kernel without AppArmor rejects "exec PROFILE": QEMU must not run unconfined instead
    argv = wrap_command(["/bin/true"], ChildCredentials(apparmor_exec_profile=PROFILE))
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert res.returncode == SHIM_SETUP_FAILED
    assert f"cannot set the AppArmor exec profile {PROFILE}" in res.stderr
