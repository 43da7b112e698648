"""Which cards are members' (``cluster.*``): each card carries its agent's certificate.

Admission (``discovery/_admission.py``) proves that a *connection* is a
member's; a card can still be relayed by a member on behalf of anyone (a
compromised member could relay cards of fresh keys, sybils). So in a
cluster every card travels with its agent's node certificate (DER, the
``certificate`` field of ``praxis.v1.SignedCard``), and every receiver
checks, for every card it accepts, own or relayed, that the certificate:

- is there (else ``no_certificate``),
- parses, is at most :data:`~praxis_grpc.cluster.MAX_CERT_BYTES`, was
  issued by a cluster CA and is valid now (else ``untrusted_certificate``),
- names the card's agent id in a ``praxis:peer:`` URI SAN (else
  ``foreign_certificate``: a member's certificate under another key),
- is not revoked: neither its serial nor its peer id is in
  ``cluster.revoked`` (else ``revoked_certificate``).

A card is re-sent every ``cards.ttl``/2 with the same certificate, so the
verdict is cached by (agent id, certificate digest), bounded, least recent
out; a hit costs a SHA-256 of the certificate and a validity-window
comparison. Statuses carry no certificate and are not verified: a status
is only merged for an agent whose card was accepted, and only until that
card's certificate expires (:meth:`CardCertificates.check` returns when).
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from praxis_grpc.card_codec import CardRejected
from praxis_grpc.certs import issued_by, peer_ids
from praxis_grpc.cluster import MAX_CERT_BYTES, ClusterCredentials

__all__ = ["CardCertificates"]

DEFAULT_VERDICTS = 4096


@dataclass(frozen=True)
class _Verdict:
    """What does not change for one certificate: the failure (None if it is a
    member's for this agent), and the window it is valid in."""

    rejected: CardRejected | None
    not_before: datetime
    not_after: datetime


class CardCertificates:
    """Checks card certificates against the cluster CA(s), caching verdicts.

    ``own`` is this node's certificate in DER, which it sends with its card.
    """

    def __init__(self, credentials: ClusterCredentials, size: int = DEFAULT_VERDICTS) -> None:
        self._cas = credentials.cas
        self._revoked = credentials.revoked
        self.own = credentials.cert_der
        self._size = size
        self._verdicts: OrderedDict[tuple[str, bytes], _Verdict] = OrderedDict()
        self.verified = 0

    def __len__(self) -> int:
        return len(self._verdicts)

    def check(self, agent_id: str, der: bytes, now: datetime) -> datetime:
        """Check that ``der`` makes ``agent_id`` a member at ``now``; returns
        when the certificate expires (after which its agent's statuses are refused).

        Raises:
            CardRejected: ``no_certificate``, ``untrusted_certificate``,
                ``foreign_certificate`` or ``revoked_certificate``.
        """
        if not der:
            raise CardRejected("no_certificate", f"{agent_id}'s card carries no certificate")
        if len(der) > MAX_CERT_BYTES:
            raise CardRejected("untrusted_certificate", f"over {MAX_CERT_BYTES} bytes")
        key = (agent_id, hashlib.sha256(der).digest())
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verify(agent_id, der)
            self.verified += 1
            self._verdicts[key] = verdict
            if len(self._verdicts) > self._size:
                self._verdicts.popitem(last=False)
        else:
            self._verdicts.move_to_end(key)
        if verdict.rejected is not None:
            raise verdict.rejected
        if not verdict.not_before <= now <= verdict.not_after:
            detail = f"{agent_id}'s certificate is not valid now"
            raise CardRejected("untrusted_certificate", detail)
        return verdict.not_after

    def _verify(self, agent_id: str, der: bytes) -> _Verdict:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            return _failed(CardRejected("untrusted_certificate", f"malformed: {exc}"))
        window = (cert.not_valid_before_utc, cert.not_valid_after_utc)
        if not any(issued_by(cert, ca) for ca in self._cas):
            subject = cert.subject.rfc4514_string()
            rejected = CardRejected("untrusted_certificate", f"{subject} not issued by the CA")
            return _Verdict(rejected, *window)
        named = peer_ids(cert)
        if agent_id not in named:
            rejected = CardRejected(
                "foreign_certificate", f"the certificate names {named or 'no peer'}, not {agent_id}"
            )
            return _Verdict(rejected, *window)
        why = self._revoked.revokes(cert)
        if why is not None:
            return _Verdict(CardRejected("revoked_certificate", why), *window)
        return _Verdict(None, *window)


def _failed(rejected: CardRejected) -> _Verdict:
    epoch = datetime.min
    return _Verdict(rejected, epoch, epoch)
