# SPDX-License-Identifier: LGPL-2.1-or-later
"""The ``logical`` pool backend: an LVM volume group whose logical volumes are the pool's volumes.

As libvirt 9.0's storage_backend_logical.c: build zeroes the start of each source device, runs
pvcreate on it and vgcreate over all (NO_OVERWRITE, the default, first probes each device with
blkid and refuses one holding anything but nothing; a failed build pvremoves what it made); a pool
is active while its volume group exists on its devices (pvs); start is ``vgchange -aly``, stop
``vgchange -aln``, delete ``vgremove -f`` then pvremove of each device; refresh reads vg_size and
vg_free (vgs) and the active, non-thin-pool LVs (lvs). A volume is an LV: key its LV uuid, path
/dev/VG/LV, type block. Creating one is ``lvcreate --name NAME -L SIZEK VG --yes`` (a smaller
allocation makes a sparse snapshot with --virtualsize, as libvirt), deleting it ``lvremove -f``
(after ``lvchange -aln`` when busy); wipe, upload and download use the LV's device.

Beyond libvirt: the volume group and LV names must be LVM names (no '/', nothing read as an
option) and devices block devices, checked before anything runs; a volume format other than raw
is refused (libvirt silently makes a raw LV); resize runs lvresize (libvirt has no resize for
this pool type); a host without device-mapper (LVs cannot be activated: /dev/mapper/control
missing) gets a VIR_ERR_NO_SUPPORT error naming that before lvcreate runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from pyvirt import _errcodes as codes
from pyvirt.storage.hosttools import (
    BUILD_OVERWRITE,
    check_absolute,
    check_build_flags,
    check_device,
    check_vg_name,
    device_size,
    probe_signature,
    run,
    storage_error,
)
from pyvirt.xml.storage import Pool

__all__ = ["LogicalVolume", "validate", "build", "match_source", "start", "stop", "delete", "measure",
           "volumes", "create_volume", "delete_volume", "resize_volume", "device_mapper_problem"]

_LVS_FIELDS = "lv_name,origin,uuid,devices,segtype,stripes,seg_size,vg_extent_size,size,lv_attr"
_ZERO_BYTES = 1024 * 1024  # libvirt clears the first MiB (partition tables, old PV labels)
_DM_CONTROL = "/dev/mapper/control"


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    key: str
    path: str
    capacity: int
    allocation: int
    sparse: bool
    origin: str | None


def _vg(pool: Pool) -> str:
    return check_vg_name(pool.source.name if pool.source is not None else None)


def _devices(pool: Pool) -> list[str]:
    return [d.path or "" for d in pool.source.devices] if pool.source is not None else []


def validate(pool: Pool) -> None:
    """What must hold before any LVM command sees the pool's values (also checked at define)."""
    _vg(pool)
    for device in _devices(pool):
        check_absolute(pool.name, device)


def build(pool: Pool, flags: int) -> None:
    check_build_flags(flags)
    validate(pool)
    vg = _vg(pool)
    devices = _devices(pool)
    if not devices:
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            f"unsupported configuration: storage pool '{pool.name}' has no source device "
                            "to build its volume group on: add <source><device path='/dev/...'/>")
    # every check first: a refused build changes no device
    for device in devices:
        check_device(pool.name or "", device)
        if not flags & BUILD_OVERWRITE:
            found = probe_signature(device)
            if found == ("TYPE", "LVM2_member"):
                raise storage_error(codes.VIR_ERR_STORAGE_POOL_BUILT,
                                    f"Storage pool already built: Device '{device}' already formatted "
                                    "using 'LVM2_member'")
            if found is not None:
                raise storage_error(codes.VIR_ERR_STORAGE_POOL_BUILT,
                                    f"Storage pool already built: Format of device '{device}' does not "
                                    "match the expected format 'LVM2_member', forced overwrite is necessary")
    made: list[str] = []
    try:
        for device in devices:
            _zero_start(device)
            run(["pvcreate", device], lvm=True)
            made.append(device)
        run(["vgcreate", vg, *devices], lvm=True)
    except BaseException:
        for device in made:
            run(["pvremove", device], lvm=True, check=False)
        raise


def _zero_start(device: str) -> None:
    try:
        fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise storage_error(codes.VIR_ERR_SYSTEM_ERROR, f"cannot open device '{device}': {e.strerror}",
                            int1=e.errno or 0) from e
    try:
        size = min(_ZERO_BYTES, os.lseek(fd, 0, os.SEEK_END))
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, bytes(size))
        os.fsync(fd)
    except OSError as e:
        raise storage_error(codes.VIR_ERR_SYSTEM_ERROR,
                            f"cannot clear device header of '{device}': {e.strerror}",
                            int1=e.errno or 0) from e
    finally:
        os.close(fd)


def _pvs() -> dict[str, list[str]]:
    """Volume group -> its physical volumes (pvs)."""
    out = run(["pvs", "--noheadings", "-o", "pv_name,vg_name"], lvm=True).stdout
    groups: dict[str, list[str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            groups.setdefault(parts[1], []).append(parts[0])
    return groups


def match_source(pool: Pool) -> None:
    """libvirt's virStorageBackendLogicalMatchPoolSource: the group exists on the pool's devices."""
    vg = _vg(pool)
    groups = _pvs()
    if vg not in groups:
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            f"unsupported configuration: cannot find logical volume group name '{vg}'")
    devices = _devices(pool)
    if devices and not any(os.path.realpath(d) in {os.path.realpath(p) for p in groups[vg]}
                           for d in devices):
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            "unsupported configuration: cannot find any matching source devices for "
                            f"logical volume group '{vg}'")


def start(pool: Pool) -> None:
    match_source(pool)
    run(["vgchange", "-aly", _vg(pool)], lvm=True)


def stop(pool: Pool) -> None:
    run(["vgchange", "-aln", _vg(pool)], lvm=True)


def delete(pool: Pool) -> None:
    vg = _vg(pool)
    run(["vgremove", "-f", vg], lvm=True)
    for device in _devices(pool):
        run(["pvremove", device], lvm=True, check=False)


def measure(pool: Pool) -> tuple[int, int, int]:
    """(capacity, allocation, available) of the volume group (vgs)."""
    out = run(["vgs", "--separator", ":", "--noheadings", "--units", "b", "--unbuffered", "--nosuffix",
               "--options", "vg_size,vg_free", _vg(pool)], lvm=True).stdout
    m = re.search(r"^\s*([0-9]+):([0-9]+):?\s*$", out, re.M)
    if m is None:
        raise storage_error(codes.VIR_ERR_INTERNAL_ERROR,
                            f"internal error: unexpected output of vgs: {out.strip()!r}")
    capacity, free = int(m.group(1)), int(m.group(2))
    return capacity, capacity - free, free


def parse_lvs(output: str, target: str) -> list[LogicalVolume]:
    """The volumes in lvs output (libvirt's virStorageBackendLogicalMakeVol): inactive LVs and
    thin pools are skipped; an LV with several segments is one volume."""
    found: dict[str, LogicalVolume] = {}
    for line in output.splitlines():
        fields = line.strip().rstrip("#").split("#")
        if len(fields) != 10:
            continue
        name, origin, uuid, _devs, _segtype, _stripes, _seg, _extent, size, attrs = fields
        if len(attrs) < 5 or attrs[4] != "a" or attrs[0] == "t" or name in found:
            continue
        if not size.isdigit():
            raise storage_error(codes.VIR_ERR_INTERNAL_ERROR,
                                "internal error: malformed volume allocation value")
        path = f"{target}/{name}"
        try:
            capacity = device_size(path)
        except OSError:
            capacity = int(size)
        found[name] = LogicalVolume(name=name, key=uuid, path=path, capacity=capacity,
                                    allocation=int(size), sparse=attrs[0] == "s",
                                    origin=origin if origin and not origin.startswith("[") else None)
    return sorted(found.values(), key=lambda v: v.name)


def volumes(pool: Pool) -> list[LogicalVolume]:
    out = run(["lvs", "--separator", "#", "--noheadings", "--units", "b", "--unbuffered", "--nosuffix",
               "--options", _LVS_FIELDS, _vg(pool)], lvm=True).stdout
    return parse_lvs(out, pool.path)


def device_mapper_problem() -> str | None:
    """Why this host cannot activate LVs, or None when it can."""
    try:
        fd = os.open(_DM_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{_DM_CONTROL}: {e.strerror}"
    os.close(fd)
    return None


def create_volume(pool: Pool, name: str, capacity: int, allocation: int | None, fmt: str) -> None:
    vg = _vg(pool)
    check_vg_name(name, "logical volume")
    if fmt not in ("raw", "none"):
        raise storage_error(codes.VIR_ERR_CONFIG_UNSUPPORTED,
                            f"unsupported configuration: volume format '{fmt}' in logical pool "
                            f"'{pool.name}': a logical volume is a raw block device; use format raw")
    problem = device_mapper_problem()
    if problem is not None:
        raise storage_error(codes.VIR_ERR_NO_SUPPORT,
                            "this function is not supported by the connection driver: cannot create "
                            f"logical volume '{name}' in volume group '{vg}': this host's kernel offers no "
                            f"device-mapper ({problem}), so LVM cannot activate logical volumes here")
    argv = ["lvcreate", "--name", name, "-L"]
    if allocation is not None and allocation != capacity:
        argv += [f"{((allocation or 1) + 1023) // 1024}K", "--type", "snapshot", "--virtualsize"]
    argv += [f"{(capacity + 1023) // 1024}K", vg, "--yes"]
    run(argv, lvm=True)


def delete_volume(path: str) -> None:
    if run(["lvremove", "-f", path], lvm=True, check=False).returncode != 0:
        run(["lvchange", "-aln", path], lvm=True)
        run(["lvremove", "-f", path], lvm=True)


def resize_volume(path: str, capacity: int, shrink: bool) -> None:
    run(["lvresize", *(["-f"] if shrink else []), "-L", f"{(capacity + 1023) // 1024}K", path], lvm=True)
