"""Cluster membership credentials (``cluster.*``): who is a member, and how to prove it.

A member holds a node certificate signed by the cluster CA that names its
libp2p peer id (``praxis:peer:<id>`` URI SAN, see :mod:`praxis_grpc.certs`).
Membership is checked in two places, both bound to a key the transport has
already authenticated, so a member's certificate replayed under another key
proves nothing:

* on libp2p, the admission handshake (``discovery/_admission.py``): the
  certificate received must name the peer id Noise authenticated;
* on the peer service, mutual TLS: the client certificate must be the CA's,
  and its peer id is the caller (:func:`caller_peer_id`); the caller checks
  the server certificate too, against the DNS name of the peer id it meant to
  reach (:func:`~praxis_grpc.certs.peer_dns_name`, checked by
  :mod:`praxis_grpc.peers.grpc`), so a member that takes over another
  member's address receives none of its calls.

Pure apart from reading the three files once; no asyncio, no trio.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from praxis_grpc.certs import (
    CertError,
    names_peer_dns,
    peer_ids,
    read_limited,
    verify_issued_by,
)
from praxis_grpc.revocation import NOTHING_REVOKED, Revocations

__all__ = ["AdmissionRefused", "ClusterCredentials", "caller_identity", "caller_peer_id"]

MAX_CERT_BYTES = 16 * 1024


class AdmissionRefused(Exception):
    """A peer's certificate does not make it a member; ``reason`` is a metric label.

    Reasons: ``no_certificate``, ``malformed``, ``untrusted`` (another CA, a bad
    signature or outside its validity), ``peer_id_mismatch`` (a certificate of
    another key), ``revoked`` (named by ``cluster.revoked``), ``timeout`` (no
    answer in time, set by the handshake),
    ``backlog`` (more connections awaiting a handshake than admission queues).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class ClusterCredentials:
    """The cluster CA and this node's certificate and key, as PEM bytes.

    ``ca_cert`` may hold several CA certificates (a bundle): a certificate
    issued by any of them is a member's, which is how the CA is rotated
    without a cluster-wide restart (SECURITY.md). Build with :meth:`load`,
    which refuses a certificate that does not make this node a member.
    ``revoked`` are the members that are no longer members (``cluster.revoked``).
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    cas: tuple[x509.Certificate, ...]
    cert: x509.Certificate
    revoked: Revocations = NOTHING_REVOKED

    @classmethod
    def load(
        cls,
        ca_cert: Path,
        node_cert: Path,
        node_key: Path,
        *,
        peer_id: str,
        revoked: Revocations = NOTHING_REVOKED,
    ) -> Self:
        """Read the files and check the certificate is this node's (``peer_id``)
        and not revoked.

        Raises:
            CertError: naming the config key (``cluster.ca_cert``,
                ``cluster.node_cert``, ``cluster.node_key``) at fault.
        """
        ca_pem = _read("cluster.ca_cert", ca_cert)
        cert_pem = _read("cluster.node_cert", node_cert)
        key_pem = _read("cluster.node_key", node_key)
        try:
            cas = tuple(x509.load_pem_x509_certificates(ca_pem))
        except ValueError as exc:
            raise CertError(f"cluster.ca_cert: {ca_cert} is not PEM certificates: {exc}") from None
        cert = _certificate("cluster.node_cert", cert_pem)
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise CertError(f"cluster.node_key: {node_key} is not a PEM key: {exc}") from None
        if key.public_key() != cert.public_key():
            raise CertError(f"cluster.node_key: {node_key} is not the key of {node_cert}")
        try:
            _verify(cert, cas)
        except CertError as exc:
            raise CertError(f"cluster.node_cert: {node_cert}: {exc} ({ca_cert})") from None
        named = peer_ids(cert)
        if peer_id not in named:
            raise CertError(
                f"cluster.node_cert: {node_cert} names peer id(s) {named or 'none'}, not this "
                f"node's {peer_id} (issue it with: praxis certs issue NAME --node-key "
                "<data_dir>/node.key)"
            )
        if not names_peer_dns(cert, peer_id):
            raise CertError(
                f"cluster.node_cert: {node_cert} lacks the DNS name members check when they "
                f"dial this node's peer listener (issued by an older praxis? issue it again "
                "with: praxis certs issue NAME --node-key <data_dir>/node.key)"
            )
        why = revoked.revokes(cert)
        if why is not None:
            raise CertError(f"cluster.node_cert: {node_cert}: {why} (cluster.revoked)")
        return cls(ca_pem, cert_pem, key_pem, cas, cert, revoked)

    @functools.cached_property
    def cert_der(self) -> bytes:
        """This node's certificate in DER, as sent in every admission handshake."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    def check_peer(self, der: bytes, peer_id: str) -> None:
        """Check that ``der`` is a CA certificate naming ``peer_id`` (as authenticated).

        Raises:
            AdmissionRefused: with the reason.
        """
        if not der:
            raise AdmissionRefused("no_certificate", "the peer sent no certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise AdmissionRefused("malformed", str(exc)) from None
        try:
            _verify(cert, self.cas)
        except CertError as exc:
            raise AdmissionRefused("untrusted", str(exc)) from None
        if peer_id not in peer_ids(cert):
            raise AdmissionRefused(
                "peer_id_mismatch", f"the certificate names {peer_ids(cert)}, not {peer_id}"
            )
        why = self.revoked.revokes(cert)
        if why is not None:
            raise AdmissionRefused("revoked", why)

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS for the peer service: this node's certificate, clients must show a CA one."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS to another member's peer service, presenting this node's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem,
            private_key=self.key_pem,
            certificate_chain=self.cert_pem,
        )


def caller_peer_id(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The peer id named by the TLS client certificate of a call, or None.

    ``auth_context`` is ``ServicerContext.auth_context()``; gRPC has already
    checked the certificate against the CA (``require_client_auth``).
    """
    identity = caller_identity(auth_context)
    return identity[0] if identity is not None else None


def caller_identity(auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str, int] | None:
    """The peer id named by the TLS client certificate of a call and the
    certificate's serial number, or None (see :func:`caller_peer_id`)."""
    pems = list(auth_context.get("x509_pem_cert") or [])
    return _identity_of(pems[0]) if pems else None


@functools.lru_cache(maxsize=1024)
def _identity_of(pem: bytes) -> tuple[str, int] | None:
    """The one peer id ``pem`` names and its serial; parsed once per certificate,
    not per call (a pure function of the bytes: TLS checked them on connecting)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    named = peer_ids(cert)
    return (named[0], cert.serial_number) if len(named) == 1 else None


def _verify(cert: x509.Certificate, cas: tuple[x509.Certificate, ...]) -> None:
    """Raises CertError unless one of ``cas`` issued ``cert`` and it is valid now."""
    error = CertError("no CA certificate")
    for ca in cas:
        try:
            verify_issued_by(cert, ca)
        except CertError as exc:
            error = exc
        else:
            return
    raise error


def _read(key: str, path: Path) -> bytes:
    return read_limited(key, path, MAX_CERT_BYTES)


def _certificate(key: str, pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertError(f"{key}: not a PEM certificate: {exc}") from None
