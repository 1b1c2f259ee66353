"""gRPC server metrics (issue 17): every server ``start_server`` builds — the bridge's, the
scheduler's node and admin ports — counts its calls by service, method and status code and
times them, in its process's registry. Real in-process servers, scraped over HTTP."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import descriptor_pool

from broker_bridge.server import BridgeServer
from fleetwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
)
from scheduler.server import SchedulerServer
from tests.integration.test_bad_results import spec, wait_state
from tests.integration.test_metrics import scrape, value
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running

JOBS = "fleetwire.v1.JobService"
NODES = "fleetwire.v1.NodeService"
ADMIN = "fleetwire.v1.MeshAdminService"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
HANDLED = "fleetwire_grpc_server_handled_total"
SECONDS = "fleetwire_grpc_server_handling_seconds"


def methods_of(service: str) -> set[str]:
    return {m.name for m in descriptor_pool.Default().FindServiceByName(service).methods}


def labelled(port: int, name: str) -> set[tuple[str, str]]:
    """The (service, method) pairs of a metric's samples."""
    return {
        (labels["service"], labels["method"])
        for (sample, pairs) in scrape(port)
        if sample == name and (labels := dict(pairs))
    }


async def handled(port: int, service: str, method: str, code: str) -> float:
    return value(scrape(port), HANDLED, service=service, method=method, code=code)


async def test_every_method_of_the_bridge_is_there_from_the_start(bridge: BridgeServer) -> None:
    """Labels are bounded by the service descriptors, and each series exists before any
    call: the methods of JobService, health and reflection, nothing else."""
    wanted = {(s, m) for s in (JOBS, HEALTH, REFLECTION) for m in methods_of(s)}
    assert labelled(bridge.metrics_port, HANDLED) == wanted
    assert labelled(bridge.metrics_port, f"{SECONDS}_count") == wanted


async def test_calls_are_counted_by_code_and_timed(
    bridge: BridgeServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    port = bridge.metrics_port
    ok = await handled(port, JOBS, "Submit", "OK")
    refused = await handled(port, JOBS, "Submit", "INVALID_ARGUMENT")
    missing = await handled(port, JOBS, "Watch", "NOT_FOUND")
    timed = value(scrape(port), f"{SECONDS}_count", service=JOBS, method="Submit")

    job = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job
    bad = spec()
    bad.model = "no-such-model"
    with pytest.raises(grpc.aio.AioRpcError):
        await jobs.Submit(job_service_pb2.SubmitRequest(job=bad))
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # a server stream ending in an error
        async for _ in jobs.Watch(job_service_pb2.WatchRequest(job_id=str(uuid.uuid4()))):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id))

    async def counted() -> bool:
        return (
            await handled(port, JOBS, "Submit", "OK") == ok + 1
            and await handled(port, JOBS, "Submit", "INVALID_ARGUMENT") == refused + 1
            and await handled(port, JOBS, "Watch", "NOT_FOUND") == missing + 1
        )

    await eventually(counted, within=10, what="the three calls counted by their codes")
    now = scrape(port)
    assert value(now, f"{SECONDS}_count", service=JOBS, method="Submit") == timed + 2
    assert value(now, f"{SECONDS}_sum", service=JOBS, method="Submit") > 0


async def test_a_watch_the_client_leaves_is_cancelled(
    bridge: BridgeServer, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """A Watch the client cancels counts as CANCELLED, whenever grpc ends it: a cancel that
    lands while a message is being sent is noticed only at the stream's next message
    (grpc.aio), so the job is cancelled too, which gives the Watch one to send."""
    port = bridge.metrics_port
    before = await handled(port, JOBS, "Watch", "CANCELLED")
    stranded = spec()
    stranded.model = "tiny-llama"  # no node serves it in these tests: the Watch waits
    job = (await jobs.Submit(job_service_pb2.SubmitRequest(job=stranded))).job
    call = jobs.Watch(job_service_pb2.WatchRequest(job_id=job.job_id))
    await call.read()  # the current state: the stream is open
    call.cancel()
    await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id))

    async def cancelled() -> bool:
        return await handled(port, JOBS, "Watch", "CANCELLED") == before + 1

    await eventually(cancelled, within=10, what="the abandoned Watch counted CANCELLED")


async def test_an_unknown_method_adds_no_label(bridge: BridgeServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        call = channel.unary_unary(f"/{JOBS}/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert (JOBS, "NoSuchMethod") not in labelled(bridge.metrics_port, HANDLED)


async def test_the_scheduler_counts_both_ports_in_its_registry(
    scheduler: SchedulerServer,
    jobs: job_service_pb2_grpc.JobServiceStub,
    admin: mesh_admin_service_pb2_grpc.MeshAdminServiceStub,
) -> None:
    """The node port's NodeStream (a bidirectional stream, timed over its whole life) and
    the admin port's unary calls, each under its own service label."""
    port = scheduler.metrics_port
    wanted = {(s, m) for s in (NODES, ADMIN, HEALTH, REFLECTION) for m in methods_of(s)}
    assert labelled(port, HANDLED) == wanted
    listed = await handled(port, ADMIN, "ListDeadLetters", "OK")
    unauthenticated = await handled(port, ADMIN, "ListDeadLetters", "UNAUTHENTICATED")
    streams = value(scrape(port), f"{SECONDS}_count", service=NODES, method="NodeStream")

    await admin.ListDeadLetters(mesh_admin_service_pb2.ListDeadLettersRequest(limit=1))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.admin_port}") as channel:
        keyless = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await keyless.ListDeadLetters(mesh_admin_service_pb2.ListDeadLettersRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"grpc-metrics-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda _n: "ok",
    )
    async with running(node):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)

    async def counted() -> bool:
        now = scrape(port)
        return (
            value(now, f"{SECONDS}_count", service=NODES, method="NodeStream") == streams + 1
            and value(now, HANDLED, service=ADMIN, method="ListDeadLetters", code="OK")
            == listed + 1
            and value(now, HANDLED, service=ADMIN, method="ListDeadLetters", code="UNAUTHENTICATED")
            == unauthenticated + 1
        )

    await eventually(counted, within=10, what="the node's stream and the admin calls counted")
