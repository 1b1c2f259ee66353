"""The JobStore's batched statements on the real PostgreSQL (what the coalescers send when
calls arrive together): answers in the order asked, a job named twice in one batch begun
twice (the second attempt superseding the first, as two deliveries one after the other
would), unknown and foreign jobs answered None."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from broker_bridge.desk import new_job
from fleetwire.db import open_pool
from fleetwire.job_store import JobStore
from fleetwire.settings import Settings
from fleetwire.topology import Topology
from fleetwire.v1 import job_pb2


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[JobStore]:
    pool = await open_pool(settings.postgres)
    yield JobStore(pool)
    await pool.close()


async def queued_job(store: JobStore, settings: Settings) -> uuid.UUID:
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt="p",
        network=job_pb2.NETWORK_TESTNET,
        priority=job_pb2.PRIORITY_CLASS_NORMAL,
    )
    spec.ttl.FromSeconds(600)
    row, _ = new_job(
        spec,
        topology=Topology(settings.mesh.namespace),
        tenant_id="anonymous",
        trace_id="t",
        now=datetime.now(UTC),
    )
    assert await store.insert_job(row)
    return row.job_id


async def test_begin_attempts_answers_each_pair_in_order(
    store: JobStore, settings: Settings
) -> None:
    a, b = await queued_job(store, settings), await queued_job(store, settings)
    unknown = uuid.uuid4()
    opened = await store.begin_attempts(
        [(a, "node-1"), (b, "node-1"), (a, "node-2"), (unknown, "node-1")], "sched-test"
    )
    assert [o.number if o else None for o in opened] == [1, 1, 2, None]
    assert opened[0] is not None
    assert opened[1] is not None
    assert opened[0].request_digest != opened[1].request_digest  # each job's own digest
    attempts = await store.attempts_of(a)
    assert [(x["attempt"], x["node_id"], x["outcome"]) for x in attempts] == [
        (1, "node-1", "LOST"),
        (2, "node-2", "DISPATCHED"),
    ]
    job = await store.get_job(a)
    assert job is not None
    assert (job["state"], job["node_id"]) == ("DISPATCHED", "node-2")


async def test_jobs_of_tenants_hides_foreign_and_unknown_jobs(
    store: JobStore, settings: Settings
) -> None:
    job_id = await queued_job(store, settings)
    rows = await store.jobs_of_tenants(
        [(job_id, "anonymous"), (job_id, "someone-else"), (uuid.uuid4(), "anonymous")]
    )
    assert rows[0] is not None
    assert rows[0]["job_id"] == job_id
    assert rows[1:] == [None, None]
