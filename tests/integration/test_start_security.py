# SPDX-License-Identifier: LGPL-2.1-or-later
"""The security stack applied by a real domain start: DAC ownership, the QEMU user's identity and
capabilities, and the domain's cgroup with its device ACL, seen on the real QEMU process.

Runs as root with qemu.conf's user/group set to the unprivileged test account (scripts/setup.sh
creates it). The domains start paused (QEMU opens every disk at once) and need no guest kernel, whose
cache under /root the test user could not reach.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifecycle_support import nothing_left, status_pid, uri_of

import pyvirt as libvirt
from pyvirt import qemu as libvirt_qemu

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="a system-like instance needs root")]

#: the account tests/conftest.py's qemu_user fixture provides (not imported: with several conftest
#: modules in one run, "import conftest" may find another one)
QEMU_TEST_USER = "pyvirt-test-qemu"
OWNER = "trusted.pyvirt.security.dac"
REF = "trusted.pyvirt.security.ref_dac"
ORIG = (1234, 5678)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pv-sec-", dir="/var/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def losetup() -> Iterator[list[str]]:
    devices: list[str] = []
    yield devices
    for dev in devices:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def loop_device(backing: Path, devices: list[str]) -> str:
    subprocess.run(["truncate", "-s", "1M", str(backing)], check=True)
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True,
                         check=True).stdout.strip()
    devices.append(dev)
    return dev


def image(d: Path, name: str) -> Path:
    p = d / name
    p.write_bytes(b"\0" * 65536)
    os.chown(p, *ORIG)
    p.chmod(0o644)
    return p


def configure(root: Path, user: str) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "qemu.conf").write_text(f'user = "{user}"\ngroup = "{user}"\n')


def disk(path: str, dev: str, kind: str = "file", extra: str = "") -> str:
    attr = "file" if kind == "file" else "dev"
    return (f"<disk type='{kind}' device='disk'><driver name='qemu' type='raw'/>"
            f"<source {attr}='{path}'/><target dev='{dev}' bus='virtio'/>{extra}</disk>")


def domain(name: str, disks: str) -> str:
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            f"<os><type arch='x86_64'>hvm</type></os><devices>{disks}</devices></domain>")


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def owner(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_uid, st.st_gid


def xattrs(p: Path) -> dict[str, bytes]:
    return {n: os.getxattr(p, n) for n in os.listxattr(p) if n.startswith("trusted.pyvirt")}


def cgroups_of(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in ctrls.split(","):
            out[c] = path
    return out


def status(root: Path, name: str) -> dict[str, object]:
    data = json.loads((root / "run" / "qemu" / f"{name}.json").read_text())["data"]
    assert isinstance(data, dict)
    return data


def test_unprivileged_qemu_owns_its_disks_only_while_it_runs(root: Path, workdir: Path,
                                                            qemu_user: tuple[int, int]) -> None:
    configure(root, QEMU_TEST_USER)
    img = image(workdir, "a.img")
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(domain("s1", disk(str(img), "vda")))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        pid = status_pid(root, "s1")
        assert pid is not None
        st = proc_status(pid)
        # QEMU runs as the configured user, with no capability left and no way to gain one.
        assert st["Uid"].split()[:2] == [str(qemu_user[0])] * 2 and st["Gid"].split()[0] == str(qemu_user[1])
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[cap], 16) == 0, cap
        assert st["NoNewPrivs"] == "1"
        assert dom.messages() == []  # not tainted: QEMU runs unprivileged
        # DAC: the image is QEMU's while it runs, its true owner remembered.
        assert owner(img) == qemu_user
        assert xattrs(img)[OWNER] == b"+1234:+5678" and xattrs(img)[REF] == b"1"
        lib = Path(str(status(root, "s1")["lib_dir"]))
        assert owner(lib) == qemu_user
        # QEMU really opened it: the block layer shows it.
        blocks = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-block"}'))["return"]
        assert any(b.get("inserted", {}).get("file") == str(img) for b in blocks)
        # Its own cgroup in every controller, and the devices ACL of libvirt's default list.
        groups = cgroups_of(pid)
        assert groups["devices"].endswith("/dom-s1") and "/pyvirt/embed-" in groups["devices"]
        acl = Path(f"/sys/fs/cgroup/devices{groups['devices']}/devices.list").read_text().split("\n")
        assert "c 1:3 rw" in acl and "c 136:* rw" in acl and "a *:* rwm" not in acl
        dom.destroy()
        assert owner(img) == ORIG and xattrs(img) == {}
        assert not Path(f"/sys/fs/cgroup/devices{groups['devices']}").exists()
        nothing_left(root, "s1")
    finally:
        conn.close()


def test_root_qemu_keeps_its_capabilities(root: Path) -> None:
    configure(root, "root")
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(domain("s2", ""))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        pid = status_pid(root, "s2")
        assert pid is not None
        st = proc_status(pid)
        mine = proc_status(os.getpid())
        # Nothing changed: root QEMU has the capabilities its caller has. (no_new_privs is set by
        # QEMU itself here: its -sandbox seccomp filter asks for it.)
        assert st["Uid"].split()[0] == "0"
        for key in ("CapEff", "CapPrm", "CapBnd"):
            assert st[key] == mine[key], key
        assert int(st["CapEff"], 16) != 0
        # libvirt's taints, in its words and order (virsh dominfo prints them as Messages)
        assert dom.messages() == ["tainted: running with undesirable elevated privileges"]
        libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-status"}')
        assert dom.messages() == ["tainted: custom monitor control commands issued",
                                  "tainted: running with undesirable elevated privileges"]
        log = (root / "log" / "qemu" / "s2.log").read_text()
        assert "is tainted: high-privileges" in log and "is tainted: custom-monitor" in log
        dom.destroy()
        assert dom.messages() == []
        nothing_left(root, "s2")
    finally:
        conn.close()


def test_a_directory_qemu_cannot_search_fails_the_start_before_qemu_runs(
        root: Path, workdir: Path, qemu_user: tuple[int, int]) -> None:
    configure(root, QEMU_TEST_USER)
    private = workdir / "home"
    private.mkdir(mode=0o700)
    img = image(private, "b.img")
    other = image(workdir, "c.img")
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(domain("s3", disk(str(other), "vda") + disk(str(img), "vdb")))
        with pytest.raises(libvirt.libvirtError) as exc:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        text = str(exc.value)
        assert str(private) in text and f"chmod o+x {private}" in text, text
        # Nothing changed: not the disk labelled before the failing one, no QEMU, no cgroup.
        assert owner(other) == ORIG and xattrs(other) == {} and owner(img) == ORIG
        assert dom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED]
        nothing_left(root, "s3")
        assert not list(Path("/sys/fs/cgroup/devices/pyvirt").glob("*/dom-s3"))
    finally:
        conn.close()


def test_a_readonly_image_shared_by_two_domains_is_given_back_at_the_last_stop(
        root: Path, workdir: Path, qemu_user: tuple[int, int]) -> None:
    configure(root, QEMU_TEST_USER)
    base = image(workdir, "base.img")
    conn = libvirt.open(uri_of(root))
    try:
        a = conn.defineXML(domain("sa", disk(str(base), "vda", extra="<readonly/>")))
        b = conn.defineXML(domain("sb", disk(str(base), "vda", extra="<readonly/>")))
        a.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        b.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        assert owner(base) == qemu_user and xattrs(base)[REF] == b"2"
        a.destroy()
        assert owner(base) == qemu_user and xattrs(base)[REF] == b"1"
        b.destroy()
        assert owner(base) == ORIG and xattrs(base) == {}
    finally:
        conn.close()


def test_labels_and_cgroup_are_undone_when_qemu_fails_to_start(root: Path, workdir: Path,
                                                              qemu_user: tuple[int, int]) -> None:
    configure(root, QEMU_TEST_USER)
    img = image(workdir, "d.img")
    bad_kernel = workdir / "bad-kernel"
    bad_kernel.write_bytes(b"")
    xml = domain("s4", disk(str(img), "vda")).replace(
        "</os>", f"<kernel>{bad_kernel}</kernel></os>")
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(xml)
        with pytest.raises(libvirt.libvirtError, match="exited while starting up"):
            dom.create()
        assert owner(img) == ORIG and xattrs(img) == {}
        assert owner(bad_kernel) == (0, 0) and xattrs(bad_kernel) == {}
        nothing_left(root, "s4")
        assert not list(Path("/sys/fs/cgroup/devices/pyvirt").glob("*/dom-s4"))
    finally:
        conn.close()


def test_qemu_can_open_only_the_block_devices_of_its_domain(root: Path, workdir: Path,
                                                           losetup: list[str]) -> None:
    """The cgroup device ACL, seen from inside QEMU: hot-adding a block device that is not one of
    the domain's disks fails with EPERM even for root QEMU; the domain's own disk opens again."""
    configure(root, "root")
    mine = loop_device(workdir / "mine.raw", losetup)
    other = loop_device(workdir / "other.raw", losetup)
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(domain("s5", disk(mine, "vda", kind="block")))
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)

        def add(node: str, path: str) -> dict[str, object]:
            cmd = {"execute": "blockdev-add", "arguments": {"driver": "host_device", "node-name": node,
                                                             "filename": path, "read-only": True}}
            reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(cmd)))
            assert isinstance(reply, dict)
            return reply

        denied = add("n-other", other)
        assert "error" in denied and "Operation not permitted" in str(denied["error"]), denied
        allowed = add("n-mine", mine)
        assert "error" not in allowed, allowed
        dom.destroy()
        nothing_left(root, "s5")
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName("s5").destroy()
        conn.close()


def test_the_directories_qemu_writes_follow_the_configured_user(root: Path,
                                                                qemu_user: tuple[int, int]) -> None:
    configure(root, QEMU_TEST_USER)
    libvirt.open(uri_of(root)).close()
    for d in ("lib/qemu", "cache/qemu"):
        assert owner(root / d) == qemu_user, d
    assert owner(root / "run" / "qemu") == (0, 0)  # pyvirt's own state, not QEMU's
    configure(root, "root")  # the configured user changed: the next open gives them back
    libvirt.open(uri_of(root)).close()
    for d in ("lib/qemu", "cache/qemu"):
        assert owner(root / d) == (0, 0), d


@pytest.mark.parametrize("relabel", ["no", "yes"])
def test_a_static_dac_seclabel_picks_the_identity_and_whether_to_relabel(
        root: Path, workdir: Path, qemu_user: tuple[int, int], relabel: str) -> None:
    configure(root, "root")
    img = image(workdir, "e.img")
    if relabel == "no":
        os.chown(img, *qemu_user)  # relabel='no': the user must own it already
    label = (f"<seclabel type='static' model='dac' relabel='{relabel}'>"
             f"<label>{QEMU_TEST_USER}:{QEMU_TEST_USER}</label></seclabel>")
    xml = domain("s6", disk(str(img), "vda")).replace("</domain>", f"{label}</domain>")
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(xml)
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        pid = status_pid(root, "s6")
        assert pid is not None
        assert proc_status(pid)["Uid"].split()[0] == str(qemu_user[0])
        assert owner(img) == qemu_user
        assert (xattrs(img) == {}) == (relabel == "no")
        assert f"<label>{QEMU_TEST_USER}:{QEMU_TEST_USER}</label>" in dom.XMLDesc()
        dom.destroy()
        assert owner(img) == (qemu_user if relabel == "no" else ORIG)
        nothing_left(root, "s6")
    finally:
        conn.close()


def test_a_driver_restart_keeps_the_labels_and_their_counts(root: Path, workdir: Path,
                                                          qemu_user: tuple[int, int]) -> None:
    """Domains outlive the process that started them: a later one restores from the status file."""
    configure(root, QEMU_TEST_USER)
    base = image(workdir, "shared.img")
    own = image(workdir, "own.img")
    conn = libvirt.open(uri_of(root))
    conn.defineXML(domain("ra", disk(str(base), "vda", extra="<readonly/>") + disk(str(own), "vdb")))
    conn.defineXML(domain("rb", disk(str(base), "vda", extra="<readonly/>")))
    for name in ("ra", "rb"):
        conn.lookupByName(name).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    conn.close()  # the driver goes away; both QEMUs keep running
    assert owner(base) == qemu_user and xattrs(base)[REF] == b"2" and owner(own) == qemu_user
    # A new process reconnects (nothing is relabelled or restored by that) and stops them.
    script = (f"import pyvirt; c = pyvirt.open({uri_of(root)!r}); "
              "c.lookupByName('ra').destroy(); print(c.lookupByName('rb').isActive())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr
    assert owner(own) == ORIG and xattrs(own) == {}
    assert owner(base) == qemu_user and xattrs(base)[REF] == b"1"  # rb still runs
    conn = libvirt.open(uri_of(root))
    try:
        conn.lookupByName("rb").destroy()
        assert owner(base) == ORIG and xattrs(base) == {}
        nothing_left(root, "rb")
    finally:
        conn.close()


SESSION_SCRIPT = """
import glob, json, os, pyvirt
c = pyvirt.open('qemu:///session')
d = c.defineXML("<domain type='qemu'><name>s</name><memory unit='MiB'>64</memory>"
                "<os><type arch='x86_64'>hvm</type></os><devices/></domain>")
d.createWithFlags(pyvirt.VIR_DOMAIN_START_PAUSED)
status = glob.glob(os.environ['XDG_RUNTIME_DIR'] + '/**/s.json', recursive=True)[0]
pid = json.load(open(status))['data']['identity']['pid']
fields = dict(line.split(':', 1) for line in open(f'/proc/{pid}/status'))
print(json.dumps({k: fields[k].split() for k in ('Uid', 'CapEff', 'CapPrm', 'CapInh', 'NoNewPrivs')}
                 | {'cgroup': open(f'/proc/{pid}/cgroup').read(), 'messages': d.messages()}))
d.destroy()
"""


def test_the_session_instance_runs_qemu_as_its_caller(qemu_user: tuple[int, int], workdir: Path) -> None:
    """A non-root user's qemu:///session: QEMU is that user's, with no capability, no cgroup of
    pyvirt's and no relabelling of anything; the user needs no privilege at all. The session
    pyvirtd the client starts (running as the user) is stopped afterwards."""
    import sysconfig

    from session_support import stop_session_daemons

    home = workdir / "home"  # pytest's tmp_path sits below a directory only root may enter
    home.mkdir()
    os.chown(home, *qemu_user)
    daemon = workdir / "pyvirtd"  # the same source tree's daemon, for Debian's python3
    daemon.write_text('#!/bin/sh\nexec /usr/bin/python3 -m pyvirt.daemon.main "$@"\n')
    daemon.chmod(0o755)
    site = sysconfig.get_paths()["purelib"]  # lxml, qemu.qmp; the venv's interpreter may sit in /root
    src = str(Path(__file__).parents[2] / "src")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": f"{home}/run",
           "XDG_CONFIG_HOME": f"{home}/config", "XDG_CACHE_HOME": f"{home}/cache",
           "PYTHONPATH": f"{src}:{site}", "PYVIRTD_PATH": str(daemon)}
    try:
        p = subprocess.run(["setpriv", "--reuid", QEMU_TEST_USER, "--regid", QEMU_TEST_USER,
                            "--init-groups", "/usr/bin/python3", "-c", SESSION_SCRIPT], env=env,
                           capture_output=True, text=True, timeout=120)
    finally:
        stopped = stop_session_daemons(home / "run")
    assert p.returncode == 0, p.stderr
    assert len(stopped) == 1 and not (home / "run" / "pyvirt" / "libvirt-sock").exists()
    got = json.loads(p.stdout.splitlines()[-1])
    assert got["Uid"] == [str(qemu_user[0])] * 4
    assert all(int(got[c][0], 16) == 0 for c in ("CapEff", "CapPrm", "CapInh")) and got["NoNewPrivs"] == ["1"]
    assert "pyvirt" not in got["cgroup"]  # as libvirt's session driver: no cgroups
    assert got["messages"] == []


def test_selinux_wiring_with_a_stand_in_label_store(root: Path, workdir: Path) -> None:
    """The SELinux driver inside a real start, through an in-memory label store: this host's kernel
    has no SELinux, so the store is a stand-in and the kernel refuses the exec label at the end.
    What is checked is pyvirt's side: the capabilities show the secmodel with its base labels, the
    image is labelled with the domain's categories before QEMU is launched, and the refused exec
    label fails the start cleanly, every label given back."""
    from pyvirt.security.dac import DACDriver
    from pyvirt.security.manager import build_security_stack
    from pyvirt.security.selinux import MemoryLabelStore

    configure(root, "root")
    img = image(workdir, "f.img")
    store = MemoryLabelStore({str(img): "system_u:object_r:virt_image_t:s0"})
    seen: list[str | None] = []
    original_set = store.set

    def spy(path: str, label: str) -> None:
        original_set(path, label)
        seen.append(store.get(str(img)))

    store.set = spy  # type: ignore[method-assign]
    conn = libvirt.open(uri_of(root))
    try:
        driver = conn.driver
        driver._security = build_security_stack(("selinux",), DACDriver.from_conf(driver.conf),
                                                conf=driver.conf, selinux_store=store)
        caps = conn.getCapabilities()
        assert "<model>selinux</model>" in caps and "svirt_tcg_t" in caps
        dom = conn.defineXML(domain("s7", disk(str(img), "vda")))
        with pytest.raises(libvirt.libvirtError) as exc:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        assert "exec" in str(exc.value).lower() or "SELinux" in str(exc.value), exc.value
        assert any(s and s.startswith("system_u:object_r:svirt_image_t:s0:c") for s in seen), seen
        assert store.get(str(img)) == "system_u:object_r:virt_image_t:s0"  # given back
        assert owner(img) == ORIG
        nothing_left(root, "s7")
    finally:
        conn.close()


def test_memtune_and_cputune_reach_the_domains_cgroup(root: Path) -> None:
    configure(root, "root")
    xml = domain("s8", "").replace(
        "<vcpu>1</vcpu>", "<vcpu>1</vcpu><memtune><hard_limit unit='MiB'>512</hard_limit>"
        "<soft_limit unit='MiB'>256</soft_limit></memtune><cputune><shares>512</shares></cputune>")
    conn = libvirt.open(uri_of(root))
    try:
        dom = conn.defineXML(xml)
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        pid = status_pid(root, "s8")
        assert pid is not None
        groups = cgroups_of(pid)
        memory = Path(f"/sys/fs/cgroup/memory{groups['memory']}")
        cpu = Path(f"/sys/fs/cgroup/cpu{groups['cpu']}")
        assert int((memory / "memory.limit_in_bytes").read_text()) == 512 << 20
        assert int((memory / "memory.soft_limit_in_bytes").read_text()) == 256 << 20
        assert int((cpu / "cpu.shares").read_text()) == 512
        dom.destroy()
        assert not memory.exists() and not cpu.exists()
        nothing_left(root, "s8")
    finally:
        conn.close()


def test_capabilities_say_when_device_access_is_not_restricted(root: Path, tmp_path: Path) -> None:
    """On a host whose cgroups are v2 only, pyvirt has no eBPF device program: the capabilities say
    so (this host has the v1 devices controller, so a v2-only host is described to the driver)."""
    from pyvirt.security.cgroup import CgroupHost, Hierarchy

    conn = libvirt.open(uri_of(root))
    try:
        assert "pyvirt:" not in conn.getCapabilities()  # v1 devices here: restricted
        v2_only = CgroupHost([Hierarchy(version=2, mount=str(tmp_path), controllers=("cpu", "memory"),
                                        placement="/")])
        caps = conn.driver.capabilities_xml(cgroup_host=v2_only)
        assert "<!-- pyvirt: device access is not restricted: on cgroup v2 it needs an eBPF program" in caps
        assert caps.index("<!-- pyvirt:") < caps.index("</host>")
    finally:
        conn.close()
