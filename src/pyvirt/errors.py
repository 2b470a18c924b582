# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's error tree.

Every error pyvirt raises on purpose is a :class:`PyvirtError`, which carries libvirt's numeric
error code and error domain so that callers written for libvirt-python (``libvirtError``) keep
working: ``get_error_code()``, ``get_error_domain()``, ``get_error_message()``.

Messages say what is wrong, where, and how to fix it. Wrapping keeps the cause (``raise ... from``).
An :class:`InternalError` is a broken invariant of pyvirt itself, never the user's fault.
"""

from __future__ import annotations

from typing import Any

from pyvirt import _errcodes as codes

__all__ = [
    "PyvirtError",
    "libvirtError",
    "InvalidURIError",
    "ConfigError",
    "XMLError",
    "OperationFailed",
    "NotSupported",
    "InternalError",
    "MonitorError",
    "MonitorStateError",
    "MonitorDisconnected",
    "MonitorTimeout",
    "MonitorCommandError",
    "codes",
]


class PyvirtError(Exception):
    """The root of pyvirt's errors; libvirt-python calls it ``libvirtError``."""

    code: int = codes.VIR_ERR_INTERNAL_ERROR
    domain: int = codes.VIR_FROM_NONE
    level: int = codes.VIR_ERR_ERROR

    def __init__(self, message: str, *, code: int | None = None, domain: int | None = None,
                 level: int | None = None, str1: str | None = None, str2: str | None = None,
                 str3: str | None = None, int1: int = -1, int2: int = -1) -> None:
        super().__init__(message)
        self.message = message
        # libvirt's extra error fields: str1 is usually the message's format, str2 its argument;
        # remote clients receive them, so pyvirt fills them where libvirt does.
        self.str1, self.str2, self.str3 = str1, str2, str3
        self.int1, self.int2 = int1, int2
        if code is not None:
            self.code = code
        if domain is not None:
            self.domain = domain
        if level is not None:
            self.level = level

    # libvirt-python's accessors
    def get_error_code(self) -> int:
        return self.code

    def get_error_domain(self) -> int:
        return self.domain

    def get_error_message(self) -> str:
        return self.message

    def get_error_level(self) -> int:
        return self.level

    def get_str1(self) -> str | None:
        return self.str1

    def get_str2(self) -> str | None:
        return self.str2

    def get_str3(self) -> str | None:
        return self.str3

    def get_int1(self) -> int:
        return self.int1

    def get_int2(self) -> int:
        return self.int2

    def __str__(self) -> str:
        return self.message


libvirtError = PyvirtError


class InvalidURIError(PyvirtError):
    """A connection URI that pyvirt cannot accept."""

    code = codes.VIR_ERR_INVALID_ARG
    domain = codes.VIR_FROM_REMOTE


class NoConnectError(PyvirtError):
    """No driver can serve this URI (libvirt: 'no connection driver available')."""

    code = codes.VIR_ERR_NO_CONNECT
    domain = codes.VIR_FROM_NONE


class ConfigError(PyvirtError):
    """A configuration file (qemu.conf...) that cannot be read; names file, line and key."""

    code = codes.VIR_ERR_CONF_SYNTAX
    domain = codes.VIR_FROM_CONF

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None, **kw: Any) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message, **kw)
        self.path = path
        self.line = line
        self.key = key


class XMLError(PyvirtError):
    """An XML document that cannot be accepted; the message names the element or attribute."""

    code = codes.VIR_ERR_XML_ERROR
    domain = codes.VIR_FROM_DOMAIN


class ConfigUnsupported(PyvirtError):
    """Valid XML asking for something this driver cannot do (libvirt's "unsupported configuration")."""

    code = codes.VIR_ERR_CONFIG_UNSUPPORTED
    domain = codes.VIR_FROM_QEMU


class OperationFailed(PyvirtError):
    code = codes.VIR_ERR_OPERATION_FAILED
    domain = codes.VIR_FROM_QEMU


class OperationInvalid(PyvirtError):
    code = codes.VIR_ERR_OPERATION_INVALID
    domain = codes.VIR_FROM_QEMU


class NotSupported(PyvirtError):
    code = codes.VIR_ERR_NO_SUPPORT
    domain = codes.VIR_FROM_QEMU


class InternalError(PyvirtError):
    """A broken invariant inside pyvirt: a bug to report, not a user mistake."""

    code = codes.VIR_ERR_INTERNAL_ERROR
    domain = codes.VIR_FROM_NONE


# --- the QEMU monitor (QMP) ------------------------------------------------------------------------

class MonitorError(OperationFailed):
    """The QMP monitor of a QEMU process failed; the message names the monitor and the command."""


class MonitorStateError(MonitorError):
    """A monitor call made in the wrong state (not connected yet, closing, already connected)."""

    code = codes.VIR_ERR_OPERATION_INVALID


class MonitorDisconnected(MonitorError):
    """The monitor connection ended (QEMU exited or crashed, or pyvirt closed it) during a call."""


class MonitorTimeout(MonitorError):
    """QEMU did not answer in time (hung, stopped, or busy); the connection itself stays up."""

    code = codes.VIR_ERR_OPERATION_TIMEOUT


class MonitorCommandError(MonitorError):
    """QEMU answered a command with an error; ``qmp_class`` and ``qmp_desc`` are QEMU's own.

    libvirt reports these as internal errors ("unable to execute QEMU command 'x': desc"), so the
    code is the same for callers that test it, though the fault is usually the request's.
    """

    code = codes.VIR_ERR_INTERNAL_ERROR

    def __init__(self, message: str, *, command: str, qmp_class: str, qmp_desc: str,
                 **kw: Any) -> None:
        super().__init__(message, **kw)
        self.command = command
        self.qmp_class = qmp_class
        self.qmp_desc = qmp_desc
