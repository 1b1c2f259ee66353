"""What the bridge publishes is what RabbitMQ holds: priority, expiration, persistence,
headers — read back from the queue itself."""

from __future__ import annotations

import uuid
from datetime import timedelta

import aiormq
import grpc
import pytest

from broker_bridge.server import BridgeServer
from fleetwire.domain.errors import RouteUnavailable
from fleetwire.messaging.amqp import AmqpLink
from fleetwire.messaging.publisher import JobMessage, JobPublisher
from fleetwire.messaging.topology import HEADER_JOB_ID, HEADER_TRACEPARENT, Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc


def spec(priority: int, ttl_s: int = 600, model: str = "tiny-llama") -> job_pb2.JobSpec:
    s = job_pb2.JobSpec(
        model=model,
        prompt="hello",
        priority=priority,
        sampling=job_pb2.SamplingParams(max_tokens=4),
        network=job_pb2.NETWORK_TESTNET,
    )
    s.ttl.FromTimedelta(timedelta(seconds=ttl_s))
    return s


async def drain_queue(
    channel: aiormq.abc.AbstractChannel, queue: str
) -> list[aiormq.abc.DeliveredMessage]:
    messages = []
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if message.delivery_tag is None:  # Basic.GetEmpty
            return messages
        messages.append(message)


@pytest.mark.parametrize(
    ("priority", "amqp_priority"),
    [
        (job_pb2.PRIORITY_CLASS_URGENT, 9),
        (job_pb2.PRIORITY_CLASS_NORMAL, 5),
        (job_pb2.PRIORITY_CLASS_BULK, 1),
        (job_pb2.PRIORITY_CLASS_TEST, 0),
    ],
)
async def test_submitted_job_carries_priority_expiration_persistence(
    jobs: job_service_pb2_grpc.JobServiceStub,
    amqp_channel: aiormq.abc.AbstractChannel,
    settings: Settings,
    priority: int,
    amqp_priority: int,
) -> None:
    topology = Topology(settings.mesh.namespace)
    queue = topology.route_queue(topology.route_key("testnet", "tiny-llama"))
    trace_id, client_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = await jobs.Submit(
        job_service_pb2.SubmitRequest(job=spec(priority, ttl_s=321)),
        metadata=(("traceparent", f"00-{trace_id}-{client_span}-01"),),
    )
    assert response.job.state == job_pb2.JOB_STATE_QUEUED
    messages = await drain_queue(amqp_channel, queue)
    assert len(messages) == 1, "exactly the submitted job is in the queue"
    props = messages[0].header.properties
    assert props.priority == amqp_priority
    assert props.expiration == "321000"
    assert props.delivery_mode == 2  # persistent
    assert props.message_id == response.job.job_id
    assert props.headers is not None
    assert props.headers[HEADER_JOB_ID] == response.job.job_id
    # The job's trace, the caller's continued; the parent named is the bridge's publish span.
    assert response.job.trace_id == trace_id
    version, header_trace, parent, flags = str(props.headers[HEADER_TRACEPARENT]).split("-")
    assert (version, header_trace, flags) == ("00", trace_id, "01")
    assert parent != client_span
    envelope = job_pb2.Job()
    envelope.ParseFromString(messages[0].body)
    assert envelope.job_id == response.job.job_id
    assert envelope.spec.prompt == "hello"


async def test_queue_is_durable_with_max_priority(
    bridge: BridgeServer, amqp_channel: aiormq.abc.AbstractChannel, settings: Settings
) -> None:
    topology = Topology(settings.mesh.namespace)
    queue = topology.route_queue(topology.route_key("testnet", "tiny-llama"))
    # A declaration with other arguments would fail; redeclaring identically succeeds.
    arguments = topology.route_arguments()
    assert arguments == {
        "x-max-priority": 10,
        "x-dead-letter-exchange": topology.dead_letter_exchange,
        "x-expires": int(settings.mesh.route_queue_expires.total_seconds() * 1000),
    }
    ok = await amqp_channel.queue_declare(queue, durable=True, arguments=arguments)
    assert ok.queue == queue


async def test_unroutable_publish_is_an_error_not_a_loss(
    settings: Settings, amqp_channel: aiormq.abc.AbstractChannel
) -> None:
    """mandatory=True: a message no queue takes (here: its queue was deleted behind the
    publisher's back) comes back as RouteUnavailable instead of vanishing."""
    link = AmqpLink(settings.rabbitmq.url.get_secret_value())
    topology = Topology(settings.mesh.namespace)
    publisher = JobPublisher(link, topology, confirm_timeout=timedelta(seconds=5))
    await publisher.ensure_route("mainnet.no_such_route")
    await amqp_channel.queue_delete(topology.route_queue("mainnet.no_such_route"))
    try:
        with pytest.raises(RouteUnavailable):
            await publisher.publish(
                JobMessage(
                    job_id=str(uuid.uuid4()),
                    route_key="mainnet.no_such_route",
                    body=b"x",
                    priority=5,
                    ttl=timedelta(seconds=10),
                    expires_at_ms=0,
                    trace_id="t",
                )
            )
    finally:
        await publisher.close()
        await link.close()


async def test_unknown_model_is_invalid_argument_with_field(
    jobs: job_service_pb2_grpc.JobServiceStub,
) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await jobs.Submit(job_service_pb2.SubmitRequest(job=spec(1, model="nope")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    assert fields == ["job.model"]
    # and the service keeps serving
    ok = await jobs.Submit(job_service_pb2.SubmitRequest(job=spec(1)))
    assert ok.job.job_id
