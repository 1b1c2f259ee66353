"""Nodes that sign what they should not (issue 16): an inflating node is billed at most what
the job's spec allows and penalised; results with fields no honest node sends are the
liar's offence and never fail the honest jobs finishing with them; a cancel nobody asked
for, rejects, oversized progress and a stream unlike the signed output strand nothing.
Scripted nodes sign
correctly with their own keys, so only the mesh's checks can catch them; in-process
scheduler, real RabbitMQ, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import grpc
from tokenizers import Tokenizer

from fleetwire.messaging.events import ChunkEvent, JobEvents
from fleetwire.process.settings import Settings
from fleetwire.store.ledger import Prices
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.result_checks import MAX_CHUNK_BYTES, PROMPT_TOKEN_SLACK
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import running_bridge, stub_of, with_bridge
from tests.integration.test_bad_results import Ledger, spec, wait_state
from tests.support.eventually import eventually
from tests.support.handshake import handshake
from tests.support.scripted_node import ScriptedNode, running
from tests.support.tokenizer import write_tokenizer

Lie = Callable[[ScriptedNode, nodes_pb2.Dispatch], nodes_pb2.Result]


async def test_an_inflating_node_is_billed_the_capped_counts_and_penalised(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    def inflate(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
        return node.signed_result(dispatch, prompt_tokens=10**9, completion_tokens=10**12)

    liar = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", "inflater-1", "scripted", lambda _n: "ok", lie=inflate
    )
    async with running(liar):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        job = await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
    # The signed claim stays with the job (it is what the signature covers) ...
    assert job.usage.completion_tokens == 10**12
    # ... but the bill is for what a 3-token job with a 1-byte prompt can be.
    rows = await pool.fetch(
        "SELECT kind, amount, prompt_tokens, completion_tokens, usage_source"
        " FROM ledger_entries WHERE job_id = $1 ORDER BY kind",
        uuid.UUID(job_id),
    )
    prompt_cap, completion_cap = 1 + PROMPT_TOKEN_SLACK, 3
    prices = Prices(
        settings.scheduler.price_per_1k_prompt_tokens,
        settings.scheduler.price_per_1k_completion_tokens,
    )
    cost = prices.cost(prompt_cap, completion_cap)
    assert [tuple(r.values()) for r in rows] == [
        ("JOB_CHARGE", -cost, prompt_cap, completion_cap, "capped"),
        ("NODE_EARNING", cost, prompt_cap, completion_cap, "capped"),
    ]
    assert ("INFLATED_USAGE", job_id, 1) in await Ledger(settings).wait_penalties("inflater-1", 1)


def _nan_timings(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
    result = node.signed_result(dispatch)
    result.timings.total_ms = math.nan
    return result


def _nul_finish_reason(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
    result = node.signed_result(dispatch)
    result.finish_reason = "st\x00p"
    return result


def _huge_count(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
    return node.signed_result(dispatch, completion_tokens=2**64 - 1)


def _too_long(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
    return node.signed_result(dispatch, output="x" * 4096)  # 3 tokens cannot make 4 KiB


# The first is caught only by the checks (PostgreSQL would store it); the others also by
# the store's isolation of refused items, the second line.
LIES: list[Lie] = [_too_long, _nan_timings, _nul_finish_reason, _huge_count]


async def test_a_poisoning_result_leaves_the_honest_jobs_of_its_batch_succeeded(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    """A liar and an honest node share the load; every lie in turn. The liar's jobs are
    retried and end on the honest node, the liar is charged INVALID_RESULT, and no job the
    honest node ran first needed a second attempt."""
    address = f"127.0.0.1:{scheduler.port}"
    told = itertools.cycle(LIES)

    def lie(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
        return next(told)(node, dispatch)

    liar = ScriptedNode(address, "poisoner-1", "scripted", lambda _n: "ok", lie=lie)
    honest = ScriptedNode(address, "honest-p1", "scripted", lambda _n: "ok")
    async with running(liar), running(honest):
        submitted = await asyncio.gather(
            *(jobs.Submit(job_service_pb2.SubmitRequest(job=spec())) for _ in range(24))
        )
        ids = [s.job.job_id for s in submitted]
        finished = [await wait_state(jobs, i, job_pb2.JOB_STATE_SUCCEEDED) for i in ids]
    ledger = Ledger(settings)
    assert all(job.signature.node_id == "honest-p1" for job in finished)
    outcomes = {i: await ledger.outcomes(i) for i in ids}
    for job_id, trail in outcomes.items():
        if trail[0][1] == "honest-p1":
            assert trail == [(1, "honest-p1", "SUCCEEDED")], (job_id, trail)
        else:
            assert trail[0] == (1, "poisoner-1", "FAILED"), (job_id, trail)
    lied = sum(trail[0][1] == "poisoner-1" for trail in outcomes.values())
    assert lied >= 1, "the liar got no job: the test proved nothing"
    penalties = await ledger.wait_penalties("poisoner-1", lied)
    assert {offence for offence, _, _ in penalties} == {"INVALID_RESULT"}


async def test_a_cancel_nobody_asked_for_is_penalised_and_the_job_runs_elsewhere(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    """A node that ends a job as CANCELLED on its own no longer strands it: the job runs
    on another node and the node is charged."""
    address = f"127.0.0.1:{scheduler.port}"
    ledger = Ledger(settings)
    strander = ScriptedNode(address, "strander-1", "scripted", lambda _n: "cancelled")
    honest = ScriptedNode(address, "honest-s1", "scripted", lambda _n: "ok")
    async with running(strander):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        assert (await ledger.wait_penalties("strander-1", 1))[0] == ("NODE_CANCELLED", job_id, 1)
        async with running(honest):
            job = await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
    assert job.signature.node_id == "honest-s1"
    trail = await ledger.outcomes(job_id)
    assert trail[0] == (1, "strander-1", "FAILED")
    assert trail[-1][1:] == ("honest-s1", "SUCCEEDED")


async def test_rejects_never_burn_a_jobs_attempts(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    settings: Settings,
    pool: asyncpg.Pool,
) -> None:
    """One node rejecting the job more times than it has attempts does not dead-letter it."""
    address = f"127.0.0.1:{scheduler.port}"
    rejecter = ScriptedNode(address, "rejecter-1", "scripted", lambda _n: "reject")
    honest = ScriptedNode(address, "honest-r1", "scripted", lambda _n: "ok")
    enough = settings.scheduler.max_attempts + 2
    async with running(rejecter):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id

        async def rejected() -> bool:
            count = await pool.fetchval(
                "SELECT count(*) FROM attempts WHERE job_id = $1 AND outcome = 'REJECTED'",
                uuid.UUID(job_id),
            )
            return int(count) >= enough

        await eventually(rejected, within=30, what=f"{enough} rejects")
        async with running(honest):
            job = await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
    assert job.signature.node_id == "honest-r1"


async def test_oversized_progress_is_refused_and_penalised_once(
    jobs: job_service_pb2_grpc.JobServiceStub,
    scheduler: SchedulerServer,
    settings: Settings,
    events: JobEvents,
) -> None:
    """Progress beyond what the job's max_tokens can produce is not relayed; the node is
    charged once for the attempt, however many chunks it sends; the job still finishes."""
    flooder = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        "flooder-1",
        "scripted",
        lambda _n: "ok",
        stream=lambda _d: ["fine", "x" * (MAX_CHUNK_BYTES + 1), "y" * 4000, "z" * 4000],
    )
    async with running(flooder):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
    ledger = Ledger(settings)
    assert await ledger.wait_penalties("flooder-1", 1) == [("OVERSIZED_PROGRESS", job_id, 1)]
    relayed = [
        e.text for _, e in await events.read(job_id, "0", block=None) if isinstance(e, ChunkEvent)
    ]
    assert relayed == ["fine"]


async def test_a_stream_that_is_not_the_signed_output_is_caught(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer, settings: Settings
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    # The scripted result's output is "scripted output <attempt>".
    honest = ScriptedNode(
        address,
        "streamer-ok",
        "scripted",
        lambda _n: "ok",
        stream=lambda _d: ["scripted ", "output 1"],
    )
    liar = ScriptedNode(
        address, "streamer-liar", "scripted", lambda _n: "ok", stream=lambda _d: ["something else"]
    )
    ledger = Ledger(settings)
    checks = []
    for node in (honest, liar):
        async with running(node):
            job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
            await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
            # Watch's last message is the job in its final state, with the verdict.
            last = [r async for r in jobs.Watch(job_service_pb2.WatchRequest(job_id=job_id))][-1]
            checks.append(last.job.stream_check)
    assert await ledger.wait_penalties("streamer-liar", 1) == [("STREAM_MISMATCH", job_id, 1)]
    assert await ledger.penalties("streamer-ok") == []
    assert checks == [job_pb2.STREAM_CHECK_MATCHED, job_pb2.STREAM_CHECK_MISMATCHED]


async def test_an_excluded_nodes_stream_is_closed_and_it_is_told_why(
    scheduler: SchedulerServer, settings: Settings, pool: asyncpg.Pool
) -> None:
    """A node flooding the mesh with results it was never asked for is excluded at the
    threshold: its stream ends there (nothing more it sends is read), a redial is refused
    UNAVAILABLE NODE_EXCLUDED with the time left as RetryInfo, and the flood left a handful
    of penalty rows, not one per message."""
    address = f"127.0.0.1:{scheduler.port}"
    flooder = ScriptedNode(address, f"flooder-{uuid.uuid4().hex[:6]}", "scripted", lambda _n: "ok")
    async with running(flooder):
        fake = nodes_pb2.Dispatch(job_id=str(uuid.uuid4()), attempt=1)
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, ConnectionError):
            for _ in range(200):
                await flooder.send(nodes_pb2.NodeStreamRequest(result=flooder.signed_result(fake)))

        async def gone() -> bool:
            return scheduler.registry.get(flooder.node_id) is None

        await eventually(gone, within=10, what="the excluded node's session to end")
    async with grpc.aio.insecure_channel(address) as channel:
        refusal = await handshake(channel, flooder.node_id, flooder.key)
    assert refusal.startswith("UNAVAILABLE NODE_EXCLUDED"), refusal
    rows = await pool.fetch(
        "SELECT offence, count FROM node_penalties WHERE node_id = $1", flooder.node_id
    )
    assert 2 <= len(rows) <= 10, rows
    assert {r["offence"] for r in rows} == {"UNEXPECTED_RESULT"}


async def test_with_the_models_tokenizer_the_bill_is_the_meshs_count(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """With FLEETWIRE_SCHEDULER_TOKENIZERS the prompt is billed as the mesh counts it and a
    completion claim above what the output can have come from is cut to that bound, even
    within max_tokens: a 90-token claim for the 3 words of the scripted output."""
    group = settings.scheduler.model_copy(
        update={
            "port": 0,
            "admin_port": 0,
            "scheduler_id": f"counts-{uuid.uuid4().hex[:6]}",
            "tokenizers": {"scripted": write_tokenizer(tmp_path / "tok")},
        }
    )
    server = SchedulerServer(settings.model_copy(update={"scheduler": group}))
    await server.start()

    def overclaim(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
        return node.signed_result(dispatch, prompt_tokens=2, completion_tokens=90)

    liar = ScriptedNode(
        f"127.0.0.1:{server.port}",
        f"counted-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda _n: "ok",
        lie=overclaim,
    )
    try:
        async with (
            running_bridge(with_bridge(settings)) as bridge,
            stub_of(bridge) as jobs,
            running(liar),
        ):
            job = spec()
            job.sampling.max_tokens = 100
            job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=job))).job.job_id
            await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
    finally:
        await server.stop(grace=1)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    prompt = len(tokenizer.encode(job.prompt, add_special_tokens=True).ids)
    bound = 2 * len(tokenizer.encode("scripted output 1", add_special_tokens=False).ids) + 8
    row = await pool.fetchrow(
        "SELECT prompt_tokens, completion_tokens, usage_source FROM ledger_entries"
        " WHERE job_id = $1 AND kind = 'JOB_CHARGE'",
        uuid.UUID(job_id),
    )
    assert row is not None
    assert tuple(row.values()) == (prompt, bound, "capped")
    assert bound < 90
    assert ("INFLATED_USAGE", job_id, 1) in await Ledger(settings).wait_penalties(liar.node_id, 1)
