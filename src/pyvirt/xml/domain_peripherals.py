# SPDX-License-Identifier: LGPL-2.1-or-later
"""Guest-facing peripherals: input, graphics, video, sound, audio, watchdog, memballoon, rng, tpm,
panic, shmem, vsock, iommu, redirdev, smartcard, hub."""

from __future__ import annotations

from pyvirt.xml.base import (
    Attr,
    Body,
    Child,
    Children,
    Enum,
    Flag,
    Hex,
    Int,
    OnOff,
    ParseState,
    Str,
    Text,
    XMLObject,
    YesNo,
)
from pyvirt.xml.domain_chardev import CharProtocol, CharSource
from pyvirt.xml.domain_devices import Device
from pyvirt.xml.units import Memory

ON_OFF = OnOff()
YES_NO = YesNo()


class InputSource(XMLObject):
    TAG = "source"
    evdev = Attr("evdev", Str())
    dev = Attr("dev", Str())
    grab = Attr("grab", Enum("all"))
    grab_toggle = Attr("grabToggle", Str())
    repeat = Attr("repeat", ON_OFF)


class InputDriver(XMLObject):
    TAG = "driver"
    iommu = Attr("iommu", ON_OFF)
    ats = Attr("ats", ON_OFF)
    packed = Attr("packed", ON_OFF)


class Input(Device):
    TAG = "input"
    type = Attr("type", Enum("mouse", "tablet", "keyboard", "passthrough", "evdev"), required=True)
    bus = Attr("bus", Enum("ps2", "usb", "xen", "parallels", "virtio", "none"))
    driver = Child(InputDriver)
    source = Child(InputSource)


# --- <graphics> -------------------------------------------------------------------------------------

class GraphicsListen(XMLObject):
    TAG = "listen"
    _KEEP_EMPTY = True
    type = Attr("type", Enum("address", "network", "socket", "none"))
    address = Attr("address", Str())
    network = Attr("network", Str())
    socket = Attr("socket", Str())


class SpiceChannel(XMLObject):
    TAG = "channel"
    name = Attr("name", Enum("main", "display", "inputs", "cursor", "playback", "record", "smartcard",
                             "usbredir"))
    mode = Attr("mode", Enum("any", "secure", "insecure"))


class CompressionSetting(XMLObject):
    compression = Attr("compression", Str())


class SpiceMode(XMLObject):
    mode = Attr("mode", Str())


class SpiceCopyPaste(XMLObject):
    copypaste = Attr("copypaste", YES_NO)


class SpiceFileTransfer(XMLObject):
    enable = Attr("enable", YES_NO)


class GraphicsGL(XMLObject):
    TAG = "gl"
    enable = Attr("enable", YES_NO)
    rendernode = Attr("rendernode", Str())


class Graphics(Device):
    TAG = "graphics"
    type = Attr("type", Enum("sdl", "vnc", "rdp", "desktop", "spice", "egl-headless", "dbus"), required=True)
    # vnc/spice/rdp
    socket = Attr("socket", Str())
    port = Attr("port", Int(-1, 65535))
    tls_port = Attr("tlsPort", Int(-1, 65535))
    autoport = Attr("autoport", YES_NO)
    websocket = Attr("websocket", Int(-1, 65535))
    listen = Attr("listen", Str())
    keymap = Attr("keymap", Str())
    default_mode = Attr("defaultMode", Enum("any", "secure", "insecure"))
    share_policy = Attr("sharePolicy", Enum("allow-exclusive", "force-shared", "ignore"))
    power_control = Attr("powerControl", YES_NO)
    passwd = Attr("passwd", Str())
    passwd_valid_to = Attr("passwdValidTo", Str())
    connected = Attr("connected", Enum("keep", "disconnect", "fail"))
    # sdl
    display = Attr("display", Str())
    xauth = Attr("xauth", Str())
    fullscreen = Attr("fullscreen", YES_NO)
    listens = Children(GraphicsListen)
    channels = Children(SpiceChannel)
    image = Child(CompressionSetting, "image")
    jpeg = Child(CompressionSetting, "jpeg")
    zlib = Child(CompressionSetting, "zlib")
    playback = Child(CompressionSetting, "playback")
    streaming = Child(SpiceMode, "streaming")
    mouse = Child(SpiceMode, "mouse")
    clipboard = Child(SpiceCopyPaste, "clipboard")
    filetransfer = Child(SpiceFileTransfer, "filetransfer")
    gl = Child(GraphicsGL)
    audio = Child(lambda: GraphicsAudio, "audio")

    def _after_parse(self, st: ParseState) -> None:
        for name in ("port", "tls_port", "websocket"):
            val = self._values.get(name)
            # -1 asks for automatic allocation; 0 means unset; real ports start at 5900 for vnc
            # displays in libvirt's arithmetic, but any port of the TCP range is accepted.
            if val is not None and val < -1:
                raise st.error(f"graphics {name} {val} is out of range")


class GraphicsAudio(XMLObject):
    TAG = "audio"
    id = Attr("id", Int(1))


# --- <video>, <sound>, <audio> ----------------------------------------------------------------------

class VideoAccel(XMLObject):
    TAG = "acceleration"
    accel3d = Attr("accel3d", YES_NO)


class VideoResolution(XMLObject):
    TAG = "resolution"
    x = Attr("x", Int(1))
    y = Attr("y", Int(1))


class VideoModel(XMLObject):
    TAG = "model"
    type = Attr("type", Enum("default", "vga", "cirrus", "vmvga", "xen", "vbox", "qxl", "parallels",
                             "virtio", "gop", "none", "bochs", "ramfb"))
    ram = Attr("ram", Int())
    vram = Attr("vram", Int())
    vram64 = Attr("vram64", Int())
    vgamem = Attr("vgamem", Int())
    heads = Attr("heads", Int(1))
    primary = Attr("primary", YES_NO)
    acceleration = Child(VideoAccel)
    resolution = Child(VideoResolution)


class VideoDriver(XMLObject):
    TAG = "driver"
    iommu = Attr("iommu", ON_OFF)
    name = Attr("name", Enum("qemu", "vhostuser"))


class Video(Device):
    TAG = "video"
    _KEEP_EMPTY = True
    driver = Child(VideoDriver)
    model = Child(VideoModel)


class SoundCodec(XMLObject):
    TAG = "codec"
    type = Attr("type", Enum("duplex", "micro", "output"))


class Sound(Device):
    TAG = "sound"
    model = Attr("model", Enum("sb16", "es1370", "pcspk", "ac97", "ich6", "ich9", "usb", "ich7"),
                 required=True)
    codecs = Children(SoundCodec)
    audio = Child(GraphicsAudio)


class AudioIO(XMLObject):
    mixing_engine = Attr("mixingEngine", YES_NO)
    voices = Attr("voices", Int(1))
    buffer_length = Attr("bufferLength", Int())
    dev = Attr("dev", Str())
    server_name = Attr("serverName", Str())
    client_name = Attr("clientName", Str())
    connect_ports = Attr("connectPorts", Str())
    name = Attr("name", Str())
    stream_name = Attr("streamName", Str())
    latency = Attr("latency", Int())


class Audio(XMLObject):
    TAG = "audio"
    id = Attr("id", Int(1))
    type = Attr("type", Enum("none", "alsa", "coreaudio", "jack", "oss", "pulseaudio", "sdl", "spice",
                             "file", "dbus"))
    timer_period = Attr("timerPeriod", Int())
    server_name = Attr("serverName", Str())
    path = Attr("path", Str())
    input = Child(AudioIO, "input")
    output = Child(AudioIO, "output")


# --- small devices ----------------------------------------------------------------------------------

class Watchdog(Device):
    TAG = "watchdog"
    model = Attr("model", Enum("i6300esb", "ib700", "diag288", "itco"), required=True)
    action = Attr("action", Enum("reset", "shutdown", "poweroff", "pause", "dump", "none", "inject-nmi"))


class BalloonStats(XMLObject):
    TAG = "stats"
    period = Attr("period", Int(0, 2**31 - 1))


class BalloonDriver(XMLObject):
    TAG = "driver"
    iommu = Attr("iommu", ON_OFF)
    ats = Attr("ats", ON_OFF)
    packed = Attr("packed", ON_OFF)


class MemBalloon(Device):
    TAG = "memballoon"
    _TAIL = (*Device._TAIL, "driver")  # libvirt prints the balloon's driver after its address
    model = Attr("model", Enum("virtio", "xen", "none", "virtio-transitional", "virtio-non-transitional"),
                 required=True)
    autodeflate = Attr("autodeflate", ON_OFF)
    free_page_reporting = Attr("freePageReporting", ON_OFF)
    stats = Child(BalloonStats)
    driver = Child(BalloonDriver)


class RNGRate(XMLObject):
    TAG = "rate"
    bytes = Attr("bytes", Int(1))
    period = Attr("period", Int(1))


class RNGBackend(XMLObject):
    TAG = "backend"
    model = Attr("model", Enum("random", "egd", "builtin"))
    type = Attr("type", Str())
    sources = Children(CharSource)
    protocol = Child(CharProtocol)
    path = Body(Str(strip=True))


class RNG(Device):
    TAG = "rng"
    model = Attr("model", Enum("virtio", "virtio-transitional", "virtio-non-transitional"), required=True)
    rate = Child(RNGRate)
    backend = Child(RNGBackend)


class TPMDevice(XMLObject):
    TAG = "device"
    path = Attr("path", Str())


class TPMEncryption(XMLObject):
    TAG = "encryption"
    secret = Attr("secret", Str())


class TPMBackend(XMLObject):
    TAG = "backend"
    type = Attr("type", Enum("passthrough", "emulator", "external"), required=True)
    version = Attr("version", Enum("1.2", "2.0"))
    persistent_state = Attr("persistent_state", YES_NO)
    device = Child(TPMDevice)
    encryption = Child(TPMEncryption)
    active_pcr_banks = Child(lambda: ActivePCRBanks, "active_pcr_banks")
    source = Child(CharSource)


class ActivePCRBanks(XMLObject):
    TAG = "active_pcr_banks"
    sha1 = Flag("sha1")
    sha256 = Flag("sha256")
    sha384 = Flag("sha384")
    sha512 = Flag("sha512")


class TPM(Device):
    TAG = "tpm"
    model = Attr("model", Enum("tpm-tis", "tpm-crb", "tpm-spapr", "spapr-tpm-proxy"))
    backend = Child(TPMBackend)


class Panic(Device):
    TAG = "panic"
    _KEEP_EMPTY = True
    model = Attr("model", Enum("isa", "pseries", "hyperv", "s390", "pvpanic"))


class ShmemServer(XMLObject):
    TAG = "server"
    _KEEP_EMPTY = True
    path = Attr("path", Str())


class ShmemModel(XMLObject):
    TAG = "model"
    type = Attr("type", Enum("ivshmem", "ivshmem-plain", "ivshmem-doorbell"))


class ShmemMsi(XMLObject):
    TAG = "msi"
    vectors = Attr("vectors", Int(1))
    ioeventfd = Attr("ioeventfd", ON_OFF)


class Shmem(Device):
    TAG = "shmem"
    name = Attr("name", Str(nonempty=True))
    role = Attr("role", Enum("master", "peer"))
    model = Child(ShmemModel)
    size = Memory("size", out_unit="M")
    server = Child(ShmemServer)
    msi = Child(ShmemMsi)


class VsockCID(XMLObject):
    TAG = "cid"
    auto = Attr("auto", YES_NO)
    address = Attr("address", Int(3, 2**32 - 2))


class Vsock(Device):
    TAG = "vsock"
    model = Attr("model", Enum("virtio", "virtio-transitional", "virtio-non-transitional"))
    cid = Child(VsockCID)


class IOMMUDriver(XMLObject):
    TAG = "driver"
    intremap = Attr("intremap", ON_OFF)
    caching_mode = Attr("caching_mode", ON_OFF)
    eim = Attr("eim", ON_OFF)
    iotlb = Attr("iotlb", ON_OFF)
    aw_bits = Attr("aw_bits", Int())


class IOMMU(Device):
    TAG = "iommu"
    model = Attr("model", Enum("intel", "smmuv3", "virtio"))
    driver = Child(IOMMUDriver)


class Redirdev(Device):
    TAG = "redirdev"
    bus = Attr("bus", Enum("usb"))
    type = Attr("type", Enum("null", "vc", "pty", "dev", "file", "pipe", "stdio", "udp", "tcp", "unix",
                             "spicevmc", "spiceport", "nmdm", "qemu-vdagent", "dbus"))
    sources = Children(CharSource)
    protocol = Child(CharProtocol)


class UpperHex(Hex):
    """libvirt prints USB vendor and product ids of redirect filters in upper case."""

    def format(self, value: int) -> str:
        return f"0x{value:0{self.width}X}"


class RedirFilterUSB(XMLObject):
    TAG = "usbdev"
    class_ = Attr("class", Hex(2, 0xFF))
    vendor = Attr("vendor", UpperHex(4, 0xFFFF))
    product = Attr("product", UpperHex(4, 0xFFFF))
    version = Attr("version", Str())
    allow = Attr("allow", YES_NO)


class RedirFilter(XMLObject):
    TAG = "redirfilter"
    usbdevs = Children(RedirFilterUSB)


class Smartcard(Device):
    TAG = "smartcard"
    mode = Attr("mode", Enum("host", "host-certificates", "passthrough"), required=True)
    type = Attr("type", Str())
    certificates = Children(lambda: SmartcardCert, "certificate")
    database = Text("database")
    sources = Children(CharSource)
    protocol = Child(CharProtocol)


class SmartcardCert(XMLObject):
    TAG = "certificate"
    value = Body(Str())


class Hub(Device):
    TAG = "hub"
    type = Attr("type", Enum("usb"))
