"""One job is one trace across the client, the bridge, the scheduler and the node (issue 17).

Three real processes — ``python -m broker_bridge``, ``python -m scheduler`` and a node agent
— each export their spans to a file of their own (``FLEETWIRE_TRACING_FILE``) and log JSON
lines. A job submitted with the client's ``traceparent`` must come back with that trace id,
its spans in the three files must join into one tree under the client's span, with the
parent links the design gives (docs/operations.md, "Tracing"), and every log line about
the job on each process must carry the trace id.

The node is the real agent process (``node.main``: stream, handshake, Accept, Progress,
signed Result, its ``run`` span) on the benchmarks' instant runtime
(``python -m bench.bench_node``) instead of vLLM: what is traced on a node is the agent's,
the engine is swapped at the agent's injection point, and a vLLM engine would cost 15 to 30 s
and 2 GB beside the two the session's live mesh already runs on these 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.conftest import cleanup_namespace, isolated_env
from tests.integration.test_bad_results import spec, wait_state
from tests.support.eventually import eventually
from tests.support.mesh_admin import create_operator_key, listed_nodes

NODE_ID = "traced-node"
CLIENT_SPAN = "a1b2c3d4e5f60718"


@dataclass
class Traced:
    """A process of the traced mesh: its span file and its log."""

    name: str
    process: subprocess.Popen[bytes]
    spans: Path
    log: Path

    def span_lines(self) -> list[dict[str, Any]]:
        if not self.spans.exists():
            return []
        return [json.loads(line) for line in self.spans.read_text().splitlines() if line]

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class TracedMesh:
    env: dict[str, str]
    operator_key: str
    directory: Path
    processes: dict[str, Traced] = field(default_factory=dict)

    def start(self, name: str, module: str, extra: dict[str, str] | None = None) -> Traced:
        env = {
            **os.environ,
            **self.env,
            "FLEETWIRE_TRACING_FILE": str(self.directory / f"{name}.spans.jsonl"),
            "FLEETWIRE_LOG_JSON": "true",
            "FLEETWIRE_LOG_LEVEL": "DEBUG",  # the per-job lines ("job accepted") are DEBUG
            **(extra or {}),
        }
        log = self.directory / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        traced = Traced(name, process, Path(env["FLEETWIRE_TRACING_FILE"]), log)
        self.processes[name] = traced
        return traced

    @property
    def bridge_address(self) -> str:
        return f"127.0.0.1:{self.env['FLEETWIRE_BRIDGE_PORT']}"

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.env['FLEETWIRE_SCHEDULER_ADMIN_PORT']}"

    def exited(self) -> list[str]:
        return [t.name for t in self.processes.values() if t.process.poll() is not None]


@pytest.fixture(scope="module")
def traced_mesh(
    run_id: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[TracedMesh]:
    """Bridge, scheduler and node as processes in a namespace, database and ports of their
    own; stopped at the end, their logs printed when a test of the module failed."""
    namespace = f"{run_id}tr"
    directory = tmp_path_factory.mktemp("traced")
    env = isolated_env(namespace, directory / "node.key")
    key = asyncio.run(create_operator_key(env["FLEETWIRE_POSTGRES_DSN"]))
    mesh = TracedMesh(env, key, directory)
    failed_before = request.session.testsfailed
    try:
        mesh.start("scheduler", "scheduler", {"FLEETWIRE_SCHEDULER_SCHEDULER_ID": "traced"})
        mesh.start("bridge", "broker_bridge")
        mesh.start(
            "node",
            "bench.bench_node",
            {"FLEETWIRE_NODE_NODE_ID": NODE_ID, "FLEETWIRE_NODE_MODEL_NAME": "scripted"},
        )
        yield mesh
    finally:
        for traced in mesh.processes.values():
            traced.stop()
        if request.session.testsfailed > failed_before:
            for traced in mesh.processes.values():
                tail = traced.log.read_text(errors="replace").splitlines()[-80:]
                print(f"===== {traced.name} =====\n" + "\n".join(tail))
        asyncio.run(cleanup_namespace(namespace))


async def ready(mesh: TracedMesh) -> None:
    """The bridge answers health checks and the scheduler lists the node (admin port)."""

    async def serving() -> bool:
        if exited := mesh.exited():
            raise AssertionError(f"exited early: {exited}")
        try:
            async with grpc.aio.insecure_channel(mesh.bridge_address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            return False
        nodes = await asyncio.to_thread(listed_nodes, mesh.admin_address, mesh.operator_key)
        return NODE_ID in nodes

    await eventually(serving, within=60, interval=0.3, what="bridge serving and the node listed")


@pytest.fixture
async def jobs(traced_mesh: TracedMesh) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    await ready(traced_mesh)
    async with grpc.aio.insecure_channel(traced_mesh.bridge_address) as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    named = [s for s in spans if s["name"] == name]
    assert len(named) == 1, f"{name}: {len(named)} spans in {[s['name'] for s in spans]}"
    return named[0]


async def test_one_job_is_one_trace_across_the_processes(
    traced_mesh: TracedMesh, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    trace_id = uuid.uuid4().hex
    call = jobs.Submit(
        job_service_pb2.SubmitRequest(job=spec()),
        metadata=(("traceparent", f"00-{trace_id}-{CLIENT_SPAN}-01"),),
    )
    answered = dict(await call.initial_metadata())
    job = (await call).job
    # The client is told the trace: in the job, and in the traceresponse of the call.
    assert job.trace_id == trace_id
    assert str(answered["traceresponse"]).startswith(f"00-{trace_id}-")
    await wait_state(jobs, job.job_id, job_pb2.JOB_STATE_SUCCEEDED)
    assert (await jobs.Status(job_service_pb2.StatusRequest(job_id=job.job_id))).job.trace_id == (
        trace_id
    )

    bridge, scheduler, node = (traced_mesh.processes[n] for n in ("bridge", "scheduler", "node"))

    def of_job(traced: Traced) -> list[dict[str, Any]]:
        return [
            s for s in traced.span_lines() if s["attributes"].get("fleetwire.job_id") == job.job_id
        ]

    def all_written() -> bool:  # spans are written as they end; finalise ends last
        names = {s["name"] for t in (bridge, scheduler, node) for s in of_job(t)}
        return {"publish", "finalise", "run"} <= names

    await eventually(all_written, within=15, what="the job's spans in the three files")
    # All of the job's spans, on every process, are in the client's trace.
    for traced in (bridge, scheduler, node):
        traces = {(s["name"], s["trace_id"]) for s in of_job(traced)}
        assert {t for _, t in traces} == {trace_id}, (traced.name, traces)

    def of_trace(traced: Traced) -> list[dict[str, Any]]:
        return [s for s in traced.span_lines() if s["trace_id"] == trace_id]

    on_bridge, on_scheduler, on_node = of_trace(bridge), of_trace(scheduler), of_trace(node)

    submit = one(on_bridge, "fleetwire.v1.JobService/Submit")
    assert submit["parent_span_id"] == CLIENT_SPAN  # the client's span, continued
    assert submit["kind"] == "SERVER"
    assert submit["attributes"]["fleetwire.job_id"] == job.job_id
    for name in ("validate", "admit", "insert", "publish"):
        assert one(on_bridge, name)["parent_span_id"] == submit["span_id"], name
    publish = one(on_bridge, "publish")
    assert publish["kind"] == "PRODUCER"

    queue_wait = one(on_scheduler, "queue wait")
    dispatch = one(on_scheduler, "dispatch")
    assert queue_wait["parent_span_id"] == publish["span_id"]  # through the AMQP headers
    assert dispatch["parent_span_id"] == publish["span_id"]
    # The wait starts at acceptance (a start time of the past) and ends at the dispatch.
    assert queue_wait["start_unix_nano"] <= publish["end_unix_nano"]
    assert queue_wait["end_unix_nano"] <= dispatch["start_unix_nano"] + 50_000_000
    assert dispatch["attributes"]["fleetwire.node_id"] == NODE_ID
    assert dispatch["attributes"]["fleetwire.ending"] == "succeeded"
    assert "accepted" in [event["name"] for event in dispatch["events"]]

    run = one(on_node, "run")
    assert run["parent_span_id"] == dispatch["span_id"]  # through Dispatch.traceparent
    assert run["attributes"]["fleetwire.outcome"] == "result"
    for name in ("verify", "finalise"):
        assert one(on_scheduler, name)["parent_span_id"] == dispatch["span_id"], name
    assert one(on_scheduler, "finalise")["attributes"]["fleetwire.verdict"] == "finalised"

    # One tree: every span's parent is in the trace, or is the client's.
    every = on_bridge + on_scheduler + on_node
    known = {s["span_id"] for s in every} | {CLIENT_SPAN}
    assert all(s["parent_span_id"] in known for s in every), every
    assert {s["service"] for s in every} == {
        "fleetwire-bridge",
        "fleetwire-scheduler",
        "fleetwire-node",
    }

    # Every log line about the job, on each process, carries its trace id.
    for traced in (bridge, scheduler, node):
        about = [line for line in traced.log_lines() if line.get("job_id") == job.job_id]
        assert about, f"{traced.name} logged nothing about the job"
        assert {line.get("trace_id") for line in about} == {trace_id}, (traced.name, about)


async def test_a_job_without_a_traceparent_gets_a_trace_of_its_own(
    traced_mesh: TracedMesh, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """The bridge starts the trace, the client learns its id, the node's span is in it."""
    job = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job
    assert len(job.trace_id) == 32
    await wait_state(jobs, job.job_id, job_pb2.JOB_STATE_SUCCEEDED)
    node = traced_mesh.processes["node"]

    def run_span() -> list[dict[str, Any]]:
        return [
            s
            for s in node.span_lines()
            if s["name"] == "run" and s["attributes"].get("fleetwire.job_id") == job.job_id
        ]

    (run,) = await eventually(run_span, within=15, what="the node's run span")
    assert run["trace_id"] == job.trace_id
