# SPDX-License-Identifier: LGPL-2.1-or-later
"""The storage methods of pyvirt's RPC client: :class:`pyvirt.remote.RemoteConnect` inherits them from
:class:`RemoteStorageMethods`."""

from __future__ import annotations

__all__ = ["RemoteStorageMethods"]


class RemoteStorageMethods:
    """RemoteConnect's storage methods (a mixin over RemoteConnect._call)."""
