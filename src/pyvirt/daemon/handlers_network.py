# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's handlers for the network procedures (:mod:`pyvirt.rpc.procedures_network`)."""

from __future__ import annotations
