# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt 9.0's storage pool and volume XML (formatstorage), declared with :mod:`pyvirt.xml.base`.

::

    <pool type='dir|fs|logical|...'>
      <name/> <uuid/>
      <capacity unit='bytes'/> <allocation unit='bytes'/> <available unit='bytes'/>   (output only)
      <source> <device path=/>... <dir path=/> <name/> <format type=/> </source>
      <target> <path/> <permissions> <mode/> <owner/> <group/> <label/> </permissions> </target>
    </pool>

    <volume type='file|block|dir|...'>
      <name/> <key/> <capacity unit=/> <allocation unit=/> <physical unit=/>
      <target> <path/> <format type=/> <permissions/> <timestamps/> <encryption/> <compat/>
               <nocow/> <features><lazy_refcounts/></features> </target>
      <backingStore> <path/> <format type=/> <permissions/> <timestamps/> </backingStore>
    </volume>

Models know no host: the sizes a pool reports and the facts of a volume's file are filled by the
storage driver (:mod:`pyvirt.storage.driver`). Errors carry the texts and codes of libvirt's parser
(storage_conf.c) for the same mistakes, in VIR_FROM_STORAGE; a few add how to fix the document.
"""

from __future__ import annotations

import re
import uuid as _uuid

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError, XMLError
from pyvirt.xml.base import (
    Attr,
    Body,
    Child,
    Children,
    Flag,
    ParseState,
    Text,
    Uuid,
    XMLObject,
    format_element,
    parse_document,
)
from pyvirt.xml.units import scale_to_bytes

__all__ = [
    "POOL_TYPES", "VOLUME_TYPES", "VOLUME_FORMATS", "Permissions", "PoolSource", "PoolTarget", "Pool",
    "Volume", "VolumeTarget", "BackingStore", "Encryption", "Timestamps", "parse_pool", "parse_volume",
    "parse_size", "format_pool", "format_volume",
]

#: libvirt's virStoragePoolType names
POOL_TYPES = ("dir", "fs", "netfs", "logical", "disk", "iscsi", "iscsi-direct", "scsi", "mpath", "rbd",
              "sheepdog", "gluster", "zfs", "vstorage")
#: libvirt's virStorageVolType names
VOLUME_TYPES = ("file", "block", "dir", "network", "netdir", "ploop")
#: the file formats of a dir/fs pool's volumes (virStorageFileFormat)
VOLUME_FORMATS = ("none", "raw", "dir", "bochs", "cloop", "dmg", "iso", "vpc", "vdi", "fat", "vhd", "ploop",
                  "cow", "qcow", "qcow2", "qed", "vmdk")
#: pool types whose <source> needs a <device> (libvirt's VIR_STORAGE_POOL_SOURCE_DEVICE)
_NEEDS_DEVICE = ("fs", "disk", "iscsi", "iscsi-direct")
_DEFAULT_SOURCE_FORMAT = {"fs": "auto", "netfs": "auto", "logical": "lvm2", "disk": "unknown"}


def _error(message: str, code: int = codes.VIR_ERR_XML_ERROR) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_STORAGE)


def parse_size(text: str | None, unit: str | None, what: str) -> int:
    """A size with its unit as libvirt's virDomainParseScaledValue reads it for storage (bytes
    when no unit); malformed numbers and unknown suffixes get libvirt's errors."""
    value = (text or "").strip()
    if not re.fullmatch(r"[0-9]+", value):
        raise _error(f"XML error: malformed {what} element: '{text or ''}' is not a non-negative whole "
                     "number")
    try:
        size = scale_to_bytes(int(value), unit, default=1)
    except ValueError as exc:
        raise _error(f"invalid argument: {exc}", codes.VIR_ERR_INVALID_ARG) from None
    if size >= 2**63:
        raise _error(f"Numerical result out of range: {what} {value} {unit or 'bytes'} is larger than "
                     "2^63-1 bytes", codes.VIR_ERR_OVERFLOW)
    return size


# ---------------------------------------------------------------------------------------------------
# shared parts


class Permissions(XMLObject):
    """<permissions>: mode (octal), owner and group (numeric ids) and an optional label."""

    TAG = "permissions"
    mode = Text("mode")
    owner = Text("owner")
    group = Text("group")
    label = Text("label")

    def _after_parse(self, st: ParseState) -> None:
        if self.mode is not None:
            if not re.fullmatch(r"\s*[0-7]+\s*", self.mode) or int(self.mode, 8) > 0o777:
                raise _error(f"XML error: malformed octal mode: '{self.mode}' (in {st.path}/mode); give "
                             "up to four octal digits, e.g. 0755")
            self.mode = f"{int(self.mode, 8):04o}"
        for tag in ("owner", "group"):
            value = getattr(self, tag)
            if value is not None:
                if not re.fullmatch(r"\s*-?[0-9]+\s*", value):
                    raise _error(f"XML error: malformed {tag} element: '{value}' (in {st.path}/{tag}); give "
                                 f"a numeric {'uid' if tag == 'owner' else 'gid'}")
                setattr(self, tag, str(int(value)))

    @classmethod
    def make(cls, mode: int, uid: int, gid: int, label: str | None = None) -> Permissions:
        return cls(mode=f"{mode:04o}", owner=str(uid), group=str(gid), label=label)


class Scaled(XMLObject):
    """A size element: ``<capacity unit='G'>10</capacity>`` (text kept; read with parse_size)."""

    unit = Attr("unit")
    value = Body()

    @classmethod
    def of(cls, size: int) -> Scaled:
        return cls(unit="bytes", value=str(size))

    def bytes(self, what: str) -> int:
        return parse_size(self.value, self.unit, what)


class FormatType(XMLObject):
    TAG = "format"
    type = Attr("type")


# ---------------------------------------------------------------------------------------------------
# pools


class PoolDevice(XMLObject):
    TAG = "device"
    path = Attr("path")


class PoolDir(XMLObject):
    TAG = "dir"
    path = Attr("path")


class PoolSource(XMLObject):
    TAG = "source"
    devices = Children(PoolDevice)
    dir = Child(PoolDir)
    name = Text("name")
    format = Child(FormatType)


class PoolTarget(XMLObject):
    TAG = "target"
    path = Text("path")
    permissions = Child(Permissions)


class Pool(XMLObject):
    TAG = "pool"
    type = Attr("type")
    name = Text("name")
    uuid = Text("uuid")
    capacity = Child(Scaled, "capacity")
    allocation = Child(Scaled, "allocation")
    available = Child(Scaled, "available")
    source = Child(PoolSource)
    target = Child(PoolTarget)

    def _after_parse(self, st: ParseState) -> None:
        # Input values of the runtime sizes are not the pool's: libvirt ignores them too.
        self.capacity = self.allocation = self.available = None
        if self.type is None:
            raise _error("XML error: Missing required attribute 'type' in element 'pool'")
        if self.type not in POOL_TYPES:
            raise _error(f"XML error: Invalid value for attribute 'type' in element 'pool': '{self.type}'. "
                         f"Expected one of: {', '.join(POOL_TYPES)}")
        src = self.source if self.source is not None else PoolSource()
        if self.type == "logical" and not src.name:
            src.name = self.name  # the volume group is named after the pool
        if self.type in _DEFAULT_SOURCE_FORMAT and (src.format is None or not src.format.type):
            src.format = FormatType(type=_DEFAULT_SOURCE_FORMAT[self.type])
        self.source = src
        if not self.name:
            raise _error("XML error: missing pool source name element")
        if "/" in self.name:
            raise _error(f"XML error: name {self.name} cannot contain '/'")
        if self.uuid is not None:
            try:
                self.uuid = Uuid().parse(self.uuid)
            except ValueError:
                raise _error("XML error: malformed uuid element") from None
        if self.type in _NEEDS_DEVICE and not src.devices:
            raise _error("XML error: missing storage pool source device name")
        if self.type == "logical":
            # libvirt's target for a volume group is always /dev/VGNAME
            if self.target is None:
                self.target = PoolTarget()
            self.target.path = f"/dev/{src.name}"
        if self.target is None or not self.target.path:
            raise _error("XML error: missing storage pool target path")
        self.target.path = _clean_path(self.target.path)

    @property
    def path(self) -> str:
        assert self.target is not None and self.target.path is not None
        return self.target.path


def _clean_path(path: str) -> str:
    """libvirt's virFileSanitizePath: no doubled slashes, no trailing one."""
    cleaned = re.sub(r"/+", "/", path)
    return cleaned.rstrip("/") if len(cleaned) > 1 else cleaned


# ---------------------------------------------------------------------------------------------------
# volumes


class Timestamps(XMLObject):
    TAG = "timestamps"
    atime = Text("atime")
    mtime = Text("mtime")
    ctime = Text("ctime")
    btime = Text("btime")


class EncryptionSecret(XMLObject):
    TAG = "secret"
    type = Attr("type")
    uuid = Attr("uuid")
    usage = Attr("usage")


class Encryption(XMLObject):
    TAG = "encryption"
    format = Attr("format")
    secrets = Children(EncryptionSecret)


class VolumeFeatures(XMLObject):
    TAG = "features"
    lazy_refcounts = Flag("lazy_refcounts")


class VolumeTarget(XMLObject):
    TAG = "target"
    path = Text("path")
    format = Child(FormatType)
    permissions = Child(Permissions)
    timestamps = Child(Timestamps)
    encryption = Child(Encryption)
    compat = Text("compat")
    nocow = Flag("nocow")
    features = Child(VolumeFeatures)


class BackingStore(XMLObject):
    TAG = "backingStore"
    path = Text("path")
    format = Child(FormatType)
    permissions = Child(Permissions)
    timestamps = Child(Timestamps)


class Volume(XMLObject):
    TAG = "volume"
    type = Attr("type")
    name = Text("name")
    key = Text("key")
    capacity = Child(Scaled, "capacity")
    allocation = Child(Scaled, "allocation")
    physical = Child(Scaled, "physical")
    target = Child(VolumeTarget)
    backing = Child(BackingStore)

    #: sizes in bytes, set by parse_volume (allocation None: as much as the capacity)
    capacity_bytes: int = 0
    allocation_bytes: int | None = None

    def _after_parse(self, st: ParseState) -> None:
        if not self.name:
            raise _error("XML error: missing volume name element")
        if self.type is not None and self.type not in VOLUME_TYPES:
            raise _error(f"unsupported configuration: unknown volume type '{self.type}'",
                         codes.VIR_ERR_CONFIG_UNSUPPORTED)
        fmt = self.target.format.type if self.target is not None and self.target.format is not None else None
        if fmt is not None and fmt not in VOLUME_FORMATS:
            raise _error(f"unsupported configuration: unknown volume format type {fmt}; expected one of: "
                         f"{', '.join(VOLUME_FORMATS)}", codes.VIR_ERR_CONFIG_UNSUPPORTED)
        enc = self.target.encryption if self.target is not None else None
        if enc is not None:
            if enc.format not in ("luks", "default", "qcow"):
                raise _error(f"XML error: unknown volume encryption format type {enc.format}")
            for secret in enc.secrets:
                if secret.type != "passphrase":
                    raise _error(f"XML error: unknown volume encryption secret type {secret.type}")
                if secret.uuid is not None:
                    try:
                        secret.uuid = Uuid().parse(secret.uuid)
                    except ValueError:
                        raise _error(f"XML error: malformed volume encryption uuid '{secret.uuid}'") from None

    @property
    def format_type(self) -> str | None:
        if self.target is None or self.target.format is None:
            return None
        return self.target.format.type

    @property
    def encryption(self) -> Encryption | None:
        return self.target.encryption if self.target is not None else None


def _parse_root(xml: str | bytes, root: str, what: str) -> object:
    try:
        return parse_document(xml, root)
    except XMLError as exc:
        text = str(exc)
        if text.startswith("unexpected root element"):
            found = text.split("<", 1)[1].split(">", 1)[0]
            raise _error(f"XML error: expecting root element of '{root}', not '{found}'") from exc
        raise PyvirtError(f"({what}): {text}", code=codes.VIR_ERR_XML_DETAIL,
                          domain=codes.VIR_FROM_STORAGE) from exc


def _reword(exc: PyvirtError) -> PyvirtError:
    if exc.domain == codes.VIR_FROM_DOMAIN:  # pyvirt.xml.base's generic field errors
        exc.domain = codes.VIR_FROM_STORAGE
    return exc


def parse_pool(xml: str | bytes) -> Pool:
    """Parse pool XML; a missing UUID is generated, as libvirt's parser does."""
    root = _parse_root(xml, "pool", "storage_pool_definition")
    try:
        pool = Pool.from_node(root, ParseState(path="/pool"))  # type: ignore[arg-type]
    except PyvirtError as exc:
        raise _reword(exc) from None
    if pool.uuid is None:
        pool.uuid = str(_uuid.uuid4())
    return pool


def parse_volume(xml: str | bytes) -> Volume:
    """Parse volume XML (libvirt's virStorageVolDefParse for a dir pool's file volume)."""
    root = _parse_root(xml, "volume", "storage_volume_definition")
    try:
        vol = Volume.from_node(root, ParseState(path="/volume"))  # type: ignore[arg-type]
    except PyvirtError as exc:
        raise _reword(exc) from None
    if vol.capacity is None or vol.capacity.value is None:
        raise _error("XML error: missing capacity element")
    vol.capacity_bytes = vol.capacity.bytes("capacity")
    if vol.allocation is not None and vol.allocation.value is not None:
        vol.allocation_bytes = vol.allocation.bytes("allocation")
    return vol


def format_pool(pool: Pool, capacity: int, allocation: int, available: int) -> str:
    """Pool XML as libvirt prints it, with the sizes the driver measured."""
    out = Pool(type=pool.type, name=pool.name, uuid=pool.uuid, capacity=Scaled.of(capacity),
               allocation=Scaled.of(allocation), available=Scaled.of(available), source=pool.source,
               target=pool.target)
    node = out.to_node()
    assert node is not None
    text = format_element(node)
    # libvirt writes <source> open and closed even when it holds nothing
    return text.replace("  <source/>\n", "  <source>\n  </source>\n", 1) if "<source" in text else \
        text.replace("  <target>", "  <source>\n  </source>\n  <target>", 1)


def format_volume(vol: Volume) -> str:
    node = vol.to_node()
    assert node is not None
    return format_element(node)
