"""Credits: a finalised mainnet job debits its tenant and credits the node's owner exactly
once, however often its result arrives; testnet jobs are free."""

from __future__ import annotations

import uuid

import asyncpg

from fleetwire.process.settings import Settings
from fleetwire.store.attempts import AttemptStore, SignedOutcome
from fleetwire.store.ledger import Prices
from fleetwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
)
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


async def run_job(
    jobs: job_service_pb2_grpc.JobServiceStub, network: int = job_pb2.NETWORK_MAINNET
) -> job_pb2.Job:
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt="p",
        network=network,
        sampling=job_pb2.SamplingParams(max_tokens=3),
    )
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec))).job.job_id

    async def succeeded() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        return job if job.state == job_pb2.JOB_STATE_SUCCEEDED else None

    return await eventually(succeeded, within=10, interval=0.1, what=f"job {job_id} to succeed")


async def entries(settings: Settings, job_id: str) -> list[tuple[str, str, int]]:
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        rows = await conn.fetch(
            "SELECT account, kind, amount FROM ledger_entries WHERE job_id = $1 ORDER BY kind",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    return [(r["account"], r["kind"], r["amount"]) for r in rows]


async def test_mainnet_job_is_billed_once_in_double_entry(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    settings: Settings,
    admin: mesh_admin_service_pb2_grpc.MeshAdminServiceStub,
) -> None:
    node = ScriptedNode(f"127.0.0.1:{scheduler.port}", "earner", "scripted", lambda _n: "ok")
    async with running(node):
        job = await run_job(jobs)
    prices = Prices(
        settings.scheduler.price_per_1k_prompt_tokens,
        settings.scheduler.price_per_1k_completion_tokens,
    )
    cost = prices.cost(job.usage.prompt_tokens, job.usage.completion_tokens)
    assert cost > 0
    assert await entries(settings, job.job_id) == [
        ("tenant:anonymous", "JOB_CHARGE", -cost),
        ("owner:earner", "NODE_EARNING", cost),
    ]

    # The same verified result finalised again (a redelivery, a replay): nothing changes.
    pool = await asyncpg.create_pool(
        settings.postgres.dsn.get_secret_value(), min_size=1, max_size=2
    )
    try:
        again = await AttemptStore(pool).finalise_success(
            uuid.UUID(job.job_id),
            SignedOutcome(
                attempt=job.signature.attempt,
                node_id="earner",
                output=job.output,
                finish_reason=job.finish_reason,
                prompt_tokens=job.usage.prompt_tokens,
                completion_tokens=job.usage.completion_tokens,
                timings={},
                signature=job.signature.signature,
                public_key=job.signature.public_key,
                key_id=job.signature.key_id,
                finished_at_ms=job.signature.finished_at_unix_ms,
            ),
            prices,
        )
    finally:
        await pool.close()
    assert again is False
    assert len(await entries(settings, job.job_id)) == 2

    balance = await admin.GetBalance(
        mesh_admin_service_pb2.GetBalanceRequest(account="owner:earner")
    )
    assert balance.balance_micro_credits == cost
    assert balance.entries == 1


async def test_testnet_jobs_are_free(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        "tester",
        "scripted",
        lambda _n: "ok",
        networks=[job_pb2.NETWORK_TESTNET],
    )
    async with running(node):
        job = await run_job(jobs, job_pb2.NETWORK_TESTNET)
    assert await entries(settings, job.job_id) == []
