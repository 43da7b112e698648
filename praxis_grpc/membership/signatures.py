"""Checking signed items once: a bounded cache in front of a :class:`Verifier`."""

from __future__ import annotations

from collections import OrderedDict

from praxis_grpc.membership.base import Verifier
from praxis_grpc.membership.claims import Item


class VerifiedItems:
    """Remembers the verdict on each signed item (the whole item, signature included).

    Keyed by the item itself, so the same claim (member, incarnation, kind,
    accuser) with the same signature is checked once; a forgery with another
    signature is a different key and is checked on its own. Least recently
    used verdicts are forgotten beyond ``capacity``.
    """

    def __init__(self, verifier: Verifier, capacity: int) -> None:
        self._verifier = verifier
        self._capacity = capacity
        self._verdicts: OrderedDict[Item, bool] = OrderedDict()
        self.verified = 0

    def check(self, item: Item) -> bool:
        """True when ``item`` is signed by its :attr:`signer`."""
        verdict = self._verdicts.get(item)
        if verdict is not None:
            self._verdicts.move_to_end(item)
            return verdict
        self.verified += 1
        verdict = bool(item.signature) and self._verifier.verify(
            item.signer, item.body(), item.signature
        )
        self._verdicts[item] = verdict
        if len(self._verdicts) > self._capacity:
            self._verdicts.popitem(last=False)
        return verdict
