"""What ``praxis up --secure`` makes: a cluster CA, a certificate per node bound
to its libp2p key, and bearer tokens, all under one directory.

The layout (``<dir>`` is ``praxis up --dir``, default ``.praxis/up``)::

    <dir>/secure/ca.crt, ca.key       the cluster CA (praxis certs init)
    <dir>/secure/<node>.crt, .key     node certificates (praxis certs issue --node-key)
    <dir>/secure/tokens.yaml          token digests the nodes check (praxis tokens add)
    <dir>/secure/tokens.txt           the tokens themselves, mode 0600: a local
                                      mesh's convenience; a real cluster hands each
                                      token to its user and keeps no such file

The keys each node gets are ``configs/secure/node.yaml``'s: every node serves
its public API over TLS with its node certificate, asks for a token on every
call but health and reflection, admits only holders of a CA
certificate to the mesh, and serves the peer service on its own mutual-TLS port
(see SECURITY.md). Files that exist are reused, so a second ``praxis up
--secure`` keeps the CA and the tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from praxis_grpc.api.tokens import Role, add_token
from praxis_grpc.certs import CA_CERT, init_ca, issue, peer_ids
from praxis_grpc.credentials import ClientCredentials
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.shipped import CONFIGS_DIR

__all__ = ["TEMPLATE", "TOKEN_ROLES", "SecureSetup"]

#: The security keys of every node (``{name}`` and paths relative to the secure directory).
TEMPLATE = CONFIGS_DIR / "secure" / "node.yaml"
#: The tokens made for a local secure mesh: one per role, named after it.
TOKEN_ROLES = (Role.ADMIN, Role.CLIENT, Role.READER)
_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class SecureSetup:
    """The security files of a local mesh under ``directory``."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The cluster CA certificate (clients pass it as ``--cacert``)."""
        return self.directory / CA_CERT

    @property
    def tokens_file(self) -> Path:
        """The token digests the nodes check."""
        return self.directory / "tokens.yaml"

    @property
    def tokens_text(self) -> Path:
        """The tokens themselves (mode 0600), one ``NAME ROLE TOKEN`` per line."""
        return self.directory / "tokens.txt"

    def prepare(self) -> None:
        """Create the CA and the tokens unless they exist.

        Raises:
            OSError, CertError, TokenFileError: a file cannot be made or read.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.ca_cert.exists():
            init_ca(self.directory, name="praxis local mesh CA")
        if self.tokens_text.exists():
            return
        lines = []
        for role in TOKEN_ROLES:
            token = add_token(self.tokens_file, role.label, role)
            lines.append(f"{role.label} {role.label} {token}\n")
        fd = os.open(self.tokens_text, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.writelines(lines)

    def token(self, name: str) -> str:
        """The token named ``name`` (``admin``, ``client`` or ``reader``).

        Raises:
            KeyError: no such token in :attr:`tokens_text`.
        """
        for line in self.tokens_text.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == name:
                return parts[2]
        raise KeyError(name)

    def client(self, name: str = "admin") -> ClientCredentials:
        """Credentials of a client using token ``name`` and trusting the CA."""
        return ClientCredentials(cacert=self.ca_cert, token=self.token(name))

    def node_overlay(self, name: str, data_dir: Path) -> dict[str, Any]:
        """The config keys that secure node ``name`` (whose key is
        ``data_dir/node.key``, created here if absent): TLS and tokens on its
        API and ``/metrics``, and its cluster certificate."""
        peer_id = load_or_create_identity(data_dir / "node.key").agent_id
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        if cert.exists() and peer_id not in peer_ids(_load(cert)):
            # Made for a key since deleted (a fresh --dir for the nodes): issue anew.
            cert.unlink()
            key.unlink(missing_ok=True)
        if not cert.exists():
            issue(self.directory, name, self.directory, hosts=_HOSTS, peer_id=peer_id)
        return self._template(name)

    def _template(self, name: str) -> dict[str, Any]:
        """``configs/secure/node.yaml`` for node ``name``: ``{name}`` filled in,
        relative paths made absolute in :attr:`directory`."""

        def fill(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: fill(item) for key, item in value.items()}
            if isinstance(value, str):
                path = Path(value.replace("{name}", name))
                return str(path if path.is_absolute() else (self.directory / path).resolve())
            return value

        template = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
        return dict(fill(template))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())
