# SPDX-License-Identifier: LGPL-2.1-or-later
"""Argument syntax shared by the command-line builders: QEMU's keyval options, JSON options, the
shell quoting of domxml-to-native, and the error for what the builder does not support.

Every value that comes from the domain XML reaches QEMU through one of :func:`keyval` (commas doubled
so a value can never start another key) or :func:`json_arg` (a JSON object QEMU parses whole), never
by string concatenation.
"""

from __future__ import annotations

import json
from typing import Any

from pyvirt.errors import NotSupported, codes

__all__ = ["CommandUnsupported", "escape_opt", "keyval", "json_arg", "shell_quote", "pci_addr_props"]


class CommandUnsupported(NotSupported):
    """The definition uses something the command-line builder cannot express (yet)."""

    code = getattr(codes, "VIR_ERR_CONFIG_UNSUPPORTED", NotSupported.code)


def escape_opt(value: str) -> str:
    """QEMU's option-value escaping: a comma is doubled, so it cannot end the value."""
    return value.replace(",", ",,")


def keyval(*parts: str | tuple[str, Any] | None) -> str:
    """A QEMU keyval option: bare leading words as given, ``(key, value)`` pairs with the value
    escaped; ``None`` parts and pairs with a ``None`` value are left out.

    Bare words are the builder's own constants; anything from the XML must go in a pair.
    """
    out: list[str] = []
    for p in parts:
        if p is None:
            continue
        if isinstance(p, tuple):
            key, val = p
            if val is None:
                continue
            if isinstance(val, bool):
                val = "on" if val else "off"
            out.append(f"{key}={escape_opt(str(val))}")
        else:
            out.append(p)
    return ",".join(out)


def json_arg(props: dict[str, Any]) -> str:
    """A JSON option value in libvirt's compact form, ``None`` members left out."""
    return json.dumps({k: v for k, v in props.items() if v is not None}, separators=(",", ":"))


# The characters after which libvirt's virBufferEscapeShell quotes a word.
_SHELL_SPECIAL = set("\r\t\n !\"#$&'()*;<>?[\\]^`{|}~")


def shell_quote(word: str) -> str:
    """Quote one word like libvirt's command printer: bare when safe, else in single quotes."""
    if word and not any(c in _SHELL_SPECIAL for c in word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def pci_addr_props(bus_name: str, slot: int, function: int, multifunction: bool | None) -> dict[str, Any]:
    """The bus/addr members of a PCI device (libvirt's order: bus, multifunction, addr)."""
    addr = f"0x{slot:x}" if function == 0 else f"0x{slot:x}.0x{function:x}"
    props: dict[str, Any] = {"bus": bus_name}
    if multifunction:
        props["multifunction"] = True
    props["addr"] = addr
    return props
