"""Signers and verifiers for membership tests and simulations.

:class:`SimKeys` is a cheap keyed hash (blake2b) per member, fast enough for
1,000-node simulations; :class:`Ed25519Keys` uses real Ed25519 keys from
``cryptography``, as production does with each node's libp2p key. In both, a
member can sign only as itself: a claim naming another signer fails to verify.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class SimKeys:
    """Every member's key derived from its id and a cluster-wide test secret."""

    def __init__(self, secret: bytes = b"swim-sim") -> None:
        self._secret = secret
        self._keys: dict[str, bytes] = {}

    def _key(self, member: str) -> bytes:
        key = self._keys.get(member)
        if key is None:
            key = hashlib.blake2b(member.encode(), key=self._secret, digest_size=32).digest()
            self._keys[member] = key
        return key

    def signer(self, member: str) -> _HashSigner:
        """Signs as ``member``."""
        return _HashSigner(self._key(member))

    def verify(self, signer: str, data: bytes, signature: bytes) -> bool:
        """:class:`~praxis_grpc.membership.base.Verifier` for every member's key."""
        expected = hashlib.blake2b(data, key=self._key(signer), digest_size=16).digest()
        return expected == signature


class _HashSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self._key, digest_size=16).digest()


class Ed25519Keys:
    """A fresh Ed25519 key pair per member, the public halves known to all."""

    def __init__(self) -> None:
        self._private: dict[str, Ed25519PrivateKey] = {}

    def signer(self, member: str) -> _Ed25519Signer:
        """Signs as ``member`` (its key is created on first use)."""
        key = self._private.setdefault(member, Ed25519PrivateKey.generate())
        return _Ed25519Signer(key)

    def verify(self, signer: str, data: bytes, signature: bytes) -> bool:
        """:class:`~praxis_grpc.membership.base.Verifier` over the known public keys."""
        key = self._private.get(signer)
        if key is None:
            return False
        try:
            key.public_key().verify(signature, data)
        except InvalidSignature:
            return False
        return True


class _Ed25519Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)
