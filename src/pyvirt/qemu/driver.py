# SPDX-License-Identifier: LGPL-2.1-or-later
"""The QEMU driver: one instance (system, session or embed) with its tree, config and capabilities."""

from __future__ import annotations

import os
import sys

from pyvirt.conf.instance import (
    InstanceLock,
    InstancePaths,
    embed_paths,
    session_paths,
    system_paths,
)
from pyvirt.conf.qemu_conf import QemuConf, load_qemu_conf
from pyvirt.errors import OperationInvalid
from pyvirt.uri import ConnectURI


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
        return cls(uri, paths, conf, lock)

    def close(self) -> None:
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
