# SPDX-License-Identifier: LGPL-2.1-or-later
"""The REMOTE program's domain procedures: listing, lookup, definition, lifecycle and queries,
each a call on pyvirt's public API (:class:`pyvirt.connection.virConnect` and ``virDomain``).

A domain arrives as ``remote_nonnull_domain`` (name, uuid, id). As libvirtd does, the daemon finds
it again by its UUID alone -- a client's id may be stale (it was taken before a start or a
destroy), and its name may belong to a domain that was undefined and defined anew -- and a UUID
that no longer names a domain is answered with libvirt's words, which name both.

Queries that only read the driver's memory are marked ``inline_when_idle``: the dispatcher runs
them on the event loop while no other call is on a worker thread (:class:`~pyvirt.daemon.dispatch.
Dispatcher`), which makes a lookup's round trip several times faster.

Flags: where the API method takes no flags (``shutdown``, ``hasManagedSaveImage`` ...), the daemon
refuses the flags the QEMU driver of libvirt 9.0 refuses, with the same "unsupported flags" error,
so that a client never has a flag silently ignored.

A few procedures need API methods (libvirt-python's names) that :mod:`pyvirt.connection` may
not have yet (``snapshotNum``, ``isUpdated``, ``maxVcpus``, ``vcpusFlags``, ``messages``,
``securityLabel``, ``shutdownFlags``): they call the method once it exists and answer
VIR_ERR_NO_SUPPORT until then, which virsh tolerates where it calls them on the way
(``undefine`` asks for the snapshot count, ``dominfo`` for messages).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.daemon.dispatch import (
    ClientSession,
    NeedsWorker,
    api_name,
    no_support,
    rpc_error,
    running_inline,
)
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.errors import PyvirtError
from pyvirt.rpc.procedures import LIMITS, PROCEDURES
from pyvirt.rpc.protocol import RemoteError

if TYPE_CHECKING:
    from pyvirt.connection import virDomain

__all__: list[str] = []

_h = HANDLERS.register

_DOMAIN_LIST_MAX = LIMITS["DOMAIN_LIST_MAX"]

# libvirt 9.0's flag values (include/libvirt/libvirt-domain.h) and what its QEMU driver accepts
_START_PAUSED, _START_AUTODESTROY, _START_BYPASS_CACHE = 1, 2, 4
_START_FORCE_BOOT, _START_VALIDATE, _START_RESET_NVRAM = 8, 16, 32
_CREATE_XML_FLAGS = _START_PAUSED | _START_AUTODESTROY | _START_VALIDATE | _START_RESET_NVRAM
_CREATE_WITH_FLAGS = (_START_PAUSED | _START_AUTODESTROY | _START_BYPASS_CACHE | _START_FORCE_BOOT
                      | _START_RESET_NVRAM)
_SHUTDOWN_ACPI, _SHUTDOWN_AGENT = 1, 2
#: MANAGED_SAVE, SNAPSHOTS_METADATA, NVRAM, KEEP_NVRAM, CHECKPOINTS_METADATA, TPM, KEEP_TPM
_UNDEFINE_FLAGS = 0x7F
_XML_SECURE, _XML_INACTIVE, _XML_UPDATE_CPU, _XML_MIGRATABLE = 1, 2, 4, 8
_SECURITY_LABEL_MAX = LIMITS["SECURITY_LABEL_MAX"]


# ---- helpers --------------------------------------------------------------------------------

def _dom(dom: virDomain) -> dict[str, Any]:
    """A virDomain of the API as remote_nonnull_domain."""
    return {"name": dom.name(), "uuid": dom.UUID(), "id": dom.ID()}


wire_dom = _dom


def _no_domain(detail: str) -> RemoteError:
    return RemoteError(f"Domain not found: {detail}", code=codes.VIR_ERR_NO_DOMAIN,
                       domain=codes.VIR_FROM_QEMU, level=codes.VIR_ERR_ERROR,
                       str1="Domain not found: %s", str2=detail)


def _domain(session: ClientSession, wire: Any) -> virDomain:
    """The API's domain for a remote_nonnull_domain, found by UUID as libvirtd's driver does."""
    conn = session.require_conn()
    # By name first, kept only when its UUID is the client's: a lookup by name is a dict access,
    # one by UUID a walk over every definition.
    try:
        dom = conn.lookupByName(wire.name)
    except PyvirtError:
        pass
    else:
        if dom.UUID() == wire.uuid:
            return dom
    try:
        return conn.lookupByUUID(wire.uuid)
    except PyvirtError as exc:
        if exc.code != codes.VIR_ERR_NO_DOMAIN:
            raise
        raise _no_domain(f"no domain with matching uuid '{uuid.UUID(bytes=wire.uuid)}' "
                         f"({wire.name})") from exc


domain_of = _domain


def _check_flags(flags: int, allowed: int, function: str) -> None:
    """libvirt's virCheckFlags: unknown bits are an error naming the driver function."""
    if flags & ~allowed:
        raise RemoteError(f"unsupported flags (0x{flags & ~allowed:x}) in function {function}",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_QEMU,
                          level=codes.VIR_ERR_ERROR, str1=function, str2="flags", int1=0, int2=0)


def _optional_api(obj: object, method: str, proc_name: str) -> Any:
    """A method the API may not have yet; VIR_ERR_NO_SUPPORT (clients fall back) while it lacks it."""
    fn = getattr(obj, method, None)
    if fn is None:
        raise no_support(api_name(PROCEDURES.lookup(proc_name)), domain=codes.VIR_FROM_QEMU)
    return fn


def _check_max(value: int, what: str) -> None:
    if value < 0:
        raise rpc_error(f"{what} must be non-negative")
    if value > _DOMAIN_LIST_MAX:
        raise rpc_error(f"{what} > REMOTE_DOMAIN_LIST_MAX")


# ---- listing ------------------------------------------------------------------------------------

@_h("CONNECT_LIST_ALL_DOMAINS", inline_when_idle=True)
def list_all_domains(session: ClientSession, args: Any) -> Any:
    domains = session.require_conn().listAllDomains(args.flags)
    if len(domains) > _DOMAIN_LIST_MAX:
        raise rpc_error(f"Too many domains '{len(domains)}' for limit '{_DOMAIN_LIST_MAX}'")
    return {"domains": [_dom(d) for d in domains] if args.need_results else [],
            "ret": len(domains)}


@_h("CONNECT_NUM_OF_DOMAINS", inline_when_idle=True)
def num_of_domains(session: ClientSession, args: None) -> Any:
    return {"num": session.require_conn().numOfDomains()}


@_h("CONNECT_LIST_DOMAINS", inline_when_idle=True)
def list_domains(session: ClientSession, args: Any) -> Any:
    _check_max(args.maxids, "maxids")
    return {"ids": session.require_conn().listDomainsID()[:args.maxids]}


@_h("CONNECT_NUM_OF_DEFINED_DOMAINS", inline_when_idle=True)
def num_of_defined_domains(session: ClientSession, args: None) -> Any:
    return {"num": session.require_conn().numOfDefinedDomains()}


@_h("CONNECT_LIST_DEFINED_DOMAINS", inline_when_idle=True)
def list_defined_domains(session: ClientSession, args: Any) -> Any:
    _check_max(args.maxnames, "maxnames")
    return {"names": session.require_conn().listDefinedDomains()[:args.maxnames]}


# ---- lookup -------------------------------------------------------------------------------------

@_h("DOMAIN_LOOKUP_BY_NAME", inline_when_idle=True)
def lookup_by_name(session: ClientSession, args: Any) -> Any:
    return {"dom": _dom(session.require_conn().lookupByName(args.name))}


@_h("DOMAIN_LOOKUP_BY_UUID", inline_when_idle=True)
def lookup_by_uuid(session: ClientSession, args: Any) -> Any:
    return {"dom": _dom(session.require_conn().lookupByUUID(args.uuid))}


@_h("DOMAIN_LOOKUP_BY_ID", inline_when_idle=True)
def lookup_by_id(session: ClientSession, args: Any) -> Any:
    if args.id < 0:
        # libvirt's public API checks this before any driver sees it
        raise RemoteError("id in virDomainLookupByID must be zero or greater",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_DOMAIN,
                          level=codes.VIR_ERR_ERROR, str1="virDomainLookupByID", str2="id",
                          int1=0, int2=0)
    return {"dom": _dom(session.require_conn().lookupByID(args.id))}


# ---- definition ---------------------------------------------------------------------------------

@_h("DOMAIN_DEFINE_XML")
def define_xml(session: ClientSession, args: Any) -> Any:
    return {"dom": _dom(session.require_conn().defineXML(args.xml))}


@_h("DOMAIN_DEFINE_XML_FLAGS")
def define_xml_flags(session: ClientSession, args: Any) -> Any:
    return {"dom": _dom(session.require_conn().defineXMLFlags(args.xml, args.flags))}


@_h("DOMAIN_UNDEFINE")
def undefine(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).undefine()


@_h("DOMAIN_UNDEFINE_FLAGS")
def undefine_flags(session: ClientSession, args: Any) -> Any:
    _check_flags(args.flags, _UNDEFINE_FLAGS, "qemuDomainUndefineFlags")
    _domain(session, args.dom).undefineFlags(args.flags)


@_h("CONNECT_DOMAIN_XML_TO_NATIVE")
def xml_to_native(session: ClientSession, args: Any) -> Any:
    native = session.require_conn().domainXMLToNative(args.nativeFormat, args.domainXml,
                                                       args.flags)
    return {"nativeConfig": native}


@_h("CONNECT_DOMAIN_XML_FROM_NATIVE")
def xml_from_native(session: ClientSession, args: Any) -> Any:
    xml = session.require_conn().domainXMLFromNative(args.nativeFormat, args.nativeConfig,
                                                      args.flags)
    return {"domainXml": xml}


# ---- lifecycle ----------------------------------------------------------------------------------

@_h("DOMAIN_CREATE_XML")
def create_xml(session: ClientSession, args: Any) -> Any:
    _check_flags(args.flags, _CREATE_XML_FLAGS, "qemuDomainCreateXML")
    return {"dom": _dom(session.require_conn().createXML(args.xml_desc, args.flags))}


@_h("DOMAIN_CREATE")
def create(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).create()


@_h("DOMAIN_CREATE_WITH_FLAGS")
def create_with_flags(session: ClientSession, args: Any) -> Any:
    _check_flags(args.flags, _CREATE_WITH_FLAGS, "qemuDomainCreateWithFlags")
    dom = _domain(session, args.dom)
    dom.createWithFlags(args.flags)
    return {"dom": _dom(dom)}  # with the id of the new run


@_h("DOMAIN_DESTROY")
def destroy(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).destroy()


@_h("DOMAIN_DESTROY_FLAGS")
def destroy_flags(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).destroyFlags(args.flags)


@_h("DOMAIN_SHUTDOWN")
def shutdown(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).shutdown()


@_h("DOMAIN_SHUTDOWN_FLAGS")
def shutdown_flags(session: ClientSession, args: Any) -> Any:
    _check_flags(args.flags, _SHUTDOWN_ACPI | _SHUTDOWN_AGENT, "qemuDomainShutdownFlags")
    dom = _domain(session, args.dom)
    api = getattr(dom, "shutdownFlags", None)
    if api is not None:
        api(args.flags)
    elif args.flags & _SHUTDOWN_AGENT:
        # Only the ACPI power button is there to press; say so rather than press it instead.
        raise no_support("virDomainShutdownFlags: pyvirt shuts domains down with the ACPI power "
                         "button only (use --mode acpi)", domain=codes.VIR_FROM_QEMU)
    else:
        dom.shutdown()


@_h("DOMAIN_REBOOT")
def reboot(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).reboot(args.flags)


@_h("DOMAIN_RESET")
def reset(session: ClientSession, args: Any) -> Any:
    _check_flags(args.flags, 0, "qemuDomainReset")
    _domain(session, args.dom).reset(args.flags)


@_h("DOMAIN_SUSPEND")
def suspend(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).suspend()


@_h("DOMAIN_RESUME")
def resume(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).resume()


@_h("DOMAIN_SET_AUTOSTART")
def set_autostart(session: ClientSession, args: Any) -> Any:
    _domain(session, args.dom).setAutostart(args.autostart)


# ---- queries ------------------------------------------------------------------------------------

@_h("DOMAIN_GET_INFO", inline_when_idle=True)
def get_info(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    if running_inline() and dom.isActive():
        raise NeedsWorker  # a running domain's balloon size comes from its monitor
    state, max_mem, memory, vcpus, cpu_time = dom.info()
    return {"state": state, "maxMem": max_mem, "memory": memory, "nrVirtCpu": vcpus,
            "cpuTime": cpu_time}


@_h("DOMAIN_GET_STATE", inline_when_idle=True)
def get_state(session: ClientSession, args: Any) -> Any:
    _check_flags(args.flags, 0, "qemuDomainGetState")
    state, reason = _domain(session, args.dom).state(args.flags)
    return {"state": state, "reason": reason}


@_h("DOMAIN_GET_XML_DESC")
def get_xml_desc(session: ClientSession, args: Any) -> Any:
    if session.readonly and args.flags & _XML_SECURE:
        # libvirt's public API refuses this on a read-only connection before the driver sees it
        detail = "virDomainGetXMLDesc with secure flag"
        raise RemoteError(f"operation forbidden: {detail}", code=codes.VIR_ERR_OPERATION_DENIED,
                          domain=codes.VIR_FROM_DOMAIN, level=codes.VIR_ERR_ERROR,
                          str1="operation forbidden: %s", str2=detail)
    _check_flags(args.flags, _XML_SECURE | _XML_INACTIVE | _XML_UPDATE_CPU | _XML_MIGRATABLE,
                 "qemuDomainGetXMLDesc")
    return {"xml": _domain(session, args.dom).XMLDesc(args.flags)}


@_h("DOMAIN_GET_OS_TYPE")
def get_os_type(session: ClientSession, args: Any) -> Any:
    return {"type": _domain(session, args.dom).OSType()}


@_h("DOMAIN_GET_MAX_MEMORY")
def get_max_memory(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    api = getattr(dom, "maxMemory", None)
    # virDomainGetMaxMemory is the definition's total memory: the same figure as info()'s maxMem.
    return {"memory": api() if api is not None else dom.info()[1]}


@_h("DOMAIN_GET_MAX_VCPUS")
def get_max_vcpus(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    return {"num": _optional_api(dom, "maxVcpus", "DOMAIN_GET_MAX_VCPUS")()}


@_h("DOMAIN_GET_VCPUS_FLAGS")
def get_vcpus_flags(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    return {"num": _optional_api(dom, "vcpusFlags", "DOMAIN_GET_VCPUS_FLAGS")(args.flags)}


@_h("DOMAIN_IS_ACTIVE", inline_when_idle=True)
def is_active(session: ClientSession, args: Any) -> Any:
    return {"active": _domain(session, args.dom).isActive()}


@_h("DOMAIN_IS_PERSISTENT", inline_when_idle=True)
def is_persistent(session: ClientSession, args: Any) -> Any:
    return {"persistent": _domain(session, args.dom).isPersistent()}


@_h("DOMAIN_IS_UPDATED")
def is_updated(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    return {"updated": _optional_api(dom, "isUpdated", "DOMAIN_IS_UPDATED")()}


@_h("DOMAIN_GET_AUTOSTART")
def get_autostart(session: ClientSession, args: Any) -> Any:
    return {"autostart": _domain(session, args.dom).autostart()}


@_h("DOMAIN_HAS_MANAGED_SAVE_IMAGE")
def has_managed_save_image(session: ClientSession, args: Any) -> Any:
    _check_flags(args.flags, 0, "qemuDomainHasManagedSaveImage")
    return {"result": _domain(session, args.dom).hasManagedSaveImage(args.flags)}


@_h("DOMAIN_SNAPSHOT_NUM")
def snapshot_num(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    return {"num": _optional_api(dom, "snapshotNum", "DOMAIN_SNAPSHOT_NUM")(args.flags)}


@_h("DOMAIN_GET_MESSAGES")
def get_messages(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    msgs = list(_optional_api(dom, "messages", "DOMAIN_GET_MESSAGES")(args.flags))
    return {"msgs": msgs}


@_h("DOMAIN_GET_SECURITY_LABEL")
def get_security_label(session: ClientSession, args: Any) -> Any:
    dom = _domain(session, args.dom)
    api = getattr(dom, "securityLabel", None)
    if api is not None:
        label, enforcing = api()
    else:
        # libvirt fills the label of a running domain only, from its primary security model;
        # the model "none" labels nothing. Without the API method, that is all the daemon knows.
        model = session.require_conn().getSecurityModel()[0]
        if dom.isActive() and model not in ("", "none"):
            raise no_support(api_name(PROCEDURES.lookup("DOMAIN_GET_SECURITY_LABEL")),
                             domain=codes.VIR_FROM_QEMU)
        label, enforcing = "", 0
    if len(label) >= _SECURITY_LABEL_MAX:
        raise rpc_error(f"security label '{label[:64]}...' too long for the protocol")
    return {"label": label, "enforcing": enforcing}
