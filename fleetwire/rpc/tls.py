"""TLS for fleetwire's gRPC servers and for the node's channel to the scheduler.

A server's certificate and key are files (``FLEETWIRE_TLS_*``). ``ServerTls.reload`` reads
them again (the services call it on SIGHUP): gRPC asks for the current certificate before
each new handshake, so new connections get the new one while open streams keep theirs.
Plaintext is served only when ``FLEETWIRE_TLS_INSECURE`` asks for it, with a warning.
A port may also require client certificates (mTLS, ``client_ca``): the admin port for
operators, the node port for nodes; a node presents one with ``FLEETWIRE_NODE_CLIENT_*``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.settings import NodeSettings, TlsSettings

log = structlog.get_logger(__name__)


def certificate_names(cert_pem: bytes) -> frozenset[str]:
    """The DNS names and IP addresses (as text) the first certificate of a PEM chain is for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    dns = alternative.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in alternative.get_values_for_type(x509.IPAddress)]
    return frozenset([*dns, *ips])


def _normal(name: str) -> str:
    return name.lower().rstrip(".")


def name_matches(name: str, names: frozenset[str]) -> bool:
    """Whether ``name`` (what a node verified) is one of ``names`` (a certificate's SANs),
    as TLS compares them: case-insensitively, a trailing dot ignored, ``*.example`` for
    exactly one more leading label. "" (plaintext) matches only ""."""
    wanted = _normal(name)
    for candidate in map(_normal, names):
        if candidate == wanted:
            return True
        if candidate.startswith("*.") and "." in wanted:
            first, rest = wanted.split(".", 1)
            if first and rest == candidate[2:]:
                return True
    return False


class ServerTls:
    """The certificate a server presents, read from files and re-read on ``reload``. One
    object may serve several ports (the scheduler's node and admin ports): each port's
    credentials notice a reload on their own."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self._cert_file = cert_file
        self._key_file = key_file
        self._pair, self.names = self._read()
        self._generation = 0

    def _read(self) -> tuple[tuple[bytes, bytes], frozenset[str]]:
        try:
            chain, key = self._cert_file.read_bytes(), self._key_file.read_bytes()
            names = certificate_names(chain)
        except (OSError, ValueError) as err:
            raise ConfigurationError(
                f"cannot read the TLS certificate {self._cert_file} / key {self._key_file}: {err}"
            ) from err
        if not names:
            raise ConfigurationError(
                f"the TLS certificate {self._cert_file} names no DNS name or IP address "
                "(subject alternative name): no client could verify it"
            )
        return (key, chain), names

    def credentials(self, *, client_ca: bytes | None = None) -> grpc.ServerCredentials:
        """Credentials for one port; with ``client_ca`` clients must present a certificate
        that chains to it (mTLS)."""
        seen = self._generation

        def configuration() -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [self._pair], root_certificates=client_ca
            )

        def next_configuration() -> grpc.ServerCertificateConfiguration | None:
            """Called by gRPC before each handshake: the reloaded configuration once per
            reload, else None (keep the current one)."""
            nonlocal seen
            if seen == self._generation:
                return None
            seen = self._generation
            return configuration()

        return grpc.dynamic_ssl_server_credentials(
            configuration(),
            next_configuration,
            require_client_authentication=client_ca is not None,
        )

    def reload(self) -> bool:
        """Reads the files again for the next handshakes; on error keeps the current ones
        (and logs why). True when the new certificate is in place."""
        try:
            pair, names = self._read()
        except ConfigurationError as err:
            log.error("TLS certificate not reloaded; keeping the current one", error=str(err))
            return False
        self._pair, self.names = pair, names
        self._generation += 1
        log.info("TLS certificate reloaded", cert=str(self._cert_file), names=sorted(names))
        return True


def server_tls(settings: TlsSettings, *, server: str) -> ServerTls | None:
    """The TLS of a server, or None for plaintext (only when asked for; warned)."""
    if settings.insecure:
        log.warning(
            "serving PLAINTEXT: FLEETWIRE_TLS_INSECURE is set; API keys, prompts and outputs "
            "cross the network unencrypted",
            server=server,
        )
        return None
    if settings.cert_file is None or settings.key_file is None:
        raise ConfigurationError(
            f"the {server} serves TLS only: set FLEETWIRE_TLS_CERT_FILE and "
            "FLEETWIRE_TLS_KEY_FILE (`fleetwire certs` makes them for a dev mesh), or "
            "FLEETWIRE_TLS_INSECURE=true for plaintext"
        )
    return ServerTls(settings.cert_file, settings.key_file)


def client_ca(ca_file: Path | None, *, variable: str, tls: ServerTls | None) -> bytes | None:
    """The CA certificates a port's clients must present a certificate chaining to (mTLS),
    read from ``ca_file`` (named ``variable`` in errors), or None when it is unset. One rule
    for both of the scheduler's ports: the admin port
    (``FLEETWIRE_SCHEDULER_ADMIN_CLIENT_CA_FILE``) and the node port
    (``FLEETWIRE_SCHEDULER_NODE_CLIENT_CA_FILE``). Read once, at start.

    Raises ConfigurationError when TLS is off (a client certificate needs TLS) or the file
    cannot be read or holds no PEM certificate."""
    if ca_file is None:
        return None
    if tls is None:
        raise ConfigurationError(f"{variable} needs TLS (FLEETWIRE_TLS_INSECURE is set)")
    try:
        pem = ca_file.read_bytes()
        x509.load_pem_x509_certificates(pem)
    except (OSError, ValueError) as err:
        raise ConfigurationError(f"cannot read {variable} ({ca_file}): {err}") from err
    return pem


def host_of(address: str) -> str:
    """The host part of a gRPC target ``host:port`` (``[v6]:port``, ``dns:///host:port``)."""
    target = address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    host = target.rsplit(":", 1)[0] if target.count(":") == 1 or "]" in target else target
    host = host.strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def node_channel_credentials(settings: NodeSettings) -> grpc.ChannelCredentials | None:
    """How a node dials its scheduler: TLS verifying the scheduler's certificate against
    ``ca_file`` (or the system's roots), presenting ``client_cert_file`` / ``client_key_file``
    when set (for a node port that wants mTLS), or None for plaintext (only when asked for).

    Raises ConfigurationError for a file that cannot be read, a client certificate without
    its key (or the reverse), a key that is not the certificate's, or a client certificate
    with plaintext."""
    client = _node_client_pair(settings)
    if settings.insecure:
        if client is not None:
            raise ConfigurationError(
                "FLEETWIRE_NODE_CLIENT_CERT_FILE needs TLS (FLEETWIRE_NODE_INSECURE is set)"
            )
        log.warning(
            "dialing the scheduler in PLAINTEXT: FLEETWIRE_NODE_INSECURE is set; the node "
            "cannot tell a real scheduler from an impostor",
            scheduler=settings.scheduler_address,
        )
        return None
    roots = None
    if settings.ca_file is not None:
        try:
            roots = settings.ca_file.read_bytes()
        except OSError as err:
            raise ConfigurationError(f"cannot read FLEETWIRE_NODE_CA_FILE: {err}") from err
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    key, chain = client
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )


def _node_client_pair(settings: NodeSettings) -> tuple[bytes, bytes] | None:
    """The node's client key and certificate chain (PEM), or None when neither is set."""
    cert_file, key_file = settings.client_cert_file, settings.client_key_file
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ConfigurationError(
            "set both FLEETWIRE_NODE_CLIENT_CERT_FILE and FLEETWIRE_NODE_CLIENT_KEY_FILE "
            "(a client certificate and its private key), or neither"
        )
    try:
        chain, key = cert_file.read_bytes(), key_file.read_bytes()
        cert = x509.load_pem_x509_certificate(chain)
        private = serialization.load_pem_private_key(key, password=None)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigurationError(
            f"cannot read the node's client certificate {cert_file} / key {key_file}: {err}"
        ) from err
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(der, spki) != private.public_key().public_bytes(der, spki):
        raise ConfigurationError(
            f"FLEETWIRE_NODE_CLIENT_KEY_FILE ({key_file}) is not the key of "
            f"FLEETWIRE_NODE_CLIENT_CERT_FILE ({cert_file})"
        )
    return key, chain


def node_server_name(settings: NodeSettings) -> str:
    """The name the scheduler's certificate is verified for and the node signs ("" in
    plaintext, where nothing was verified)."""
    if settings.insecure:
        return ""
    return settings.server_name or host_of(settings.scheduler_address)
