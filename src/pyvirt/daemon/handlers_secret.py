# SPDX-License-Identifier: LGPL-2.1-or-later
"""pyvirtd's handlers for the secret procedures (:mod:`pyvirt.rpc.procedures_secret`)."""

from __future__ import annotations
