"""The cluster's deny-list (``cluster.revoked``): members the CA once certified
that are no longer members.

A certificate stays valid until it expires; there is no CRL or OCSP here. The
deny-list file names what to refuse, one entry a line (``#`` starts a comment):

- a libp2p peer id (the agent id): every certificate naming it is refused;
- ``serial=HEX`` (``openssl x509 -serial -noout`` prints this; colons, case
  and a ``0x`` prefix are accepted): that certificate only.

Every node reads its own copy at start. Admission, card checks and the
members-only peer listener refuse what it names. Pure apart from reading the
file once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from praxis_grpc.certs import CertError, peer_ids, read_limited

__all__ = ["NOTHING_REVOKED", "Revocations"]

MAX_FILE_BYTES = 1024 * 1024
_PEER_ID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,128}")  # base58
_SERIAL = re.compile(r"serial\s*[=:]?\s*(?:0x)?([0-9a-fA-F:]+)")


@dataclass(frozen=True)
class Revocations:
    """Revoked peer ids and certificate serial numbers (empty: nothing revoked)."""

    peer_ids: frozenset[str] = frozenset()
    serials: frozenset[int] = frozenset()

    @classmethod
    def load(cls, path: Path) -> Revocations:
        """Read the deny-list at ``path``.

        Raises:
            CertError: unreadable, too large, or a line that is neither a peer id
                nor a serial (the message names ``cluster.revoked``, the file and
                the line).
        """
        data = read_limited("cluster.revoked", path, MAX_FILE_BYTES)
        ids: set[str] = set()
        serials: set[int] = set()
        for number, raw in enumerate(data.decode(errors="replace").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            serial = _SERIAL.fullmatch(line)
            if serial is not None and serial[1].replace(":", ""):
                serials.add(int(serial[1].replace(":", ""), 16))
            elif _PEER_ID.fullmatch(line):
                ids.add(line)
            else:
                raise CertError(
                    f"cluster.revoked: {path}:{number}: neither a peer id nor serial=HEX"
                )
        return cls(frozenset(ids), frozenset(serials))

    def __bool__(self) -> bool:
        return bool(self.peer_ids or self.serials)

    def refuses(self, peer_id: str, serial: int) -> bool:
        """True if ``peer_id`` or the certificate ``serial`` is revoked."""
        return peer_id in self.peer_ids or serial in self.serials

    def revokes(self, cert: x509.Certificate) -> str | None:
        """Why ``cert`` is revoked (its serial, or a peer id it names), or None."""
        if cert.serial_number in self.serials:
            return f"certificate serial {cert.serial_number:x} is revoked"
        named = [peer for peer in peer_ids(cert) if peer in self.peer_ids]
        return f"peer id {named[0]} is revoked" if named else None


NOTHING_REVOKED = Revocations()
"""The deny-list of a cluster without ``cluster.revoked``."""
