# SPDX-License-Identifier: LGPL-2.1-or-later
"""The network procedures of libvirt's REMOTE program (remote_protocol.x), declared on
:data:`pyvirt.rpc.procedures.PROCEDURES` (this module is imported at the end of that one)."""

from __future__ import annotations
