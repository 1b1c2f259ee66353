"""``fleetwire admin mesh …``: the scheduler's MeshAdminService from the command line."""

from __future__ import annotations

import os
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

from fleetwire.process.settings import load_settings
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from fleetwire_tools.connection import CONNECTION
from fleetwire_tools.registry_cli import printable

mesh_app = typer.Typer(
    help="Operator views: nodes, queues, dead letters (and their replay), job trails, balances.",
    no_args_is_help=True,
)
console = Console()
ADMIN_KEY_ENV = "FLEETWIRE_ADMIN_KEY"

Address = Annotated[
    str | None, typer.Option(help="A scheduler's admin host:port (default: this machine's).")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _call(address: str | None, method: str, request: Any) -> Any:
    """One MeshAdminService call on a scheduler's admin port, with the operator key of
    FLEETWIRE_ADMIN_KEY (`fleetwire admin operators create`)."""
    target = address or f"127.0.0.1:{load_settings().scheduler.admin_port}"
    key = os.environ.get(ADMIN_KEY_ENV, "")
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with CONNECTION.channel(target, CLIENT_OPTIONS) as channel:
        stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        try:
            return getattr(stub, method)(request, timeout=15, metadata=metadata)
        except grpc.RpcError as err:
            console.print(f"[red]{err.code().name}[/]: {err.details()}")  # type: ignore[attr-defined]
            raise typer.Exit(1) from err


def _json(message: Any) -> None:
    console.print_json(json_format.MessageToJson(message, preserving_proto_field_name=True))


@mesh_app.command("nodes")
def nodes(address: Address = None, as_json: Json = False) -> None:
    """Connected nodes: scheduler, load, penalties."""
    reply = _call(address, "ListNodes", mesh_admin_service_pb2.ListNodesRequest())
    if as_json:
        _json(reply)
        return
    table = Table("node", "scheduler", "models", "region", "slots free/all", "running", "penalties")
    for n in reply.nodes:
        standing = f"{n.penalty_points:.1f} pts, {n.penalties_24h}/24h"
        if n.excluded:
            standing += " [red]excluded[/]"
        table.add_row(
            n.node_id,
            n.scheduler_id,
            ",".join(n.models),
            n.region,
            f"{n.free_slots}/{n.slots}",
            str(n.running_jobs),
            standing + (" draining" if n.draining else ""),
        )
    console.print(table)


@mesh_app.command("queues")
def queues(address: Address = None, as_json: Json = False) -> None:
    """Waiting jobs per route and priority class."""
    reply = _call(address, "QueueDepths", mesh_admin_service_pb2.QueueDepthsRequest())
    if as_json:
        _json(reply)
        return
    table = Table("route", "priority", "waiting jobs", "messages in queue")
    for d in reply.depths:
        priority = job_pb2.PriorityClass.Name(d.priority).removeprefix("PRIORITY_CLASS_")
        table.add_row(d.route, priority.lower(), str(d.waiting_jobs), str(d.queue_messages))
    console.print(table)


@mesh_app.command("dead-letters")
def dead_letters(limit: int = 20, address: Address = None, as_json: Json = False) -> None:
    """Dead-lettered jobs, newest first, with their errors."""
    reply = _call(
        address, "ListDeadLetters", mesh_admin_service_pb2.ListDeadLettersRequest(limit=limit)
    )
    if as_json:
        _json(reply)
        return
    for job in reply.jobs:
        console.print(f"[bold]{job.job_id}[/] attempts={job.attempts} {job.error.reason}")
        console.print(f"    {job.error.message}", markup=False, highlight=False)


@mesh_app.command("replay")
def replay(job_id: str, address: Address = None, as_json: Json = False) -> None:
    """Replay a DEAD_LETTERED job as a new job (same tenant and spec, fresh TTL); once."""
    reply = _call(
        address, "ReplayDeadLetter", mesh_admin_service_pb2.ReplayDeadLetterRequest(job_id=job_id)
    )
    if as_json:
        _json(reply)
        return
    parked = "removed" if reply.parked_message_removed else "not found"
    console.print(f"{job_id} replayed as [bold]{reply.job.job_id}[/] (parked message {parked})")


@mesh_app.command("trail")
def trail(job_id: str, address: Address = None, as_json: Json = False) -> None:
    """One job's attempts: node, scheduler, timings, errors."""
    reply = _call(address, "JobTrail", mesh_admin_service_pb2.JobTrailRequest(job_id=job_id))
    if as_json:
        _json(reply)
        return
    state = job_pb2.JobState.Name(reply.job.state).removeprefix("JOB_STATE_")
    console.print(f"[bold]{reply.job.job_id}[/] {state} {reply.job.error.reason}")
    if reply.job.replay_of:
        console.print(f"replays {reply.job.replay_of}")
    if reply.replayed_as:
        console.print(f"replayed as {reply.replayed_as}")
    table = Table("attempt", "node", "scheduler", "outcome", "dispatched", "ended", "error")
    for a in reply.attempts:
        table.add_row(
            str(a.attempt),
            a.node_id,
            a.scheduler_id,
            a.outcome,
            a.dispatched_at.ToDatetime().isoformat(timespec="milliseconds"),
            a.ended_at.ToDatetime().isoformat(timespec="milliseconds")
            if a.ended_at.seconds
            else "",
            f"{a.error.reason} {a.error.message}".strip(),
        )
    console.print(table)


@mesh_app.command("balance")
def balance(account: str, address: Address = None, as_json: Json = False) -> None:
    """An account's ledger balance: tenant:<id> or owner:<id>."""
    reply = _call(address, "GetBalance", mesh_admin_service_pb2.GetBalanceRequest(account=account))
    if as_json:
        _json(reply)
        return
    console.print(
        f"{reply.account}: {reply.balance_micro_credits} micro-credits ({reply.entries} entries)"
    )


@mesh_app.command("pending")
def pending(address: Address = None, as_json: Json = False) -> None:
    """Nodes waiting for admission, over the admin port (no database credentials)."""
    reply = _call(address, "ListPendingNodes", mesh_admin_service_pb2.ListPendingNodesRequest())
    if as_json:
        _json(reply)
        return
    for node in reply.nodes:
        # Region and models are what an unadmitted node claimed: plain text, no controls.
        region, models = printable(node.region), printable(",".join(node.models))
        console.print(
            f"{node.node_id:24} key {node.key_id}  {region:10} {models}",
            markup=False,
            highlight=False,
        )


@mesh_app.command("approve")
def approve(
    node_id: str,
    key_id: Annotated[str, typer.Option(help="The key id `pending` shows.")],
    network: Annotated[
        list[str] | None, typer.Option("--network", help="mainnet/testnet (default testnet).")
    ] = None,
    address: Address = None,
    as_json: Json = False,
) -> None:
    """Admit a waiting node, over the admin port (admin role; audited)."""
    chosen = network or ["testnet"]
    if not set(chosen) <= {"mainnet", "testnet"}:
        console.print("[red]--network must be mainnet or testnet[/]")
        raise typer.Exit(2)
    networks = [job_pb2.Network.Value(f"NETWORK_{n.upper()}") for n in chosen]
    request = mesh_admin_service_pb2.ApproveNodeRequest(
        node_id=node_id, key_id=key_id, networks=networks
    )
    reply = _call(address, "ApproveNode", request)
    if as_json:
        _json(reply)
        return
    console.print(f"{reply.node_id} admitted with key {reply.key_id}")


@mesh_app.command("revoke")
def revoke(node_id: str, address: Address = None) -> None:
    """Revoke a node's key, over the admin port (admin role; audited): its session ends."""
    _call(address, "RevokeNode", mesh_admin_service_pb2.RevokeNodeRequest(node_id=node_id))
    console.print(f"{node_id} revoked")
