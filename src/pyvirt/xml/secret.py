# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt 9.0's secret XML (``<secret>``), declared with :mod:`pyvirt.xml.base`.

::

    <secret ephemeral='no' private='yes'>
      <uuid>...</uuid>
      <description>...</description>
      <usage type='volume|ceph|iscsi|tls|vtpm'>
        <volume>PATH</volume> | <name>NAME</name> | <target>IQN</target>
      </usage>
    </secret>

The usage id lives in a child that depends on the usage type (``<volume>`` for volume, ``<target>`` for
iscsi, ``<name>`` for the others); a child that does not belong to the type is ignored, as libvirt
does. Text is taken as written (no trimming) and an empty element counts as absent.

The errors carry the codes libvirt's parser gives for the same mistakes (secret_conf.c): an unknown
usage type is "unsupported configuration", a usage without its id and a malformed UUID are internal
errors, bad yes/no values and a usage without a type are XML errors; all in VIR_FROM_SECRET.
No policy lives here: generating a missing UUID is :func:`parse_secret`'s job, as in libvirt's parser,
and uniqueness is the driver's (:mod:`pyvirt.secret.driver`).
"""

from __future__ import annotations

import uuid as _uuid
from typing import Any

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError, XMLError
from pyvirt.xml.base import (
    Attr,
    Child,
    Field,
    ParseState,
    Text,
    Uuid,
    XMLObject,
    YesNo,
    format_element,
    parse_document,
)

__all__ = ["USAGE_TYPES", "USAGE_ID_TAGS", "SecretUsage", "Secret", "parse_secret", "usage_type_number"]

#: libvirt's virSecretUsageType, by number (VIR_SECRET_USAGE_TYPE_*)
USAGE_TYPES = ("none", "volume", "ceph", "iscsi", "tls", "vtpm")
#: the element holding the usage id, per usage type
USAGE_ID_TAGS = {"volume": "volume", "ceph": "name", "iscsi": "target", "tls": "name", "vtpm": "name"}
# libvirt's words for a usage without its id (the type's display name and what is missing)
_MISSING_ID = {"volume": ("volume", "volume path"), "ceph": ("Ceph", "name"), "iscsi": ("iSCSI", "target"),
               "tls": ("TLS", "name"), "vtpm": ("vTPM", "name")}


def usage_type_number(name: str) -> int:
    return USAGE_TYPES.index(name)


def _for(usage_type: str, field: Field[Any]) -> Field[Any]:
    # The field is read and written only for its usage type.
    field.when = lambda u: u.type == usage_type
    return field


class SecretUsage(XMLObject):
    TAG = "usage"
    type = Attr("type")
    volume = _for("volume", Text("volume"))
    # <name> serves three usage types: one field, read for any of them
    name = Text("name")
    name.when = lambda u: u.type in ("ceph", "tls", "vtpm")
    target = _for("iscsi", Text("target"))

    def _after_parse(self, st: ParseState) -> None:
        if not self.type:
            raise XMLError(f"unknown secret usage type: <usage> needs type='volume', 'ceph', 'iscsi', "
                           f"'tls' or 'vtpm' (in {st.path})", domain=codes.VIR_FROM_SECRET)
        if self.type not in USAGE_TYPES:
            raise PyvirtError(f"unsupported configuration: unknown secret usage type {self.type} "
                              f"(in {st.path}); expected one of: {', '.join(USAGE_TYPES)}",
                              code=codes.VIR_ERR_CONFIG_UNSUPPORTED, domain=codes.VIR_FROM_SECRET)
        if self.type != "none" and self.usage_id is None:
            what, missing = _MISSING_ID[self.type]
            tag = USAGE_ID_TAGS[self.type]
            raise PyvirtError(f"internal error: {what} usage specified, but {missing} is missing: add "
                              f"<{tag}>...</{tag}> to <usage type='{self.type}'> (in {st.path})",
                              code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_SECRET)

    @property
    def usage_id(self) -> str | None:
        """The volume path, Ceph/TLS/vTPM name or iSCSI target this secret is for."""
        tag = USAGE_ID_TAGS.get(self.type or "")
        if tag is None:
            return None
        value: str | None = self._values.get(tag)  # each field is named after its element
        return value


class Secret(XMLObject):
    TAG = "secret"
    ephemeral = Attr("ephemeral", YesNo(), default=False)
    private = Attr("private", YesNo(), default=False)
    # Kept as written here and made canonical in _after_parse: libvirt reports a bad UUID as an
    # internal error, not as an XML error.
    uuid = Text("uuid")
    description = Text("description")
    usage = Child(SecretUsage)

    def _after_parse(self, st: ParseState) -> None:
        # Both flags are always formatted (ephemeral='no' private='no' when absent).
        self.ephemeral = bool(self.ephemeral)
        self.private = bool(self.private)
        if self.uuid is not None:
            try:
                self.uuid = Uuid().parse(self.uuid)
            except ValueError:
                raise PyvirtError(f"internal error: malformed uuid element: '{self.uuid}' is not a UUID "
                                  f"(32 hexadecimal digits, optionally with hyphens) (in {st.path}/uuid)",
                                  code=codes.VIR_ERR_INTERNAL_ERROR, domain=codes.VIR_FROM_SECRET) from None
        if self.usage is not None and self.usage.type == "none":
            self.usage = None  # libvirt formats no <usage> for type 'none'

    @property
    def usage_type(self) -> int:
        """VIR_SECRET_USAGE_TYPE_* of this secret (0: none)."""
        return usage_type_number(self.usage.type) if self.usage is not None and self.usage.type else 0

    @property
    def usage_id(self) -> str | None:
        return self.usage.usage_id if self.usage is not None else None

    def to_xml(self) -> str:
        """The document as libvirt's secret-dumpxml prints it."""
        node = self.to_node()
        assert node is not None  # the flags are always set
        return format_element(node)


def parse_secret(xml: str | bytes, *, validate: bool = False) -> Secret:
    """Parse secret XML; a missing UUID is generated, as libvirt's parser does.

    ``validate`` is VIR_SECRET_DEFINE_VALIDATE (``virsh secret-define --validate``): unknown elements
    and attributes are errors, reported like libvirt's schema check (VIR_ERR_XML_INVALID_SCHEMA).
    """
    try:
        root = parse_document(xml, "secret")
    except XMLError as exc:
        text = str(exc)
        if text.startswith("unexpected root element"):
            # libvirt's virXMLParse checks the root before the secret parser runs
            raise XMLError(f"{text}: a secret is described by a <secret> document",
                           domain=codes.VIR_FROM_XML) from exc
        # malformed or empty documents: libxml2's own report, as VIR_ERR_XML_DETAIL
        raise PyvirtError(f"(definition_of_secret): {text}", code=codes.VIR_ERR_XML_DETAIL,
                          domain=codes.VIR_FROM_SECRET) from exc
    st = ParseState(strict=validate, path="/secret")
    try:
        secret = Secret.from_node(root, st)
    except PyvirtError as exc:
        if validate:
            raise PyvirtError(f"XML document failed to validate against the secret schema: {exc}",
                              code=codes.VIR_ERR_XML_INVALID_SCHEMA, domain=codes.VIR_FROM_XML) from exc
        if exc.domain == codes.VIR_FROM_DOMAIN:  # the generic field errors of pyvirt.xml.base
            exc.domain = codes.VIR_FROM_SECRET
        raise
    if secret.uuid is None:
        secret.uuid = str(_uuid.uuid4())
    return secret
