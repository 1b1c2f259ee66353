"""What each console page shows, gathered from MeshAdminService with the session's operator
key (``Calls``) and shaped for the templates. No HTML here and no SQL anywhere: every
number on a page is an admin RPC's answer, or computed from one (charts, signature checks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from console.admin_client import AdminCallError
from console.charts import throughput_chart
from console.signatures import SignatureVerdict, check_signature
from fleetwire.domain.states import JobState
from fleetwire.v1 import job_pb2
from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2

Calls = Callable[[str, Any], Awaitable[Any]]

PRIORITIES = ("urgent", "normal", "bulk", "test")
THROUGHPUT_MINUTES = 60
DEAD_LETTERS_SHOWN = 100
AUDIT_SHOWN = 200
JOBS_PER_PAGE = 50
STATE_NAMES = [s.value for s in JobState]


@dataclass(frozen=True, slots=True)
class RouteRow:
    route: str
    waiting: dict[str, int]  # by priority class name
    total: int
    ready: int  # messages ready in the route's queue (RabbitMQ)


def route_rows(depths: admin_pb2.QueueDepthsResponse) -> list[RouteRow]:
    """Waiting jobs per route and priority class, one row per route."""
    waiting: dict[str, dict[str, int]] = {}
    ready: dict[str, int] = {}
    for depth in depths.depths:
        name = job_pb2.PriorityClass.Name(depth.priority).removeprefix("PRIORITY_CLASS_").lower()
        row = waiting.setdefault(depth.route, dict.fromkeys(PRIORITIES, 0))
        row[name] = row.get(name, 0) + int(depth.waiting_jobs)
        ready[depth.route] = int(depth.queue_messages)
    return [
        RouteRow(route, counts, sum(counts.values()), ready[route])
        for route, counts in sorted(waiting.items())
    ]


async def overview(call: Calls) -> dict[str, Any]:
    depths, nodes, throughput, dead, ledger = await asyncio.gather(
        call("QueueDepths", admin_pb2.QueueDepthsRequest()),
        call("ListNodes", admin_pb2.ListNodesRequest()),
        call("JobThroughput", admin_pb2.JobThroughputRequest(minutes=THROUGHPUT_MINUTES)),
        call("ListDeadLetters", admin_pb2.ListDeadLettersRequest(limit=DEAD_LETTERS_SHOWN)),
        call("ListLedgerAccounts", admin_pb2.ListLedgerAccountsRequest(limit=1)),
    )
    listed = list(nodes.nodes)
    return {
        "routes": route_rows(depths),
        "nodes": listed,
        "slots": sum(n.slots for n in listed),
        "free_slots": sum(n.free_slots for n in listed),
        "running": sum(n.running_jobs for n in listed),
        "excluded": sum(1 for n in listed if n.excluded or n.HasField("excluded_until")),
        "probation": sum(1 for n in listed if n.on_probation),
        "chart": throughput_chart(list(throughput.minutes)),
        "dead_letters": len(dead.jobs),
        "dead_letters_more": len(dead.jobs) >= DEAD_LETTERS_SHOWN,
        "ledger": ledger,
        "as_of": datetime.now(UTC).strftime("%H:%M:%S"),
    }


async def nodes(call: Calls) -> dict[str, Any]:
    connected, registered, pending = await asyncio.gather(
        call("ListNodes", admin_pb2.ListNodesRequest()),
        call("ListRegisteredNodes", admin_pb2.ListRegisteredNodesRequest()),
        call("ListPendingNodes", admin_pb2.ListPendingNodesRequest()),
    )
    online = {n.node_id for n in connected.nodes}
    return {
        "connected": list(connected.nodes),
        "registered": list(registered.nodes),
        "pending": list(pending.nodes),
        "online": online,
    }


@dataclass(frozen=True, slots=True)
class JobQuery:
    """The jobs page's filters as the form sent them ("" is no filter)."""

    tenant: str = ""
    state: str = ""
    node: str = ""
    since: str = ""  # YYYY-MM-DDTHH:MM, UTC
    until: str = ""
    page: str = ""

    def request(self) -> admin_pb2.ListJobsRequest:
        """The ListJobs request; ValueError naming a field the form got wrong."""
        request = admin_pb2.ListJobsRequest(
            tenant=self.tenant.strip(),
            node_id=self.node.strip(),
            page_size=JOBS_PER_PAGE,
            page_token=self.page,
        )
        if self.state:
            if self.state not in STATE_NAMES:
                raise ValueError(f"state: not a job state: {self.state}")
            request.states.append(job_pb2.JobState.Value(f"JOB_STATE_{self.state}"))
        for field, text in (("created_after", self.since), ("created_before", self.until)):
            if text:
                try:
                    when = datetime.fromisoformat(text).replace(tzinfo=UTC)
                except ValueError as err:
                    raise ValueError(f"{field}: not a time (YYYY-MM-DDTHH:MM, UTC)") from err
                getattr(request, field).FromDatetime(when)
        return request

    def without_page(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("tenant", self.tenant),
                ("state", self.state),
                ("node", self.node),
                ("since", self.since),
                ("until", self.until),
            )
            if v
        }


async def jobs(call: Calls, query: JobQuery) -> dict[str, Any]:
    reply = await call("ListJobs", query.request())
    return {"jobs": list(reply.jobs), "next_page": reply.next_page_token, "query": query}


@dataclass(frozen=True, slots=True)
class Trail:
    reply: admin_pb2.JobTrailResponse
    verdict: SignatureVerdict
    key_error: str  # why the mesh's keys could not be read ("" when they were)


async def job(call: Calls, job_id: str) -> dict[str, Any]:
    reply = await call("JobTrail", admin_pb2.JobTrailRequest(job_id=job_id))
    keys: list[Any] = []
    key_error = ""
    node_id = reply.job.signature.node_id
    if reply.job.signature.signature and node_id:
        try:
            history = await call(
                "ListNodeKeyHistory", admin_pb2.ListNodeKeyHistoryRequest(node_id=node_id)
            )
            keys = list(history.keys)
        except AdminCallError as err:
            if err.code != grpc.StatusCode.NOT_FOUND:
                raise
            key_error = f"the mesh has no key for node {node_id}"
    trail = Trail(reply, check_signature(reply.job, keys), key_error)
    return {"trail": trail, "job": reply.job, "attempts": list(reply.attempts)}


async def dead_letters(call: Calls) -> dict[str, Any]:
    reply = await call(
        "ListDeadLetters", admin_pb2.ListDeadLettersRequest(limit=DEAD_LETTERS_SHOWN)
    )
    return {"jobs": list(reply.jobs)}


async def tenants(call: Calls) -> dict[str, Any]:
    listed, ledger = await asyncio.gather(
        call("ListTenants", admin_pb2.ListTenantsRequest()),
        call("ListLedgerAccounts", admin_pb2.ListLedgerAccountsRequest()),
    )
    return {"tenants": list(listed.tenants), "ledger": ledger}


async def audit(call: Calls, target: str) -> dict[str, Any]:
    reply = await call(
        "ListAuditEntries", admin_pb2.ListAuditEntriesRequest(limit=AUDIT_SHOWN, target=target)
    )
    return {"entries": list(reply.entries), "target": target}
