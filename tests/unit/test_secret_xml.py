# SPDX-License-Identifier: LGPL-2.1-or-later
"""The secret XML model (pyvirt.xml.secret): libvirt 9.0's parse, format and errors.

The expected documents are what libvirt 9.0's secret driver prints for the same input (checked
against the real one by tests/compat/test_secret_compat.py).
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.xml.base import record_parsed_fields
from pyvirt.xml.secret import USAGE_ID_TAGS, Secret, SecretUsage, parse_secret

UUID = "0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f"


@pytest.mark.parametrize(("usage_type", "tag", "number"), [
    ("volume", "volume", 1), ("ceph", "name", 2), ("iscsi", "target", 3), ("tls", "name", 4),
    ("vtpm", "name", 5),
])
def test_each_usage_type_round_trips(usage_type: str, tag: str, number: int) -> None:
    doc = (f"<secret ephemeral='yes' private='yes'><uuid>{UUID}</uuid><description>d</description>"
           f"<usage type='{usage_type}'><{tag}>id-{usage_type}</{tag}></usage></secret>")
    secret = parse_secret(doc)
    assert secret.usage_type == number
    assert secret.usage_id == f"id-{usage_type}"
    assert secret.ephemeral is True and secret.private is True
    assert secret.to_xml() == (
        "<secret ephemeral='yes' private='yes'>\n"
        f"  <uuid>{UUID}</uuid>\n"
        "  <description>d</description>\n"
        f"  <usage type='{usage_type}'>\n"
        f"    <{tag}>id-{usage_type}</{tag}>\n"
        "  </usage>\n"
        "</secret>\n")
    assert parse_secret(secret.to_xml()).to_xml() == secret.to_xml()


def test_defaults_are_formatted_and_a_missing_uuid_is_generated() -> None:
    first = parse_secret("<secret/>")
    second = parse_secret("<secret><uuid></uuid><description></description></secret>")
    for secret in (first, second):
        assert secret.uuid is not None
        assert str(uuid.UUID(secret.uuid)) == secret.uuid
        assert secret.to_xml() == (f"<secret ephemeral='no' private='no'>\n  <uuid>{secret.uuid}</uuid>\n"
                                   "</secret>\n")
        assert secret.usage_type == 0 and secret.usage_id is None
    assert first.uuid != second.uuid


def test_uuid_spellings_are_made_canonical() -> None:
    assert parse_secret(f"<secret><uuid>{UUID.replace('-', '').upper()}</uuid></secret>").uuid == UUID


def test_usage_none_is_not_formatted() -> None:
    secret = parse_secret("<secret><usage type='none'/></secret>")
    assert secret.usage is None and secret.usage_type == 0
    assert "<usage" not in secret.to_xml()


def test_a_child_of_another_usage_type_is_ignored() -> None:
    secret = parse_secret("<secret><usage type='iscsi'><name>n</name><volume>/v</volume>"
                          "<target>iqn.2024-01.x</target></usage></secret>")
    assert secret.usage_id == "iqn.2024-01.x"
    assert "<name>" not in secret.to_xml() and "<volume>" not in secret.to_xml()


def test_text_is_kept_as_written_and_escaped_like_libvirt() -> None:
    secret = parse_secret("<secret><description>\n a &amp; b 'q' \n</description>"
                          "<usage type='ceph'><name> c&lt;1 </name></usage></secret>")
    assert secret.description == "\n a & b 'q' \n"
    assert secret.usage_id == " c<1 "
    xml = secret.to_xml()
    assert "<description>\n a &amp; b &apos;q&apos; \n</description>" in xml
    assert "<name> c&lt;1 </name>" in xml


def test_unknown_elements_are_dropped_without_validation() -> None:
    secret = parse_secret("<secret foo='1'><bar/><usage type='tls'><name>t</name><baz/></usage></secret>")
    assert "bar" not in secret.to_xml() and "foo" not in secret.to_xml() and "baz" not in secret.to_xml()


@pytest.mark.parametrize(("doc", "code", "domain", "words"), [
    ("<secret ephemeral='maybe'/>", codes.VIR_ERR_XML_ERROR, codes.VIR_FROM_SECRET, "'ephemeral'"),
    ("<secret private='1'/>", codes.VIR_ERR_XML_ERROR, codes.VIR_FROM_SECRET, "'private'"),
    ("<secret><usage/></secret>", codes.VIR_ERR_XML_ERROR, codes.VIR_FROM_SECRET, "/secret/usage"),
    ("<secret><usage type=''/></secret>", codes.VIR_ERR_XML_ERROR, codes.VIR_FROM_SECRET,
     "<usage> needs type"),
    ("<secret><usage type='bogus'/></secret>", codes.VIR_ERR_CONFIG_UNSUPPORTED, codes.VIR_FROM_SECRET,
     "unknown secret usage type bogus"),
    ("<secret><usage type='volume'/></secret>", codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_SECRET,
     "<volume>...</volume>"),
    ("<secret><usage type='ceph'><name></name></usage></secret>", codes.VIR_ERR_INTERNAL_ERROR,
     codes.VIR_FROM_SECRET, "Ceph usage specified, but name is missing"),
    ("<secret><usage type='iscsi'><name>x</name></usage></secret>", codes.VIR_ERR_INTERNAL_ERROR,
     codes.VIR_FROM_SECRET, "<target>"),
    ("<secret><usage type='tls'/></secret>", codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_SECRET, "TLS"),
    ("<secret><usage type='vtpm'/></secret>", codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_SECRET, "vTPM"),
    ("<secret><uuid>zz</uuid></secret>", codes.VIR_ERR_INTERNAL_ERROR, codes.VIR_FROM_SECRET,
     "/secret/uuid"),
    ("<secret", codes.VIR_ERR_XML_DETAIL, codes.VIR_FROM_SECRET, "definition_of_secret"),
    ("", codes.VIR_ERR_XML_DETAIL, codes.VIR_FROM_SECRET, "empty"),
    ("<domain/>", codes.VIR_ERR_XML_ERROR, codes.VIR_FROM_XML, "<secret>"),
    ("<!DOCTYPE s [<!ENTITY e 'x'>]><secret><description>&e;</description></secret>",
     codes.VIR_ERR_XML_DETAIL, codes.VIR_FROM_SECRET, "DOCTYPE"),
])
def test_mistakes_get_libvirts_codes_and_say_where(doc: str, code: int, domain: int, words: str) -> None:
    with pytest.raises(PyvirtError) as exc:
        parse_secret(doc)
    assert (exc.value.code, exc.value.domain) == (code, domain)
    assert words in str(exc.value)


def test_validation_refuses_unknown_xml_as_a_schema_error() -> None:
    parse_secret("<secret><usage type='volume'><volume>/v</volume></usage></secret>", validate=True)
    for doc in ("<secret><foo/></secret>", "<secret bar='1'/>", "<secret ephemeral='maybe'/>",
                "<secret><usage type='volume'><volume>/v</volume><baz/></usage></secret>"):
        with pytest.raises(PyvirtError) as exc:
            parse_secret(doc, validate=True)
        assert (exc.value.code, exc.value.domain) == (codes.VIR_ERR_XML_INVALID_SCHEMA, codes.VIR_FROM_XML)


def test_every_declared_field_is_exercised() -> None:
    docs = [f"<secret ephemeral='no' private='yes'><uuid>{UUID}</uuid><description>x</description>"
            "<usage type='volume'><volume>/v</volume></usage></secret>",
            "<secret><usage type='ceph'><name>c</name></usage></secret>",
            "<secret><usage type='iscsi'><target>t</target></usage></secret>"]
    with record_parsed_fields() as seen:
        for doc in docs:
            parse_secret(doc)
    for cls in (Secret, SecretUsage):
        declared = {f.name for f in cls._fields}
        assert declared <= {name for owner, name in seen if owner is cls}, cls


_XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"), min_size=1,
                    max_size=40)


@given(description=_XML_TEXT, ident=_XML_TEXT, usage_type=st.sampled_from(sorted(USAGE_ID_TAGS)),
       private=st.booleans())
def test_any_text_round_trips(description: str, ident: str, usage_type: str, private: bool) -> None:
    tag = USAGE_ID_TAGS[usage_type]
    secret = Secret(private=private, ephemeral=False, uuid=UUID, description=description,
                    usage=SecretUsage(type=usage_type, **{tag: ident}))
    again = parse_secret(secret.to_xml())
    assert (again.description, again.usage_id, again.private) == (description, ident, private)
    assert again.to_xml() == secret.to_xml()
