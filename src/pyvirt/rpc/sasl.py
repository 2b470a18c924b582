# SPDX-License-Identifier: LGPL-2.1-or-later
"""The client's side of authentication: what follows AUTH_LIST, as libvirt's remote driver does it.

:func:`authenticate` takes the server's list of auth types. The first is used, unless the URI
says ``auth=sasl``, ``auth=sasl.MECH`` or ``auth=polkit`` (then that type must be in the list:
"requested authentication type X rejected" otherwise, as libvirt). For SASL it calls
AUTH_SASL_INIT, picks the first of the server's mechanisms pyvirt supports -- SCRAM-SHA-256,
SCRAM-SHA-1; GSSAPI (Kerberos) is not supported -- or the one ``auth=sasl.MECH`` names, and runs
AUTH_SASL_START / AUTH_SASL_STEP until the server says complete, checking the server's signature
at the end.

Security layer: libvirt's client asks for one of strength 56 or more on plain TCP, and SCRAM has
none. A libvirtd on plain TCP offers no mechanism at all ("authentication failed"); should a
server offer SCRAM there anyway, pyvirt's client refuses it locally, as libvirt's does ("No
worthy mechs found"). Over a UNIX socket, TLS or SSH, SCRAM is used.

Credentials, as libvirt gathers them (:class:`AuthOptions`):

1. libvirt's ``auth.conf``: the file ``$LIBVIRT_AUTH_FILE``, else the URI's ``authfile=``, else
   ``$XDG_CONFIG_HOME/libvirt/auth.conf`` (``~/.config/...``), else ``/etc/libvirt/auth.conf``;
   group ``[auth-libvirt-HOST]`` (HOST the URI's host, ``localhost`` for a UNIX socket) or
   ``[auth-libvirt-default]``, whose ``credentials=NAME`` names the group
   ``[credentials-NAME]`` holding ``authname=`` and ``password=``;
2. then, for what is still missing, the callback of ``pyvirt.openAuth(uri, [credtypes, callback,
   opaque], flags)``: called once with the list of ``[type, prompt, challenge, defresult,
   result]`` entries (VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE), which it fills in ``result``;
   returning a negative number fails with "Failed to collect auth credentials".

As in libvirt, only the credential types the callback declares can be used at all (auth.conf
fills those): a callback without VIR_CRED_PASSPHRASE means no SCRAM. One difference: libvirt's
``virConnectOpen`` (``pyvirt.open``) has no callback and so cannot do SCRAM ("No worthy mechs
found") even with an auth.conf; pyvirt's reads auth.conf for it, as virsh's default callback does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyvirt import _errcodes as codes
from pyvirt._constants import VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE
from pyvirt.errors import PyvirtError
from pyvirt.rpc.protocol import AuthType

if TYPE_CHECKING:
    import configparser

    from pyvirt.rpc.client import RPCClient
    from pyvirt.uri import ConnectURI

__all__ = ["AuthOptions", "authenticate", "auth_conf_path", "auth_conf_lookup", "MECHANISMS"]

log = logging.getLogger(__name__)

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1")
_SERVICE = "libvirt"
_PROMPTS = {VIR_CRED_AUTHNAME: ("Please enter your authentication name", "Authentication Name",
                                "authname"),
            VIR_CRED_PASSPHRASE: ("Please enter your password", "Password", "password")}


def _error(detail: str, domain: int = codes.VIR_FROM_REMOTE) -> PyvirtError:
    return PyvirtError(f"authentication failed: {detail}", code=codes.VIR_ERR_AUTH_FAILED,
                       domain=domain, str1="authentication failed: %s", str2=detail)


@dataclass
class AuthOptions:
    """Where the credentials come from, and what the transport already protects."""

    #: The URI's host, for auth.conf's ``[auth-libvirt-HOST]`` (None: ``localhost``).
    hostname: str | None = None
    #: The URI's query: ``auth=``, ``authfile=``.
    params: Mapping[str, str] = field(default_factory=dict)
    #: openAuth's ``[credtypes, callback, opaque]``, or None (auth.conf only).
    auth: Any = None
    #: Whether the transport is secure (UNIX, TLS, SSH): SCRAM is refused otherwise.
    secure: bool = True

    @classmethod
    def for_uri(cls, uri: ConnectURI, auth: Any = None) -> AuthOptions:
        transport = uri.effective_transport
        return cls(hostname=uri.effective_host, params=dict(uri.params), auth=auth,
                   secure=transport in ("unix", "tls", "ssh"))


# ---- auth.conf --------------------------------------------------------------------------------

def auth_conf_path(params: Mapping[str, str] | None = None) -> Path | None:
    """The auth.conf libvirt would read, or None."""
    env = os.environ.get("LIBVIRT_AUTH_FILE")
    if env:
        return Path(env)
    if params and params.get("authfile"):
        return Path(params["authfile"])
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    for candidate in (Path(xdg) / "libvirt" / "auth.conf", Path("/etc/libvirt/auth.conf")):
        if candidate.exists():
            return candidate
    return None


def _load(path: Path) -> configparser.RawConfigParser:
    import configparser  # only when a server asks for credentials

    parser = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=("#", ";"),
                                          interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise PyvirtError(f"cannot read the authentication file {path}: {exc.strerror}",
                          code=codes.VIR_ERR_CONF_SYNTAX, domain=codes.VIR_FROM_CONF) from exc
    except configparser.Error as exc:
        raise PyvirtError(f"{path}: not a key file: {exc.message}",
                          code=codes.VIR_ERR_CONF_SYNTAX, domain=codes.VIR_FROM_CONF) from exc
    return parser


def auth_conf_lookup(path: Path, hostname: str | None, credname: str) -> str | None:
    """libvirt's virAuthConfigLookup for the ``libvirt`` service."""
    parser = _load(path)
    group = f"auth-{_SERVICE}-{hostname or 'localhost'}"
    if not parser.has_section(group):
        group = f"auth-{_SERVICE}-default"
        if not parser.has_section(group):
            return None
    if not parser.has_option(group, "credentials"):
        raise PyvirtError(f"Missing item 'credentials' in group '{group}' in '{path}'",
                          code=codes.VIR_ERR_CONF_SYNTAX, domain=codes.VIR_FROM_NONE)
    name = parser.get(group, "credentials").strip()
    creds = f"credentials-{name}"
    if not parser.has_section(creds):
        raise PyvirtError(f"Missing group 'credentials-{name}' referenced from group '{group}' "
                          f"in '{path}'", code=codes.VIR_ERR_CONF_SYNTAX, domain=codes.VIR_FROM_NONE)
    if not parser.has_option(creds, credname):
        return None
    return parser.get(creds, credname).strip()


def _credentials(options: AuthOptions) -> tuple[str, str] | None:
    """User name and password, or None when they cannot be had (no PASSPHRASE type)."""
    auth = options.auth
    if auth is None:
        credtypes: list[int] = [VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE]
        callback = opaque = None
    else:
        try:
            credtypes, callback, opaque = list(auth[0]), auth[1], auth[2] if len(auth) > 2 else None
        except (TypeError, IndexError):
            raise PyvirtError("invalid argument: auth must be [credential types, callback, opaque]",
                              code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_NONE) from None
    if VIR_CRED_AUTHNAME not in credtypes or VIR_CRED_PASSPHRASE not in credtypes:
        return None
    values: dict[int, str] = {}
    path = auth_conf_path(options.params)
    if path is not None and path.exists():
        for cred in (VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE):
            value = auth_conf_lookup(path, options.hostname, _PROMPTS[cred][2])
            if value is not None:
                values[cred] = value
    missing = [c for c in (VIR_CRED_AUTHNAME, VIR_CRED_PASSPHRASE) if c not in values]
    if missing:
        if callback is None:
            where = f" ({path} has none for this host)" if path is not None else ""
            raise _error("the server asks for a SASL user name and password and none were given"
                         f"{where}: write them in libvirt's auth.conf ([credentials-NAME] with "
                         "authname= and password=, [auth-libvirt-HOST] or [auth-libvirt-default] "
                         "with credentials=NAME; $LIBVIRT_AUTH_FILE or ~/.config/libvirt/"
                         "auth.conf), or open with pyvirt.openAuth and a callback for "
                         "VIR_CRED_AUTHNAME and VIR_CRED_PASSPHRASE")
        entries: list[list[Any]] = [[c, _PROMPTS[c][0], _PROMPTS[c][1], None, None]
                                    for c in missing]
        if callback(entries, opaque) < 0:
            raise _error("Failed to collect auth credentials")
        for entry in entries:
            if entry[4] is None:
                raise _error("Failed to collect auth credentials")
            values[entry[0]] = str(entry[4])
    return values[VIR_CRED_AUTHNAME], values[VIR_CRED_PASSPHRASE]


# ---- the exchange -----------------------------------------------------------------------------

async def authenticate(rpc: RPCClient, types: list[int], options: AuthOptions | None,
                       *, timeout: float | None = None) -> None:
    """After AUTH_LIST: pass the server's authentication, or raise what libvirt would."""
    options = options or AuthOptions()
    want = options.params.get("auth")
    wantmech = None
    if want is not None:
        kind, _, wantmech = want.partition(".")
        wanted = {"sasl": AuthType.SASL, "polkit": AuthType.POLKIT}.get(kind)
        if wanted is None or wanted not in types:
            raise _error(f"requested authentication type {want} rejected")
        chosen = int(wanted)
    else:
        chosen = int(types[0]) if types else int(AuthType.NONE)
    if chosen == AuthType.NONE:
        return
    if chosen == AuthType.POLKIT:
        raise PyvirtError(f"the server at {rpc.peer} requires polkit authentication, which "
                          "pyvirt's client does not implement yet; configure the server with "
                          "auth none or sasl for this socket",
                          code=codes.VIR_ERR_AUTH_UNAVAILABLE, domain=codes.VIR_FROM_REMOTE)
    if chosen != AuthType.SASL:
        raise _error(f"unknown authentication type {chosen}")
    await _sasl(rpc, options, wantmech or None, timeout)


async def _sasl(rpc: RPCClient, options: AuthOptions, wantmech: str | None,
                timeout: float | None) -> None:
    import scramp

    init = await rpc.call("AUTH_SASL_INIT", timeout=timeout)
    offered = [m for m in str(init.mechlist).split(",") if m]
    if wantmech is not None:
        if wantmech not in offered:
            raise _error(f"SASL mechanism {wantmech} not supported by server")
        offered = [wantmech]
    usable = [m for m in offered if m in MECHANISMS]
    if not usable:
        gss = " (GSSAPI/Kerberos is not supported by pyvirt)" if "GSSAPI" in offered else ""
        raise _error(f"the server offers the SASL mechanisms {', '.join(offered) or '(none)'} and "
                     f"pyvirt's client supports only {', '.join(MECHANISMS)}{gss}",
                     domain=codes.VIR_FROM_RPC)
    if not options.secure:
        raise _error("Failed to start SASL negotiation: no mechanism available: plain TCP needs "
                     "a SASL security layer (SSF of 56 or more) and SCRAM has none; connect with "
                     "TLS (qemu://HOST/system) instead", domain=codes.VIR_FROM_RPC)
    creds = _credentials(options)
    if creds is None:
        raise _error("Failed to start SASL negotiation: no mechanism available: SCRAM needs "
                     "VIR_CRED_AUTHNAME and VIR_CRED_PASSPHRASE among the credential types of "
                     "openAuth's callback", domain=codes.VIR_FROM_RPC)
    user, password = creds
    mech = next(m for m in MECHANISMS if m in usable)  # the strongest, as Cyrus's client picks
    try:
        scram = scramp.ScramClient([mech], user, password)
        first = scram.get_client_first()
    except scramp.ScramException as exc:
        raise _error(f"Failed to start SASL negotiation: {exc}", domain=codes.VIR_FROM_RPC) from exc
    reply = await rpc.call("AUTH_SASL_START", mech=mech, nil=0, data=first.encode(),
                           timeout=timeout)
    if reply.complete:
        raise _error(f"the server ended the {mech} exchange early", domain=codes.VIR_FROM_RPC)
    try:
        scram.set_server_first(bytes(reply.data).decode())
        final = scram.get_client_final()
    except (scramp.ScramException, UnicodeDecodeError) as exc:
        raise _error(f"Failed to step SASL negotiation: {exc}", domain=codes.VIR_FROM_RPC) from exc
    reply = await rpc.call("AUTH_SASL_STEP", nil=0, data=final.encode(), timeout=timeout)
    if not reply.complete:
        raise _error(f"the server did not end the {mech} exchange", domain=codes.VIR_FROM_RPC)
    try:
        scram.set_server_final(bytes(reply.data).decode())
    except (scramp.ScramException, UnicodeDecodeError) as exc:
        # the server did not prove it knows the password's keys: not the server we think
        raise _error(f"Failed to step SASL negotiation: the server's signature is wrong ({exc})",
                     domain=codes.VIR_FROM_RPC) from exc
    log.debug("authenticated to %s as %r with %s", rpc.peer, user, mech)
