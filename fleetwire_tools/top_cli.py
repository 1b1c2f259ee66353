"""``fleetwire admin top``: a live terminal view of the mesh for an operator on a shell —
queues, throughput and failures by minute, nodes with their load and standing — read
through the admin port (QueueDepths, JobThroughput, ListNodes) every few seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fleetwire.v1 import job_pb2
from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2
from fleetwire_tools.admin_port import Address, admin_call, console, printable

BARS = " ▁▂▃▄▅▆▇█"
MINUTES = 15


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One reading of the mesh."""

    depths: admin_pb2.QueueDepthsResponse
    throughput: admin_pb2.JobThroughputResponse
    nodes: admin_pb2.ListNodesResponse


def read(address: str | None) -> Snapshot:
    return Snapshot(
        admin_call(address, "QueueDepths", admin_pb2.QueueDepthsRequest()),
        admin_call(address, "JobThroughput", admin_pb2.JobThroughputRequest(minutes=MINUTES)),
        admin_call(address, "ListNodes", admin_pb2.ListNodesRequest()),
    )


def sparkline(values: list[int]) -> str:
    """One bar per value, scaled to the largest."""
    top = max(values, default=0)
    if top == 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(len(BARS) - 1, round(v / top * (len(BARS) - 1)))] for v in values)


def render(snapshot: Snapshot) -> Group:
    """The three panels of one frame (pure: tests render a snapshot they made)."""
    queues = Table("route", "priority", "waiting", "in queue", expand=True)
    for depth in snapshot.depths.depths:
        queues.add_row(
            depth.route,
            job_pb2.PriorityClass.Name(depth.priority).removeprefix("PRIORITY_CLASS_").lower(),
            str(depth.waiting_jobs),
            str(depth.queue_messages),
        )
    if not snapshot.depths.depths:
        queues.add_row("[dim]no job waits[/]", "", "", "")

    minutes = list(snapshot.throughput.minutes)
    succeeded = [m.succeeded for m in minutes]
    failed = [m.failed + m.expired + m.dead_lettered for m in minutes]
    finished = sum(succeeded) + sum(failed)
    rate = f"{finished / max(1, len(minutes)):.1f} jobs/min"
    share = f"{100 * sum(failed) / finished:.1f} %" if finished else "-"
    throughput = Text.assemble(
        ("succeeded ", "bold"),
        (sparkline(succeeded), "green"),
        f"  {sum(succeeded)}\n",
        ("failed    ", "bold"),
        (sparkline(failed), "red"),
        f"  {sum(failed)} (failed, expired, dead-lettered)\n",
        f"last {len(minutes)} min: {rate}, failure rate {share}",
    )

    nodes = Table(
        "node",
        "models",
        "slots free/all",
        "running",
        "reputation",
        "penalties",
        "state",
        expand=True,
    )
    for node in sorted(snapshot.nodes.nodes, key=lambda n: n.node_id):
        state = "draining" if node.draining else "ok"
        if node.excluded:
            state = "[red]excluded[/]"
        elif node.on_probation:
            state = "[yellow]probation[/]"
        nodes.add_row(
            printable(node.node_id),
            printable(",".join(node.models)),
            f"{node.free_slots}/{node.slots}",
            str(node.running_jobs),
            f"{node.reputation:.2f} ({node.validations_passed}/{node.validations_wrong})",
            f"{node.penalty_points:.1f} pts, {node.penalties_24h}/24h",
            state,
        )
    if not snapshot.nodes.nodes:
        nodes.add_row("[dim]no node connected[/]", "", "", "", "", "", "")
    return Group(
        Panel(queues, title="queues"),
        Panel(throughput, title=f"finished jobs per minute (last {MINUTES} min)"),
        Panel(nodes, title=f"nodes ({len(snapshot.nodes.nodes)} connected)"),
    )


def top(
    address: Address = None,
    interval: Annotated[float, typer.Option(help="Seconds between readings.", min=0.5)] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
) -> None:
    """A live view of queues, throughput and nodes (Ctrl-C to leave)."""
    if once:
        console.print(render(read(address)))
        return
    with Live(render(read(address)), console=console, screen=False, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(render(read(address)), refresh=True)
        except KeyboardInterrupt:
            return
