"""MeshAdminService: operator views over presence (Redis), PostgreSQL and RabbitMQ, served
on the scheduler's admin port; every method first asks ``AdminGate`` whether its caller's
operator key and role allow it, and actions are written to the audit log. Who may serve
(``admin_nodes``) and who may submit or administer (``admin_access``) are mixed in."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
import structlog

from fleetwire.domain.errors import FieldViolation, InvalidArgument, NotFound
from fleetwire.domain.job_view import job_from_row
from fleetwire.messaging.amqp import AMQP_ERRORS, AmqpLink
from fleetwire.messaging.topology import HEADER_REQUEST_ID, Topology
from fleetwire.store.nodes import NodeStore
from fleetwire.store.operators import OperatorStore
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from scheduler.admin_access import AccessAdmin
from scheduler.admin_gate import AdminGate, Context
from scheduler.admin_nodes import NodeAdmin
from scheduler.admin_store import AdminStore
from scheduler.admin_views import ViewsAdmin, offence_counts
from scheduler.penalties import PenaltyBox
from scheduler.presence import NodePresence
from scheduler.replay import DeadLetterReplay
from scheduler.validation import ValidationIssuer
from scheduler.validation_rules import Record, reputation
from scheduler.validation_store import Standing

log = structlog.get_logger(__name__)

_QUEUE_GONE: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelNotFoundEntity,
    *AMQP_ERRORS,
)


def _job_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as err:
        raise InvalidArgument([FieldViolation("job_id", "not a job id (UUID)")]) from err


def _trace_id(context: Context) -> str:
    """The caller's ``x-request-id`` metadata, or a new id."""
    for key, value in context.invocation_metadata() or ():
        if key == HEADER_REQUEST_ID and isinstance(value, str) and value:
            return value[:128]
    return uuid.uuid4().hex


def _timestamp(epoch: str) -> Any:
    stamp = mesh_admin_service_pb2.NodeView().connected_at
    with contextlib.suppress(ValueError):
        stamp.FromDatetime(datetime.fromtimestamp(float(epoch), UTC))
    return stamp


class MeshAdminService(
    NodeAdmin, AccessAdmin, ViewsAdmin, mesh_admin_service_pb2_grpc.MeshAdminServiceServicer
):
    def __init__(
        self,
        presence: NodePresence,
        store: AdminStore,
        penalties: PenaltyBox,
        link: AmqpLink,
        topology: Topology,
        replay: DeadLetterReplay,
        gate: AdminGate,
        operators: OperatorStore,
        nodes: NodeStore,
        tenants: TenantStore,
        validation: ValidationIssuer,
    ) -> None:
        self._validation = validation
        self._nodes = nodes
        self._tenants = tenants
        self._gate = gate
        self._operators = operators
        self._presence = presence
        self._store = store
        self._penalties = penalties
        self._link = link
        self._topology = topology
        self._replay = replay

    async def ListNodes(  # noqa: N802 - gRPC method name
        self, request: mesh_admin_service_pb2.ListNodesRequest, context: Context
    ) -> mesh_admin_service_pb2.ListNodesResponse:
        await self._gate.authorize(context, "ListNodes")
        penalties = await self._store.penalties_24h()
        offences = await self._store.offences_24h()
        exclusions = await self._store.exclusions()
        entries = await self._presence.all_nodes()
        standings = await self._validation.standings([e["node_id"] for e in entries])
        views = []
        for entry in entries:
            node_id = entry["node_id"]
            standing = standings.get(node_id, Standing(Record()))
            view = mesh_admin_service_pb2.NodeView(
                node_id=node_id,
                scheduler_id=entry.get("scheduler_id", ""),
                models=[m for m in entry.get("models", "").split(",") if m],
                region=entry.get("region", ""),
                subclouds=[s for s in entry.get("subclouds", "").split(",") if s],
                slots=int(entry.get("slots", 0)),
                free_slots=int(entry.get("free_slots", 0)),
                running_jobs=int(entry.get("running_jobs", 0)),
                draining=entry.get("draining") == "1",
                # Standing is per replica; this replica's view of nodes it has judged.
                penalty_points=self._penalties.points(node_id),
                excluded=self._penalties.is_excluded(node_id),
                penalties_24h=penalties.get(node_id, 0),
                reputation=reputation(standing.record),
                validations_passed=standing.passed,
                validations_wrong=standing.wrong,
                on_probation=self._validation.on_probation(node_id),
            )
            view.offences_24h.extend(offence_counts(offences.get(node_id, [])))
            until = self._excluded_until(node_id, exclusions.get(node_id))
            if until is not None:
                view.excluded_until.FromDatetime(until)
            view.connected_at.CopyFrom(_timestamp(entry.get("connected_at", "0")))
            view.last_seen.CopyFrom(_timestamp(entry.get("last_seen", "0")))
            views.append(view)
        return mesh_admin_service_pb2.ListNodesResponse(nodes=views)

    def _excluded_until(self, node_id: str, recorded: datetime | None) -> datetime | None:
        """The later of this replica's exclusion of the node and the latest one recorded by
        any replica; None when neither holds now."""
        left = self._penalties.excluded_for(node_id)
        local = datetime.now(UTC) + timedelta(seconds=left) if left else None
        if local is None or (recorded is not None and recorded > local):
            return recorded
        return local

    async def QueueDepths(  # noqa: N802
        self, request: mesh_admin_service_pb2.QueueDepthsRequest, context: Context
    ) -> mesh_admin_service_pb2.QueueDepthsResponse:
        await self._gate.authorize(context, "QueueDepths")
        rows = await self._store.waiting_jobs()
        in_queue: dict[str, int] = {}
        for route in sorted({r["route_key"] for r in rows}):
            in_queue[route] = await self._queue_messages(route)
        return mesh_admin_service_pb2.QueueDepthsResponse(
            depths=[
                mesh_admin_service_pb2.RouteDepth(
                    route=r["route_key"],
                    priority=job_pb2.PriorityClass.Value(r["priority"]),
                    waiting_jobs=r["waiting"],
                    queue_messages=in_queue.get(r["route_key"], 0),
                )
                for r in rows
            ]
        )

    async def _queue_messages(self, route: str) -> int:
        """Ready messages in the route's queues (passive declare; 0 for one that does not
        exist; on quorum, one queue per priority class)."""
        return sum([await self._queue_messages_of(q) for q in self._topology.route_queues(route)])

    async def _queue_messages_of(self, queue: str) -> int:
        try:
            channel = await self._link.channel(publisher_confirms=False)
        except Exception:  # BackendUnavailable: report PostgreSQL's view alone
            return 0
        try:
            ok = await channel.queue_declare(queue, passive=True)
            return int(ok.message_count or 0)
        except _QUEUE_GONE:
            return 0
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*AMQP_ERRORS):
                    await channel.close()

    async def ListDeadLetters(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListDeadLettersRequest, context: Context
    ) -> mesh_admin_service_pb2.ListDeadLettersResponse:
        await self._gate.authorize(context, "ListDeadLetters")
        if request.limit > 1000:
            raise InvalidArgument([FieldViolation("limit", "at most 1000")])
        rows = await self._store.dead_letters(request.limit or 100)
        return mesh_admin_service_pb2.ListDeadLettersResponse(jobs=[job_from_row(r) for r in rows])

    async def ReplayDeadLetter(  # noqa: N802
        self, request: mesh_admin_service_pb2.ReplayDeadLetterRequest, context: Context
    ) -> mesh_admin_service_pb2.ReplayDeadLetterResponse:
        operator = await self._gate.authorize(context, "ReplayDeadLetter")
        job_id = _job_id(request.job_id)
        replayed = await self._replay.replay(job_id, trace_id=_trace_id(context))
        await self._gate.audit(
            operator, "ReplayDeadLetter", str(job_id), {"replayed_as": str(replayed.job["job_id"])}
        )
        return mesh_admin_service_pb2.ReplayDeadLetterResponse(
            job=job_from_row(replayed.job),
            parked_message_removed=replayed.parked_message_removed,
        )

    async def GetBalance(  # noqa: N802
        self, request: mesh_admin_service_pb2.GetBalanceRequest, context: Context
    ) -> mesh_admin_service_pb2.GetBalanceResponse:
        await self._gate.authorize(context, "GetBalance")
        if not request.account.startswith(("tenant:", "owner:")):
            raise InvalidArgument(
                [FieldViolation("account", 'must be "tenant:<id>" or "owner:<id>"')]
            )
        balance, entries = await self._store.balance(request.account)
        return mesh_admin_service_pb2.GetBalanceResponse(
            account=request.account, balance_micro_credits=balance, entries=entries
        )

    async def JobTrail(  # noqa: N802
        self, request: mesh_admin_service_pb2.JobTrailRequest, context: Context
    ) -> mesh_admin_service_pb2.JobTrailResponse:
        await self._gate.authorize(context, "JobTrail")
        job_id = _job_id(request.job_id)
        job, attempts = await self._store.job_and_attempts(job_id)
        if job is None:
            raise NotFound(f"job {request.job_id} not found")
        views = []
        for a in attempts:
            view = mesh_admin_service_pb2.AttemptView(
                attempt=a["attempt"],
                node_id=a["node_id"],
                scheduler_id=a["scheduler_id"],
                outcome=a["outcome"],
            )
            for name in ("dispatched_at", "started_at", "ended_at"):
                if a[name] is not None:
                    getattr(view, name).FromDatetime(a[name])
            if a["error_reason"]:
                view.error.reason = a["error_reason"]
                view.error.message = a["error_message"] or ""
            views.append(view)
        replayed_as = await self._replay.replacement_of(job_id)
        return mesh_admin_service_pb2.JobTrailResponse(
            job=job_from_row(job),
            attempts=views,
            replayed_as=str(replayed_as) if replayed_as else "",
            tenant=job["tenant_id"],
        )
