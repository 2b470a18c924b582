# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain cgroups on this host's real cgroup v1 hierarchies, with real loop devices and real QEMU.

Runs as root. Each test makes its groups under an instance tag of its own (an embed root), and
removes them; loop devices are set up over small temporary files and detached afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvirt.conf.instance import embed_paths
from pyvirt.errors import OperationFailed, PyvirtError, codes
from pyvirt.security import cgroup
from pyvirt.security.cgroup import CgroupHost, DomainCgroup, instance_tag
from pyvirt.xml.domain import Domain, parse_domain

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root")

QEMU = "/usr/bin/qemu-system-x86_64"
HOST = CgroupHost.probe()
V1_DEVICES = any(h.version == 1 and "devices" in h.controllers for h in HOST.hierarchies)


@pytest.fixture(autouse=True)
def _needs_v1() -> None:
    if not V1_DEVICES:
        pytest.fail("this host has no cgroup v1 devices hierarchy (these tests are written for one)")


@pytest.fixture
def instance(embed_root: Path) -> Iterator[str]:
    """An instance tag of this test's own; fails the test if any of its groups is left behind."""
    tag = instance_tag(embed_paths(embed_root))
    yield tag
    left = [os.path.join(h.base, "pyvirt", tag) for h in HOST.hierarchies
            if os.path.exists(os.path.join(h.base, "pyvirt", tag))]
    for d in left:  # clean up for the next run, then fail
        for sub in os.listdir(d):
            if os.path.isdir(os.path.join(d, sub)):
                os.rmdir(os.path.join(d, sub))
        os.rmdir(d)
    assert not left, f"groups left behind: {left}"


def _loop(size: int = 1 << 20) -> Iterator[str]:
    fd, image = tempfile.mkstemp(prefix="pyvirt-cg-", suffix=".img", dir="/var/tmp")
    os.ftruncate(fd, size)
    os.close(fd)
    try:
        dev = subprocess.run(["losetup", "--find", "--show", image], check=True, text=True,
                             capture_output=True).stdout.strip()
        try:
            yield dev
        finally:
            subprocess.run(["losetup", "-d", dev], check=True)
    finally:
        os.unlink(image)


@pytest.fixture
def loopdev() -> Iterator[str]:
    yield from _loop()


@pytest.fixture
def loopdev2() -> Iterator[str]:
    yield from _loop()


def domain(name: str = "vm", devices: str = "", extra: str = "") -> Domain:
    return parse_domain(f"<domain type='qemu'><name>{name}</name><memory>65536</memory>{extra}"
                        f"<os><type>hvm</type></os><devices>{devices}</devices></domain>")


def disk(path: str, target: str = "vda", readonly: bool = False) -> str:
    return (f"<disk type='block' device='disk'><source dev='{path}'/><target dev='{target}'/>"
            f"{'<readonly/>' if readonly else ''}</disk>")


@pytest.fixture
def made(instance: str) -> Iterator[list[DomainCgroup]]:
    """Groups a test created; removed at the end even when the test fails (before ``instance``
    checks that nothing is left)."""
    groups: list[DomainCgroup] = []
    yield groups
    for cg in groups:
        cg.remove()


def create(made: list[DomainCgroup], dom: Domain, instance: str, **kw: object) -> DomainCgroup:
    cg = cgroup.create(dom, instance=instance, host=HOST, **kw)  # type: ignore[arg-type]
    assert cg is not None
    made.append(cg)
    return cg


OPEN_PROBE = """
import errno, os, sys
from pyvirt.security.cgroup import join
join(sys.argv[1].split(':'))
for spec in sys.argv[2:]:
    path, mode = spec.rsplit('=', 1)
    try:
        os.close(os.open(path, os.O_RDWR if mode == 'rw' else os.O_RDONLY))
        print('ok')
    except OSError as e:
        print(errno.errorcode[e.errno])
"""


def open_in(cg: DomainCgroup, *specs: str) -> list[str]:
    """Open each 'PATH=r|rw' in a child that joined ``cg`` with :func:`cgroup.join`."""
    out = subprocess.run([sys.executable, "-c", OPEN_PROBE, ":".join(cg.procs_paths()), *specs],
                         check=True, capture_output=True, text=True)
    return out.stdout.split()


# --- the device ACL, seen by a real process ----------------------------------------------------------

def test_device_acl_allows_the_domains_disk_only(made: list[DomainCgroup], instance: str,
                                                 loopdev: str) -> None:
    allowed = create(made, domain("with-disk", disk(loopdev)), instance)
    denied = create(made, domain("without-disk"), instance)
    assert allowed.devices_enforced and denied.devices_enforced
    assert open_in(allowed, f"{loopdev}=rw", "/dev/null=rw", "/dev/zero=r") == ["ok", "ok", "ok"]
    assert open_in(denied, f"{loopdev}=rw", f"{loopdev}=r", "/dev/null=rw") == ["EPERM", "EPERM", "ok"]
    # the kernel's view agrees with the rules recorded
    with open(os.path.join(str(allowed.path_of("devices")), "devices.list")) as f:
        listed = f.read().split("\n")
    st = os.stat(loopdev)
    assert f"b {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rw" in listed
    assert "c 136:* rw" in listed
    assert [str(r) for r in allowed.rules] == [x for x in listed if x]


def test_readonly_disk_is_read_only(made: list[DomainCgroup], instance: str, loopdev: str) -> None:
    cg = create(made, domain("ro", disk(loopdev, readonly=True)), instance)
    assert open_in(cg, f"{loopdev}=r", f"{loopdev}=rw") == ["ok", "EPERM"]


def test_conf_device_acl_replaces_the_default(made: list[DomainCgroup], instance: str) -> None:
    cg = create(made, domain("acl"), instance, device_acl_paths=["/dev/zero"])
    assert open_in(cg, "/dev/zero=rw", "/dev/null=rw") == ["ok", "EPERM"]


# --- real QEMU -----------------------------------------------------------------------------------------

class StdioQMP:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.buf = b""
        greeting = self._read()
        assert "QMP" in greeting, greeting
        assert self.cmd("qmp_capabilities") == {"return": {}}

    def _read(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                raise TimeoutError("QEMU did not answer on QMP within 30 s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("QEMU closed QMP")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, execute: str, **arguments: object) -> dict[str, object]:
        assert self.proc.stdin is not None
        msg = {"execute": execute, **({"arguments": arguments} if arguments else {})}
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            reply = self._read()
            if "event" not in reply:
                return reply


@pytest.fixture
def run_qemu() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def start_qemu(cg: DomainCgroup, procs: list[subprocess.Popen[bytes]]) -> StdioQMP:
    argv = cgroup.wrap_command([QEMU, "-S", "-nodefaults", "-display", "none", "-machine", "none",
                                "-qmp", "stdio"], cg.procs_paths())
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    procs.append(proc)
    return StdioQMP(proc)


def test_qemu_joined_before_exec_cannot_open_denied_device(
        made: list[DomainCgroup], instance: str, loopdev: str, loopdev2: str,
        run_qemu: list[subprocess.Popen[bytes]]) -> None:
    cg = create(made, domain("qemu-acl", disk(loopdev)), instance)
    qmp = start_qemu(cg, run_qemu)
    pid = run_qemu[0].pid
    assert cg.pids() == {pid}  # the shim exec'd QEMU in the same process, inside every group
    for g in cg.groups:
        with open(f"/proc/{pid}/cgroup") as f:
            assert any(line.endswith(":" + g.path.removeprefix(_mount_of(g.path)))
                       for line in f.read().splitlines()), g.path
    ok = qmp.cmd("blockdev-add", driver="host_device", filename=loopdev, **{"node-name": "allowed"})
    assert ok == {"return": {}}
    bad = qmp.cmd("blockdev-add", driver="host_device", filename=loopdev2, **{"node-name": "denied"})
    err = bad.get("error")
    assert isinstance(err, dict) and "Operation not permitted" in err["desc"], bad
    ro = qmp.cmd("blockdev-add", driver="host_device", filename=loopdev2, **{"read-only": True},
                 **{"node-name": "denied-ro"})
    assert "Operation not permitted" in str(ro.get("error")), ro
    run_qemu[0].kill()
    run_qemu[0].wait(10)
    assert cg.remove() == []
    assert all(not os.path.exists(g.path) for g in cg.groups)


def test_qemu_cannot_open_a_denied_device_even_at_startup(made: list[DomainCgroup], instance: str,
                                                          loopdev: str) -> None:
    """QEMU opens -blockdev files before its monitor exists: only a join before exec stops it."""
    denied = create(made, domain("startup-denied"), instance)
    allowed = create(made, domain("startup-allowed", disk(loopdev)), instance)
    args = [QEMU, "-nodefaults", "-display", "none", "-machine", "none", "-S",
            "-blockdev", f"driver=host_device,filename={loopdev},node-name=d0",
            "-qmp", "stdio"]
    proc = subprocess.run(cgroup.wrap_command(args, denied.procs_paths()), input=b"",
                          capture_output=True, timeout=60)
    assert proc.returncode == 1
    assert b"Operation not permitted" in proc.stderr, proc.stderr
    # the same command in the allowed domain's group gets as far as the monitor
    quit_ = b'{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
    proc = subprocess.run(cgroup.wrap_command(args, allowed.procs_paths()), input=quit_,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and b'"QMP"' in proc.stdout, proc.stderr


def _mount_of(path: str) -> str:
    for h in HOST.hierarchies:
        if path.startswith(h.mount + "/"):
            return h.mount
    raise AssertionError(path)


def test_qemu_in_a_domain_without_the_disk_is_denied_it(
        made: list[DomainCgroup], instance: str, loopdev: str,
        run_qemu: list[subprocess.Popen[bytes]]) -> None:
    cg = create(made, domain("qemu-nodisk"), instance)
    qmp = start_qemu(cg, run_qemu)
    bad = qmp.cmd("blockdev-add", driver="host_device", filename=loopdev, **{"node-name": "d"})
    assert "Operation not permitted" in str(bad.get("error")), bad
    # the default ACL's devices stay reachable
    fine = qmp.cmd("blockdev-add", driver="host_device", filename="/dev/null", **{"node-name": "n"})
    assert fine == {"return": {}}, fine


# --- limits -------------------------------------------------------------------------------------------

def _read(cg: DomainCgroup, controller: str, name: str) -> str:
    with open(os.path.join(str(cg.path_of(controller)), name)) as f:
        return f.read().strip()


def test_memory_and_cpu_limits_written(made: list[DomainCgroup], instance: str) -> None:
    memsw = any(os.path.exists(os.path.join(h.base, "memory.memsw.limit_in_bytes"))
                for h in HOST.hierarchies if "memory" in h.controllers)
    swap = "<swap_hard_limit unit='MiB'>768</swap_hard_limit>" if memsw else ""
    dom = domain("limits", extra=f"<vcpu>2</vcpu><memtune><hard_limit unit='MiB'>512</hard_limit>"
                                 f"<soft_limit unit='MiB'>256</soft_limit>{swap}</memtune>"
                                 "<cputune><shares>512</shares><period>100000</period>"
                                 "<quota>25000</quota></cputune>")
    cg = create(made, dom, instance)
    assert _read(cg, "memory", "memory.limit_in_bytes") == str(512 << 20)
    assert _read(cg, "memory", "memory.soft_limit_in_bytes") == str(256 << 20)
    if memsw:
        assert _read(cg, "memory", "memory.memsw.limit_in_bytes") == str(768 << 20)
    assert _read(cg, "cpu", "cpu.shares") == "512"
    assert _read(cg, "cpu", "cpu.cfs_period_us") == "100000"
    assert _read(cg, "cpu", "cpu.cfs_quota_us") == "50000"  # 25000 per vCPU, 2 vCPUs
    # nested under this process's own placement in every hierarchy (the memory one is a sandbox's)
    for g in cg.groups:
        h = next(h for h in HOST.hierarchies if set(g.controllers) <= set(h.controllers))
        assert g.path == os.path.join(h.base, "pyvirt", instance, "dom-limits")
        with open(os.path.join(h.base, "cgroup.procs")) as f:
            assert str(os.getpid()) in f.read().split()
    # a cpuset group can take tasks (its cpus and mems were copied from its parent)
    assert _read(cg, "cpuset", "cpuset.cpus") != ""


def test_failure_half_way_leaves_nothing(made: list[DomainCgroup], instance: str) -> None:
    # the kernel refuses a CFS quota below 1 ms, after every group has been created
    dom = domain("bad-quota", extra="<cputune><global_quota>500</global_quota></cputune>")
    with pytest.raises(OperationFailed, match=r"cannot write '500' to /\S+/cpu.cfs_quota_us: "
                                              "Invalid argument") as e:
        cgroup.create(dom, instance=instance, host=HOST)
    assert e.value.domain == codes.VIR_FROM_CGROUP
    # the instance fixture checks that no directory is left


def test_tunables_need_their_controller(made: list[DomainCgroup], instance: str) -> None:
    dom = domain("mt", extra="<memtune><hard_limit>1048576</hard_limit></memtune>")
    with pytest.raises(PyvirtError, match="memory cgroup controller is not available") as e:
        cgroup.create(dom, instance=instance, controllers=["devices", "cpu"], host=HOST)
    assert e.value.code == codes.VIR_ERR_CONFIG_UNSUPPORTED


def test_conf_controllers_honoured(made: list[DomainCgroup], instance: str) -> None:
    assert cgroup.create(domain("none"), instance=instance, controllers=[], host=HOST) is None
    cg = create(made, domain("cpu-only"), instance, controllers=["cpu"])
    assert [g.controllers for g in cg.groups] == [("cpu",)]
    assert not cg.devices_enforced and "devices cgroup controller" in cg.devices_reason


# --- lifecycle of the groups ----------------------------------------------------------------------------

def test_two_instances_never_collide(made: list[DomainCgroup], embed_root: Path, instance: str) -> None:
    other_tag = instance_tag(embed_paths(embed_root.parent / "other"))
    assert other_tag != instance
    a = create(made, domain("same"), instance)
    b = create(made, domain("same"), other_tag)
    assert not set(a.procs_paths()) & set(b.procs_paths())
    assert a.remove() == []
    assert all(os.path.isdir(g.path) for g in b.groups)  # the other instance is untouched
    for g in b.groups:
        assert os.path.isdir(os.path.dirname(os.path.dirname(g.path)))  # pyvirt/ stays for it
    assert b.remove() == []
    for g in a.groups + b.groups:
        assert not os.path.exists(os.path.dirname(g.path))


def test_remove_moves_stragglers_and_tolerates_gone_groups(made: list[DomainCgroup],
                                                           instance: str) -> None:
    cg = create(made, domain("straggler"), instance)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        cg.attach(sleeper.pid)
        assert cg.pids() == {sleeper.pid}
        assert cg.remove() == []
        assert all(not os.path.exists(g.path) for g in cg.groups)
        assert sleeper.poll() is None  # moved out, not killed
        with open(f"/proc/{sleeper.pid}/cgroup") as f:
            assert "pyvirt" not in f.read()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cg.remove() == []  # already gone: nothing to report


def test_status_lets_a_later_process_remove(made: list[DomainCgroup], instance: str) -> None:
    cg = create(made, domain("reconnect"), instance)
    status = json.dumps(cg.to_status())
    code = ("import json, sys\nfrom pyvirt.security.cgroup import DomainCgroup\n"
            "print(DomainCgroup.from_status(json.loads(sys.argv[1])).remove())")
    out = subprocess.run([sys.executable, "-c", code, status], check=True, capture_output=True,
                         text=True)
    assert out.stdout.strip() == "[]"
    assert all(not os.path.exists(g.path) for g in cg.groups)


def test_stale_group_is_replaced_busy_one_refused(made: list[DomainCgroup], instance: str) -> None:
    first = create(made, domain("stale"), instance)
    second = create(made, domain("stale", extra="<cputune><shares>300</shares></cputune>"), instance)
    assert second.procs_paths() == first.procs_paths()
    assert _read(second, "cpu", "cpu.shares") == "300"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        second.attach(sleeper.pid)
        with pytest.raises(OperationFailed, match=f"in use by processes {sleeper.pid}"):
            cgroup.create(domain("stale"), instance=instance, host=HOST)
        assert second.pids() == {sleeper.pid}  # the running one was left alone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_join_shim_reports_a_missing_group(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope" / "cgroup.procs")
    proc = subprocess.run(cgroup.wrap_command(["/bin/true"], [missing]), capture_output=True,
                          text=True)
    assert proc.returncode == cgroup.JOIN_FAILED
    assert f"cannot join cgroup {missing}" in proc.stderr and "nonexistent" in proc.stderr, proc.stderr
    with pytest.raises(OSError) as e:
        cgroup.join([missing])
    assert e.value.errno == errno.ENOENT
