# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt's AppArmor profiles through Debian's real ``apparmor_parser``.

The kernel here has no AppArmor, so profiles are compiled, not loaded: ``-Q -K -T`` builds the whole
policy (every include, every rule turned into the matching automaton) and loads nothing, so any
syntax error is caught. To check that an escaped path matches only itself, the automaton the
parser builds for a one-rule profile is dumped (``-D dfa-states``) and run on candidate paths
here: the literal path must be accepted and near misses (what the unescaped pattern would have
matched) refused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pyvirt.cli import aa_helper
from pyvirt.security.apparmor import (
    AppArmorDriver,
    ParserLoader,
    ProfileSet,
    RuntimePath,
    file_rules,
)
from pyvirt.security.resources import DomainSecurityContext, Resource, ResourceKind

PARSER = shutil.which("apparmor_parser") or "/usr/sbin/apparmor_parser"
pytestmark = pytest.mark.skipif(not os.path.exists(PARSER), reason="apparmor_parser is not installed "
                                                                   "(Debian package apparmor)")
UUID = "0f0e0d0c-0b0a-4909-8807-060504030201"


# --- the parser's automaton -------------------------------------------------------------------------

_STATE = re.compile(r"^\{(\d+)\} perms: (.*)$")
_ACCEPT = re.compile(r"^\{(\d+)\} \(0x ?([0-9a-f]+)")
_CHAR = re.compile(r"^    (?:(\\?.) )?0x([0-9a-f]+) -> \{(\d+)\}")  # bytes >= 0x80: no char
_CLASS = re.compile(r"^    \[(\^?)(.*)\] -> \{(\d+)\}")


def _class_bytes(text: str) -> set[int]:
    """The bytes of a class body as the parser prints it (``\\x0``, ``\\\\``, ranges ``a-z``)."""
    out: list[int] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1:i + 2] == "x":
            m = re.match(r"\\x([0-9a-fA-F]{1,2})", text[i:])
            assert m
            out.append(int(m.group(1), 16))
            i += len(m.group(0))
        elif text[i] == "\\":
            out.append(ord(text[i + 1]))
            i += 2
        elif text[i] == "-" and out and i + 1 < len(text):
            hi = ord(text[i + 1])
            out.extend(range(out[-1] + 1, hi + 1))
            i += 2
        else:
            out.append(ord(text[i]))
            i += 1
    return set(out)


class Dfa:
    """The file-rule automaton of a compiled profile, from ``apparmor_parser -D dfa-states``."""

    def __init__(self, dump: str) -> None:
        self.edges: dict[int, dict[int, int]] = {}
        self.default: dict[int, tuple[set[int], int]] = {}
        self.accepting: set[int] = set()
        state = None
        for line in dump.splitlines():
            if m := _ACCEPT.match(line):  # the header lists the accepting states and their perms
                if int(m.group(2), 16):
                    self.accepting.add(int(m.group(1)))
            elif m := _STATE.match(line):
                state = int(m.group(1))
                self.edges.setdefault(state, {})
                if m.group(2).strip() != "none":
                    self.accepting.add(state)
            elif state is not None and (m := _CHAR.match(line)):
                self.edges[state][int(m.group(2), 16)] = int(m.group(3))
            elif state is not None and (m := _CLASS.match(line)):
                chars, target = _class_bytes(m.group(2)), int(m.group(3))
                if m.group(1):
                    self.default[state] = (chars, target)
                else:
                    for c in chars:
                        self.edges[state][c] = target
        assert self.edges, f"no automaton in the dump:\n{dump}"

    def matches(self, path: str) -> bool:
        state = 1
        for byte in path.encode():
            nxt = self.edges.get(state, {}).get(byte)
            if nxt is None:
                excluded, target = self.default.get(state, (set(range(256)), 0))
                if byte in excluded:
                    return False
                nxt = target
            state = nxt
        return state in self.accepting


def _compile(profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PARSER, "-Q", "-K", "-T", *extra, str(profile)], capture_output=True,
                          text=True, check=False)


def _dfa(tmp_path: Path, rules: list[str]) -> Dfa:
    profile = tmp_path / "one-rule"
    profile.write_text("profile t {\n" + "".join(r + "\n" for r in rules) + "}\n")
    res = _compile(profile, "-D", "dfa-states")
    assert res.returncode == 0, res.stderr
    return Dfa(res.stderr + res.stdout)


def test_the_automaton_reader_is_right_about_a_real_glob(tmp_path: Path) -> None:
    # the reader itself, on a rule whose language is known: unescaped, '?' and '*' are patterns
    dfa = _dfa(tmp_path, ['  "/img/a?b*" r,'])
    assert dfa.matches("/img/aXb") and dfa.matches("/img/a-bcdef")
    assert not dfa.matches("/img/ab") and not dfa.matches("/img/a/b") and not dfa.matches("/img/x")


HOSTILE = [
    "/img/a*b.qcow2",
    "/img/q?estion",
    "/img/[abc]",
    "/img/{a,b}",
    "/img/^caret",
    "/img/with space/disk.img",
    '/img/quo"te',
    "/img/back\\slash",
    "/img/@{HOME}/x",
    "/img/**",
    "/img/comma, /etc/shadow rw",
    "/img/é-ü",
    "/img/#hash",
]


@pytest.mark.parametrize("path", HOSTILE)
def test_an_escaped_path_matches_itself_and_nothing_else(tmp_path: Path, path: str) -> None:
    [rule] = file_rules([Resource(path)])
    dfa = _dfa(tmp_path, [rule])
    assert dfa.matches(path)
    near = {path.replace(c, r, 1) for c in "*?[]{}^ \"\\@,#é" for r in ("x", "", "/")
            if c in path}
    near |= {path + "x", path[:-1], path.replace("*", "a/b"), path.replace("**", "deep/er"),
             "/img/a", "/img/b", "/img/HOME/x", "/etc/shadow", "/img/comma"}
    for other in sorted(near - {path}):
        assert not dfa.matches(other), f"the rule for {path!r} also matches {other!r}"


def test_every_generated_profile_compiles(tmp_path: Path) -> None:
    d = tmp_path / "profiles"
    loader = ParserLoader(compile_only=True)
    drv = AppArmorDriver(ProfileSet(d), loader)
    kinds = list(ResourceKind)
    resources = [Resource(f"/img/{k.value}/{name}", k, readonly=(i % 2 == 0), shared=(i % 3 == 0))
                 for i, (k, name) in enumerate(zip(kinds, HOSTILE * 2, strict=False))]
    ctx = DomainSecurityContext("all", UUID, 0, 0, (), tuple(resources))
    runtime = [RuntimePath("/run/pyvirt/qemu/all.pid"), RuntimePath("/run/pyvirt/qemu/all.monitor"),
               RuntimePath("/var/lib/pyvirt/qemu/domain-1-all", "rwk", tree=True),
               RuntimePath("/usr/bin/qemu-system-x86_64", "rm")]
    drv.gen_label(ctx, runtime=runtime)
    drv.set_all(ctx)  # compiles, else raises
    profile = d / f"libvirt-{UUID}"
    for hot in HOSTILE[:4]:
        drv.set_image(ctx, Resource("/hot" + hot))
    res = _compile(profile)
    assert res.returncode == 0, res.stderr
    # what was compiled is what the driver wrote: a broken rule would have failed above
    text = (d / f"libvirt-{UUID}.files").read_text()
    assert r'"/hot/img/a\*b.qcow2" rwk,' in text and '"/var/lib/pyvirt/qemu/domain-1-all/**" rwk,' in text
    assert drv.restore_all(ctx) == []


def test_a_broken_template_is_caught_by_the_parser(tmp_path: Path) -> None:
    (tmp_path / "TEMPLATE.qemu").write_text("profile @PROFILE@ {\n  #include \"@FILES@\"\n  /x rwq,\n}\n")
    drv = AppArmorDriver(ProfileSet(tmp_path), ParserLoader(compile_only=True))
    ctx = DomainSecurityContext("t", UUID, 0, 0, (), (Resource("/img/d.img"),))
    drv.gen_label(ctx)
    from pyvirt.errors import OperationFailed

    with pytest.raises(OperationFailed, match="apparmor_parser refused the profile"):
        drv.set_all(ctx)
    assert not (tmp_path / f"libvirt-{UUID}").exists()  # rolled back


def test_the_helper_writes_what_the_parser_accepts(tmp_path: Path) -> None:
    disks = "".join(f"<disk type='file' device='disk'><source file='{p.replace(chr(34), '&quot;')}'/>"
                    f"<target dev='vd{chr(97 + i)}'/></disk>" for i, p in enumerate(HOSTILE))
    xml = tmp_path / "dom.xml"
    xml.write_text(f"<domain type='qemu'><name>h</name><uuid>{UUID}</uuid><memory>65536</memory>"
                   "<os><type arch='x86_64'>hvm</type></os>"
                   f"<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{disks}</devices></domain>")
    d = tmp_path / "profiles"
    assert aa_helper.main(["-d", str(d), "-c", str(xml)]) == 0
    res = _compile(d / f"libvirt-{UUID}", "-D", "rule-exprs")
    assert res.returncode == 0, res.stderr
    for p in HOSTILE:
        assert file_rules([Resource(p)])[0] in (d / f"libvirt-{UUID}.files").read_text()
