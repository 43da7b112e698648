"""API tokens: the file that holds them (``api.auth.tokens_file``) and the
check of a presented token against it.

A token is a random string (``praxis_`` and 43 URL-safe base64 characters:
256 bits) that is shown once, when :func:`add_token` creates it, and stored
only as its SHA-256 digest. The file is a YAML list::

    - {name: ci, role: client, sha256: 9f86d0...}
    - {name: grafana, role: reader, sha256: 60303a...}

Names identify the caller (a task's ``submitter``); they are not secret. A
token never appears in a log line, an error message or a metric label: only
the name of the entry it matched does.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from praxis_grpc.bounded_read import TooLarge, read_bounded

__all__ = ["Role", "TokenEntry", "TokenFileError", "TokenStore", "add_token", "new_token"]

TOKEN_PREFIX = "praxis_"  # noqa: S105 - a prefix that makes tokens recognisable
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_FILE_BYTES = 1024 * 1024


class Role(enum.IntEnum):
    """What a token may do; each role may do everything the ones below it may.

    - ``reader``: read tasks (all of them: monitoring), cards, the agent, peers.
    - ``client``: submit tasks; read and cancel its own tasks only.
    - ``admin``: everything, including ``Drain`` and other clients' tasks.
    """

    READER = 1
    CLIENT = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role as written in the tokens file (``reader``, ``client``, ``admin``)."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: object) -> Role:
        """The role written ``value``.

        Raises:
            ValueError: not one of ``reader``, ``client``, ``admin``.
        """
        for role in cls:
            if value == role.label:
                return role
        raise ValueError(f"{value!r} is not a role (reader, client, admin)")


@dataclass(frozen=True)
class TokenEntry:
    """One token of the file: who (``name``), what it may do, and its digest."""

    name: str
    role: Role
    sha256: str


class TokenFileError(Exception):
    """The tokens file cannot be read or is malformed; the message names the
    file and the entry and key at fault (never a token)."""


def digest(token: str) -> str:
    """The hex SHA-256 of ``token``, as the file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenStore:
    """The tokens a node accepts. Immutable; safe to share between calls.

    :meth:`authenticate` costs one SHA-256 and one dict lookup, whatever the
    number of entries. The lookup is keyed by the digest, not the token: how
    long it takes may tell how much of a digest matched, which does not help
    find a 256-bit token whose SHA-256 it is.
    """

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._entries = tuple(entries)
        self._by_digest = {entry.sha256: entry for entry in self._entries}

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        """The tokens in the file ``path``.

        Raises:
            TokenFileError: unreadable, too large, not YAML, not a list of
                entries, an entry without a valid ``name``, ``role`` or
                ``sha256``, or two entries with one name or one digest.
        """
        return cls(_read_entries(path))

    @property
    def entries(self) -> tuple[TokenEntry, ...]:
        """Every entry, in file order."""
        return self._entries

    def authenticate(self, token: str) -> TokenEntry | None:
        """The entry whose digest is that of ``token``, or None."""
        return self._by_digest.get(digest(token))


def add_token(path: Path, name: str, role: Role) -> str:
    """Create a token for ``name`` with ``role``, append its digest to the
    file ``path`` (created, mode 0600, if absent) and return the token: the
    only time it is seen.

    Raises:
        TokenFileError: the file is malformed, or already has an entry ``name``.
        ValueError: ``name`` is not a valid name.
        OSError: the file cannot be written.
    """
    if not _NAME_RE.match(name):
        raise ValueError(
            f"name {name!r} must be 1-63 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    entries = _read_entries(path) if path.exists() else []
    if any(entry.name == name for entry in entries):
        raise TokenFileError(f"{path}: a token named {name!r} already exists")
    token = new_token()
    entry = yaml.safe_dump(
        {"name": name, "role": role.label, "sha256": digest(token)},
        default_flow_style=True,
        sort_keys=False,
        width=1000,
    ).strip()
    separator = "\n" if path.exists() and not path.read_bytes().endswith(b"\n") else ""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as file:
        file.write(f"{separator}- {entry}\n")
    return token


def _read_entries(path: Path) -> list[TokenEntry]:
    try:
        raw = read_bounded(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except TooLarge:
        raise TokenFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TokenFileError(f"{path}: not a YAML file: {type(exc).__name__}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise TokenFileError(f"{path}: must be a list of {{name, role, sha256}} entries")
    entries = [_entry(path, index, item) for index, item in enumerate(data)]
    for key in ("name", "sha256"):
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            value = getattr(entry, key)
            if value in seen:
                raise TokenFileError(f"{path}: [{index}].{key}: used by an earlier entry")
            seen.add(value)
    return entries


def _entry(path: Path, index: int, item: Any) -> TokenEntry:
    where = f"{path}: [{index}]"
    if not isinstance(item, dict):
        raise TokenFileError(f"{where}: must be a mapping with name, role, sha256")
    unknown = sorted(str(key) for key in item if key not in ("name", "role", "sha256"))
    if unknown:
        raise TokenFileError(f"{where}.{unknown[0]}: unknown key (expected name, role, sha256)")
    name, role, sha256 = item.get("name"), item.get("role"), item.get("sha256")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise TokenFileError(f"{where}.name: required, 1-63 letters, digits, '_', '.', '@', '-'")
    try:
        parsed = Role.parse(role)
    except ValueError as exc:
        raise TokenFileError(f"{where}.role: {exc}") from None
    if not isinstance(sha256, str) or not _DIGEST_RE.match(sha256):
        # Not echoed: someone may have pasted a token here by mistake.
        raise TokenFileError(
            f"{where}.sha256: must be 64 lowercase hex digits (the SHA-256 of the token, "
            "never the token itself)"
        )
    return TokenEntry(name, parsed, sha256)
