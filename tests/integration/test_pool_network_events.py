# SPDX-License-Identifier: LGPL-2.1-or-later
"""Network and storage pool events on an embedded connection: a real directory pool and a real
network (bridge, dnsmasq, nftables, in a network namespace of its own: tests/network_oracle.py),
with libvirt-python's registration calls, callback signatures and constants.

The sequences expected are libvirt 9.0's drivers' (tests/daemon/test_pool_network_events.py
checks the same sequences against a real libvirtd): define, build (Created), start, refresh,
destroy, delete, undefine; a start that builds is Started only; a refresh that finds the pool's
directory gone stops the pool (Stopped, no Refresh).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from network_oracle import in_netns

import pyvirt
from pyvirt.connection import virConnect
from pyvirt.errors import PyvirtError


def _pool_xml(name: str, path: Path) -> str:
    return f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"


@pytest.fixture
def conn(embed_root: Path) -> Iterator[virConnect]:
    c: virConnect = pyvirt.open(f"qemu:///embed?root={embed_root}")
    yield c
    c.close()


def test_pool_events_reach_callbacks_in_order_with_libvirt_python_arguments(
        conn: virConnect, tmp_path: Path) -> None:
    got: list[tuple[object, ...]] = []

    def lifecycle(c: object, pool: object, event: int, detail: int, opaque: object) -> None:
        assert c is conn
        got.append((opaque, pool.name(), event, detail))  # type: ignore[attr-defined]

    def refresh(c: object, pool: object, opaque: object) -> None:
        got.append((opaque, pool.name()))  # type: ignore[attr-defined]

    all_id = conn.storagePoolEventRegisterAny(None, pyvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
                                              lifecycle, "all")
    refresh_id = conn.storagePoolEventRegisterAny(None, pyvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH,
                                                  refresh, "refresh")
    pool = conn.storagePoolDefineXML(_pool_xml("pe1", tmp_path / "pe1"))
    # (as in libvirt, an event goes to the registrations there are when it is delivered)
    conn.driver.events.wait_idle(10)
    # a registration filtered by pool: pe1's events only
    one_id = conn.storagePoolEventRegisterAny(pool, pyvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE,
                                              lifecycle, "pe1")
    pool.build()
    pool.create()
    pool.refresh()
    pool.destroy()
    pool.delete()
    pool.undefine()
    # transient, built and started at once: Started only; its directory removed under it: a
    # refresh stops it
    other = conn.storagePoolCreateXML(_pool_xml("pe2", tmp_path / "pe2"),
                                      pyvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
    (tmp_path / "pe2").rmdir()
    with pytest.raises(PyvirtError):
        other.refresh()
    conn.driver.events.wait_idle(10)
    d, u, s, t, c, x = (pyvirt.VIR_STORAGE_POOL_EVENT_DEFINED, pyvirt.VIR_STORAGE_POOL_EVENT_UNDEFINED,
                        pyvirt.VIR_STORAGE_POOL_EVENT_STARTED, pyvirt.VIR_STORAGE_POOL_EVENT_STOPPED,
                        pyvirt.VIR_STORAGE_POOL_EVENT_CREATED, pyvirt.VIR_STORAGE_POOL_EVENT_DELETED)
    assert got == [("all", "pe1", d, 0),
                   ("all", "pe1", c, 0), ("pe1", "pe1", c, 0),
                   ("all", "pe1", s, 0), ("pe1", "pe1", s, 0),
                   ("refresh", "pe1"),
                   ("all", "pe1", t, 0), ("pe1", "pe1", t, 0),
                   ("all", "pe1", x, 0), ("pe1", "pe1", x, 0),
                   ("all", "pe1", u, 0), ("pe1", "pe1", u, 0),
                   ("all", "pe2", s, 0),
                   ("all", "pe2", t, 0)]
    # deregistered: nothing more; an id of another kind, or twice, is refused and changes nothing
    for callback_id in (all_id, refresh_id, one_id):
        assert conn.storagePoolEventDeregisterAny(callback_id) is None
    with pytest.raises(PyvirtError, match=f"could not find event callback {all_id} for deletion"):
        conn.storagePoolEventDeregisterAny(all_id)
    dom_id = conn.domainEventRegisterAny(None, pyvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
    with pytest.raises(PyvirtError, match="could not find event callback"):
        conn.storagePoolEventDeregisterAny(dom_id)
    pool_id = conn.storagePoolEventRegisterAny(None, 0, lifecycle, None)
    with pytest.raises(PyvirtError, match="could not find event callback"):
        conn.domainEventDeregisterAny(pool_id)
    conn.domainEventDeregisterAny(dom_id)
    conn.storagePoolEventDeregisterAny(pool_id)
    got.clear()
    conn.storagePoolDefineXML(_pool_xml("pe3", tmp_path / "pe3")).undefine()
    conn.driver.events.wait_idle(10)
    assert got == []


def test_bad_event_ids_are_refused_naming_the_limit(conn: virConnect) -> None:
    with pytest.raises(PyvirtError, match="eventID in virConnectStoragePoolEventRegisterAny must be "
                                          "less than 2") as exc:
        conn.storagePoolEventRegisterAny(None, 2, print, None)
    assert exc.value.code == pyvirt.VIR_ERR_INVALID_ARG
    with pytest.raises(PyvirtError, match="eventID in virConnectNetworkEventRegisterAny must be "
                                          "less than 1"):
        conn.networkEventRegisterAny(None, 1, print, None)
    with pytest.raises(PyvirtError, match="could not find event callback 7 for deletion"):
        conn.networkEventDeregisterAny(7)


def test_closing_the_connection_drops_its_registrations(embed_root: Path, tmp_path: Path) -> None:
    first: Any = pyvirt.open(f"qemu:///embed?root={embed_root}")
    second: Any = pyvirt.open(f"qemu:///embed?root={embed_root}")
    try:
        got: list[str] = []
        first.storagePoolEventRegisterAny(None, 0, lambda c, p, e, d, o: got.append(f"first {e}"), None)
        second.storagePoolEventRegisterAny(None, 0, lambda c, p, e, d, o: got.append(f"second {e}"), None)
        first.close()
        second.storagePoolDefineXML(_pool_xml("pe4", tmp_path / "pe4")).undefine()
        second.driver.events.wait_idle(10)
        assert got == ["second 0", "second 1"]
    finally:
        second.close()


def test_network_events_of_a_real_network_in_a_namespace() -> None:
    out = in_netns(r"""
import json, sys, tempfile
from pathlib import Path
import pyvirt
root = Path(tempfile.mkdtemp(prefix="pvne-", dir="/tmp")) / "r"
conn = pyvirt.open(f"qemu:///embed?root={root}")
got = []
def lifecycle(c, net, event, detail, opaque):
    got.append([opaque, net.name(), event, detail, c is conn])
all_id = conn.networkEventRegisterAny(None, pyvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, lifecycle, "all")
net = conn.networkDefineXML("<network><name>ne1</name><bridge name='virbr9'/>"
                            "<ip address='10.89.0.1' prefix='24'/></network>")
conn.driver.events.wait_idle(10)
one_id = conn.networkEventRegisterAny(net, pyvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, lifecycle, "ne1")
net.create()
bridge_up = "virbr9" in open("/proc/net/dev").read()
net.destroy()
net.undefine()
other = conn.networkCreateXML("<network><name>ne2</name><bridge name='virbr8'/>"
                              "<ip address='10.88.0.1' prefix='24'/></network>")
other.destroy()
conn.driver.events.wait_idle(10)
conn.networkEventDeregisterAny(one_id)
conn.networkEventDeregisterAny(all_id)
# the 'default' network pyvirt defines on the network API's first use was there before the
# registration: its definition is no event
conn.networkLookupByName("default").destroy()
conn.driver.events.wait_idle(10)
conn.close()
print(json.dumps({"got": got, "bridge_up": bridge_up}))
""")
    assert out["bridge_up"]
    d, u, s, t = (pyvirt.VIR_NETWORK_EVENT_DEFINED, pyvirt.VIR_NETWORK_EVENT_UNDEFINED,
                  pyvirt.VIR_NETWORK_EVENT_STARTED, pyvirt.VIR_NETWORK_EVENT_STOPPED)
    assert out["got"] == [["all", "ne1", d, 0, True],
                          ["all", "ne1", s, 0, True], ["ne1", "ne1", s, 0, True],
                          ["all", "ne1", t, 0, True], ["ne1", "ne1", t, 0, True],
                          ["all", "ne1", u, 0, True], ["ne1", "ne1", u, 0, True],
                          ["all", "ne2", s, 0, True],
                          ["all", "ne2", t, 0, True]]
