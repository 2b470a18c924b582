# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyvirt.conf.instance import InstanceLock, embed_paths, session_paths, system_paths
from pyvirt.errors import OperationFailed, OperationInvalid

EMBED_TREE = ["cache/qemu", "etc/pki/qemu", "etc/qemu", "lib/qemu", "lib/swtpm", "log/qemu",
              "log/swtpm", "run/qemu", "run/swtpm"]


def test_embed_tree_is_libvirts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    paths = embed_paths(root)
    paths.create()
    made = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())
    leaves = [d for d in made if not any(o.startswith(d + "/") for o in made)]
    assert leaves == EMBED_TREE
    assert paths.qemu_conf == root / "etc" / "qemu.conf"
    for rel in EMBED_TREE:
        assert stat.S_IMODE((root / rel).stat().st_mode) == 0o700, rel


def test_create_keeps_existing_modes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "log" / "qemu").mkdir(parents=True)
    (root / "log" / "qemu").chmod(0o751)
    embed_paths(root).create()
    assert stat.S_IMODE((root / "log" / "qemu").stat().st_mode) == 0o751


def test_create_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "run" / "qemu").write_text("not a dir")
    with pytest.raises(OperationFailed, match=r"run/qemu"):
        embed_paths(root).create()


def test_system_paths_never_touch_libvirt() -> None:
    paths = system_paths({})
    for directory in paths.directories():
        assert "pyvirt" in directory.parts, directory
        assert "libvirt" not in directory.parts, directory
    assert paths.qemu_conf == Path("/etc/pyvirt/qemu.conf")
    assert paths.run_dir == Path("/run/pyvirt/qemu")


def test_system_prefix(tmp_path: Path) -> None:
    paths = system_paths({"PYVIRT_PREFIX": str(tmp_path)})
    for directory in paths.directories():
        assert directory.is_relative_to(tmp_path)


def test_session_follows_xdg(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_RUNTIME_DIR": str(tmp_path / "rt")}
    paths = session_paths(env)
    assert paths.qemu_conf == tmp_path / "cfg" / "pyvirt" / "qemu.conf"
    assert paths.domain_config_dir == tmp_path / "cfg" / "pyvirt" / "qemu"
    assert paths.cache_dir.is_relative_to(tmp_path / "cache")
    assert paths.run_dir.is_relative_to(tmp_path / "rt")
    no_runtime = session_paths({"HOME": str(tmp_path / "home")})
    assert no_runtime.run_dir.is_relative_to(tmp_path / "home" / ".cache")


def test_monitor_socket_uses_short_name(tmp_path: Path) -> None:
    paths = embed_paths(tmp_path)
    sock = paths.monitor_socket(7, "a-very-long-domain-name-indeed")
    assert sock == tmp_path / "lib/qemu/domain-7-a-very-long-domain-n/monitor.sock"


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pyvirt.conf.instance import InstanceLock, embed_paths
    paths = embed_paths(Path(sys.argv[1]))
    paths.create()
    lock = InstanceLock(paths)
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()
""")


def test_second_process_gets_pid_of_holder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        lock = InstanceLock(embed_paths(root))
        with pytest.raises(OperationInvalid, match=rf"in use by pid {holder.pid}\b"):
            lock.acquire()
        assert not lock.held
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    # The holder is gone: its lock went with it, even though it never released it by hand.
    lock = InstanceLock(embed_paths(root))
    lock.acquire()
    assert embed_paths(root).pid_file.read_text() == f"{os.getpid()}\n"
    lock.release()
    assert embed_paths(root).pid_file.read_text() == ""
