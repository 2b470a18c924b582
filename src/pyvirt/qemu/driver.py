# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver: one instance (system, session or embed) with its tree, config and capabilities."""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from pyvirt.conf.instance import (
    InstanceLock,
    InstancePaths,
    embed_paths,
    session_paths,
    system_paths,
)
from pyvirt.conf.qemu_conf import QemuConf, load_qemu_conf
from pyvirt.errors import NotSupported, OperationInvalid
from pyvirt.uri import ConnectURI

if TYPE_CHECKING:
    from pyvirt.events import EventBus
    from pyvirt.qemu.domains import DomainStore
    from pyvirt.qemu.postparse import PostParseContext
    from pyvirt.qemu.process import RunningDomain
    from pyvirt.security.cgroup import CgroupHost
    from pyvirt.security.manager import SecurityStack
    from pyvirt.xml.domain import Domain, DomainParserConfig


def instance_paths(uri: ConnectURI) -> InstancePaths:
    if uri.instance == "embed":
        assert uri.embed_root is not None
        return embed_paths(uri.embed_root)
    if uri.instance == "system":
        return system_paths()
    return session_paths()


class QemuDriver:
    def __init__(self, uri: ConnectURI, paths: InstancePaths, conf: QemuConf, lock: InstanceLock) -> None:
        self.uri = uri
        self.paths = paths
        self.conf = conf
        self._lock = lock
        self._store: DomainStore | None = None
        self._store_lock = threading.Lock()
        #: running domains by name; written by pyvirt.qemu.process only
        self.running: dict[str, RunningDomain] = {}
        self.running_lock = threading.RLock()
        #: threads carrying out what QEMU's events asked for (a reboot's reset, a stop); written
        #: by pyvirt.qemu.process only, under running_lock
        self.handlers: set[threading.Thread] = set()
        #: one job at a time per domain (libvirt's job lock): start, stop and the other changes
        #: of one domain are serialised; different domains proceed in parallel
        self._jobs: dict[str, threading.RLock] = {}
        self._jobs_lock = threading.Lock()
        #: transient domains (createXML) by name: running, without a stored definition
        self.transient: dict[str, Domain] = {}
        self._events: EventBus | None = None
        #: why each inactive domain last stopped, read from its NAME.shutoff file once
        self.shutoff_cache: dict[str, int] = {}
        #: QEMU runs as qemu.conf's user/group (system, and embed as root), else as the caller
        self.privileged = os.geteuid() == 0 and uri.instance != "session"
        self._security: SecurityStack | None = None

    @classmethod
    def open(cls, uri: ConnectURI) -> QemuDriver:
        privileged = os.geteuid() == 0
        if uri.instance == "system" and not privileged:
            raise OperationInvalid(
                f"{uri.raw}: the system instance needs root (it runs QEMU as the user of its "
                "qemu.conf); run as root, or use qemu:///session for your own domains")
        paths = instance_paths(uri)
        # The configuration is read before anything is created, so that a bad qemu.conf leaves
        # no trace behind.
        conf = load_qemu_conf(paths.qemu_conf, privileged=privileged)
        for warning in conf.warnings:
            print(f"pyvirt: warning: {warning}", file=sys.stderr)
        paths.create()
        lock = InstanceLock(paths)
        lock.acquire()
        driver = cls(uri, paths, conf, lock)
        if driver.privileged:
            driver._own_state_dirs()
        # ReconnectAll: QEMUs started by an earlier process are adopted (or found gone) at once;
        # the monitor code is only loaded when there is a status file to act on.
        if any(paths.run_dir.glob("*.json")):
            from pyvirt.qemu import process

            try:
                process.reconnect_all(driver)
            except BaseException:
                driver.close()
                raise
        driver._autostart()
        return driver

    def _own_state_dirs(self) -> None:
        """Give the directories QEMU writes to qemu.conf's user and group (libvirt's
        qemuStateInitialize does the same), also when that user changed since the last open."""
        from pyvirt.conf.qemu_conf import resolve_user_group

        uid, gid = resolve_user_group(self.conf)
        for d in (self.paths.lib_dir, self.paths.cache_dir):
            st = os.stat(d)
            if (st.st_uid, st.st_gid) == (uid, gid):
                continue
            try:
                os.chown(d, uid, gid)
            except OSError as e:
                print(f"pyvirt: warning: cannot give {d} to QEMU's user {self.conf.user}:{self.conf.group} "
                      f"({e.strerror}); QEMU may fail to write there: run 'chown {uid}:{gid} {d}'",
                      file=sys.stderr)

    #: created in the run directory by the first open after the host booted, as libvirt's
    #: virDriverShouldAutostart does: autostart happens once per boot, not on every open, so that
    #: a domain destroyed on purpose stays off
    AUTOSTART_MARKER = "autostarted"

    def _autostart(self) -> None:
        marker = self.paths.run_dir / self.AUTOSTART_MARKER
        if marker.exists():
            return
        try:
            marker.touch()
        except OSError as exc:
            print(f"pyvirt: warning: {marker}: {exc.strerror}; autostart skipped", file=sys.stderr)
            return
        autostart_dir = self.paths.domain_config_dir / "autostart"
        # Without marks the definitions are not even parsed: opening stays cheap.
        if not autostart_dir.is_dir() or not any(autostart_dir.iterdir()):
            return
        from pyvirt.errors import PyvirtError

        for name in self.domains.autostart_names():
            if self.running_domain(name) is not None:
                continue
            try:
                self.start_domain(name)
            except PyvirtError as exc:
                # One domain that cannot start must not keep the driver from opening.
                print(f"pyvirt: warning: autostart of domain '{name}' failed: {exc}", file=sys.stderr)

    @property
    def events(self) -> EventBus:
        """The domain events of this driver, for every connection of this process to it (made on
        first use: a short-lived CLI call never pays for it)."""
        with self._store_lock:
            if self._events is None:
                from pyvirt.events import EventBus

                self._events = EventBus()
            return self._events

    def close(self) -> None:
        if self.running or self.handlers:
            from pyvirt.qemu import process

            process.close_all(self)
        if self._events is not None:
            self._events.close()
        self._lock.release()

    @property
    def security(self) -> SecurityStack:
        """The security drivers qemu.conf asks for, DAC last (built on first use)."""
        with self._store_lock:
            if self._security is None:
                from pyvirt.security.dac import DACDriver
                from pyvirt.security.manager import build_security_stack

                self._security = build_security_stack(
                    self.conf.security_driver, DACDriver.from_conf(self.conf), conf=self.conf,
                    apparmor_dir=str(self.paths.config_dir / "apparmor.d"))
            return self._security

    # -- capabilities -------------------------------------------------------------------------

    def hypervisor_version(self) -> int:
        from pyvirt.qemu import capabilities

        return capabilities.hypervisor_version(self.paths.cache_dir)

    def capabilities_xml(self, *, cgroup_host: CgroupHost | None = None) -> str:
        from pyvirt.qemu import caps_xml

        xml = caps_xml.capabilities_xml(self.paths.cache_dir, self.secmodels())
        note = self._device_acl_note(cgroup_host)
        return xml.replace("  </host>", f"    <!-- pyvirt: {note} -->\n  </host>", 1) if note else xml

    def _device_acl_note(self, host: CgroupHost | None) -> str | None:
        """Why QEMU's device access is not restricted by cgroups here, or None when it is (or when
        this instance uses no cgroups). libvirt's capabilities have no element for it: a comment
        in <host> says it, as the start of every domain does in a warning."""
        if self.paths.kind == "session" or self.conf.cgroup_controllers == ():
            return None  # no cgroups at all (see pyvirt.qemu.security.uses_cgroups)
        if host is None:
            with open("/proc/self/cgroup") as f:  # cheap: a v1 devices controller means enforced
                if any("devices" in line.split(":")[1].split(",") for line in f if line.count(":") >= 2):
                    return None
        from pyvirt.security import cgroup

        host = cgroup.CgroupHost.probe() if host is None else host
        enforced, why = cgroup.devices_enforcement(host.select(self.conf.cgroup_controllers))
        return None if enforced else why.replace("--", "- -")

    def domain_capabilities_xml(self, emulatorbin: str | None, arch: str | None, machine: str | None,
                                virttype: str | None) -> str:
        from pyvirt.qemu import caps_xml

        return caps_xml.domain_capabilities_xml(self.paths.cache_dir, emulatorbin=emulatorbin, arch=arch,
                                                machine=machine, virttype=virttype)

    def secmodels(self) -> list[tuple[str, str, dict[str, str]]]:
        """The security models this driver reports: (model, doi, base labels by domain type)."""
        from pyvirt.conf.qemu_conf import resolve_user_group

        uid, gid = resolve_user_group(self.conf)
        label = f"+{uid}:+{gid}"
        models = self._security.models if self._security is not None else self.conf.security_driver
        if models is None and not os.path.exists("/sys/fs/selinux/enforce") \
                and not os.path.isdir("/sys/kernel/security/apparmor"):
            models = ("none",)  # what probing the host gives, without loading the drivers
        if tuple(m for m in models or () if m != "dac") == ("none",):
            return [("none", "0", {}), ("dac", "0", {"kvm": label, "qemu": label})]
        from pyvirt.security.seclabel import secmodels

        return secmodels(self.security, label)

    # -- domain definitions ---------------------------------------------------------------------

    def post_parse_context(self) -> PostParseContext:
        """What parsing a domain needs to know of the emulators, from the probed capabilities."""
        from pyvirt.qemu import capabilities
        from pyvirt.qemu.caps_xml import guest_emulators
        from pyvirt.qemu.postparse import PostParseContext

        all_caps = capabilities.load_all(self.paths.cache_dir)
        host = capabilities.host_emulator(all_caps)
        if host is None:
            raise NotSupported("no QEMU emulator for this host's architecture was found: install "
                               "qemu-system-x86 (or the package for your architecture)")
        default = host.default_machine()
        aliases = {m.alias: m.name for m in host.machines if m.alias}
        emulators = {c.arch: c.binary for c in guest_emulators(all_caps)}
        cpu_models = {}
        for c in all_caps:
            machine = c.default_machine()
            if machine is not None and machine.default_cpu_type:
                cpu_models[c.binary] = machine.default_cpu_type.rsplit("-", 2)[0]
        return PostParseContext(
            machine_aliases=aliases,
            default_machine=default.alias or default.name if default else host.machines[0].name,
            max_cpus={m.name: m.max_cpus for m in host.machines},
            arch=host.arch,
            emulator=host.binary,
            default_cpu_model=cpu_models.get(host.binary, "qemu64"),
            emulators=emulators,
            cpu_models=cpu_models,
        )

    @property
    def domains(self) -> DomainStore:
        store = self._store  # made once, then only read: no lock once it exists
        if store is not None:
            return store
        with self._store_lock:
            if self._store is None:
                from pyvirt.qemu.domains import DomainStore

                def parser() -> DomainParserConfig:
                    from pyvirt.qemu.postparse import QemuDomainConfig  # the XML models: only to parse

                    return QemuDomainConfig(self.post_parse_context())

                self._store = DomainStore(self.paths.domain_config_dir, parser)
            return self._store

    def define_xml(self, xml: str | bytes, *, validate: bool = False) -> Domain:
        from pyvirt.qemu.domstate import EVENT_DEFINED

        with self.running_lock:
            before = set(self.domains.names())
            dom = self.domains.define(xml, validate=validate)
            name = dom.name or ""
            rd = self.running.get(name)
            if name in self.transient and rd is not None:
                # Defining a running transient domain makes it persistent, as in libvirt.
                del self.transient[name]
                rd.persistent = True
                rd.save()
        # ..._DEFINED_UPDATED for a definition replaced, ..._DEFINED_ADDED for a new one
        if self._events is not None:  # no bus yet: nobody registered for events
            self._events.lifecycle(name, dom.uuid or "", rd.domain_id if rd is not None else -1,
                                   EVENT_DEFINED, 1 if name in before else 0)
        return dom

    def undefine(self, name: str) -> None:
        """Remove the definition; a running domain goes on as a transient one (libvirt's way)."""
        with self.job(name), self.running_lock:
            dom = self.domains.get(name)
            self.domains.undefine(name)
            rd = self.running.get(name)
            if rd is not None:
                self.transient[name] = dom
                rd.persistent = False
                rd.save()
            else:
                from pyvirt.qemu.domstate import forget_shutoff

                forget_shutoff(self, name)
        if self._events is not None:  # no bus yet: nobody registered for events
            from pyvirt.qemu.domstate import EVENT_UNDEFINED

            dom_id = rd.domain_id if rd is not None else -1
            self._events.lifecycle(name, dom.uuid or "", dom_id, EVENT_UNDEFINED, 0)

    # -- lookups over persistent and transient domains ------------------------------------------

    def lookup(self, name: str) -> Domain:
        with self.running_lock:
            dom = self.transient.get(name)
        return dom if dom is not None else self.domains.get(name)

    def lookup_uuid(self, uuid: str) -> Domain:
        wanted = uuid.replace("-", "").lower()
        with self.running_lock:
            for dom in self.transient.values():
                if (dom.uuid or "").replace("-", "").lower() == wanted:
                    return dom
        return self.domains.get_by_uuid(uuid)

    def lookup_id(self, domain_id: int) -> Domain:
        from pyvirt.qemu.domains import NoDomainError

        with self.running_lock:
            name = next((rd.name for rd in self.running.values() if rd.domain_id == domain_id), None)
        if name is None:
            detail = f"no domain with matching id {domain_id}"  # unquoted, unlike name and uuid
            raise NoDomainError(f"Domain not found: {detail}", str1="Domain not found: %s", str2=detail)
        return self.lookup(name)

    def uuid_of(self, name: str) -> str | None:
        """The UUID of domain ``name`` (persistent or transient), parsing nothing; None if unknown."""
        # (one read of a dict changed only under running_lock is atomic: these hot lookups,
        # made at every remote call naming a domain, take no lock)
        dom = self.transient.get(name)
        if dom is not None:
            return dom.uuid or ""
        return self.domains.uuid_of(name)

    def is_persistent(self, name: str) -> bool:
        return name not in self.transient  # (atomic: see uuid_of)

    def all_names(self) -> list[str]:
        with self.running_lock:
            transient = set(self.transient)
        return sorted(transient | set(self.domains.names()))

    def create_xml(self, xml: str | bytes, *, paused: bool = False, validate: bool = False) -> Domain:
        """Start a domain from ``xml`` (libvirt's virDomainCreateXML).

        As in libvirt's virDomainObjListAdd: a new name and UUID make a transient domain; the name
        and UUID of an inactive persistent definition start that domain with ``xml`` as its live
        definition (the stored one is kept and used again once it stops); any other overlap is
        refused.
        """
        from pyvirt.qemu import process
        from pyvirt.qemu.domains import DomainExistsError

        dom = self.domains.parse(xml, validate=validate)
        name = dom.name or ""
        # Lock order everywhere: the domain's job, then the running table.
        with self.job(name), self.running_lock:
            persistent = False
            for other in (*self.domains.names(), *self.transient):
                known = self.lookup(other)
                if known.uuid == dom.uuid:
                    if other != name:
                        raise DomainExistsError(f"operation failed: domain '{other}' is already defined "
                                                f"with uuid {known.uuid}")
                    if other in self.running or other in self.transient:
                        raise OperationInvalid(f"Requested operation is not valid: domain '{name}' is "
                                               "already active")
                    persistent = True
                elif other == name:
                    raise DomainExistsError(f"operation failed: domain '{other}' already exists with uuid "
                                            f"{known.uuid}")
            process.start(self, dom, paused=paused, persistent=persistent)
        return dom

    # -- lifecycle ------------------------------------------------------------------------------

    def job(self, name: str) -> threading.RLock:
        """The job lock of domain ``name``; hold it for any change of the domain's state."""
        with self._jobs_lock:
            lock = self._jobs.get(name)
            if lock is None:
                lock = self._jobs[name] = threading.RLock()
            return lock

    def running_domain(self, name: str) -> RunningDomain | None:
        return self.running.get(name)  # (atomic: see uuid_of)

    def _require_running(self, name: str) -> RunningDomain:
        rd = self.running_domain(name)
        if rd is None:
            raise OperationInvalid(f"Requested operation is not valid: domain '{name}' is not running")
        return rd

    def start_domain(self, name: str, *, paused: bool = False) -> RunningDomain:
        from pyvirt.qemu import process

        with self.job(name):
            return process.start(self, self.domains.get(name), paused=paused)

    def reboot_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        with self.job(name):
            process.reboot(self._require_running(name))

    def reset_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        with self.job(name):
            process.reset(self._require_running(name))

    def xml_to_native(self, native_format: str, xml: str | bytes) -> str:
        """The QEMU command line a start of ``xml`` would run (virsh domxml-to-native qemu-argv).

        A pretend start: nothing is created or spawned, and the runtime ids are libvirt's for a
        domain that never ran (id -1, so the private directory is ``domain--1-NAME``).
        """
        from pyvirt import _errcodes as codes
        from pyvirt.errors import PyvirtError
        from pyvirt.qemu import capabilities
        from pyvirt.qemu.command import CommandRuntime, build_command, format_argv_line
        from pyvirt.qemu.command_devices import device_alias

        if native_format != "qemu-argv":
            raise PyvirtError(f"invalid argument: unsupported config type {native_format}",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_QEMU)
        dom = self.domains.parse(xml)
        from pyvirt.storage.translate import resolve_volume_disks

        resolve_volume_disks(self, dom)  # <disk type='volume'>: the storage driver's file
        name = dom.name or ""
        all_caps = capabilities.load_all(self.paths.cache_dir)
        binary = dom.devices.emulator if dom.devices is not None else None
        if binary is None:
            host = capabilities.host_emulator(all_caps)
            if host is None:
                raise NotSupported("no QEMU emulator found: install qemu-system-x86 or set <emulator>")
            binary = host.binary
        caps = capabilities.caps_for_binary(self.paths.cache_dir, binary, all_caps)
        lib_dir = self.paths.domain_lib_dir(-1, name)
        # Interfaces that need a tap get made-up descriptor numbers, as in libvirt's pretend start
        # (a real start opens the taps and passes their fds). User networking stays what it is.
        tap_fds: dict[str, list[int]] = {}
        for i, net in enumerate(dom.devices.interfaces if dom.devices is not None else []):
            if net.type in ("network", "bridge", "ethernet"):
                tap_fds[device_alias(net, f"net{i}")] = [4 + len(tap_fds)]
        # LUKS passphrases are looked up and encrypted with a throwaway master key, as libvirt's
        # pretend start does (a missing secret is the same error as at start)
        from pyvirt.secret.disk import disk_secret_values, encrypt_for_qemu

        disk_secrets = encrypt_for_qemu(os.urandom(32), disk_secret_values(self, dom))
        runtime = CommandRuntime(domain_id=-1, lib_dir=str(lib_dir), tap_fds=tap_fds,
                                 monitor_path=str(self.paths.monitor_socket(-1, name)),
                                 disk_secrets=disk_secrets)
        return format_argv_line(build_command(dom, caps, self.conf, runtime))

    def destroy_domain(self, name: str, *, graceful: bool = True, sigterm_only: bool = False) -> None:
        """Stop QEMU of ``name``: SIGTERM, then SIGKILL (or SIGKILL at once when not ``graceful``).

        ``sigterm_only`` is libvirt's VIR_DOMAIN_DESTROY_GRACEFUL: no SIGKILL; a QEMU that outlives
        the wait makes this raise and the domain stays running.
        """
        from pyvirt.qemu import process

        with self.job(name):
            process.stop(self, self._require_running(name), process.VIR_DOMAIN_SHUTOFF_DESTROYED,
                         graceful=graceful, sigterm_only=sigterm_only)

    def shutdown_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        with self.job(name):
            process.powerdown(self._require_running(name))

    def suspend_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        with self.job(name):
            process.suspend(self._require_running(name))

    def pm_wakeup_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        with self.job(name):
            process.pm_wakeup(self._require_running(name))

    def resume_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        with self.job(name):
            process.resume(self._require_running(name))

    def domain_state(self, name: str) -> tuple[int, int]:
        """libvirt's (state, reason) of the domain ``name``."""
        from pyvirt.qemu import domstate

        rd = self.running_domain(name)
        if rd is not None:
            return rd.state, rd.reason
        if not self.domains.has(name):
            # A transient domain that stopped since the caller looked it up is gone, as in libvirt.
            from pyvirt.qemu.domains import NoDomainError

            raise NoDomainError.matching("name", name)
        return domstate.VIR_DOMAIN_SHUTOFF, domstate.shutoff_reason(self, name)
