"""Redis stays bounded under load: a finished job's keys are gone after the (here short)
FLEETWIRE_REDIS_FINISHED_STREAM_RETENTION while a live job's stream stays; whoever writes
the terminal state shortens the expiry and nothing written later extends it; and a Watch
of a job whose stream expired still gets the output (from PostgreSQL) and the final state.

A mesh of its own (namespace, database, Redis keys) with the short retention: the bridge
and scheduler in-process, a real node agent on the bench runtime (Accept, Progress, signed
Result) for the finished jobs, and a scripted node that holds its job for the live one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest
import redis.asyncio as aioredis
from nacl.signing import SigningKey
from pydantic import SecretStr

from bench.bench_runtime import BENCH_OUTPUT, bench_runtimes
from broker_bridge.server import BridgeServer
from fleetwire.domain.states import JobState
from fleetwire.messaging.events import ChunkEvent, JobEvents, StateEvent, connect_redis
from fleetwire.process.settings import NodeSettings, Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from node.agent import NodeAgent
from node.config import load_profile
from scheduler.server import SchedulerServer
from tests.conftest import cleanup_namespace
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running

RETENTION = timedelta(seconds=5)
"""Long enough to list a burst's keys before the first expires on a loaded machine."""
BENCH_MODEL = "bench-noop"
BURST = 24


@dataclass
class ShortMesh:
    settings: Settings
    events: JobEvents
    redis: aioredis.Redis
    stub: job_service_pb2_grpc.JobServiceStub
    scheduler_address: str

    @property
    def namespace(self) -> str:
        return self.settings.mesh.namespace


def own_settings(settings: Settings, namespace: str) -> Settings:
    """This run's settings in a namespace and database of their own, with the short
    retention (port 0: any free port)."""
    update = {
        "mesh": settings.mesh.model_copy(
            update={"namespace": namespace, "models": [BENCH_MODEL, "scripted"]}
        ),
        "postgres": settings.postgres.model_copy(
            update={"dsn": SecretStr(f"postgresql://postgres@127.0.0.1:5432/fw_{namespace}")}
        ),
        "redis": settings.redis.model_copy(update={"finished_stream_retention": RETENTION}),
        "bridge": settings.bridge.model_copy(update={"port": 0}),
        "scheduler": settings.scheduler.model_copy(
            update={"port": 0, "admin_port": 0, "scheduler_id": f"{namespace}-scheduler"}
        ),
    }
    return settings.model_copy(update=update)


@pytest.fixture(scope="module")
async def mesh(settings: Settings, run_id: str) -> AsyncIterator[ShortMesh]:
    namespace = f"{run_id}r"
    mine = own_settings(settings, namespace)
    scheduler = SchedulerServer(mine)
    bridge = BridgeServer(mine)
    redis = connect_redis(mine.redis.url.get_secret_value())
    agent: NodeAgent | None = None
    agent_task: asyncio.Task[None] | None = None
    try:
        await scheduler.start()
        await bridge.start()
        address = f"127.0.0.1:{scheduler.port}"
        node_settings = NodeSettings(
            node_id="bench-1",
            scheduler_address=address,
            model_name=BENCH_MODEL,
            max_num_seqs=8,
            networks=["mainnet", "testnet"],
            insecure=True,  # the in-process scheduler serves plaintext
        )
        profile = load_profile(node_settings)
        runtimes = bench_runtimes(profile)
        for runtime in runtimes.values():
            await runtime.start()
        agent = NodeAgent(node_settings, SigningKey.generate(), runtimes, profile, gpus=[])
        agent_task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.connected.wait(), 30)
        events = JobEvents(
            redis,
            namespace,
            maxlen=mine.redis.stream_maxlen,
            ttl=mine.redis.stream_ttl,
            finished_retention=RETENTION,
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
            yield ShortMesh(
                mine, events, redis, job_service_pb2_grpc.JobServiceStub(channel), address
            )
    finally:
        if agent is not None and agent_task is not None:
            await agent.drain(1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent_task, 10)
        await bridge.stop(grace=1)
        await scheduler.stop(grace=1)
        await redis.aclose()
        await cleanup_namespace(namespace)


def bench_spec(
    mode: int = job_pb2.INFERENCE_MODE_SYNC, model: str = BENCH_MODEL
) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model=model,
        prompt="soak",
        mode=mode,  # type: ignore[arg-type]
        network=job_pb2.NETWORK_MAINNET,
        sampling=job_pb2.SamplingParams(max_tokens=4),
    )


async def namespace_keys(mesh: ShortMesh) -> list[str]:
    """Every key of the mesh's namespace, as ``redis-cli --scan --pattern '<ns>:*'``."""
    return [
        key.decode() async for key in mesh.redis.scan_iter(match=f"{mesh.namespace}:*", count=1000)
    ]


async def keys_of(mesh: ShortMesh, job_ids: set[str]) -> dict[str, set[str]]:
    """The namespace's keys that name one of ``job_ids``, by job id."""
    found: dict[str, set[str]] = {}
    for key in await namespace_keys(mesh):
        for job_id in job_ids:
            if job_id in key:
                found.setdefault(job_id, set()).add(key)
    return found


async def pttl(mesh: ShortMesh, key: str) -> int:
    value: int = await mesh.redis.pttl(key)
    return value


async def state_of(mesh: ShortMesh, job_id: str) -> int:
    reply = await mesh.stub.Status(job_service_pb2.StatusRequest(job_id=job_id), timeout=10)
    return reply.job.state


async def watch_all(
    mesh: ShortMesh, job_id: str, after_sequence: int = 0
) -> list[job_service_pb2.WatchResponse]:
    request = job_service_pb2.WatchRequest(job_id=job_id, after_sequence=after_sequence)
    return [event async for event in mesh.stub.Watch(request, timeout=30)]


def chunks(events: list[job_service_pb2.WatchResponse]) -> list[tuple[int, str, int, int]]:
    return [
        (e.chunk.sequence, e.chunk.text, e.chunk.token_count, e.chunk.attempt)
        for e in events
        if e.HasField("chunk")
    ]


async def test_finished_jobs_leave_no_keys_after_the_retention_while_a_live_stream_stays(
    mesh: ShortMesh,
) -> None:
    holder = ScriptedNode(
        mesh.scheduler_address, "holder-1", "scripted", lambda _: "ok", hold_results=True
    )
    async with running(holder):
        live = (
            await mesh.stub.Submit(
                job_service_pb2.SubmitRequest(
                    job=bench_spec(job_pb2.INFERENCE_MODE_POLLING, model="scripted")
                ),
                timeout=10,
            )
        ).job.job_id
        live_key = mesh.events.stream_key(live)
        await eventually(lambda: _running(mesh, live), 30, "the held job to be RUNNING")
        await eventually(
            lambda: _exists(mesh, live_key), 10, "the live job's stream (DISPATCHED/RUNNING)"
        )

        replies = await asyncio.gather(
            *(
                mesh.stub.Submit(job_service_pb2.SubmitRequest(job=bench_spec()), timeout=60)
                for _ in range(BURST)
            )
        )
        burst = {reply.job.job_id for reply in replies}
        assert {reply.job.state for reply in replies} == {job_pb2.JOB_STATE_SUCCEEDED}

        # Right after the burst: each finished job has its stream, and only that key,
        # already bounded by the retention (not the live jobs' hour).
        found = await keys_of(mesh, burst)
        assert found == {job_id: {mesh.events.stream_key(job_id)} for job_id in burst}
        for job_id in burst:
            ttl = await pttl(mesh, mesh.events.stream_key(job_id))
            assert 0 < ttl <= RETENTION.total_seconds() * 1000, (job_id, ttl)

        async def burst_gone() -> bool:
            return not await keys_of(mesh, burst)

        await eventually(burst_gone, RETENTION.total_seconds() + 15, "the burst's keys to expire")

        # The live job outlived them all: its stream is still there, on the live TTL.
        assert await keys_of(mesh, {live}) == {live: {live_key}}
        assert await pttl(mesh, live_key) > RETENTION.total_seconds() * 1000

        # Cancelling it (the bridge writes the terminal state) bounds it too.
        await mesh.stub.Cancel(job_service_pb2.CancelRequest(job_id=live), timeout=10)
        assert 0 < await pttl(mesh, live_key) <= RETENTION.total_seconds() * 1000

        async def live_gone() -> bool:
            return not await keys_of(mesh, {live})

        await eventually(live_gone, RETENTION.total_seconds() + 15, "the cancelled job's keys")


async def _running(mesh: ShortMesh, job_id: str) -> bool:
    return await state_of(mesh, job_id) == job_pb2.JOB_STATE_RUNNING


async def _exists(mesh: ShortMesh, key: str) -> bool:
    return bool(await mesh.redis.exists(key))


async def test_watch_after_the_stream_expired_gets_the_output_from_postgres(
    mesh: ShortMesh,
) -> None:
    job = (await mesh.stub.Submit(job_service_pb2.SubmitRequest(job=bench_spec()), timeout=60)).job
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    key = mesh.events.stream_key(job.job_id)
    assert await _exists(mesh, key)
    from_stream = await watch_all(mesh, job.job_id)  # replayed from the stream
    expected = [(1, BENCH_OUTPUT, job.usage.completion_tokens, job.signature.attempt)]
    assert chunks(from_stream) == expected

    async def gone() -> bool:
        return not await _exists(mesh, key)

    await eventually(gone, RETENTION.total_seconds() + 15, "the job's stream to expire")

    late = await watch_all(mesh, job.job_id)
    assert chunks(late) == expected  # the same text, numbering and counts as from Redis
    assert [e.WhichOneof("event") for e in late] == ["chunk", "job"]
    assert late[-1].job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert late[-1].job.output == BENCH_OUTPUT

    resumed = await watch_all(mesh, job.job_id, after_sequence=1)
    assert [e.WhichOneof("event") for e in resumed] == ["job"]  # it has chunk 1 already
    assert resumed[0].job.output == BENCH_OUTPUT


async def test_the_terminal_state_shortens_the_expiry_and_nothing_extends_it_again(
    mesh: ShortMesh,
) -> None:
    retention_ms = RETENTION.total_seconds() * 1000
    single, batched, reaped = "single-job", "batched-job", "reaped-job"
    for job_id in (single, batched, reaped):
        await mesh.events.publish_state(job_id, JobState.DISPATCHED)
        await mesh.events.publish_chunk(job_id, ChunkEvent(1, 1, "a", 1))
        assert await pttl(mesh, mesh.events.stream_key(job_id)) > retention_ms

    # As the bridge's Cancel and the consumers write it: one call.
    await mesh.events.publish_state(single, JobState.CANCELLED)
    # As the relay writes it: chunks, the final state and a late chunk in one batch.
    await mesh.events.publish_events(
        [
            (batched, ChunkEvent(1, 2, "b", 1)),
            (batched, StateEvent(JobState.SUCCEEDED)),
            (batched, ChunkEvent(1, 3, "late", 1)),
        ]
    )
    # As the deadline reaper writes it: many jobs' final states in one batch.
    await mesh.events.publish_events([(reaped, StateEvent(JobState.EXPIRED))])

    for job_id in (single, batched, reaped):
        key = mesh.events.stream_key(job_id)
        shortened = await pttl(mesh, key)
        assert 0 < shortened <= retention_ms, (job_id, shortened)
        # Later writes (a chunk of an attempt being aborted, a stale state change) neither
        # extend the retention nor follow the terminal state.
        await mesh.events.publish_chunk(job_id, ChunkEvent(1, 9, "after the end", 1))
        await mesh.events.publish_events(
            [(job_id, StateEvent(JobState.RUNNING)), (job_id, ChunkEvent(1, 10, "x", 1))]
        )
        assert 0 < await pttl(mesh, key) <= shortened
        written = [event for _, event in await mesh.events.read(job_id, "0", block=None)]
        assert isinstance(written[-1], StateEvent)
        assert written[-1].state.is_terminal
        assert not [e for e in written if isinstance(e, ChunkEvent) and e.sequence >= 3]
