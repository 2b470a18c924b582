# SPDX-License-Identifier: LGPL-2.1-or-later
"""libvirt's configuration-file syntax (qemu.conf, libvirtd.conf, libvirt.conf...).

The language is the one libvirt's virconf.c reads::

    # a comment
    key = "double-quoted"      # trailing comment
    other = 'single-quoted'; third = -12
    text = \"\"\"a string that may
    span lines\"\"\"
    items = [ "a", "b",
              "c", ]            # lists may span lines and end with a comma

Keys start with a letter and continue with letters, digits and '_'. Values are strings (no escape
sequences), integers with an optional sign (booleans are written 0/1) or lists of values.
Statements end at a line end, a ';' or the end of the file.

Faithful to libvirt on purpose: a comment inside a list is a syntax error (virconf.c does not skip
it), and when a key is assigned twice the first assignment counts (virConfGetValue returns the first
match); the later ones are kept in :attr:`ConfFile.duplicates` so that callers can warn. One
deliberate difference: libvirt rejects a file made only of blank lines ("expecting a name"); pyvirt
reads it as empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple, TypeAlias

from pyvirt.errors import ConfigError

__all__ = ["ConfValue", "Setting", "Duplicate", "ConfFile", "parse_conf", "read_conf",
           "MAX_CONFIG_FILE_SIZE"]

ConfValue: TypeAlias = "str | int | tuple[ConfValue, ...]"

#: libvirt refuses configuration files above 10 MiB as a sanity check; so does pyvirt.
MAX_CONFIG_FILE_SIZE = 10 * 1024 * 1024


class Setting(NamedTuple):
    """One assignment: its value and the line the key is on."""

    value: ConfValue
    line: int


class Duplicate(NamedTuple):
    """A repeated key: the assignment on ``line`` is ignored in favour of the one on ``first_line``."""

    key: str
    line: int
    first_line: int


class ConfFile(Mapping[str, Setting]):
    """The settings of one file, in file order, first assignment of each key."""

    def __init__(self, path: str, settings: dict[str, Setting], duplicates: list[Duplicate]) -> None:
        self.path = path
        self._settings = settings
        self.duplicates: tuple[Duplicate, ...] = tuple(duplicates)

    def __getitem__(self, key: str) -> Setting:
        return self._settings[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __repr__(self) -> str:
        return f"ConfFile({self.path!r}, {self._settings!r})"


class _Token(NamedTuple):
    kind: str  # name number string [ ] , ; = newline comment eof char
    text: str
    value: ConfValue | None
    line: int


_BLANKS = " \t"
_EOLS = "\n\r"


def _describe(tok: _Token) -> str:
    if tok.kind == "eof":
        return "the end of the file"
    if tok.kind == "newline":
        return "the end of the line"
    if tok.kind == "comment":
        return "a comment"
    if tok.kind == "string":
        return f"the string {tok.text}"
    if tok.kind == "number":
        return f"the number {tok.text}"
    if tok.kind == "name":
        return f"'{tok.text}'"
    return repr(tok.text)


class _Lexer:
    def __init__(self, text: str, path: str) -> None:
        self.text = text
        self.path = path
        self.pos = 0
        self.line = 1

    def error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, line=self.line if line is None else line)

    def tokens(self) -> Iterator[_Token]:
        text, n = self.text, len(self.text)
        while True:
            while self.pos < n and text[self.pos] in _BLANKS:
                self.pos += 1
            if self.pos >= n:
                yield _Token("eof", "", None, self.line)
                return
            start, line, ch = self.pos, self.line, text[self.pos]
            if ch in _EOLS:
                self.pos += 1
                # libvirt counts lines on '\n' only, so '\r\n' and a lone '\r' stay on one line.
                if ch == "\n":
                    self.line += 1
                yield _Token("newline", ch, None, line)
            elif ch == "#":
                while self.pos < n and text[self.pos] not in _EOLS:
                    self.pos += 1
                yield _Token("comment", text[start:self.pos], None, line)
            elif ch.isascii() and ch.isalpha():
                self.pos += 1
                while self.pos < n and (text[self.pos].isascii() and text[self.pos].isalnum()
                                        or text[self.pos] == "_"):
                    self.pos += 1
                yield _Token("name", text[start:self.pos], None, line)
            elif ch.isascii() and ch.isdigit() or ch in "+-":
                self.pos += 1
                while self.pos < n and text[self.pos].isascii() and text[self.pos].isdigit():
                    self.pos += 1
                literal = text[start:self.pos]
                if literal in ("+", "-"):
                    # a lone sign: the parser knows whether a value or a '=' was due
                    yield _Token("char", literal, None, line)
                else:
                    yield _Token("number", literal, int(literal), line)
            elif text.startswith('"""', start):
                end = text.find('"""', start + 3)
                if end < 0:
                    raise self.error('string opened with """ is never closed with """', line)
                value = text[start + 3:end]
                self.line += value.count("\n")
                self.pos = end + 3
                yield _Token("string", text[start:self.pos], value, line)
            elif ch in "\"'":
                self.pos += 1
                while self.pos < n and text[self.pos] != ch and text[self.pos] not in _EOLS:
                    self.pos += 1
                if self.pos >= n or text[self.pos] != ch:
                    raise self.error(f"unterminated string: a {ch}-quoted string must end with {ch} "
                                     'on the same line (use """...""" for text spanning lines)')
                self.pos += 1
                yield _Token("string", text[start:self.pos], text[start + 1:self.pos - 1], line)
            else:
                self.pos += 1
                kind = ch if ch in "[],;=" else "char"
                yield _Token(kind, ch, None, line)


class _Parser:
    def __init__(self, text: str, path: str) -> None:
        self.lexer = _Lexer(text, path)
        self.path = path
        self._tokens = self.lexer.tokens()
        self._ahead: _Token | None = None

    def peek(self) -> _Token:
        if self._ahead is None:
            self._ahead = next(self._tokens)
        return self._ahead

    def take(self) -> _Token:
        tok = self.peek()
        self._ahead = None
        return tok

    def error(self, message: str, line: int, key: str | None = None) -> ConfigError:
        return ConfigError(message, path=self.path, line=line, key=key)

    def parse(self) -> ConfFile:
        settings: dict[str, Setting] = {}
        duplicates: list[Duplicate] = []
        while True:
            tok = self.take()
            if tok.kind in ("newline", "comment"):
                continue
            if tok.kind == "eof":
                break
            if tok.kind != "name":
                raise self.error(f"expected a key name (a letter, then letters, digits or '_'), "
                                 f"got {_describe(tok)}", tok.line)
            key = tok.text
            eq = self.take()
            if eq.kind != "=":
                raise self.error(f"expected '=' after key '{key}', got {_describe(eq)}", eq.line, key)
            value = self.value(key, in_list=False)
            end = self.take()
            if end.kind == "comment":
                end = self.take()
            if end.kind not in ("newline", ";", "eof"):
                raise self.error(f"expected the end of the line after the value of '{key}', got "
                                 f"{_describe(end)} (separate statements with a new line or ';')",
                                 end.line, key)
            if key in settings:
                duplicates.append(Duplicate(key, tok.line, settings[key].line))
            else:
                settings[key] = Setting(value, tok.line)
            if end.kind == "eof":
                break
        return ConfFile(self.path, settings, duplicates)

    def skip_newlines(self, key: str, opened: int) -> _Token:
        while True:
            tok = self.peek()
            if tok.kind == "newline":
                self.take()
                continue
            if tok.kind == "comment":
                raise self.error(f"a comment is not allowed inside the list of '{key}' (opened on "
                                 f"line {opened}); libvirt rejects it too, so move the comment "
                                 "above the key", tok.line, key)
            return tok

    def value(self, key: str, *, in_list: bool) -> ConfValue:
        tok = self.take()
        if tok.kind in ("string", "number"):
            assert tok.value is not None
            return tok.value
        if tok.kind == "[":
            return self.list_value(key, tok.line)
        if tok.text in ("+", "-") and tok.kind == "char":
            raise self.error(f"expected digits after '{tok.text}' in the value of '{key}'", tok.line, key)
        where = "in the list of" if in_list else "for"
        raise self.error(f"expected a value {where} '{key}' (a \"string\", a number or a [list]), "
                         f"got {_describe(tok)}", tok.line, key)

    def list_value(self, key: str, opened: int) -> tuple[ConfValue, ...]:
        items: list[ConfValue] = []
        while True:
            tok = self.skip_newlines(key, opened)
            if tok.kind == "]":
                self.take()
                return tuple(items)
            if tok.kind == "eof":
                break
            items.append(self.value(key, in_list=True))
            tok = self.skip_newlines(key, opened)
            if tok.kind == ",":
                self.take()
                continue
            if tok.kind == "]":
                self.take()
                return tuple(items)
            if tok.kind == "eof":
                break
            raise self.error(f"expected ',' or ']' in the list of '{key}' (opened on line {opened}), "
                             f"got {_describe(tok)}", tok.line, key)
        raise self.error(f"the list of '{key}' opened on line {opened} is not closed with ']'",
                         self.peek().line, key)


def format_value(value: ConfValue) -> str:
    """A value as it is written in a config file, for messages: "a", 1, [ "a", "b" ]."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[ " + ", ".join(format_value(v) for v in value) + " ]"
    return str(value)


def parse_conf(text: str, path: str = "<string>") -> ConfFile:
    """Parse configuration text; ``path`` is only used in error messages."""
    return _Parser(text, path).parse()


def read_conf(path: Path | str) -> ConfFile:
    """Read and parse a configuration file. OSError propagates (the caller decides whether a
    missing file means defaults); a file too large or not text raises ConfigError."""
    name = str(path)
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_FILE_SIZE + 1)
    if len(data) > MAX_CONFIG_FILE_SIZE:
        raise ConfigError(f"file is larger than {MAX_CONFIG_FILE_SIZE} bytes", path=name)
    if b"\0" in data:
        raise ConfigError("file contains a NUL byte; it is not a text configuration file", path=name)
    # libvirt treats the file as bytes; surrogateescape keeps non-UTF-8 values intact.
    return parse_conf(data.decode("utf-8", "surrogateescape"), name)
