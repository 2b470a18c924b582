# SPDX-License-Identifier: LGPL-2.1-or-later
"""Character devices: <serial>, <parallel>, <console>, <channel> and the source forms they share
with rng, redirdev and smartcard backends."""

from __future__ import annotations

from pyvirt.xml.base import Attr, Child, Children, Enum, Int, OnOff, Str, XMLObject, YesNo
from pyvirt.xml.domain_devices import Device
from pyvirt.xml.domain_os import DeviceSecLabel

ON_OFF = OnOff()
YES_NO = YesNo()

CHAR_TYPES = ("null", "vc", "pty", "dev", "file", "pipe", "stdio", "udp", "tcp", "unix", "spicevmc",
              "spiceport", "nmdm", "qemu-vdagent", "dbus")


class Reconnect(XMLObject):
    TAG = "reconnect"
    enabled = Attr("enabled", YES_NO)
    timeout = Attr("timeout", Int())


class CharSource(XMLObject):
    TAG = "source"
    type = Attr("type", Enum("unix", "file"))  # only the external TPM's socket names its type
    mode = Attr("mode", Enum("bind", "connect"))
    path = Attr("path", Str())
    host = Attr("host", Str())
    service = Attr("service", Str())
    tls = Attr("tls", YES_NO)
    channel = Attr("channel", Str())
    append = Attr("append", ON_OFF)
    reconnect = Child(Reconnect)
    seclabels = Children(DeviceSecLabel)


class CharProtocol(XMLObject):
    TAG = "protocol"
    type = Attr("type", Enum("raw", "telnet", "telnets", "tls"))


class CharLog(XMLObject):
    TAG = "log"
    file = Attr("file", Str(nonempty=True))
    append = Attr("append", ON_OFF)


class CharTargetModel(XMLObject):
    TAG = "model"
    name = Attr("name", Str(nonempty=True))


class CharTarget(XMLObject):
    TAG = "target"
    type = Attr("type", Str(nonempty=True))
    name = Attr("name", Str())
    state = Attr("state", Enum("connected", "disconnected"))
    address = Attr("address", Str())
    port = Attr("port", Str())
    model = Child(CharTargetModel)


class CharDevice(Device):
    """The common shape of serial, parallel, console and channel devices."""

    type = Attr("type", Enum(*CHAR_TYPES))
    tty = Attr("tty", Str())
    sources = Children(CharSource)
    protocol = Child(CharProtocol)
    log = Child(CharLog)
    target = Child(CharTarget)


class Serial(CharDevice):
    TAG = "serial"


class Parallel(CharDevice):
    TAG = "parallel"


class Console(CharDevice):
    TAG = "console"


class Channel(CharDevice):
    TAG = "channel"
