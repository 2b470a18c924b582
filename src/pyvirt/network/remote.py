# SPDX-License-Identifier: LGPL-2.1-or-later
"""The network methods of pyvirt's RPC client: :class:`pyvirt.remote.RemoteConnect` inherits them from
:class:`RemoteNetworkMethods`."""

from __future__ import annotations

__all__ = ["RemoteNetworkMethods"]


class RemoteNetworkMethods:
    """RemoteConnect's network methods (a mixin over RemoteConnect._call)."""
