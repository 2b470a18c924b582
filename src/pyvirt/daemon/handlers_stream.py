# SPDX-License-Identifier: LGPL-2.1-or-later
"""The REMOTE program's procedures that open data streams (:mod:`pyvirt.daemon.streams`): guest
consoles (DOMAIN_OPEN_CONSOLE).

A console is the embedded driver's: ``dom.openConsole(dev_name, stream, flags)`` on a
non-blocking stream of the client's connection, which checks the flags, that the domain runs and
that the device is a pty, and keeps one session per device across every client of the daemon (all
of them share pyvirtd's process). VIR_DOMAIN_CONSOLE_FORCE takes the device over: the session that
held it gets libvirt's "stream had I/O failure" (STREAM/ERROR), as from libvirtd; without it a busy
device is refused with "operation failed: Active console session exists for this domain".
VIR_DOMAIN_CONSOLE_SAFE is accepted, as by libvirt's QEMU driver, whose consoles are always
handled safely.
"""

from __future__ import annotations

from typing import Any

from pyvirt.daemon.dispatch import ClientSession
from pyvirt.daemon.handlers import HANDLERS
from pyvirt.daemon.handlers_domain import domain_of
from pyvirt.daemon.streams import VirStreamEndpoint, open_stream

__all__: list[str] = []

_h = HANDLERS.register

#: VIR_STREAM_NONBLOCK: the daemon's event loop watches the console's descriptor.
_STREAM_NONBLOCK = 1


@_h("DOMAIN_OPEN_CONSOLE")
def domain_open_console(session: ClientSession, args: Any) -> Any:
    dom = domain_of(session, args.dom)
    stream = session.require_conn().newStream(_STREAM_NONBLOCK)
    dom.openConsole(args.dev_name, stream, args.flags)
    try:
        endpoint = VirStreamEndpoint(stream, f"console {args.dev_name or '(default)'} of "
                                             f"domain '{dom.name()}'")
    except BaseException:
        stream.abort()
        raise
    open_stream(session, endpoint)
    return None
