"""Prometheus metrics of the bridge and the scheduler (issue 17, first part): each serves
/metrics on its metrics port, in the text format Prometheus scrapes, and the counters move
with what the mesh does. Real in-process servers, scraped over HTTP."""

from __future__ import annotations

import urllib.request
import uuid

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker_bridge.server import BridgeServer
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
    succeeded = {"state": "SUCCEEDED", "reason": ""}
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
