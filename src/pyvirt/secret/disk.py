# SPDX-License-Identifier: LGPL-2.1-or-later
"""Secrets of encrypted disks on their way to QEMU (libvirt's qemuDomainSecretStorageSourcePrepare
and qemuDomainSecretAESSetup).

A start goes through three steps, in the process layer:

1. :func:`disk_secret_values` -- before anything on the host is touched, the value of every LUKS
   disk's secret is fetched from the instance's secret driver, by UUID or by usage (volume path),
   as a secret of usage type 'volume'. A missing secret, a secret without a value or of another
   usage type fails the start here, with libvirt's words;
2. :func:`encrypt_for_qemu` -- once the domain's master key exists (``masterKey0``), each value is
   encrypted with it (AES-256-CBC, PKCS#7 padding, a random IV per secret), so the command line
   carries only ciphertext: ``-object secret,data=...,keyid=masterKey0,iv=...,format=base64``;
3. the pure command builder places those objects (:data:`pyvirt.qemu.command.CommandRuntime`
   ``disk_secrets``) and names them in the disk's format node (``key-secret`` for a raw LUKS image,
   ``encrypt.key-secret`` for qcow2).

When QEMU refuses the passphrase it exits at once; :func:`luks_open_failure` turns its words into an
error naming the disk and the secret. Values are never logged, never put in an error message.
"""

from __future__ import annotations

import base64
import os
import re
from typing import TYPE_CHECKING, NamedTuple

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError

if TYPE_CHECKING:
    from pyvirt.qemu.driver import QemuDriver
    from pyvirt.xml.domain import Domain
    from pyvirt.xml.domain_devices import Disk, Encryption

__all__ = ["QemuSecret", "disk_encryption", "uses_qemu_luks", "disk_secret_values", "encrypt_for_qemu",
           "luks_open_failure", "secret_alias"]

VIR_SECRET_USAGE_TYPE_VOLUME = 1


class QemuSecret(NamedTuple):
    """One secret as QEMU's ``secret`` object takes it: base64 ciphertext and IV."""

    data: str
    iv: str


def disk_encryption(disk: Disk) -> Encryption | None:
    """The disk's ``<encryption>``: at the disk's level, or inside its ``<source>`` (both are libvirt's)."""
    if disk.encryption is not None:
        return disk.encryption
    return disk.source.encryption if disk.source is not None else None


def uses_qemu_luks(disk: Disk) -> bool:
    """Whether QEMU itself opens this disk's LUKS encryption (so it needs the passphrase)."""
    enc = disk_encryption(disk)
    return enc is not None and enc.format == "luks" and enc.engine in (None, "qemu")


def secret_alias(format_node: str) -> str:
    """libvirt's alias of a format node's first encryption secret (qemuAliasForSecret)."""
    return f"{format_node}-encryption-secret0"


def disk_secret_values(driver: QemuDriver, dom: Domain) -> dict[str, bytes]:
    """The passphrase of every disk QEMU decrypts, by target device name (libvirt's
    qemuDomainSecretPrepare): errors are libvirt's, before QEMU runs."""
    from pyvirt.secret.driver import driver_for

    out: dict[str, bytes] = {}
    if dom.devices is None:
        return out
    secrets = None
    for disk in dom.devices.disks:
        if not uses_qemu_luks(disk) or disk.source is None or not (disk.source.file or disk.source.dev):
            continue  # an empty drive opens nothing
        enc = disk_encryption(disk)
        assert enc is not None and disk.target is not None
        ref = enc.secrets[0] if enc.secrets else None
        if ref is None or (ref.uuid is None and ref.usage is None):
            raise PyvirtError(f"internal error: missing secret info for 'luks' driver (disk "
                              f"'{disk.target.dev}': add <secret type='passphrase' uuid='...'/> to its "
                              "<encryption>)", code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_QEMU)
        if secrets is None:
            secrets = driver_for(driver)
        out[disk.target.dev or ""] = secrets.secret_for(VIR_SECRET_USAGE_TYPE_VOLUME, uuid=ref.uuid,
                                                        usage_id=None if ref.uuid else ref.usage)
    return out


def encrypt_for_qemu(master_key: bytes, values: dict[str, bytes]) -> dict[str, QemuSecret]:
    """Each value encrypted with the domain's master key, as QEMU's secret object with
    ``keyid`` decrypts it: AES-256-CBC, PKCS#7 padding, a fresh 16-byte IV each."""
    if not values:
        return {}
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    out = {}
    for dev, value in values.items():
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        padded = padder.update(value) + padder.finalize()
        enc = Cipher(algorithms.AES(master_key), modes.CBC(iv)).encryptor()
        data = enc.update(padded) + enc.finalize()
        out[dev] = QemuSecret(base64.b64encode(data).decode("ascii"), base64.b64encode(iv).decode("ascii"))
    return out


# QEMU's words when no key slot opens with the passphrase (crypto/block-luks.c)
_BAD_PASSPHRASE = "Invalid password, cannot unlock any keyslot"
_SECRET_ID = re.compile(r'key-secret"?\s*[:=]\s*"?(libvirt-\d+-format)-encryption-secret0')


def luks_open_failure(dom: Domain, qemu_said: str) -> str | None:
    """A message naming the disk and its secret when QEMU's words say a LUKS passphrase was wrong;
    None when they say something else."""
    if _BAD_PASSPHRASE not in qemu_said or dom.devices is None:
        return None
    disks = dom.devices.disks
    # the builder numbers format nodes from the last disk (libvirt-N ... libvirt-1)
    by_node = {f"libvirt-{len(disks) - i}-format": d for i, d in enumerate(disks)}
    found = _SECRET_ID.search(qemu_said)
    candidates = [by_node[found.group(1)]] if found and found.group(1) in by_node else \
        [d for d in disks if uses_qemu_luks(d)]
    if len(candidates) != 1:
        names = ", ".join(f"'{d.target.dev}'" for d in candidates if d.target is not None)
        return (f"QEMU could not open the LUKS encryption of one of the disks {names}: the passphrase of "
                "its secret is wrong; set the right value with secret-set-value")
    disk = candidates[0]
    enc = disk_encryption(disk)
    ref = enc.secrets[0] if enc is not None and enc.secrets else None
    which = (f"uuid {ref.uuid}" if ref is not None and ref.uuid else
             f"usage '{ref.usage}'" if ref is not None else "(none)")
    path = disk.source.file or disk.source.dev if disk.source is not None else None
    return (f"QEMU could not open the LUKS encryption of disk '{disk.target.dev if disk.target else ''}' "
            f"({path}): the passphrase in secret {which} is wrong (QEMU: {_BAD_PASSPHRASE}); set the "
            "image's passphrase as the secret's value (secret-set-value), or point <encryption> at the "
            "right secret")
