# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the security layer needs to know about a domain: who QEMU runs as, and which host files.

This is deliberately not the domain model: the process layer fills a
:class:`DomainSecurityContext` from the domain definition and qemu.conf (user/group, or a per-domain
DAC seclabel), so that the security drivers never parse XML nor know QEMU's devices. One
:class:`Resource` is one host path QEMU opens, with the properties that decide how it is labelled.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ResourceKind", "Resource", "DomainSecurityContext"]


class ResourceKind(enum.Enum):
    """What a host path is to the domain; it decides which file types are accepted."""

    DISK = "disk"
    CDROM = "cdrom"
    FLOPPY = "floppy"
    KERNEL = "kernel"
    INITRD = "initrd"
    DTB = "dtb"
    LOADER = "loader"          #: firmware code (os/loader)
    NVRAM = "nvram"            #: per-domain firmware variables, written by the guest
    SERIAL_LOG = "serial_log"  #: a character device's file backend (<serial type='file'>), appended
    LOG = "log"                #: any other log file QEMU writes (<log file=...> of a chardev)
    OTHER = "other"            #: any other host file QEMU opens (fw_cfg blobs, ACPI tables...)

    @property
    def accepts_block_device(self) -> bool:
        """Disks may be host block devices; every other kind is a regular file."""
        return self in (ResourceKind.DISK, ResourceKind.CDROM, ResourceKind.FLOPPY)

    @property
    def always_readonly(self) -> bool:
        """QEMU only reads these, whatever the definition says."""
        return self in (ResourceKind.CDROM, ResourceKind.KERNEL, ResourceKind.INITRD,
                        ResourceKind.DTB, ResourceKind.LOADER)

    @property
    def created_if_missing(self) -> bool:
        """Files QEMU appends to, which pyvirt creates (empty, never truncating) when absent."""
        return self in (ResourceKind.SERIAL_LOG, ResourceKind.LOG)


@dataclass(frozen=True)
class Resource:
    """One host path QEMU opens.

    ``readonly``: QEMU only reads it (a read-only disk, and always the kinds of
    :attr:`ResourceKind.always_readonly`). ``shared``: several domains may use it at once
    (``<shareable/>``). ``relabel=False`` leaves its owner alone (libvirt's per-disk
    ``<seclabel relabel='no'/>``); the checks that QEMU can reach it still apply.
    """

    path: str
    kind: ResourceKind = ResourceKind.DISK
    readonly: bool = False
    shared: bool = False
    relabel: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.kind, str):  # accept "disk" as well as ResourceKind.DISK
            object.__setattr__(self, "kind", ResourceKind(self.kind))
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"a {self.kind.value} resource needs a path, got {self.path!r}")
        if not os.path.isabs(self.path):
            raise ValueError(f"the path of a {self.kind.value} resource must be absolute, got "
                             f"{self.path!r}")
        if "\0" in self.path:
            raise ValueError(f"the path of a {self.kind.value} resource contains a NUL byte")

    @property
    def read_only(self) -> bool:
        """Whether QEMU only reads the path (the definition's flag or the kind's nature)."""
        return self.readonly or self.kind.always_readonly

    def describe(self) -> str:
        flags = [f for f, on in (("read-only", self.readonly), ("shareable", self.shared)) if on]
        return f"{self.kind.value} '{self.path}'" + (f" ({', '.join(flags)})" if flags else "")


@dataclass(frozen=True)
class DomainSecurityContext:
    """One domain as the security drivers see it.

    ``uid``/``gid``/``groups`` are what QEMU runs as (the supplementary groups matter for the
    search-permission checks and for the child); ``groups=None`` means "the user's groups from the
    host's group database" (see :func:`pyvirt.security.privileges.supplementary_groups`).
    """

    name: str
    uuid: str
    uid: int
    gid: int
    groups: tuple[int, ...] | None = None
    resources: tuple[Resource, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.resources, tuple):
            object.__setattr__(self, "resources", tuple(self.resources))
        if self.groups is not None and not isinstance(self.groups, tuple):
            object.__setattr__(self, "groups", tuple(self.groups))
        for what, value in (("uid", self.uid), ("gid", self.gid)):
            if not isinstance(value, int) or value < 0 or value >= 2**32 - 1:
                raise ValueError(f"domain '{self.name}': {what} must be a valid id, got {value!r}")

    def effective_groups(self) -> tuple[int, ...]:
        """The supplementary groups QEMU will have (resolved from the host when not given)."""
        if self.groups is not None:
            return self.groups
        from pyvirt.security.privileges import supplementary_groups

        return supplementary_groups(self.uid, self.gid)

    def with_resources(self, resources: Iterable[Resource]) -> DomainSecurityContext:
        from dataclasses import replace

        return replace(self, resources=tuple(resources))
