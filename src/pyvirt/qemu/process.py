# SPDX-License-Identifier: LGPL-2.1-or-later
"""Starting, watching, stopping and reconnecting QEMU processes (libvirt's qemu_process.c).

:func:`start` follows libvirt's phases: Init (capabilities, command checks), PrepareHost (domain
id, private directory, monitor socket, log file), Launch (spawn), FinishStartup (monitor, ``cont``,
status file). Any failure runs Stop on what exists so far: a failed start leaves no process, socket,
directory or status file behind.

State survives the process that started the domain: ``run/qemu/NAME.json`` holds the live XML, the
:class:`~pyvirt.qemu.proc.ProcessIdentity` and the state, and :func:`reconnect_all` (libvirt's
ReconnectAll) picks it up when another process opens the same root. Without a daemon nobody holds
the monitor while no process runs, so what QEMU did meanwhile is read back on reconnect: a QEMU
whose guest powered off waits (``-no-shutdown``) in run-state "shutdown" and is stopped then, a
QEMU that vanished is reported crashed. Why a domain last stopped is kept in ``NAME.shutoff`` so
that ``domstate --reason`` of a later process still tells it, as libvirtd's memory would.
"""

from __future__ import annotations

import copy
import datetime
import errno
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.conf.instance import short_domain_name
from pyvirt.errors import ConfigUnsupported, OperationFailed, OperationInvalid, PyvirtError
from pyvirt.events import QEMU_MONITOR, DomainEvent, EventBus
from pyvirt.qemu import proc
from pyvirt.qemu.domstate import (  # noqa: F401 - re-exported: process.VIR_DOMAIN_... is API of this module
    EVENT_CRASHED,
    EVENT_PMSUSPENDED,
    EVENT_RESUMED,
    EVENT_SHUTDOWN,
    EVENT_SHUTDOWN_GUEST,
    EVENT_SHUTDOWN_HOST,
    EVENT_STARTED,
    EVENT_STARTED_WAKEUP,
    EVENT_STOPPED,
    EVENT_SUSPENDED,
    VIR_DOMAIN_CRASHED,
    VIR_DOMAIN_CRASHED_PANICKED,
    VIR_DOMAIN_PAUSED,
    VIR_DOMAIN_PAUSED_UNKNOWN,
    VIR_DOMAIN_PAUSED_USER,
    VIR_DOMAIN_PMSUSPENDED,
    VIR_DOMAIN_RUNNING,
    VIR_DOMAIN_RUNNING_BOOTED,
    VIR_DOMAIN_RUNNING_UNKNOWN,
    VIR_DOMAIN_RUNNING_UNPAUSED,
    VIR_DOMAIN_RUNNING_WAKEUP,
    VIR_DOMAIN_SHUTOFF,
    VIR_DOMAIN_SHUTOFF_CRASHED,
    VIR_DOMAIN_SHUTOFF_DESTROYED,
    VIR_DOMAIN_SHUTOFF_FAILED,
    VIR_DOMAIN_SHUTOFF_SHUTDOWN,
    _write_shutoff,
    forget_shutoff,
    shutoff_reason,
)
from pyvirt.qemu.live_xml import status_xml, volume_disks
from pyvirt.qemu.monitor import Disconnect, Monitor, QMPEvent, ShutdownEvent
from pyvirt.qemu.security import LaunchSecurity, prime_cgroup_migration
from pyvirt.qemu.security import restore as restore_security
from pyvirt.storage.translate import resolve_volume_disks

if TYPE_CHECKING:
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.xml.domain import Domain

__all__ = ["RunningDomain", "start", "stop", "reconnect_all", "shutoff_reason", "StartError", "reboot",
           "reset"]

log = logging.getLogger(__name__)

STATUS_FORMAT = proc.StatusFormat("pyvirt-domain-status", 1)

#: how long a freshly spawned QEMU may take to answer its monitor (TCG start-up on a busy host)
MONITOR_START_TIMEOUT = 30.0
#: how much of QEMU's log a start error quotes
LOG_TAIL_BYTES = 2000
#: how long destroyFlags(VIR_DOMAIN_DESTROY_GRACEFUL) waits after SIGTERM before giving up
#: (libvirt's virProcessKillPainfully waits 15 s; pyvirt's other stops wait proc.GRACEFUL_TIMEOUT)
GRACEFUL_DESTROY_TIMEOUT = proc.GRACEFUL_TIMEOUT


class StartError(OperationFailed):
    """QEMU could not be started; the message carries the tail of its log when it said why."""


@dataclass
class RunningDomain:
    """One running QEMU and what this process knows of it."""

    name: str
    uuid: str
    domain_id: int
    identity: proc.ProcessIdentity
    monitor_path: Path
    lib_dir: Path
    status_path: Path
    log_path: Path
    xml: str  #: the live XML (with id='N')
    state: int
    reason: int
    monitor: Monitor | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: set once a stop began, so that the monitor's end is not taken for a crash
    stopping: bool = False
    #: the reasons an API call in progress stands for (the STOP/RESUME events alone cannot tell)
    expected_pause: int | None = None
    expected_resume: int | None = None
    #: False for a transient domain (createXML): it has no definition and vanishes when it stops
    persistent: bool = True
    #: <on_poweroff>: what a guest power-off does ("destroy" stops QEMU, "restart" resets it)
    on_poweroff: str = "destroy"
    #: <on_reboot>: "destroy" makes a guest reboot stop the domain (QEMU's reboot action 'shutdown')
    on_reboot: str = "restart"
    #: <on_crash>: what a guest panic (pvpanic's GUEST_PANICKED) does: destroy, restart, preserve,
    #: coredump-destroy, coredump-restart
    on_crash: str = "destroy"
    #: a reboot asked for through ACPI: the guest's coming power-off resets instead of stopping
    fake_reboot: bool = False
    #: a reboot under way (reset sent or about to be, cont not yet recorded): a process that
    #: reconnects while it is set finishes it (see :func:`_finish_fake_reboot`)
    resetting: bool = False
    #: QEMU said SHUTDOWN: the STOP that -no-shutdown makes it send next is not a pause
    got_shutdown: bool = False
    #: the TCP port of its VNC server, reserved in this process (see :func:`_reserve_vnc_port`)
    vnc_port: int | None = None
    #: what its start set up for security (labels' context, cgroup), restored at stop; see
    #: :class:`pyvirt.qemu.security.LaunchSecurity`
    security: dict[str, Any] | None = None
    #: libvirt's taints of this run of QEMU ("high-privileges", "custom-monitor", ...), in the order
    #: they happened; :func:`messages` words them as libvirt's virDomainGetMessages does
    taints: list[str] = field(default_factory=list)
    #: where its events go; None until the start succeeded (a failed start emits nothing)
    events: EventBus | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.identity.pid

    def to_status(self) -> dict[str, Any]:
        return {"name": self.name, "uuid": self.uuid, "id": self.domain_id,
                "identity": self.identity.to_dict(), "monitor": str(self.monitor_path),
                "lib_dir": str(self.lib_dir), "log": str(self.log_path), "xml": self.xml,
                "state": self.state, "reason": self.reason, "persistent": self.persistent,
                "on_poweroff": self.on_poweroff, "on_reboot": self.on_reboot, "on_crash": self.on_crash,
                "fake_reboot": self.fake_reboot, "resetting": self.resetting, "vnc_port": self.vnc_port,
                "security": self.security, "taints": self.taints}

    @classmethod
    def from_status(cls, path: Path, data: dict[str, Any]) -> RunningDomain:
        try:
            return cls(name=str(data["name"]), uuid=str(data["uuid"]), domain_id=int(data["id"]),
                       identity=proc.ProcessIdentity.from_dict(data["identity"]),
                       monitor_path=Path(data["monitor"]), lib_dir=Path(data["lib_dir"]),
                       status_path=path, log_path=Path(data["log"]), xml=str(data["xml"]),
                       state=int(data["state"]), reason=int(data["reason"]),
                       # absent from files of older pyvirts, whose domains were all persistent
                       persistent=bool(data.get("persistent", True)),
                       on_poweroff=str(data.get("on_poweroff", "destroy")),
                       on_reboot=str(data.get("on_reboot", "restart")),
                       on_crash=str(data.get("on_crash", "destroy")),
                       fake_reboot=bool(data.get("fake_reboot", False)),
                       resetting=bool(data.get("resetting", False)),
                       vnc_port=int(data["vnc_port"]) if data.get("vnc_port") is not None else None,
                       security=dict(data["security"]) if data.get("security") else None,
                       taints=[str(t) for t in data.get("taints", [])])
        except (KeyError, TypeError, ValueError) as e:
            raise OperationFailed(f"{path}: incomplete domain status ({e!r}); stop the QEMU it names "
                                  "by hand and remove the file") from e

    def save(self) -> None:
        proc.write_status(self.status_path, self.to_status(), STATUS_FORMAT)

    def set_state(self, state: int, reason: int) -> None:
        with self.lock:
            if (self.state, self.reason) == (state, reason) or self.stopping:
                return
            self.state, self.reason = state, reason
            try:
                self.save()
            except PyvirtError as e:  # the in-memory state stays right; the next reconnect re-reads QEMU
                log.warning("domain '%s': cannot save its state: %s", self.name, e)
            event = _STATE_EVENTS.get((state, reason), _STATE_EVENTS.get((state, None)))
            if event is not None:
                self.emit(*event)

    def taint(self, what: str) -> None:
        """Record libvirt's taint ``what`` once (status file, and the domain's log as libvirt)."""
        with self.lock:
            if what in self.taints:
                return
            self.taints.append(what)
            try:
                self.save()
            except PyvirtError as e:
                log.warning("domain '%s': cannot save its state: %s", self.name, e)
        _log_line(self.log_path, f"Domain id={self.domain_id} is tainted: {what}")

    def emit(self, event: int, detail: int) -> None:
        """Queue libvirt's lifecycle event (``event``, ``detail``) for this domain."""
        if self.events is not None:
            self.events.lifecycle(self.name, self.uuid, self.domain_id, event, detail)


#: (state, reason) set on a running domain -> the event libvirt emits for it (reason None: any)
_STATE_EVENTS: dict[tuple[int, int | None], tuple[int, int]] = {
    (VIR_DOMAIN_PAUSED, None): (EVENT_SUSPENDED, 0),                     # ..._SUSPENDED_PAUSED
    (VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_UNPAUSED): (EVENT_RESUMED, 0),  # ..._RESUMED_UNPAUSED
    (VIR_DOMAIN_CRASHED, None): (EVENT_CRASHED, 0),                      # ..._CRASHED_PANICKED
    (VIR_DOMAIN_PMSUSPENDED, None): (EVENT_PMSUSPENDED, 0),              # ..._PMSUSPENDED_MEMORY
    (VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_WAKEUP): (EVENT_STARTED, EVENT_STARTED_WAKEUP),
}
#: the shut-off reason -> VIR_DOMAIN_EVENT_STOPPED's detail
_STOPPED_DETAILS = {VIR_DOMAIN_SHUTOFF_SHUTDOWN: 0, VIR_DOMAIN_SHUTOFF_DESTROYED: 1,
                    VIR_DOMAIN_SHUTOFF_CRASHED: 2, VIR_DOMAIN_SHUTOFF_FAILED: 5}


# libvirt's virDomainTaintFlags, in its order (virDomainGetMessages lists them so), and their words
_TAINT_MESSAGES = {
    "custom-argv": "custom configuration parameters specified",
    "custom-monitor": "custom monitor control commands issued",
    "high-privileges": "running with undesirable elevated privileges",
    "host-cpu": "potentially unsafe use of host CPU passthrough",
}


def messages(rd: RunningDomain) -> list[str]:
    """libvirt's virDomainGetMessages (tainting) for a running domain."""
    return [f"tainted: {_TAINT_MESSAGES[t]}" for t in _TAINT_MESSAGES if t in rd.taints]


def _start_taints(driver: QemuDriver, dom: Domain) -> list[str]:
    """The taints libvirt's qemuDomainObjCheckTaint finds at start."""
    from pyvirt.conf.qemu_conf import resolve_user_group

    found = []
    if dom.qemu_commandline is not None and (dom.qemu_commandline.args or dom.qemu_commandline.envs):
        found.append("custom-argv")
    if driver.privileged and 0 in resolve_user_group(driver.conf):  # qemu.conf's user or group
        found.append("high-privileges")
    if dom.cpu is not None and dom.cpu.mode == "host-passthrough":
        found.append("host-cpu")
    return found


def _log_prefix() -> str:
    """A line's start in the domain's log, libvirt's: "2026-01-02 03:04:05.678+0000: "."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+0000: "


def _log_line(path: Path, text: str) -> None:
    try:
        with open(path, "a") as f:
            f.write(f"{_log_prefix()}{text}\n")
    except OSError as e:
        log.debug("%s: %s", path, e)


# --- paths -----------------------------------------------------------------------------------------

def status_path(driver: QemuDriver, name: str) -> Path:
    return driver.paths.run_dir / f"{name}.json"


def _next_id_path(driver: QemuDriver) -> Path:
    return driver.paths.run_dir / "next-id"


def _allocate_id(driver: QemuDriver) -> int:
    # Ids grow for the life of the root, as libvirtd's do for its life; the instance lock makes
    # this process the only writer, and the running table's lock makes one thread at a time read
    # and advance the counter (domains of different names start in parallel).
    from pyvirt.fsutil import atomic_write_text

    path = _next_id_path(driver)
    with driver.running_lock:
        try:
            next_id = int(path.read_text().strip())
        except (OSError, ValueError):
            next_id = 1
        in_use = [rd.domain_id for rd in driver.running.values()]
        next_id = max([next_id, *(i + 1 for i in in_use)])
        atomic_write_text(path, f"{next_id + 1}\n")
        return next_id


# --- start -----------------------------------------------------------------------------------------

def start(driver: QemuDriver, dom: Domain, *, paused: bool = False, persistent: bool = True) -> RunningDomain:
    """Start ``dom``; returns it running (or paused when ``paused``). Raises, leaving nothing behind.

    ``persistent=False`` starts a transient domain: no shutoff record is kept when it stops.
    """
    from pyvirt.qemu import capabilities
    from pyvirt.qemu.command import CommandRuntime, build_command, format_argv_line
    from pyvirt.secret.disk import disk_secret_values, encrypt_for_qemu

    name = dom.name or ""
    if name in driver.running:
        raise OperationInvalid(f"Requested operation is not valid: domain '{name}' is already running")
    # the kernel's wait for the coming cgroup move, in the background
    cgroup_host = prime_cgroup_migration(driver)
    # Init: everything that can be refused before the host is touched.
    if dom.devices is None:
        raise OperationFailed(f"domain '{name}' has no <devices>: it was not post-parsed")
    binary = dom.devices.emulator
    all_caps = capabilities.load_all(driver.paths.cache_dir)
    if binary is None:
        host = capabilities.host_emulator(all_caps)
        if host is None:
            raise StartError("no QEMU emulator found: install qemu-system-x86 or set <emulator>")
        binary = host.binary
    if not os.access(binary, os.X_OK):
        raise StartError(f"Cannot find QEMU binary {binary}: No such file or directory; install it or "
                         f"fix <emulator> of domain '{name}'")
    caps = capabilities.caps_for_binary(driver.paths.cache_dir, binary, all_caps)
    if dom.type == "kvm" and not caps.kvm.usable:
        # libvirt launches QEMU anyway and fails with QEMU's own error; running a kvm domain under
        # TCG instead would be a silent 10-100x slowdown. So: refuse, say why and what to do.
        raise ConfigUnsupported(f"unsupported configuration: domain '{name}' requires KVM, but KVM is not "
                                f"usable with {binary} on this host ({caps.kvm.reason}); fix KVM, or set "
                                "<domain type='qemu'> to run it under TCG emulation")
    # PrepareDomain: what libvirt resolves before touching the host (networks, disk sources).
    _check_networks(driver, dom)
    live = copy.deepcopy(dom)
    volumes = volume_disks(live)  # shown as the definition has them in the live XML
    resolve_volume_disks(driver, live)  # <disk type='volume'>: the storage driver's file
    _check_disk_sources(live)
    # the passphrases of LUKS disks (a missing secret fails here, before the host is touched)
    disk_values = disk_secret_values(driver, live)
    domain_id = _allocate_id(driver)
    lib_dir = driver.paths.domain_lib_dir(domain_id, name)
    monitor_path = driver.paths.monitor_socket(domain_id, name)
    live.id = domain_id
    # Checked without side effects first (a pretend build), so an unsupported device costs nothing.
    build_command(live, caps, driver.conf,
                  CommandRuntime(domain_id=domain_id, lib_dir=str(lib_dir), monitor_path=str(monitor_path),
                                 disk_secrets=encrypt_for_qemu(os.urandom(32), disk_values),
                                 tap_fds=_pretend_taps(live)))
    forget_shutoff(driver, name)
    if not persistent:
        with driver.running_lock:
            driver.transient[name] = dom

    # PrepareHost
    rd: RunningDomain | None = None
    pid: int | None = None
    vnc_port: int | None = None
    sec: LaunchSecurity | None = None
    log_path = driver.paths.log_dir / f"{name}.log"
    try:
        vnc_port = _reserve_vnc_port(driver, live)
        # Labels, the child's credentials and the cgroup: one transaction, undone on failure.
        sec = LaunchSecurity(driver, live, cgroup_host)
        lib_dir.mkdir(mode=0o700, parents=True, exist_ok=False)
        sec.own(lib_dir)
        master_key = _write_master_key(lib_dir, sec)
        listener = proc.listen_unix(monitor_path)
        taps = None
        try:
            taps = _open_taps(driver, live)  # <interface type='network'|'bridge'>: pyvirt.network.taps
            runtime = CommandRuntime(domain_id=domain_id, lib_dir=str(lib_dir), monitor_fd=listener.fileno(),
                                     channel_dir=str(lib_dir), vnc_port=vnc_port,
                                     disk_secrets=encrypt_for_qemu(master_key, disk_values), tap_fds=taps.fds)
            cmd = build_command(live, caps, driver.conf, runtime)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                log_start = os.lseek(log_fd, 0, os.SEEK_END)
                os.write(log_fd, f"{_log_prefix()}starting up pyvirt, qemu {binary}\n"
                                 f"{format_argv_line(cmd)}\n".encode())
                # Launch
                qemu_argv = [cmd.binary, *cmd.argv]
                pid = proc.spawn_detached(sec.command(qemu_argv, cmd.env), cmd.env, cwd=str(lib_dir),
                                          log_fd=log_fd, pass_fds=[listener.fileno(), *taps.all_fds()],
                                          exec_argv=qemu_argv)
            finally:
                os.close(log_fd)
        finally:
            # QEMU holds its own copy: once ours is closed, a QEMU that dies ends our connection.
            listener.close()
            if taps is not None:
                taps.close()  # QEMU's copies keep the taps; they vanish when it exits
        try:
            identity = proc.ProcessIdentity.of(pid)
        except (ProcessLookupError, FileNotFoundError):
            raise _early_exit(name, log_path, log_start, live) from None
        rd = RunningDomain(name=name, uuid=dom.uuid or "", domain_id=domain_id, identity=identity,
                           monitor_path=monitor_path, lib_dir=lib_dir, status_path=status_path(driver, name),
                           log_path=log_path, xml=status_xml(live, volumes, cgroups=cgroup_host is not None),
                           state=VIR_DOMAIN_PAUSED, reason=VIR_DOMAIN_PAUSED_USER, persistent=persistent,
                           on_poweroff=dom.on_poweroff or "destroy", on_reboot=dom.on_reboot or "restart",
                           on_crash=dom.on_crash or "destroy", vnc_port=vnc_port)
        # FinishStartup
        try:
            _attach_monitor(driver, rd, MONITOR_START_TIMEOUT)
        except PyvirtError as e:
            if proc.wait_for_exit(pid, 1.0):
                raise _early_exit(name, log_path, log_start, live) from e
            raise
        assert rd.monitor is not None
        if rd.on_reboot == "destroy":
            # libvirt's qemuProcessSetupLifecycleActions: a guest reboot becomes a power-off.
            rd.monitor.execute("set-action", {"reboot": "shutdown"})
        if not paused:
            _resume(rd, VIR_DOMAIN_RUNNING_BOOTED)
        rd.security = sec.status()
        rd.taints = _start_taints(driver, live)
        rd.save()
        sec.commit()
        for taint in rd.taints:
            _log_line(log_path, f"Domain id={domain_id} is tainted: {taint}")
    except BaseException:
        if rd is not None:
            rd.security = None  # undone below, by the transaction, not by the teardown
        _cleanup_failed(driver, rd, pid, lib_dir, monitor_path, name, vnc_port)
        if sec is not None:
            sec.rollback()
        if not persistent:
            _forget_transient(driver, name)
        raise
    with driver.running_lock:
        driver.running[name] = rd
    rd.events = driver.events
    # libvirt 9.0's order: its handler of QEMU's RESUME (from 'cont') reports RESUMED before the
    # start itself reports STARTED; a paused start reports STARTED, then SUSPENDED.
    if not paused:
        rd.emit(EVENT_RESUMED, 0)
    rd.emit(EVENT_STARTED, 0)  # ..._STARTED_BOOTED
    if paused:
        rd.emit(EVENT_SUSPENDED, 0)
    return rd


def _write_master_key(lib_dir: Path, sec: LaunchSecurity) -> bytes:
    """libvirt's qemuDomainMasterKeyCreate: 32 random bytes QEMU reads as secret 'masterKey0'."""
    from pyvirt.qemu.command import MASTER_KEY_FILE

    path = lib_dir / MASTER_KEY_FILE
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    sec.own(path)
    return key


def _early_exit(name: str, log_path: Path, offset: int, dom: Domain | None = None) -> StartError:
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        text = ""
    # The first line is our own command line; QEMU's words follow it.
    said = text.split("\n", 2)[2] if text.count("\n") >= 2 else ""
    tail = said.strip()[-LOG_TAIL_BYTES:]
    detail = f": {tail}" if tail else f" without a word; see {log_path}"
    if dom is not None:
        from pyvirt.secret.disk import luks_open_failure

        luks = luks_open_failure(dom, said)
        if luks is not None:
            detail = f": {luks}"
    return StartError(f"internal error: QEMU of domain '{name}' exited while starting up{detail}")


def _cleanup_failed(driver: QemuDriver, rd: RunningDomain | None, pid: int | None, lib_dir: Path,
                    monitor_path: Path, name: str, vnc_port: int | None) -> None:
    if rd is not None:
        _teardown(driver, rd, VIR_DOMAIN_SHUTOFF_FAILED)
        return
    _release_vnc_port(vnc_port)
    if pid is not None:
        try:
            proc.terminate(pid, graceful_timeout=0)
        except PyvirtError as e:
            log.warning("domain '%s': cannot kill QEMU %d after a failed start: %s", name, pid, e)
    _unlink(monitor_path)
    shutil.rmtree(lib_dir, ignore_errors=True)
    _unlink(status_path(driver, name))
    _write_shutoff(driver, name, VIR_DOMAIN_SHUTOFF_FAILED)


# --- host resources checked or reserved before launching -------------------------------------------

def _check_networks(driver: QemuDriver, dom: Domain) -> None:
    """libvirt's network lookup of PrepareDomain, for ``<interface type='network'|'bridge'>``: an
    unknown or inactive network, a missing bridge, an unprivileged instance are refused here, before
    the host is touched (:mod:`pyvirt.network.taps`)."""
    assert dom.devices is not None
    if any(net.type in ("network", "bridge") for net in dom.devices.interfaces):
        from pyvirt.network.taps import check_interfaces

        check_interfaces(driver, dom)


def _pretend_taps(dom: Domain) -> dict[str, list[int]]:
    from pyvirt.network.taps import pretend_tap_fds

    return pretend_tap_fds(dom)


def _open_taps(driver: QemuDriver, live: Domain) -> Any:
    from pyvirt.network.taps import open_taps

    return open_taps(driver, live)


def _check_disk_sources(live: Domain) -> None:
    """libvirt's check of local disk sources (qemuDomainDetermineDiskChain) before QEMU runs.

    A missing file fails the start with libvirt's message instead of QEMU's, and before anything
    exists to clean up. startupPolicy='optional' drops a missing source (the medium is ejected),
    as libvirt's qemuDomainCheckDiskStartupPolicy does; empty CD-ROMs and floppies need nothing.
    """
    assert live.devices is not None
    for disk in live.devices.disks:
        src = disk.source
        if src is None or disk.type not in ("file", "block"):
            continue
        path = src.file if disk.type == "file" else src.dev
        if not path:
            continue
        try:
            os.stat(path)
        except OSError as e:
            if src.startup_policy == "optional":
                log.warning("domain '%s': dropping the missing source '%s' of disk %s (startupPolicy "
                            "'optional')", live.name, path,
                            disk.target.dev if disk.target is not None else "?")
                disk.source = None
                continue
            # libvirt names the uid and gid QEMU would open it as; pyvirt runs QEMU as itself.
            what = f"Cannot access storage file '{path}' (as uid:{os.getuid()}, gid:{os.getgid()})"
            raise PyvirtError(f"{what}: {e.strerror or os.strerror(e.errno or errno.EIO)}",
                              code=codes.VIR_ERR_SYSTEM_ERROR, domain=codes.VIR_FROM_STORAGE,
                              str1=what, int1=e.errno or 0) from None


#: TCP ports of VNC servers of domains this process started or adopted. The bind test alone
#: cannot see a port picked by a concurrent start whose QEMU does not listen yet.
_vnc_ports: set[int] = set()
_vnc_lock = threading.Lock()


def _vnc_address(driver: QemuDriver, live: Domain) -> tuple[Any, str] | None:
    """The VNC <graphics> of ``live`` and the address it listens on, when it listens on TCP."""
    assert live.devices is not None
    for g in live.devices.graphics:
        if g.type != "vnc":
            continue
        listen = g.listens[0] if g.listens else None
        if g.socket is not None or (listen is not None and listen.type not in (None, "address")):
            return None
        # The same choice as the command builder's.
        return g, (listen.address if listen is not None and listen.address else None) or g.listen \
            or driver.conf.vnc_listen
    return None


def _bind_test(address: str, port: int) -> OSError | None:
    """Whether a server could listen on address:port now (None) or why not."""
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return OSError(errno.EADDRNOTAVAIL, f"cannot resolve '{address}': {e.strerror}")
    family, type_, proto, _, sockaddr = infos[0]
    try:
        with socket.socket(family, type_, proto) as s:
            # As QEMU binds: a connection of a previous server in TIME_WAIT does not hold the port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(sockaddr)
    except OSError as e:
        return e
    return None


def _reserve_vnc_port(driver: QemuDriver, live: Domain) -> int | None:
    """Pick (autoport) or check (fixed port) the VNC port and reserve it; sets it in the live XML.

    libvirt's virPortAllocator over qemu.conf's remote_display_port_min..max. A fixed port is
    checked too, so that a busy one fails the start with its number rather than with QEMU's log.
    """
    found = _vnc_address(driver, live)
    if found is None:
        return None
    g, address = found
    name = live.name or ""
    with _vnc_lock:
        if g.autoport or g.port in (None, -1):
            lo, hi = driver.conf.remote_display_port_min, driver.conf.remote_display_port_max
            for port in range(lo, hi + 1):
                if port not in _vnc_ports and _bind_test(address, port) is None:
                    break
            else:
                raise PyvirtError(f"internal error: Unable to find an unused port in range 'display' "
                                  f"({lo}-{hi})", code=codes.VIR_ERR_INTERNAL_ERROR,
                                  domain=codes.VIR_FROM_NONE)
        else:
            port = int(g.port)
            busy = (OSError(errno.EADDRINUSE, "used by another domain of pyvirt") if port in _vnc_ports
                    else _bind_test(address, port))
            if busy is not None:
                raise OperationFailed(f"operation failed: VNC port {port} of domain '{name}' on {address} "
                                      f"is not available: {busy.strerror}; free it or use autoport='yes'")
        _vnc_ports.add(port)
    g.port = port
    return port


def _release_vnc_port(port: int | None) -> None:
    if port is not None:
        with _vnc_lock:
            _vnc_ports.discard(port)


# --- monitor and events ----------------------------------------------------------------------------

def _attach_monitor(driver: QemuDriver, rd: RunningDomain, timeout: float) -> None:
    mon = Monitor(f"QEMU monitor of domain '{rd.name}'",
                  on_disconnect=lambda info: _on_disconnect(driver, rd, info))
    mon.subscribe(lambda ev: _on_event(driver, rd, ev))
    mon.connect(rd.monitor_path, timeout=timeout)
    rd.monitor = mon


def _on_event(driver: QemuDriver, rd: RunningDomain, event: QMPEvent) -> None:
    bus = rd.events
    if bus is not None and bus.has_listeners(QEMU_MONITOR):
        _emit_monitor_event(rd, bus, event)
    if event.name == "SHUTDOWN":
        rd.got_shutdown = True
        if not rd.stopping and not rd.fake_reboot:
            # libvirt's qemuProcessHandleShutdown: the guest (or QEMU's host side) powered it off
            guest = isinstance(event, ShutdownEvent) and event.guest
            rd.emit(EVENT_SHUTDOWN, EVENT_SHUTDOWN_GUEST if guest else EVENT_SHUTDOWN_HOST)
        if _restarts_on_poweroff(rd):
            # libvirt's fake reboot: -no-shutdown kept QEMU alive; reset it and run the guest again.
            # From a thread: the reset waits for this monitor's reader, which runs this handler.
            _in_thread(driver, _finish_fake_reboot, rd)
        else:
            # The guest powered off (or QEMU was asked to quit): nothing will run it again, so stop
            # QEMU as libvirtd does; from a thread, since the stop closes this very monitor.
            _in_thread(driver, stop, driver, rd, VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    elif event.name == "SUSPEND":
        # The guest suspended itself to RAM (ACPI S3): libvirt's qemuProcessHandlePMSuspend.
        with rd.lock:
            if rd.state == VIR_DOMAIN_RUNNING and not rd.stopping:
                rd.set_state(VIR_DOMAIN_PMSUSPENDED, 0)
    elif event.name == "WAKEUP":
        with rd.lock:
            if rd.state == VIR_DOMAIN_PMSUSPENDED and not rd.stopping:
                rd.set_state(VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_WAKEUP)
    elif event.name == "RESET":
        if bus is not None and not rd.stopping:
            bus.reboot(rd.name, rd.uuid, rd.domain_id)
    elif event.name == "GUEST_PANICKED":
        with rd.lock:
            if rd.stopping:
                return
            # Set before QEMU's STOP that follows, which then leaves the state alone.
            rd.set_state(VIR_DOMAIN_CRASHED, VIR_DOMAIN_CRASHED_PANICKED)
        _in_thread(driver, _handle_panic, driver, rd)
    elif event.name == "STOP":
        with rd.lock:
            if rd.state == VIR_DOMAIN_RUNNING and not rd.got_shutdown:  # libvirt ignores it too
                reason = rd.expected_pause if rd.expected_pause is not None else VIR_DOMAIN_PAUSED_UNKNOWN
                rd.set_state(VIR_DOMAIN_PAUSED, reason)
    elif event.name == "RESUME":
        with rd.lock:
            if rd.state == VIR_DOMAIN_PAUSED:
                reason = rd.expected_resume if rd.expected_resume is not None else VIR_DOMAIN_RUNNING_UNPAUSED
                rd.set_state(VIR_DOMAIN_RUNNING, reason)


def _emit_monitor_event(rd: RunningDomain, bus: EventBus, event: QMPEvent) -> None:
    """libvirt-qemu's monitor event: the QMP event as QEMU sent it."""
    stamp = event.timestamp if event.timestamp is not None else -1.0
    seconds = int(stamp) if stamp >= 0 else -1
    micros = int(round((stamp - seconds) * 1_000_000)) if stamp >= 0 else -1
    details = json.dumps(dict(event.data), separators=(",", ":")) if event.data else None
    args = (event.name, seconds, micros, details)
    bus.emit(DomainEvent(QEMU_MONITOR, rd.name, rd.uuid, rd.domain_id, args))


def _on_disconnect(driver: QemuDriver, rd: RunningDomain, info: Disconnect) -> None:
    # Called only when QEMU ended the connection: without a SHUTDOWN first, that is a crash.
    if not rd.stopping:
        _in_thread(driver, stop, driver, rd, VIR_DOMAIN_SHUTOFF_CRASHED)


def _in_thread(driver: QemuDriver, fn: Any, *args: Any) -> None:
    """Run ``fn`` on a thread of its own, which the driver's close waits for (see
    :func:`close_all`): the monitor's reader, which delivers the event, cannot wait for replies."""
    def run() -> None:
        try:
            fn(*args)
        finally:
            with driver.running_lock:
                driver.handlers.discard(thread)

    thread = threading.Thread(target=run, name=f"pyvirt-domain-{fn.__name__.strip('_')}", daemon=True)
    with driver.running_lock:  # (started within: close_all joins only started threads)
        driver.handlers.add(thread)
        thread.start()


# --- stop ------------------------------------------------------------------------------------------

def stop(driver: QemuDriver, rd: RunningDomain, reason: int, *, graceful: bool = True,
         sigterm_only: bool = False) -> None:
    """libvirt's qemuProcessStop: end QEMU (SIGTERM, then SIGKILL), remove its runtime files and
    record ``reason`` as why the domain is shut off. No-op when another stop got there first.

    ``sigterm_only`` is VIR_DOMAIN_DESTROY_GRACEFUL: QEMU gets SIGTERM alone, and when it has not
    exited after :data:`GRACEFUL_DESTROY_TIMEOUT` the stop fails and the domain keeps running.
    """
    with rd.lock:
        if rd.stopping:
            return
        # Set before the signal: QEMU's SHUTDOWN event and end of monitor must not be taken for a
        # guest power-off or a crash while we stop it.
        rd.stopping = True
    if sigterm_only:
        try:
            _sigterm_and_wait(rd, GRACEFUL_DESTROY_TIMEOUT)
        except BaseException:
            with rd.lock:
                rd.stopping = False
            raise
    _teardown(driver, rd, reason, graceful=graceful)


def _sigterm_and_wait(rd: RunningDomain, timeout: float) -> None:
    """libvirt's virProcessKillPainfully(force=false): SIGTERM, wait, never SIGKILL."""
    pid = rd.pid
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        # Checked once the pidfd pins the process: a reused pid is not signalled.
        if not rd.identity.matches():
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except ProcessLookupError:
            return
    finally:
        os.close(pidfd)
    if proc.wait_for_exit(rd.identity, timeout):
        return
    what = f"Failed to terminate process {pid} with SIGTERM"
    raise PyvirtError(f"{what}: {os.strerror(errno.EBUSY)}", code=codes.VIR_ERR_SYSTEM_ERROR,
                      domain=codes.VIR_FROM_NONE, str1=what, int1=errno.EBUSY)


def _teardown(driver: QemuDriver, rd: RunningDomain, reason: int, *, graceful: bool = True) -> None:
    with rd.lock:  # an event handler saving the state holds it: no status file reappears after us
        rd.stopping = True
    if reason == VIR_DOMAIN_SHUTOFF_DESTROYED and graceful and not rd.got_shutdown:
        # QEMU answers the SIGTERM below with SHUTDOWN (host-signal), which libvirt reports as
        # ..._SHUTDOWN_HOST before ..._STOPPED_DESTROYED; the monitor is closed first here, so
        # pyvirt reports it itself, in libvirt's order.
        rd.emit(EVENT_SHUTDOWN, EVENT_SHUTDOWN_HOST)
    try:
        # The monitor stays open while QEMU ends: what it says meanwhile (SHUTDOWN host-signal)
        # still reaches monitor event listeners, as with libvirt; `stopping` keeps it from being
        # taken for a guest power-off or a crash.
        proc.terminate(rd.identity, graceful_timeout=proc.GRACEFUL_TIMEOUT if graceful else 0)
    finally:
        if rd.monitor is not None:
            try:
                rd.monitor.close()
            except PyvirtError as e:
                log.debug("domain '%s': closing the monitor: %s", rd.name, e)
        if rd.security is not None:
            for problem in restore_security(driver, rd.security):
                log.warning("domain '%s': %s", rd.name, problem)
            rd.security = None
        _unlink(rd.monitor_path)
        shutil.rmtree(rd.lib_dir, ignore_errors=True)
        _unlink(rd.status_path)
        _release_vnc_port(rd.vnc_port)
        if rd.persistent:
            _write_shutoff(driver, rd.name, reason)
        with driver.running_lock:
            if driver.running.get(rd.name) is rd:
                del driver.running[rd.name]
                if not rd.persistent:
                    _forget_transient(driver, rd.name)
        rd.state, rd.reason = VIR_DOMAIN_SHUTOFF, reason
        if reason in _STOPPED_DETAILS:
            rd.emit(EVENT_STOPPED, _STOPPED_DETAILS[reason])


def _forget_transient(driver: QemuDriver, name: str) -> None:
    # A transient domain leaves nothing behind once stopped, as libvirt removes its object.
    with driver.running_lock:
        driver.transient.pop(name, None)
    forget_shutoff(driver, name)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# --- reconnect -------------------------------------------------------------------------------------

#: QEMU's run-states (query-status) that mean the vCPUs run / were stopped by someone
_QEMU_RUNNING = {"running", "debug"}


def reconnect_all(driver: QemuDriver) -> None:
    """libvirt's qemuProcessReconnectAll: adopt every QEMU a status file names, clean up the rest.

    Never raises: one unusable status file must not make the whole root unusable.
    """
    for path in sorted(driver.paths.run_dir.glob("*.json")):
        try:
            data = proc.read_status(path, STATUS_FORMAT)
            rd = RunningDomain.from_status(path, data)
        except FileNotFoundError:
            continue
        except PyvirtError as e:
            log.warning("%s: skipped: %s", path, e)
            continue
        try:
            _reconnect(driver, rd)
        except Exception as e:  # noqa: BLE001 - whatever broke, this domain is gone for us
            log.warning("domain '%s': reconnect failed (%s); stopping it", rd.name, e)
            stop(driver, rd, VIR_DOMAIN_SHUTOFF_CRASHED, graceful=False)


def _reconnect(driver: QemuDriver, rd: RunningDomain) -> None:
    rd.events = driver.events
    if rd.security is not None and rd.identity.matches():
        from pyvirt.qemu.security import reserve

        reserve(driver, rd.security, driver.domains.parse_live(rd.xml))
    if not rd.identity.matches():
        # It died (or its pid was reused) while no process watched it.
        stop(driver, rd, VIR_DOMAIN_SHUTOFF_CRASHED)
        return
    with driver.running_lock:
        driver.running[rd.name] = rd
        if not rd.persistent:
            driver.transient[rd.name] = _live_definition(driver, rd)
    if rd.vnc_port is not None:
        # Its QEMU holds the port; keep starts of this process from picking it meanwhile.
        with _vnc_lock:
            _vnc_ports.add(rd.vnc_port)
    _attach_monitor(driver, rd, proc.GRACEFUL_TIMEOUT)
    assert rd.monitor is not None
    status = rd.monitor.execute("query-status")
    qemu_state = str(status.get("status", ""))
    if rd.resetting and qemu_state in ("shutdown", "prelaunch", "guest-panicked"):
        # An earlier process died while it finished a reboot, before its cont: finish it here.
        _finish_fake_reboot(rd)
    elif rd.resetting and (qemu_state in _QEMU_RUNNING or status.get("running")):
        # ... or after its cont, before it recorded the guest running again.
        _rebooted(rd)
    elif qemu_state == "shutdown" and _restarts_on_poweroff(rd):
        # The reboot asked for by an earlier process: the guest powered off while nobody listened.
        _finish_fake_reboot(rd)
    elif qemu_state == "guest-panicked":
        # The guest panicked while nobody listened (or its on_crash is preserve): act now.
        if rd.state != VIR_DOMAIN_CRASHED:
            rd.set_state(VIR_DOMAIN_CRASHED, VIR_DOMAIN_CRASHED_PANICKED)
            _handle_panic(driver, rd)
    elif qemu_state == "shutdown":
        # The guest powered off while nobody listened; -no-shutdown kept QEMU waiting for us.
        stop(driver, rd, VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    elif qemu_state in _QEMU_RUNNING or status.get("running"):
        if rd.state != VIR_DOMAIN_RUNNING:
            rd.set_state(VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_UNKNOWN)
    elif rd.state != VIR_DOMAIN_PAUSED:
        rd.set_state(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_UNKNOWN)


def _live_definition(driver: QemuDriver, rd: RunningDomain) -> Domain:
    """The definition of a transient domain, read back from its live XML."""
    dom = driver.domains.parse(rd.xml)
    dom.id = None
    return dom


#: How long the driver's close waits for what QEMU's events started (a stop may take its SIGTERM's
#: grace, then SIGKILL).
HANDLERS_WAIT = proc.GRACEFUL_TIMEOUT + 5.0


def close_all(driver: QemuDriver) -> None:
    """Let go of the monitors (QEMU keeps running) when the driver closes, once what QEMU's events
    started is done: a process that ended in the midst of a reboot's reset and cont would leave
    the guest paused until another one reconnects."""
    deadline = time.monotonic() + HANDLERS_WAIT
    while True:
        with driver.running_lock:
            pending = [t for t in driver.handlers if t is not threading.current_thread()]
        left = deadline - time.monotonic()
        if not pending:
            break
        if left <= 0:
            log.warning("closing with %d event handler(s) still running: %s", len(pending),
                        ", ".join(t.name for t in pending))
            break
        pending[0].join(left)
    with driver.running_lock:
        domains = list(driver.running.values())
    for rd in domains:
        if rd.monitor is not None:
            try:
                rd.monitor.close()
            except PyvirtError as e:
                log.debug("domain '%s': closing the monitor: %s", rd.name, e)


# --- operations on a running domain -----------------------------------------------------------------

def suspend(rd: RunningDomain) -> None:
    with rd.lock:
        if rd.state == VIR_DOMAIN_PAUSED:
            return
        rd.expected_pause = VIR_DOMAIN_PAUSED_USER
    try:
        _monitor(rd).execute("stop")
    finally:
        rd.expected_pause = None
    rd.set_state(VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_USER)


def resume(rd: RunningDomain) -> None:
    with rd.lock:
        if rd.state == VIR_DOMAIN_RUNNING:
            # libvirt's qemuDomainResume refuses too (suspend of a paused domain is accepted).
            raise OperationInvalid("Requested operation is not valid: domain is already running")
    _resume(rd, VIR_DOMAIN_RUNNING_UNPAUSED)


def _resume(rd: RunningDomain, reason: int) -> None:
    # The RESUME event may be handled before or after 'cont' returns: both set the same reason.
    with rd.lock:
        rd.expected_resume = reason
    try:
        _monitor(rd).execute("cont")
        with rd.lock:
            if rd.state != VIR_DOMAIN_RUNNING:
                rd.set_state(VIR_DOMAIN_RUNNING, reason)
    finally:
        rd.expected_resume = None


def powerdown(rd: RunningDomain) -> None:
    mon = _monitor(rd)
    with rd.lock:
        if rd.fake_reboot:
            # A shutdown overrides a reboot still pending, as libvirt's qemuDomainShutdownFlags does.
            rd.fake_reboot = False
            rd.save()
    mon.execute("system_powerdown")


def reboot(rd: RunningDomain) -> None:
    """libvirt's reboot without a guest agent: ACPI power button, then a "fake reboot".

    The guest powers off; QEMU (-no-shutdown) stays, and the SHUTDOWN that follows resets the
    machine and runs it again instead of stopping it. The pending reboot is saved in the status
    file, since the power-off may come when a later process (or none) holds the monitor.
    """
    mon = _monitor(rd)
    with rd.lock:
        rd.fake_reboot = True
        rd.save()
    try:
        mon.execute("system_powerdown")
    except BaseException:
        with rd.lock:
            rd.fake_reboot = False
            rd.save()
        raise


def pm_wakeup(rd: RunningDomain) -> None:
    """libvirt's virDomainPMWakeup: wake a guest suspended to RAM (QMP system_wakeup)."""
    with rd.lock:
        if rd.state != VIR_DOMAIN_PMSUSPENDED:
            raise OperationInvalid("Requested operation is not valid: Domain is not pmsuspended")
    _monitor(rd).execute("system_wakeup")


def reset(rd: RunningDomain) -> None:
    """The reset button (QMP system_reset): the guest restarts at once, without being asked."""
    _monitor(rd).execute("system_reset")


def _restarts_on_poweroff(rd: RunningDomain) -> bool:
    return rd.fake_reboot or rd.on_poweroff in ("restart", "rename-restart")


def _finish_fake_reboot(rd: RunningDomain) -> None:
    """libvirt's qemuProcessFakeReboot: reset the powered-off machine and start its vCPUs again.

    The status file says a reboot is under way from before the reset until the guest is recorded
    running: a process that ends in between (a short-lived pyvirsh that got the SHUTDOWN) leaves
    the rest to the next one that reconnects. Resetting a machine that has not run since is
    harmless, so that one starts over from the reset.
    """
    try:
        mon = _monitor(rd)
        with rd.lock:
            rd.fake_reboot = False
            rd.resetting = True
            rd.save()
        mon.execute("system_reset")
        with rd.lock:
            rd.got_shutdown = False
        _resume(rd, VIR_DOMAIN_RUNNING_BOOTED)
        _rebooted(rd)
        rd.emit(EVENT_RESUMED, 0)  # libvirt's qemuProcessFakeReboot: ..._RESUMED_UNPAUSED
    except PyvirtError as e:
        log.warning("domain '%s': the reboot failed: %s", rd.name, e)


def _rebooted(rd: RunningDomain) -> None:
    with rd.lock:
        rd.resetting = False
        rd.got_shutdown = False
    rd.set_state(VIR_DOMAIN_RUNNING, VIR_DOMAIN_RUNNING_BOOTED)
    rd.save()


def _handle_panic(driver: QemuDriver, rd: RunningDomain) -> None:
    """libvirt's processGuestPanicEvent: carry out <on_crash> for a guest that panicked.

    QEMU (-no-shutdown) has paused the guest in run-state guest-panicked.
    """
    action = rd.on_crash
    if action.startswith("coredump-"):
        try:
            _core_dump(driver, rd)
        except (OSError, PyvirtError) as e:
            log.warning("domain '%s': the crash dump failed: %s", rd.name, e)
    if action in ("destroy", "coredump-destroy"):
        stop(driver, rd, VIR_DOMAIN_SHUTOFF_CRASHED)
    elif action in ("restart", "coredump-restart"):
        _finish_fake_reboot(rd)
    # preserve: the guest stays paused, crashed, for inspection or a dump


def _core_dump(driver: QemuDriver, rd: RunningDomain) -> Path:
    """Dump the guest's memory to auto_dump_path as libvirt's on_crash=coredump-* does.

    The file is opened here and passed to QEMU by descriptor, so that neither the name nor the
    directory's permissions reach QEMU.
    """
    conf_dir = driver.conf.auto_dump_path
    dump_dir = Path(conf_dir) if conf_dir else driver.paths.lib_dir / "dump"
    dump_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H:%M:%S")
    path = dump_dir / f"{rd.domain_id}-{short_domain_name(rd.name)}-{stamp}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        mon = _monitor(rd)
        mon.send_fd(fd, "pyvirt-dump")
    finally:
        os.close(fd)
    # dump-guest-memory returns once the dump is written (no detach); a large guest takes a while.
    mon.execute("dump-guest-memory", {"paging": False, "protocol": "fd:pyvirt-dump"}, timeout=600)
    log.info("domain '%s': crash dump written to %s", rd.name, path)
    return path


def cpu_time_ns(rd: RunningDomain) -> int:
    try:
        with open(f"/proc/{rd.pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(rest[11]) + int(rest[12])  # utime + stime
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _monitor(rd: RunningDomain) -> Monitor:
    if rd.monitor is None or rd.stopping:
        raise OperationInvalid(f"Requested operation is not valid: domain '{rd.name}' is not running")
    return rd.monitor


def monitor(rd: RunningDomain) -> Monitor:
    """The monitor of running ``rd`` (OperationInvalid once it stops), for pyvirt.qemu.queries."""
    return _monitor(rd)
