# SPDX-License-Identifier: LGPL-2.1-or-later
"""Connections: libvirt-python's ``virConnect`` over pyvirt's drivers.

A local URI (qemu:///system, qemu:///session, qemu:///embed?root=DIR) runs the QEMU driver inside
the calling process. Connections of one process to the same instance share one driver, as
libvirt's embedded driver does.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from pyvirt.errors import NotSupported, OperationInvalid, PyvirtError
from pyvirt.qemu.driver import QemuDriver
from pyvirt.uri import ConnectURI, default_uri, parse_uri

if TYPE_CHECKING:
    from pyvirt.xml.domain import Domain

# libvirt-python's constants for what this module supports
VIR_DOMAIN_XML_SECURE = 1
VIR_DOMAIN_XML_INACTIVE = 2
VIR_DOMAIN_DEFINE_VALIDATE = 1
VIR_DOMAIN_START_PAUSED = 1
VIR_DOMAIN_START_VALIDATE = 16
VIR_DOMAIN_REBOOT_DEFAULT = 0
VIR_DOMAIN_REBOOT_ACPI_POWER_BTN = 1
VIR_DOMAIN_DESTROY_GRACEFUL = 1
VIR_DOMAIN_NOSTATE = 0
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_PAUSED = 3
VIR_DOMAIN_SHUTOFF = 5
VIR_DOMAIN_NONE = 0
# virConnectListAllDomainsFlags: each pair filters only when one of its two bits is given
VIR_CONNECT_LIST_DOMAINS_ACTIVE = 1
VIR_CONNECT_LIST_DOMAINS_INACTIVE = 2
VIR_CONNECT_LIST_DOMAINS_PERSISTENT = 4
VIR_CONNECT_LIST_DOMAINS_TRANSIENT = 8
VIR_CONNECT_LIST_DOMAINS_RUNNING = 16
VIR_CONNECT_LIST_DOMAINS_PAUSED = 32
VIR_CONNECT_LIST_DOMAINS_SHUTOFF = 64
VIR_CONNECT_LIST_DOMAINS_OTHER = 128
VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE = 256
VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE = 512
VIR_CONNECT_LIST_DOMAINS_AUTOSTART = 1024
VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART = 2048
VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT = 4096
VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT = 8192
VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT = 16384
VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT = 32768
_LIST_ALL_FLAGS = 0xFFFF

#: The libvirt release whose API and behaviour pyvirt follows; reported as the library version so
#: that clients enable the same features they would against that libvirt.
LIBVIRT_COMPAT_VERSION = 9_000_000


def getVersion() -> int:  # noqa: N802 - libvirt-python's name
    return LIBVIRT_COMPAT_VERSION


class _DriverRegistry:
    """One driver per instance per process, shared by its connections, closed with the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drivers: dict[tuple[str, str], tuple[QemuDriver, int]] = {}

    def acquire(self, uri: ConnectURI) -> QemuDriver:
        key = (uri.instance, str(uri.embed_root or ""))
        with self._lock:
            entry = self._drivers.get(key)
            if entry is None:
                driver = QemuDriver.open(uri)
                self._drivers[key] = (driver, 1)
                return driver
            driver, count = entry
            self._drivers[key] = (driver, count + 1)
            return driver

    def release(self, driver: QemuDriver) -> None:
        with self._lock:
            for key, (known, count) in list(self._drivers.items()):
                if known is driver:
                    if count > 1:
                        self._drivers[key] = (known, count - 1)
                    else:
                        del self._drivers[key]
                        driver.close()
                    return


_registry = _DriverRegistry()


class virConnect:  # noqa: N801 - libvirt-python's name
    def __init__(self, uri: ConnectURI, driver: QemuDriver, readonly: bool) -> None:
        self._uri = uri
        self._driver: QemuDriver | None = driver
        self._readonly = readonly

    @property
    def driver(self) -> QemuDriver:
        if self._driver is None:
            raise OperationInvalid("this connection is closed; open a new one")
        return self._driver

    def _check_open(self) -> None:
        self.driver  # noqa: B018 - raises on a closed connection

    def close(self) -> int:
        if self._driver is not None:
            _registry.release(self._driver)
            self._driver = None
        return 0

    def isAlive(self) -> int:  # noqa: N802
        return int(self._driver is not None)

    def isSecure(self) -> int:  # noqa: N802
        return 1  # local: nothing leaves the host

    def isEncrypted(self) -> int:  # noqa: N802
        return 0

    def getURI(self) -> str:  # noqa: N802
        self._check_open()
        return self._uri.raw

    def getType(self) -> str:  # noqa: N802
        self._check_open()
        return "QEMU"

    def getVersion(self) -> int:  # noqa: N802
        return self.driver.hypervisor_version()

    def getLibVersion(self) -> int:  # noqa: N802
        self._check_open()
        return LIBVIRT_COMPAT_VERSION

    def getHostname(self) -> str:  # noqa: N802
        self._check_open()
        return host_name()

    def getCapabilities(self) -> str:  # noqa: N802
        return self.driver.capabilities_xml()

    def getDomainCapabilities(self, emulatorbin: str | None = None, arch: str | None = None,  # noqa: N802
                              machine: str | None = None, virttype: str | None = None,
                              flags: int = 0) -> str:
        return self.driver.domain_capabilities_xml(emulatorbin, arch, machine, virttype)

    # -- domains ----------------------------------------------------------------------------------

    def _check_writable(self, what: str) -> None:
        if self._readonly:
            from pyvirt.errors import PyvirtError, codes

            raise PyvirtError(f"operation forbidden: read only access prevents {what}",
                              code=codes.VIR_ERR_OPERATION_DENIED, domain=codes.VIR_FROM_NONE)

    def defineXML(self, xml: str) -> virDomain:  # noqa: N802
        return self.defineXMLFlags(xml, 0)

    def defineXMLFlags(self, xml: str, flags: int = 0) -> virDomain:  # noqa: N802
        self._check_writable("virDomainDefineXMLFlags")
        dom = self.driver.define_xml(xml, validate=bool(flags & VIR_DOMAIN_DEFINE_VALIDATE))
        return virDomain(self, dom)

    def createXML(self, xml: str, flags: int = 0) -> virDomain:  # noqa: N802
        """Start a transient domain: it has no definition and is gone once it stops."""
        self._check_writable("virDomainCreateXML")
        dom = self.driver.create_xml(xml, paused=bool(flags & VIR_DOMAIN_START_PAUSED),
                                     validate=bool(flags & VIR_DOMAIN_START_VALIDATE))
        return virDomain(self, dom)

    def lookupByName(self, name: str) -> virDomain:  # noqa: N802
        return virDomain(self, self.driver.lookup(name))

    def lookupByUUIDString(self, uuid: str) -> virDomain:  # noqa: N802
        return virDomain(self, self.driver.lookup_uuid(uuid))

    def lookupByUUID(self, uuid: bytes) -> virDomain:  # noqa: N802
        h = uuid.hex()
        return self.lookupByUUIDString(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")

    def lookupByID(self, domain_id: int) -> virDomain:  # noqa: N802
        return virDomain(self, self.driver.lookup_id(domain_id))

    def listDomainsID(self) -> list[int]:  # noqa: N802
        with self.driver.running_lock:
            return sorted(rd.domain_id for rd in self.driver.running.values())

    def numOfDomains(self) -> int:  # noqa: N802
        return len(self.listDomainsID())

    def listDefinedDomains(self) -> list[str]:  # noqa: N802
        # Inactive persistent domains only, as libvirt: a running one is listed by its id.
        driver = self.driver
        return [n for n in driver.domains.names() if driver.running_domain(n) is None]

    def numOfDefinedDomains(self) -> int:  # noqa: N802
        return len(self.listDefinedDomains())

    def listAllDomains(self, flags: int = 0) -> list[virDomain]:  # noqa: N802
        driver = self.driver
        if flags & ~_LIST_ALL_FLAGS:
            from pyvirt import _errcodes as codes

            raise PyvirtError(f"unsupported flags (0x{flags & ~_LIST_ALL_FLAGS:x}) in function "
                              "qemuConnectListAllDomains", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_QEMU, str1="qemuConnectListAllDomains", str2="flags",
                              int1=0, int2=0)
        found = []
        for name in driver.all_names():
            try:
                dom = driver.lookup(name)
            except PyvirtError:
                continue  # a transient domain that stopped meanwhile
            rd = driver.running_domain(name)
            state = rd.state if rd is not None else VIR_DOMAIN_SHUTOFF
            persistent = driver.is_persistent(name)
            autostart = persistent and driver.domains.autostart(name)
            tests = (
                (VIR_CONNECT_LIST_DOMAINS_ACTIVE, VIR_CONNECT_LIST_DOMAINS_INACTIVE, rd is not None),
                (VIR_CONNECT_LIST_DOMAINS_PERSISTENT, VIR_CONNECT_LIST_DOMAINS_TRANSIENT, persistent),
                (VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE, VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE, False),
                (VIR_CONNECT_LIST_DOMAINS_AUTOSTART, VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART, autostart),
                (VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT, False),
                (VIR_CONNECT_LIST_DOMAINS_HAS_CHECKPOINT, VIR_CONNECT_LIST_DOMAINS_NO_CHECKPOINT, False),
            )
            if not all(_pair_matches(flags, yes, no, value) for yes, no, value in tests):
                continue
            state_bits = (VIR_CONNECT_LIST_DOMAINS_RUNNING | VIR_CONNECT_LIST_DOMAINS_PAUSED
                          | VIR_CONNECT_LIST_DOMAINS_SHUTOFF | VIR_CONNECT_LIST_DOMAINS_OTHER)
            if flags & state_bits:
                bit = {VIR_DOMAIN_RUNNING: VIR_CONNECT_LIST_DOMAINS_RUNNING,
                       VIR_DOMAIN_PAUSED: VIR_CONNECT_LIST_DOMAINS_PAUSED,
                       VIR_DOMAIN_SHUTOFF: VIR_CONNECT_LIST_DOMAINS_SHUTOFF}.get(
                           state, VIR_CONNECT_LIST_DOMAINS_OTHER)
                if not flags & bit:
                    continue
            found.append(virDomain(self, dom))
        return found

    def getSecurityModel(self) -> list[str]:  # noqa: N802
        """[model, DOI] of the driver's primary security model (virNodeGetSecurityModel)."""
        model, doi, _ = self.driver.secmodels()[0]
        return [model, doi]

    def domainXMLToNative(self, nativeFormat: str, domainXml: str, flags: int = 0) -> str:  # noqa: N802, N803
        return self.driver.xml_to_native(nativeFormat, domainXml)

    def domainXMLFromNative(self, nativeFormat: str, nativeConfig: str, flags: int = 0) -> str:  # noqa: N802, N803
        # libvirt 9.0's QEMU driver no longer imports command lines; it says so in these words.
        raise NotSupported("this function is not supported by the connection driver: "
                           "virConnectDomainXMLFromNative")

    def __enter__(self) -> virConnect:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pair_matches(flags: int, yes: int, no: int, value: bool) -> bool:
    if not flags & (yes | no):
        return True
    return bool(flags & yes) and value or bool(flags & no) and not value


def host_name() -> str:
    """The host's name as libvirt reports it: the canonical name when the short one resolves."""
    import socket  # not at module level: only this call needs it, and every pyvirsh run loads us

    name = socket.gethostname()
    if name.startswith("localhost") or "." in name:
        return name
    try:
        infos = socket.getaddrinfo(name, None, family=socket.AF_UNSPEC, flags=socket.AI_CANONNAME)
    except OSError:
        return name
    canonical = infos[0][3] if infos else ""
    if not canonical or canonical.startswith("localhost"):
        return name
    return canonical


def _open(uri_text: str | None, readonly: bool) -> virConnect:
    uri = parse_uri(uri_text if uri_text else default_uri())
    if uri.is_remote:
        raise NotSupported(
            f"{uri.raw}: remote connections go through pyvirtd, which this pyvirt does not have yet; "
            "use a local URI: qemu:///system, qemu:///session or qemu:///embed?root=DIR")
    return virConnect(uri, _registry.acquire(uri), readonly)


def open(name: str | None = None) -> virConnect:  # noqa: A001 - libvirt-python's name
    return _open(name, readonly=False)


def openReadOnly(name: str | None = None) -> virConnect:  # noqa: N802
    return _open(name, readonly=True)


class virDomain:  # noqa: N801 - libvirt-python's name
    """A defined domain, seen through one connection (libvirt-python's ``virDomain``)."""

    def __init__(self, conn: virConnect, dom: Domain) -> None:
        self._conn = conn
        self._name = dom.name or ""
        self._uuid = dom.uuid or ""

    def _current(self) -> Domain:
        # Look the definition up again: another handle may have redefined or undefined it.
        return self._conn.driver.lookup_uuid(self._uuid)

    def connect(self) -> virConnect:
        return self._conn

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:  # noqa: N802
        return self._uuid

    def UUID(self) -> bytes:  # noqa: N802
        return bytes.fromhex(self._uuid.replace("-", ""))

    def ID(self) -> int:  # noqa: N802
        rd = self._conn.driver.running_domain(self._name)
        return -1 if rd is None else rd.domain_id

    def isActive(self) -> int:  # noqa: N802
        return int(self._conn.driver.running_domain(self._name) is not None)

    # -- lifecycle --------------------------------------------------------------------------------

    def create(self) -> int:
        return self.createWithFlags(0)

    def createWithFlags(self, flags: int = 0) -> int:  # noqa: N802
        self._conn._check_writable("virDomainCreateWithFlags")
        self._conn.driver.start_domain(self._current().name or self._name,
                                       paused=bool(flags & VIR_DOMAIN_START_PAUSED))
        return 0

    def destroy(self) -> int:
        return self.destroyFlags(0)

    def destroyFlags(self, flags: int = 0) -> int:  # noqa: N802
        self._conn._check_writable("virDomainDestroyFlags")
        if flags & ~VIR_DOMAIN_DESTROY_GRACEFUL:
            from pyvirt import _errcodes as codes

            raise PyvirtError(f"unsupported flags (0x{flags & ~VIR_DOMAIN_DESTROY_GRACEFUL:x}) in function "
                              "qemuDomainDestroyFlags", code=codes.VIR_ERR_INVALID_ARG,
                              domain=codes.VIR_FROM_QEMU, str1="qemuDomainDestroyFlags", str2="flags",
                              int1=0, int2=0)
        self._conn.driver.destroy_domain(self._name,
                                         sigterm_only=bool(flags & VIR_DOMAIN_DESTROY_GRACEFUL))
        return 0

    def shutdown(self) -> int:
        self._conn._check_writable("virDomainShutdown")
        self._conn.driver.shutdown_domain(self._name)
        return 0

    def suspend(self) -> int:
        self._conn._check_writable("virDomainSuspend")
        self._conn.driver.suspend_domain(self._name)
        return 0

    def resume(self) -> int:
        self._conn._check_writable("virDomainResume")
        self._conn.driver.resume_domain(self._name)
        return 0

    def state(self, flags: int = 0) -> list[int]:
        state, reason = self._conn.driver.domain_state(self._name)
        return [state, reason]

    def info(self) -> list[int]:
        """[state, max memory KiB, memory KiB, vCPUs, CPU time ns], as virDomainGetInfo."""
        from pyvirt.qemu.process import cpu_time_ns

        dom = self._current()
        state, _ = self._conn.driver.domain_state(self._name)
        rd = self._conn.driver.running_domain(self._name)
        memory = dom.memory or 0
        current = dom.current_memory or memory
        vcpus = (dom.vcpu.current or dom.vcpu.count or 1) if dom.vcpu is not None else 1
        return [state, memory, current, vcpus, cpu_time_ns(rd) if rd is not None else 0]

    def OSType(self) -> str:  # noqa: N802
        dom = self._current()
        os_type = dom.os.type if dom.os is not None else None
        return (os_type.value if os_type is not None else None) or "hvm"

    def isPersistent(self) -> int:  # noqa: N802
        self._current()  # raises for a transient domain that is gone
        return int(self._conn.driver.is_persistent(self._name))

    def reboot(self, flags: int = 0) -> int:
        if flags & ~VIR_DOMAIN_REBOOT_ACPI_POWER_BTN:
            raise NotSupported("this function is not supported by the connection driver: only the ACPI "
                               "power button reboots a domain without a guest agent")
        self._conn._check_writable("virDomainReboot")
        self._conn.driver.reboot_domain(self._name)
        return 0

    def reset(self, flags: int = 0) -> int:
        self._conn._check_writable("virDomainReset")
        self._conn.driver.reset_domain(self._name)
        return 0

    def autostart(self) -> int:
        self._current()
        return int(self._conn.driver.domains.autostart(self._name))

    def setAutostart(self, autostart: int) -> int:  # noqa: N802
        self._conn._check_writable("virDomainSetAutostart")
        self._current()
        if not self._conn.driver.is_persistent(self._name):
            raise OperationInvalid("Requested operation is not valid: "
                                   "cannot set autostart for transient domain")
        self._conn.driver.domains.set_autostart(self._name, bool(autostart))
        return 0

    def hasManagedSaveImage(self, flags: int = 0) -> int:  # noqa: N802
        return 0

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        secure = bool(flags & VIR_DOMAIN_XML_SECURE)
        rd = self._conn.driver.running_domain(self._name)
        if rd is not None and not flags & VIR_DOMAIN_XML_INACTIVE:
            # The live XML, as libvirt's: what this run of QEMU got (its id, the VNC port picked,
            # media dropped at start), whatever was defined since.
            return self._conn.driver.domains.parse(rd.xml).to_xml(inactive=False, secure=secure)
        return self._current().to_xml(inactive=True, secure=secure)

    def undefine(self) -> int:
        return self.undefineFlags(0)

    def undefineFlags(self, flags: int = 0) -> int:  # noqa: N802
        self._conn._check_writable("virDomainUndefineFlags")
        if not self._conn.driver.is_persistent(self._name):
            raise OperationInvalid("Requested operation is not valid: cannot undefine transient domain")
        # A running domain goes on as a transient one, as in libvirt.
        self._conn.driver.undefine(self._current().name or self._name)
        return 0
