# SPDX-License-Identifier: LGPL-2.1-or-later
"""The secret methods of pyvirt's RPC client: :class:`pyvirt.remote.RemoteConnect` inherits them from
:class:`RemoteSecretMethods`."""

from __future__ import annotations

__all__ = ["RemoteSecretMethods"]


class RemoteSecretMethods:
    """RemoteConnect's secret methods (a mixin over RemoteConnect._call)."""
