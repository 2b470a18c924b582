# SPDX-License-Identifier: LGPL-2.1-or-later
"""The secret driver of one instance: libvirt's secret driver, embedded next to the QEMU driver.

Layout (libvirt's embedded secret driver keeps its definitions in ``ROOT/etc/secrets`` too)::

    CONFIG/secrets/UUID.xml              the definition, as secret-dumpxml prints it (0600)
    CONFIG/secrets/UUID.aes256gcm        the value, sealed (pyvirt.secret.vault) (0600)
    LIB/secrets/secrets-encryption-key   the instance's master key (0600, made on first use)

where CONFIG is ``ROOT/etc`` and LIB ``ROOT/lib`` for an embed root (the system instance:
``/etc/pyvirt`` and ``/var/lib/pyvirt``). Ephemeral secrets and their values only ever live in this
process's memory, as in libvirt. Every file is written atomically; a change is made in memory only
once it is on disk, so a failed write changes nothing.

One process drives an instance at a time (the QEMU driver's instance lock); inside it, one
:class:`SecretDriver` per instance is shared by all connections (:func:`driver_for`) and a lock
serialises its changes. Behaviour and errors follow libvirt 9.0 (secret_driver.c, virsecretobj.c):
a usage (type and id) belongs to one secret; redefining a UUID may not change its usage id nor make
a private secret public; a private secret's value is refused to API callers ("secret is private")
but given to pyvirt itself (:meth:`SecretDriver.secret_value`, for QEMU's encrypted disks).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from pyvirt import _errcodes as codes
from pyvirt.errors import OperationFailed, PyvirtError
from pyvirt.fsutil import atomic_write_text
from pyvirt.secret import vault
from pyvirt.xml.secret import USAGE_TYPES, Secret, parse_secret

if TYPE_CHECKING:
    from pyvirt.conf.instance import InstancePaths
    from pyvirt.qemu.driver import QemuDriver

__all__ = ["SecretPaths", "SecretRef", "SecretDriver", "secret_paths", "driver_for", "VALUE_SUFFIX"]

log = logging.getLogger("pyvirt.secret")

VALUE_SUFFIX = ".aes256gcm"
KEY_FILE_NAME = "secrets-encryption-key"

# libvirt's flag values (include/libvirt/libvirt-secret.h)
DEFINE_VALIDATE = 1
LIST_EPHEMERAL = 1
LIST_NO_EPHEMERAL = 2
LIST_PRIVATE = 4
LIST_NO_PRIVATE = 8
_LIST_ALL = LIST_EPHEMERAL | LIST_NO_EPHEMERAL | LIST_PRIVATE | LIST_NO_PRIVATE


class SecretPaths(NamedTuple):
    config_dir: Path  #: UUID.xml and the sealed values
    key_file: Path    #: the master key


def secret_paths(paths: InstancePaths) -> SecretPaths:
    """Where the secrets of a driver instance live (see the module's docstring)."""
    # lib_dir is LIB/qemu (ROOT/lib/qemu, /var/lib/pyvirt/qemu; the session's ~/.config/pyvirt/qemu/lib)
    return SecretPaths(paths.config_dir / "secrets", paths.lib_dir.parent / "secrets" / KEY_FILE_NAME)


class SecretRef(NamedTuple):
    """What a virSecret handle keeps (libvirt's virGetSecret): the UUID and the usage."""

    uuid: str
    usage_type: int
    usage_id: str


@dataclass
class _Entry:
    secret: Secret
    #: the value of an ephemeral secret (persistent ones keep theirs sealed on disk only)
    value: bytes | None = None


def _error(code: int, message: str) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_SECRET)


def _no_secret(uuid: str) -> PyvirtError:
    return _error(codes.VIR_ERR_NO_SECRET, f"Secret not found: no secret with matching uuid '{uuid}'")


def check_flags(flags: int, allowed: int, function: str) -> None:
    """libvirt's virCheckFlags: unknown bits are an invalid argument naming the driver function."""
    if flags & ~allowed:
        raise PyvirtError(f"unsupported flags (0x{flags & ~allowed:x}) in function {function}",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_SECRET,
                          str1=function, str2="flags")


def _pair_matches(flags: int, yes: int, no: int, value: bool) -> bool:
    return not flags & (yes | no) or bool(flags & yes and value or flags & no and not value)


class SecretDriver:
    """The secrets of one driver instance (``paths``)."""

    def __init__(self, paths: SecretPaths) -> None:
        self.paths = paths
        self._lock = threading.RLock()
        self._secrets: dict[str, _Entry] = {}
        self._key: bytes | None = None
        self._load()

    # -- files -------------------------------------------------------------------------------------

    def _xml_file(self, uuid: str) -> Path:
        return self.paths.config_dir / f"{uuid}.xml"

    def _value_file(self, uuid: str) -> Path:
        return self.paths.config_dir / f"{uuid}{VALUE_SUFFIX}"

    def _ensure_dir(self) -> None:
        try:
            self.paths.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise OperationFailed(f"cannot create config directory '{self.paths.config_dir}': {e.strerror}",
                                  domain=codes.VIR_FROM_SECRET) from e

    def _load(self) -> None:
        """Read the stored definitions; a broken one is logged and skipped, as libvirt does."""
        try:
            files = sorted(self.paths.config_dir.glob("*.xml"))
        except OSError:
            return
        for path in files:
            try:
                secret = parse_secret(path.read_bytes())
                if secret.uuid != path.name[:-len(".xml")]:
                    raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                                 f"<uuid> does not match secret file name '{path.name}'")
                assert secret.uuid is not None
                clash = self._find_usage(secret)
                if clash is not None:
                    raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                                 f"secret {clash} already has usage {secret.usage_id}")
            except (OSError, PyvirtError) as exc:
                log.error("Error reading secret %s: %s; it is left out", path, exc)
                continue
            secret.ephemeral = False  # a stored definition is persistent, whatever it says
            self._secrets[secret.uuid] = _Entry(secret)

    def _master_key(self, *, create: bool) -> bytes:
        if self._key is None:
            path = self.paths.key_file
            if create:
                if not path.exists():
                    # a new key would leave the values sealed with the lost one unreadable for good
                    orphans = sorted(p.name for p in self.paths.config_dir.glob(f"*{VALUE_SUFFIX}"))
                    if orphans:
                        raise _error(codes.VIR_ERR_OPERATION_FAILED,
                                     f"the secrets' master key {path} is missing while values sealed with "
                                     f"it exist ({', '.join(orphans)}): restore the key file, or remove "
                                     "those files (their values are lost) and set the values again")
                self._key = vault.load_or_create_key(path)
            else:
                try:
                    self._key = vault.read_key(path)
                except FileNotFoundError:
                    raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                                 f"internal error: the secrets' master key {path} is missing, so stored "
                                 "secret values cannot be decrypted; restore it, or set the values "
                                 "again") from None
        return self._key

    def _write_value(self, uuid: str, value: bytes) -> None:
        sealed = vault.seal(self._master_key(create=True), uuid, value)
        vault.atomic_write_bytes(self._value_file(uuid), sealed)

    def _read_value(self, uuid: str) -> bytes | None:
        path = self._value_file(uuid)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise OperationFailed(f"cannot read '{path}': {e.strerror}", domain=codes.VIR_FROM_SECRET) from e
        return vault.unseal(self._master_key(create=False), uuid, blob, path)

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise OperationFailed(f"cannot unlink '{path}': {e.strerror}",
                                  domain=codes.VIR_FROM_SECRET) from e

    # -- lookups -----------------------------------------------------------------------------------

    def _entry(self, uuid: str) -> _Entry:
        entry = self._secrets.get(uuid)
        if entry is None:
            raise _no_secret(uuid)
        return entry

    def _find_usage(self, secret: Secret) -> str | None:
        """The UUID of another secret with the usage of ``secret`` (usage type 'none' is never taken)."""
        if not secret.usage_type:
            return None
        for uuid, entry in self._secrets.items():
            other = entry.secret
            if (uuid != secret.uuid and other.usage_type == secret.usage_type
                    and other.usage_id == secret.usage_id):
                return uuid
        return None

    @staticmethod
    def _ref(secret: Secret) -> SecretRef:
        assert secret.uuid is not None
        return SecretRef(secret.uuid, secret.usage_type, secret.usage_id or "")

    def lookup_uuid(self, uuid: str) -> SecretRef:
        with self._lock:
            return self._ref(self._entry(uuid).secret)

    def lookup_usage(self, usage_type: int, usage_id: str) -> SecretRef:
        with self._lock:
            for entry in self._secrets.values():
                s = entry.secret
                if usage_type and s.usage_type == usage_type and s.usage_id == usage_id:
                    return self._ref(s)
        raise _error(codes.VIR_ERR_NO_SECRET, f"Secret not found: no secret with matching usage '{usage_id}'")

    def list_all(self, flags: int = 0) -> list[SecretRef]:
        """The secrets matching libvirt's list filters, by UUID; each pair of bits filters only when
        one of them is given (both: no filter)."""
        check_flags(flags, _LIST_ALL, "secretConnectListAllSecrets")
        found = []
        with self._lock:
            for entry in self._secrets.values():
                s = entry.secret
                if not (_pair_matches(flags, LIST_EPHEMERAL, LIST_NO_EPHEMERAL, bool(s.ephemeral))
                        and _pair_matches(flags, LIST_PRIVATE, LIST_NO_PRIVATE, bool(s.private))):
                    continue
                found.append(self._ref(s))
        return sorted(found)

    def xml_desc(self, uuid: str, flags: int = 0) -> str:
        check_flags(flags, 0, "secretGetXMLDesc")
        with self._lock:
            return self._entry(uuid).secret.to_xml()

    # -- changes -----------------------------------------------------------------------------------

    def define_xml(self, xml: str | bytes, flags: int = 0) -> SecretRef:
        """Define a new secret or redefine one (same UUID); libvirt's secretDefineXML."""
        check_flags(flags, DEFINE_VALIDATE, "secretDefineXML")
        secret = parse_secret(xml, validate=bool(flags & DEFINE_VALIDATE))
        uuid = secret.uuid
        assert uuid is not None
        with self._lock:
            old = self._secrets.get(uuid)
            if old is not None:
                if old.secret.usage_id != secret.usage_id:
                    raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                                 f"internal error: a secret with UUID {uuid} is already defined for use "
                                 f"with {old.secret.usage_id}")
                if old.secret.private and not secret.private:
                    raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                                 "internal error: cannot change private flag on existing secret")
            else:
                clash = self._find_usage(secret)
                if clash is not None:
                    raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                                 f"internal error: a secret with UUID {clash} already defined for use with "
                                 f"{secret.usage_id}")
            value = old.value if old is not None else None
            if not secret.ephemeral:
                self._ensure_dir()
                if old is not None and old.secret.ephemeral and old.value is not None:
                    self._write_value(uuid, old.value)
                try:
                    atomic_write_text(self._xml_file(uuid), secret.to_xml(), mode=0o600)
                except PyvirtError:
                    if old is not None and old.secret.ephemeral:
                        self._remove(self._value_file(uuid))
                    raise
                value = None
            elif old is not None and not old.secret.ephemeral:
                # persistent -> ephemeral: the value moves to memory and the files go
                value = self._read_value(uuid)
                self._remove(self._xml_file(uuid))
                self._remove(self._value_file(uuid))
            self._secrets[uuid] = _Entry(secret, value)
            log.debug("secret %s defined", uuid)
            return self._ref(secret)

    def set_value(self, uuid: str, value: bytes, flags: int = 0) -> None:
        check_flags(flags, 0, "secretSetValue")
        value = bytes(value)
        with self._lock:
            entry = self._entry(uuid)
            if entry.secret.ephemeral:
                entry.value = value or None
            elif value:
                self._ensure_dir()
                self._write_value(uuid, value)
            else:
                # libvirt keeps no empty value: the secret has none
                self._remove(self._value_file(uuid))
            log.debug("value of secret %s set", uuid)

    def get_value(self, uuid: str, flags: int = 0) -> bytes:
        """The value for an API caller: refused for a private secret."""
        check_flags(flags, 0, "secretGetValue")
        with self._lock:
            if self._entry(uuid).secret.private:
                raise _error(codes.VIR_ERR_INVALID_SECRET, "Invalid secret: secret is private")
            return self._value(uuid)

    def secret_value(self, uuid: str) -> bytes:
        """The value for pyvirt itself (QEMU's disk encryption), private or not."""
        with self._lock:
            return self._value(uuid)

    def secret_for(self, usage_type: int, *, uuid: str | None = None, usage_id: str | None = None) -> bytes:
        """The value a domain's ``<secret uuid=.../>`` or ``<secret usage=.../>`` names, for pyvirt
        itself (libvirt's virSecretGetSecretString): by UUID, or by usage id within ``usage_type``
        (VIR_SECRET_USAGE_TYPE_VOLUME for disk encryption, CEPH, ISCSI, TLS, VTPM); a secret of
        another usage type is refused, as libvirt refuses it."""
        with self._lock:
            if uuid is not None:
                ref = self.lookup_uuid(uuid)
            elif usage_id is not None:
                ref = self.lookup_usage(usage_type, usage_id)
            else:
                raise PyvirtError("internal error: a secret is named by its uuid or its usage",
                                  code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_SECRET)
            if ref.usage_type and ref.usage_type != usage_type:
                found, wanted = usage_type_name(ref.usage_type), usage_type_name(usage_type)
                # libvirt's words and error domain (virsecret.c reports from VIR_FROM_NONE)
                raise PyvirtError(f"invalid argument: secret with uuid {ref.uuid} is of type '{found}' not "
                                  f"expected '{wanted}' type", code=codes.VIR_ERR_INVALID_ARG,
                                  domain=codes.VIR_FROM_NONE)
            return self._value(ref.uuid)

    def _value(self, uuid: str) -> bytes:
        entry = self._entry(uuid)
        value = entry.value if entry.secret.ephemeral else self._read_value(uuid)
        if not value:
            raise _error(codes.VIR_ERR_NO_SECRET, f"Secret not found: secret '{uuid}' does not have a value")
        return value

    def undefine(self, uuid: str) -> None:
        with self._lock:
            entry = self._entry(uuid)
            if not entry.secret.ephemeral:
                self._remove(self._xml_file(uuid))
                self._remove(self._value_file(uuid))
            del self._secrets[uuid]
            log.debug("secret %s undefined", uuid)


# One secret driver per QEMU driver instance, living as long as it does (ephemeral secrets vanish
# with the instance's last connection in this process, as they vanish with libvirt's driver).
_drivers: weakref.WeakKeyDictionary[QemuDriver, SecretDriver] = weakref.WeakKeyDictionary()
_drivers_lock = threading.Lock()


def driver_for(qemu: QemuDriver) -> SecretDriver:
    """The secret driver of the instance ``qemu`` drives, made on first use."""
    with _drivers_lock:
        found = _drivers.get(qemu)
        if found is None:
            found = _drivers[qemu] = SecretDriver(secret_paths(qemu.paths))
        return found


def usage_type_name(number: int) -> str:
    return USAGE_TYPES[number] if 0 <= number < len(USAGE_TYPES) else str(number)

