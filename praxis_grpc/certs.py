"""The cluster CA and the certificates it issues (``praxis certs``).

One CA per cluster. It signs

* node certificates: usable as TLS server *and* client certificates (the
  public API's TLS, mutual TLS between members on the peer service); a node
  certificate names its node's libp2p peer id in a URI SAN
  (``praxis:peer:<peer id>``), which is what binds the certificate to the key
  the Noise handshake authenticates (see SECURITY.md), and a DNS SAN derived
  from it (:func:`peer_dns_name`), which members dialing its peer listener
  check the server certificate against: TLS libraries check DNS names, not
  URIs;
* client certificates for users of the public API with mutual TLS.

Keys are ECDSA P-256 (every TLS stack speaks it) and are written with mode
0600; no file is ever overwritten. The CA key is needed only to issue
certificates: keep it off the nodes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from praxis_grpc.bounded_read import TooLarge, read_bounded

#: The URI SAN scheme naming a node's libp2p peer id.
PEER_URI_PREFIX = "praxis:peer:"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
DEFAULT_HOSTS = ("localhost", "127.0.0.1")
#: The domain of :func:`peer_dns_name` (``.invalid`` never resolves: RFC 6761).
PEER_DNS_SUFFIX = ".peer.praxis.invalid"


class CertError(Exception):
    """A certificate cannot be created, read or verified; the message says why."""


def read_limited(key: str, path: Path, limit: int) -> bytes:
    """The bytes of ``path``, the file config key ``key`` names.

    Raises:
        CertError: unreadable, or over ``limit`` bytes (the message names ``key``).
    """
    try:
        return read_bounded(path, limit)
    except OSError as exc:
        raise CertError(f"{key}: cannot read {path}: {exc.strerror}") from None
    except TooLarge:
        raise CertError(f"{key}: {path} is over {limit} bytes") from None


@dataclass(frozen=True)
class Issued:
    """Paths of what :func:`issue` wrote."""

    cert: Path
    key: Path
    ca_cert: Path


def init_ca(directory: Path, name: str = "praxis cluster CA", days: int = 3650) -> Path:
    """Create a CA (``ca.crt``, ``ca.key``) in ``directory``; return the cert path.

    Raises:
        CertError: a CA already exists there (never overwritten).
    """
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for path in (cert_path, key_path):
        if path.exists():
            raise CertError(f"{path} exists; a CA is never overwritten")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def issue(
    ca_dir: Path,
    name: str,
    out_dir: Path,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    peer_id: str | None = None,
    days: int = 365,
) -> Issued:
    """Issue ``NAME.crt`` and ``NAME.key`` in ``out_dir``, signed by the CA in ``ca_dir``.

    ``hosts`` become DNS or IP SANs (what clients dial); ``peer_id``, if
    given, the ``praxis:peer:`` URI SAN. The CA certificate is copied to
    ``out_dir/ca.crt`` when that is another directory and holds no CA yet.

    Raises:
        CertError: bad name or host, no CA in ``ca_dir``, or the files exist.
    """
    if not name or "/" in name or name.startswith(".") or name == "ca":
        raise CertError(f"certificate name {name!r} must be a plain file name other than 'ca'")
    ca_cert, ca_key = load_ca(ca_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.crt", out_dir / f"{name}.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise CertError(f"{path} exists; certificates are never overwritten")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    names = _alt_names(hosts, peer_id)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    copied = out_dir / CA_CERT
    if out_dir.resolve() != ca_dir.resolve() and not copied.exists():
        copied.write_bytes((ca_dir / CA_CERT).read_bytes())
    return Issued(cert=cert_path, key=key_path, ca_cert=copied)


def load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key in ``ca_dir``.

    Raises:
        CertError: missing, unreadable, or not a CA made by :func:`init_ca`.
    """
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise CertError(
            f"no CA in {ca_dir} ({exc.filename} missing; run: praxis certs init)"
        ) from None
    except ValueError as exc:
        raise CertError(f"{ca_dir}: not a CA certificate and key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{ca_dir / CA_KEY}: not an ECDSA key")
    return cert, key


def peer_ids(cert: x509.Certificate) -> list[str]:
    """The libp2p peer ids a certificate names (``praxis:peer:`` URI SANs)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        uri.removeprefix(PEER_URI_PREFIX)
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(PEER_URI_PREFIX)
    ]


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> None:
    """Check ``cert`` is signed by ``ca_cert`` and valid now.

    Raises:
        CertError: wrong issuer, bad signature, or outside its validity.
    """
    if not issued_by(cert, ca_cert):
        subject = cert.subject.rfc4514_string()
        raise CertError(f"certificate {subject} not issued by the CA")
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertError(f"certificate {cert.subject.rfc4514_string()} is not valid now")


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True if ``ca_cert`` signed ``cert``, whatever their validity windows."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # wrong issuer (ValueError), bad signature, unsupported key
        return False
    return True


def _alt_names(hosts: Sequence[str], peer_id: str | None) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        if not host or any(c.isspace() for c in host):
            raise CertError(f"host {host!r} is not a DNS name or IP address")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if peer_id is not None:
        if not peer_id.isalnum():
            raise CertError(f"peer id {peer_id!r} is not a base58 libp2p peer id")
        names.append(x509.UniformResourceIdentifier(PEER_URI_PREFIX + peer_id))
        names.append(x509.DNSName(peer_dns_name(peer_id)))
    return names


def peer_dns_name(peer_id: str) -> str:
    """The DNS SAN a node certificate carries for ``peer_id``, which a member
    dialing that agent's peer listener expects (``grpc.ssl_target_name_override``).

    Peer ids are case-sensitive base58 and DNS names are compared without case,
    so the label is the base32 SHA-256 of the id (52 characters, a DNS label
    holds 63): one name per peer id, and no other peer id's.
    """
    digest = hashlib.sha256(peer_id.encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower() + PEER_DNS_SUFFIX


def names_peer_dns(cert: x509.Certificate, peer_id: str) -> bool:
    """True if ``cert`` carries the DNS SAN :func:`peer_dns_name` of ``peer_id``."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return peer_dns_name(peer_id) in san.get_values_for_type(x509.DNSName)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
