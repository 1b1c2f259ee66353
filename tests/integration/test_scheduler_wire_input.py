"""The scheduler's two services at their edge, on a real scheduler: a NodeStream message that
does not decode ends that stream with INVALID_ARGUMENT naming the field (the node's session
is gone, the scheduler serves the next node); MeshAdminService answers undecodable requests
with INVALID_ARGUMENT and its own faults with INTERNAL, the text only in the log."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from nacl.signing import SigningKey
from structlog.testing import capture_logs

from fleetwire.protocol import signing
from fleetwire.v1 import job_pb2, mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.admin_store import AdminStore
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import details, reason_of
from tests.support.eventually import eventually
from tests.support.mesh_admin import SendsOperatorKey
from tests.support.scripted_node import ScriptedNode, running

NODE_STREAM = "/fleetwire.v1.NodeService/NodeStream"
MARK = "MARK"


@pytest.fixture
async def channel(scheduler: SchedulerServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.port}") as open_channel:
        yield open_channel


def raw_stream(channel: grpc.aio.Channel) -> Any:
    """A NodeStream whose requests are written as raw bytes."""
    return channel.stream_stream(
        NODE_STREAM,
        request_serializer=lambda raw: raw,
        response_deserializer=nodes_pb2.NodeStreamResponse.FromString,
    )()


def not_utf8(message: nodes_pb2.NodeStreamRequest) -> bytes:
    raw = message.SerializeToString()
    if raw.count(MARK.encode()) != 1:
        raise ValueError("the message must contain MARK exactly once")
    return raw.replace(MARK.encode(), b"\xff" * len(MARK))


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    bad = details(error).get("BadRequest")
    assert isinstance(bad, error_details_pb2.BadRequest), details(error)
    return [v.field for v in bad.field_violations]


async def registered(scheduler: SchedulerServer, node_id: str) -> None:
    """Waits (up to 5 s) until the scheduler registered the node: it does so right after
    the Welcome is written, which the node may read first."""
    await eventually(
        lambda: scheduler.registry.get(node_id) is not None,
        within=5,
        interval=0.02,
        what=f"node {node_id} to be registered",
    )


def hello(node_id: str, key: SigningKey, subclouds: tuple[str, ...] = ()) -> nodes_pb2.Hello:
    return nodes_pb2.Hello(
        node_id=node_id,
        public_key=bytes(key.verify_key),
        networks=[job_pb2.NETWORK_TESTNET],
        models=[nodes_pb2.ServedModel(name="scripted", runtime="none")],
        slots=1,
        subclouds=list(subclouds),
    )


async def test_an_undecodable_hello_ends_the_stream_with_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    call = raw_stream(channel)
    first = nodes_pb2.NodeStreamRequest(hello=hello(MARK.lower(), SigningKey.generate()))
    first.hello.node_id = MARK
    await call.write(not_utf8(first))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert fields_of(caught.value) == ["hello.node_id"]


async def test_an_undecodable_message_after_welcome_ends_only_that_session(
    channel: grpc.aio.Channel, scheduler: SchedulerServer
) -> None:
    node_id = f"wire-{uuid.uuid4().hex[:8]}"
    key = SigningKey.generate()
    call = raw_stream(channel)
    await call.write(nodes_pb2.NodeStreamRequest(hello=hello(node_id, key)).SerializeToString())
    challenge = (await call.read()).challenge
    signed = signing.node_auth_bytes(
        challenge.nonce, challenge.scheduler_id, node_id, bytes(key.verify_key)
    )
    auth = nodes_pb2.Auth(signature=signing.sign(key, signed))
    await call.write(nodes_pb2.NodeStreamRequest(auth=auth).SerializeToString())
    assert (await call.read()).WhichOneof("message") == "welcome"
    await registered(scheduler, node_id)

    progress = nodes_pb2.Progress(job_id=str(uuid.uuid4()), attempt=1, sequence=1, text=MARK)
    await call.write(not_utf8(nodes_pb2.NodeStreamRequest(progress=progress)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert fields_of(caught.value) == ["progress.text"]
    assert scheduler.registry.get(node_id) is None  # removed before the status went out

    # The scheduler goes on serving nodes.
    other = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", f"{node_id}-next", "scripted", lambda _n: "ok"
    )
    async with running(other):  # welcomed
        await registered(scheduler, other.node_id)


async def test_an_undecodable_admin_request_is_invalid_argument(
    scheduler: SchedulerServer, operator_key: str
) -> None:
    """Decoding comes before authorization: the edge names the bad field."""
    request = mesh_admin_service_pb2.JobTrailRequest(job_id=MARK).SerializeToString()
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{scheduler.admin_port}", interceptors=[SendsOperatorKey(operator_key)]
    ) as channel:
        call = channel.unary_unary(
            "/fleetwire.v1.MeshAdminService/JobTrail", request_serializer=lambda raw: raw
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request.replace(MARK.encode(), b"\xff" * len(MARK)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    assert fields_of(caught.value) == ["job_id"]


async def test_an_admin_fault_is_internal_with_its_text_only_in_the_log(
    admin: mesh_admin_service_pb2_grpc.MeshAdminServiceStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret text")

    trace_id = uuid.uuid4().hex  # the caller's W3C trace, continued by the admin port
    monkeypatch.setattr(AdminStore, "dead_letters", broken)
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.ListDeadLetters(
            mesh_admin_service_pb2.ListDeadLettersRequest(),
            metadata=(("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"),),
        )
    monkeypatch.undo()

    assert caught.value.code() == grpc.StatusCode.INTERNAL, caught.value
    assert reason_of(caught.value) == "INTERNAL"
    assert trace_id in (caught.value.details() or "")
    assert "secret" not in str(caught.value)
    logged = [entry for entry in logs if entry["event"] == "unexpected error"]
    assert [entry["trace_id"] for entry in logged] == [trace_id], logs
    assert "secret text" in repr(logged[0]["exc_info"])

    # The scheduler keeps serving the same RPC.
    await admin.ListDeadLetters(mesh_admin_service_pb2.ListDeadLettersRequest(limit=1))
