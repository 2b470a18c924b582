# SPDX-License-Identifier: LGPL-2.1-or-later
"""A command's options in virsh's grammar, and their parsing with virsh's error texts.

virsh (libvirt's tools/vsh.c) reads `--name value`, `--name=value` and bare words; a bare word fills
the next option of the command that takes a value and has not been given yet, in declared order,
and an ``argv`` option swallows every word left. Mistakes stop the run before it connects, with
one `error: ...` line each and exit status 1 (no trailing blank line: no command ran).
Kept free of argparse: parsing by hand is part of pyvirsh's start-up budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

    Kind = Literal["bool", "string", "number", "argv"]


class Opt:
    """One option of a command (a plain class: a NamedTuple costs start-up time per class)."""

    __slots__ = ("name", "kind", "help", "required", "positional")

    def __init__(self, name: str, kind: Kind, help: str, required: bool = False,
                 positional: bool = True) -> None:
        self.name = name
        self.kind = kind
        self.help = help
        self.required = required
        #: a bare word may fill it (virsh: every option that takes a value, unless flagged otherwise)
        self.positional = positional


class UsageError(Exception):
    """Bad command-line words; each line of the message is printed as one `error: ` line."""


class Args:
    """Parsed options as attributes (dashes become underscores): bools False, strings None and
    argv an empty list when not given."""

    def __init__(self, opts: Sequence[Opt]) -> None:
        for opt in opts:
            setattr(self, attr_name(opt.name), [] if opt.kind == "argv" else
                    False if opt.kind == "bool" else None)
        self.quiet = False

    def __getattr__(self, name: str) -> Any:  # only reached for a name never set; for mypy
        raise AttributeError(name)


def attr_name(option: str) -> str:
    return option.replace("-", "_")


def _value_kind(opt: Opt) -> str:
    return "number" if opt.kind == "number" else "string"


def parse(command: str, opts: Sequence[Opt], words: Sequence[str]) -> Args:
    by_name = {o.name: o for o in opts}
    args = Args(opts)
    seen: set[str] = set()
    data_only = False

    def store(opt: Opt, value: str) -> None:
        if opt.kind == "number":
            try:
                number = int(value, 0)
            except ValueError:
                raise UsageError(f"Numeric value '{value}' for <{opt.name}> option is malformed or "
                                 "out of range") from None
            setattr(args, attr_name(opt.name), number)
        elif opt.kind == "argv":
            getattr(args, attr_name(opt.name)).append(value)
        else:
            setattr(args, attr_name(opt.name), value)

    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not data_only and word == "--":
            data_only = True
            continue
        if not data_only and word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            opt = by_name.get(name)
            if opt is None:
                raise UsageError(f"command '{command}' doesn't support option --{name}")
            if name in seen and opt.kind != "argv":
                raise UsageError(f"option --{name} already seen")
            seen.add(name)
            if opt.kind == "bool":
                if eq:
                    raise UsageError(f"invalid '=' after option --{name}")
                setattr(args, attr_name(name), True)
                continue
            if not eq:
                if i >= len(words):
                    raise UsageError(f"expected syntax: --{name} <{_value_kind(opt)}>")
                value = words[i]
                i += 1
            store(opt, value)
            continue
        target = next((o for o in opts if o.kind != "bool" and o.positional
                       and (o.name not in seen or o.kind == "argv")), None)
        if target is None:
            raise UsageError(f"unexpected data '{word}'")
        seen.add(target.name)
        store(target, word)
    missing = [o for o in opts if o.required and o.name not in seen]
    if missing:
        raise UsageError("\n".join(f"command '{command}' requires <{o.name}> option" for o in missing))
    return args


def synopsis(command: str, opts: Sequence[Opt]) -> str:
    parts = [command]
    for o in opts:
        if o.kind == "bool":
            parts.append(f"[--{o.name}]")
        elif o.kind == "argv":
            parts.append(f"{{[--{o.name}] <{o.name}>}}..." if o.required else f"[<{o.name}>]...")
        elif o.required:
            parts.append(f"<{o.name}>" if o.positional else f"--{o.name} <{_value_kind(o)}>")
        else:
            parts.append(f"[--{o.name} <{_value_kind(o)}>]")
    return " ".join(parts)


def help_text(command: str, summary: str, opts: Sequence[Opt]) -> str:
    """virsh's `help COMMAND` layout: NAME, SYNOPSIS and OPTIONS sections."""
    lines = ["  NAME", f"    {command} - {summary}", "", "  SYNOPSIS", f"    {synopsis(command, opts)}", ""]
    if opts:
        lines.append("  OPTIONS")
        for o in opts:
            if o.kind == "bool":
                left = f"--{o.name}"
            elif o.required and o.positional:
                left = f"[--{o.name}] <{_value_kind(o)}>"
            else:
                left = f"--{o.name} <{_value_kind(o)}>"
            lines.append(f"    {left:<15}  {o.help}")
        lines.append("")
    return "\n".join(lines) + "\n"
