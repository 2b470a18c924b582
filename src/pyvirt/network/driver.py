# SPDX-License-Identifier: LGPL-2.1-or-later
"""The virtual network driver of one instance: libvirt's network driver, embedded next to the QEMU
driver (libvirt itself cannot embed it).

Layout (libvirt's: /etc/libvirt/qemu/networks, /run/libvirt/network, /var/lib/libvirt/dnsmasq)::

    CONFIG/qemu/networks/NAME.xml           the persistent definition, as net-dumpxml --inactive prints it
    CONFIG/qemu/networks/autostart/NAME.xml a symlink to it: the network starts with the driver
    RUN/network/NAME.json                   a running network: its live XML and what its start made
    RUN/network/NAME.pid                    dnsmasq's pid file
    LIB/dnsmasq/NAME.conf                   dnsmasq's configuration (static hosts included)
    LIB/dnsmasq/NAME.leases                 dnsmasq's leases (what DHCPLeases reports)

where CONFIG is ``ROOT/etc`` (``/etc/pyvirt``), RUN ``ROOT/run`` (``/run/pyvirt``) and LIB ``ROOT/lib``
(``/var/lib/pyvirt``). Definitions are written atomically and kept in memory only once on disk.

Starting a network (privileged instances only) creates its bridge, address, dnsmasq and firewall
rules in that order; each step is recorded, and a failure undoes the steps already made, so a failed
start leaves nothing behind. Destroy undoes exactly the recorded steps. A network's definition gets
libvirt's defaults when defined: a UUID, a bridge name ``virbrN`` (the lowest free), ``stp='on'
delay='0'`` and a MAC address ``52:54:00:...`` for nat/route/open/isolated networks.

The 'default' network (NAT on virbr0 or the first free virbrN, 192.168.122.0/24 or the first free
/24 after it) is defined and
marked autostart the first time a privileged instance's network API is used, as Debian's libvirt
package installs it; a domain start that merely looks a network up does not create it.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import os
import random
import threading
import uuid as _uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pyvirt import _errcodes as codes
from pyvirt import object_events as ev
from pyvirt.errors import OperationFailed, PyvirtError
from pyvirt.fsutil import atomic_write_text
from pyvirt.network import host
from pyvirt.xml.network import NetBridge, NetMac, Network, parse_network

if TYPE_CHECKING:
    from pyvirt.conf.instance import InstancePaths
    from pyvirt.qemu.driver import QemuDriver

__all__ = ["NetworkPaths", "NetworkRef", "NetworkDriver", "network_paths", "driver_for", "DEFAULT_XML"]

log = logging.getLogger("pyvirt.network")

# libvirt's flag values (include/libvirt/libvirt-network.h)
XML_INACTIVE = 1
LIST_INACTIVE, LIST_ACTIVE = 1, 2
LIST_PERSISTENT, LIST_TRANSIENT = 4, 8
LIST_AUTOSTART, LIST_NO_AUTOSTART = 16, 32
_LIST_ALL = 63
DEFINE_VALIDATE = 1
CREATE_VALIDATE = 1

#: libvirt's default.xml, with the address range chosen at creation
DEFAULT_XML = """<network>
  <name>default</name>
  <bridge name='{bridge}'/>
  <forward/>
  <ip address='{prefix}.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='{prefix}.2' end='{prefix}.254'/>
    </dhcp>
  </ip>
</network>
"""

SESSION_REFUSAL = ("virtual networks need a privileged (root) instance: a session instance cannot create "
                   "bridges, run dnsmasq or add firewall rules. Use <interface type='user'> instead{passt}")


class NetworkPaths(NamedTuple):
    config_dir: Path
    autostart_dir: Path
    status_dir: Path
    dnsmasq_dir: Path


def network_paths(paths: InstancePaths) -> NetworkPaths:
    config = paths.domain_config_dir / "networks"
    return NetworkPaths(config, config / "autostart", paths.run_dir.parent / "network",
                        paths.lib_dir.parent / "dnsmasq")


class NetworkRef(NamedTuple):
    """What a virNetwork handle keeps: name and UUID."""

    name: str
    uuid: str


@dataclass
class _Running:
    """What a start made, in order; destroy undoes exactly this."""

    xml: str
    bridge: str | None = None       #: the bridge this start created
    dnsmasq_pid: int | None = None
    chains: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"xml": self.xml, "bridge": self.bridge, "dnsmasq_pid": self.dnsmasq_pid,
                           "chains": self.chains, "files": self.files})

    @classmethod
    def from_json(cls, text: str) -> _Running:
        data = json.loads(text)
        return cls(xml=data["xml"], bridge=data.get("bridge"), dnsmasq_pid=data.get("dnsmasq_pid"),
                   chains=list(data.get("chains") or []), files=list(data.get("files") or []))


@dataclass
class _Entry:
    definition: Network | None          #: the persistent definition (None: transient)
    live: Network | None = None         #: the running definition
    running: _Running | None = None
    autostart: bool = False

    @property
    def current(self) -> Network:
        found = self.live if self.live is not None else self.definition
        assert found is not None
        return found


def _error(code: int, message: str) -> PyvirtError:
    return PyvirtError(message, code=code, domain=codes.VIR_FROM_NETWORK)


def no_network_name(name: str) -> PyvirtError:
    detail = f"no network with matching name '{name}'"
    return PyvirtError(f"Network not found: {detail}", code=codes.VIR_ERR_NO_NETWORK,
                       domain=codes.VIR_FROM_NETWORK, str1="Network not found: %s", str2=detail)


def _no_network_uuid(uuid: str, name: str | None = None) -> PyvirtError:
    detail = f"no network with matching uuid '{uuid}'" + (f" ({name})" if name else "")
    return PyvirtError(f"Network not found: {detail}", code=codes.VIR_ERR_NO_NETWORK,
                       domain=codes.VIR_FROM_NETWORK, str1="Network not found: %s", str2=detail)


def check_flags(flags: int, allowed: int, function: str) -> None:
    if flags & ~allowed:
        raise PyvirtError(f"unsupported flags (0x{flags & ~allowed:x}) in function {function}",
                          code=codes.VIR_ERR_INVALID_ARG, domain=codes.VIR_FROM_NETWORK)


def passt_hint() -> str:
    import shutil

    return (", or <interface type='user'><backend type='passt'/></interface> (passt is installed)"
            if shutil.which("passt") else "")


class NetworkDriver:
    """The virtual networks of one driver instance."""

    #: the QEMU driver whose event bus carries this driver's events (set by driver_for)
    events_of: weakref.ref[QemuDriver] | None = None

    def __init__(self, paths: NetworkPaths, *, privileged: bool) -> None:
        self.paths = paths
        self.privileged = privileged
        self._lock = threading.RLock()
        self._nets: dict[str, _Entry] = {}
        self._default_checked = False
        self._load()

    # -- files -------------------------------------------------------------------------------------

    def _config_file(self, name: str) -> Path:
        return self.paths.config_dir / f"{name}.xml"

    def _autostart_link(self, name: str) -> Path:
        return self.paths.autostart_dir / f"{name}.xml"

    def _status_file(self, name: str) -> Path:
        return self.paths.status_dir / f"{name}.json"

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise OperationFailed(f"cannot create directory '{path}': {e.strerror}",
                                  domain=codes.VIR_FROM_NETWORK) from e

    def _load(self) -> None:
        try:
            files = sorted(self.paths.config_dir.glob("*.xml"))
        except OSError:
            files = []
        for path in files:
            try:
                net = parse_network(path.read_bytes())
                if net.name != path.name[:-4]:
                    raise _error(codes.VIR_ERR_INTERNAL_ERROR, f"network name '{net.name}' does not match "
                                 f"file name '{path.name}'")
            except (OSError, PyvirtError) as exc:
                log.error("Error reading network %s: %s; it is left out", path, exc)
                continue
            assert net.name is not None
            self._nets[net.name] = _Entry(net, autostart=self._autostart_link(net.name).exists())
        try:
            status = sorted(self.paths.status_dir.glob("*.json"))
        except OSError:
            status = []
        for path in status:
            name = path.name[:-5]
            try:
                running = _Running.from_json(path.read_text())
                live = parse_network(running.xml)
            except (OSError, ValueError, KeyError, PyvirtError) as exc:
                log.error("Error reading network status %s: %s", path, exc)
                continue
            if running.bridge is not None and not host.link_exists(running.bridge):
                # the host rebooted (or someone removed it): clean up what may remain
                self._undo(name, running)
                continue
            entry = self._nets.get(name)
            if entry is None:
                entry = self._nets[name] = _Entry(None)
            entry.live, entry.running = live, running

    # -- lookups -----------------------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        entry = self._nets.get(name)
        if entry is None:
            raise no_network_name(name)
        return entry

    @staticmethod
    def _ref(net: Network) -> NetworkRef:
        assert net.name is not None and net.uuid is not None
        return NetworkRef(net.name, net.uuid)

    def lookup_name(self, name: str) -> NetworkRef:
        with self._lock:
            return self._ref(self._entry(name).current)

    def lookup_uuid(self, uuid: str) -> NetworkRef:
        with self._lock:
            for entry in self._nets.values():
                if entry.current.uuid == uuid:
                    return self._ref(entry.current)
        raise _no_network_uuid(uuid)

    def _by_ref(self, ref: NetworkRef) -> _Entry:
        entry = self._nets.get(ref.name)
        if entry is None or entry.current.uuid != ref.uuid:
            raise _no_network_uuid(ref.uuid, ref.name)
        return entry

    def list_all(self, flags: int = 0) -> list[NetworkRef]:
        check_flags(flags, _LIST_ALL, "networkConnectListAllNetworks")
        found = []
        with self._lock:
            for entry in self._nets.values():
                active = entry.running is not None
                persistent = entry.definition is not None
                if flags & (LIST_ACTIVE | LIST_INACTIVE) and not (
                        flags & LIST_ACTIVE and active or flags & LIST_INACTIVE and not active):
                    continue
                if flags & (LIST_PERSISTENT | LIST_TRANSIENT) and not (
                        flags & LIST_PERSISTENT and persistent or flags & LIST_TRANSIENT and not persistent):
                    continue
                if flags & (LIST_AUTOSTART | LIST_NO_AUTOSTART) and not (
                        flags & LIST_AUTOSTART and entry.autostart or flags & LIST_NO_AUTOSTART
                        and not entry.autostart):
                    continue
                found.append(self._ref(entry.current))
        return found

    def info(self, ref: NetworkRef) -> dict[str, Any]:
        with self._lock:
            entry = self._by_ref(ref)
            return {"active": entry.running is not None, "persistent": entry.definition is not None,
                    "autostart": entry.autostart, "bridge": entry.current.bridge_name}

    def bridge_name(self, ref: NetworkRef) -> str:
        with self._lock:
            bridge = self._by_ref(ref).current.bridge_name
            if not bridge:
                raise _error(codes.VIR_ERR_INTERNAL_ERROR, f"internal error: network '{ref.name}' does not "
                             "have a bridge name.")
            return bridge

    def xml_desc(self, ref: NetworkRef, flags: int = 0) -> str:
        check_flags(flags, XML_INACTIVE, "networkGetXMLDesc")
        with self._lock:
            entry = self._by_ref(ref)
            net = entry.definition if flags & XML_INACTIVE and entry.definition is not None else entry.current
            return net.to_xml()

    # -- definitions -------------------------------------------------------------------------------

    def _used_bridges(self, skip: str | None = None) -> set[str]:
        return {e.current.bridge_name or "" for n, e in self._nets.items() if n != skip} | {
            e.definition.bridge_name or "" for n, e in self._nets.items() if n != skip and e.definition}

    def _fill_defaults(self, net: Network, old: _Entry | None) -> None:
        """libvirt's define-time defaults (networkValidate / virNetworkSetBridgeName...)."""
        assert net.uuid is not None  # given by _check_unique
        mode = net.forward_mode
        if mode in ("nat", "route", "open", "none"):
            if net.bridge is None:
                net.bridge = NetBridge()
            bridge = net.bridge
            assert net.name is not None
            used = self._used_bridges(skip=net.name)
            if not bridge.name or "%d" in bridge.name:
                template = bridge.name or "virbr%d"
                n = 0
                while template.replace("%d", str(n)) in used:
                    n += 1
                bridge.name = template.replace("%d", str(n))
            elif bridge.name in used:
                raise _error(codes.VIR_ERR_INTERNAL_ERROR,
                             f"internal error: bridge name '{bridge.name}' already in use.")
            host.check_ifname(bridge.name)
            bridge.stp = "off" if bridge.stp == "off" else "on"
            if bridge.delay is None:
                bridge.delay = 0
            if net.mac is None or net.mac.address is None:
                old_mac = old.current.mac.address if old is not None and old.current.mac is not None else None
                net.mac = NetMac(address=old_mac or "52:54:00:" + ":".join(
                    f"{random.randrange(256):02x}" for _ in range(3)))
        elif mode == "bridge":
            if net.bridge is None or not net.bridge.name:
                if net.forward is None or not net.forward.dev:
                    raise _error(codes.VIR_ERR_XML_ERROR, f"XML error: forward mode 'bridge' of network "
                                 f"'{net.name}' needs <bridge name='BRIDGE'/> naming an existing host bridge")
            else:
                host.check_ifname(net.bridge.name)
            if net.ips:
                raise _error(codes.VIR_ERR_XML_ERROR, f"XML error: Unsupported <ip> element in network "
                             f"{net.name} with forward mode='bridge'")

    def _check_unique(self, net: Network) -> _Entry | None:
        """libvirt's virNetworkObjAssignDef checks: the same name must have the same UUID and the
        reverse; returns the existing entry of this network. A document without a UUID gets a new
        one first, as libvirt's parser gives it (so redefining a network needs its UUID)."""
        if net.uuid is None:
            net.uuid = str(_uuid.uuid4())
        for name, entry in self._nets.items():
            cur = entry.current
            if net.uuid is not None and cur.uuid == net.uuid and name != net.name:
                raise _error(codes.VIR_ERR_OPERATION_FAILED, f"operation failed: network '{name}' is already "
                             f"defined with uuid {cur.uuid}")
            if name == net.name and net.uuid is not None and cur.uuid != net.uuid:
                raise _error(codes.VIR_ERR_OPERATION_FAILED, f"operation failed: network '{name}' already "
                             f"exists with uuid {cur.uuid}")
        assert net.name is not None
        return self._nets.get(net.name)

    def define_xml(self, xml: str | bytes, flags: int = 0) -> NetworkRef:
        check_flags(flags, DEFINE_VALIDATE, "networkDefineXMLFlags")
        net = parse_network(xml, validate=bool(flags & DEFINE_VALIDATE))
        with self._lock:
            self._ensure_default()
            old = self._check_unique(net)
            self._fill_defaults(net, old)
            assert net.name is not None
            self._mkdir(self.paths.config_dir)
            atomic_write_text(self._config_file(net.name), net.to_xml(), mode=0o600)
            if old is None:
                self._nets[net.name] = _Entry(net)
            else:
                old.definition = net
            log.debug("network %s defined", net.name)
            ev.emit_network(self.events_of, *self._ref(net), ev.NET_DEFINED)
            return self._ref(net)

    def create_xml(self, xml: str | bytes, flags: int = 0) -> NetworkRef:
        check_flags(flags, CREATE_VALIDATE, "networkCreateXMLFlags")
        net = parse_network(xml, validate=bool(flags & CREATE_VALIDATE))
        with self._lock:
            self._ensure_default()
            old = self._check_unique(net)
            if old is not None and old.running is not None:
                raise _error(codes.VIR_ERR_OPERATION_INVALID, f"Requested operation is not valid: network "
                             f"'{net.name}' is already active")
            self._fill_defaults(net, old)
            assert net.name is not None
            entry = old if old is not None else _Entry(None)
            self._start(net.name, entry, net)
            self._nets[net.name] = entry
            ev.emit_network(self.events_of, *self._ref(net), ev.NET_STARTED)
            return self._ref(net)

    def undefine(self, ref: NetworkRef) -> None:
        with self._lock:
            entry = self._by_ref(ref)
            if entry.definition is None:
                raise _error(codes.VIR_ERR_OPERATION_INVALID, f"Requested operation is not valid: network "
                             f"'{ref.name}' is not persistent")
            for path in (self._autostart_link(ref.name), self._config_file(ref.name)):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise OperationFailed(f"cannot remove '{path}': {e.strerror}",
                                          domain=codes.VIR_FROM_NETWORK) from e
            entry.definition = None
            entry.autostart = False
            if entry.running is None:
                del self._nets[ref.name]
            ev.emit_network(self.events_of, *ref, ev.NET_UNDEFINED)

    def set_autostart(self, ref: NetworkRef, autostart: bool) -> None:
        with self._lock:
            entry = self._by_ref(ref)
            if entry.definition is None:
                raise _error(codes.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: cannot set "
                             "autostart for transient network")
            link = self._autostart_link(ref.name)
            if autostart and not link.is_symlink():
                self._mkdir(self.paths.autostart_dir)
                try:
                    link.symlink_to(self._config_file(ref.name))
                except OSError as e:
                    target = self._config_file(ref.name)
                    raise OperationFailed(f"Failed to create symlink '{link}' to '{target}': {e.strerror}",
                                          domain=codes.VIR_FROM_NETWORK) from e
            elif not autostart:
                try:
                    link.unlink()
                except FileNotFoundError:
                    pass
            entry.autostart = autostart

    # -- the default network -----------------------------------------------------------------------

    def _ensure_default(self) -> None:
        """Define 'default' on the first use of a privileged instance's network API (its config
        directory does not exist yet), marked autostart, and start the autostart networks once."""
        if self._default_checked or not self.privileged:
            return
        self._default_checked = True  # before define_xml, which comes back here
        try:
            if not self.paths.config_dir.exists() and "default" not in self._nets:
                prefix = self._free_prefix()
                try:
                    ref = self.define_xml(DEFAULT_XML.format(prefix=prefix, bridge=self._free_bridge()))
                    self.set_autostart(ref, True)
                    entry = self._nets[ref.name]
                    assert entry.definition is not None
                    # started now, as a daemon starting after the package's install would
                    self._start(ref.name, entry, entry.definition)
                except PyvirtError as exc:
                    log.warning("cannot define or start the default network: %s", exc)
        except BaseException:
            self._default_checked = False  # tried again on the next call
            raise
        self.autostart()

    def _free_bridge(self) -> str:
        """virbr0, or the first virbrN that neither a network nor the host uses (a libvirt on the
        same host has its own virbr0)."""
        used = self._used_bridges()
        n = 0
        while f"virbr{n}" in used or host.link_exists(f"virbr{n}"):
            n += 1
        return f"virbr{n}"

    def _free_prefix(self) -> str:
        """192.168.122 or the first /24 after it that no host route, address or network uses."""
        taken = [n for _, n in host.host_networks()]
        for entry in self._nets.values():
            ip = entry.current.ipv4()
            if ip is not None:
                taken.append(ip.interface().network)
        for third in range(122, 256):
            candidate = ipaddress.ip_network(f"192.168.{third}.0/24")
            if not any(candidate.overlaps(t) for t in taken):
                return f"192.168.{third}"
        return "192.168.122"

    def autostart(self) -> None:
        """Start the autostart networks, once per boot (a marker in the run directory)."""
        marker = self.paths.status_dir / "autostarted"
        if marker.exists():
            return
        try:
            self._mkdir(self.paths.status_dir)
            marker.touch()
        except (OSError, PyvirtError) as exc:
            log.warning("network autostart skipped: %s", exc)
            return
        for name, entry in list(self._nets.items()):
            if entry.autostart and entry.running is None and entry.definition is not None:
                try:
                    self._start(name, entry, entry.definition)
                except PyvirtError as exc:
                    log.warning("autostart of network '%s' failed: %s", name, exc)

    def api_used(self) -> None:
        """The network API's first call in this process (not a domain start's lookup)."""
        with self._lock:
            self._ensure_default()

    # -- start and stop ----------------------------------------------------------------------------

    def create(self, ref: NetworkRef) -> None:
        with self._lock:
            entry = self._by_ref(ref)
            if entry.running is not None:
                raise _error(codes.VIR_ERR_OPERATION_INVALID, f"Requested operation is not valid: network "
                             f"'{ref.name}' is already active")
            assert entry.definition is not None
            self._start(ref.name, entry, entry.definition)
            ev.emit_network(self.events_of, *ref, ev.NET_STARTED)

    def refuse_unprivileged(self) -> None:
        if not self.privileged:
            raise _error(codes.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: " +
                         SESSION_REFUSAL.format(passt=passt_hint()))

    def _check_overlap(self, name: str, net: Network) -> None:
        ip = net.ipv4()
        if ip is None:
            return
        mine = ip.interface().network
        for other_name, entry in self._nets.items():
            if other_name == name or entry.running is None or entry.live is None:
                continue
            other = entry.live.ipv4()
            if other is not None and other.interface().network.overlaps(mine):
                raise _error(codes.VIR_ERR_INTERNAL_ERROR, f"internal error: Network {mine} of network "
                             f"'{name}' overlaps network {other.interface().network} of running network "
                             f"'{other_name}': choose another address range")
        for ifname, other_net in host.host_networks(exclude_ifname=net.bridge_name):
            if other_net.version == 4 and other_net.overlaps(mine):
                raise _error(codes.VIR_ERR_INTERNAL_ERROR, f"internal error: Network is already in use by "
                             f"interface {ifname} ({other_net} overlaps {mine} of network '{name}'): choose "
                             "another address range")

    def _start(self, name: str, entry: _Entry, definition: Network) -> None:
        """libvirt's networkStartNetwork: every step recorded, all undone if one fails."""
        self.refuse_unprivileged()
        net = copy.deepcopy(definition)
        mode = net.forward_mode
        if mode not in ("nat", "route", "open", "none", "bridge"):
            raise _error(codes.VIR_ERR_CONFIG_UNSUPPORTED, f"unsupported configuration: forward mode "
                         f"'{mode}' of network '{name}' is not supported by pyvirt (use nat, route, open, "
                         "bridge, or no <forward> for an isolated network)")
        _check_supported(name, net)
        running = _Running(xml="")
        if mode == "bridge":
            bridge = net.bridge_name
            if bridge and not host.link_exists(bridge):
                raise _error(codes.VIR_ERR_NO_SUPPORT, f"Cannot get interface MTU on '{bridge}': No such "
                             f"device: the host bridge named by network '{name}' must exist before it starts")
            self._commit_start(name, entry, net, running)
            return
        bridge = net.bridge_name
        assert bridge is not None
        if host.link_exists(bridge):
            raise _error(codes.VIR_ERR_SYSTEM_ERROR,
                         f"Unable to create bridge {bridge}: File exists: the host already has an "
                         f"interface named {bridge}; give network '{name}' another <bridge name=.../>")
        self._check_overlap(name, net)
        ip = net.ipv4()
        running.xml = net.to_xml()  # the live definition: nothing below changes it
        want_dnsmasq = ip is not None and (ip.dhcp is not None or net.dns is None
                                           or net.dns.enable is not False)
        try:
            self._mkdir(self.paths.status_dir)
            host.create_bridge(bridge, mac=net.mac.address if net.mac else None,
                               stp=(net.bridge.stp if net.bridge else "on") != "off",
                               delay=(net.bridge.delay or 0) if net.bridge else 0,
                               address=ip.interface() if ip is not None else None)
            running.bridge = bridge
            if want_dnsmasq:
                # recorded before they exist: a stop (or a crash's cleanup) removes what is there
                files = self._dnsmasq_files(name)
                running.files += [str(files["conf"]), str(files["pid"])]
                if not files["leases"].exists():
                    running.files.append(str(files["leases"]))  # made by this start: a failed one removes it
            self._save_status(name, running)
            if ip is not None and mode in ("nat", "route"):
                ip_if = ip.interface()
                assert isinstance(ip_if, ipaddress.IPv4Interface)
                assert net.uuid is not None
                running.chains = host.add_rules(name, net.uuid, bridge, ip_if.network, mode)
                self._save_status(name, running)
                host.enable_forwarding()
            if want_dnsmasq:
                running.dnsmasq_pid = self._start_dnsmasq(name, net)
            self._commit_start(name, entry, net, running)
        except BaseException:
            self._undo(name, running, failed=True)
            raise

    def _commit_start(self, name: str, entry: _Entry, net: Network, running: _Running) -> None:
        if not running.xml:
            running.xml = net.to_xml()
        self._save_status(name, running)
        entry.live, entry.running = net, running
        log.debug("network %s started", name)

    def _save_status(self, name: str, running: _Running) -> None:
        self._mkdir(self.paths.status_dir)
        # run-time state (RUN is a tmpfs on a host): replaced whole, but not fsync'ed -- after a power
        # cut the bridge and dnsmasq it describes are gone too, and _load cleans up after it
        atomic_write_text(self._status_file(name), running.to_json(), mode=0o600, durable=False)

    def _dnsmasq_files(self, name: str) -> dict[str, Path]:
        d = self.paths.dnsmasq_dir
        return {"conf": d / f"{name}.conf", "leases": d / f"{name}.leases",
                "pid": self.paths.status_dir / f"{name}.pid"}

    def _start_dnsmasq(self, name: str, net: Network) -> int:
        ip = net.ipv4()
        assert ip is not None and net.bridge_name is not None
        files = self._dnsmasq_files(name)
        self._mkdir(self.paths.dnsmasq_dir)
        ranges: list[tuple[str, str]] = []
        dhcp_hosts: list[tuple[str | None, str | None, str | None]] = []
        if ip.dhcp is not None:
            ranges = [(r.start or "", r.end or "") for r in ip.dhcp.ranges]
            dhcp_hosts = [(h.mac, h.name, h.ip) for h in ip.dhcp.hosts]
        dns_hosts: list[tuple[str, list[str]]] = []
        forwarders: list[str] = []
        if net.dns is not None:
            dns_hosts = [(dh.ip or "", [hn.text or "" for hn in dh.hostnames]) for dh in net.dns.hosts]
            forwarders = [f.addr for f in net.dns.forwarders if f.addr]
        ip_if = ip.interface()
        assert isinstance(ip_if, ipaddress.IPv4Interface)
        conf = host.dnsmasq_config(name=name, bridge=net.bridge_name, pid_file=files["pid"],
                                   lease_file=files["leases"], ip=ip_if, ranges=ranges, dhcp_hosts=dhcp_hosts,
                                   dns_hosts=dns_hosts, forwarders=forwarders,
                                   domain=net.domain.name if net.domain is not None else None)
        atomic_write_text(files["conf"], conf, mode=0o600, durable=False)  # rewritten by each start
        return host.start_dnsmasq(files["conf"], files["pid"])

    def _undo(self, name: str, running: _Running, *, failed: bool = False) -> None:
        """Remove what ``running`` records, in reverse order; problems are logged, not raised.
        A stop keeps the lease file (libvirt keeps its lease status); a failed start removes the one
        it made."""
        # libvirt's order (networkShutdownNetworkVirtual): SIGTERM to dnsmasq, firewall rules, bridge;
        # here the kernel deletes the bridge while nft runs, and dnsmasq's exit is waited for last
        dnsmasq = host.signal_dnsmasq(running.dnsmasq_pid)
        deletion = None
        if running.bridge:
            try:
                deletion = host.begin_delete_link(running.bridge)
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                log.warning("network %s: deleting bridge %s: %s", name, running.bridge, exc)
        if running.chains:
            try:
                host.remove_rules(running.chains)
            except Exception as exc:  # noqa: BLE001
                log.warning("network %s: removing firewall rules: %s", name, exc)
        if deletion is not None:
            try:
                deletion.wait()
            except Exception as exc:  # noqa: BLE001
                log.warning("network %s: deleting bridge %s: %s", name, running.bridge, exc)
        try:
            host.stop_dnsmasq(dnsmasq)
        except Exception as exc:  # noqa: BLE001 - cleanup goes on
            log.warning("network %s: stopping dnsmasq: %s", name, exc)
        for f in running.files:
            if f.endswith(".leases") and not failed:
                continue  # kept, as libvirt keeps its lease status, for the next start
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("network %s: removing %s: %s", name, f, exc)
        try:
            self._status_file(name).unlink()
        except FileNotFoundError:
            pass

    def destroy(self, ref: NetworkRef) -> None:
        with self._lock:
            entry = self._by_ref(ref)
            if entry.running is None:
                raise _error(codes.VIR_ERR_OPERATION_INVALID, f"Requested operation is not valid: network "
                             f"'{ref.name}' is not active")
            self._undo(ref.name, entry.running)
            entry.running = entry.live = None
            if entry.definition is None:
                del self._nets[ref.name]
            log.debug("network %s destroyed", ref.name)
            ev.emit_network(self.events_of, *ref, ev.NET_STOPPED)

    def stop_all(self) -> None:
        """Stop every running network (tests and benchmarks tearing an instance down)."""
        with self._lock:
            for entry in list(self._nets.values()):
                if entry.running is not None:
                    self.destroy(self._ref(entry.current))

    # -- leases and bridges for the QEMU driver ----------------------------------------------------

    def dhcp_leases(self, ref: NetworkRef, mac: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            entry = self._by_ref(ref)
            if entry.running is None or entry.live is None:
                return []
            ip = entry.live.ipv4()
            prefix = ip.interface().network.prefixlen if ip is not None else 0
            leases = []
            for lease in host.read_leases(self._dnsmasq_files(ref.name)["leases"]):
                if mac is not None and lease["mac"].lower() != mac.lower():
                    continue
                leases.append({"iface": entry.live.bridge_name or "", "expirytime": lease["expirytime"],
                               "type": 0, "mac": lease["mac"], "iaid": None, "ipaddr": lease["ipaddr"],
                               "prefix": prefix, "hostname": lease["hostname"],
                               "clientid": lease["clientid"]})
            return leases

    def bridge_for_domain(self, network: str) -> str:
        """The bridge a domain's ``<interface type='network'>`` attaches to (libvirt's port
        allocation): the network must exist and be active."""
        with self._lock:
            entry = self._entry(network)
            if entry.running is None or entry.live is None:
                raise _error(codes.VIR_ERR_OPERATION_INVALID, f"Requested operation is not valid: network "
                             f"'{network}' is not active")
            bridge = entry.live.bridge_name
            if not bridge:
                raise _error(codes.VIR_ERR_CONFIG_UNSUPPORTED, f"unsupported configuration: network "
                             f"'{network}' has no bridge to attach an interface to")
            return bridge


def _check_supported(name: str, net: Network) -> None:
    """What libvirt's network driver does and pyvirt's does not yet: refused before the host is
    touched, rather than silently left out."""
    missing = []
    if any(ip.is_ipv6 for ip in net.ips):
        missing.append("IPv6 addresses (<ip family='ipv6'>)")
    if len([ip for ip in net.ips if not ip.is_ipv6]) > 1:
        missing.append("more than one IPv4 <ip>")
    for ip in net.ips:
        if ip.tftp is not None:
            missing.append("TFTP (<tftp>)")
        if ip.dhcp is not None and ip.dhcp.bootp is not None:
            missing.append("BOOTP (<bootp>)")
        if ip.dhcp is not None and any(h.id for h in ip.dhcp.hosts):
            missing.append("DHCP hosts by client id (<host id=...>)")
    if missing:
        raise _error(codes.VIR_ERR_CONFIG_UNSUPPORTED, f"unsupported configuration: network '{name}' uses "
                     f"{', '.join(missing)}, which pyvirt's network driver does not provide yet; remove it "
                     "from the definition (net-edit) to start the network")


_drivers: weakref.WeakKeyDictionary[QemuDriver, NetworkDriver] = weakref.WeakKeyDictionary()
_drivers_lock = threading.Lock()


def is_privileged(paths: InstancePaths) -> bool:
    return paths.kind != "session" and os.geteuid() == 0


def driver_for(qemu: QemuDriver) -> NetworkDriver:
    """The network driver of the instance ``qemu`` drives, made on first use."""
    with _drivers_lock:
        found = _drivers.get(qemu)
        if found is None:
            found = _drivers[qemu] = NetworkDriver(network_paths(qemu.paths),
                                                   privileged=is_privileged(qemu.paths))
            found.events_of = weakref.ref(qemu)
            if found.privileged:
                # networks marked autostart (only ever by a user of the network API) start before
                # any domain needs them, once per boot
                with found._lock:
                    found.autostart()
        return found
