# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirsh's network commands: net-define, net-create, net-start, net-destroy, net-undefine, net-list,
net-info, net-dumpxml, net-autostart, net-dhcp-leases, net-name, net-uuid, with virsh 9.0's options,
output and messages (tools/virsh-network.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

from pyvirt.cli.common import CommandFailed, api_call, read_file, require_api, table

if TYPE_CHECKING:
    from pyvirt.cli.options import Args
    from pyvirt.connection import virConnect

# libvirt's values (include/libvirt/libvirt-network.h)
_XML_INACTIVE = 1
_LIST_INACTIVE, _LIST_ACTIVE = 1, 2
_LIST_PERSISTENT, _LIST_TRANSIENT = 4, 8
_LIST_AUTOSTART, _LIST_NO_AUTOSTART = 16, 32


def _looks_like_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _network(conn: virConnect, name: str, *, uuid_only: bool = False) -> Any:
    """virsh's virshCommandOptNetworkBy: by UUID when it looks like one, else by name."""
    from pyvirt.errors import PyvirtError

    last: PyvirtError | None = None
    if _looks_like_uuid(name):
        try:
            return conn.networkLookupByUUIDString(name)
        except PyvirtError as exc:
            last = exc
    if uuid_only:
        raise CommandFailed(f"failed to get network '{name}'")
    try:
        return conn.networkLookupByName(name)
    except PyvirtError as exc:
        last = exc
    raise CommandFailed(f"failed to get network '{name}'\n{last}")


def cmd_net_define(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = read_file(args.file)
    net = api_call(f"Failed to define network from {args.file}", conn.networkDefineXMLFlags, xml,
                   1 if args.validate else 0)
    if not args.quiet:
        out.write(f"Network {net.name()} defined from {args.file}\n")


def cmd_net_create(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    xml = read_file(args.file)
    net = api_call(f"Failed to create network from {args.file}", conn.networkCreateXMLFlags, xml,
                   1 if args.validate else 0)
    if not args.quiet:
        out.write(f"Network {net.name()} created from {args.file}\n")


def cmd_net_start(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    net = _network(conn, args.network)
    api_call(f"Failed to start network {net.name()}", net.create)
    if not args.quiet:
        out.write(f"Network {args.network} started\n")


def cmd_net_destroy(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    net = _network(conn, args.network)
    api_call(f"Failed to destroy network {args.network}", net.destroy)
    if not args.quiet:
        out.write(f"Network {args.network} destroyed\n")


def cmd_net_undefine(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    net = _network(conn, args.network)
    api_call(f"Failed to undefine network {args.network}", net.undefine)
    if not args.quiet:
        out.write(f"Network {args.network} has been undefined\n")


def cmd_net_autostart(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    net = _network(conn, args.network)
    if args.disable:
        api_call(f"failed to unmark network {args.network} as autostarted", net.setAutostart, 0)
        if not args.quiet:
            out.write(f"Network {args.network} unmarked as autostarted\n")
    else:
        api_call(f"failed to mark network {args.network} as autostarted", net.setAutostart, 1)
        if not args.quiet:
            out.write(f"Network {args.network} marked as autostarted\n")


def cmd_net_dumpxml(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    net = _network(conn, args.network)
    out.write(api_call(None, net.XMLDesc, _XML_INACTIVE if args.inactive else 0))


def cmd_net_info(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    from pyvirt.errors import PyvirtError

    net = _network(conn, args.network)
    out.write(f"{'Name:':<15} {net.name()}\n")
    out.write(f"{'UUID:':<15} {net.UUIDString()}\n")
    yes_no = {0: "no", 1: "yes"}
    for label, call in (("Active:", net.isActive), ("Persistent:", net.isPersistent),
                        ("Autostart:", net.autostart)):
        try:
            value = yes_no.get(call(), "unknown")
        except PyvirtError:
            value = "unknown"
        out.write(f"{label:<15} {value}\n")
    try:
        out.write(f"{'Bridge:':<15} {net.bridgeName()}\n")
    except PyvirtError:
        pass


def cmd_net_name(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(f"{_network(conn, args.network, uuid_only=True).name()}\n")


def cmd_net_uuid(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    out.write(f"{_network(conn, args.network).UUIDString()}\n")


def cmd_net_list(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    if sum(bool(x) for x in (args.table, args.name, args.uuid)) > 1:
        raise CommandFailed("Only one argument from --table, --name and --uuid may be specified.")
    flags = _LIST_ACTIVE
    if args.inactive:
        flags = _LIST_INACTIVE
    if args.all:
        flags = _LIST_ACTIVE | _LIST_INACTIVE
    flags |= (_LIST_PERSISTENT if args.persistent else 0) | (_LIST_TRANSIENT if args.transient else 0)
    flags |= (_LIST_AUTOSTART if args.autostart else 0) | (_LIST_NO_AUTOSTART if args.no_autostart else 0)
    nets = api_call("Failed to list networks", conn.listAllNetworks, flags)
    nets = sorted(nets, key=lambda n: n.name())
    if args.uuid or args.name:
        for n in nets:
            out.write(f"{n.UUIDString() if args.uuid else n.name()}\n")
        return
    rows = []
    for n in nets:
        rows.append([n.name(), "active" if n.isActive() else "inactive", "yes" if n.autostart() else "no",
                     "yes" if n.isPersistent() else "no"])
    out.write(table(rows, None if args.quiet else ["Name", "State", "Autostart", "Persistent"]))


def cmd_net_dhcp_leases(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    import time

    net = _network(conn, args.network)
    leases = api_call(f"Failed to get leases info for {args.network}", net.DHCPLeases, args.mac)
    rows = []
    for lease in sorted(leases, key=lambda le: (le["mac"], le["ipaddr"])):
        expiry = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease["expirytime"]))
        rows.append([expiry, lease["mac"], "ipv6" if lease["type"] == 1 else "ipv4",
                     f"{lease['ipaddr']}/{lease['prefix']}", lease["hostname"] or "-",
                     lease["clientid"] or "-"])
    out.write(table(rows, None if args.quiet else ["Expiry Time", "MAC address", "Protocol", "IP address",
                                                   "Hostname", "Client ID or DUID"]))


# -- net-event (and pool-event's shared wait) --------------------------------------------------------

#: virsh's words for virNetworkEventLifecycleType
_NET_EVENT_WORDS = ("Defined", "Undefined", "Started", "Stopped")


def watch_events(args: Args, out: TextIO, names: tuple[str, ...], register: Any, deregister: Any,
                 target: Any, handlers: dict[int, Any]) -> None:
    """virsh's net-event / pool-event: --list, or register ``handlers[id](waiter)``'s callback for
    the event named by --event (of ``target``, or all), wait for one event (--loop: until the
    timeout or ^C), then print how it ended and the count; exit status 1 when nothing came."""
    from pyvirt.cli.cmd_qemu import _Waiter

    if args.list:
        out.write("".join(n + "\n" for n in names))
        return
    if not args.event:
        raise CommandFailed("either --list or --event <type> is required")
    if args.event not in names:
        raise CommandFailed(f"unknown event type {args.event}")
    if args.timeout is not None and args.timeout < 1:
        raise CommandFailed(f"Numeric value '{args.timeout}' for <timeout> option is malformed or out of "
                            "range")
    waiter = _Waiter(out, args.loop, args.timestamp)
    callback_id = api_call("Failed to register event", register, target, names.index(args.event),
                           handlers[names.index(args.event)](waiter), None)
    try:
        try:
            if args.timeout:
                ended = "" if waiter.done.wait(args.timeout) else "event loop timed out\n"
            else:
                while not waiter.done.wait(3600):
                    pass
                ended = ""
        except KeyboardInterrupt:
            ended = "event loop interrupted\n"
    finally:
        try:
            deregister(callback_id)
        except Exception:  # noqa: BLE001 - the connection closes next anyway
            pass
    out.write(f"{ended}events received: {waiter.count}\n")
    if not waiter.count:
        raise CommandFailed()


def one_shot(waiter: Any, emit: Any) -> Any:
    """A callback printing what ``emit`` makes of its arguments; without --loop, only the first
    event (virsh ignores those that arrive before it stops waiting)."""
    def callback(*cb_args: Any) -> None:
        if waiter.loop or not waiter.count:
            waiter.emit(emit(*cb_args))
    return callback


def cmd_net_event(conn: virConnect, args: Args, out: TextIO, err: TextIO) -> None:
    def lifecycle(waiter: Any) -> Any:
        return one_shot(waiter, lambda _c, net, event, _detail, _opaque: (
            f"event 'lifecycle' for network {net.name()}: "
            f"{_NET_EVENT_WORDS[event] if 0 <= event < len(_NET_EVENT_WORDS) else 'unknown'}"))

    target = _network(conn, args.network) if args.network and not args.list else None
    watch_events(args, out, ("lifecycle",), require_api(conn, "networkEventRegisterAny"),
                 require_api(conn, "networkEventDeregisterAny"), target, {0: lifecycle})
