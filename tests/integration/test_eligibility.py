"""Eligibility: a job goes only to a node that meets its constraints; a job no connected
node can run is deferred (no attempt burned) and expires saying why."""

from __future__ import annotations

from datetime import timedelta

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


def spec(region: str, ttl_s: float = 60) -> job_pb2.JobSpec:
    s = job_pb2.JobSpec(model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3))
    s.constraints.region = region
    s.ttl.FromTimedelta(timedelta(seconds=ttl_s))
    return s


async def wait_terminal(jobs: job_service_pb2_grpc.JobServiceStub, job_id: str) -> job_pb2.Job:
    async def finished() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        done = job.state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_EXPIRED)
        return job if done else None

    return await eventually(finished, within=30, interval=0.1, what=f"job {job_id} to finish")


async def test_job_runs_only_on_a_node_in_its_region(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    eu = ScriptedNode(address, "node-eu", "scripted", lambda _n: "ok", region="eu-west")
    us = ScriptedNode(address, "node-us", "scripted", lambda _n: "ok", region="us-east")
    async with running(eu), running(us):
        ids = [
            (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec("us-east")))).job.job_id
            for _ in range(4)
        ]
        finished = [await wait_terminal(jobs, job_id) for job_id in ids]
    assert {job.signature.node_id for job in finished} == {"node-us"}
    assert not [d for d in eu.dispatches if d.job_id in ids]


async def test_job_no_node_can_run_expires_with_the_reason(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    eu = ScriptedNode(address, "node-eu-2", "scripted", lambda _n: "ok", region="eu-west")
    async with running(eu):
        job_id = (
            await jobs.Submit(job_service_pb2.SubmitRequest(job=spec("mars", ttl_s=3)))
        ).job.job_id
        job = await wait_terminal(jobs, job_id)
    assert job.state == job_pb2.JOB_STATE_EXPIRED
    assert job.error.reason == "NO_ELIGIBLE_NODE"
    assert "node-eu-2: REGION" in job.error.message
    assert job.attempts == 0, "deferring is not an attempt"


def network_spec(network: int, ttl_s: float) -> job_pb2.JobSpec:
    s = job_pb2.JobSpec(
        model="scripted",
        prompt="p",
        network=network,
        sampling=job_pb2.SamplingParams(max_tokens=3),
    )
    s.ttl.FromTimedelta(timedelta(seconds=ttl_s))
    return s


async def test_jobs_never_cross_networks(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    """A testnet job is never dispatched to a mainnet-only node (it expires waiting), and a
    mainnet job never to a testnet-only node; each runs once a node of its network is on."""
    address = f"127.0.0.1:{scheduler.port}"
    mainnet_only = ScriptedNode(
        address, "net-main", "scripted", lambda _n: "ok", networks=[job_pb2.NETWORK_MAINNET]
    )
    testnet_only = ScriptedNode(
        address, "net-test", "scripted", lambda _n: "ok", networks=[job_pb2.NETWORK_TESTNET]
    )
    async with running(mainnet_only):
        stranded = (
            await jobs.Submit(
                job_service_pb2.SubmitRequest(job=network_spec(job_pb2.NETWORK_TESTNET, 2))
            )
        ).job.job_id
        expired = await wait_terminal(jobs, stranded)
        assert expired.state == job_pb2.JOB_STATE_EXPIRED
        assert not mainnet_only.dispatches, "a testnet job reached a mainnet-only node"

        async with running(testnet_only):
            test_job = (
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(job=network_spec(job_pb2.NETWORK_TESTNET, 60))
                )
            ).job.job_id
            main_job = (
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(job=network_spec(job_pb2.NETWORK_MAINNET, 60))
                )
            ).job.job_id
            ran_test = await wait_terminal(jobs, test_job)
            ran_main = await wait_terminal(jobs, main_job)
    assert ran_test.state == ran_main.state == job_pb2.JOB_STATE_SUCCEEDED
    assert ran_test.signature.node_id == "net-test"
    assert ran_main.signature.node_id == "net-main"
    assert {d.job_id for d in testnet_only.dispatches} == {test_job}
