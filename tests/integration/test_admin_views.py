"""The admin views the console is built on, on this run's real scheduler and PostgreSQL:
WhoAmI, ListJobs (filters and pages), JobThroughput (finished per minute), a node's key
history, tenants with their balances, the ledger by account, and nodes' offences and
exclusions as every replica recorded them. Rows are seeded straight in PostgreSQL, each
test with names of its own."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from nacl.signing import SigningKey

from fleetwire.protocol.signing import key_id
from fleetwire.store.operators import OperatorStore, Role
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.mesh_admin import bearer

Admin = mesh_admin_service_pb2_grpc.MeshAdminServiceStub
SPEC = job_pb2.JobSpec(
    model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
).SerializeToString()


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def seed_job(
    pool: asyncpg.Pool,
    tenant: str,
    *,
    state: str = "QUEUED",
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    node_id: str | None = None,
) -> uuid.UUID:
    job_id = uuid.uuid4()
    created = created_at or datetime.now(UTC)
    await pool.execute("INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant)
    await pool.execute(
        "INSERT INTO jobs (job_id, state, spec, model, network, priority, route_key,"
        " request_digest, trace_id, created_at, updated_at, expires_at, tenant_id, node_id,"
        " error_reason)"
        " VALUES ($1, $2, $3, 'scripted', 'mainnet', 'PRIORITY_CLASS_NORMAL',"
        " 'mainnet.scripted', $4, 't', $5::timestamptz, $6,"
        " $5::timestamptz + interval '1 hour', $7, $8, $9)",
        job_id,
        state,
        SPEC,
        bytes(32),
        created,
        updated_at or created,
        tenant,
        node_id,
        "SCRIPTED" if state == "FAILED" else None,
    )
    return job_id


async def test_who_am_i_names_the_caller_and_its_role(
    admin: Admin, scheduler: SchedulerServer, pool: asyncpg.Pool
) -> None:
    me = await admin.WhoAmI(mesh_admin_service_pb2.WhoAmIRequest())
    assert (me.name, me.role) == ("tests", mesh_admin_service_pb2.OPERATOR_ROLE_ADMIN)
    viewer = await OperatorStore(pool).create_key(name("viewer"), Role.VIEWER, actor="t")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.admin_port}") as channel:
        reply = await Admin(channel).WhoAmI(
            mesh_admin_service_pb2.WhoAmIRequest(), metadata=bearer(viewer.secret)
        )
    assert (reply.name, reply.key_id, reply.role) == (
        viewer.operator.name,
        viewer.operator.key_id,
        mesh_admin_service_pb2.OPERATOR_ROLE_VIEWER,
    )


async def test_list_jobs_pages_newest_first_through_every_job_once(
    admin: Admin, pool: asyncpg.Pool
) -> None:
    tenant = name("pages")
    base = datetime.now(UTC) - timedelta(hours=1)
    # Two jobs share an acceptance time: the id orders them, and no page loses one.
    times = [base + timedelta(seconds=s) for s in (0, 1, 2, 2, 3, 4, 5)]
    seeded = [await seed_job(pool, tenant, created_at=t) for t in times]
    expected = [str(j) for _, j in sorted(zip(times, seeded, strict=True), reverse=True)]

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await admin.ListJobs(
            mesh_admin_service_pb2.ListJobsRequest(tenant=tenant, page_size=3, page_token=token)
        )
        seen += [j.job_id for j in reply.jobs]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == expected
    assert pages == 3
    first = (
        await admin.ListJobs(mesh_admin_service_pb2.ListJobsRequest(tenant=tenant, page_size=1))
    ).jobs[0]
    assert first.tenant == tenant
    assert first.state == job_pb2.JOB_STATE_QUEUED
    assert (first.model, first.route) == ("scripted", "mainnet.scripted")
    assert first.network == job_pb2.NETWORK_MAINNET
    assert first.priority == job_pb2.PRIORITY_CLASS_NORMAL
    assert not first.signed
    assert not first.validation


async def test_list_jobs_filters_by_state_node_and_time(admin: Admin, pool: asyncpg.Pool) -> None:
    tenant = name("filters")
    node = name("node")
    now = datetime.now(UTC)
    old = await seed_job(pool, tenant, state="FAILED", created_at=now - timedelta(days=2))
    failed = await seed_job(pool, tenant, state="FAILED", node_id=node)
    await seed_job(pool, tenant, state="SUCCEEDED", node_id=node)

    async def ids(**filters: object) -> list[str]:
        reply = await admin.ListJobs(
            mesh_admin_service_pb2.ListJobsRequest(tenant=tenant, **filters)
        )  # type: ignore[arg-type]
        return [j.job_id for j in reply.jobs]

    assert await ids(states=[job_pb2.JOB_STATE_FAILED]) == [str(failed), str(old)]
    assert await ids(states=[job_pb2.JOB_STATE_FAILED], node_id=node) == [str(failed)]
    since = mesh_admin_service_pb2.ListJobsRequest().created_after
    since.FromDatetime(now - timedelta(days=1))
    assert await ids(states=[job_pb2.JOB_STATE_FAILED], created_after=since) == [str(failed)]
    assert await ids(created_before=since) == [str(old)]
    reply = await admin.ListJobs(
        mesh_admin_service_pb2.ListJobsRequest(tenant=tenant, states=[job_pb2.JOB_STATE_FAILED])
    )
    assert reply.jobs[0].error.reason == "SCRIPTED"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (mesh_admin_service_pb2.ListJobsRequest(page_size=501), "page_size"),
        (mesh_admin_service_pb2.ListJobsRequest(tenant="Not Valid"), "tenant"),
        (mesh_admin_service_pb2.ListJobsRequest(node_id="a/b"), "node_id"),
        (mesh_admin_service_pb2.ListJobsRequest(page_token="garbage"), "page_token"),
    ],
)
async def test_list_jobs_refuses_bad_filters_naming_the_field(
    admin: Admin, request_: mesh_admin_service_pb2.ListJobsRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListJobs(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")


async def test_a_page_token_works_only_with_the_filters_it_was_made_for(
    admin: Admin, pool: asyncpg.Pool
) -> None:
    tenant = name("token")
    for _ in range(2):
        await seed_job(pool, tenant)
    page = await admin.ListJobs(mesh_admin_service_pb2.ListJobsRequest(tenant=tenant, page_size=1))
    assert page.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListJobs(
            mesh_admin_service_pb2.ListJobsRequest(
                tenant=name("other"), page_size=1, page_token=page.next_page_token
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_job_throughput_counts_jobs_by_the_minute_they_finished(
    admin: Admin, pool: asyncpg.Pool
) -> None:
    tenant = name("throughput")
    now = datetime.now(UTC)
    two_minutes_ago = now.replace(second=0, microsecond=0) - timedelta(minutes=2)
    for state in ("SUCCEEDED", "SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED", "DEAD_LETTERED"):
        await seed_job(pool, tenant, state=state, updated_at=two_minutes_ago + timedelta(seconds=5))
    await seed_job(pool, tenant, state="RUNNING", updated_at=two_minutes_ago)  # not finished

    reply = await admin.JobThroughput(mesh_admin_service_pb2.JobThroughputRequest(minutes=5))
    starts = [m.start.ToDatetime(tzinfo=UTC) for m in reply.minutes]
    assert len(starts) == 5
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    assert starts[-1] <= datetime.now(UTC) < starts[-1] + timedelta(minutes=1, seconds=2)
    minute = reply.minutes[starts.index(two_minutes_ago)]
    # Other tests of the run finish jobs too: at least what was seeded.
    assert minute.succeeded >= 2
    assert minute.failed >= 1
    assert minute.expired >= 1
    assert minute.cancelled >= 1
    assert minute.dead_lettered >= 1
    default = await admin.JobThroughput(mesh_admin_service_pb2.JobThroughputRequest())
    assert len(default.minutes) == 60
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.JobThroughput(mesh_admin_service_pb2.JobThroughputRequest(minutes=1441))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_nodes_key_history_has_every_key_newest_first(admin: Admin) -> None:
    node_id = name("history")
    old, new = SigningKey.generate(), SigningKey.generate()
    for key, replace in ((old, False), (new, True)):
        await admin.RegisterNode(
            mesh_admin_service_pb2.RegisterNodeRequest(
                node_id=node_id, public_key=bytes(key.verify_key), replace=replace
            )
        )
    history = await admin.ListNodeKeyHistory(
        mesh_admin_service_pb2.ListNodeKeyHistoryRequest(node_id=node_id)
    )
    assert [k.key_id for k in history.keys] == [
        key_id(bytes(new.verify_key)),
        key_id(bytes(old.verify_key)),
    ]
    assert bytes(history.keys[0].public_key) == bytes(new.verify_key)
    assert not history.keys[0].HasField("valid_until")
    assert history.keys[1].HasField("valid_until"), "the rotated key ended"
    for node, code in (
        (name("never"), grpc.StatusCode.NOT_FOUND),
        ("Not/A/Node", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.ListNodeKeyHistory(
                mesh_admin_service_pb2.ListNodeKeyHistoryRequest(node_id=node)
            )
        assert caught.value.code() == code


async def test_tenants_and_the_ledger_show_balances_keys_and_policy(
    admin: Admin, pool: asyncpg.Pool
) -> None:
    tenant = name("ledger")
    tenants = TenantStore(pool)
    await tenants.create_key(tenant)
    revoked = await tenants.create_key(tenant)
    await tenants.revoke_key(revoked.key_id)
    await tenants.set_policy(
        tenant, priorities=["normal"], networks=None, subclouds=[], credit_limit=5
    )
    owner = name("owner")
    job_id = await seed_job(pool, tenant, state="SUCCEEDED")
    await seed_job(pool, tenant)  # waiting
    await pool.execute(
        "INSERT INTO ledger_entries (job_id, account, kind, amount) VALUES"
        " ($1, $2, 'JOB_CHARGE', -700), ($1, $3, 'NODE_EARNING', 700)",
        job_id,
        f"tenant:{tenant}",
        f"owner:{owner}",
    )

    listed = await admin.ListTenants(mesh_admin_service_pb2.ListTenantsRequest(limit=1000))
    view = next(t for t in listed.tenants if t.tenant == tenant)
    assert (view.balance_micro_credits, view.ledger_entries) == (-700, 1)
    assert (view.live_api_keys, view.waiting_jobs) == (1, 1)
    assert list(view.policy.priorities.classes) == [job_pb2.PRIORITY_CLASS_NORMAL]
    assert not view.policy.HasField("networks"), "unset: the mesh's default"
    assert view.policy.HasField("subclouds")
    assert list(view.policy.subclouds.names) == []
    assert view.policy.credit_limit_micro_credits == 5
    assert [t.tenant for t in listed.tenants] == sorted(t.tenant for t in listed.tenants)

    ledger = await admin.ListLedgerAccounts(
        mesh_admin_service_pb2.ListLedgerAccountsRequest(limit=1000)
    )
    accounts = {a.account: a for a in ledger.accounts}
    assert accounts[f"tenant:{tenant}"].balance_micro_credits == -700
    assert accounts[f"owner:{owner}"].balance_micro_credits == 700
    assert accounts[f"owner:{owner}"].entries == 1
    assert accounts[f"owner:{owner}"].HasField("last_entry_at")
    totals = await pool.fetchrow(
        "SELECT -sum(amount) FILTER (WHERE kind = 'JOB_CHARGE') AS charged,"
        " sum(amount) FILTER (WHERE kind = 'NODE_EARNING') AS earned, count(*) AS n"
        " FROM ledger_entries"
    )
    assert ledger.total_charged_micro_credits == totals["charged"]
    assert ledger.total_earned_micro_credits == totals["earned"]
    assert ledger.entries == totals["n"]
    for method, request in (
        ("ListTenants", mesh_admin_service_pb2.ListTenantsRequest(limit=1001)),
        ("ListLedgerAccounts", mesh_admin_service_pb2.ListLedgerAccountsRequest(limit=1001)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(admin, method)(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_registered_nodes_show_their_offences_and_an_exclusion_any_replica_recorded(
    admin: Admin, pool: asyncpg.Pool
) -> None:
    node_id = name("offender")
    await admin.RegisterNode(
        mesh_admin_service_pb2.RegisterNodeRequest(
            node_id=node_id, public_key=bytes(SigningKey.generate().verify_key)
        )
    )
    until = datetime.now(UTC) + timedelta(minutes=5)
    await pool.execute(
        "INSERT INTO node_penalties (node_id, offence, points, scheduler_id, count,"
        " excluded_until, created_at) VALUES"
        " ($1, 'BAD_SIGNATURE', 5, 'elsewhere', 1, NULL, now()),"
        " ($1, 'BAD_SIGNATURE', 5, 'elsewhere', 1, $2, now()),"
        " ($1, 'FAILURE', 1, 'elsewhere', 7, NULL, now()),"
        " ($1, 'REJECTED', 1, 'elsewhere', 1, NULL, now() - interval '2 days')",
        node_id,
        until,
    )
    listed = await admin.ListRegisteredNodes(mesh_admin_service_pb2.ListRegisteredNodesRequest())
    view = next(n for n in listed.nodes if n.node_id == node_id)
    assert [(o.offence, o.count) for o in view.offences_24h] == [
        ("FAILURE", 7),
        ("BAD_SIGNATURE", 2),
    ], "the last day only, most frequent first"
    assert abs(view.excluded_until.ToDatetime(tzinfo=UTC) - until) < timedelta(milliseconds=1)
    await pool.execute(
        "UPDATE node_penalties SET excluded_until = now() - interval '1 second'"
        " WHERE node_id = $1 AND excluded_until IS NOT NULL",
        node_id,
    )
    listed = await admin.ListRegisteredNodes(mesh_admin_service_pb2.ListRegisteredNodesRequest())
    view = next(n for n in listed.nodes if n.node_id == node_id)
    assert not view.HasField("excluded_until"), "an exclusion that ended is not shown"
