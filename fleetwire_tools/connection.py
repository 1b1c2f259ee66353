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

    def credentials(self) -> grpc.ChannelCredentials | None:
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
) -> None:
    """fleetwire: a mesh for LLM inference jobs."""
    CONNECTION.ca_file, CONNECTION.insecure = cacert, insecure
