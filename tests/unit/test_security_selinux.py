# SPDX-License-Identifier: LGPL-2.1-or-later
"""The SELinux (sVirt) driver.

This machine's kernel has no SELinux, so nothing here is enforced. The labelling logic runs over two
label stores: :class:`XattrLabelStore`, the real one, writing ``security.selinux`` on real files
(a kernel without SELinux stores that attribute like any other, so the bytes libselinux would read
are checked), and :class:`MemoryLabelStore`, the stand-in for hosts whose file systems refuse the
attribute, with the same semantics (labels belong to the inode, a missing file cannot be labelled,
a malformed context is refused). The process label is checked as far as it can be without
SELinux: the exec shim really tries to write it and, here, fails loudly instead of running QEMU
unconfined.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyvirt.errors import (
    ConfigUnsupported,
    InternalError,
    NotSupported,
    OperationFailed,
    OperationInvalid,
    XMLError,
    codes,
)
from pyvirt.security.dac import DACDriver
from pyvirt.security.manager import NoneDriver, SecurityStack, build_security_stack
from pyvirt.security.privileges import SHIM_SETUP_FAILED, ChildCredentials, wrap_command
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind
from pyvirt.security.seclabel import (
    SecLabelSpec,
    gen_labels,
    live_seclabels,
    release_labels,
    reserve_labels,
    secmodels,
    to_xml,
)
from pyvirt.security.selinux import (
    REMEMBER_XATTR,
    SELINUX_XATTR,
    Context,
    LabelStore,
    MemoryLabelStore,
    SELinuxContexts,
    SELinuxDriver,
    XattrLabelStore,
    selinux_status,
)
from pyvirt.xml.base import format_element
from pyvirt.xml.domain_os import SecLabel

ORIG = "system_u:object_r:user_home_t:s0"
UUID1 = "11111111-2222-3333-4444-555555555555"
UUID2 = "66666666-7777-8888-9999-aaaaaaaaaaaa"


def _xattrs_work(d: Path) -> bool:
    if os.geteuid() != 0:
        return False  # trusted.* (the remembered label) is root's
    probe = d / ".probe"
    probe.touch()
    try:
        os.setxattr(probe, SELINUX_XATTR, b"system_u:object_r:tmp_t:s0\0")
        os.setxattr(probe, REMEMBER_XATTR, b"x")
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return False
        raise
    finally:
        probe.unlink()
    return True


@pytest.fixture(params=["memory", "xattr"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LabelStore:
    if request.param == "memory":
        return MemoryLabelStore()
    if not _xattrs_work(tmp_path):
        pytest.skip("the real store needs root and a file system with security.* and trusted.* "
                    "extended attributes")
    return XattrLabelStore()


def _file(d: Path, name: str, store: LabelStore, label: str | None = ORIG) -> str:
    p = d / name
    p.write_bytes(b"")
    if label is not None:
        store.set(str(p), label)
    return str(p)


def _ctx(name: str, uuid: str, *resources: Resource) -> DomainSecurityContext:
    return DomainSecurityContext(name, uuid, 0, 0, (), resources)


def _level(label: str) -> str:
    return Context.parse(label).level


# --- contexts and the host ----------------------------------------------------------------------

def test_context_parse_keeps_the_whole_level() -> None:
    c = Context.parse("system_u:system_r:svirt_t:s0:c1,c2")
    assert (c.user, c.role, c.type, c.level) == ("system_u", "system_r", "svirt_t", "s0:c1,c2")
    assert c.sensitivity == "s0" and c.categories == "c1,c2"
    assert str(c.with_level("s0")) == "system_u:system_r:svirt_t:s0"
    for bad in ("svirt_t", "a::b", "a:b:c d", "a:b:c\n"):
        with pytest.raises(ValueError, match="not an SELinux context"):
            Context.parse(bad)


def test_status_reads_selinuxfs_and_proc_filesystems(tmp_path: Path) -> None:
    sysfs = tmp_path / "selinux"
    sysfs.mkdir()
    fs = tmp_path / "filesystems"
    fs.write_text("nodev\tsysfs\next4\n")
    assert "no SELinux" in (selinux_status(str(sysfs), str(fs)) or "")
    fs.write_text("nodev\tsysfs\nnodev\tselinuxfs\n")
    assert "not mounted" in (selinux_status(str(sysfs), str(fs)) or "")
    (sysfs / "enforce").write_text("1")
    assert selinux_status(str(sysfs), str(fs)) is None


@pytest.mark.skipif(selinux_status() is None, reason="this host runs SELinux")
def test_asking_for_selinux_on_a_host_without_it_is_a_clear_error() -> None:
    with pytest.raises(NotSupported) as e:
        build_security_stack(("selinux",), DACDriver())
    assert e.value.domain == codes.VIR_FROM_SECURITY
    assert "not usable on this host" in str(e.value)
    assert 'security_driver = "none"' in str(e.value)
    # probing picks nothing it cannot use
    assert build_security_stack(None, DACDriver()).models[0] != "selinux"


def test_contexts_come_from_the_host_policy_when_it_has_them(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("SELINUX=enforcing\nSELINUXTYPE=mls\n")
    ctx = tmp_path / "mls" / "contexts"
    ctx.mkdir(parents=True)
    (ctx / "virtual_domain_context").write_text("system_u:system_r:my_t:s0\nsystem_u:system_r:my_tcg_t:s0\n")
    (ctx / "virtual_image_context").write_text("system_u:object_r:my_image_t:s0\n")
    c = SELinuxContexts.from_host(str(tmp_path))
    assert (c.domain, c.alt_domain, c.file) == ("system_u:system_r:my_t:s0",
                                                "system_u:system_r:my_tcg_t:s0",
                                                "system_u:object_r:my_image_t:s0")
    assert c.content == SELinuxContexts().content  # the line the policy lacks keeps the default
    assert SELinuxContexts.from_host(str(tmp_path / "none")) == SELinuxContexts()


# --- labels --------------------------------------------------------------------------------------

def test_dynamic_labels_are_unique_mcs_pairs_of_the_right_type(store: LabelStore) -> None:
    drv = SELinuxDriver(store)
    a = drv.gen_label(_ctx("a", UUID1))
    b = drv.gen_label(_ctx("b", UUID2), virt_type="kvm")
    ca, cb = Context.parse(a.label or ""), Context.parse(b.label or "")
    assert (ca.user, ca.role, ca.type) == ("system_u", "system_r", "svirt_tcg_t")
    assert cb.type == "svirt_t"
    assert ca.level != cb.level
    for c in (ca, cb):
        x, y = (int(p[1:]) for p in c.categories.split(","))
        assert c.sensitivity == "s0" and 0 <= x < y < 1024
    assert a.imagelabel == f"system_u:object_r:svirt_image_t:{ca.level}"
    assert a.relabel and a.type == "dynamic"


def test_files_get_the_labels_of_their_use_and_exclusive_ones_are_given_back(
        tmp_path: Path, store: LabelStore) -> None:
    disk = _file(tmp_path, "disk.qcow2", store)
    shared = _file(tmp_path, "shared.img", store)
    ro = _file(tmp_path, "ro.img", store)
    kernel = _file(tmp_path, "vmlinuz", store)
    log = str(tmp_path / "serial.log")  # missing: created, as DAC would, so that it can be labelled
    ctx = _ctx("a", UUID1, Resource(disk), Resource(shared, shared=True), Resource(ro, readonly=True),
               Resource(kernel, ResourceKind.KERNEL), Resource(log, ResourceKind.SERIAL_LOG))
    drv = SELinuxDriver(store)
    spec = drv.gen_label(ctx)
    drv.set_all(ctx)
    assert store.get(disk) == spec.imagelabel
    assert store.get(log) == spec.imagelabel
    assert store.get(shared) == "system_u:object_r:svirt_image_t:s0"
    assert store.get(ro) == store.get(kernel) == "system_u:object_r:virt_content_t:s0"
    if isinstance(store, XattrLabelStore):  # the bytes libselinux reads
        assert os.getxattr(disk, SELINUX_XATTR) == (spec.imagelabel or "").encode() + b"\0"
    assert drv.restore_all(ctx) == []
    assert store.get(disk) == ORIG and store.remembered(disk) is None
    assert store.get(log) is None  # it had no label here (a kernel without SELinux)
    # generic labels stay: another domain may be using those files
    assert store.get(shared) == "system_u:object_r:svirt_image_t:s0"
    assert store.get(ro) == "system_u:object_r:virt_content_t:s0"
    drv.release_label(ctx)
    assert drv.label_of(UUID1) is None and drv.levels_in_use() == {}


class FailingStore(MemoryLabelStore):
    """Refuses the n-th label write, as a file system that will not take one would."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def set(self, path: str, label: str) -> None:
        if self.writes + 1 == self.fail_at:
            self.writes += 1
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        super().set(path, label)


def test_a_failure_half_way_puts_every_label_back(tmp_path: Path) -> None:
    store = FailingStore(fail_at=0)
    files = [_file(tmp_path, f"d{i}.img", store) for i in range(3)]
    log = str(tmp_path / "created.log")
    store.fail_at = store.writes + 3  # the third disk fails
    ctx = _ctx("a", UUID1, Resource(log, ResourceKind.LOG), *(Resource(f) for f in files))
    drv = SELinuxDriver(store)
    drv.gen_label(ctx)
    with pytest.raises(OperationFailed, match=r"cannot label .*d1.img.*Read-only file system"):
        drv.set_all(ctx)
    assert [store.get(f) for f in files] == [ORIG] * 3
    assert all(store.remembered(f) is None for f in files)
    assert not os.path.exists(log)  # the file created for the log is gone again


def test_a_stack_transaction_undoes_labels_when_the_caller_fails(tmp_path: Path) -> None:
    store = MemoryLabelStore()
    disk = _file(tmp_path, "disk.img", store)
    ctx = _ctx("a", UUID1, Resource(disk))
    drv = SELinuxDriver(store)
    stack = SecurityStack([drv, NoneDriver()])
    drv.gen_label(ctx)
    with pytest.raises(RuntimeError), stack.transaction():
        stack.set_all(ctx)
        assert store.get(disk) != ORIG
        raise RuntimeError("QEMU failed to start")
    assert store.get(disk) == ORIG and store.remembered(disk) is None


def test_an_image_labelled_for_another_running_domain_is_refused(tmp_path: Path) -> None:
    store = MemoryLabelStore()
    disk = _file(tmp_path, "disk.img", store)
    drv = SELinuxDriver(store)
    a, b = _ctx("a", UUID1, Resource(disk)), _ctx("b", UUID2, Resource(disk))
    drv.gen_label(a)
    drv.gen_label(b)
    drv.set_all(a)
    with pytest.raises(OperationInvalid, match="labelled for running domain 'a'.*<shareable/>"):
        drv.set_all(b)
    # once 'a' is gone the file is free again
    drv.restore_all(a)
    drv.release_label(a)
    drv.set_all(b)


def test_missing_disks_are_refused_before_any_change(tmp_path: Path) -> None:
    store = MemoryLabelStore()
    disk = _file(tmp_path, "disk.img", store)
    ctx = _ctx("a", UUID1, Resource(disk), Resource(str(tmp_path / "nope.img")))
    drv = SELinuxDriver(store)
    drv.gen_label(ctx)
    with pytest.raises(OperationInvalid, match="nope.img does not exist"):
        drv.set_all(ctx)
    assert store.get(disk) == ORIG and store.writes == 1


def test_hotplug_labels_one_image_and_gives_it_back(tmp_path: Path) -> None:
    store = MemoryLabelStore()
    disk = _file(tmp_path, "hot.img", store)
    ctx = _ctx("a", UUID1)
    drv = SELinuxDriver(store)
    spec = drv.gen_label(ctx)
    drv.set_all(ctx)
    drv.set_image(ctx, Resource(disk))
    assert store.get(disk) == spec.imagelabel
    assert drv.restore_image(ctx, Resource(disk)) == []
    assert store.get(disk) == ORIG


def test_static_labels_are_used_as_given_and_relabel_only_when_asked(tmp_path: Path) -> None:
    store = MemoryLabelStore()
    disk = _file(tmp_path, "disk.img", store)
    ctx = _ctx("a", UUID1, Resource(disk))
    label = "system_u:system_r:svirt_t:s0:c10,c20"
    drv = SELinuxDriver(store)
    spec = drv.gen_label(ctx, [SecLabel(type="static", model="selinux", label=label)])
    assert (spec.type, spec.relabel, spec.label, spec.imagelabel) == ("static", False, label, None)
    drv.set_all(ctx)
    assert store.get(disk) == ORIG  # relabel='no' is the default of static labels
    creds = drv.set_process_label(ctx, ChildCredentials())
    assert creds.selinux_exec_label == label
    drv.release_label(ctx)

    spec = drv.gen_label(ctx, [SecLabel(type="static", model="selinux", relabel=True, label=label)])
    assert spec.imagelabel == "system_u:object_r:svirt_image_t:s0:c10,c20"
    drv.set_all(ctx)
    assert store.get(disk) == spec.imagelabel
    # a dynamic label never takes the categories of a running static one
    rng = random.Random(0)
    small = SELinuxDriver(store, categories=3, rng=rng)
    small.gen_label(_ctx("s", UUID1), [SecLabel(type="static", model="selinux",
                                                label="system_u:system_r:svirt_t:s0:c0,c1")])
    small.gen_label(_ctx("t", UUID2), [SecLabel(type="static", model="selinux",
                                                label="system_u:system_r:svirt_t:s0:c0,c2")])
    got = small.gen_label(_ctx("d", "00000000-0000-0000-0000-000000000001"))
    assert _level(got.label or "") == "s0:c1,c2"
    with pytest.raises(OperationFailed, match="every one of the 3 SELinux category pairs is in use"):
        small.gen_label(_ctx("e", "00000000-0000-0000-0000-000000000002"))


def test_unconfined_domains_and_the_rules_of_seclabel(tmp_path: Path) -> None:
    store = MemoryLabelStore()
    disk = _file(tmp_path, "disk.img", store)
    ctx = _ctx("a", UUID1, Resource(disk))
    drv = SELinuxDriver(store)
    spec = drv.gen_label(ctx, [SecLabel(type="none")])
    assert not spec.confined
    drv.set_all(ctx)
    assert store.get(disk) == ORIG
    assert drv.set_process_label(ctx, ChildCredentials()) == ChildCredentials()
    drv.release_label(ctx)
    assert not SELinuxDriver(store, default_confined=False).gen_label(ctx).confined
    with pytest.raises(ConfigUnsupported, match="unconfined guests are not allowed"):
        SELinuxDriver(store, require_confined=True).gen_label(ctx, [SecLabel(type="none")])
    with pytest.raises(XMLError, match="must relabel"):
        drv.gen_label(ctx, [SecLabel(type="dynamic", model="selinux", relabel=False)])
    with pytest.raises(XMLError, match="needs a <label>"):
        drv.gen_label(ctx, [SecLabel(type="static", model="selinux")])
    with pytest.raises(OperationInvalid, match="not an SELinux context"):
        drv.gen_label(ctx, [SecLabel(type="static", model="selinux", label="garbage")])
    # a label of another model is not ours
    assert drv.gen_label(ctx, [SecLabel(type="static", model="apparmor", label="x")]).type == "dynamic"


def test_basic_model_runs_qemu_t_and_requires_virt_image_t(tmp_path: Path) -> None:
    store = MemoryLabelStore()
    good = _file(tmp_path, "good.img", store, "system_u:object_r:virt_image_t:s0")
    bad = _file(tmp_path, "bad.img", store)
    drv = SELinuxDriver(store, mode="basic")
    ctx = _ctx("a", UUID1, Resource(good))
    spec = drv.gen_label(ctx)
    assert spec.label == "system_u:system_r:qemu_t:s0"
    drv.set_all(ctx)
    assert store.get(good) == "system_u:object_r:virt_image_t:s0" and store.writes == 2
    assert drv.set_process_label(ctx, ChildCredentials()).selinux_exec_label == spec.label
    drv.release_label(ctx)
    ctx = _ctx("a", UUID1, Resource(bad))
    drv.gen_label(ctx)
    with pytest.raises(OperationInvalid, match=f"fix: chcon -t virt_image_t {bad}"):
        drv.set_all(ctx)


# --- the process, the XML, the capabilities -------------------------------------------------------

def test_the_exec_label_reaches_the_shim_with_the_dac_identity(tmp_path: Path) -> None:
    drv = SELinuxDriver(MemoryLabelStore())
    stack = SecurityStack([drv, DACDriver()])
    ctx = DomainSecurityContext("a", UUID1, 107, 108, (108,))
    spec = drv.gen_label(ctx)
    creds = stack.child_credentials(ctx)
    assert creds.selinux_exec_label == spec.label
    if os.geteuid() == 0:  # DAC switches identity only from root; the exec label goes along
        assert (creds.uid, creds.gid, creds.groups) == (107, 108, (108,))
    assert ChildCredentials.from_options(creds.to_options()) == creds


@pytest.mark.skipif(selinux_status() is None, reason="this host runs SELinux")
def test_the_shim_refuses_to_run_qemu_when_the_exec_label_cannot_be_set() -> None:
    # a kernel without SELinux rejects the write: QEMU must not run unconfined instead
    argv = wrap_command(["/bin/true"], ChildCredentials(selinux_exec_label="system_u:system_r:svirt_t:s0"))
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert res.returncode == SHIM_SETUP_FAILED
    assert "cannot set the SELinux exec label system_u:system_r:svirt_t:s0" in res.stderr


def test_live_xml_and_capabilities(tmp_path: Path) -> None:
    drv = SELinuxDriver(MemoryLabelStore())
    stack = SecurityStack([drv, DACDriver()])
    ctx = _ctx("a", UUID1)
    [spec] = gen_labels(stack, ctx, [])
    [elem] = live_seclabels(stack, UUID1)
    node = elem.to_node()
    assert node is not None
    text = format_element(node)
    assert text.startswith("<seclabel type='dynamic' model='selinux' relabel='yes'>")
    assert f"<label>{spec.label}</label>" in text and f"<imagelabel>{spec.imagelabel}</imagelabel>" in text
    static = to_xml(SecLabelSpec("selinux", "static", False, "a:b:c:s0")).to_node()
    assert static is not None
    assert format_element(static) == ("<seclabel type='static' model='selinux' relabel='no'>\n"
                                      "  <label>a:b:c:s0</label>\n</seclabel>\n")
    assert secmodels(stack, "+0:+0") == [
        ("selinux", "0", {"kvm": "system_u:system_r:svirt_t:s0", "qemu": "system_u:system_r:svirt_tcg_t:s0"}),
        ("dac", "0", {"kvm": "+0:+0", "qemu": "+0:+0"})]
    release_labels(stack, ctx)
    assert live_seclabels(stack, UUID1) == []


# --- reconnecting and uniqueness --------------------------------------------------------------------

def test_a_restarted_driver_reserves_the_labels_of_running_domains() -> None:
    first = SELinuxDriver(MemoryLabelStore(), categories=4, rng=random.Random(1))
    a = _ctx("a", UUID1)
    spec = first.gen_label(a)
    live = [to_xml(spec)]
    # the driver restarts: a new instance learns the running domain's label from its live XML
    second = SELinuxDriver(MemoryLabelStore(), categories=4, rng=random.Random(1))
    stack = SecurityStack([second, NoneDriver()])
    reserve_labels(stack, a, live)
    assert second.label_of(UUID1) == spec
    others = [second.gen_label(_ctx(f"d{i}", f"00000000-0000-0000-0000-00000000000{i}")) for i in range(5)]
    assert _level(spec.label or "") not in {_level(o.label or "") for o in others}
    with pytest.raises(OperationInvalid, match="already used by domain 'd0'"):
        second.reserve_label(_ctx("x", UUID2), others[0])
    with pytest.raises(InternalError, match="already has an SELinux label"):
        second.reserve_label(a, spec)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["start", "stop", "restart"]), st.integers(0, 7)),
                    max_size=80),
       seed=st.integers(0, 2**32 - 1))
def test_running_domains_never_share_categories(ops: list[tuple[str, int]], seed: int) -> None:
    # 5 categories: 10 pairs for up to 8 domains, so that a wrong allocator collides quickly
    rng = random.Random(seed)
    drv = SELinuxDriver(MemoryLabelStore(), categories=5, rng=rng)
    running: dict[int, SecLabelSpec] = {}

    def ctx(i: int) -> DomainSecurityContext:
        return _ctx(f"d{i}", f"00000000-0000-0000-0000-{i:012d}")

    for op, i in ops:
        if op == "start" and i not in running:
            running[i] = drv.gen_label(ctx(i))
        elif op == "stop" and i in running:
            drv.release_label(ctx(i))
            del running[i]
        elif op == "restart":
            drv = SELinuxDriver(MemoryLabelStore(), categories=5, rng=rng)
            for j, spec in running.items():
                drv.reserve_label(ctx(j), spec)
        levels = [_level(s.label or "") for s in running.values()]
        assert len(levels) == len(set(levels))
        assert {lv: set(u) for lv, u in drv.levels_in_use().items()} == {
            _level(s.label or ""): {ctx(j).uuid} for j, s in running.items()}
