"""How ``fleetwire admin …`` reaches a scheduler's admin port: one MeshAdminService call
with the operator key of ``$FLEETWIRE_ADMIN_KEY``, over the connection the top-level
options chose (TLS verified, optionally with a client certificate). Errors print the gRPC
status and end the command with exit code 1."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from rich.console import Console

from fleetwire.process.settings import load_settings
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import mesh_admin_service_pb2_grpc
from fleetwire_tools.connection import CONNECTION

ADMIN_KEY_ENV = "FLEETWIRE_ADMIN_KEY"
NETWORKS = ("mainnet", "testnet")
console = Console()
err_console = Console(stderr=True)

Address = Annotated[
    str | None,
    typer.Option(
        envvar="FLEETWIRE_ADMIN_ADDRESS",
        help="A scheduler's admin host:port (default: this machine's admin port).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def admin_call(address: str | None, method: str, request: Any) -> Any:
    """``method`` of MeshAdminService on ``address`` (default this machine's admin port)."""
    target = address or f"127.0.0.1:{load_settings().scheduler.admin_port}"
    key = os.environ.get(ADMIN_KEY_ENV, "")
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with CONNECTION.channel(target, CLIENT_OPTIONS) as channel:
        stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=15, metadata=metadata)
        except grpc.RpcError as err:
            err_console.print(
                f"{err.code().name}: {err.details()}",  # type: ignore[attr-defined]
                markup=False,
                highlight=False,
            )
            raise typer.Exit(1) from err


def print_json(message: Any) -> None:
    console.print_json(
        json_format.MessageToJson(message, preserving_proto_field_name=True), sort_keys=False
    )


def printable(text: str) -> str:
    """``text`` without control characters (a newline would fake a row)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def network_values(names: list[str] | None, option: str = "--network") -> list[str]:
    """The Network enum names of ``names`` (mainnet/testnet), as protobuf constructors take
    them; exit code 2 for another name."""
    bad = sorted(set(names or ()) - set(NETWORKS))
    if bad:
        err_console.print(f"{option} must be mainnet or testnet, not {', '.join(bad)}")
        raise typer.Exit(2)
    return [f"NETWORK_{n.upper()}" for n in names or ()]


def stamp(timestamp: Any) -> str | None:
    """An ISO time of a protobuf Timestamp; None when unset."""
    if not timestamp.seconds and not timestamp.nanos:
        return None
    return str(timestamp.ToDatetime().isoformat(timespec="seconds"))


def print_key_rows(
    rows: list[dict[str, Any]], as_json: bool, line: Callable[[dict[str, Any], str], str]
) -> None:
    """Key listings (API keys, operator keys): JSON, or one plain line per key made by
    ``line(row, state)`` after the key id (names are printed as text, never as markup)."""
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        console.print(
            f"{row['key_id']}  {line(row, state)}", soft_wrap=True, markup=False, highlight=False
        )
