# SPDX-License-Identifier: LGPL-2.1-or-later
"""Which driver instance a pyvirtd serves, where its sockets and files live, and which
CONNECT_OPEN names address it.

One daemon serves exactly one instance, as libvirtd serves one QEMU driver:

* ``--root DIR``: the embed instance ``qemu:///embed?root=DIR``; sockets in ``DIR/run``, config in
  ``DIR/etc/pyvirtd.conf``;
* root without ``--root``: ``qemu:///system``; sockets in pyvirt's own run directory
  (``/run/pyvirt``, below ``$PYVIRT_PREFIX`` if set), never libvirt's;
* anyone else, and root with ``--session``: ``qemu:///session``; socket in
  ``$XDG_RUNTIME_DIR/pyvirt`` (no read-only socket, as libvirt's session daemon has none).

Names a client may open (the remote driver strips transport, host, port and its own parameters):
an empty name or NULL (the daemon's choice), or the instance's own URI. A client of an embed
daemon may also send ``qemu:///system`` or ``qemu:///session`` -- what libvirt's remote driver sends
for ``qemu+unix:///system?socket=DIR/run/libvirt-sock`` -- only when the daemon was started with
``--root`` *and* the name's instance is the one the caller can name by socket alone; see
:meth:`ServedInstance.check_name` for the rule and why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyvirt import _errcodes as codes
from pyvirt.conf.instance import session_paths, system_paths
from pyvirt.errors import PyvirtError
from pyvirt.uri import parse_uri

__all__ = ["ServedInstance", "served_instance", "SOCKET_NAME", "SOCKET_RO_NAME", "CONF_NAME"]

SOCKET_NAME = "libvirt-sock"
SOCKET_RO_NAME = "libvirt-sock-ro"
CONF_NAME = "pyvirtd.conf"
PID_NAME = "pyvirtd.pid"


class OpenRefused(PyvirtError):
    """CONNECT_OPEN named an instance this daemon does not serve."""

    code = codes.VIR_ERR_NO_CONNECT
    domain = codes.VIR_FROM_REMOTE


@dataclass(frozen=True)
class ServedInstance:
    kind: Literal["system", "session", "embed"]
    #: The URI handed to pyvirt.connection.open for each client.
    uri: str
    root: Path | None
    #: Where the sockets (and by default the pid file) live.
    run_dir: Path
    #: The default pyvirtd.conf.
    config_file: Path

    @property
    def has_ro_socket(self) -> bool:
        return self.kind != "session"

    @property
    def privileged(self) -> bool:
        return self.kind == "system"

    def check_name(self, name: str | None) -> None:
        """Accept the CONNECT_OPEN name or raise :class:`OpenRefused` saying what is served.

        An embed daemon also accepts ``qemu:///system`` (and ``qemu:///session``): libvirt's remote
        driver cannot send an embed URI over a socket (it refuses ``qemu+unix:///embed``), so a
        real virsh reaches an embed daemon only as ``qemu+unix:///system?socket=ROOT/run/
        libvirt-sock``. Whoever can reach the socket has already chosen this daemon; the name
        then only says "the daemon's instance". A system or session daemon stays strict: there a
        wrong name is a real mistake (a session URI sent to the system socket).
        """
        if not name:
            return
        try:
            uri = parse_uri(name)
        except PyvirtError as exc:
            raise OpenRefused(f"cannot open '{name}': {exc.message}; this pyvirtd serves "
                              f"{self.uri}") from exc
        if uri.is_remote or uri.transport is not None:
            raise OpenRefused(f"cannot open '{name}': a daemon opens local URIs only (the client "
                              f"strips transport and host); this pyvirtd serves {self.uri}")
        if uri.instance == self.kind == "embed":
            assert uri.embed_root is not None and self.root is not None
            if os.path.normpath(uri.embed_root) == os.path.normpath(self.root):
                return
        elif uri.instance == self.kind:
            return
        elif self.kind == "embed" and uri.instance in ("system", "session"):
            return
        raise OpenRefused(f"cannot open '{name}': this pyvirtd serves {self.uri} only; connect to "
                          f"the daemon of that instance, or open with the name {self.uri!r}")


def served_instance(root: Path | None, *, euid: int | None = None,
                    session: bool = False) -> ServedInstance:
    """The instance for ``--root`` (or None), as chosen by the daemon's user (``session``: the
    session instance whoever runs it)."""
    if root is not None:
        root = Path(os.path.abspath(root))
        # Refuse a root whose monitor sockets would not fit, before anything is created.
        parse_uri(f"qemu:///embed?root={root}")
        return ServedInstance("embed", f"qemu:///embed?root={root}", root, root / "run",
                              root / "etc" / CONF_NAME)
    euid = os.geteuid() if euid is None else euid
    if euid == 0 and not session:
        paths = system_paths()
        # system_paths().run_dir is <prefix>/run/pyvirt/qemu: the daemon's sockets go one up.
        return ServedInstance("system", "qemu:///system", None, paths.run_dir.parent,
                              paths.config_dir / CONF_NAME)
    paths = session_paths()
    # session_paths().run_dir is <runtime>/pyvirt/qemu/run: the daemon's socket goes two up.
    return ServedInstance("session", "qemu:///session", None, paths.run_dir.parent.parent,
                           paths.config_dir / CONF_NAME)
