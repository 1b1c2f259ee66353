"""``fleetwire admin mesh …``: the scheduler's MeshAdminService views and dead-letter
replay from the command line (and the audit log)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from fleetwire.v1 import job_pb2, mesh_admin_service_pb2
from fleetwire_tools.admin_port import (
    Address,
    Json,
    admin_call,
    console,
    print_json,
    printable,
    stamp,
)

mesh_app = typer.Typer(
    help="Operator views: nodes, queues, dead letters (and their replay), job trails, "
    "balances, the audit log.",
    no_args_is_help=True,
)


@mesh_app.command("nodes")
def nodes(address: Address = None, as_json: Json = False) -> None:
    """Connected nodes: scheduler, load, penalties, reputation from validation jobs."""
    reply = admin_call(address, "ListNodes", mesh_admin_service_pb2.ListNodesRequest())
    if as_json:
        print_json(reply)
        return
    table = Table(
        "node",
        "scheduler",
        "models",
        "region",
        "slots free/all",
        "running",
        "penalties",
        "reputation (validations right/wrong)",
    )
    for n in reply.nodes:
        standing = f"{n.penalty_points:.1f} pts, {n.penalties_24h}/24h"
        if n.excluded:
            standing += " [red]excluded[/]"
        trust = f"{n.reputation:.2f} ({n.validations_passed}/{n.validations_wrong})"
        if n.on_probation:
            trust += " [red]probation[/]"
        table.add_row(
            n.node_id,
            n.scheduler_id,
            ",".join(n.models),
            n.region,
            f"{n.free_slots}/{n.slots}",
            str(n.running_jobs),
            standing + (" draining" if n.draining else ""),
            trust,
        )
    console.print(table)


@mesh_app.command("queues")
def queues(address: Address = None, as_json: Json = False) -> None:
    """Waiting jobs per route and priority class."""
    reply = admin_call(address, "QueueDepths", mesh_admin_service_pb2.QueueDepthsRequest())
    if as_json:
        print_json(reply)
        return
    table = Table("route", "priority", "waiting jobs", "messages in queue")
    for d in reply.depths:
        priority = job_pb2.PriorityClass.Name(d.priority).removeprefix("PRIORITY_CLASS_")
        table.add_row(d.route, priority.lower(), str(d.waiting_jobs), str(d.queue_messages))
    console.print(table)


@mesh_app.command("dead-letters")
def dead_letters(limit: int = 20, address: Address = None, as_json: Json = False) -> None:
    """Dead-lettered jobs, newest first, with their errors."""
    reply = admin_call(
        address, "ListDeadLetters", mesh_admin_service_pb2.ListDeadLettersRequest(limit=limit)
    )
    if as_json:
        print_json(reply)
        return
    for job in reply.jobs:
        console.print(f"[bold]{job.job_id}[/] attempts={job.attempts} {job.error.reason}")
        console.print(f"    {job.error.message}", markup=False, highlight=False)


@mesh_app.command("replay")
def replay(job_id: str, address: Address = None, as_json: Json = False) -> None:
    """Replay a DEAD_LETTERED job as a new job (same tenant and spec, fresh TTL); once."""
    reply = admin_call(
        address, "ReplayDeadLetter", mesh_admin_service_pb2.ReplayDeadLetterRequest(job_id=job_id)
    )
    if as_json:
        print_json(reply)
        return
    parked = "removed" if reply.parked_message_removed else "not found"
    console.print(f"{job_id} replayed as [bold]{reply.job.job_id}[/] (parked message {parked})")


@mesh_app.command("trail")
def trail(job_id: str, address: Address = None, as_json: Json = False) -> None:
    """One job's attempts: node, scheduler, timings, errors."""
    reply = admin_call(address, "JobTrail", mesh_admin_service_pb2.JobTrailRequest(job_id=job_id))
    if as_json:
        print_json(reply)
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
    reply = admin_call(
        address, "GetBalance", mesh_admin_service_pb2.GetBalanceRequest(account=account)
    )
    if as_json:
        print_json(reply)
        return
    console.print(
        f"{reply.account}: {reply.balance_micro_credits} micro-credits ({reply.entries} entries)"
    )


@mesh_app.command("audit")
def audit(
    limit: int = 50,
    target: str | None = None,
    address: Address = None,
    as_json: Json = False,
) -> None:
    """The audit log, newest first: who did what to what, and when."""
    request = mesh_admin_service_pb2.ListAuditEntriesRequest(limit=limit, target=target or "")
    reply = admin_call(address, "ListAuditEntries", request)
    rows = [
        {
            "at": stamp(e.at),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "detail": json.loads(e.detail_json or "{}"),
        }
        for e in reply.entries
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        console.print(
            printable(
                f"{row['at']}  {row['actor']:32} {row['action']:20} {row['target']}  "
                f"{json.dumps(row['detail'])}"
            ),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
