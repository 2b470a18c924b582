# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import annotations

from pathlib import Path

import pytest

from pyvirt import _errcodes as codes
from pyvirt.conf.syntax import (
    MAX_CONFIG_FILE_SIZE,
    ConfFile,
    ConfValue,
    Duplicate,
    Setting,
    parse_conf,
    read_conf,
)
from pyvirt.errors import ConfigError


def values(text: str) -> dict[str, ConfValue]:
    return {key: setting.value for key, setting in parse_conf(text).items()}


@pytest.mark.parametrize("text,expected", [
    ('a = "x"', {"a": "x"}),
    ("a = 'x'", {"a": "x"}),
    ('a = \'say "hi"\'', {"a": 'say "hi"'}),
    ('a = "it\'s"', {"a": "it's"}),
    ('a = "back\\slash"', {"a": "back\\slash"}),  # no escape sequences
    ('a = ""', {"a": ""}),
    ('a = "x # not a comment"', {"a": "x # not a comment"}),
    ('a = """one\ntwo"""', {"a": "one\ntwo"}),
    ("a = 0", {"a": 0}),
    ("a = 42", {"a": 42}),
    ("a = -12", {"a": -12}),
    ("a = +7", {"a": 7}),
    ("a = 007", {"a": 7}),
    ("a = 18446744073709551616", {"a": 18446744073709551616}),
    ("a = []", {"a": ()}),
    ("a = [ ]", {"a": ()}),
    ('a = [ "x" ]', {"a": ("x",)}),
    ('a = ["x","y"]', {"a": ("x", "y")}),
    ('a = [ "x", "y", ]', {"a": ("x", "y")}),
    ("a = [1, -2, 'z']", {"a": (1, -2, "z")}),
    ("a = [[1, 2], []]", {"a": ((1, 2), ())}),
    ('a = [\n  "x",\n\n  "y"\n]', {"a": ("x", "y")}),
    ('a = [\n  "x"\n  ,\n  "y",\n]', {"a": ("x", "y")}),
    ("a=1", {"a": 1}),
    ("\t a \t=\t 1 \t", {"a": 1}),
    ("a = 1; b = 2", {"a": 1, "b": 2}),
    ("a = 1;\nb = 2;", {"a": 1, "b": 2}),
    ("a = 1 # trailing comment", {"a": 1}),
    ("a = [1] # trailing comment", {"a": (1,)}),
    ("a_B9 = 1", {"a_B9": 1}),
    ("a = 1\r\nb = 2\r\n", {"a": 1, "b": 2}),
    ("", {}),
    ("\n\n\n", {}),
    ("   \n\t\n", {}),
    ("# only a comment", {}),
    ("#\n# two\n\n", {}),
    ("\n\na = 1\n\n\n", {"a": 1}),
])
def test_values(text: str, expected: dict[str, ConfValue]) -> None:
    assert values(text) == expected


def test_line_numbers_and_order() -> None:
    text = ('# header\n'
            '\n'
            'first = 1\n'
            'list = [\n'
            '  "a",\n'
            '  "b",\n'
            ']\n'
            'text = """x\n'
            'y"""\n'
            'after = "z"; same = 2\n')
    conf = parse_conf(text, "f.conf")
    assert list(conf) == ["first", "list", "text", "after", "same"]
    assert conf["first"] == Setting(1, 3)
    assert conf["list"] == Setting(("a", "b"), 4)
    assert conf["text"].line == 8
    assert conf["after"].line == 10 and conf["same"].line == 10
    value, line = conf["after"]
    assert (value, line) == ("z", 10)
    assert conf.path == "f.conf"
    assert len(conf) == 5 and "first" in conf and "nope" not in conf


def test_first_assignment_wins_and_repeats_are_recorded() -> None:
    conf = parse_conf('user = "a"\ngroup = "g"\nuser = 5\nuser = "c"\n')
    assert conf["user"] == Setting("a", 1)
    assert conf.duplicates == (Duplicate("user", 3, 1), Duplicate("user", 4, 1))
    assert isinstance(conf, ConfFile)


# text, line, fragments of the message
ERRORS = [
    ("a = \n", 1, ["expected a value for 'a'", "got the end of the line"]),
    ("a =", 1, ["expected a value for 'a'", "got the end of the file"]),
    ("a\n", 1, ["expected '=' after key 'a'", "got the end of the line"]),
    ("a b = 1", 1, ["expected '=' after key 'a', got 'b'"]),
    ("foo-bar = 1", 1, ["expected '=' after key 'foo', got '-'"]),
    ("a = -x", 1, ["expected digits after '-' in the value of 'a'"]),
    ("a = yes", 1, ["expected a value for 'a'", "got 'yes'"]),
    ("a = 12abc", 1, ["expected the end of the line after the value of 'a'", "got 'abc'"]),
    ("a = 1.5", 1, ["after the value of 'a'", "got '.'"]),
    ('a = "x" "y"', 1, ["after the value of 'a'", 'got the string "y"']),
    ("1a = 2", 1, ["expected a key name", "got the number 1"]),
    ("_a = 2", 1, ["expected a key name", "got '_'"]),
    ("; a = 1", 1, ["expected a key name", "got ';'"]),
    ("ok = 1\n\n= 2", 3, ["expected a key name", "got '='"]),
    ('a = "x\n', 1, ["unterminated string", '"-quoted', 'use """..."""']),
    ("a = 'x", 1, ["unterminated string", "'-quoted"]),
    ('\n\na = """x\ny\n', 3, ['string opened with """ is never closed']),
    ('a = [\n"x"\n', 3, ["the list of 'a' opened on line 1 is not closed with ']'"]),
    ('a = [\n"x",\n', 3, ["the list of 'a' opened on line 1 is not closed with ']'"]),
    ('a = ["x" "y"]', 1, ["expected ',' or ']' in the list of 'a'", 'got the string "y"']),
    ("a = [,]", 1, ["expected a value in the list of 'a'", "got ','"]),
    ("a = [1,,2]", 1, ["expected a value in the list of 'a'", "got ','"]),
    ('a = [\n "x", # why\n]', 2, ["a comment is not allowed inside the list of 'a'",
                                  "opened on line 1", "move the comment above the key"]),
    ('a = [ # why\n "x"\n]', 1, ["a comment is not allowed inside the list of 'a'"]),
]


@pytest.mark.parametrize("text,line,fragments", ERRORS, ids=[e[0] for e in ERRORS])
def test_syntax_errors(text: str, line: int, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_conf(text, "/etc/libvirt/qemu.conf")
    error = info.value
    assert str(error).startswith(f"/etc/libvirt/qemu.conf:{line}: ")
    assert (error.path, error.line) == ("/etc/libvirt/qemu.conf", line)
    for fragment in fragments:
        assert fragment in str(error)
    assert error.get_error_code() == codes.VIR_ERR_CONF_SYNTAX
    assert error.get_error_domain() == codes.VIR_FROM_CONF


def test_error_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_conf("ok = 1\nbad = [1 2]\n")
    assert info.value.key == "bad"
    assert info.value.line == 2


def test_read_conf(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_bytes(b'a = "caf\xc3\xa9"\nb = "\xff"\n')
    conf = read_conf(path)
    assert conf.path == str(path)
    assert conf["a"].value == "café"
    # bytes that are not UTF-8 survive, as in libvirt which never decodes
    assert conf["b"].value == b"\xff".decode("utf-8", "surrogateescape")


def test_read_conf_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_conf(tmp_path / "missing.conf")
    nul = tmp_path / "nul.conf"
    nul.write_bytes(b"a = 1\0")
    with pytest.raises(ConfigError, match=r"nul\.conf: file contains a NUL byte"):
        read_conf(nul)
    big = tmp_path / "big.conf"
    big.write_bytes(b"#" * (MAX_CONFIG_FILE_SIZE + 1))
    with pytest.raises(ConfigError, match=r"larger than 10485760 bytes"):
        read_conf(big)


def test_syntax_error_from_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "qemu.conf"
    path.write_text('# comment\nuser = "root"\ngroup = \n')
    with pytest.raises(ConfigError) as info:
        read_conf(path)
    assert str(info.value).startswith(f"{path}:3: expected a value for 'group'")
