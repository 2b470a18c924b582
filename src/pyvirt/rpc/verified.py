# SPDX-License-Identifier: LGPL-2.1-or-later
"""Client certificate chains a TLS server has verified against its CA, remembered so that a
client that reconnects is not verified again (pyvirtd on OpenSSL:
:func:`pyvirt.rpc.openssl_ext.remember_verified_chains`; on GnuTLS:
:class:`pyvirt.daemon.tls_gnutls.Credentials`). Each server decides until when a chain stays
verified; this keeps the chains, by the exact bytes of their certificates, until then."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["VerifiedChains"]


class VerifiedChains(OrderedDict[Hashable, float]):
    """A chain's key (its certificates' bytes) -> until when it is taken as verified, on the
    clock its server reads; :data:`MAX` of them at most, the least recently used dropped first."""

    MAX = 256

    def known(self, key: Hashable, now: float) -> bool:
        """Whether ``key`` was verified and still holds at ``now`` (past its time, it is
        forgotten)."""
        deadline = self.get(key)
        if deadline is None:
            return False
        if now < deadline:
            self.move_to_end(key)
            return True
        del self[key]
        return False

    def remember(self, key: Hashable, deadline: float) -> None:
        self[key] = deadline
        self.move_to_end(key)
        if len(self) > self.MAX:
            self.popitem(last=False)
