# SPDX-License-Identifier: LGPL-2.1-or-later
"""Storage pool and network events over pyvirtd, compared with a real libvirtd 9.0 running the
same steps: python3-libvirt 9.0 (with libvirt's default event loop) registering both kinds of
events, Debian's virsh 9.0 ``pool-event`` / ``net-event --loop``, and pyvirsh's commands of the
same names through pyvirt's remote client, whose output must be virsh's. A raw client checks
what no real client shows: the daemon's refusals of bad event ids and unknown callback ids.

The network daemons run in network namespaces of their own (tests/network_oracle.py and the
``netns_pyvirtd`` fixture of test_network_rpc.py), so started networks never reach the host.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from network_oracle import start_network_libvirtd
from storage_oracle import start_storage_libvirtd

from .test_events import EventWatcher
from .test_network_rpc import netns_pyvirtd  # noqa: F401 - a fixture of this module too
from .testlib import SYSTEM_PYTHON, VIRSH, Pyvirtd, Raw, error_fields, is_error, own_pyvirtd

pytestmark = [pytest.mark.oracle]

PYVIRSH = str(Path(sys.executable).with_name("pyvirsh"))
_ENV = {"LANG": "C", "PATH": "/usr/bin:/bin", "HOME": "/tmp"}


@pytest.fixture(scope="module")
def pool_daemons() -> Iterator[dict[str, str]]:
    """pyvirtd and a libvirtd with its storage driver: label -> URI."""
    libvirtd = start_storage_libvirtd()
    try:
        with own_pyvirtd("pvpe-") as pyvirtd:
            yield {"pyvirtd": pyvirtd.uri(), "libvirtd": libvirtd.uri()}
    finally:
        libvirtd.stop()


@pytest.fixture(scope="module")
def net_daemons(netns_pyvirtd: Pyvirtd) -> Iterator[dict[str, str]]:  # noqa: F811
    """pyvirtd and a libvirtd with its network driver, each in a network namespace of its own."""
    libvirtd = start_network_libvirtd()
    try:
        # the 'default' network pyvirtd defines on the network API's first use: libvirtd has none
        for args in (("net-destroy", "default"), ("net-undefine", "default")):
            assert _virsh(netns_pyvirtd.uri(), *args)[0] == 0, args
        yield {"pyvirtd": netns_pyvirtd.uri(), "libvirtd": libvirtd.uri()}
    finally:
        libvirtd.stop()


def _virsh(uri: str, *args: str) -> tuple[int, str, str]:
    out = subprocess.run([VIRSH, "-c", uri, *args], capture_output=True, text=True, timeout=60, env=_ENV)
    return out.returncode, out.stdout, out.stderr


def _pool_xml(name: str, path: Path) -> str:
    return f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"


def _net_xml(name: str, bridge: str, third: int) -> str:
    # forward mode 'open': libvirtd here has no iptables, which its other modes' rules need
    return (f"<network><name>{name}</name><forward mode='open'/><bridge name='{bridge}'/>"
            f"<ip address='10.{third}.0.1' prefix='24'/></network>")


# ---- python3-libvirt ---------------------------------------------------------------------------

_PY_PREFIX = r"""
import json, sys, threading, time, libvirt
libvirt.registerErrorHandler(lambda *a: None, None)
libvirt.virEventRegisterDefaultImpl()
uri, base = sys.argv[1], sys.argv[2]
watch = libvirt.open(uri)     # receives the events
drive = libvirt.open(uri)     # makes them, as another client would
got = []
def lifecycle(c, obj, event, detail, opaque):
    got.append([opaque, obj.name(), event, detail, c is watch])
def refresh(c, obj, opaque):
    got.append([opaque, obj.name(), c is watch])
def err(f):
    try:
        f()
    except libvirt.libvirtError as e:
        return [e.get_error_code(), e.get_error_domain(), e.get_error_message()]
    return None
def settle(last):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and last not in got:
        libvirt.virEventRunDefaultImpl()
"""

_PY_POOLS = _PY_PREFIX + r"""
LIFECYCLE, REFRESH = libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, libvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH
def pool_xml(name):
    return f"<pool type='dir'><name>{name}</name><target><path>{base}/{name}</path></target></pool>"
ids = [watch.storagePoolEventRegisterAny(None, LIFECYCLE, lifecycle, "all"),
       watch.storagePoolEventRegisterAny(None, REFRESH, refresh, "refresh")]
p = drive.storagePoolDefineXML(pool_xml("ev1"))
settle(["all", "ev1", 0, 0, True])
ids.append(watch.storagePoolEventRegisterAny(watch.storagePoolLookupByName("ev1"),
                                             libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, lifecycle, "ev1"))
p.build(); p.create(); p.refresh(); p.destroy(); p.delete(); p.undefine()
t = drive.storagePoolCreateXML(pool_xml("ev2"), libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
import os
os.rmdir(f"{base}/ev2")
refresh_gone = err(t.refresh) is not None
settle(["all", "ev2", 3, 0, True])
out = {"ids": ids, "got": got, "refresh_gone": refresh_gone,
       "dereg": [watch.storagePoolEventDeregisterAny(i) for i in ids],
       "again": err(lambda: watch.storagePoolEventDeregisterAny(ids[0]))}
watch.close(); drive.close()
print(json.dumps(out))
"""

_PY_NETS = _PY_PREFIX + r"""
ids = [watch.networkEventRegisterAny(None, libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, lifecycle, "all")]
n = drive.networkDefineXML("<network><name>evn1</name><forward mode='open'/><bridge name='virbr6'/>"
                           "<ip address='10.86.0.1' prefix='24'/></network>")
settle(["all", "evn1", 0, 0, True])
ids.append(watch.networkEventRegisterAny(watch.networkLookupByName("evn1"),
                                         libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, lifecycle, "evn1"))
n.create(); n.destroy(); n.undefine()
t = drive.networkCreateXML("<network><name>evn2</name><forward mode='open'/><bridge name='virbr4'/>"
                           "<ip address='10.84.0.1' prefix='24'/></network>")
t.destroy()
settle(["all", "evn2", 3, 0, True])
out = {"ids": ids, "got": got, "dereg": [watch.networkEventDeregisterAny(i) for i in ids],
       "again": err(lambda: watch.networkEventDeregisterAny(ids[0])),
       "domain_id_as_network": None}
d = watch.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, "dom")
out["domain_id_as_network"] = err(lambda: watch.networkEventDeregisterAny(d))
watch.close(); drive.close()
print(json.dumps(out))
"""


def _python(script: str, uri: str, base: Path) -> Any:
    base.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([SYSTEM_PYTHON, "-c", script, uri, str(base)], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_python_libvirt_pool_events_same_as_libvirtd(pool_daemons: dict[str, str], tmp_path: Path) -> None:
    got = {label: _python(_PY_POOLS, uri, tmp_path / label) for label, uri in pool_daemons.items()}
    assert got["pyvirtd"] == got["libvirtd"]
    seen = got["pyvirtd"]["got"]
    # Defined; Created, Started, refresh, Stopped, Deleted, Undefined (twice each past the
    # filtered registration); the transient pool built at start: Started only, then Stopped
    # by the refresh that found its directory gone
    assert [g[:3] for g in seen] == [
        ["all", "ev1", 0],
        ["all", "ev1", 4], ["ev1", "ev1", 4], ["all", "ev1", 2], ["ev1", "ev1", 2],
        ["refresh", "ev1", True],
        ["all", "ev1", 3], ["ev1", "ev1", 3], ["all", "ev1", 5], ["ev1", "ev1", 5],
        ["all", "ev1", 1], ["ev1", "ev1", 1],
        ["all", "ev2", 2], ["all", "ev2", 3]]
    assert got["pyvirtd"]["ids"] == [0, 1, 2] and got["pyvirtd"]["refresh_gone"]
    assert got["pyvirtd"]["again"] == [8, 0, "invalid argument: event callback id 0 not registered"]


def test_python_libvirt_network_events_same_as_libvirtd(net_daemons: dict[str, str], tmp_path: Path) -> None:
    got = {label: _python(_PY_NETS, uri, tmp_path / label) for label, uri in net_daemons.items()}
    # the server's callback ids are its own (pyvirtd's: one series for all its clients)
    for side in got.values():
        side["domain_id_as_network"][2] = re.sub(r"\d+", "N", side["domain_id_as_network"][2])
    assert got["pyvirtd"] == got["libvirtd"]
    assert [g[:4] for g in got["pyvirtd"]["got"]] == [
        ["all", "evn1", 0, 0],
        ["all", "evn1", 2, 0], ["evn1", "evn1", 2, 0], ["all", "evn1", 3, 0], ["evn1", "evn1", 3, 0],
        ["all", "evn1", 1, 0], ["evn1", "evn1", 1, 0],
        ["all", "evn2", 2, 0], ["all", "evn2", 3, 0]]
    # a domain callback id sent to the network deregistration: the server refuses it
    assert got["pyvirtd"]["domain_id_as_network"] == [
        1, 7, "internal error: network event callback N not registered"]


# ---- virsh and pyvirsh -------------------------------------------------------------------------

class Watcher(EventWatcher):
    """``virsh`` or pyvirsh ``pool-event`` / ``net-event`` running (test_events' watcher, for any
    tool and command)."""

    def __init__(self, tool: str, uri: str, *args: str) -> None:  # not super()'s: its argv is virsh's
        env = {**_ENV, "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen(["stdbuf", "-oL", tool, "-c", uri, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def end(self) -> tuple[int, list[str], str]:
        """^C, as a user ends ``--loop``; the exit status, the lines printed and stderr."""
        lines = self.stop()
        return self.proc.returncode, lines, self.stderr()


def _probe_until_seen(watchers: list[Watcher], probe: tuple[tuple[str, ...], ...], seen: str,
                      uri: str) -> None:
    """virsh prints nothing once registered: make an event (``probe``'s commands) until every
    watcher has printed it."""
    deadline = time.monotonic() + 60
    while True:
        for args in probe:
            assert _virsh(uri, *args)[0] == 0, args
        try:
            for w in watchers:
                w.wait_for(seen, timeout=1.5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def _without(lines: list[str], probe_name: str) -> tuple[list[str], int]:
    """The lines not about the probe, the event count line normalized; and the count printed,
    checked against the event lines printed."""
    events = [line for line in lines if line.startswith(("event '", "20"))]
    count_lines = [line for line in lines if line.startswith("events received: ")]
    assert len(count_lines) == 1, lines
    assert int(count_lines[0].split(": ")[1]) == len(events), lines
    kept = [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: ", "TS: ", line)
            for line in lines if probe_name not in line and not line.startswith("events received: ")]
    return kept, len(events)


def _watch_and_drive(uri: str, tools: dict[str, str], command: str, events: tuple[str, ...],
                     probe: tuple[tuple[str, ...], ...], probe_name: str, probe_seen: str,
                     steps: list[Any], last: str) -> dict[str, Any]:
    """Watchers (per tool, one per event type, --loop, the last with --timestamp) on ``uri``;
    ``steps`` run once they are registered; their output once ``last`` shows, after ^C."""
    watchers = {(tool, ev): Watcher(path, uri, command, "--loop", "--event", ev,
                                    *(("--timestamp",) if ev == events[-1] else ()))
                for tool, path in tools.items() for ev in events}
    try:
        _probe_until_seen([w for (_, ev), w in watchers.items() if ev == "lifecycle"], probe,
                          probe_seen, uri)
        for args in steps:
            assert _virsh(uri, *args)[0] == 0, args
        for (_, ev), w in watchers.items():
            if ev == "lifecycle":
                w.wait_for(last)
        time.sleep(0.5)  # nothing more is to come; a stray extra line would show
    finally:
        results = {key: w.end() for key, w in watchers.items()}
    return {f"{tool} {ev}": (rc, _without(lines, probe_name)[0], err)
            for (tool, ev), (rc, lines, err) in results.items()}


def test_virsh_and_pyvirsh_pool_event_same_as_libvirtd(pool_daemons: dict[str, str], tmp_path: Path) -> None:
    outputs = {}
    for label, uri in pool_daemons.items():
        d = tmp_path / label
        d.mkdir()
        (d / "probe.xml").write_text(_pool_xml("evprobe", d / "evprobe"))
        (d / "ev3.xml").write_text(_pool_xml("ev3", d / "ev3"))
        (d / "ev4.xml").write_text(_pool_xml("ev4", d / "ev4"))
        tools = {"virsh": VIRSH, **({"pyvirsh": PYVIRSH} if label == "pyvirtd" else {})}
        steps = [("pool-define", str(d / "ev3.xml")), ("pool-build", "ev3"), ("pool-start", "ev3"),
                 ("pool-refresh", "ev3"), ("pool-destroy", "ev3"), ("pool-delete", "ev3"),
                 ("pool-undefine", "ev3"), ("pool-create", "--build", str(d / "ev4.xml")),
                 ("pool-destroy", "ev4")]
        outputs[label] = _watch_and_drive(
            uri, tools, "pool-event", ("lifecycle", "refresh"),
            (("pool-define", str(d / "probe.xml")), ("pool-undefine", "evprobe")), "evprobe",
            "storage pool evprobe: Undefined", steps, "storage pool ev4: Stopped")
    reference = outputs["libvirtd"]
    assert reference["virsh lifecycle"] == (0, [
        *(f"event 'lifecycle' for storage pool ev3: {word}"
          for word in ("Defined", "Created", "Started", "Stopped", "Deleted", "Undefined")),
        "event 'lifecycle' for storage pool ev4: Started", "event 'lifecycle' for storage pool ev4: Stopped",
        "event loop interrupted", ""], "")
    assert reference["virsh refresh"] == (0, ["TS: event 'refresh' for storage pool ev3",
                                              "event loop interrupted", ""], "")
    for key in ("virsh lifecycle", "virsh refresh", "pyvirsh lifecycle", "pyvirsh refresh"):
        assert outputs["pyvirtd"][key] == reference[key.replace("pyvirsh", "virsh")], key


def test_virsh_and_pyvirsh_net_event_same_as_libvirtd(net_daemons: dict[str, str], tmp_path: Path) -> None:
    outputs = {}
    for label, uri in net_daemons.items():
        d = tmp_path / label
        d.mkdir()
        (d / "probe.xml").write_text("<network><name>evprobe</name></network>")
        (d / "evn3.xml").write_text(_net_xml("evn3", "virbr3", 83))
        (d / "evn4.xml").write_text(_net_xml("evn4", "virbr2", 82))
        tools = {"virsh": VIRSH, **({"pyvirsh": PYVIRSH} if label == "pyvirtd" else {})}
        steps = [("net-define", str(d / "evn3.xml")), ("net-start", "evn3"), ("net-destroy", "evn3"),
                 ("net-undefine", "evn3"), ("net-create", str(d / "evn4.xml")), ("net-destroy", "evn4")]
        outputs[label] = _watch_and_drive(
            uri, tools, "net-event", ("lifecycle",),
            (("net-define", str(d / "probe.xml")), ("net-undefine", "evprobe")), "evprobe",
            "network evprobe: Undefined", steps, "network evn4: Stopped")
    reference = outputs["libvirtd"]
    assert reference["virsh lifecycle"] == (0, [
        *(f"TS: event 'lifecycle' for network evn3: {word}"
          for word in ("Defined", "Started", "Stopped", "Undefined")),
        "TS: event 'lifecycle' for network evn4: Started", "TS: event 'lifecycle' for network evn4: Stopped",
        "event loop interrupted", ""], "")
    assert outputs["pyvirtd"]["virsh lifecycle"] == reference["virsh lifecycle"]
    assert outputs["pyvirtd"]["pyvirsh lifecycle"] == reference["virsh lifecycle"]


@pytest.mark.parametrize("args", [
    ("pool-event", "--list"), ("pool-event",), ("pool-event", "--event", "nosuch"),
    ("pool-event", "--event", "refresh", "--timeout", "1"),
    ("pool-event", "--event", "lifecycle", "--timeout", "0"),
])
def test_one_shot_and_refusals_same_as_virsh(pool_daemons: dict[str, str], args: tuple[str, ...]) -> None:
    """What ends without an event (a list, a refusal, a timeout): pyvirsh as virsh, on a read-only
    connection (registering is allowed there)."""
    ro = {label: re.sub(r"libvirt-sock$", "libvirt-sock-ro", uri) for label, uri in pool_daemons.items()}
    expected = _virsh(ro["libvirtd"], *args)
    assert _virsh(ro["pyvirtd"], *args) == expected
    mine = subprocess.run([PYVIRSH, "-c", ro["pyvirtd"], *args], capture_output=True, text=True, timeout=60,
                          env=_ENV)
    assert (mine.returncode, mine.stdout, mine.stderr) == expected


# ---- the wire -----------------------------------------------------------------------------------

def _raw_errors(socket_path: str) -> dict[str, Any]:
    with Raw.unix(socket_path) as raw:
        raw.open()
        out = {
            "pool id 2": raw.call("CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY", eventID=2, pool=None),
            "net id 1": raw.call("CONNECT_NETWORK_EVENT_REGISTER_ANY", eventID=1, net=None),
            "pool dereg": raw.call("CONNECT_STORAGE_POOL_EVENT_DEREGISTER_ANY", callbackID=4242),
            "net dereg": raw.call("CONNECT_NETWORK_EVENT_DEREGISTER_ANY", callbackID=4242),
        }
    return {k: error_fields(v) if is_error(v) else v for k, v in out.items()}


def test_daemon_refusals_same_as_libvirtd(pool_daemons: dict[str, str]) -> None:
    got = {label: _raw_errors(uri.split("socket=", 1)[1]) for label, uri in pool_daemons.items()}
    assert got["pyvirtd"] == got["libvirtd"]
    assert got["pyvirtd"]["pool id 2"][2] == "internal error: unsupported storage pool event ID 2"


def test_a_filtered_registration_frames_only_its_pool(pool_daemons: dict[str, str], tmp_path: Path) -> None:
    """The MESSAGE frames of a registration for one pool (by UUID, not looked up: a pool defined
    later with that UUID is the one): REMOTE_PROC_STORAGE_POOL_EVENT_LIFECYCLE (370) and _REFRESH
    (373), each carrying the callback id the registration returned."""
    import uuid

    uri = pool_daemons["pyvirtd"]
    wanted = str(uuid.uuid4())
    with Raw.unix(uri.split("socket=", 1)[1]) as raw:
        raw.open()
        pool = {"name": "evraw", "uuid": uuid.UUID(wanted).bytes}
        life = raw.call("CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY", eventID=0, pool=pool).callbackID
        fresh = raw.call("CONNECT_STORAGE_POOL_EVENT_REGISTER_ANY", eventID=1, pool=pool).callbackID
        (tmp_path / "other.xml").write_text(_pool_xml("evother", tmp_path / "evother"))
        (tmp_path / "raw.xml").write_text(_pool_xml("evraw", tmp_path / "evraw").replace(
            "<name>", f"<uuid>{wanted}</uuid><name>"))
        for args in (("pool-define", str(tmp_path / "other.xml")), ("pool-undefine", "evother"),
                     ("pool-create", "--build", str(tmp_path / "raw.xml")), ("pool-refresh", "evraw"),
                     ("pool-destroy", "evraw")):
            assert _virsh(uri, *args)[0] == 0, args
        frames: list[tuple[int, tuple[Any, ...]]] = []
        while len(frames) < 3:
            msg = raw.recv()
            assert msg is not None
            if msg.header.proc in (370, 373):
                frames.append((msg.header.proc, decode_event(msg)))
    uuid_bytes = uuid.UUID(wanted).bytes
    assert frames == [(370, (life, "evraw", uuid_bytes, 2, 0)), (373, (fresh, "evraw", uuid_bytes)),
                      (370, (life, "evraw", uuid_bytes, 3, 0))]


def decode_event(msg: Any) -> tuple[Any, ...]:
    from pyvirt.rpc.procedures import PROCEDURES

    proc = PROCEDURES.get(msg.header.prog, msg.header.proc)
    assert proc is not None and proc.event
    body = proc.args.decode(msg.payload)
    extra = (body.event, body.detail) if msg.header.proc == 370 else ()
    return (body.callbackID, body.pool.name, bytes(body.pool.uuid), *extra)


def test_pyvirsh_event_commands_are_listed() -> None:
    out = subprocess.run([PYVIRSH, "help", "pool-event"], capture_output=True, text=True, timeout=60,
                         env={**_ENV, "PYTHONDONTWRITEBYTECODE": "1"})
    assert "pool-event [--pool <string>] [--event <string>] [--loop] [--timeout <number>] [--list] " \
           "[--timestamp]" in out.stdout
    assert os.path.exists(PYVIRSH)
