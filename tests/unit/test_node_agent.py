"""The node agent's protocol logic against a scripted mesh on a local gRPC port, with a fake
engine (the real engine is exercised in tests/e2e/test_node_worker.py).

Covered here: what Hello advertises, a Drain from the mesh, cancel freeing the slot at once,
a shutdown handing running jobs back as retryable, and a key rotation that lets the running
job finish before reconnecting with the new key.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from nacl.signing import SigningKey

from fleetwire.process.settings import NodeSettings
from fleetwire.protocol import signing
from fleetwire.protocol.facts import request_facts
from fleetwire.v1 import job_pb2, node_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from node.agent import NodeAgent
from node.config import ModelConfig, NodeProfile
from node.runtime import GenerationChunk, GenerationRequest
from tests.support.eventually import eventually

TIMEOUT = 10.0


class FakeEngine:
    """Streams one token every ``delay`` seconds until max_tokens or an abort."""

    def __init__(self, slots: int, delay: float = 0.01) -> None:
        self.max_concurrency = slots
        self.max_model_len = 512
        self.delay = delay
        self.aborted: set[str] = set()
        self.running: set[str] = set()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.running.add(request.request_id)
        try:
            tokens = 0
            while tokens < request.sampling.max_tokens:
                await asyncio.sleep(self.delay)
                if request.request_id in self.aborted:
                    yield GenerationChunk("", 0, True, "abort", 3, tokens)
                    return
                tokens += 1
                done = tokens == request.sampling.max_tokens
                yield GenerationChunk("x", 1, done, "length" if done else None, 3, tokens)
        finally:
            self.running.discard(request.request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.add(request_id)


@dataclass
class Session:
    hello: nodes_pb2.Hello
    received: asyncio.Queue[nodes_pb2.NodeStreamRequest] = field(default_factory=asyncio.Queue)
    outbox: asyncio.Queue[nodes_pb2.NodeStreamResponse | None] = field(
        default_factory=asyncio.Queue
    )
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    kill: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to break the stream from the mesh's side (UNAVAILABLE)."""

    async def next_of(self, kind: str) -> Any:
        """The next message of ``kind`` from the node (others are skipped)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self.received.get()
                if message.WhichOneof("message") == kind:
                    return getattr(message, kind)


class ScriptedMesh(node_service_pb2_grpc.NodeServiceServicer):
    """Welcomes every node, records what it sends, sends what a test puts in ``outbox``."""

    def __init__(self) -> None:
        self.sessions: asyncio.Queue[Session] = asyncio.Queue()

    async def NodeStream(self, request_iterator: Any, context: Any) -> None:  # noqa: N802
        first = await context.read()
        session = Session(hello=first.hello)
        await context.write(
            nodes_pb2.NodeStreamResponse(challenge=nodes_pb2.Challenge(nonce=b"n" * 32))
        )
        auth = await context.read()
        assert signing.verify(
            bytes(first.hello.public_key),
            signing.node_auth_bytes(
                b"n" * 32, "", first.hello.node_id, bytes(first.hello.public_key)
            ),
            auth.auth.signature,
        )
        welcome = nodes_pb2.Welcome(session_id=uuid.uuid4().hex)
        welcome.heartbeat_interval.FromSeconds(1)
        await context.write(nodes_pb2.NodeStreamResponse(welcome=welcome))
        await self.sessions.put(session)

        async def pump() -> None:
            while (message := await session.outbox.get()) is not None:
                await context.write(message)

        async def record() -> None:
            while (message := await context.read()) is not grpc.aio.EOF:
                await session.received.put(message)

        writer = asyncio.create_task(pump())
        reader = asyncio.create_task(record())
        killed = asyncio.create_task(session.kill.wait())
        try:
            await asyncio.wait({reader, killed}, return_when=asyncio.FIRST_COMPLETED)
            if killed.done():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "stream broken by the test")
        finally:
            for task in (reader, killed):
                task.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            session.closed.set()


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[ScriptedMesh, str]]:
    server = grpc.aio.server()
    servicer = ScriptedMesh()
    node_service_pb2_grpc.add_NodeServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


def make_agent(
    address: str, engine: FakeEngine, key: SigningKey | None = None, *, keep: bool = False
) -> NodeAgent:
    settings = NodeSettings(
        node_id="node-t",
        scheduler_address=address,
        keep_jobs_on_reconnect=keep,
        insecure=True,  # the scripted scheduler serves plaintext
    )
    profile = NodeProfile(
        models=(
            ModelConfig(
                name="tiny-llama",
                path=Path("absent"),
                version="v9",
                price_per_1k_prompt_tokens=5,
                price_per_1k_completion_tokens=7,
            ),
        ),
        region="eu-west",
        subclouds=("lab",),
        networks=("testnet",),
    )
    gpus = [nodes_pb2.GpuInfo(gpu_class="cpu", memory_mib=1024, source="cpu")]
    return NodeAgent(
        settings,
        key or SigningKey.generate(),
        {"tiny-llama": engine},  # type: ignore[dict-item]
        profile,
        gpus=gpus,
    )


def dispatch(job_id: str, tokens: int, attempt: int = 1) -> nodes_pb2.NodeStreamResponse:
    spec = job_pb2.JobSpec(
        model="tiny-llama",
        prompt="hi",
        sampling=job_pb2.SamplingParams(max_tokens=tokens, top_p=1.0),
    )
    digest = signing.request_digest(request_facts(job_id, spec))
    return nodes_pb2.NodeStreamResponse(
        dispatch=nodes_pb2.Dispatch(
            job_id=job_id, attempt=attempt, spec=spec, request_digest=digest
        )
    )


@contextlib.asynccontextmanager
async def running(agent: NodeAgent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        if not task.done():
            await agent.drain(0.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, TIMEOUT)


async def test_hello_advertises_models_hardware_and_place(
    mesh: tuple[ScriptedMesh, str],
) -> None:
    servicer, address = mesh
    agent = make_agent(address, FakeEngine(slots=3))
    async with running(agent):
        session = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
    hello = session.hello
    assert hello.node_id == "node-t"
    assert bytes(hello.public_key) == agent.public_key
    assert hello.slots == 3
    assert hello.region == "eu-west"
    assert list(hello.subclouds) == ["lab"]
    assert list(hello.networks) == [job_pb2.NETWORK_TESTNET]
    (model,) = hello.models
    assert (model.name, model.version, model.runtime, model.slots) == (
        "tiny-llama",
        "v9",
        "vllm",
        3,
    )
    assert (model.price_per_1k_prompt_tokens, model.price_per_1k_completion_tokens) == (5, 7)
    assert hello.gpus[0].gpu_class == "cpu"


async def test_a_drain_from_the_mesh_finishes_the_job_then_closes(
    mesh: tuple[ScriptedMesh, str],
) -> None:
    servicer, address = mesh
    agent = make_agent(address, FakeEngine(slots=2))
    async with running(agent) as task:
        session = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        await session.outbox.put(dispatch("job-1", tokens=30))
        await session.next_of("progress")
        await session.outbox.put(nodes_pb2.NodeStreamResponse(drain=nodes_pb2.Drain(reason="x")))
        draining = await session.next_of("draining")
        assert draining.running_jobs == 1
        await session.outbox.put(dispatch("job-2", tokens=5))
        reject = await session.next_of("reject")
        assert (reject.job_id, reject.reason) == ("job-2", "node is draining")
        result = await session.next_of("result")
        assert (result.job_id, result.usage.completion_tokens) == ("job-1", 30)
        await asyncio.wait_for(session.closed.wait(), TIMEOUT)
        await session.outbox.put(None)
        await asyncio.wait_for(task, TIMEOUT)  # run() returns: the node is done


async def test_cancel_frees_the_slot_at_once(mesh: tuple[ScriptedMesh, str]) -> None:
    servicer, address = mesh
    engine = FakeEngine(slots=1)
    agent = make_agent(address, engine)
    async with running(agent):
        session = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        await session.outbox.put(dispatch("job-1", tokens=10_000))
        await session.next_of("progress")
        await session.outbox.put(
            nodes_pb2.NodeStreamResponse(cancel=nodes_pb2.Cancel(job_id="job-1", attempt=1))
        )
        await session.outbox.put(dispatch("job-2", tokens=3))  # right behind the cancel
        seen: list[tuple[str, str, str]] = []
        async with asyncio.timeout(TIMEOUT):
            while ("result", "job-2", "") not in seen:
                message = await session.received.get()
                kind = message.WhichOneof("message")
                if kind in ("accept", "reject", "result", "failure"):
                    body = getattr(message, kind)
                    seen.append((kind, body.job_id, getattr(body, "reason", "")))
        assert ("failure", "job-1", "CANCELLED") in seen
        assert ("accept", "job-2", "") in seen
        assert not [s for s in seen if s[0] == "reject"]


async def test_shutdown_hands_running_jobs_back_as_retryable(
    mesh: tuple[ScriptedMesh, str],
) -> None:
    servicer, address = mesh
    agent = make_agent(address, FakeEngine(slots=2))
    task = asyncio.create_task(agent.run())
    session = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
    await session.outbox.put(dispatch("job-1", tokens=10_000))
    await session.next_of("progress")
    await agent.drain(0.0)  # what the second SIGTERM does
    await session.next_of("draining")
    failure = await session.next_of("failure")
    assert (failure.job_id, failure.reason, failure.retryable) == ("job-1", "NODE_SHUTDOWN", True)
    await asyncio.wait_for(session.closed.wait(), TIMEOUT)
    await session.outbox.put(None)
    await asyncio.wait_for(task, TIMEOUT)


async def test_key_rotation_finishes_the_job_with_the_old_key_then_reconnects(
    mesh: tuple[ScriptedMesh, str],
) -> None:
    servicer, address = mesh
    old, new = SigningKey.generate(), SigningKey.generate()
    agent = make_agent(address, FakeEngine(slots=2), key=old)
    async with running(agent):
        first = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        await first.outbox.put(dispatch("job-1", tokens=40))
        await first.next_of("progress")
        agent.rotate_key(new)
        await first.next_of("draining")
        result = await first.next_of("result")
        facts = signing.ResultFacts(
            job_id="job-1",
            attempt=1,
            node_id="node-t",
            model="tiny-llama",
            request_digest=bytes(result.job_id and dispatch("job-1", 40).dispatch.request_digest),
            output_digest=signing.output_digest(result.output),
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            finished_at_unix_ms=result.finished_at_unix_ms,
        )
        assert signing.verify(bytes(old.verify_key), signing.result_bytes(facts), result.signature)
        await asyncio.wait_for(first.closed.wait(), TIMEOUT)
        await first.outbox.put(None)
        second = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        assert bytes(second.hello.public_key) == bytes(new.verify_key)
        # The mesh sees Hello before the agent counts the session.
        await eventually(
            lambda: agent.sessions == 2, within=5, what="the agent to count its second session"
        )


async def test_without_keep_a_lost_stream_aborts_the_running_job(
    mesh: tuple[ScriptedMesh, str],
) -> None:
    servicer, address = mesh
    engine = FakeEngine(slots=2)
    agent = make_agent(address, engine)
    async with running(agent):
        first = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        await first.outbox.put(dispatch("job-1", tokens=10_000))
        await first.next_of("progress")
        first.kill.set()
        second = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        assert "job-1:1" in engine.aborted
        assert not second.hello.running_jobs
        await second.outbox.put(None)


async def test_with_keep_a_job_outlives_its_stream_and_reports_on_the_next(
    mesh: tuple[ScriptedMesh, str],
) -> None:
    servicer, address = mesh
    engine = FakeEngine(slots=2)
    agent = make_agent(address, engine, keep=True)
    async with running(agent):
        first = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        await first.outbox.put(dispatch("job-1", tokens=100))
        await first.next_of("progress")
        first.kill.set()
        second = await asyncio.wait_for(servicer.sessions.get(), TIMEOUT)
        assert [(r.job_id, r.attempt) for r in second.hello.running_jobs] == [("job-1", 1)]
        result = await second.next_of("result")
        assert (result.job_id, result.usage.completion_tokens) == ("job-1", 100)
        assert not engine.aborted
        await second.outbox.put(None)
