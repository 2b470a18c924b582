# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's handlers for the storage procedures (:mod:`pyvirt.rpc.procedures_storage`)."""

from __future__ import annotations
