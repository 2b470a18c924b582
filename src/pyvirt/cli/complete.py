# SPDX-License-Identifier: LGPL-2.1-or-later
"""`pyvirsh complete -- WORDS...`: candidates for the last word, one a line, as virsh's hidden
`complete` command prints them for its bash completion (pyvirsh.bash calls it)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyvirt.cli.pyvirsh import Command

#: options whose value is a domain: completed with the names of the defined and running domains
_DOMAIN_OPTIONS = {"domain"}


def complete(commands: Mapping[str, Command], words: Sequence[str], *, hidden: Collection[str] = (),
             uri: str | None = None) -> list[str]:
    if not words:
        words = [""]
    if len(words) == 1:
        return [n for n in commands if n.startswith(words[0]) and n not in hidden]
    command = commands.get(words[0])
    if command is None:
        return []
    current, before = words[-1], words[1:-1]
    by_name = {o.name: o for o in command.opts}
    seen: set[str] = set()
    positional_used = 0
    expecting: str | None = None
    for word in before:
        if expecting is not None:
            expecting = None
            continue
        if word.startswith("--"):
            name = word[2:].partition("=")[0]
            seen.add(name)
            opt = by_name.get(name)
            if opt is not None and opt.kind not in ("bool", "argv") and "=" not in word:
                expecting = name
        else:
            positional_used += 1
    if expecting is not None:
        return _values(expecting, current, uri)
    unseen = [o for o in command.opts if o.name not in seen or o.kind == "argv"]
    if current.startswith("-") or not current:
        return [f"--{o.name}" for o in unseen if f"--{o.name}".startswith(current)]
    # a bare word fills the next positional option, as the parser does
    positional = [o for o in unseen if o.kind != "bool" and o.positional]
    return _values(positional[0].name, current, uri) if positional else []


def _values(option: str, prefix: str, uri: str | None) -> list[str]:
    if option not in _DOMAIN_OPTIONS:
        return []
    from pyvirt.connection import openReadOnly
    from pyvirt.errors import PyvirtError

    try:
        conn: Any = openReadOnly(uri)
    except PyvirtError:
        return []
    try:
        return sorted(d.name() for d in conn.listAllDomains(0) if d.name().startswith(prefix))
    finally:
        conn.close()
