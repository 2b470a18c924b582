# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's interactive and storage-touching commands, as separate processes: edit, undefine with
storage options, console on a real pty, completion (the hidden command and the bash script), help
and event. QEMU runs paused where one is needed, and is killed by the `root` fixture."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lifecycle_support import BOOT_TIMEOUT, domain_xml, uri_of

from pyvirt.testing import guest as tg  # noqa: E402

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
BASH_COMPLETION = Path(__file__).resolve().parents[2] / "src" / "pyvirt" / "cli" / "pyvirsh.bash"
UUID = "0f3e9a52-7c1d-4b2a-9e6f-5d4c3b2a1f01"


def run(uri: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "PYVIRT_DEFAULT_URI"}
    full.update(env or {})
    return subprocess.run([PYVIRSH, "-c", uri, *args], capture_output=True, text=True, env=full,
                          timeout=120, stdin=subprocess.DEVNULL)


def xml(name: str, image: Path | None = None) -> str:
    disk = (f"<disk type='file' device='disk'><source file='{image}'/><target dev='vda' bus='virtio'/>"
            "</disk>") if image else ""
    return (f"<domain type='qemu'><name>{name}</name><uuid>{UUID}</uuid><memory unit='MiB'>64</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>{disk}<serial type='pty'/>"
            "</devices></domain>\n")


def define(uri: str, tmp: Path, text: str) -> None:
    path = tmp / "dom.xml"
    path.write_text(text)
    assert run(uri, "define", str(path)).returncode == 0


def editor(tmp: Path, name: str, script: str) -> str:
    path = tmp / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


def test_edit(root: Path, tmp_path: Path) -> None:
    uri = uri_of(root)
    define(uri, tmp_path, xml("vm"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    before = run(uri, "dumpxml", "--inactive", "vm").stdout
    env = {"TMPDIR": str(scratch), "VISUAL": "", "EDITOR": editor(tmp_path, "same", "true")}
    p = run(uri, "edit", "vm", env=env)
    assert (p.returncode, p.stdout, p.stderr) == (0, "Domain 'vm' XML configuration not changed.\n\n", "")
    # VISUAL wins over EDITOR, as in virsh; the editor gets the file as its last argument
    env["VISUAL"] = editor(tmp_path, "more", "sed -i 's/>65536</>131072</' \"$1\"")
    p = run(uri, "edit", "vm", env=env)
    assert (p.returncode, p.stdout, p.stderr) == (0, "Domain 'vm' XML configuration edited.\n\n", "")
    assert "<memory unit='KiB'>131072</memory>" in run(uri, "dumpxml", "vm").stdout
    edited = run(uri, "dumpxml", "--inactive", "vm").stdout
    assert edited != before
    # a broken edit without a terminal to ask on: an error, and the definition stays as it was
    for name, script in (("broken", "echo '<domain><bogus' > \"$1\""),
                         ("unknown", "sed -i 's/<devices>/<devices><frobnicator\\/>/' \"$1\""),
                         ("renamed", "sed -i 's/<name>vm</<name>other</' \"$1\"")):
        env["VISUAL"] = editor(tmp_path, name, script)
        p = run(uri, "edit", "vm", env=env)
        assert p.returncode == 1, name
        assert p.stderr.startswith("error: ") and "definition is unchanged" in p.stderr, p.stderr
        assert run(uri, "dumpxml", "--inactive", "vm").stdout == edited, name
        assert run(uri, "list", "--all", "--name").stdout == "vm\n\n"
    # a failing editor changes nothing either
    env["VISUAL"] = editor(tmp_path, "fails", "exit 3")
    p = run(uri, "edit", "vm", env=env)
    assert p.returncode == 1 and "status 3" in p.stderr
    assert list(scratch.iterdir()) == []  # no copy (with its secrets) left behind
    assert run(uri, "edit", "nosuch", env=env).stderr == "error: failed to get domain 'nosuch'\n"


def test_undefine_never_deletes_images(root: Path, tmp_path: Path) -> None:
    uri = uri_of(root)
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 4096)
    define(uri, tmp_path, xml("vm", image))
    p = run(uri, "undefine", "vm", "--storage", "vdz")
    assert (p.returncode, p.stderr) == (1, "error: Volume 'vdz' was not found in domain's definition.\n")
    p = run(uri, "undefine", "vm", "--nvram", "--keep-nvram")
    assert (p.returncode, p.stderr) == (1, "error: Options --nvram and --keep-nvram are mutually exclusive\n")
    p = run(uri, "undefine", "vm", "--delete-storage-volume-snapshots")
    assert p.returncode == 1 and "requires --remove-all-storage" in p.stderr
    assert run(uri, "list", "--all", "--name").stdout == "vm\n\n"
    # running: refused before anything changes
    assert run(uri, "start", "--paused", "vm").returncode == 0
    try:
        p = run(uri, "undefine", "vm", "--remove-all-storage")
        assert (p.returncode, p.stderr) == (1, "error: Storage volume deletion is supported only on "
                                               "stopped domains\n")
    finally:
        assert run(uri, "destroy", "vm").returncode == 0
    # stopped: undefined, the image left in place and named (pyvirt has no storage pools)
    p = run(uri, "undefine", "vm", "--remove-all-storage", "--nvram")
    assert (p.returncode, p.stdout) == (0, "Domain 'vm' has been undefined\n\n")
    assert p.stderr == (f"error: Storage volume 'vda'({image}) is not managed by pyvirt. "
                        "Remove it manually.\n")
    assert image.read_bytes() == b"\0" * 4096
    assert run(uri, "list", "--all", "--name").stdout == "\n"


class Session:
    """pyvirsh console on its own pseudo-terminal, as a user at a terminal runs it."""

    def __init__(self, uri: str, *args: str) -> None:
        self.master, slave = os.openpty()
        env = {k: v for k, v in os.environ.items() if k != "PYVIRT_DEFAULT_URI"}
        self.proc = subprocess.Popen([PYVIRSH, "-c", uri, "console", *args], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def expect(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen in {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"{text!r} not seen before the end: {self.seen!r}"
                self.seen += chunk

    def finish(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            os.close(self.master)


def test_console(root: Path, tmp_path: Path) -> None:
    uri = uri_of(root)
    define(uri, tmp_path, xml("vm"))
    first = Session(uri, "vm")
    first.expect(b"The domain is not running")
    assert first.finish() == 1
    p = run(uri, "console", "vm")  # stdin is not a terminal
    assert p.stderr == "error: The domain is not running\n"
    assert run(uri, "start", "--paused", "vm").returncode == 0
    try:
        p = run(uri, "console", "vm")
        assert (p.returncode, p.stderr) == (1, "error: Cannot run interactive console without a "
                                               "controlling TTY\n")
        first = Session(uri, "vm")
        first.expect(b"Connected to domain 'vm'\r\nEscape character is ^] (Ctrl + ])\r\n")
        # the embedded driver belongs to the session's process meanwhile (as libvirt's does)
        second = Session(uri, "vm")
        second.expect(b"in use by pid")
        assert second.finish() == 1
        os.write(first.master, b"\x1d")  # Ctrl-]
        assert first.finish() == 0
        forced = Session(uri, "vm", "--force")  # nothing to take over here: plainly connected
        forced.expect(b"Connected to domain 'vm'")
        os.write(forced.master, b"abc\x1d")
        assert forced.finish() == 0
        assert run(uri, "domstate", "vm").stdout == "paused\n\n"  # detaching leaves the guest alone
        p = run(uri, "console", "vm", "--devname", "nosuch")
        assert p.returncode == 1
    finally:
        run(uri, "destroy", "vm")


@pytest.mark.slow
def test_start_console_with_the_real_guest(root: Path, guest: tg.Guest, tmp_path: Path) -> None:
    """start --console shows the guest booting, passes keys to its shell, and Ctrl-] leaves it
    running."""
    uri = uri_of(root)
    text = domain_xml("g", guest, tmp_path / "unused.log").replace(
        f"<serial type='file'><source path='{tmp_path / 'unused.log'}'/></serial>", "<serial type='pty'/>")
    define(uri, tmp_path, text)
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if k != "PYVIRT_DEFAULT_URI"}
    proc = subprocess.Popen([PYVIRSH, "-c", uri, "start", "g", "--console"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    session = Session.__new__(Session)
    session.master, session.proc, session.seen = master, proc, b""
    try:
        session.expect(b"Domain 'g' started\r\n")
        session.expect(b"Connected to domain 'g'")
        session.expect(tg.READY_MARKER.encode(), BOOT_TIMEOUT)
        session.expect(tg.PROMPT.encode(), BOOT_TIMEOUT)
        os.write(master, b"echo pyvirsh-$((6*7))\r")
        session.expect(b"pyvirsh-42", 30)
        os.write(master, b"\x1d")
        assert session.finish() == 0
        assert run(uri, "domstate", "g").stdout == "running\n\n"
    finally:
        run(uri, "destroy", "g")


def test_console_without_pty(root: Path, tmp_path: Path) -> None:
    uri = uri_of(root)
    define(uri, tmp_path, xml("vm").replace("<serial type='pty'/>", ""))
    assert run(uri, "start", "--paused", "vm").returncode == 0
    try:
        session = Session(uri, "vm")
        session.expect(b"no console or serial port")
        assert session.finish() == 1
    finally:
        run(uri, "destroy", "vm")


def test_completion(root: Path, tmp_path: Path) -> None:
    uri = uri_of(root)
    define(uri, tmp_path, xml("vm-one"))
    assert run(uri, "complete", "--", "list", "--a").stdout == "--all\n--autostart\n"
    assert run(uri, "complete", "--", "domst").stdout == "domstate\n"
    assert run(uri, "complete", "--", "dominfo", "vm").stdout == "vm-one\n"
    assert run(uri, "complete", "--", "domstate", "vm-one", "--r").stdout == "--reason\n"
    assert "complete" not in run(uri, "help").stdout
    # the bash script, in a real bash, asks pyvirsh with the URI the user typed
    script = (f"source {BASH_COMPLETION}\n"
              f"COMP_WORDS=(pyvirsh -c '{uri}' dominfo vm-); COMP_CWORD=4\n"
              f"_pyvirsh_complete {PYVIRSH}; echo \"${{COMPREPLY[@]}}\"\n"
              "COMP_WORDS=(pyvirsh li); COMP_CWORD=1\n"
              f"_pyvirsh_complete {PYVIRSH}; echo \"${{COMPREPLY[@]}}\"\n")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout == "vm-one\nlist\n", out.stderr


@pytest.mark.oracle
def test_help_and_event_list_match_virsh(root: Path) -> None:
    uri = uri_of(root)
    theirs = subprocess.run(["virsh", "-c", "test:///default", "event", "--list"], capture_output=True,
                            text=True, timeout=60).stdout
    assert run(uri, "event", "--list").stdout == theirs
    for command in ("domstate", "list", "qemu-monitor-command", "undefine"):
        ours = run(uri, "help", command).stdout
        virsh_help = subprocess.run(["virsh", "help", command], capture_output=True, text=True,
                                    timeout=60).stdout
        # the option lines pyvirsh has are virsh's lines, word for word
        for line in ours[ours.index("  OPTIONS"):].splitlines()[1:]:
            if line:
                assert line in virsh_help.splitlines(), (command, line)
    p = run(uri, "event", "--all", "--timeout", "1")
    assert (p.returncode, p.stdout) == (1, "event loop timed out\nevents received: 0\n\n")


def test_event_commands_see_what_happens(root: Path, tmp_path: Path) -> None:
    """`event` and `qemu-monitor-event` print what the domain does meanwhile. The embedded driver
    belongs to one process, so the commands run here (pyvirsh's main in threads) and this process
    drives the domain through the same driver."""
    import io
    import threading

    from pyvirt import connection
    from pyvirt.cli.pyvirsh import main

    uri = uri_of(root)
    define(uri, tmp_path, xml("vm"))
    conn = connection.open(uri)
    try:
        dom = conn.lookupByName("vm")
        dom.createWithFlags(connection.VIR_DOMAIN_START_PAUSED)
        results: dict[str, tuple[int, str, str]] = {}

        def command(key: str, *args: str) -> threading.Thread:
            def body() -> None:
                out, err = io.StringIO(), io.StringIO()
                status = main(["-c", uri, *args], out=out, err=err)
                results[key] = (status, out.getvalue(), err.getvalue())
            thread = threading.Thread(target=body)
            thread.start()
            return thread

        threads = [command("life", "event", "--event", "lifecycle", "--domain", "vm", "--loop",
                           "--timeout", "4"),
                   command("qmp", "qemu-monitor-event", "--event", "resume", "--no-case", "--timeout", "20"),
                   command("once", "event", "--all", "--timeout", "20")]
        time.sleep(1)  # registered meanwhile
        dom.resume()
        dom.suspend()
        for thread in threads:
            thread.join(30)
        status, out, err = results["life"]
        assert (status, err) == (1, "")  # --loop ends by its timeout, as virsh's does
        assert out == ("event 'lifecycle' for domain 'vm': Resumed Unpaused\n"
                       "event 'lifecycle' for domain 'vm': Suspended Paused\n"
                       "event loop timed out\nevents received: 2\n\n")
        status, out, err = results["qmp"]
        assert (status, err) == (0, ""), err
        assert re.fullmatch(r"event RESUME at \d+\.\d{6} for domain 'vm': .*\nevents received: 1\n\n",
                            out), out
        status, out, err = results["once"]
        assert (status, out) == (0, "event 'lifecycle' for domain 'vm': Resumed Unpaused\n"
                                    "events received: 1\n\n")
    finally:
        with contextlib.suppress(Exception):
            conn.lookupByName("vm").destroy()
        conn.close()


def test_interrupting_waits_leaves_the_vm_and_the_root_consistent(root: Path, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) in the middle of pyvirsh's waits: `event --loop` and `qemu-monitor-event
    --loop` end as virsh's do (their count, exit 0), `console` gives the terminal back; the domain
    keeps running unchanged and the root is free for the next command at once."""
    uri = uri_of(root)
    define(uri, tmp_path, xml("vm"))
    assert run(uri, "start", "--paused", "vm").returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "PYVIRT_DEFAULT_URI"}
    for args in (["event", "--loop", "--all"], ["qemu-monitor-event", "--loop"]):
        proc = subprocess.Popen([PYVIRSH, "-c", uri, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(1.5)  # well inside the wait
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert (proc.returncode, out, err) == (0, "events received: 0\n\n", ""), args
        assert run(uri, "domstate", "--reason", "vm").stdout == "paused (user)\n\n"
    session = Session(uri, "vm")
    session.expect(b"Escape character is ^]")
    session.proc.send_signal(signal.SIGINT)
    assert session.finish() in (0, 1)
    assert run(uri, "domstate", "--reason", "vm").stdout == "paused (user)\n\n"
    assert run(uri, "destroy", "vm").returncode == 0
