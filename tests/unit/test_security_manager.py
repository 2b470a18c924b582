# SPDX-License-Identifier: LGPL-2.1-or-later
"""The hook table, transactions and the stack, with recording drivers (no file is touched here)."""

from __future__ import annotations

import os
import threading

import pytest

from pyvirt.errors import InternalError, NotSupported, codes
from pyvirt.security.dac import DACDriver, is_system_path
from pyvirt.security.manager import NoneDriver, SecurityDriver, SecurityStack, build_security_stack
from pyvirt.security.privileges import ChildCredentials, credentials_for, wrap_command
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind


class Recorder(SecurityDriver):
    """Applies 'labels' to a dict, journaling the undo; fails on a resource named in ``fail_on``."""

    def __init__(self, name: str, state: dict[str, str], log: list[str], fail_on: str = "") -> None:
        super().__init__()
        self.name = name
        self.state = state
        self.log = log
        self.fail_on = fail_on

    def _label(self, r: Resource) -> None:
        if r.path == self.fail_on:
            raise RuntimeError(f"{self.name} fails on {r.path}")
        key = f"{self.name}:{r.path}"
        before = self.state.get(key)

        def undo() -> None:
            self.log.append(f"undo {key}")
            if before is None:
                del self.state[key]
            else:
                self.state[key] = before

        self.journal(key, undo)
        self.state[key] = "labelled"
        self.log.append(f"set {key}")

    def _set_all(self, ctx: DomainSecurityContext) -> None:
        for r in ctx.resources:
            self._label(r)

    def _set_image(self, ctx: DomainSecurityContext, resource: Resource) -> None:
        self._label(resource)

    def _restore_all(self, ctx: DomainSecurityContext) -> list[str]:
        self.log.append(f"restore {self.name}")
        return [f"{self.name} problem"]

    def _restore_image(self, ctx: DomainSecurityContext, resource: Resource) -> list[str]:
        return []


def ctx(*paths: str) -> DomainSecurityContext:
    return DomainSecurityContext("vm", "uuid", 107, 107, (107,), tuple(Resource(p) for p in paths))


def test_a_failing_driver_rolls_back_every_driver_newest_first() -> None:
    state: dict[str, str] = {}
    log: list[str] = []
    stack = SecurityStack([Recorder("mac", state, log), Recorder("dac", state, log, fail_on="/b")])
    with pytest.raises(RuntimeError, match="dac fails on /b"):
        stack.set_all(ctx("/a", "/b", "/c"))
    assert state == {}
    assert log == ["set mac:/a", "set mac:/b", "set mac:/c", "set dac:/a",
                   "undo dac:/a", "undo mac:/c", "undo mac:/b", "undo mac:/a"]
    assert not stack.in_transaction


def test_a_driver_alone_is_atomic_too() -> None:
    state: dict[str, str] = {}
    log: list[str] = []
    driver = Recorder("dac", state, log, fail_on="/c")
    with pytest.raises(RuntimeError):
        driver.set_all(ctx("/a", "/b", "/c"))
    assert state == {} and log[-2:] == ["undo dac:/b", "undo dac:/a"]


def test_transaction_spans_calls_and_commits() -> None:
    state: dict[str, str] = {}
    log: list[str] = []
    stack = SecurityStack([Recorder("dac", state, log)])
    with stack.transaction():
        stack.set_all(ctx("/a"))
        stack.set_image(ctx(), Resource("/hot"))
    assert state == {"dac:/a": "labelled", "dac:/hot": "labelled"}
    with pytest.raises(ValueError), stack.transaction():
        stack.set_image(ctx(), Resource("/x"))
        raise ValueError("launch failed")
    assert "dac:/x" not in state and "dac:/a" in state  # only the failed transaction was undone


def test_rollback_problems_become_notes() -> None:
    driver = NoneDriver()
    driver.begin()
    driver.journal("something", lambda: (_ for _ in ()).throw(OSError(5, "I/O error")))
    assert driver.rollback() == ["could not undo something: [Errno 5] I/O error"]
    stack = SecurityStack([driver])
    with pytest.raises(KeyError) as e, stack.transaction():
        driver.journal("the thing", lambda: (_ for _ in ()).throw(OSError(5, "I/O error")))
        raise KeyError("boom")
    assert e.value.__notes__ == ["could not undo the thing: [Errno 5] I/O error"]


def test_transactions_are_per_thread_and_not_nested() -> None:
    driver = NoneDriver()
    driver.begin()
    with pytest.raises(InternalError, match="already open in this thread"):
        driver.begin()
    seen: list[bool] = []
    t = threading.Thread(target=lambda: seen.append(driver.in_transaction))
    t.start()
    t.join()
    assert seen == [False]
    driver.commit()
    with pytest.raises(InternalError, match="commit without a transaction"):
        driver.commit()
    with pytest.raises(InternalError, match="rollback without a transaction"):
        driver.rollback()


def test_restore_goes_on_and_collects_problems() -> None:
    log: list[str] = []
    stack = SecurityStack([Recorder("mac", {}, log), Recorder("dac", {}, log)])
    assert stack.restore_all(ctx("/a")) == ["mac problem", "dac problem"]
    assert log == ["restore mac", "restore dac"]


def test_build_stack_puts_dac_last() -> None:
    dac = DACDriver()
    stack = build_security_stack(None, dac)
    assert stack.models == ("none", "dac") and stack.primary.name == "none" and stack.get("dac") is dac
    assert build_security_stack(("none",), dac).models == ("none", "dac")
    with pytest.raises(NotSupported, match="'selinux' is not usable on this host: .*set "
                                           "security_driver = \"none\"") as e:  # no SELinux here
        build_security_stack(("selinux",), dac)
    assert e.value.get_error_domain() == codes.VIR_FROM_SECURITY
    with pytest.raises(InternalError, match="listed twice"):
        SecurityStack([dac, dac])


def test_child_credentials_policy() -> None:
    assert credentials_for(0, os.getegid(), caller_uid=0).is_noop  # root QEMU: nothing changes
    assert credentials_for(0, 36, caller_uid=0) == ChildCredentials(gid=36)  # user root, group kvm
    qemu = credentials_for(107, 108, (108, 6), caller_uid=0)
    assert qemu == ChildCredentials(107, 108, (108, 6), clear_capabilities=True, no_new_privs=True)
    assert ChildCredentials.from_options(qemu.to_options()) == qemu
    assert credentials_for(1000, 1000, caller_uid=1000) == ChildCredentials(clear_capabilities=True,
                                                                            no_new_privs=True)
    with pytest.raises(Exception, match="cannot run QEMU as uid 107 from an unprivileged process"):
        credentials_for(107, 107, caller_uid=1000)
    argv = wrap_command(["/usr/bin/qemu-system-x86_64", "-S"], qemu, python="/usr/bin/python3")
    assert argv[:3] == ["/usr/bin/python3", "-I", "-S"] and argv[-3:] == ["--", "/usr/bin/qemu-system-x86_64",
                                                                           "-S"]
    assert wrap_command(["/q"], ChildCredentials()) == ["/q"]
    with pytest.raises(Exception, match="absolute path"):
        wrap_command(["qemu"], qemu)


@pytest.mark.skipif(os.geteuid() != 0, reason="a system instance runs as root")
def test_stack_merges_child_credentials() -> None:
    stack = build_security_stack(("none",), DACDriver())
    creds = stack.child_credentials(DomainSecurityContext("vm", "u", 107, 108, (108,)))
    assert creds == ChildCredentials(107, 108, (108,), clear_capabilities=True, no_new_privs=True)


@pytest.mark.parametrize(("path", "system"), [
    ("/", True), ("/etc", True), ("/etc/passwd", True), ("/usr/share/OVMF/OVMF_CODE.fd", True),
    ("/dev/null", True), ("/boot/vmlinuz", True), ("/var/lib", True), ("/home", True),
    ("/var/lib/libvirt/images/a.qcow2", False), ("/home/alice/vm.img", False), ("/etcetera/x", False),
    ("/tmp/x.img", False), ("/usrlocal/x", False),
])
def test_system_paths(path: str, system: bool) -> None:
    assert is_system_path(path) is system


def test_resources_are_validated() -> None:
    assert Resource("/a", "cdrom").kind is ResourceKind.CDROM  # type: ignore[arg-type]
    assert Resource("/k", ResourceKind.KERNEL).read_only and not Resource("/d").read_only
    with pytest.raises(ValueError, match="must be absolute"):
        Resource("disk.img")
    with pytest.raises(ValueError, match="needs a path"):
        Resource("")
    with pytest.raises(ValueError):
        Resource("/a", "tape")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uid must be a valid id"):
        DomainSecurityContext("vm", "u", -1, 0)
    c = DomainSecurityContext("vm", "u", 1, 1, [1], [Resource("/a")])  # type: ignore[arg-type]
    assert c.groups == (1,) and c.resources == (Resource("/a"),)
    assert Resource("/a", readonly=True, shared=True).describe() == "disk '/a' (read-only, shareable)"
