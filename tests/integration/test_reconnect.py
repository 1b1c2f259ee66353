"""A node whose stream breaks mid-job and comes back within the grace period keeps its
job: the result it delivers after reconnecting finalises the same attempt. A node that
comes back without the job (or not at all) loses it to a retry."""

from __future__ import annotations

from nacl.signing import SigningKey

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running


def spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )


async def wait_state(
    jobs: job_service_pb2_grpc.JobServiceStub, job_id: str, states: set[int]
) -> job_pb2.Job:
    async def reached() -> job_pb2.Job | None:
        job = (await jobs.Status(job_service_pb2.StatusRequest(job_id=job_id))).job
        return job if job.state in states else None

    return await eventually(reached, within=20, interval=0.1, what=f"job {job_id} in {states}")


async def test_result_delivered_after_a_reconnect_finalises_the_same_attempt(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    key = SigningKey.generate()
    before = ScriptedNode(address, "flaky-link", "scripted", lambda _n: "ok", key=key)
    before.hold_results = True  # the result is ready, but the link breaks before it is sent
    async with running(before):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await eventually(
            lambda: before.held, within=5, what="the node to finish (and hold) the job"
        )
    assert before.held, "the node finished the job before the link broke"

    after = ScriptedNode(
        address,
        "flaky-link",
        "scripted",
        lambda _n: "ok",
        key=key,
        announce=[(job_id, 1)],
        deliver_after_welcome=before.held,
    )
    async with running(after):
        job = await wait_state(jobs, job_id, {job_pb2.JOB_STATE_SUCCEEDED})
    assert job.attempts == 1
    assert job.signature.attempt == 1
    assert job.signature.node_id == "flaky-link"


async def test_node_back_without_the_job_loses_it_to_a_retry(
    jobs: job_service_pb2_grpc.JobServiceStub, scheduler: SchedulerServer
) -> None:
    address = f"127.0.0.1:{scheduler.port}"
    key = SigningKey.generate()
    before = ScriptedNode(address, "amnesiac", "scripted", lambda _n: "ok", key=key)
    before.hold_results = True
    async with running(before):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await eventually(lambda: before.dispatches, within=5, what="the job's dispatch")
    after = ScriptedNode(address, "amnesiac", "scripted", lambda _n: "ok", key=key)
    async with running(after):
        job = await wait_state(jobs, job_id, {job_pb2.JOB_STATE_SUCCEEDED})
    assert job.attempts == 2
    assert [d.attempt for d in after.dispatches if d.job_id == job_id] == [2]
