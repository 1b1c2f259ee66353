"""Prometheus metrics of the bridge and the scheduler (issue 17, first part): each serves
/metrics on its metrics port, in the text format Prometheus scrapes, and the counters move
with what the mesh does. Real in-process servers, scraped over HTTP."""

from __future__ import annotations

import urllib.request
import uuid

import aiormq
import asyncpg
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker_bridge.server import BridgeServer
from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.server import SchedulerServer
from tests.integration.test_bad_results import spec, wait_state
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_the_counters_follow_a_job_and_an_offence(
    bridge: BridgeServer, scheduler: SchedulerServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    before_bridge, before_scheduler = scrape(bridge.metrics_port), scrape(scheduler.metrics_port)
    assert value(before_bridge, "fleetwire_build_info", version="0.1.0", component="bridge") == 1
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"metrics-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda _n: "ok",
    )
    async with running(node):
        connected = value(scrape(scheduler.metrics_port), "fleetwire_nodes_connected")
        assert connected >= 1
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
        # A result for a job it was never given: an offence.
        fake = nodes_pb2.Dispatch(job_id=str(uuid.uuid4()), attempt=1)
        await node.send(nodes_pb2.NodeStreamRequest(result=node.signed_result(fake)))

        async def charged() -> bool:
            now = scrape(scheduler.metrics_port)
            key = {"offence": "UNEXPECTED_RESULT"}
            return value(now, "fleetwire_offences_total", **key) > value(
                before_scheduler, "fleetwire_offences_total", **key
            )

        await eventually(charged, within=10, what="the offence counted")
    after_bridge, after_scheduler = scrape(bridge.metrics_port), scrape(scheduler.metrics_port)
    submitted = {"model": "scripted", "priority": "normal", "network": "mainnet"}
    assert (
        value(after_bridge, "fleetwire_jobs_submitted_total", **submitted)
        == value(before_bridge, "fleetwire_jobs_submitted_total", **submitted) + 1
    )
    succeeded = {"state": "SUCCEEDED", "reason": "", **submitted}
    assert (
        value(after_scheduler, "fleetwire_jobs_finished_total", **succeeded)
        >= value(before_scheduler, "fleetwire_jobs_finished_total", **succeeded) + 1
    )
    assert value(after_scheduler, "fleetwire_job_duration_seconds_count") >= 1
    assert (
        value(after_scheduler, "fleetwire_queue_wait_seconds_count")
        >= value(before_scheduler, "fleetwire_queue_wait_seconds_count") + 1
    )


async def test_a_retry_is_counted_by_stage(
    scheduler: SchedulerServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """A retryable failure sends the job through the first delayed stage; then it succeeds."""
    before = value(scrape(scheduler.metrics_port), "fleetwire_retries_total", stage="1")
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"retry-metrics-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda n: "fail-retryable" if n == 1 else "ok",
    )
    async with running(node):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
    after = value(scrape(scheduler.metrics_port), "fleetwire_retries_total", stage="1")
    assert after == before + 1


async def test_a_refused_submit_is_counted_by_reason(
    bridge: BridgeServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    bad = spec()
    bad.model = "no-such-model"
    labels = {"code": "INVALID_ARGUMENT", "reason": "INVALID_ARGUMENT"}
    before = value(scrape(bridge.metrics_port), "fleetwire_admission_refusals_total", **labels)
    with pytest.raises(grpc.aio.AioRpcError):  # the refusal itself is tested elsewhere
        await jobs.Submit(job_service_pb2.SubmitRequest(job=bad))
    after = value(scrape(bridge.metrics_port), "fleetwire_admission_refusals_total", **labels)
    assert after == before + 1


async def test_the_census_reports_queues_waiting_jobs_and_the_ledger(
    scheduler: SchedulerServer,
    jobs: job_service_pb2_grpc.JobServiceStub,
    settings: Settings,
    pool: asyncpg.Pool,
    amqp_channel: aiormq.abc.AbstractChannel,
) -> None:
    """What the census reads matches RabbitMQ and PostgreSQL: a job waits on a route no
    node serves (no eligible slot there), the dead letters and the ledger's totals."""
    stranded = spec()
    stranded.model = "tiny-llama"  # no node serves it in these tests
    job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=stranded))).job.job_id
    try:
        assert scheduler.census is not None
        await scheduler.census.poll()
        now = scrape(scheduler.metrics_port)
    finally:
        await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job_id))
    route = "mainnet.tiny-llama"
    assert value(now, "fleetwire_jobs_waiting", route=route, priority="normal") >= 1
    assert ("fleetwire_jobs_waiting", (("priority", "urgent"), ("route", route))) in now
    assert ("fleetwire_route_slots", (("route", route),)) in now
    assert value(now, "fleetwire_route_slots", route=route) == 0
    topology = Topology(settings.mesh.namespace)
    for queue, name, kind in (
        (topology.route_queue(route), f"jobs.{route}", "route"),
        (topology.dead_letters_queue, "dead-letters", "dead_letters"),
    ):
        ok = await amqp_channel.queue_declare(queue, passive=True)  # nothing consumes them
        ready = value(now, "fleetwire_queue_messages", queue=name, kind=kind, state="ready")
        assert ready == ok.message_count, queue
    stage = topology.retry_stage(0, int(settings.scheduler.retry_delays[0].total_seconds() * 1000))
    retry_labels = (("kind", "retry"), ("queue", stage.split(".", 1)[1]), ("state", "ready"))
    assert ("fleetwire_queue_messages", retry_labels) in now
    debits, credits = await pool.fetchrow(
        "SELECT coalesce(sum(-amount) FILTER (WHERE amount < 0), 0),"
        " coalesce(sum(amount) FILTER (WHERE amount > 0), 0) FROM ledger_entries"
    )
    assert value(now, "fleetwire_ledger_micro_credits", side="debit") == debits
    assert value(now, "fleetwire_ledger_micro_credits", side="credit") == credits
    assert ("fleetwire_nodes_excluded", ()) in now
    for outcome in ("pass", "wrong", "undecided", "unanswered"):  # from 0
        assert ("fleetwire_validations_total", (("outcome", outcome),)) in now


async def test_the_census_counts_a_running_jobs_delivery_as_unacked(
    scheduler: SchedulerServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """While a node runs a job the scheduler holds its delivery unacked; the census reads
    that from RabbitMQ's management API (AMQP tells ready messages only)."""
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"unacked-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda _n: "ok",
        hold_results=True,  # the job stays running: its delivery stays unacked
    )
    async with running(node):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await eventually(lambda: node.dispatches, within=30, what="the job dispatched")
        assert scheduler.census is not None
        census = scheduler.census
        labels = {"queue": "jobs.mainnet.scripted", "kind": "route", "state": "unacked"}

        async def unacked() -> float:
            await census.poll()  # the API's statistics refresh every few seconds
            return value(scrape(scheduler.metrics_port), "fleetwire_queue_messages", **labels)

        assert await eventually(unacked, within=30, what="an unacked delivery counted") >= 1
        for held in node.held:
            await node.send(held)
        await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
