# SPDX-License-Identifier: LGPL-2.1-or-later
"""The procedures of libvirt's RPC programs, declared once for both server and client.

Each entry gives the procedure number (an ABI fact of src/remote/remote_protocol.x,
src/remote/qemu_protocol.x and src/rpc/virkeepaliveprotocol.x), the layout of its arguments and
of its reply, and the properties a dispatcher needs:

* ``priority``: libvirt's ``@priority: high`` -- the call never waits on a hypervisor monitor, so a
  server may run it even when all its ordinary workers are busy.
* ``readonly``: allowed on a read-only connection (libvirt's public API does not refuse it with
  VIR_ERR_OPERATION_DENIED). Calls allowed only without certain flags (GET_XML_DESC with
  VIR_DOMAIN_XML_SECURE) are marked allowed; the flag check belongs to the driver.
* ``event``: a MESSAGE the server sends; ``args`` is then the message body and ``ret`` is void.
* ``stream``: the call opens a data stream on its serial.

Layouts follow the ``.x`` structs field for field, including nesting (an event's ``msg``), so a
decoded value has the field names libvirt's C code uses.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pyvirt.rpc.protocol import Program
from pyvirt.rpc.xdr import (
    HYPER,
    INT,
    NONNULL_DOMAIN,
    NONNULL_STRING,
    REMOTE_DOMAIN,
    REMOTE_STRING,
    UCHAR,
    UHYPER,
    UINT,
    USHORT,
    UUID,
    VOID,
    Array,
    Chars,
    Codec,
    Struct,
)

__all__ = ["Procedure", "ProcedureTable", "PROCEDURES", "get", "lookup", "LIMITS"]

#: Array maxima of remote_protocol.x used below (REMOTE_*_MAX).
LIMITS = {
    "DOMAIN_LIST_MAX": 16384,
    "AUTH_TYPE_LIST_MAX": 20,
    "AUTH_SASL_DATA_MAX": 65536,
    "SECURITY_MODEL_MAX": 257,   # VIR_SECURITY_MODEL_BUFLEN
    "SECURITY_LABEL_MAX": 4097,  # VIR_SECURITY_LABEL_BUFLEN
    "SECURITY_DOI_MAX": 257,     # VIR_SECURITY_DOI_BUFLEN
    "DOMAIN_MESSAGES_MAX": 2048,
    "CPUMAP_MAX": 2048,
    "NODE_MAX_CELLS": 1024,
    "MIGRATE_COOKIE_MAX": 4194304,
}

_DOM = ("dom", NONNULL_DOMAIN)
_FLAGS = ("flags", UINT)
_XML = ("xml", NONNULL_STRING)

_PREFIX = {Program.REMOTE: "REMOTE_PROC_", Program.QEMU: "QEMU_PROC_",
           Program.KEEPALIVE: "KEEPALIVE_PROC_"}


@dataclass(frozen=True)
class Procedure:
    program: Program
    number: int
    #: The enum name without the program prefix, e.g. "DOMAIN_LOOKUP_BY_NAME".
    name: str
    #: CALL payload; for an event, the MESSAGE payload.
    args: Codec[Any]
    #: REPLY payload when the status is OK.
    ret: Codec[Any]
    priority: bool = False
    readonly: bool = False
    event: bool = False
    stream: bool = False

    @property
    def full_name(self) -> str:
        return _PREFIX[self.program] + self.name

    def __repr__(self) -> str:
        return f"<Procedure {self.full_name} = {self.number}>"


FieldSpec = Sequence[tuple[str, Codec[Any]]] | Codec[Any] | None


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.lower().split("_"))


def _codec(name: str, spec: FieldSpec) -> Codec[Any]:
    if spec is None:
        return VOID
    if isinstance(spec, Codec):
        return spec
    return Struct(name, spec)


class ProcedureTable:
    def __init__(self) -> None:
        self._by_number: dict[tuple[int, int], Procedure] = {}
        self._by_name: dict[str, Procedure] = {}

    def define(self, program: Program, number: int, name: str, args: FieldSpec = None,
               ret: FieldSpec = None, *, hi: bool = False, ro: bool = False,
               event: bool = False, stream: bool = False) -> Procedure:
        camel = _camel(name)
        proc = Procedure(program, number, name,
                         _codec(camel + ("Msg" if event else "Args"), args),
                         _codec(camel + "Ret", ret), priority=hi, readonly=ro, event=event,
                         stream=stream)
        key = (int(program), number)
        if key in self._by_number or proc.full_name in self._by_name:
            raise ValueError(f"procedure declared twice: {proc.full_name} = {number}")
        self._by_number[key] = proc
        self._by_name[proc.full_name] = proc
        if program == Program.REMOTE:
            self._by_name[name] = proc  # the REMOTE program's names are also usable bare
        return proc

    def get(self, program: int, number: int) -> Procedure | None:
        return self._by_number.get((program, number))

    def lookup(self, name: str) -> Procedure:
        """By full name ("QEMU_PROC_DOMAIN_MONITOR_COMMAND") or, for REMOTE, bare name."""
        try:
            return self._by_name[name.upper()]
        except KeyError:
            raise KeyError(f"unknown RPC procedure {name!r}") from None

    def __iter__(self) -> Iterator[Procedure]:
        return iter(self._by_number.values())

    def __len__(self) -> int:
        return len(self._by_number)


PROCEDURES = ProcedureTable()
_r = PROCEDURES.define


def _remote(number: int, name: str, args: FieldSpec = None, ret: FieldSpec = None,
            **kw: bool) -> Procedure:
    return _r(Program.REMOTE, number, name, args, ret, **kw)


def _ret1(name: str, codec: Codec[Any]) -> list[tuple[str, Codec[Any]]]:
    return [(name, codec)]


_DOM_RET = _ret1("dom", NONNULL_DOMAIN)
_SASL_DATA = Chars(LIMITS["AUTH_SASL_DATA_MAX"], name="sasl data")
_SASL_REPLY = [("complete", INT), ("nil", INT), ("data", _SASL_DATA)]

# ---- REMOTE program: connection ----
_remote(1, "CONNECT_OPEN", [("name", REMOTE_STRING), _FLAGS], hi=True, ro=True)
_remote(2, "CONNECT_CLOSE", hi=True, ro=True)
_remote(3, "CONNECT_GET_TYPE", None, _ret1("type", NONNULL_STRING), hi=True, ro=True)
_remote(4, "CONNECT_GET_VERSION", None, _ret1("hv_ver", UHYPER), hi=True, ro=True)
_remote(5, "CONNECT_GET_MAX_VCPUS", [("type", REMOTE_STRING)], _ret1("max_vcpus", INT),
        hi=True, ro=True)
_remote(6, "NODE_GET_INFO", None, [
    ("model", Chars(32, fixed=True, text=True, name="model")), ("memory", UHYPER),
    ("cpus", INT), ("mhz", INT), ("nodes", INT), ("sockets", INT), ("cores", INT),
    ("threads", INT)], hi=True, ro=True)
_remote(7, "CONNECT_GET_CAPABILITIES", None, _ret1("capabilities", NONNULL_STRING), ro=True)
_remote(59, "CONNECT_GET_HOSTNAME", None, _ret1("hostname", NONNULL_STRING), hi=True, ro=True)
_remote(60, "CONNECT_SUPPORTS_FEATURE", [("feature", INT)], _ret1("supported", INT),
        hi=True, ro=True)
_remote(102, "NODE_GET_FREE_MEMORY", None, _ret1("freeMem", UHYPER), hi=True, ro=True)
_remote(110, "CONNECT_GET_URI", None, _ret1("uri", NONNULL_STRING), hi=True, ro=True)
_remote(122, "NODE_GET_SECURITY_MODEL", None, [
    ("model", Chars(LIMITS["SECURITY_MODEL_MAX"], text=True, name="model")),
    ("doi", Chars(LIMITS["SECURITY_DOI_MAX"], text=True, name="doi"))], hi=True, ro=True)
_remote(149, "CONNECT_IS_SECURE", None, _ret1("secure", INT), hi=True, ro=True)
_remote(157, "CONNECT_GET_LIB_VERSION", None, _ret1("lib_ver", UHYPER), hi=True, ro=True)
_remote(203, "CONNECT_GET_SYSINFO", [_FLAGS], _ret1("sysinfo", NONNULL_STRING), hi=True, ro=True)
_remote(342, "CONNECT_GET_DOMAIN_CAPABILITIES", [
    ("emulatorbin", REMOTE_STRING), ("arch", REMOTE_STRING), ("machine", REMOTE_STRING),
    ("virttype", REMOTE_STRING), _FLAGS], _ret1("capabilities", NONNULL_STRING))
_remote(360, "CONNECT_REGISTER_CLOSE_CALLBACK", ro=True)
_remote(361, "CONNECT_UNREGISTER_CLOSE_CALLBACK", ro=True)

# ---- authentication (answered before CONNECT_OPEN) ----
_remote(66, "AUTH_LIST", None, _ret1("types", Array(INT, LIMITS["AUTH_TYPE_LIST_MAX"])),
        hi=True, ro=True)
_remote(67, "AUTH_SASL_INIT", None, _ret1("mechlist", NONNULL_STRING), hi=True, ro=True)
_remote(68, "AUTH_SASL_START", [("mech", NONNULL_STRING), ("nil", INT), ("data", _SASL_DATA)],
        _SASL_REPLY, hi=True, ro=True)
_remote(69, "AUTH_SASL_STEP", [("nil", INT), ("data", _SASL_DATA)], _SASL_REPLY, hi=True, ro=True)
_remote(70, "AUTH_POLKIT", None, _ret1("complete", INT), hi=True, ro=True)

# ---- domains: listing and lookup ----
_remote(21, "CONNECT_LIST_DEFINED_DOMAINS", [("maxnames", INT)],
        _ret1("names", Array(NONNULL_STRING, LIMITS["DOMAIN_LIST_MAX"])), hi=True, ro=True)
_remote(22, "DOMAIN_LOOKUP_BY_ID", [("id", INT)], _DOM_RET, hi=True, ro=True)
_remote(23, "DOMAIN_LOOKUP_BY_NAME", [("name", NONNULL_STRING)], _DOM_RET, hi=True, ro=True)
_remote(24, "DOMAIN_LOOKUP_BY_UUID", [("uuid", UUID)], _DOM_RET, hi=True, ro=True)
_remote(25, "CONNECT_NUM_OF_DEFINED_DOMAINS", None, _ret1("num", INT), hi=True, ro=True)
_remote(37, "CONNECT_LIST_DOMAINS", [("maxids", INT)],
        _ret1("ids", Array(INT, LIMITS["DOMAIN_LIST_MAX"])), hi=True, ro=True)
_remote(51, "CONNECT_NUM_OF_DOMAINS", None, _ret1("num", INT), hi=True, ro=True)
_remote(273, "CONNECT_LIST_ALL_DOMAINS", [("need_results", INT), _FLAGS],
        [("domains", Array(NONNULL_DOMAIN, LIMITS["DOMAIN_LIST_MAX"])), ("ret", UINT)],
        hi=True, ro=True)

# ---- domains: queries ----
_remote(14, "DOMAIN_GET_XML_DESC", [_DOM, _FLAGS], _ret1("xml", NONNULL_STRING), ro=True)
_remote(15, "DOMAIN_GET_AUTOSTART", [_DOM], _ret1("autostart", INT), hi=True, ro=True)
_remote(16, "DOMAIN_GET_INFO", [_DOM], [
    ("state", UCHAR), ("maxMem", UHYPER), ("memory", UHYPER), ("nrVirtCpu", USHORT),
    ("cpuTime", UHYPER)], ro=True)
_remote(17, "DOMAIN_GET_MAX_MEMORY", [_DOM], _ret1("memory", UHYPER), hi=True, ro=True)
_remote(18, "DOMAIN_GET_MAX_VCPUS", [_DOM], _ret1("num", INT), hi=True, ro=True)
_remote(19, "DOMAIN_GET_OS_TYPE", [_DOM], _ret1("type", NONNULL_STRING), hi=True, ro=True)
_remote(121, "DOMAIN_GET_SECURITY_LABEL", [_DOM], [
    ("label", Chars(LIMITS["SECURITY_LABEL_MAX"], text=True, name="label")),
    ("enforcing", INT)], hi=True, ro=True)
_remote(150, "DOMAIN_IS_ACTIVE", [_DOM], _ret1("active", INT), hi=True, ro=True)
_remote(151, "DOMAIN_IS_PERSISTENT", [_DOM], _ret1("persistent", INT), hi=True, ro=True)
_remote(183, "DOMAIN_HAS_MANAGED_SAVE_IMAGE", [_DOM, _FLAGS], _ret1("result", INT), ro=True)
_remote(187, "DOMAIN_SNAPSHOT_NUM", [_DOM, _FLAGS], _ret1("num", INT), hi=True, ro=True)
_remote(200, "DOMAIN_GET_VCPUS_FLAGS", [_DOM, _FLAGS], _ret1("num", INT), ro=True)
_remote(202, "DOMAIN_IS_UPDATED", [_DOM], _ret1("updated", INT), hi=True, ro=True)
_remote(212, "DOMAIN_GET_STATE", [_DOM, _FLAGS], [("state", INT), ("reason", INT)],
        hi=True, ro=True)
_remote(426, "DOMAIN_GET_MESSAGES", [_DOM, _FLAGS],
        _ret1("msgs", Array(NONNULL_STRING, LIMITS["DOMAIN_MESSAGES_MAX"])), ro=True)

# ---- domains: definition and lifecycle ----
_remote(8, "DOMAIN_ATTACH_DEVICE", [_DOM, _XML])
_remote(9, "DOMAIN_CREATE", [_DOM])
_remote(10, "DOMAIN_CREATE_XML", [("xml_desc", NONNULL_STRING), _FLAGS], _DOM_RET)
_remote(11, "DOMAIN_DEFINE_XML", [_XML], _DOM_RET, hi=True)
_remote(12, "DOMAIN_DESTROY", [_DOM], hi=True)
_remote(13, "DOMAIN_DETACH_DEVICE", [_DOM, _XML])
_remote(27, "DOMAIN_REBOOT", [_DOM, _FLAGS])
_remote(28, "DOMAIN_RESUME", [_DOM])
_remote(29, "DOMAIN_SET_AUTOSTART", [_DOM, ("autostart", INT)], hi=True)
_remote(30, "DOMAIN_SET_MAX_MEMORY", [_DOM, ("memory", UHYPER)], hi=True)
_remote(31, "DOMAIN_SET_MEMORY", [_DOM, ("memory", UHYPER)])
_remote(33, "DOMAIN_SHUTDOWN", [_DOM])
_remote(34, "DOMAIN_SUSPEND", [_DOM])
_remote(35, "DOMAIN_UNDEFINE", [_DOM], hi=True)
_remote(160, "DOMAIN_ATTACH_DEVICE_FLAGS", [_DOM, _XML, _FLAGS])
_remote(161, "DOMAIN_DETACH_DEVICE_FLAGS", [_DOM, _XML, _FLAGS])
_remote(174, "DOMAIN_UPDATE_DEVICE_FLAGS", [_DOM, _XML, _FLAGS])
_remote(196, "DOMAIN_CREATE_WITH_FLAGS", [_DOM, _FLAGS], _DOM_RET)
_remote(199, "DOMAIN_SET_VCPUS_FLAGS", [_DOM, ("nvcpus", UINT), _FLAGS])
_remote(204, "DOMAIN_SET_MEMORY_FLAGS", [_DOM, ("memory", UHYPER), _FLAGS])
_remote(231, "DOMAIN_UNDEFINE_FLAGS", [_DOM, _FLAGS], hi=True)
_remote(234, "DOMAIN_DESTROY_FLAGS", [_DOM, _FLAGS], hi=True)
_remote(245, "DOMAIN_RESET", [_DOM, _FLAGS])
_remote(258, "DOMAIN_SHUTDOWN_FLAGS", [_DOM, _FLAGS])
_remote(350, "DOMAIN_DEFINE_XML_FLAGS", [_XML, _FLAGS], _DOM_RET, hi=True)

# ---- domain XML and native configurations (both need write access: @acl connect:write) ----
_remote(135, "CONNECT_DOMAIN_XML_FROM_NATIVE",
        [("nativeFormat", NONNULL_STRING), ("nativeConfig", NONNULL_STRING), _FLAGS],
        _ret1("domainXml", NONNULL_STRING))
_remote(136, "CONNECT_DOMAIN_XML_TO_NATIVE",
        [("nativeFormat", NONNULL_STRING), ("domainXml", NONNULL_STRING), _FLAGS],
        _ret1("nativeConfig", NONNULL_STRING))

# ---- domains: streams ----
_remote(201, "DOMAIN_OPEN_CONSOLE", [_DOM, ("dev_name", REMOTE_STRING), _FLAGS], stream=True)
_remote(211, "DOMAIN_SCREENSHOT", [_DOM, ("screen", UINT), _FLAGS], _ret1("mime", REMOTE_STRING),
        stream=True)

# ---- events ----
_LIFECYCLE = Struct("DomainEventLifecycleMsg", [_DOM, ("event", INT), ("detail", INT)])
_remote(105, "CONNECT_DOMAIN_EVENT_REGISTER", None, _ret1("cb_registered", INT), hi=True, ro=True)
_remote(106, "CONNECT_DOMAIN_EVENT_DEREGISTER", None, _ret1("cb_registered", INT),
        hi=True, ro=True)
_remote(107, "DOMAIN_EVENT_LIFECYCLE", _LIFECYCLE, event=True)
_remote(167, "CONNECT_DOMAIN_EVENT_REGISTER_ANY", [("eventID", INT)], hi=True, ro=True)
_remote(168, "CONNECT_DOMAIN_EVENT_DEREGISTER_ANY", [("eventID", INT)], hi=True, ro=True)
_remote(169, "DOMAIN_EVENT_REBOOT", [_DOM], event=True)
_remote(316, "CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY", [("eventID", INT), ("dom", REMOTE_DOMAIN)],
        _ret1("callbackID", INT), hi=True, ro=True)
_remote(317, "CONNECT_DOMAIN_EVENT_CALLBACK_DEREGISTER_ANY", [("callbackID", INT)],
        hi=True, ro=True)
_remote(318, "DOMAIN_EVENT_CALLBACK_LIFECYCLE", [("callbackID", INT), ("msg", _LIFECYCLE)],
        event=True)
_remote(319, "DOMAIN_EVENT_CALLBACK_REBOOT",
        [("callbackID", INT), ("msg", Struct("DomainEventRebootMsg", [_DOM]))], event=True)
_remote(362, "CONNECT_EVENT_CONNECTION_CLOSED", [("reason", INT)], event=True)

# ---- QEMU program ----
_r(Program.QEMU, 1, "DOMAIN_MONITOR_COMMAND", [_DOM, ("cmd", NONNULL_STRING), _FLAGS],
   _ret1("result", NONNULL_STRING))
_r(Program.QEMU, 2, "DOMAIN_ATTACH", [("pid_value", UINT), _FLAGS], _DOM_RET)
_r(Program.QEMU, 3, "DOMAIN_AGENT_COMMAND",
   [_DOM, ("cmd", NONNULL_STRING), ("timeout", INT), _FLAGS], _ret1("result", REMOTE_STRING))
_r(Program.QEMU, 4, "CONNECT_DOMAIN_MONITOR_EVENT_REGISTER",
   [("dom", REMOTE_DOMAIN), ("event", REMOTE_STRING), _FLAGS], _ret1("callbackID", INT), hi=True)
_r(Program.QEMU, 5, "CONNECT_DOMAIN_MONITOR_EVENT_DEREGISTER", [("callbackID", INT)], hi=True)
_r(Program.QEMU, 6, "DOMAIN_MONITOR_EVENT", [
    ("callbackID", INT), _DOM, ("event", NONNULL_STRING), ("seconds", HYPER), ("micros", UINT),
    ("details", REMOTE_STRING)], event=True)
_r(Program.QEMU, 7, "DOMAIN_MONITOR_COMMAND_WITH_FILES", [_DOM, ("cmd", NONNULL_STRING), _FLAGS],
   _ret1("result", NONNULL_STRING))

# ---- KEEPALIVE program: bare MESSAGEs, no payload ----
_r(Program.KEEPALIVE, 1, "PING", hi=True, ro=True, event=True)
_r(Program.KEEPALIVE, 2, "PONG", hi=True, ro=True, event=True)



get = PROCEDURES.get
lookup = PROCEDURES.lookup

# The secondary drivers' procedures declare themselves on PROCEDURES (imported last: they use this
# module).
from pyvirt.rpc import (  # noqa: E402,F401
    procedures_network,
    procedures_secret,
    procedures_stats,
    procedures_storage,
)
