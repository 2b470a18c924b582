# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt's domain states, reasons and event numbers, and why an inactive domain last stopped.

Kept apart from :mod:`pyvirt.qemu.process` (which loads the monitor and asyncio) so that asking
the state of a shut-off domain, or defining one, stays cheap for a short-lived command.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pyvirt.errors import PyvirtError
from pyvirt.qemu import proc

if TYPE_CHECKING:
    from pyvirt.qemu.driver import QemuDriver

log = logging.getLogger(__name__)

# libvirt's virDomainState and its reasons (include/libvirt/libvirt-domain.h); numbers are API.
VIR_DOMAIN_NOSTATE = 0
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_PAUSED = 3
VIR_DOMAIN_SHUTDOWN = 4
VIR_DOMAIN_SHUTOFF = 5
VIR_DOMAIN_CRASHED = 6
VIR_DOMAIN_PMSUSPENDED = 7

VIR_DOMAIN_RUNNING_UNKNOWN = 0
VIR_DOMAIN_RUNNING_BOOTED = 1
VIR_DOMAIN_RUNNING_UNPAUSED = 5
VIR_DOMAIN_RUNNING_WAKEUP = 8

VIR_DOMAIN_PAUSED_UNKNOWN = 0
VIR_DOMAIN_PAUSED_USER = 1
VIR_DOMAIN_PAUSED_SHUTTING_DOWN = 8

VIR_DOMAIN_SHUTOFF_UNKNOWN = 0
VIR_DOMAIN_SHUTOFF_SHUTDOWN = 1
VIR_DOMAIN_SHUTOFF_DESTROYED = 2
VIR_DOMAIN_SHUTOFF_CRASHED = 3
VIR_DOMAIN_SHUTOFF_FAILED = 6

VIR_DOMAIN_CRASHED_PANICKED = 1

SHUTOFF_FORMAT = proc.StatusFormat("pyvirt-domain-shutoff", 1)

# libvirt's virDomainEventType and details (libvirt-domain.h); numbers are API
EVENT_DEFINED, EVENT_UNDEFINED, EVENT_STARTED, EVENT_SUSPENDED, EVENT_RESUMED = 0, 1, 2, 3, 4
EVENT_STOPPED, EVENT_SHUTDOWN, EVENT_PMSUSPENDED, EVENT_CRASHED = 5, 6, 7, 8
EVENT_STARTED_WAKEUP = 4
EVENT_SHUTDOWN_GUEST, EVENT_SHUTDOWN_HOST = 1, 2


def _shutoff_path(driver: QemuDriver, name: str) -> Path:
    return driver.paths.run_dir / f"{name}.shutoff"


def shutoff_reason(driver: QemuDriver, name: str) -> int:
    """Why the inactive domain ``name`` last stopped (SHUTOFF_UNKNOWN when never started here).

    Read once per driver and then kept: only the process holding the instance lock writes these
    files, and it does so through :func:`_write_shutoff` / :func:`forget_shutoff`.
    """
    cache = driver.shutoff_cache
    reason = cache.get(name)
    if reason is None:
        try:
            reason = int(proc.read_status(_shutoff_path(driver, name), SHUTOFF_FORMAT)["reason"])
        except (FileNotFoundError, PyvirtError, KeyError, TypeError, ValueError):
            reason = VIR_DOMAIN_SHUTOFF_UNKNOWN
        cache[name] = reason
    return reason


def forget_shutoff(driver: QemuDriver, name: str) -> None:
    driver.shutoff_cache.pop(name, None)
    try:
        os.unlink(_shutoff_path(driver, name))
    except FileNotFoundError:
        pass


def _write_shutoff(driver: QemuDriver, name: str, reason: int) -> None:
    driver.shutoff_cache[name] = reason
    try:
        proc.write_status(_shutoff_path(driver, name), {"reason": reason}, SHUTOFF_FORMAT)
    except PyvirtError as e:
        log.warning("domain '%s': cannot record why it stopped: %s", name, e)


