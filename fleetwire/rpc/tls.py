"""TLS for fleetwire's gRPC servers and for the node's channel to the scheduler.

A server's certificate and key are files (``FLEETWIRE_TLS_*``). ``ServerTls.reload`` reads
them again (the services call it on SIGHUP): gRPC asks for the current certificate before
each new handshake, so new connections get the new one while open streams keep theirs.
Plaintext is served only when ``FLEETWIRE_TLS_INSECURE`` asks for it, with a warning.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import grpc
import structlog
from cryptography import x509

from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.settings import NodeSettings, SchedulerSettings, TlsSettings

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


def admin_client_ca(settings: SchedulerSettings, tls: ServerTls | None) -> bytes | None:
    """The CA certificates admin clients' certificates must chain to (mTLS), or None."""
    if settings.admin_client_ca_file is None:
        return None
    if tls is None:
        raise ConfigurationError(
            "FLEETWIRE_SCHEDULER_ADMIN_CLIENT_CA_FILE needs TLS (FLEETWIRE_TLS_INSECURE is set)"
        )
    try:
        return settings.admin_client_ca_file.read_bytes()
    except OSError as err:
        raise ConfigurationError(
            f"cannot read FLEETWIRE_SCHEDULER_ADMIN_CLIENT_CA_FILE: {err}"
        ) from err


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
    ``ca_file`` (or the system's roots), or None for plaintext (only when asked for)."""
    if settings.insecure:
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
    return grpc.ssl_channel_credentials(root_certificates=roots)


def node_server_name(settings: NodeSettings) -> str:
    """The name the scheduler's certificate is verified for and the node signs ("" in
    plaintext, where nothing was verified)."""
    if settings.insecure:
        return ""
    return settings.server_name or host_of(settings.scheduler_address)
