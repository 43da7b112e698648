"""The node's libp2p identity: a key pair on disk whose peer id is the agent id.

The key uses libp2p's protobuf key encoding, so the same file works for the
libp2p host and for any other libp2p implementation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, PrivateKey
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.peer.id import ID


class IdentityError(Exception):
    """The key file exists but cannot be used."""


@dataclass(frozen=True)
class Identity:
    """A node's key pair and the peer id derived from it."""

    key_pair: KeyPair
    peer_id: ID

    @property
    def agent_id(self) -> str:
        """The base58 peer id, used everywhere as the agent id."""
        return str(self.peer_id.to_base58())

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with the private key."""
        return bytes(self.key_pair.private_key.sign(data))


def load_or_create_identity(path: Path) -> Identity:
    """Load the key at ``path``, creating an Ed25519 key (mode 0600) if absent.

    Raises:
        IdentityError: the file is unreadable, not a libp2p private key, or
            readable by group/others.
    """
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise IdentityError(
                f"{path}: key file mode is {mode:o}; it must be 600 (chmod 600 {path})"
            )
        try:
            private = deserialize_private_key(path.read_bytes())
        except Exception as exc:
            raise IdentityError(f"{path}: not a libp2p private key: {exc}") from exc
        return _identity(private)
    path.parent.mkdir(parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pair.private_key.serialize())
        out.flush()
        os.fsync(out.fileno())
    return _identity(key_pair.private_key)


def _identity(private: PrivateKey) -> Identity:
    key_pair = KeyPair(private, private.get_public_key())
    return Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))


def next_incarnation(path: Path) -> int:
    """Increment and return the start counter kept at ``path`` (1 on first start).

    The new value is written atomically (temp file + rename) before it is
    returned, so two starts never share an incarnation.
    """
    try:
        current = int(path.read_text().strip() or 0)
    except FileNotFoundError:
        current = 0
    except ValueError as exc:
        raise IdentityError(f"{path}: not an integer incarnation counter") from exc
    value = current + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)
    return value
