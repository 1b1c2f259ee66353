"""A node's session ends with its stream, however the stream ends: the node closes it, the
node's call is cancelled, or a write to it fails. A session left behind would take
dispatches that can never arrive (each one an attempt burnt: eight in a second, and the job
dead-lettered)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from nacl.signing import SigningKey

from fleetwire.protocol import signing
from fleetwire.v1 import job_pb2, node_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually


@pytest.fixture
async def channel(scheduler: SchedulerServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.port}") as open_channel:
        yield open_channel


async def welcomed(channel: grpc.aio.Channel, scheduler: SchedulerServer) -> tuple[str, object]:
    """A node through the handshake, registered; returns its id and its call."""
    node_id = f"ends-{uuid.uuid4().hex[:8]}"
    key = SigningKey.generate()
    call = node_service_pb2_grpc.NodeServiceStub(channel).NodeStream()
    await call.write(
        nodes_pb2.NodeStreamRequest(
            hello=nodes_pb2.Hello(
                node_id=node_id,
                public_key=bytes(key.verify_key),
                networks=[job_pb2.NETWORK_TESTNET],
                models=[nodes_pb2.ServedModel(name="scripted", runtime="scripted")],
                slots=1,
            )
        )
    )
    challenge = (await call.read()).challenge
    signed = signing.node_auth_bytes(
        challenge.nonce, challenge.scheduler_id, node_id, bytes(key.verify_key)
    )
    await call.write(
        nodes_pb2.NodeStreamRequest(auth=nodes_pb2.Auth(signature=signing.sign(key, signed)))
    )
    assert (await call.read()).WhichOneof("message") == "welcome"
    await eventually(lambda: scheduler.registry.get(node_id), 5, "the node to be registered")
    return node_id, call


async def test_a_closed_stream_ends_the_session(
    channel: grpc.aio.Channel, scheduler: SchedulerServer
) -> None:
    node_id, call = await welcomed(channel, scheduler)
    await call.done_writing()  # type: ignore[attr-defined]
    await eventually(lambda: scheduler.registry.get(node_id) is None, 5, "the session to end")


async def test_a_cancelled_stream_ends_the_session(
    channel: grpc.aio.Channel, scheduler: SchedulerServer
) -> None:
    node_id, call = await welcomed(channel, scheduler)
    call.cancel()  # type: ignore[attr-defined]
    await eventually(lambda: scheduler.registry.get(node_id) is None, 5, "the session to end")


async def test_a_failed_write_ends_the_session(
    channel: grpc.aio.Channel, scheduler: SchedulerServer
) -> None:
    """The race behind it is timing-dependent; five sessions make it show up."""
    for _ in range(5):
        node_id, call = await welcomed(channel, scheduler)
        session = scheduler.registry.get(node_id)
        assert session is not None
        call.cancel()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):  # a dispatch racing the end of the stream
            await session.send(nodes_pb2.NodeStreamResponse(drain=nodes_pb2.Drain()))
        await eventually(
            lambda node_id=node_id: scheduler.registry.get(node_id) is None,
            5,
            "the session to end",
        )
