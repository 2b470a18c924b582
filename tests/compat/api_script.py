# SPDX-License-Identifier: LGPL-2.1-or-later
"""One libvirt-python script, run unchanged against libvirt and against pyvirt.

    python api_script.py libvirt|pyvirt URI WORKDIR

``libvirt`` imports Debian's python3-libvirt (run it with /usr/bin/python3), ``pyvirt`` runs
``import pyvirt as libvirt``. The script prints one JSON object: each step's observable result, or
["error", code, domain] for a libvirtError. tests/compat/test_api_scripts.py compares the two.
Values that legitimately differ between two hypervisor processes (ids, CPU times, RSS) are reduced
to what both must agree on (a type, a sign, a key set) here, where the script knows what they mean.
"""

from __future__ import annotations

import importlib
import json
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

# Loaded by name: the same code runs over either, and neither is typed for the other's checker.
libvirt: Any = importlib.import_module("pyvirt" if sys.argv[1] == "pyvirt" else "libvirt")
libvirt_qemu: Any = importlib.import_module("pyvirt.qemu" if sys.argv[1] == "pyvirt" else "libvirt_qemu")

URI, WORK = sys.argv[2], sys.argv[3]
UUID = "6b0c6a3e-9c0e-4d0a-8f43-0d3f5e1a7c21"
UUID2 = "0f5d9a3c-2b1e-4b7f-9d55-4c3a2b1e0f99"
MAC = "52:54:00:12:34:56"

results: dict[str, Any] = {}


def step(name: str, fn: Callable[[], Any], shape: Callable[[Any], Any] = lambda v: v) -> Any:
    try:
        value = fn()
    except libvirt.libvirtError as e:
        results[name] = ["error", e.get_error_code(), e.get_error_domain()]
        return None
    results[name] = shape(value)
    return value


def domain_xml(name: str, uuid: str, current_mib: int = 128, balloon: str = "virtio") -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>128</memory>
  <currentMemory unit='MiB'>{current_mib}</currentMemory>
  <vcpu current='1'>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{WORK}/disk.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>
    <memballoon model='{balloon}'/>
  </devices>
</domain>
"""


#: elements and attributes that name this run rather than the domain (host paths, runtime names)
def normalise(xml: str) -> str:
    root = ET.fromstring(xml)
    root.attrib.pop("id", None)
    for src in root.iter("source"):
        for attr in ("file", "path"):
            if attr in src.attrib:
                src.attrib[attr] = src.attrib[attr].replace(WORK, "WORK")
    for elem in root.iter():
        elem.text = (elem.text or "").strip() or None
        elem.tail = None
    return ET.tostring(root, encoding="unicode")


def reply_shape(text: str) -> Any:
    reply = json.loads(text)
    shape: dict[str, Any] = {"keys": sorted(reply)}
    if "return" in reply:
        shape["return"] = reply["return"]
    if "error" in reply:
        shape["error_class"] = reply["error"]["class"]
    shape["id_is_text"] = isinstance(reply.get("id"), str)
    return shape


def consoles(conn: Any) -> None:
    con = conn.defineXML(f"""<domain type='qemu'><name>cmp3</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><serial type='pty'/><serial type='file'><source path='{WORK}/serial1.log'/></serial>
    <memballoon model='none'/></devices></domain>""")
    step("console_inactive", lambda: con.openConsole(None, conn.newStream(0), 0))
    con.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    first = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    step("console_open", lambda: con.openConsole(None, first, 0))
    step("console_recv_nothing_yet", lambda: first.recv(100))
    step("console_busy", lambda: con.openConsole(None, conn.newStream(0), 0))
    step("console_busy_by_name", lambda: con.openConsole("serial0", conn.newStream(0), 0))
    second = conn.newStream(0)
    step("console_force", lambda: con.openConsole(None, second, libvirt.VIR_DOMAIN_CONSOLE_FORCE))
    step("console_taken_over", lambda: first.recv(100))
    step("console_send", lambda: second.send(b"\r"))
    step("console_not_a_pty", lambda: con.openConsole("serial1", conn.newStream(0),
                                                      libvirt.VIR_DOMAIN_CONSOLE_FORCE))
    step("console_unknown", lambda: con.openConsole("nosuch", conn.newStream(0), 0))
    step("console_bad_flags", lambda: con.openConsole(None, conn.newStream(0), 8))
    step("console_finish", second.finish)
    step("console_send_finished", lambda: second.send(b"\r"))
    third = conn.newStream(0)
    step("console_by_console_name", lambda: con.openConsole("console0", third, 0))
    step("console_abort", third.abort)
    con.destroy()


def main() -> None:
    libvirt.virEventRegisterDefaultImpl()

    def loop() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, daemon=True).start()

    conn = libvirt.openAuth(URI, [[libvirt.VIR_CRED_AUTHNAME], lambda creds, opaque: 0, None], 0)
    # -- the connection -----------------------------------------------------------------------
    step("type", conn.getType)
    step("alive", conn.isAlive)
    step("secure", conn.isSecure)
    step("encrypted", conn.isEncrypted)
    step("uri", conn.getURI)
    step("node_info", conn.getInfo)
    step("lib_version_9", conn.getLibVersion, lambda v: v >= 9_000_000)
    step("close_callback", lambda: conn.registerCloseCallback(lambda c, reason, opaque: None, None))
    step("close_callback_off", conn.unregisterCloseCallback)
    step("keepalive", lambda: conn.setKeepAlive(5, 3))
    step("from_native", lambda: conn.domainXMLFromNative("qemu-argv", "qemu-system-x86_64 -m 64", 0))

    # -- mistakes before any domain -----------------------------------------------------------
    step("lookup_missing", lambda: conn.lookupByName("nosuch"))
    step("lookup_uuid_missing", lambda: conn.lookupByUUIDString(UUID2))
    step("lookup_id_missing", lambda: conn.lookupByID(4242))
    step("define_bad_xml", lambda: conn.defineXML("<domain type='qemu'><name>x</name>"))
    step("define_no_name", lambda: conn.defineXML("<domain type='qemu'><memory>65536</memory>"
                                                  "<os><type>hvm</type></os></domain>"))

    # -- an inactive domain -------------------------------------------------------------------
    dom = conn.defineXML(domain_xml("cmp1", UUID))
    step("name", dom.name)
    step("uuid", dom.UUIDString)
    step("id_inactive", dom.ID)
    step("active_inactive", dom.isActive)
    step("persistent", dom.isPersistent)
    step("updated", dom.isUpdated)
    step("state_defined", dom.state)
    step("info_inactive", dom.info)
    step("os_type", dom.OSType)
    step("autostart", dom.autostart)
    step("managed_save", dom.hasManagedSaveImage)
    step("max_memory", dom.maxMemory)
    step("max_vcpus_inactive", dom.maxVcpus)
    step("block_info_inactive", lambda: dom.blockInfo("vda"))
    step("block_info_by_path_inactive", lambda: dom.blockInfo(f"{WORK}/disk.raw"))
    step("block_info_unknown", lambda: dom.blockInfo("vdz"))
    step("block_stats_inactive", lambda: dom.blockStats("vda"))
    step("if_stats_inactive", lambda: dom.interfaceStats(MAC))
    step("mem_stats_inactive", dom.memoryStats)
    step("cpu_stats_inactive", lambda: dom.getCPUStats(True))
    step("shutdown_inactive", dom.shutdown)
    step("shutdown_flags_inactive", lambda: dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN))
    step("destroy_inactive", dom.destroy)
    step("suspend_inactive", dom.suspend)
    step("resume_inactive", dom.resume)
    step("reboot_inactive", lambda: dom.reboot(0))
    step("reset_inactive", lambda: dom.reset(0))
    step("monitor_inactive", lambda: libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-status"}', 0))
    step("xml_bad_flags", lambda: dom.XMLDesc(1024))
    step("xml_inactive", lambda: dom.XMLDesc(0), normalise)
    step("xml_inactive_flag", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), normalise)
    step("xml_secure", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE), normalise)
    step("block_stats_flags_inactive", lambda: dom.blockStatsFlags("vda", 0))
    step("stats_period_negative", lambda: dom.setMemoryStatsPeriod(-1, 0))
    step("stats_period_live_inactive", lambda: dom.setMemoryStatsPeriod(3, libvirt.VIR_DOMAIN_AFFECT_LIVE))
    step("stats_period_config", lambda: dom.setMemoryStatsPeriod(3, 0))
    step("xml_after_stats_period", lambda: dom.XMLDesc(0), normalise)
    step("list_defined", conn.listDefinedDomains)
    step("num_defined", conn.numOfDefinedDomains)
    step("list_all_inactive", lambda: [d.name() for d in conn.listAllDomains(
        libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE)])
    step("define_same_name_other_uuid", lambda: conn.defineXML(domain_xml("cmp1", UUID2)))
    step("attach", lambda: libvirt_qemu.qemuAttach(conn, 1, 0))

    # -- started paused -----------------------------------------------------------------------
    step("start_paused", lambda: dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED))
    step("state_paused", dom.state)
    step("id_positive", dom.ID, lambda v: v > 0)
    step("active", dom.isActive)
    step("start_running", dom.create)
    step("info_paused", dom.info, lambda v: v[:4] + [v[4] >= 0])
    step("max_vcpus", dom.maxVcpus)
    step("block_info", lambda: dom.blockInfo("vda"), lambda v: [v[0], v[2], v[1] >= 0])
    step("block_stats", lambda: dom.blockStats("vda"))
    step("block_stats_all", lambda: dom.blockStats(""))
    step("block_stats_unknown", lambda: dom.blockStats("vdz"))
    step("block_stats_flags", lambda: dom.blockStatsFlags("vda", 0))
    step("block_stats_flags_all", lambda: dom.blockStatsFlags("", 0))
    step("block_stats_flags_unknown", lambda: dom.blockStatsFlags("vdz", 0))
    step("stats_period_live", lambda: dom.setMemoryStatsPeriod(2, 0))
    step("stats_period_in_qemu", lambda: libvirt_qemu.qemuMonitorCommand(
        dom, '{"execute":"qom-get","arguments":{"path":"/machine/peripheral/balloon0",'
        '"property":"guest-stats-polling-interval"}}', 0), reply_shape)
    step("stats_period_both", lambda: dom.setMemoryStatsPeriod(4, libvirt.VIR_DOMAIN_AFFECT_LIVE
                                                                | libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    step("xml_inactive_after_period", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), normalise)
    step("if_stats_user", lambda: dom.interfaceStats(MAC))
    step("if_stats_unknown", lambda: dom.interfaceStats("nosuch0"))
    step("mem_stats", dom.memoryStats,
         lambda v: {"keys": sorted(v), "actual": v["actual"], "rss": v["rss"] > 0})
    step("cpu_stats", lambda: dom.getCPUStats(True),
         lambda v: [{k: isinstance(x, int) and x >= 0 for k, x in sorted(e.items())} for e in v])
    step("cpu_stats_bad_flags", lambda: dom.getCPUStats(True, 1 << 20))
    step("monitor_qmp", lambda: libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-status"}', 0),
         reply_shape)
    step("monitor_qmp_args", lambda: libvirt_qemu.qemuMonitorCommand(
        dom, '{"execute":"qom-get","arguments":{"path":"/machine","property":"type"}}', 0), reply_shape)
    step("monitor_qmp_refused", lambda: libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"nosuch"}', 0),
         reply_shape)
    step("monitor_not_json", lambda: libvirt_qemu.qemuMonitorCommand(dom, "info status", 0))
    step("monitor_with_id", lambda: libvirt_qemu.qemuMonitorCommand(
        dom, '{"execute":"query-status","id":"mine"}', 0))
    step("monitor_hmp", lambda: libvirt_qemu.qemuMonitorCommand(
        dom, "info status", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP))
    step("monitor_hmp_unknown", lambda: libvirt_qemu.qemuMonitorCommand(
        dom, "nosuchcmd", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP))
    step("monitor_bad_flags", lambda: libvirt_qemu.qemuMonitorCommand(dom, "info status", 4))
    step("shutdown_paused", dom.shutdown)
    step("xml_live", lambda: dom.XMLDesc(0), normalise)
    step("xml_live_inactive", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), normalise)
    step("list_ids", conn.listDomainsID, len)
    step("num_domains", conn.numOfDomains)
    step("list_defined_running", conn.listDefinedDomains)
    step("list_all_active", lambda: [d.name() for d in conn.listAllDomains(
        libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)])
    step("list_all_paused", lambda: [d.name() for d in conn.listAllDomains(
        libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)])
    step("lookup_by_id", lambda: conn.lookupByID(dom.ID()).name())
    step("lookup_by_uuid", lambda: conn.lookupByUUID(dom.UUID()).name())

    # -- running ------------------------------------------------------------------------------
    step("resume", dom.resume)
    step("state_resumed", dom.state)
    step("suspend", dom.suspend)
    step("state_suspended", dom.state)
    step("resume_again", dom.resume)
    step("shutdown_agent_only", lambda: dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT))
    step("shutdown_initctl", lambda: dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_INITCTL))
    step("updated_running", dom.isUpdated)

    # -- read-only ----------------------------------------------------------------------------
    ro = libvirt.openAuth(URI, [[libvirt.VIR_CRED_AUTHNAME], lambda creds, opaque: 0, None],
                          libvirt.VIR_CONNECT_RO)
    rodom = ro.lookupByName("cmp1")
    step("ro_define", lambda: ro.defineXML(domain_xml("cmp2", UUID2)))
    step("ro_destroy", rodom.destroy)
    step("ro_state", rodom.state)
    step("ro_xml_secure", lambda: rodom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
    step("ro_monitor", lambda: libvirt_qemu.qemuMonitorCommand(rodom, '{"execute":"query-status"}', 0))
    ro.close()

    # -- stopped ------------------------------------------------------------------------------
    step("destroy", dom.destroy)
    step("state_destroyed", dom.state)
    step("destroy_again", dom.destroy)
    step("id_after_destroy", dom.ID)

    # -- transient ----------------------------------------------------------------------------
    transient = domain_xml("cmp2", UUID2, current_mib=100, balloon="none")
    tdom = step("create_xml", lambda: conn.createXML(transient, libvirt.VIR_DOMAIN_START_PAUSED),
                lambda d: d.name())
    if tdom is not None:
        step("transient_persistent", tdom.isPersistent)
        step("transient_state", tdom.state)
        step("transient_info", tdom.info, lambda v: v[:4])
        step("transient_max_memory", tdom.maxMemory)
        step("transient_mem_stats", tdom.memoryStats, sorted)
        step("transient_stats_period", lambda: tdom.setMemoryStatsPeriod(5, 0))
        step("transient_xml", lambda: tdom.XMLDesc(0), normalise)
        step("transient_undefine", tdom.undefine)
        step("transient_autostart", lambda: tdom.setAutostart(1))
        step("transient_destroy", tdom.destroy)
        step("transient_gone", lambda: conn.lookupByName("cmp2"))

    # -- undefined ----------------------------------------------------------------------------
    step("undefine", dom.undefine)
    step("lookup_undefined", lambda: conn.lookupByName("cmp1"))
    step("undefine_again", dom.undefine)
    step("list_all_end", lambda: [d.name() for d in conn.listAllDomains(0)])
    consoles(conn)
    conn.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
