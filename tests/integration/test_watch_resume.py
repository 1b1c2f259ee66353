"""A Watch resumed across a failover receives the new attempt whole, from its chunk 1.

Sequence numbers restart at 1 with every attempt, so the SDK resumes with the attempt and
sequence of the last chunk it received (``WatchRequest.after_attempt`` beside
``after_sequence``). Real parts: the bridge and the scheduler in-process on this run's
RabbitMQ, Redis and PostgreSQL, a scripted node over the real NodeStream protocol whose
first attempt streams three chunks and fails (retryable) and whose second streams five and
returns a signed result, and the SDK (sync and asyncio) dialling the bridge through a relay
the test cuts right after the first attempt's last chunk. Resumed with the old cursor
(``after_sequence`` 3 in any attempt) the Watch would miss the second attempt's chunks 1-3.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from broker_bridge.server import BridgeServer
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from fleetwire_client import AsyncClient, Client, JobResult, JobState, RetryPolicy, Token
from fleetwire_client.models import WatchEvent
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import running_bridge, with_bridge
from tests.support.cuttable_relay import CuttableRelay
from tests.support.eventually import eventually
from tests.support.scripted_node import Answer, ScriptedNode, running

ATTEMPT_TEXTS = {
    1: ["one ", "two ", "three "],  # then a retryable failure
    2: ["uno ", "dos ", "tres ", "cuatro ", "cinco"],  # then the signed result
}
LAST_OF_ATTEMPT_1 = (1, len(ATTEMPT_TEXTS[1]))
OUTPUT = "".join(ATTEMPT_TEXTS[2])
# Patient enough to outlast the blocked relay (the retry stage, attempt 2 and the channel's
# own reconnect backoff): every try fails fast with UNAVAILABLE meanwhile.
PATIENT = RetryPolicy(max_attempts=400, initial_backoff=0.05, max_backoff=0.25)
WATCH_TIMEOUT = 90.0


@pytest.fixture(scope="module")
async def grpc_bridge(settings: Settings) -> AsyncIterator[BridgeServer]:
    """A bridge of its own serving gRPC only: Watch is the gRPC front door's."""
    async with running_bridge(with_bridge(settings, http_enabled=False)) as server:
        yield server


@pytest.fixture
async def jobs(
    grpc_bridge: BridgeServer,
) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    """JobService on that bridge, dialled directly (not through the relay)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_bridge.port}") as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


def failover_node(scheduler: SchedulerServer, job_id: str) -> ScriptedNode:
    """Fails this job's first attempt after streaming its chunks; the second succeeds,
    its signed output the text it streamed."""

    def answer(_: int) -> Answer:
        dispatch = node.dispatches[-1]
        return "fail-retryable" if dispatch.job_id == job_id and dispatch.attempt == 1 else "ok"

    def stream(dispatch: nodes_pb2.Dispatch) -> list[str]:
        return ATTEMPT_TEXTS.get(dispatch.attempt, []) if dispatch.job_id == job_id else []

    def result(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
        texts = stream(dispatch)
        return node.signed_result(dispatch, output="".join(texts), completion_tokens=len(texts))

    node = ScriptedNode(
        address=f"127.0.0.1:{scheduler.port}",
        node_id=f"failover-{uuid.uuid4().hex[:8]}",
        model="scripted",
        script=answer,
        stream=stream,
        lie=result,
    )
    return node


class Cutter:
    """Sees every event the Watch yields (from any thread) and cuts the relay right after
    the first attempt's last chunk; with ``block``, keeps the bridge unreachable until
    ``unblock``."""

    def __init__(self, relay: CuttableRelay, *, block: bool) -> None:
        self._relay = relay
        self._block = block
        self._loop = asyncio.get_running_loop()
        self.watching = asyncio.Event()
        self.cut = asyncio.Event()

    def seen(self, event: WatchEvent) -> None:
        self._loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: WatchEvent) -> None:
        self.watching.set()
        if isinstance(event, Token) and (event.attempt, event.sequence) == LAST_OF_ATTEMPT_1:
            self._relay.blocked = self._block
            self._relay.cut()
            self.cut.set()

    def unblock(self) -> None:
        self._relay.blocked = False


def follow_sync(address: str, job_id: str, seen: Callable[[WatchEvent], None]) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    with Client(address, insecure=True, retry=PATIENT) as client:
        for event in client.watch(job_id, timeout=WATCH_TIMEOUT):
            events.append(event)
            seen(event)
    return events


async def follow_async(
    address: str, job_id: str, seen: Callable[[WatchEvent], None]
) -> list[WatchEvent]:
    events: list[WatchEvent] = []
    async with AsyncClient(address, insecure=True, retry=PATIENT) as client:
        async for event in client.watch(job_id, timeout=WATCH_TIMEOUT):
            events.append(event)
            seen(event)
    return events


@contextlib.asynccontextmanager
async def relay_to(bridge: BridgeServer) -> AsyncIterator[CuttableRelay]:
    relay = CuttableRelay(bridge.port)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def state_of(jobs: job_service_pb2_grpc.JobServiceStub, job_id: str) -> job_pb2.Job:
    reply = await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id), timeout=10)
    job: job_pb2.Job = reply.job
    return job


@pytest.mark.parametrize("client", ["sync", "asyncio"])
@pytest.mark.parametrize("resume", ["while-attempt-2-runs", "after-the-job-finished"])
async def test_watch_resumed_across_a_failover_receives_the_new_attempt_from_chunk_1(
    jobs: job_service_pb2_grpc.JobServiceStub,
    grpc_bridge: BridgeServer,
    scheduler: SchedulerServer,
    client: str,
    resume: str,
) -> None:
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt="fail over",
        mode=job_pb2.INFERENCE_MODE_STREAM,
        sampling=job_pb2.SamplingParams(max_tokens=16),
    )
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec), timeout=10)).job.job_id
    async with relay_to(grpc_bridge) as relay:
        cutter = Cutter(relay, block=resume == "after-the-job-finished")
        if client == "sync":
            follower = asyncio.create_task(
                asyncio.to_thread(follow_sync, relay.address, job_id, cutter.seen)
            )
        else:
            follower = asyncio.create_task(follow_async(relay.address, job_id, cutter.seen))
        try:
            # No node serves the job until the Watch is following it, so the Watch sees
            # the first attempt's chunks live (a Watch of a finished job replays only the
            # final attempt).
            await asyncio.wait_for(cutter.watching.wait(), 15)
            async with running(failover_node(scheduler, job_id)):
                await asyncio.wait_for(cutter.cut.wait(), 30)
                if resume == "after-the-job-finished":

                    async def finished() -> job_pb2.Job | None:
                        job = await state_of(jobs, job_id)
                        return job if job.state == job_pb2.JOB_STATE_SUCCEEDED else None

                    await eventually(finished, 30, "the second attempt to succeed")
                    cutter.unblock()
                events = await asyncio.wait_for(follower, WATCH_TIMEOUT)
        finally:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower

    assert relay.cuts == 1
    tokens = [(e.attempt, e.sequence, e.text) for e in events if isinstance(e, Token)]
    expected = [
        (attempt, sequence, text)
        for attempt, texts in ATTEMPT_TEXTS.items()
        for sequence, text in enumerate(texts, start=1)
    ]
    assert tokens == expected
    final = events[-1]
    assert isinstance(final, JobResult)
    assert (final.state, final.attempts, final.output) == (JobState.SUCCEEDED, 2, OUTPUT)
