"""``fleetwire certs``: a local certificate authority and the certificates of a dev or test
mesh, with the ``cryptography`` package (no openssl command line needed).

A directory holds ``ca.pem`` / ``ca.key`` (the authority), ``server.pem`` / ``server.key``
(what the bridge and the scheduler present: DNS ``localhost`` and IPs ``127.0.0.1`` and
``::1`` unless told otherwise) and any client certificates asked for. Private keys are
written with mode 0600. An existing authority is reused, so adding a name or a client keeps
every certificate issued before valid. For production, use your own PKI: fleetwire only
reads PEM files (docs/security.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_FOR = dt.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Authority:
    cert: Path
    key: Path

    def load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key} is not an EC private key")
        return cert, key


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetwire dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def ensure_authority(directory: Path) -> Authority:
    """The authority in ``directory``, created (P-256, one year) when missing."""
    directory.mkdir(parents=True, exist_ok=True)
    authority = Authority(directory / "ca.pem", directory / "ca.key")
    if authority.cert.exists() and authority.key.exists():
        return authority
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("fleetwire dev CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(authority.key, key)
    authority.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return authority


def _alternative_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue(
    authority: Authority,
    stem: Path,
    *,
    common_name: str,
    names: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
) -> Issued:
    """A certificate signed by ``authority`` at ``<stem>.pem`` and its key at
    ``<stem>.key``: for serving ``names`` (DNS names or IP addresses), for a client whose
    identity is ``common_name``, or both."""
    ca_cert, ca_key = authority.load()
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [
        *([ExtendedKeyUsageOID.SERVER_AUTH] if server else []),
        *([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []),
    ]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    alternative = [_alternative_name(n) for n in (names or ((common_name,) if client else ()))]
    if alternative:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(stem.with_suffix(".pem"), stem.with_suffix(".key"))
    _write_key(issued.key, key)
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return issued


@dataclass(frozen=True, slots=True)
class DevCertificates:
    """What a dev or test mesh runs with."""

    ca: Path
    server: Issued


def ensure_dev_certificates(
    directory: Path, names: tuple[str, ...] = DEFAULT_SERVER_NAMES
) -> DevCertificates:
    """The authority and a server certificate for ``names`` in ``directory``; the server
    certificate is issued again when missing or not for exactly ``names``."""
    authority = ensure_authority(directory)
    stem = directory / "server"
    cert_path = stem.with_suffix(".pem")
    if cert_path.exists() and stem.with_suffix(".key").exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if sorted(server_names(current)) == sorted(str(n) for n in names):
            return DevCertificates(authority.cert, Issued(cert_path, stem.with_suffix(".key")))
    server = issue(authority, stem, common_name=names[0], names=names, server=True)
    return DevCertificates(authority.cert, server)


def server_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = alternative.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in alternative.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]
