# SPDX-License-Identifier: LGPL-2.1-or-later
"""TLS x509 for libvirt's RPC protocol, shared by pyvirtd and pyvirt's client.

What libvirt does (src/rpc/virnettlscontext.c, read as facts) and what pyvirt does the same way:

* Files: the CA certificate (``cacert.pem``), an optional CRL (``cacrl.pem``), one's own
  certificate and key. libvirt's default places are ``/etc/pki/CA/cacert.pem``,
  ``/etc/pki/CA/cacrl.pem``, ``/etc/pki/libvirt/{server,client}cert.pem`` and
  ``/etc/pki/libvirt/private/{server,client}key.pem``; a ``pkipath`` directory holds all four
  files flat; a non-root client first looks in ``~/.pki/libvirt`` (file by file for the CA and CRL,
  the certificate and key as a pair). :func:`client_files` resolves these. A missing CA is an
  error ("Cannot read CA certificate '...'"), a missing CRL is skipped, a missing client
  certificate means the client sends none (and a server requiring one refuses it), a server's
  missing certificate or key is an error.
* Sanity checks of one's own certificate and of the CA before anything is sent
  (:func:`sanity_check`): validity dates, basic constraints (a CA must be one, a leaf must not),
  key usage (certificate signing for the CA; digital signature and key encipherment for a leaf,
  fatal only when the extension is critical) and extended key usage (TLS server or client, fatal
  only when critical), and that the CA issued the certificate. libvirt's messages, verbatim.
* After the handshake, the peer's certificate (:func:`check_peer`): its chain was verified by the
  TLS library against the CA (and the CRL); then its dates, the server's DN allow-list, the
  host name the client asked for, basic constraints, key usage and purpose, as libvirt 9.0 checks
  them (the label is ``[session]``).
* The DN is formatted as GnuTLS's ``gnutls_x509_crt_get_dn`` does (:func:`distinguished_name`:
  RDNs in certificate order, ``C=GB,O=Acme,CN=client1``, RFC 4514 escaping, OIDs GnuTLS cannot
  name as ``OID=#hex``) and ``tls_allowed_dn_list`` entries are matched as GLib's
  ``g_pattern_match_simple`` does: ``*`` any run of characters, ``?`` one character, nothing else
  special.
* After a successful handshake and checks the server sends one byte, 0x01, inside TLS; a client
  reads it before anything else (:data:`CONFIRMATION`).

Differences, on purpose: the TLS library is OpenSSL (Python's :mod:`ssl`), not GnuTLS, so
``tls_priority`` strings (GnuTLS syntax) are not understood, and OpenSSL refuses a peer whose
extended key usage lacks TLS client/server authentication even when the extension is not critical
(libvirt only warns).

This module imports :mod:`ssl` and ``cryptography`` lazily: pyvirsh and ``import pyvirt`` load the
client modules for cheap commands.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.rpc.openssl_ext import (
    early_server_hello,
    no_auto_chain,
    prefer_x25519,
    remember_verified_chains,
)

if TYPE_CHECKING:
    import ssl

    from cryptography import x509

    from pyvirt.rpc.client import _Wire

__all__ = ["PKIFiles", "TLSError", "PeerRefused", "CONFIRMATION", "client_files", "pki_files",
           "sanity_check", "check_peer", "distinguished_name", "dn_matches", "server_context",
           "Revocations", "load_revocations",
           "client_context", "client_setup", "tls_handshake", "nothing", "load_cert", "SYSTEM_PKI"]

log = logging.getLogger(__name__)

#: What the server sends, inside TLS, once it has accepted the client's certificate.
CONFIRMATION = b"\x01"

#: libvirt's SYSCONFDIR/pki.
SYSTEM_PKI = Path("/etc/pki")


class TLSError(PyvirtError):
    """A certificate, key or CA that cannot be used; libvirt reports these as system errors of
    its RPC layer."""

    code = codes.VIR_ERR_SYSTEM_ERROR
    domain = codes.VIR_FROM_RPC


class PeerRefused(TLSError):
    """The peer's certificate failed one of libvirt's checks after the handshake."""


@dataclass(frozen=True)
class PKIFiles:
    """The four files of one side of a TLS connection."""

    cacert: Path
    #: None: no CRL (a configured daemon without crl_file); a missing file is skipped too.
    cacrl: Path | None
    cert: Path
    key: Path

    @classmethod
    def in_tree(cls, pki: Path, server: bool) -> PKIFiles:
        """libvirt's layout below a ``pki`` directory (``/etc/pki``): CA/, libvirt/, private/."""
        side = "server" if server else "client"
        return cls(pki / "CA" / "cacert.pem", pki / "CA" / "cacrl.pem",
                   pki / "libvirt" / f"{side}cert.pem",
                   pki / "libvirt" / "private" / f"{side}key.pem")

    @classmethod
    def flat(cls, pkipath: Path, server: bool) -> PKIFiles:
        """A ``pkipath=`` directory: the four files side by side."""
        side = "server" if server else "client"
        return cls(pkipath / "cacert.pem", pkipath / "cacrl.pem", pkipath / f"{side}cert.pem",
                   pkipath / f"{side}key.pem")


def pki_files(pkipath: str | Path | None, *, server: bool, try_user: bool,
              home: Path | None = None) -> PKIFiles:
    """The files libvirt would use: ``pkipath`` as given (whether or not the files exist), else
    ``~/.pki/libvirt`` when ``try_user`` and the files are there, else /etc/pki."""
    if pkipath:
        return PKIFiles.flat(Path(pkipath), server)
    system = PKIFiles.in_tree(SYSTEM_PKI, server)
    if not try_user:
        return system
    user = PKIFiles.flat((home or Path.home()) / ".pki" / "libvirt", server)
    pair = user.cert.exists() and user.key.exists()
    user_crl = user.cacrl if user.cacrl is not None and user.cacrl.exists() else None
    return PKIFiles(user.cacert if user.cacert.exists() else system.cacert,
                    user_crl or system.cacrl,
                    user.cert if pair else system.cert, user.key if pair else system.key)


def client_files(pkipath: str | None, euid: int | None = None) -> PKIFiles:
    """The files of libvirt's remote driver: root uses /etc/pki, others ~/.pki/libvirt first."""
    euid = os.geteuid() if euid is None else euid
    return pki_files(pkipath, server=False, try_user=euid != 0)


# ---- certificates ----

def load_cert(path: Path, *, server: bool) -> x509.Certificate:
    from cryptography import x509

    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TLSError(f"Unable to import {'server' if server else 'client'} certificate "
                       f"{path}") from None


def load_ca_list(path: Path) -> list[x509.Certificate]:
    from cryptography import x509

    data = _read(path, "CA certificate")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TLSError(f"Unable to import CA certificate list {path}")
    return certs


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSError(f"Cannot read {what} '{path}': {exc.strerror}") from exc


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _role(server: bool, ca: bool) -> str:
    return "CA" if ca else ("server" if server else "client")


def _check_times(cert: x509.Certificate, label: str, *, server: bool, ca: bool) -> None:
    now = _now()
    if cert.not_valid_after_utc < now:
        raise TLSError(f"The {_role(server, ca)} certificate {label} has expired")
    if cert.not_valid_before_utc > now:
        raise TLSError(f"The {_role(server, ca)} certificate {label} is not yet active")


def _check_basic_constraints(cert: x509.Certificate, label: str, *, server: bool,
                             ca: bool) -> None:
    from cryptography import x509

    try:
        is_ca: bool | None = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = None
    if is_ca and not ca:
        raise TLSError(f"The certificate {label} basic constraints show a CA, but we need one "
                       f"for a {'server' if server else 'client'}")
    if is_ca is False and ca:
        raise TLSError(f"The certificate {label} basic constraints do not show a CA")
    if is_ca is None and ca:
        raise TLSError(f"The certificate {label} is missing basic constraints for a CA")


def _check_key_usage(cert: x509.Certificate, label: str, *, ca: bool) -> list[str]:
    from cryptography import x509

    try:
        ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return []  # libvirt assumes the usage the certificate needs
    usage, critical = ext.value, ext.critical
    wanted = ([("key_cert_sign", "certificate signing")] if ca else
              [("digital_signature", "digital signature"),
               ("key_encipherment", "key encipherment")])
    warnings = []
    for attr, what in wanted:
        if not getattr(usage, attr):
            message = f"Certificate {label} usage does not permit {what}"
            if critical:
                raise TLSError(message)
            warnings.append(message)
    return warnings


def _check_key_purpose(cert: x509.Certificate, label: str, *, server: bool) -> list[str]:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return []
    allow_server = allow_client = False
    for oid in ext.value:
        if oid == ExtendedKeyUsageOID.SERVER_AUTH:
            allow_server = True
        elif oid == ExtendedKeyUsageOID.CLIENT_AUTH:
            allow_client = True
        elif oid != ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE:
            # libvirt: any other purpose allows both (and "any" allows neither)
            allow_server = allow_client = True
    if (allow_server if server else allow_client):
        return []
    message = (f"Certificate {label} purpose does not allow use for with a TLS "
               f"{'server' if server else 'client'}")
    if ext.critical:
        raise TLSError(message)
    return [message]


def check_cert(cert: x509.Certificate, label: str, *, server: bool, ca: bool) -> list[str]:
    """libvirt's checks of one certificate of one's own; returns the warnings it only logs."""
    _check_times(cert, label, server=server, ca=ca)
    _check_basic_constraints(cert, label, server=server, ca=ca)
    warnings = _check_key_usage(cert, label, ca=ca)
    if not ca:
        warnings += _check_key_purpose(cert, label, server=server)
    return warnings


def _issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> str | None:
    """None when one of ``cas`` signed ``cert``, else libvirt's reason."""
    issuers = [ca for ca in cas if ca.subject == cert.issuer]
    if not issuers:
        return "The certificate hasn't got a known issuer."
    for ca in issuers:
        try:
            cert.verify_directly_issued_by(ca)
            return None
        except Exception:  # InvalidSignature, or a key type that cannot have signed it
            continue
    return "The certificate is not trusted."


def sanity_check(files: PKIFiles, *, server: bool) -> list[str]:
    """libvirt's virNetTLSContextSanityCheckCredentials: one's own certificate and the CA, each
    when readable; returns the warnings to log, raises :class:`TLSError` for a fatal fault."""
    cert = load_cert(files.cert, server=server) if os.access(files.cert, os.R_OK) else None
    cas = load_ca_list(files.cacert) if os.access(files.cacert, os.R_OK) else []
    warnings = []
    if cert is not None:
        warnings += check_cert(cert, str(files.cert), server=server, ca=False)
    for ca in cas:
        warnings += check_cert(ca, str(files.cacert), server=server, ca=True)
    if cert is not None and cas:
        reason = _issued_by(cert, cas)
        if reason is not None:
            raise TLSError(f"Our own certificate {files.cert} failed validation against "
                           f"{files.cacert}: {reason}")
    return warnings


# ---- the distinguished name, as libvirt sees it ----

# (name, ASN.1 string tags GnuTLS decodes as text for it); any other tag is printed as hex.
_DIRECTORY = frozenset({12, 19, 20, 28, 30})  # UTF8, Printable, Teletex, Universal, BMP
_PRINTABLE = frozenset({19})
_IA5 = frozenset({22})
_GNUTLS_NAMES: dict[str, tuple[str, frozenset[int]]] = {
    "2.5.4.6": ("C", _PRINTABLE), "2.5.4.10": ("O", _DIRECTORY), "2.5.4.11": ("OU", _DIRECTORY),
    "2.5.4.3": ("CN", _DIRECTORY), "2.5.4.7": ("L", _DIRECTORY), "2.5.4.8": ("ST", _DIRECTORY),
    "2.5.4.9": ("street", _DIRECTORY), "2.5.4.17": ("postalCode", _DIRECTORY),
    "2.5.4.12": ("title", _DIRECTORY), "2.5.4.4": ("surName", _DIRECTORY),
    "2.5.4.42": ("givenName", _DIRECTORY), "2.5.4.43": ("initials", _DIRECTORY),
    "2.5.4.44": ("generationQualifier", _DIRECTORY), "2.5.4.65": ("pseudonym", _DIRECTORY),
    "2.5.4.15": ("businessCategory", _DIRECTORY), "2.5.4.13": ("description", _DIRECTORY),
    "2.5.4.41": ("name", _DIRECTORY), "2.5.4.5": ("serialNumber", _PRINTABLE),
    "2.5.4.46": ("dnQualifier", _PRINTABLE), "2.5.4.20": ("telephoneNumber", _PRINTABLE),
    "0.9.2342.19200300.100.1.25": ("DC", _IA5), "0.9.2342.19200300.100.1.1": ("UID", _DIRECTORY),
    "1.2.840.113549.1.9.1": ("EMAIL", _IA5),
    "1.3.6.1.5.5.7.9.2": ("placeOfBirth", _DIRECTORY),
    "1.3.6.1.5.5.7.9.3": ("gender", _PRINTABLE),
    "1.3.6.1.5.5.7.9.4": ("countryOfCitizenship", _PRINTABLE),
    "1.3.6.1.5.5.7.9.5": ("countryOfResidence", _PRINTABLE),
    "1.3.6.1.4.1.311.60.2.1.1": ("jurisdictionOfIncorporationLocalityName", _DIRECTORY),
    "1.3.6.1.4.1.311.60.2.1.2": ("jurisdictionOfIncorporationStateOrProvinceName", _DIRECTORY),
    "1.3.6.1.4.1.311.60.2.1.3": ("jurisdictionOfIncorporationCountryName", _PRINTABLE),
}
_CODECS = {12: "utf-8", 19: "ascii", 20: "latin-1", 22: "ascii", 28: "utf-32-be", 30: "utf-16-be"}


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (i == 0 and ch in "# ") or (i == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _der_value(tag: int, value: str | bytes) -> bytes:
    body = value if isinstance(value, bytes) else value.encode(_CODECS.get(tag, "utf-8"))
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _format_attribute(attr: Any) -> str:
    oid = attr.oid.dotted_string
    tag = int(getattr(getattr(attr, "_type", None), "value", 12))
    known = _GNUTLS_NAMES.get(oid)
    if known is not None and tag in known[1] and isinstance(attr.value, str):
        return f"{known[0]}={_escape(attr.value)}"
    return f"{known[0] if known else oid}=#{_der_value(tag, attr.value).hex()}"


def distinguished_name(cert: x509.Certificate) -> str:
    """The subject DN as libvirt prints and matches it (GnuTLS's gnutls_x509_crt_get_dn)."""
    return ",".join("+".join(_format_attribute(a) for a in rdn) for rdn in cert.subject.rdns)


@lru_cache(maxsize=64)
def _pattern(glob: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in glob), re.DOTALL)


def dn_matches(dn: str, patterns: Sequence[str]) -> bool:
    """True when one of ``patterns`` (``*`` and ``?`` wildcards) matches the whole DN."""
    return any(_pattern(p).fullmatch(dn) for p in patterns)


DN_REFUSED = ("Client's Distinguished Name is not on the list of allowed clients "
              "(tls_allowed_dn_list).  Use 'virt-pki-query-dn clientcert.pem' to view the "
              "Distinguished Name field in the client certificate, or run this daemon with "
              "--verbose option.")


def _host_matches(cert: x509.Certificate, hostname: str) -> bool:
    """GnuTLS's gnutls_x509_crt_check_hostname, for what libvirt needs: an IP address against
    the IP SANs; a name against the DNS SANs (``*`` as the whole leftmost label), or the CN when
    the certificate has no DNS SAN."""
    import ipaddress

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = None
    try:
        address = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        address = None
    if address is not None:
        return sans is not None and address in sans.get_values_for_type(x509.IPAddress)
    names = sans.get_values_for_type(x509.DNSName) if sans is not None else []
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    host = hostname.rstrip(".").lower()
    for name in names:
        pattern = name.rstrip(".").lower()
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host:
            first, _, rest = host.partition(".")
            if first and rest == pattern[2:] and rest.count(".") >= 1:
                return True
    return False


def check_peer(der: bytes | None, *, server_side: bool, allowed_dns: Sequence[str] = (),
               hostname: str | None = None, revocations: Revocations | None = None) -> str:
    """libvirt's checks of the peer's certificate after the handshake (the chain was verified
    during it), the CRL's first (``revocations``: as OpenSSL's verification would have).
    ``server_side``: we are the server checking a client. Returns the peer's DN; raises
    :class:`PeerRefused` with libvirt's reason."""
    if der is None:
        raise PeerRefused("Unable to verify TLS peer: No certificate was found.")
    cert, dn, refusal = _peer_facts(der, server_side, tuple(allowed_dns), hostname)
    if cert is None:
        raise PeerRefused("Unable to load certificate")
    if revocations is not None:
        why = revocations.check(cert)
        if why is not None:
            raise PeerRefused(f"{why} (CRL {revocations.path})")
    try:
        _check_times(cert, "[session]", server=server_side, ca=False)
    except TLSError as exc:
        raise PeerRefused(exc.message) from None
    if refusal is not None:
        raise PeerRefused(refusal[0], code=refusal[1])
    return dn


@lru_cache(maxsize=256)
def _peer_facts(der: bytes, server_side: bool, allowed_dns: tuple[str, ...],
                hostname: str | None) -> tuple[x509.Certificate | None, str, tuple[str, int] | None]:
    """What :func:`check_peer` finds in a certificate that does not depend on the clock: the
    parsed certificate, its DN and the first refusal (message, code), if any, in libvirt's order
    after the dates. Kept per certificate: a client reconnecting presents the same bytes, and
    parsing them again costs more than the rest of the check."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None, "", None
    label = "[session]"
    peer_is_server = not server_side
    dn = distinguished_name(cert)
    try:
        if allowed_dns and not dn_matches(dn, allowed_dns):
            raise PeerRefused(DN_REFUSED)
        if hostname is not None and not _host_matches(cert, hostname):
            raise PeerRefused(f"Certificate {label} owner does not match the hostname {hostname}",
                              code=codes.VIR_ERR_RPC)
        _check_basic_constraints(cert, label, server=peer_is_server, ca=False)
        _check_key_usage(cert, label, ca=False)
        _check_key_purpose(cert, label, server=peer_is_server)
    except TLSError as exc:
        return cert, dn, (exc.message, exc.code)
    return cert, dn, None


# ---- SSL contexts ----

def client_setup(params: Mapping[str, str]) -> tuple[ssl.SSLContext, bool]:
    """The client's context for a ``qemu+tls://`` URI's parameters (``pkipath``, ``no_verify``,
    ``no_sanity``) and whether the server's certificate is checked.

    The context and the sanity checks' warnings are kept while the four files stay the same
    (same inode, size and change times): a program opening many connections reads and checks
    them once, yet a renewed certificate is picked up by the next connection, as by libvirt;
    the checks are redone after :data:`_CHECK_AGAIN` seconds, for the certificates' dates."""
    files = client_files(params.get("pkipath"))
    if "tls_priority" in params:
        log.warning("tls_priority=%s ignored: it is a GnuTLS priority string, and pyvirt's TLS is "
                    "OpenSSL's (TLS 1.2 or later, its default ciphers)", params["tls_priority"])
    verify = params.get("no_verify") != "1"
    sanity = params.get("no_sanity") != "1"
    key = (files, verify, sanity, _stamp(files))
    now = time.monotonic()
    cached = _client_contexts.get(key)
    if cached is None or cached[2] < now:
        warnings = sanity_check(files, server=False) if sanity else []
        cached = (client_context(files, verify_server=verify), tuple(warnings),
                  now + _CHECK_AGAIN)
        if len(_client_contexts) >= 8:
            _client_contexts.clear()
        _client_contexts[key] = cached
    for warning in cached[1]:
        log.warning("%s", warning)
    return cached[0], verify


_CHECK_AGAIN = 60.0
_client_contexts: dict[tuple[object, ...], tuple[ssl.SSLContext, tuple[str, ...], float]] = {}


def _stamp(files: PKIFiles) -> tuple[tuple[int, int, int, int] | None, ...]:
    """What changes when one of ``files`` is replaced, rewritten or removed."""
    stamps: list[tuple[int, int, int, int] | None] = []
    for path in (files.cacert, files.cacrl, files.cert, files.key):
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        stamps.append(None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns,
                                               st.st_ctime_ns))
    return tuple(stamps)


def _exists(path: Path) -> bool:
    return path.exists()


def _load_chain(ctx: ssl.SSLContext, files: PKIFiles) -> None:
    import ssl

    no_auto_chain(ctx)
    try:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    except ssl.SSLError as exc:
        why = ("the private key does not match the certificate"
               if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc)
               else exc.reason or str(exc))
        raise TLSError(f"Unable to set x509 key and certificate: {files.key}, {files.cert}: "
                       f"{why}") from exc
    except OSError as exc:
        raise TLSError(f"Unable to set x509 key and certificate: {files.key}, {files.cert}: "
                       f"{exc.strerror or exc}") from exc


_CRL_PEM = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


@dataclass(frozen=True)
class _CRL:
    last_update: datetime.datetime
    next_update: datetime.datetime | None
    revoked: frozenset[int]
    #: Why it cannot be used (OpenSSL's words), or None.
    problem: str | None


class Revocations:
    """The server's CRL file, read and its signatures checked once, when the daemon starts; a
    client's certificate is then checked against it after the handshake with a look-up.
    (Handed to OpenSSL, every CRL signature would be verified again on every handshake.) The
    rules and words are OpenSSL's check of the leaf certificate (X509_V_FLAG_CRL_CHECK): a CRL
    from the certificate's issuer is required, signed by that CA and current."""

    def __init__(self, path: Path, by_issuer: Mapping[x509.Name, _CRL]) -> None:
        self.path = path
        self._by_issuer = dict(by_issuer)

    @classmethod
    def load(cls, path: Path, cas: Sequence[x509.Certificate]) -> Revocations:
        from cryptography import x509

        data = _read(path, "certificate revocation list")
        try:
            crls = [x509.load_pem_x509_crl(block) for block in _CRL_PEM.findall(data)]
        except ValueError as exc:
            raise TLSError(f"Unable to set x509 certificate revocation list: {path}: {exc}") from exc
        if not crls:
            raise TLSError(f"Unable to set x509 certificate revocation list: {path}: "
                           "no PEM 'X509 CRL' in it")
        by_issuer: dict[x509.Name, _CRL] = {}
        for crl in sorted(crls, key=lambda c: c.last_update_utc):  # the newest of one issuer wins
            issuers = [ca for ca in cas if ca.subject == crl.issuer]
            if not issuers:
                problem: str | None = "unable to get CRL issuer certificate"
            elif not any(_crl_signed_by(crl, ca) for ca in issuers):
                problem = "CRL signature failure"
            else:
                problem = None
            by_issuer[crl.issuer] = _CRL(crl.last_update_utc, crl.next_update_utc,
                                         frozenset(r.serial_number for r in crl), problem)
        return cls(path, by_issuer)

    def check(self, cert: x509.Certificate) -> str | None:
        """Why ``cert`` is refused (OpenSSL's words), or None."""
        crl = self._by_issuer.get(cert.issuer)
        if crl is None:
            return "unable to get certificate CRL"
        if crl.problem is not None:
            return crl.problem
        now = _now()
        if crl.last_update > now:
            return "CRL is not yet valid"
        if crl.next_update is not None and crl.next_update < now:
            return "CRL has expired"
        if cert.serial_number in crl.revoked:
            return "certificate revoked"
        return None


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        # (a CA whose key cannot sign at all, X25519 say, raises TypeError)
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except TypeError:
        return False


def load_revocations(files: PKIFiles) -> Revocations | None:
    """The server's CRL, when it has one (see :class:`Revocations`)."""
    if files.cacrl is None or not _exists(files.cacrl):
        return None
    return Revocations.load(files.cacrl, load_ca_list(files.cacert))


def _load_trust(ctx: ssl.SSLContext, files: PKIFiles, *, crl: bool = True) -> None:
    """The CA, and with ``crl`` the CRL (OpenSSL then checks the peer's certificate against it
    during the handshake)."""
    import ssl

    if not _exists(files.cacert):
        raise TLSError(f"Cannot read CA certificate '{files.cacert}': No such file or directory")
    try:
        ctx.load_verify_locations(cafile=str(files.cacert))
    except (ssl.SSLError, OSError) as exc:
        raise TLSError(f"Unable to set x509 CA certificate: {files.cacert}: "
                       f"{getattr(exc, 'reason', None) or exc}") from exc
    if crl and files.cacrl is not None and _exists(files.cacrl):
        try:
            ctx.load_verify_locations(cafile=str(files.cacrl))
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(f"Unable to set x509 certificate revocation list: {files.cacrl}: "
                           f"{getattr(exc, 'reason', None) or exc}") from exc
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def server_context(files: PKIFiles, *,
                   verify_clients: bool = True) -> tuple[ssl.SSLContext, Revocations | None]:
    """The server's context: its certificate and key (both required), the CA, a client
    certificate required and verified unless ``verify_clients`` is false
    (``tls_no_verify_certificate``); and the CRL, which the caller checks client certificates
    against once the handshake is done (see :class:`Revocations`)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # No session tickets, as libvirtd sends none: libvirt's client reads the confirmation byte
    # once the socket is readable, and a ticket arriving first would make that read EAGAIN.
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    # libvirt's order: the CA, the CRL, then our own pair
    _load_trust(ctx, files, crl=False)
    revocations = load_revocations(files)  # read even when unused: a bad file stops the start
    for path, what in ((files.cert, "certificate"), (files.key, "private key")):
        if not _exists(path):
            raise TLSError(f"Cannot read {what} '{path}': No such file or directory")
    _load_chain(ctx, files)
    ctx.verify_mode = ssl.CERT_REQUIRED if verify_clients else ssl.CERT_NONE
    prefer_x25519(ctx)
    early_server_hello(ctx)
    if verify_clients:
        remember_verified_chains(ctx)
    return ctx, revocations if verify_clients else None


def client_context(files: PKIFiles, *, verify_server: bool = True) -> ssl.SSLContext:
    """The client's context: the CA (and CRL) to verify the server, our certificate and key
    when both exist (else none is sent). Host names are checked by :func:`check_peer`, with
    libvirt's message, not by OpenSSL."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    _load_trust(ctx, files)
    if _exists(files.cert) and _exists(files.key):
        _load_chain(ctx, files)
    ctx.verify_mode = ssl.CERT_REQUIRED if verify_server else ssl.CERT_NONE
    return ctx


# ---- the client's side of the connection ----

def _alert(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return str(exc) or type(exc).__name__


def nothing() -> None:
    """Does nothing: the default of the kicks (pyvirt.rpc.busypoll) of TLS handshakes."""


async def tls_handshake(wire: _Wire, context: ssl.SSLContext, host: str, port: int, *,
                        verify: bool, timeout: float | None,
                        kick: Callable[[], None] = nothing) -> None:
    """Upgrade a connected socket to TLS as libvirt's client does: handshake, check the
    server's certificate (dates, host name, purpose), read the server's confirmation byte.
    Closes the connection and raises libvirt's error on any failure. ``kick`` is called when
    the client's ClientHello and last flight go out (pyvirt.rpc.busypoll)."""
    import asyncio
    import ssl

    where = f"{host}:{port}"
    assert wire.transport is not None
    loop = asyncio.get_running_loop()
    try:
        try:
            wire.expect_first_byte()  # (it may arrive with the handshake's last flight)
            kick()
            tls = await loop.start_tls(wire.transport, wire, context, server_hostname=host,
                                       ssl_handshake_timeout=timeout)
        except ssl.SSLCertVerificationError as exc:
            raise PyvirtError(f"authentication failed: Failed to verify peer's certificate: the "
                              f"certificate of {where} failed validation: {exc.verify_message}; "
                              "is it issued by the CA in cacert.pem? (no_verify=1 skips this "
                              "check)", code=codes.VIR_ERR_AUTH_FAILED,
                              domain=codes.VIR_FROM_RPC) from exc
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise PyvirtError(f"authentication failed: TLS handshake failed with {where}: "
                              f"{_alert(exc)}", code=codes.VIR_ERR_AUTH_FAILED,
                              domain=codes.VIR_FROM_RPC) from exc
        assert tls is not None
        wire.transport = tls
        kick()  # our last flight is out: the confirmation byte follows
        if verify:
            sslobj = tls.get_extra_info("ssl_object")
            try:
                check_peer(sslobj.getpeercert(binary_form=True) if sslobj else None,
                           server_side=False, hostname=host)
            except PeerRefused as exc:
                raise PyvirtError(f"authentication failed: Failed to verify peer's certificate: "
                                  f"{exc.message}", code=codes.VIR_ERR_AUTH_FAILED,
                                  domain=codes.VIR_FROM_RPC) from exc
        try:
            byte = await wire.first_byte(timeout)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            raise PyvirtError(f"Unable to read TLS confirmation: Input/output error: the server "
                              f"at {where} refused our certificate or address ({_alert(exc)}); "
                              "its log says why", code=codes.VIR_ERR_SYSTEM_ERROR,
                              domain=codes.VIR_FROM_RPC) from exc
        if not byte:
            raise PyvirtError(f"Unable to read TLS confirmation: Input/output error: the server "
                              f"at {where} closed the connection: it refused our certificate or "
                              "address; its log says why", code=codes.VIR_ERR_SYSTEM_ERROR,
                              domain=codes.VIR_FROM_RPC)
        if byte != CONFIRMATION:
            raise PyvirtError("server verification (of our certificate or IP address) failed",
                              code=codes.VIR_ERR_RPC, domain=codes.VIR_FROM_RPC)
    except BaseException:
        if wire.transport is not None:
            wire.transport.close()
        raise
