"""How the CLI reaches the mesh's servers: TLS verified against ``--cacert`` (or
``$FLEETWIRE_CA_FILE``, or the system's roots), plaintext only with ``--insecure`` (or
``$FLEETWIRE_INSECURE``) — the SDK's rules (``fleetwire_client.transport``), set once by the
top-level options and used by every command."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import grpc
import typer

from fleetwire_client.transport import channel_credentials


@dataclass(slots=True)
class Connection:
    ca_file: Path | None = None
    insecure: bool = False
    client_cert: Path | None = None  # a client certificate, for an admin port that wants mTLS
    client_key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.client_cert is not None and not self.insecure:
            roots = self.ca_file.read_bytes() if self.ca_file is not None else None
            key = self.client_key.read_bytes() if self.client_key is not None else None
            return grpc.ssl_channel_credentials(
                root_certificates=roots,
                private_key=key,
                certificate_chain=self.client_cert.read_bytes(),
            )
        return channel_credentials(None, ca_file=self.ca_file, insecure=self.insecure or None)

    def channel(self, target: str, options: Sequence[tuple[str, int | str]]) -> grpc.Channel:
        secure = self.credentials()
        if secure is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, secure, options=options)


CONNECTION = Connection()


def connection_options(
    cacert: Annotated[
        Path | None,
        typer.Option(
            "--cacert",
            envvar="FLEETWIRE_CA_FILE",
            help="CA certificates the servers' TLS certificates must chain to (default: the "
            "system's trust store).",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            envvar="FLEETWIRE_INSECURE",
            help="Talk plaintext to a mesh that serves no TLS (tests, benchmarks).",
        ),
    ] = False,
    client_cert: Annotated[
        Path | None,
        typer.Option(
            "--client-cert",
            envvar="FLEETWIRE_CLIENT_CERT_FILE",
            help="PEM client certificate, for an admin port that requires mTLS.",
        ),
    ] = None,
    client_key: Annotated[
        Path | None,
        typer.Option(
            "--client-key", envvar="FLEETWIRE_CLIENT_KEY_FILE", help="Its PEM private key."
        ),
    ] = None,
) -> None:
    """fleetwire: a mesh for LLM inference jobs."""
    CONNECTION.ca_file, CONNECTION.insecure = cacert, insecure
    CONNECTION.client_cert, CONNECTION.client_key = client_cert, client_key
