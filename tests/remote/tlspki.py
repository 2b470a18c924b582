# SPDX-License-Identifier: LGPL-2.1-or-later
"""A throwaway x509 PKI for the TLS tests and bench/bench_tls.py, made with ``cryptography``.

:func:`make_pki` writes a CA, a server certificate for 127.0.0.1/localhost and client certificates
(good, expired, from another CA, with another DN, revoked through the CA's CRL, a CA used as a
client certificate), then lays them out as libvirt expects them:

* ``pkipath`` directories for clients (``cacert.pem``, ``clientcert.pem``, ``clientkey.pem``,
  one directory per client identity), as ``virsh -c 'qemu+tls://...?pkipath=DIR'`` reads them;
* a server tree ``ROOT/etc/pki/{CA/cacert.pem, CA/cacrl.pem, libvirt/servercert.pem,
  libvirt/private/serverkey.pem}``: where ``pyvirtd --root ROOT`` looks, and what a libvirtd.conf
  names with key_file/cert_file/ca_file/crl_file.

EC P-256 keys: generated in milliseconds, and both GnuTLS (libvirt) and OpenSSL (pyvirt) take them.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


def _name(**attrs: str) -> x509.Name:
    oids = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME,
            "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "CN": NameOID.COMMON_NAME,
            "L": NameOID.LOCALITY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME}
    return x509.Name([x509.NameAttribute(oids[k], v) for k, v in attrs.items()])


@dataclass
class Identity:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())


def make_ca(cn: str) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name(C="GB", O="pyvirt tests", CN=cn)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY).not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Identity(key, cert)


def issue(ca: Identity, subject: x509.Name, *, server: bool, hosts: tuple[str, ...] = (),
          not_before: datetime.datetime | None = None,
          not_after: datetime.datetime | None = None, is_ca: bool = False,
          key: ec.EllipticCurvePrivateKey | None = None,
          key_encipherment: bool = True) -> Identity:
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - _DAY)
               .not_valid_after(not_after or now + 30 * _DAY)
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=key_encipherment,
                                            data_encipherment=False,
                                            key_agreement=False, key_cert_sign=is_ca,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                   critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca.key.public_key()), critical=False))
    if hosts:
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Identity(key, builder.sign(ca.key, hashes.SHA256()))


def make_crl(ca: Identity, revoked: list[x509.Certificate], *,
             issuer: x509.Name | None = None, last: datetime.datetime | None = None,
             next_: datetime.datetime | None = None) -> bytes:
    """A CRL signed by ``ca``'s key: by default in its name, issued yesterday, good for 30
    days (``issuer``, ``last`` and ``next_`` make others: forged, expired, not yet valid)."""
    now = datetime.datetime.now(datetime.UTC)
    last = last or now - _DAY
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer or ca.cert.subject)
               .last_update(last).next_update(next_ or now + 30 * _DAY))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
            .revocation_date(last).build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


#: The client identities :func:`make_pki` issues, by name.
CLIENT_DN = {"good": "C=GB,O=pyvirt tests,CN=client1",
             "otherdn": "C=GB,O=intruders,CN=client9"}


@dataclass
class PKI:
    base: Path
    ca: Identity
    server: Identity
    clients: dict[str, Identity] = field(default_factory=dict)

    def pkipath(self, client: str) -> Path:
        """The pkipath= directory of one client identity ("none": CA only, no certificate)."""
        return self.base / "clients" / client

    def server_tree(self) -> Path:
        """A root whose etc/pki holds the server's files (libvirt's layout)."""
        return self.base / "server"

    @property
    def server_files(self) -> dict[str, Path]:
        pki = self.server_tree() / "etc" / "pki"
        return {"ca_file": pki / "CA" / "cacert.pem", "crl_file": pki / "CA" / "cacrl.pem",
                "cert_file": pki / "libvirt" / "servercert.pem",
                "key_file": pki / "libvirt" / "private" / "serverkey.pem"}

    def libvirtd_tls(self, port: int, **more: str) -> dict[str, str]:
        """libvirtd.conf's keys (quoted as the file wants them) for TLS on ``port`` with these
        files, clients of pyvirt tests' DN alone, and ``more``."""
        keys = {"listen_tls": "1", "tls_port": f'"{port}"',
                "tls_allowed_dn_list": '["C=GB,O=pyvirt tests,CN=*"]'}
        keys.update((key, f'"{path}"') for key, path in self.server_files.items())
        return {**keys, **more}


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def make_pki(base: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> PKI:
    ca = make_ca("pyvirt test CA")
    other_ca = make_ca("another CA")
    now = datetime.datetime.now(datetime.UTC)
    server = issue(ca, _name(C="GB", O="pyvirt tests", CN="127.0.0.1"), server=True, hosts=hosts)
    client_name = _name(C="GB", O="pyvirt tests", CN="client1")
    clients = {
        "good": issue(ca, client_name, server=False),
        "expired": issue(ca, client_name, server=False, not_before=now - 10 * _DAY,
                         not_after=now - 2 * _DAY),
        "otherca": issue(other_ca, client_name, server=False),
        "otherdn": issue(ca, _name(C="GB", O="intruders", CN="client9"), server=False),
        "revoked": issue(ca, _name(C="GB", O="pyvirt tests", CN="client1"), server=False),
        "cacert": issue(ca, client_name, server=False, is_ca=True),
        "nokeyenc": issue(ca, client_name, server=False, key_encipherment=False),
        "short": issue(ca, client_name, server=False, not_after=now + 10 * _DAY),  # before the CA
    }
    pki = PKI(base, ca, server, clients)
    files = pki.server_files
    _write(files["ca_file"], ca.cert_pem())
    _write(files["crl_file"], make_crl(ca, [clients["revoked"].cert]))
    _write(files["cert_file"], server.cert_pem())
    _write(files["key_file"], server.key_pem(), 0o600)
    for name, ident in clients.items():
        d = pki.pkipath(name)
        _write(d / "cacert.pem", ca.cert_pem())
        _write(d / "clientcert.pem", ident.cert_pem())
        _write(d / "clientkey.pem", ident.key_pem(), 0o600)
    _write(pki.pkipath("none") / "cacert.pem", ca.cert_pem())
    return pki
