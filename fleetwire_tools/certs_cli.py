"""``fleetwire certs``: a local CA and certificates for a dev or test mesh."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fleetwire_tools.certs import (
    DEFAULT_SERVER_NAMES,
    ensure_authority,
    ensure_dev_certificates,
    issue,
)

console = Console()


def certs(
    out: Annotated[Path, typer.Option(help="Directory of the CA and the certificates.")] = Path(
        ".cache/certs"
    ),
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            help="A DNS name or IP address the servers answer to (repeatable); default "
            "localhost, 127.0.0.1 and ::1.",
        ),
    ] = None,
    client: Annotated[
        list[str] | None,
        typer.Option(
            "--client", help="Also issue a client certificate with this identity (repeatable)."
        ),
    ] = None,
) -> None:
    """Create (or reuse) a local CA and issue the servers' certificate and client ones."""
    names = tuple(name or DEFAULT_SERVER_NAMES)
    made = ensure_dev_certificates(out, names)
    console.print(f"CA           {made.ca}")
    console.print(f"server cert  {made.server.cert}  ({', '.join(names)})")
    console.print(f"server key   {made.server.key}")
    authority = ensure_authority(out)
    for identity in client or []:
        issued = issue(authority, out / f"client-{identity}", common_name=identity, client=True)
        console.print(f"client cert  {issued.cert}  ({identity})")
    console.print(
        "\nServe with  FLEETWIRE_TLS_CERT_FILE="
        f"{made.server.cert} FLEETWIRE_TLS_KEY_FILE={made.server.key}\n"
        f"Nodes trust  FLEETWIRE_NODE_CA_FILE={made.ca}; clients  FLEETWIRE_CA_FILE={made.ca}"
        f" (grpcurl -cacert {made.ca})"
    )
