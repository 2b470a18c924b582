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
    from pyvirt.qemu.domains import DomainStore
    from pyvirt.qemu.postparse import PostParseContext
    from pyvirt.qemu.process import RunningDomain
    from pyvirt.xml.domain import Domain


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
        # ReconnectAll: QEMUs started by an earlier process are adopted (or found gone) at once;
        # the monitor code is only loaded when there is a status file to act on.
        if any(paths.run_dir.glob("*.json")):
            from pyvirt.qemu import process

            try:
                process.reconnect_all(driver)
            except BaseException:
                driver.close()
                raise
        return driver

    def close(self) -> None:
        if self.running:
            from pyvirt.qemu import process

            process.close_all(self)
        self._lock.release()

    # -- capabilities -------------------------------------------------------------------------

    def hypervisor_version(self) -> int:
        from pyvirt.qemu import capabilities

        return capabilities.hypervisor_version(self.paths.cache_dir)

    def capabilities_xml(self) -> str:
        from pyvirt.qemu import caps_xml

        return caps_xml.capabilities_xml(self.paths.cache_dir, self.secmodels())

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
        return [("none", "0", {}), ("dac", "0", {"kvm": label, "qemu": label})]

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
        with self._store_lock:
            if self._store is None:
                from pyvirt.qemu.domains import DomainStore
                from pyvirt.qemu.postparse import QemuDomainConfig

                self._store = DomainStore(self.paths.domain_config_dir,
                                          QemuDomainConfig(self.post_parse_context()))
            return self._store

    def define_xml(self, xml: str | bytes, *, validate: bool = False) -> Domain:
        return self.domains.define(xml, validate=validate)

    # -- lifecycle ------------------------------------------------------------------------------

    def running_domain(self, name: str) -> RunningDomain | None:
        with self.running_lock:
            return self.running.get(name)

    def _require_running(self, name: str) -> RunningDomain:
        rd = self.running_domain(name)
        if rd is None:
            raise OperationInvalid(f"Requested operation is not valid: domain '{name}' is not running")
        return rd

    def start_domain(self, name: str, *, paused: bool = False) -> RunningDomain:
        from pyvirt.qemu import process

        return process.start(self, self.domains.get(name), paused=paused)

    def destroy_domain(self, name: str, *, graceful: bool = True) -> None:
        from pyvirt.qemu import process

        process.stop(self, self._require_running(name), process.VIR_DOMAIN_SHUTOFF_DESTROYED,
                     graceful=graceful)

    def shutdown_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        process.powerdown(self._require_running(name))

    def suspend_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        process.suspend(self._require_running(name))

    def resume_domain(self, name: str) -> None:
        from pyvirt.qemu import process

        process.resume(self._require_running(name))

    def domain_state(self, name: str) -> tuple[int, int]:
        """libvirt's (state, reason) of the domain ``name``."""
        from pyvirt.qemu import process

        rd = self.running_domain(name)
        if rd is not None:
            return rd.state, rd.reason
        return process.VIR_DOMAIN_SHUTOFF, process.shutoff_reason(self, name)
