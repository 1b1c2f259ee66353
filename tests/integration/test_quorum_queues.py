"""Quorum queues on the local broker (a one-node cluster): the topology declares them with
the arguments it promises, routes each priority class to its queue, and a publish a full
queue refuses (reject-publish) reaches the caller as UNAVAILABLE, never a silent loss."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiormq
import pytest

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.amqp import AmqpLink
from fleetwire.messaging.publisher import JobMessage, JobPublisher
from fleetwire.messaging.topology import QueueType, Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2
from tests.conftest import broker_queue_names
from tests.support.eventually import eventually
from tests.support.quorum_mesh import quorum_mesh
from tests.support.scripted_node import ScriptedNode, running

TERMINAL = {
    job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_STATE_FAILED,
    job_pb2.JOB_STATE_EXPIRED,
    job_pb2.JOB_STATE_CANCELLED,
    job_pb2.JOB_STATE_DEAD_LETTERED,
}


@pytest.fixture
async def quorum_topology(run_id: str, settings: Settings) -> AsyncIterator[Topology]:
    namespace = f"{run_id}qq{uuid.uuid4().hex[:4]}"
    yield Topology(namespace, queue_type=QueueType.QUORUM, max_length=2)
    connection = await aiormq.connect(settings.rabbitmq.url.get_secret_value())
    channel = await connection.channel()
    for queue in await broker_queue_names(f"{namespace}."):
        await channel.queue_delete(queue)
    for exchange in ("jobs", "dlx"):
        await channel.exchange_delete(f"{namespace}.{exchange}")
    await connection.close()


def message(priority: int) -> JobMessage:
    spec = job_pb2.JobSpec(model="m", prompt="p", priority=priority)
    spec.ttl.FromTimedelta(timedelta(minutes=5))
    return JobMessage.of(
        str(uuid.uuid4()),
        spec,
        route_key="testnet.m",
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        trace_id="0" * 32,
    )


async def test_each_class_lands_in_its_quorum_queue_and_a_full_one_refuses(
    quorum_topology: Topology, settings: Settings
) -> None:
    link = AmqpLink(settings.rabbitmq.url.get_secret_value())
    publisher = JobPublisher(link, quorum_topology, confirm_timeout=timedelta(seconds=5))
    try:
        await publisher.publish(message(job_pb2.PRIORITY_CLASS_URGENT))
        await publisher.publish(message(job_pb2.PRIORITY_CLASS_BULK))
        channel = await link.channel(publisher_confirms=False)
        urgent, normal, bulk, test = quorum_topology.route_queues("testnet.m")
        counts = {
            q: (await channel.queue_declare(q, passive=True)).message_count
            for q in (urgent, normal, bulk, test)
        }
        assert counts == {urgent: 1, normal: 0, bulk: 1, test: 0}
        # x-max-length 2 with reject-publish: quorum queues refuse once over the limit (they
        # may take one more first); the publisher turns the nack into BackendUnavailable.
        await publisher.publish(message(job_pb2.PRIORITY_CLASS_BULK))  # 2: at the limit
        await publisher.publish(message(job_pb2.PRIORITY_CLASS_BULK))  # 3: one over, taken
        with pytest.raises(BackendUnavailable, match="publish refused"):
            await publisher.publish(message(job_pb2.PRIORITY_CLASS_BULK))
        # The publisher works on afterwards (a fresh channel), for other classes' queues.
        await publisher.publish(message(job_pb2.PRIORITY_CLASS_NORMAL))
        ok = await channel.queue_declare(normal, passive=True)
        assert ok.message_count == 1
    finally:
        await publisher.close()
        await link.close()


async def test_deferrals_do_not_spend_the_delivery_limit(settings: Settings, run_id: str) -> None:
    """A job no connected node may run is deferred (every FLEETWIRE_SCHEDULER_DEFER_DELAY,
    1 s) until its TTL ends: on quorum queues each deferral republishes the message, so a
    delivery limit of 2 does not dead-letter it after two deferrals; it EXPIRES with the
    reason of its deferrals."""
    async with quorum_mesh(settings, run_id, delivery_limit=2) as (jobs, scheduler):
        node = ScriptedNode(
            f"127.0.0.1:{scheduler.port}", "quorum-defer-node", "scripted", lambda _n: "ok"
        )
        async with running(node):
            job = job_pb2.JobSpec(
                model="scripted",
                prompt="far away",
                sampling=job_pb2.SamplingParams(max_tokens=3),
                constraints=job_pb2.Constraints(region="elsewhere"),
            )
            job.ttl.FromTimedelta(timedelta(seconds=5))
            job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=job))).job.job_id

            async def final() -> job_pb2.Job | None:
                got = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
                return got if got.state in TERMINAL else None

            ended = await eventually(final, within=30, what="the job to end")
        assert ended.state == job_pb2.JOB_STATE_EXPIRED, ended
        assert not node.dispatches


async def test_a_quorum_retry_stage_hands_a_job_back_to_its_class_queue(
    quorum_topology: Topology, settings: Settings
) -> None:
    """Stage queues are quorum queues too (x-message-ttl, at-least-once dead-lettering to
    the jobs exchange): a job published there comes back, after the delay, to the queue of
    its priority class on its route."""
    link = AmqpLink(settings.rabbitmq.url.get_secret_value())
    publisher = JobPublisher(link, quorum_topology, confirm_timeout=timedelta(seconds=5))
    try:
        await publisher.ensure_route("testnet.m")  # exchanges and the route's queues
        channel = await link.channel(publisher_confirms=True)
        stage = await quorum_topology.declare_retry_stage(channel, 0, 200)
        ok = await channel.queue_declare(stage, passive=True)
        assert ok.message_count == 0
        await channel.basic_publish(
            b"job",
            exchange=stage,
            routing_key=quorum_topology.publish_key("testnet.m", 5),
            properties=aiormq.spec.Basic.Properties(delivery_mode=2, priority=5),
        )
        _, normal, _, _ = quorum_topology.route_queues("testnet.m")

        async def back() -> bool:
            got = await channel.queue_declare(normal, passive=True)
            return got.message_count == 1

        await eventually(back, within=10, what="the job back in its class queue")
    finally:
        await publisher.close()
        await link.close()
