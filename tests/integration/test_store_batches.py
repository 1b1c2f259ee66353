"""The job and attempt stores' batched statements on the real PostgreSQL (what the
coalescers send when calls arrive together): answers in the order asked, a job named twice
in one batch begun twice (the second attempt superseding the first, as two deliveries one
after the other would), unknown and foreign jobs answered None."""

from __future__ import annotations

import dataclasses
import math
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from broker_bridge.desk import new_job
from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.store.attempts import AttemptStore, SignedOutcome
from fleetwire.store.jobs import JobStore
from fleetwire.store.ledger import Bill
from fleetwire.v1 import job_pb2


@pytest.fixture
def store(pool: asyncpg.Pool) -> JobStore:
    return JobStore(pool)


@pytest.fixture
def attempts(pool: asyncpg.Pool) -> AttemptStore:
    return AttemptStore(pool)


async def queued_job(
    store: JobStore, settings: Settings, network: int = job_pb2.NETWORK_TESTNET
) -> uuid.UUID:
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt="p",
        network=network,  # type: ignore[arg-type]
        priority=job_pb2.PRIORITY_CLASS_NORMAL,
    )
    spec.ttl.FromSeconds(600)
    row, _ = new_job(
        spec,
        topology=Topology(settings.mesh.namespace),
        tenant_id="anonymous",
        trace_id="t",
        now=datetime.now(UTC),
        publish_lease=timedelta(seconds=5),
    )
    assert await store.insert_job(row)
    return row.job_id


async def test_begin_attempts_answers_each_pair_in_order(
    store: JobStore, attempts: AttemptStore, settings: Settings
) -> None:
    a, b = await queued_job(store, settings), await queued_job(store, settings)
    unknown = uuid.uuid4()
    opened = await attempts.begin_attempts(
        [(a, "node-1"), (b, "node-1"), (a, "node-2"), (unknown, "node-1")], "sched-test"
    )
    assert [o.number if o else None for o in opened] == [1, 1, 2, None]
    assert opened[0] is not None
    assert opened[1] is not None
    assert opened[0].request_digest != opened[1].request_digest  # each job's own digest
    rows = await attempts.attempts_of(a)
    assert [(x["attempt"], x["node_id"], x["outcome"]) for x in rows] == [
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


def outcome(node_id: str, text: str) -> SignedOutcome:
    return SignedOutcome(
        attempt=1,
        node_id=node_id,
        output=text,
        finish_reason="length",
        prompt_tokens=10,
        completion_tokens=20,
        timings={"total_ms": 1.0},
        signature=b"s" * 64,
        public_key=b"k" * 32,
        key_id="key",
        finished_at_ms=1,
    )


async def test_finalise_successes_finalises_and_bills_each_job_once(
    store: JobStore, attempts: AttemptStore, settings: Settings
) -> None:
    a, b, c = [await queued_job(store, settings, job_pb2.NETWORK_MAINNET) for _ in range(3)]
    await attempts.begin_attempts([(a, "node-1"), (b, "node-1"), (c, "node-1")], "sched-test")
    done = await attempts.finalise_successes(
        [
            (a, outcome("node-1", "first"), Bill(7)),
            (b, outcome("node-1", "second"), Bill(9)),
            (a, outcome("node-1", "again"), Bill(7)),  # a duplicate in the same batch
            (c, outcome("node-2", "not its node"), Bill(5)),  # dispatched to node-1
        ]
    )
    assert done == [True, True, False, False]
    job_a, job_c = await store.get_job(a), await store.get_job(c)
    assert job_a is not None
    assert (job_a["state"], bytes(job_a["output"])) == ("SUCCEEDED", b"first")
    assert job_c is not None
    assert job_c["state"] == "DISPATCHED"
    assert [x["outcome"] for x in await attempts.attempts_of(b)] == ["SUCCEEDED"]
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        ledger = await conn.fetch(
            "SELECT job_id, kind, amount FROM ledger_entries WHERE job_id = ANY($1::uuid[])"
            " ORDER BY amount",
            [a, b, c],
        )
    finally:
        await conn.close()
    assert sorted((r["job_id"], r["kind"], r["amount"]) for r in ledger) == sorted(
        [
            (a, "JOB_CHARGE", -7),
            (a, "NODE_EARNING", 7),
            (b, "JOB_CHARGE", -9),
            (b, "NODE_EARNING", 9),
        ]
    )


async def test_an_item_the_database_refuses_does_not_fail_its_batch(
    store: JobStore, attempts: AttemptStore, settings: Settings
) -> None:
    """The second line behind the result checks: NaN timings or a NUL in a text column make
    PostgreSQL refuse the coalesced statement; the batch is finalised again item by item and
    only the refused item is answered None."""
    a, b, c = [await queued_job(store, settings, job_pb2.NETWORK_MAINNET) for _ in range(3)]
    await attempts.begin_attempts([(a, "node-1"), (b, "node-1"), (c, "node-1")], "sched-test")
    poisoned = dataclasses.replace(outcome("node-1", "nan"), timings={"total_ms": math.nan})
    nul = dataclasses.replace(outcome("node-1", "nul"), finish_reason="st\x00p")
    done = await attempts.finalise_successes(
        [(a, outcome("node-1", "fine"), Bill(7)), (b, poisoned, Bill(7)), (c, nul, Bill(7))]
    )
    assert done == [True, None, None]
    states = [(await store.get_job(j) or {}).get("state") for j in (a, b, c)]
    assert states == ["SUCCEEDED", "DISPATCHED", "DISPATCHED"]


async def test_mark_running_many_moves_each_dispatched_attempt_once(
    store: JobStore, attempts: AttemptStore, settings: Settings
) -> None:
    a, b = await queued_job(store, settings), await queued_job(store, settings)
    await attempts.begin_attempts([(a, "node-1"), (b, "node-1")], "sched-test")
    moved = await attempts.mark_running_many([(a, 1), (b, 2), (a, 1), (uuid.uuid4(), 1)])
    # b has no attempt 2; a named twice moves once but both answers say it is RUNNING now.
    assert moved == [True, False, True, False]
    job_a, job_b = await store.get_job(a), await store.get_job(b)
    assert job_a is not None
    assert job_b is not None
    assert (job_a["state"], job_b["state"]) == ("RUNNING", "DISPATCHED")
    assert [x["outcome"] for x in await attempts.attempts_of(a)] == ["RUNNING"]
    assert await attempts.mark_running_many([(a, 1), (b, 1)]) == [False, True]  # a moved on
