# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirt.qemu.queries without QEMU: monitor command parsing, disk sizes from real image files,
interface lookups and the libvirt_qemu module's names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyvirt import _errcodes as codes
from pyvirt.errors import PyvirtError
from pyvirt.qemu import queries
from pyvirt.xml.domain import Domain, parse_domain


def _domain(devices: str) -> Domain:
    return parse_domain(f"<domain type='qemu'><name>q</name><memory>65536</memory>"
                        f"<os><type>hvm</type></os><devices>{devices}</devices></domain>")


# --- QMP passthrough input ------------------------------------------------------------------------

def test_a_qmp_command_with_arguments() -> None:
    assert queries.parse_qmp_command('{"execute": "qom-get", "arguments": {"path": "/machine", '
                                     '"property": "type"}}') == (
        "qom-get", {"path": "/machine", "property": "type"})
    assert queries.parse_qmp_command('{"execute":"query-status"}') == ("query-status", None)


@pytest.mark.parametrize("text, words", [
    ("info status", "cannot parse json"),
    ("[1]", "not an object"),
    ('{"arguments": {}}', '"execute"'),
    ('{"execute": 5}', '"execute"'),
    ('{"execute": "x", "arguments": [1]}', '"arguments" must be a JSON object'),
    ('{"execute": "x", "argumnets": {}}', "unknown member(s) argumnets"),
])
def test_bad_qmp_input_is_refused_clearly(text: str, words: str) -> None:
    with pytest.raises(PyvirtError) as exc:
        queries.parse_qmp_command(text)
    assert exc.value.get_error_code() == codes.VIR_ERR_INTERNAL_ERROR
    assert exc.value.get_error_domain() == codes.VIR_FROM_NONE  # as libvirt's JSON parser error
    assert words in str(exc.value)
    assert "VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP" in str(exc.value)  # says how to send HMP instead


def test_a_callers_id_is_refused_as_libvirt_does() -> None:
    with pytest.raises(PyvirtError, match="Unable to append command 'id' string") as exc:
        queries.parse_qmp_command('{"execute": "query-status", "id": "mine"}')
    assert (exc.value.get_error_code(), exc.value.get_error_domain()) == (codes.VIR_ERR_INTERNAL_ERROR,
                                                                          codes.VIR_FROM_QEMU)


# --- disks --------------------------------------------------------------------------------------

def test_block_info_of_an_inactive_raw_disk(tmp_path: Path) -> None:
    image = tmp_path / "d.raw"
    with open(image, "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.seek(0)
        f.write(b"x" * 65536)  # 64 KiB really allocated
    dom = _domain(f"<disk type='file' device='disk'><source file='{image}'/><target dev='vdb' bus='virtio'/>"
                  "</disk>")
    capacity, allocation, physical = queries.block_info(None, dom, "vdb")
    assert capacity == physical == 8 * 1024 * 1024
    assert 65536 <= allocation < physical
    assert queries.block_info(None, dom, str(image)) == [capacity, allocation, physical]


def test_block_info_of_a_qcow2_disk_gives_its_virtual_size(tmp_path: Path) -> None:
    image = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    dom = _domain(f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                  f"<source file='{image}'/><target dev='vda' bus='virtio'/></disk>")
    capacity, allocation, physical = queries.block_info(None, dom, "vda")
    assert capacity == 1024**3
    assert physical == image.stat().st_size < capacity
    assert allocation > 0


@pytest.mark.parametrize("path", ["vdz", "", "/nonexistent.img"])
def test_block_info_of_an_unknown_disk(tmp_path: Path, path: str) -> None:
    dom = _domain(f"<disk type='file' device='disk'><source file='{tmp_path}/a.raw'/>"
                  "<target dev='vda' bus='virtio'/></disk>")
    with pytest.raises(PyvirtError, match="not assigned to domain") as exc:
        queries.block_info(None, dom, path)
    assert (exc.value.get_error_code(), exc.value.get_error_domain()) == (codes.VIR_ERR_INVALID_ARG,
                                                                          codes.VIR_FROM_QEMU)


def test_block_info_of_an_empty_cdrom() -> None:
    dom = _domain("<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>")
    with pytest.raises(PyvirtError, match="does not currently have a source") as exc:
        queries.block_info(None, dom, "hdc")
    assert exc.value.get_error_code() == codes.VIR_ERR_OPERATION_INVALID


def test_block_info_of_a_missing_image_names_it(tmp_path: Path) -> None:
    dom = _domain(f"<disk type='file' device='disk'><source file='{tmp_path}/gone.raw'/>"
                  "<target dev='vda' bus='virtio'/></disk>")
    with pytest.raises(PyvirtError, match="gone.raw") as exc:
        queries.block_info(None, dom, "vda")
    assert exc.value.get_error_code() == codes.VIR_ERR_SYSTEM_ERROR


# --- interfaces ---------------------------------------------------------------------------------

def test_a_user_mode_interface_has_no_host_side() -> None:
    dom = _domain("<interface type='user'><mac address='52:54:00:00:00:01'/></interface>")
    with pytest.raises(PyvirtError, match="Interface name not provided") as exc:
        queries.interface_stats(dom, "52:54:00:00:00:01")
    assert (exc.value.get_error_code(), exc.value.get_error_domain()) == (codes.VIR_ERR_INTERNAL_ERROR,
                                                                          codes.VIR_FROM_NONE)


@pytest.mark.parametrize("path", ["nosuch0", "", "52:54:00:00:00:02"])
def test_an_unknown_interface(path: str) -> None:
    dom = _domain("<interface type='user'><mac address='52:54:00:00:00:01'/></interface>")
    with pytest.raises(PyvirtError, match="is not a known interface") as exc:
        queries.interface_stats(dom, path)
    assert (exc.value.get_error_code(), exc.value.get_error_domain()) == (codes.VIR_ERR_INVALID_ARG,
                                                                          codes.VIR_FROM_DOMAIN)


def test_interface_counters_by_target_and_mac_case_insensitively() -> None:
    # The host's loopback stands in for a tap: a real device whose counters the kernel keeps.
    dom = _domain("<interface type='ethernet'><mac address='52:54:00:AB:CD:EF'/><target dev='lo'/>"
                  "</interface>")
    by_name = queries.interface_stats(dom, "lo")
    by_mac = queries.interface_stats(dom, "52:54:00:ab:cd:ef")
    assert len(by_name) == len(by_mac) == 8
    assert all(isinstance(v, int) and v >= 0 for v in by_name)


def test_tap_counters_are_seen_from_the_guest(tmp_path: Path) -> None:
    # A sysfs-shaped tree: no tap with distinct rx/tx counters can be made without a guest here.
    stats = tmp_path / "tap0" / "statistics"
    stats.mkdir(parents=True)
    for name, value in (("rx_bytes", 1), ("rx_packets", 2), ("rx_errors", 3), ("rx_dropped", 4),
                        ("tx_bytes", 10), ("tx_packets", 20), ("tx_errors", 30), ("tx_dropped", 40)):
        (stats / name).write_text(f"{value}\n")
    # what the host transmits on the tap, the guest receives
    assert queries.tap_counters("tap0", tmp_path) == (10, 20, 30, 40, 1, 2, 3, 4)
    with pytest.raises(PyvirtError, match="tap1"):
        queries.tap_counters("tap1", tmp_path)


# --- the libvirt_qemu names -----------------------------------------------------------------------

def test_libvirt_qemu_names_and_a_cheap_package_import() -> None:
    from pyvirt import qemu as libvirt_qemu

    assert libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP == 1
    assert callable(libvirt_qemu.qemuMonitorCommand)
    with pytest.raises(AttributeError, match="qemuAgentCommand"):
        libvirt_qemu.qemuAgentCommand  # noqa: B018
    # the driver package itself loads nothing heavy (pyvirsh imports it for every command)
    probe = ("import sys, pyvirt.qemu; print(sorted(m for m in sys.modules "
             "if m.startswith(('pyvirt.qemu.', 'lxml', 'asyncio', 'qemu'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_qemu_attach_is_refused_as_removed() -> None:
    from pyvirt.qemu.libvirt_qemu import qemuAttach

    with pytest.raises(PyvirtError, match="virDomainQemuAttach") as exc:
        qemuAttach(None, 1, 0)  # type: ignore[arg-type]
    assert (exc.value.get_error_code(), exc.value.get_error_domain()) == (codes.VIR_ERR_NO_SUPPORT,
                                                                          codes.VIR_FROM_NONE)
