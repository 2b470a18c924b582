# SPDX-License-Identifier: LGPL-2.1-or-later
"""The command builder piece by piece: escaping of XML values, runtime ids, qemu namespace, printing."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from itertools import pairwise
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_command_golden import CAPS, CONF, build, parse, runtime_for  # noqa: E402

from pyvirt.qemu.capabilities import KvmStatus  # noqa: E402
from pyvirt.qemu.command import (  # noqa: E402
    CommandRuntime,
    CommandUnsupported,
    QemuCommand,
    build_command,
    format_argv_line,
)
from pyvirt.qemu.command_util import escape_opt, keyval, shell_quote  # noqa: E402


def domain(devices: str = "", name: str = "t", extra: str = "", dtype: str = "qemu") -> str:
    return (f"<domain type='{dtype}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
            f"<name>{name}</name><memory>65536</memory><os><type>hvm</type>{extra}</os>"
            f"<devices>{devices}</devices></domain>")


def split_keyval(opt: str) -> list[str]:
    """QEMU's reading of a keyval option: split at single commas, ',,' is a literal comma."""
    parts, cur, i = [], "", 0
    while i < len(opt):
        if opt[i] == ",":
            if opt[i + 1:i + 2] == ",":
                cur += ","
                i += 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += opt[i]
        i += 1
    parts.append(cur)
    return parts


def option(argv: list[str], name: str, contains: str = "") -> str:
    return next(v for o, v in pairwise(argv) if o == name and contains in v)


def jsons(argv: list[str], name: str) -> list[dict[str, object]]:
    return [json.loads(v) for o, v in pairwise(argv) if o == name and v.startswith("{")]


# --- no XML value can add an option -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["a,b=c", "x,file.driver=ssh", "-drive", "/i,,mg,node-name=evil",
                                  '/q"uote}{.img'])
def test_disk_path_stays_one_json_member(path: str) -> None:
    dom = parse(domain(f"<disk type='file'><source file='{path}'/><target dev='vda'/></disk>"))
    argv = build(dom).argv
    files = [b for b in jsons(argv, "-blockdev") if b["driver"] == "file"]
    assert len(files) == 1 and files[0]["filename"] == path
    assert set(files[0]) == {"driver", "filename", "node-name", "auto-read-only", "discard"}


@pytest.mark.parametrize("name", ["a,b", "a,,b", "x,debug-threads=off", "n=,"])
def test_name_commas_are_doubled(name: str) -> None:
    argv = build(parse(domain(name=name))).argv
    assert split_keyval(option(argv, "-name")) == [f"guest={name}", "debug-threads=on"]


@pytest.mark.parametrize("path", ["/tmp/a,b=c", "/x,server=on,wait=off", "-chardev"])
def test_serial_file_path_cannot_add_keys(path: str) -> None:
    dom = parse(domain(f"<serial type='file'><source path='{path}'/></serial>"))
    parts = split_keyval(option(build(dom).argv, "-chardev", "charserial0"))
    assert parts == ["file", "id=charserial0", f"path={path}"]


def test_unix_channel_and_monitor_paths_are_escaped() -> None:
    dom = parse(domain("<channel type='unix'><source mode='bind' path='/s,wait=on'/>"
                       "<target type='virtio' name='org.x,y'/></channel>"))
    rt = dataclasses.replace(runtime_for(dom), monitor_path="/m,x=y/mon.sock")
    argv = build_command(dom, CAPS, CONF, rt).argv
    assert split_keyval(option(argv, "-chardev", "charchannel0")) == [
        "socket", "id=charchannel0", "path=/s,wait=on", "server=on", "wait=off"]
    assert "path=/m,x=y/mon.sock" in split_keyval(option(argv, "-chardev", "charmonitor"))
    port = jsons(argv, "-device")[-2]
    assert port["driver"] == "virtserialport" and port["name"] == "org.x,y"


def test_vnc_listen_and_socket_are_escaped() -> None:
    dom = parse(domain("<graphics type='vnc' port='5901' listen='1.2.3.4,password=off'/>"))
    assert split_keyval(option(build(dom).argv, "-vnc"))[:1] == ["1.2.3.4,password=off:1"]
    dom = parse(domain("<graphics type='vnc' socket='/v,share=x'/>"))
    assert split_keyval(option(build(dom).argv, "-vnc")) == ["vnc=unix:/v,share=x", "audiodev=audio1"]


def test_kernel_paths_and_cmdline_are_whole_arguments() -> None:
    dom = parse(domain(extra="<kernel>-k,x</kernel><initrd>-i</initrd><cmdline>a, -b 'c'</cmdline>"))
    argv = build(dom).argv
    assert argv[argv.index("-kernel") + 1] == "-k,x"
    assert argv[argv.index("-initrd") + 1] == "-i"
    assert argv[argv.index("-append") + 1] == "a, -b 'c'"


def test_keyval_helper() -> None:
    assert escape_opt("a,b,,c") == "a,,b,,,,c"
    assert keyval("socket", ("id", "x,y"), ("server", True), ("wait", False), ("skip", None)) == \
        "socket,id=x,,y,server=on,wait=off"


# --- the qemu namespace -----------------------------------------------------------------------------

def test_qemu_commandline_and_env() -> None:
    ns = ("<qemu:commandline><qemu:arg value='-device'/><qemu:arg value='isa-debugcon'/>"
          "<qemu:env name='FOO' value='a b'/></qemu:commandline>")
    xml = domain().replace("</domain>", ns + "</domain>")
    cmd = build(parse(xml))
    i = cmd.argv.index("isa-debugcon")
    assert cmd.argv[i - 1] == "-device" and cmd.argv[i + 1] == "-sandbox"
    assert cmd.env["FOO"] == "a b" and cmd.env["LC_ALL"] == "C"


def test_qemu_capabilities_del_switches_a_flag_off() -> None:
    disk = "<disk type='file'><source file='/x'/><target dev='vda'/></disk>"
    xml = domain(disk).replace("</domain>", "<qemu:capabilities><qemu:del capability='virtio-blk'/>"
                                            "</qemu:capabilities></domain>")
    with pytest.raises(CommandUnsupported, match="virtio-blk"):
        build(parse(xml))
    build(parse(domain(disk)))


# --- runtime ids and capabilities -------------------------------------------------------------------

def test_monitor_fd_and_tap_fds_from_runtime() -> None:
    dom = parse(domain("<interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>"))
    rt = CommandRuntime(domain_id=7, lib_dir="/l", monitor_fd=3, tap_fds={"net0": [21, 22]})
    argv = build_command(dom, CAPS, CONF, rt).argv
    assert option(argv, "-chardev", "charmonitor") == "socket,id=charmonitor,fd=3,server=on,wait=off"
    assert jsons(argv, "-netdev") == [{"type": "tap", "fds": "21:22", "id": "hostnet0"}]
    with pytest.raises(CommandUnsupported, match="tap"):
        build_command(dom, CAPS, CONF, dataclasses.replace(rt, tap_fds={}))


def test_accel_follows_the_domain_type_alone() -> None:
    # The pure builder states what the domain asks for, as libvirt's domxml-to-native does; that
    # KVM is unusable is the process layer's refusal (test_lifecycle_errors), never a silent TCG.
    dom = parse(domain(dtype="kvm"))
    assert option(build(dom).argv, "-accel") == "kvm"
    kvm_caps = CAPS._replace(kvm=KvmStatus(True, True, "ok"))
    assert option(build_command(dom, kvm_caps, CONF, runtime_for(dom)).argv, "-accel") == "kvm"
    qemu_dom = parse(domain(dtype="qemu"))
    assert option(build_command(qemu_dom, kvm_caps, CONF, runtime_for(qemu_dom)).argv, "-accel") == "tcg"


def test_cdrom_readonly_cache_and_boot_order() -> None:
    dom = parse(domain("<disk type='file' device='cdrom'><driver name='qemu' cache='none'/>"
                       "<source file='/c.iso'/><target dev='hdc'/><boot order='2'/></disk>"
                       "<disk type='file'><driver name='qemu' type='qcow2'/><source file='/d.qcow2'/>"
                       "<target dev='hda'/><boot order='1'/></disk>"))
    argv = build(dom).argv
    fmt = {b["node-name"]: b for b in jsons(argv, "-blockdev") if "file" in b}
    devs = {d["id"]: d for d in jsons(argv, "-device") if "drive" in d}
    cd, hd = devs["ide0-1-0"], devs["ide0-0-0"]
    assert (cd["driver"], cd["bootindex"], cd["write-cache"]) == ("ide-cd", 2, "on")
    assert fmt[str(cd["drive"])]["read-only"] is True
    assert fmt[str(cd["drive"])]["cache"] == {"direct": True, "no-flush": False}
    assert (hd["driver"], hd["bootindex"]) == ("ide-hd", 1)
    assert fmt[str(hd["drive"])]["driver"] == "qcow2" and fmt[str(hd["drive"])]["read-only"] is False


def test_unsupported_device_is_refused_by_name() -> None:
    with pytest.raises(CommandUnsupported, match="<hostdev>"):
        build(parse(domain("<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/>"
                           "<product id='0x2'/></source></hostdev>")))


# --- printing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("word", "quoted"), [("plain-1.2:/x,y=z", "plain-1.2:/x,y=z"), ("", "''"),
                                              ("a b", "'a b'"), ("it's", "'it'\\''s'"),
                                              ('{"a":1}', '\'{"a":1}\''), ("$HOME", "'$HOME'")])
def test_shell_quote(word: str, quoted: str) -> None:
    assert shell_quote(word) == quoted


def test_format_argv_line_round_trips_through_a_shell() -> None:
    cmd = QemuCommand(binary="/usr/bin/qemu", argv=["-name", "guest=it's a,,b", "-x"], env={"A": "1 2"})
    line = format_argv_line(cmd)
    assert line.startswith("A='1 2' /usr/bin/qemu -name ")
    assert shlex.split(line) == ["A=1 2", "/usr/bin/qemu", "-name", "guest=it's a,,b", "-x"]
