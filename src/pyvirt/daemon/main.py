# SPDX-License-Identifier: LGPL-2.1-or-later
"""The ``pyvirtd`` command: serve one pyvirt driver instance over libvirt's RPC protocol.

::

    pyvirtd [--config FILE] [--root DIR | --session] [--listen] [--timeout SECS] [--pid-file FILE]
            [--verbose]

Readiness: the pid file (``--pid-file``, else ``pyvirtd.pid`` next to the sockets) appears, whole,
only once every socket accepts connections; ``NOTIFY_SOCKET`` gets ``READY=1`` at the same moment.
``--timeout SECS``: exit once no client has been connected and no domain has run for SECS
seconds, removing the sockets and the pid file (libvirtd's semantics; a connection to
``qemu:///session`` starts ``pyvirtd --session --timeout 120`` on demand:
:mod:`pyvirt.rpc.autostart`). ``--session``: the session instance even for root.
Exit status: 0 after SIGTERM/SIGINT or the idle timeout, 1 when the configuration or the
instance forbids starting (nothing is then left bound or written), 2 for bad command-line usage.

Only the standard library is imported before the arguments are checked; the daemon, the driver
and asyncio come in afterwards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from pyvirt.daemon.config import DaemonConfig

_LEVELS = {1: 10, 2: 20, 3: 30, 4: 40}  # libvirt's log levels -> logging's


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyvirtd",
        description="Serve pyvirt's QEMU driver over libvirt's RPC protocol (virsh, libvirt-python "
                    "and pyvirt's own client can connect).")
    p.add_argument("-f", "--config", type=Path, metavar="FILE",
                   help="pyvirtd.conf to read (default: pyvirtd.conf in the instance's config "
                        "directory, if it exists)")
    p.add_argument("--root", type=Path, metavar="DIR",
                   help="serve the embed instance qemu:///embed?root=DIR, sockets in DIR/run")
    p.add_argument("--session", action="store_true",
                   help="serve qemu:///session, in the caller's XDG directories, even as root "
                        "(without --root, root's pyvirtd serves qemu:///system)")
    p.add_argument("-l", "--listen", action="store_true",
                   help="also listen on TCP and TLS as pyvirtd.conf says (listen_tcp, tcp_port, "
                        "listen_tls, tls_port, listen_addr)")
    p.add_argument("-t", "--timeout", type=float, metavar="SECS",
                   help="exit after SECS seconds without any client and without running "
                        "domains (the session daemon started on demand uses 120)")
    p.add_argument("-p", "--pid-file", type=Path, metavar="FILE",
                   help="where to write the daemon's pid once it accepts connections")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    return p


def _setup_logging(config: DaemonConfig, verbose: bool) -> None:
    import logging
    import logging.handlers

    root = logging.getLogger("pyvirt")
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s pyvirtd[%(process)d]: %(levelname)s: %(message)s")
    outputs = config.outputs
    lowest = 10 if verbose else min(_LEVELS[o.level] for o in outputs)
    root.setLevel(lowest)
    for out in outputs:
        handler: logging.Handler
        if out.kind == "file":
            assert out.target is not None
            handler = logging.FileHandler(out.target)
        elif out.kind == "syslog":
            handler = logging.handlers.SysLogHandler("/dev/log")
            handler.ident = f"{out.target}: "
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(_LEVELS[out.level])
        handler.setFormatter(fmt)
        root.addHandler(handler)
    if verbose and not any(o.kind == "stderr" for o in outputs):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run the daemon on libuv's event loop (uvloop) where it is installed, else on asyncio's own:
    uvloop spends about a tenth less CPU per call, which a single client's round trips feel."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        _parser().error("--timeout must be a positive number of seconds")
    if args.session and args.root is not None:
        _parser().error("--session and --root name different instances: give one of them")

    from pyvirt.daemon.config import load_daemon_config
    from pyvirt.daemon.instance import served_instance
    from pyvirt.daemon.server import Daemon, DaemonOptions, check_config
    from pyvirt.errors import PyvirtError

    try:
        instance = served_instance(args.root, session=args.session)
        config_path = args.config or instance.config_file
        config = load_daemon_config(config_path, required=args.config is not None)
        options = DaemonOptions(instance, config, listen=args.listen, timeout=args.timeout,
                                pid_file=args.pid_file.absolute() if args.pid_file else None)
        check_config(options)
        _setup_logging(config, args.verbose)
    except (PyvirtError, OSError) as exc:
        print(f"pyvirtd: error: {exc}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"pyvirtd: warning: {warning}", file=sys.stderr)

    async def run() -> None:
        daemon = Daemon(options)
        await daemon.start()
        await daemon.serve()

    try:
        _run(run())
    except (PyvirtError, OSError) as exc:
        print(f"pyvirtd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
