"""``fleetwire admin nodes …``: who may serve — admission of waiting nodes, registered keys,
grants and revocation, over a scheduler's admin port (an operator key, no database
credentials)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2
from fleetwire_tools.admin_port import (
    Address,
    Json,
    admin_call,
    console,
    err_console,
    network_values,
    printable,
    stamp,
)

nodes_app = typer.Typer(
    help="Nodes: admission, registered keys, grants (admin port).", no_args_is_help=True
)

NetworksOption = Annotated[
    list[str] | None,
    typer.Option(
        "--network",
        help="A network the node may serve (repeatable; default testnet only: mainnet earns "
        "credits, so it is granted on purpose).",
    ),
]


def _network_names(values: list[int]) -> list[str]:
    from fleetwire.v1 import job_pb2

    return [job_pb2.Network.Name(v).removeprefix("NETWORK_").lower() for v in values]


@nodes_app.command("pending")
def nodes_pending(address: Address = None, as_json: Json = False) -> None:
    """Nodes that proved a key nobody admitted yet, waiting for `approve`."""
    reply = admin_call(address, "ListPendingNodes", admin_pb2.ListPendingNodesRequest())
    rows = [
        {
            "node_id": n.node_id,
            "key_id": n.key_id,
            "region": n.region,
            "models": ",".join(n.models),
            "first_seen_at": stamp(n.first_seen),
            "last_seen_at": stamp(n.last_seen),
        }
        for n in reply.nodes
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        # Region and models are what an unadmitted node claimed: printed as plain text.
        region, models = (printable(str(row[k])) for k in ("region", "models"))
        console.print(
            f"{row['node_id']:24} key {row['key_id']}  {region:10} {models}"
            f"  since {row['first_seen_at']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@nodes_app.command("approve")
def nodes_approve(
    node_id: str,
    key_id: Annotated[str, typer.Option(help="The key id the request shows (`pending`).")],
    network: NetworksOption = None,
    address: Address = None,
) -> None:
    """Admit the waiting node NODE_ID with the key KEY_ID, granting it the networks given:
    its next handshake is welcome. An id registered with another key keeps it."""
    request = admin_pb2.ApproveNodeRequest(
        node_id=node_id, key_id=key_id, networks=network_values(network)
    )
    reply = admin_call(address, "ApproveNode", request)
    typer.echo(
        json.dumps(
            {
                "node_id": reply.node_id,
                "key_id": reply.key_id,
                "registration": "approved",
                "networks": _network_names(list(reply.networks)),
            }
        )
    )


@nodes_app.command("register")
def nodes_register(
    node_id: str,
    public_key: Annotated[str, typer.Option(help="Hex public key (`keys show`/`keys new`).")],
    replace: Annotated[
        bool, typer.Option(help="Replace another registered key (key rotation).")
    ] = False,
    network: NetworksOption = None,
    address: Address = None,
) -> None:
    """Register NODE_ID's public key (and grant it the networks given), so the scheduler
    accepts the node without a request to approve.

    Applies to the node's next handshake; a connected session keeps the key it proved.
    """
    try:
        raw = bytes.fromhex(public_key)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        err_console.print("--public-key must be 64 hex digits (a raw ed25519 key)")
        raise typer.Exit(2)
    request = admin_pb2.RegisterNodeRequest(
        node_id=node_id, public_key=raw, replace=replace, networks=network_values(network)
    )
    reply = admin_call(address, "RegisterNode", request)
    registration = admin_pb2.Registration.Name(reply.registration)
    shown = {
        "node_id": reply.node_id,
        "key_id": reply.key_id,
        "registration": registration.removeprefix("REGISTRATION_").lower(),
        "networks": _network_names(list(reply.networks)),
    }
    typer.echo(json.dumps(shown))


@nodes_app.command("grant")
def nodes_grant(
    node_id: str,
    subcloud: Annotated[
        str | None, typer.Option(help="A subcloud (private pool) it may serve.")
    ] = None,
    network: Annotated[str | None, typer.Option(help="mainnet or testnet.")] = None,
    withdraw: Annotated[bool, typer.Option(help="Withdraw the grant instead.")] = False,
    address: Address = None,
) -> None:
    """Grant NODE_ID a subcloud or a network it may serve (or withdraw it); applies from the
    node's next session. Claims in Hello count only when granted
    (FLEETWIRE_SCHEDULER_TRUST_NODE_CLAIMS is off outside the dev profile)."""
    if (subcloud is None) == (network is None):
        err_console.print("give one of --subcloud and --network")
        raise typer.Exit(2)
    if subcloud is not None:
        request = admin_pb2.GrantNodeRequest(node_id=node_id, subcloud=subcloud, withdraw=withdraw)
        what = {"subcloud": subcloud}
    else:
        (value,) = network_values([str(network)])
        request = admin_pb2.GrantNodeRequest(node_id=node_id, network=value, withdraw=withdraw)
        what = {"network": str(network)}
    reply = admin_call(address, "GrantNode", request)
    typer.echo(
        json.dumps({"node_id": node_id, **what, "granted": not withdraw, "changed": reply.changed})
    )


@nodes_app.command("revoke")
def nodes_revoke(node_id: str, address: Address = None) -> None:
    """Revoke NODE_ID's key: its live session ends within
    FLEETWIRE_SCHEDULER_KEY_CHECK_INTERVAL and its next handshake is refused (KEY_REVOKED)."""
    admin_call(address, "RevokeNode", admin_pb2.RevokeNodeRequest(node_id=node_id))
    typer.echo(json.dumps({"node_id": node_id, "revoked": True}))


@nodes_app.command("validate")
def nodes_validate(
    node_id: str,
    jobs: Annotated[int, typer.Option("--jobs", help="Validation jobs to send (1 to 100).")] = 5,
    address: Address = None,
) -> None:
    """Send NODE_ID validation jobs now (it must be connected to the scheduler of the admin
    port); `fleetwire admin mesh nodes` shows how it answered."""
    reply = admin_call(
        address, "ValidateNode", admin_pb2.ValidateNodeRequest(node_id=node_id, jobs=jobs)
    )
    typer.echo(json.dumps({"node_id": node_id, "owed": reply.owed}))


@nodes_app.command("list")
def nodes_list(address: Address = None, as_json: Json = False) -> None:
    """List registered nodes: keys, state, grants."""
    reply = admin_call(address, "ListRegisteredNodes", admin_pb2.ListRegisteredNodesRequest())
    rows = [
        {
            "node_id": n.node_id,
            "key_id": n.key_id,
            "public_key": n.public_key.hex(),
            "revoked": n.revoked,
            "registered_at": stamp(n.registered_at),
            "last_seen_at": stamp(n.last_seen),
            "networks": _network_names(list(n.networks)),
            "subclouds": list(n.subclouds),
        }
        for n in reply.nodes
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        state = "revoked" if row["revoked"] else "active"
        grants = ",".join([*row["networks"], *row["subclouds"]]) or "-"  # type: ignore[misc]
        console.print(
            f"{row['node_id']:24} key {row['key_id']} {state:7} {grants:20} "
            f"last seen {row['last_seen_at'] or '-'}",
            markup=False,
            highlight=False,
        )
