# SPDX-License-Identifier: LGPL-2.1-or-later
"""Domain statistics through pyvirtd (pyvirt.rpc.procedures_stats, pyvirt.daemon.handlers_stats,
pyvirt.remote_stats): BLOCK_STATS(_FLAGS), INTERFACE_STATS, MEMORY_STATS, GET_BLOCK_INFO,
GET_CPU_STATS, SET_MEMORY_STATS_PERIOD and PM_WAKEUP, driven by Debian's virsh 9.0,
python3-libvirt 9.0, pyvirt's own remote client and pyvirsh.

One test guest (a raw disk, a user-mode NIC, a virtio balloon) runs under this module's pyvirtd and
the same definition under the private libvirtd (tests/libvirtd_oracle.py), each on a disk image of
its own. What a client shows is compared after replacing the figures (they differ between two
guests) with a placeholder: the fields, their order, the layout and the types must be libvirt's.
Errors are compared in libvirt's words (pyvirt may add how to fix it after them).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyvirt import _errcodes as codes
from pyvirt.connection import open as connect
from pyvirt.connection import openReadOnly
from pyvirt.errors import PyvirtError
from pyvirt.testing import guest as tg

from .test_domains import _CLEANUP, python_libvirt
from .testlib import VIRSH, Libvirtd, Pyvirtd, own_pyvirtd

MAC = "52:54:00:5a:7c:01"
_UUID = str(uuid.uuid4())
_OFF_UUID = str(uuid.uuid4())
_VIRSH_ENV = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")
_DISK_SIZE = 16 << 20


def _xml(guest: tg.Guest, name: str, dom_uuid: str, disk: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{dom_uuid}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{guest.kernel}</kernel><initrd>{guest.initrd}</initrd>
    <cmdline>{guest.cmdline}</cmdline></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>
      <target dev='vda' bus='virtio'/></disk>
    <interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>
    <memballoon model='virtio'/>
    <serial type='pty'/>
  </devices>
</domain>
"""


def _disk(directory: Path, name: str) -> Path:
    path = directory / name
    with open(path, "wb") as f:
        f.truncate(_DISK_SIZE)
    return path


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    from lifecycle_support import qemu_workdir

    with qemu_workdir("pst-") as path:
        yield path


@pytest.fixture(scope="module")
def served(guest: tg.Guest, workdir: Path) -> Iterator[Pyvirtd]:
    """This module's pyvirtd running 'st' (and 'stoff', never started)."""
    with own_pyvirtd("pvs-") as daemon:
        with connect(daemon.uri()) as conn:
            conn.defineXML(_xml(guest, "stoff", _OFF_UUID, _disk(workdir, "off-pyvirtd.img")))
            conn.defineXML(_xml(guest, "st", _UUID, _disk(workdir, "pyvirtd.img"))).create()
        yield daemon
        assert daemon.alive(), daemon.stderr()
        assert "Traceback" not in daemon.stderr(), daemon.stderr()
        with contextlib.suppress(PyvirtError), connect(daemon.uri()) as conn:
            conn.lookupByName("st").destroy()


@pytest.fixture(scope="module")
def oracle(libvirtd: Libvirtd, guest: tg.Guest, workdir: Path) -> Iterator[Libvirtd]:
    """The private libvirtd running the same 'st' (and 'stoff')."""
    off = _xml(guest, "stoff", _OFF_UUID, _disk(workdir, "off-libvirtd.img"))
    running = _xml(guest, "st", _UUID, _disk(workdir, "libvirtd.img"))
    python_libvirt(libvirtd.uri(), f"conn.defineXML({off!r})\nconn.defineXML({running!r}).create()\n"
                                   "result = None")
    try:
        yield libvirtd
    finally:
        python_libvirt(libvirtd.uri(), "".join(f"NAME = {n!r}\n{_CLEANUP}" for n in ("st", "stoff")))


def _virsh(uri: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIRSH, "-c", uri, *argv], capture_output=True, text=True,
                          env=_VIRSH_ENV, timeout=60)


def _shape(proc: subprocess.CompletedProcess[str]) -> tuple[int, str, list[str]]:
    """Exit status, output with figures replaced, and error lines in libvirt's words: the first
    line whole, the cause up to its second ':' (what kind of error, not pyvirt's explanation)."""
    errors = [line for line in proc.stderr.splitlines() if line]
    words = errors[:1] + [":".join(line.split(":")[:2]) for line in errors[1:]]
    return proc.returncode, _NUMBER.sub("N", proc.stdout), words


# ---- (a) virsh against pyvirtd and against libvirtd ---------------------------------------------

@pytest.mark.parametrize("argv", [
    ("domblkstat", "st", "vda"),
    ("domblkstat", "st"),
    ("domblkstat", "st", "vda", "--human"),
    ("domblkinfo", "st", "vda"),
    ("domblkinfo", "st", "--all"),
    ("domblkinfo", "st", "vda", "--human"),
    ("cpu-stats", "st", "--total"),
    ("cpu-stats", "st"),  # per host CPU: refused by both (pyvirt keeps none, libvirtd's cgroup v2)
    ("domifstat", "st", MAC),  # user-mode NIC: no host device, no counters
    ("domblkstat", "stoff", "vda"),
    ("dommemstat", "stoff"),
    ("cpu-stats", "stoff", "--total"),
], ids=lambda a: "-".join(a).replace("--", ""))
def test_virsh_as_with_libvirtd(served: Pyvirtd, oracle: Libvirtd, argv: tuple[str, ...]) -> None:
    ours, theirs = _virsh(served.uri(), *argv), _virsh(oracle.uri(), *argv)
    assert _shape(ours) == _shape(theirs), (ours, theirs)


@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
def test_virsh_read_only_socket(served: Pyvirtd, oracle: Libvirtd, readonly: bool) -> None:
    """The statistics are allowed on the read-only socket, the period is not -- as in libvirtd."""
    for argv in (("dommemstat", "st"), ("domblkstat", "st", "vda"), ("domblkinfo", "st", "vda"),
                 ("cpu-stats", "st", "--total"), ("dommemstat", "st", "--period", "0", "--live")):
        ours = _virsh(served.uri(readonly=readonly), *argv)
        theirs = _virsh(oracle.uri(readonly=readonly), *argv)
        if argv == ("dommemstat", "st"):  # which figures the guest reported yet is up to it
            assert ours.stdout.startswith("actual ") and theirs.stdout.startswith("actual ")
            ours.stdout = theirs.stdout = ""
        assert _shape(ours) == _shape(theirs), (argv, ours, theirs)
        assert (ours.returncode == 0) == (not readonly or argv[-1] != "--live"), ours


def test_virsh_dommemstat_and_period(served: Pyvirtd, oracle: Libvirtd) -> None:
    """dommemstat --period over RPC makes the guest's balloon driver report; once both guests did
    (when is up to each guest), virsh prints libvirt's keys in libvirt's order."""
    shapes = []
    for uri in (served.uri(), oracle.uri()):
        assert _virsh(uri, "dommemstat", "st", "--period", "1", "--live").returncode == 0
        deadline = time.monotonic() + 90
        while "unused" not in (out := _virsh(uri, "dommemstat", "st")).stdout:
            assert time.monotonic() < deadline, f"the guest never reported: {out}"
            time.sleep(1)
        shapes.append(_shape(out))
    assert shapes[0] == shapes[1]
    keys = [line.split()[0] for line in shapes[0][1].splitlines() if line]
    assert keys[0] == "actual" and keys[-1] == "rss" and "unused" in keys, keys


def test_virsh_domstats_is_not_served(served: Pyvirtd) -> None:
    """CONNECT_GET_ALL_DOMAIN_STATS (virsh domstats) has no API in pyvirt to call: the daemon
    refuses it as unsupported and keeps the connection."""
    out = _virsh(served.uri(), "domstats", "st")
    assert out.returncode == 1
    assert "this function is not supported by the connection driver" in out.stderr
    assert _virsh(served.uri(), "domblkstat", "st", "vda").returncode == 0


# ---- (b) python3-libvirt ------------------------------------------------------------------------

_PY_CALLS = """
def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [type(v).__name__] + [shape(x) for x in v]
    return type(v).__name__
d = conn.lookupByName("st")
off = conn.lookupByName("stoff")
result = {}
for name, call in [
        ("blockStats", lambda: d.blockStats("vda")),
        ("blockStatsFlags", lambda: d.blockStatsFlags("vda")),
        ("blockStatsAll", lambda: d.blockStatsFlags("")),
        ("memoryStats", lambda: {k: v for k, v in d.memoryStats().items() if k in ("actual", "rss")}),
        ("blockInfo", lambda: d.blockInfo("vda")),
        ("blockInfoPath", lambda: d.blockInfo(DISK)),
        ("cpuTotal", lambda: d.getCPUStats(True)),
        ("cpuPerHost", lambda: d.getCPUStats(False)),
        ("interfaceStats", lambda: d.interfaceStats(MAC)),
        ("blockStatsNoDisk", lambda: d.blockStats("vdz")),
        ("blockInfoNoDisk", lambda: d.blockInfo("vdz")),
        ("offMemory", lambda: off.memoryStats()),
        ("offBlockStats", lambda: off.blockStats("vda")),
        ("offCpu", lambda: off.getCPUStats(True)),
        ("offWakeup", lambda: off.pMWakeup()),
        ("period", lambda: d.setMemoryStatsPeriod(0, libvirt.VIR_DOMAIN_AFFECT_LIVE)),
        ("periodNegative", lambda: d.setMemoryStatsPeriod(-1)),
        ("periodBadFlags", lambda: d.setMemoryStatsPeriod(0, 8)),
        ("cpuBadFlags", lambda: d.getCPUStats(True, 1)),
        ("wakeupBadFlags", lambda: d.pMWakeup(1)),
]:
    try:
        result[name] = ["ok", shape(call())]
    except libvirt.libvirtError as e:
        result[name] = ["error", e.get_error_code(), e.get_error_domain(),
                        e.get_error_message().split("; ")[0]]
"""


def _py_shapes(uri: str, disk: str, *, readonly: bool = False) -> dict[str, Any]:
    script = f"DISK = {disk!r}\nMAC = {MAC!r}\n" + _PY_CALLS
    if readonly:
        script = "conn.close()\nconn = libvirt.openReadOnly(uri)\n" + script
    return python_libvirt(uri, script)


def _assert_same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Same outcomes and shapes; pyvirt's error texts may go on past libvirt's (': ' and details).
    Per host CPU figures are refused by both for different causes (pyvirt keeps none, libvirtd's
    cgroup v2 backend has none): the same code, a cause of each one's own."""
    assert set(ours) == set(theirs)
    for name, a in ours.items():
        b = theirs[name]
        if a[0] == "error" and b[0] == "error":
            assert a[1] == b[1], (name, a, b)
            if name != "cpuPerHost":
                assert a[2] == b[2] and a[3].startswith(b[3]), (name, a, b)
        else:
            assert a == b, (name, a, b)


@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
def test_python_libvirt_as_with_libvirtd(served: Pyvirtd, oracle: Libvirtd, workdir: Path,
                                         readonly: bool) -> None:
    ours = _py_shapes(served.uri(readonly=readonly), str(workdir / "pyvirtd.img"),
                      readonly=readonly)
    theirs = _py_shapes(oracle.uri(readonly=readonly), str(workdir / "libvirtd.img"),
                        readonly=readonly)
    _assert_same(ours, theirs)
    # what the comparison rests on: real figures came back, and the ro socket refused the change
    assert ours["blockStatsFlags"][0] == "ok" and "rd_total_times" in ours["blockStatsFlags"][1]
    assert ours["cpuTotal"] == ["ok", ["list", {"cpu_time": "int", "user_time": "int",
                                                "system_time": "int"}]]
    assert ours["period"][0] == ("error" if readonly else "ok")
    if readonly:
        assert ours["period"][1] == codes.VIR_ERR_OPERATION_DENIED


# ---- (c) pyvirt's client and the in-process API --------------------------------------------------

def _outcome(call: Any) -> Any:
    try:
        return ["ok", call()]
    except PyvirtError as exc:
        return ["error", exc.code, exc.domain, exc.message.split(":")[0]]


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: type(v).__name__ for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [type(value).__name__] + [_types(v) for v in value]
    return type(value).__name__


def _client_calls(dom: Any) -> dict[str, Any]:
    return {
        "blockStats": _outcome(lambda: dom.blockStats("vda")),
        "blockStatsFlags": _outcome(lambda: dom.blockStatsFlags("vda", 0)),
        "blockInfo": _outcome(lambda: dom.blockInfo("vda", 0)),
        # which figures a guest reported is up to it (this one booted, the in-process one is paused)
        "memoryStats": _outcome(lambda: {k: v for k, v in dom.memoryStats().items()
                                         if k in ("actual", "rss")}),
        "cpuTotal": _outcome(lambda: dom.getCPUStats(True, 0)),
        "cpuPerHost": _outcome(lambda: dom.getCPUStats(False, 0)),
        "interfaceStats": _outcome(lambda: dom.interfaceStats(MAC)),
        "noDisk": _outcome(lambda: dom.blockStats("vdz")),
        "wakeupBadFlags": _outcome(lambda: dom.pMWakeup(1)),
    }


def test_pyvirt_client_as_in_process(served: Pyvirtd, root: Path, guest: tg.Guest,
                                     workdir: Path) -> None:
    """The same definition, started (paused) by the in-process API on an embed root of its own:
    every method gives the same shapes, types, fixed figures and errors through pyvirtd."""
    from pyvirt._constants import VIR_DOMAIN_START_PAUSED

    with connect(served.uri()) as remote:
        ours = _client_calls(remote.lookupByName("st"))
    with connect(f"qemu:///embed?root={root}") as local:
        dom = local.defineXML(_xml(guest, "st", _UUID, _disk(workdir, "local.img")))
        dom.createWithFlags(VIR_DOMAIN_START_PAUSED)
        try:
            theirs = _client_calls(dom)
        finally:
            dom.destroy()
    for name in ours:
        a, b = ours[name], theirs[name]
        assert a[0] == b[0], (name, a, b)
        if a[0] == "error":
            assert a == b, name
            continue
        assert _types(a[1]) == _types(b[1]), (name, a, b)
    assert ours["blockInfo"][1][0] == theirs["blockInfo"][1][0] == _DISK_SIZE
    assert ours["memoryStats"][1]["actual"] == theirs["memoryStats"][1]["actual"] == 256 * 1024


def test_pyvirt_client_against_libvirtd(served: Pyvirtd, oracle: Libvirtd) -> None:
    """pyvirt's client speaks these procedures as libvirt's does: a real libvirtd decodes its calls
    and it decodes libvirtd's replies into the shapes it gets from pyvirtd."""
    with connect(served.uri()) as conn:
        ours = _client_calls(conn.lookupByName("st"))
    with connect(oracle.uri()) as conn:
        theirs = _client_calls(conn.lookupByName("st"))
    for name in ours:
        a, b = ours[name], theirs[name]
        assert a[0] == b[0], (name, a, b)
        if a[0] == "ok":
            assert _types(a[1]) == _types(b[1]), (name, a, b)
        else:  # per host CPU: refused for causes of each one's own (see _assert_same)
            assert a[1] == b[1] and (name == "cpuPerHost" or a[2:] == b[2:]), (name, a, b)
    assert ours["blockInfo"][1][0] == theirs["blockInfo"][1][0] == _DISK_SIZE
    assert set(ours["blockStatsFlags"][1]) == set(theirs["blockStatsFlags"][1])


def test_pyvirt_client_on_read_only_socket(served: Pyvirtd) -> None:
    with openReadOnly(served.uri(readonly=True)) as conn:
        dom = conn.lookupByName("st")
        assert len(dom.blockStats("vda")) == 5
        assert "actual" in dom.memoryStats()
        assert set(dom.getCPUStats(True)[0]) == {"cpu_time", "user_time", "system_time"}
        assert dom.blockInfo("vda")[0] == _DISK_SIZE
        for change in (lambda: dom.setMemoryStatsPeriod(0), lambda: dom.pMWakeup(0)):
            with pytest.raises(PyvirtError) as exc:
                change()
            assert exc.value.code == codes.VIR_ERR_OPERATION_DENIED


def test_typed_parameter_counts(served: Pyvirtd) -> None:
    """The calls libvirt's client library makes before fetching: ``nparams`` 0 asks for the count
    only; GET_CPU_STATS with ``ncpus`` 0 for the number of host CPUs; the limits of the protocol
    and the arguments virDomainGetCPUStats checks are refused."""
    with connect(served.uri()) as conn:
        dom: Any = conn.lookupByName("st")  # a RemoteDomain: its _call sends any arguments

        def cpu(nparams: int, start: int, ncpus: int, flags: int = 0) -> Any:
            return dom._call("DOMAIN_GET_CPU_STATS", "virDomainGetCPUStats", nparams=nparams,
                             start_cpu=start, ncpus=ncpus, flags=flags)

        count = cpu(0, -1, 1)
        assert (count.params, count.nparams) == ([], 3)
        two = cpu(2, -1, 1, 4)  # VIR_TYPED_PARAM_STRING_OKAY, as libvirt's client adds it
        assert [p.field for p in two.params] == ["cpu_time", "user_time"] and two.nparams == 2
        assert cpu(0, 0, 0).nparams == conn.getInfo()[2]
        blk = dom._call("DOMAIN_BLOCK_STATS_FLAGS", "virDomainBlockStatsFlags", path="vda",
                        nparams=0, flags=0)
        assert blk.params == [] and blk.nparams == len(dom.blockStatsFlags("vda"))
        one = dom._call("DOMAIN_MEMORY_STATS", "virDomainMemoryStats", maxStats=1, flags=0)
        assert len(one.stats) == 1
        for call, words in [
                (lambda: cpu(0, -1, 2), "ncpus in virDomainGetCPUStats must be 1"),
                (lambda: cpu(17, -1, 1), "nparams too large"),
                (lambda: cpu(1, 0, 129), "ncpus too large"),
                (lambda: cpu(3, -1, 1, 1), "unsupported flags (0x1) in function qemuDomainGetCPUStats"),
                (lambda: dom._call("DOMAIN_MEMORY_STATS", "x", maxStats=1025, flags=0),
                 "maxStats > REMOTE_DOMAIN_MEMORY_STATS_MAX"),
                (lambda: dom._call("DOMAIN_BLOCK_STATS_FLAGS", "x", path="vda", nparams=17,
                                   flags=0), "nparams too large")]:
            with pytest.raises(PyvirtError, match=re.escape(words)):
                call()
        assert dom.isActive() == 1  # the connection and the domain are still fine


# ---- (d) pyvirsh over the socket ---------------------------------------------------------------

@pytest.mark.parametrize("argv", [("dommemstat", "st"), ("domblkstat", "st", "vda"),
                                  ("domblkstat", "st", "vda", "--human")], ids="-".join)
def test_pyvirsh_as_virsh(served: Pyvirtd, argv: tuple[str, ...]) -> None:
    from lifecycle_support import PYVIRSH

    uri = served.uri()
    ours = subprocess.run([PYVIRSH, "-c", uri, *argv],
                          capture_output=True, text=True, timeout=60)
    theirs = _virsh(uri, *argv)
    assert ours.returncode == 0, ours.stderr
    assert _shape(ours)[1] == _shape(theirs)[1]
