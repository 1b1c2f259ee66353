"""The read-only views of MeshAdminService that the console is built on: who is calling,
jobs by filter and page, jobs finished per minute, a node's key history, tenants with their
balances, and the ledger by account. Each asks ``AdminGate`` first (viewer); the SQL is in
``AdminStore``, the paging rules in ``job_pages``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fleetwire.domain.errors import FieldViolation, InvalidArgument
from fleetwire.domain.states import JobState
from fleetwire.store.node_keys import NodeKeys
from fleetwire.store.nodes import NodeStore
from fleetwire.store.operators import Role
from fleetwire.store.tenants import TenantLimits
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2
from scheduler.admin_access import policy_message
from scheduler.admin_gate import AdminGate, Context
from scheduler.admin_nodes import network_value
from scheduler.admin_store import AdminStore
from scheduler.job_pages import PageStart, job_filter, page_size, page_start, page_token

MAX_THROUGHPUT_MINUTES = 1440
DEFAULT_THROUGHPUT_MINUTES = 60
MAX_LISTED = 1000
DEFAULT_LISTED = 200

_ROLE_VALUES = {
    Role.VIEWER: mesh_admin_service_pb2.OPERATOR_ROLE_VIEWER,
    Role.ADMIN: mesh_admin_service_pb2.OPERATOR_ROLE_ADMIN,
}


def _limit(asked: int, default: int = DEFAULT_LISTED) -> int:
    if asked > MAX_LISTED:
        raise InvalidArgument([FieldViolation("limit", f"at most {MAX_LISTED}")])
    return asked or default


def _when(stamp: Any, field: str) -> datetime | None:
    """A request Timestamp as a datetime; None when unset."""
    if not stamp.seconds and not stamp.nanos:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError) as err:
        raise InvalidArgument([FieldViolation(field, "not a valid time")]) from err


def _states(values: Any) -> list[JobState]:
    states = []
    for value in values:
        if value == job_pb2.JOB_STATE_UNSPECIFIED or value not in job_pb2.JobState.values():
            raise InvalidArgument([FieldViolation("states", "named job states")])
        states.append(JobState.from_proto(value))
    return states


def offence_counts(counts: list[tuple[str, int]]) -> list[mesh_admin_service_pb2.OffenceCount]:
    """Offence tallies as the API shows them."""
    return [mesh_admin_service_pb2.OffenceCount(offence=o, count=n) for o, n in counts]


def _summary(row: Any) -> mesh_admin_service_pb2.JobSummary:
    summary = mesh_admin_service_pb2.JobSummary(
        job_id=str(row["job_id"]),
        tenant=row["tenant_id"],
        state=JobState(row["state"]).to_proto(),
        model=row["model"],
        network=network_value(row["network"]),
        priority=job_pb2.PriorityClass.Value(row["priority"]),
        route=row["route_key"],
        attempts=row["attempts"],
        node_id=row["node_id"] or "",
        replay_of=str(row["replay_of"]) if row["replay_of"] else "",
        validation=row["validation"],
        signed=row["signed"],
    )
    summary.created_at.FromDatetime(row["created_at"])
    summary.updated_at.FromDatetime(row["updated_at"])
    if row["error_reason"]:
        summary.error.reason = row["error_reason"]
        summary.error.message = row["error_message"] or ""
    return summary


class ViewsAdmin:
    """WhoAmI, ListJobs, JobThroughput, ListNodeKeyHistory, ListTenants and
    ListLedgerAccounts (mixed into MeshAdminService)."""

    _gate: AdminGate
    _store: AdminStore
    _nodes: NodeStore

    async def WhoAmI(  # noqa: N802 - gRPC method name
        self, request: mesh_admin_service_pb2.WhoAmIRequest, context: Context
    ) -> mesh_admin_service_pb2.WhoAmIResponse:
        operator = await self._gate.authorize(context, "WhoAmI")
        return mesh_admin_service_pb2.WhoAmIResponse(
            name=operator.name, key_id=operator.key_id, role=_ROLE_VALUES[operator.role]
        )

    async def ListJobs(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListJobsRequest, context: Context
    ) -> mesh_admin_service_pb2.ListJobsResponse:
        await self._gate.authorize(context, "ListJobs")
        jobs = job_filter(
            tenant=request.tenant,
            states=_states(request.states),
            node_id=request.node_id,
            created_after=_when(request.created_after, "created_after"),
            created_before=_when(request.created_before, "created_before"),
        )
        size = page_size(request.page_size)
        start = page_start(jobs, request.page_token)
        # One more than a page says whether another page follows.
        rows = await self._store.jobs_page(jobs, start, size + 1)
        following = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            following = page_token(jobs, PageStart(last["created_at"], last["job_id"]))
        return mesh_admin_service_pb2.ListJobsResponse(
            jobs=[_summary(r) for r in rows], next_page_token=following
        )

    async def JobThroughput(  # noqa: N802
        self, request: mesh_admin_service_pb2.JobThroughputRequest, context: Context
    ) -> mesh_admin_service_pb2.JobThroughputResponse:
        await self._gate.authorize(context, "JobThroughput")
        if request.minutes > MAX_THROUGHPUT_MINUTES:
            raise InvalidArgument([FieldViolation("minutes", f"at most {MAX_THROUGHPUT_MINUTES}")])
        rows = await self._store.finished_per_minute(request.minutes or DEFAULT_THROUGHPUT_MINUTES)
        minutes = []
        for row in rows:
            minute = mesh_admin_service_pb2.ThroughputMinute(
                succeeded=row["succeeded"],
                failed=row["failed"],
                expired=row["expired"],
                cancelled=row["cancelled"],
                dead_lettered=row["dead_lettered"],
            )
            minute.start.FromDatetime(row["start"])
            minutes.append(minute)
        return mesh_admin_service_pb2.JobThroughputResponse(minutes=minutes)

    async def ListNodeKeyHistory(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListNodeKeyHistoryRequest, context: Context
    ) -> mesh_admin_service_pb2.ListNodeKeyHistoryResponse:
        await self._gate.authorize(context, "ListNodeKeyHistory")
        history = await NodeKeys(self._nodes).list(request.node_id)
        return mesh_admin_service_pb2.ListNodeKeyHistoryResponse(
            node_id=history.node_id, keys=history.keys
        )

    async def ListTenants(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListTenantsRequest, context: Context
    ) -> mesh_admin_service_pb2.ListTenantsResponse:
        await self._gate.authorize(context, "ListTenants")
        views = []
        for row in await self._store.tenants(_limit(request.limit)):

            def names(column: str, row: Any = row) -> frozenset[str] | None:
                return None if row[column] is None else frozenset(row[column])

            limits = TenantLimits(
                None,
                None,
                priorities=names("allowed_priorities"),
                networks=names("allowed_networks"),
                subclouds=names("allowed_subclouds"),
                credit_limit=row["credit_limit"],
            )
            view = mesh_admin_service_pb2.TenantView(
                tenant=row["tenant_id"],
                balance_micro_credits=int(row["balance"]),
                ledger_entries=int(row["entries"]),
                live_api_keys=int(row["live_keys"]),
                waiting_jobs=int(row["waiting"]),
                policy=policy_message(row["tenant_id"], limits),
            )
            view.created_at.FromDatetime(row["created_at"])
            views.append(view)
        return mesh_admin_service_pb2.ListTenantsResponse(tenants=views)

    async def ListLedgerAccounts(  # noqa: N802
        self, request: mesh_admin_service_pb2.ListLedgerAccountsRequest, context: Context
    ) -> mesh_admin_service_pb2.ListLedgerAccountsResponse:
        await self._gate.authorize(context, "ListLedgerAccounts")
        rows, totals = await self._store.ledger_accounts(_limit(request.limit))
        accounts = []
        for row in rows:
            account = mesh_admin_service_pb2.LedgerAccount(
                account=row["account"],
                balance_micro_credits=int(row["balance"]),
                entries=int(row["entries"]),
            )
            account.last_entry_at.FromDatetime(row["last_entry_at"])
            accounts.append(account)
        return mesh_admin_service_pb2.ListLedgerAccountsResponse(
            accounts=accounts,
            total_charged_micro_credits=int(totals["charged"]),
            total_earned_micro_credits=int(totals["earned"]),
            entries=int(totals["entries"]),
        )
