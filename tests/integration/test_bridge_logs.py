"""The bridge process logs JSON lines (FLEETWIRE_LOG_JSON) carrying the call's W3C trace id
(the caller's traceparent continued), the caller's request id and the tenant on every line
of a call."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import grpc

from fleetwire.v1 import job_service_pb2, job_service_pb2_grpc
from tests.conftest import free_port
from tests.integration.bridge_kit import spec


async def test_json_logs_carry_the_trace_id(mesh_env: dict[str, str]) -> None:
    port = free_port()
    env = {**os.environ, **mesh_env, "FLEETWIRE_BRIDGE_PORT": str(port), "FLEETWIRE_LOG_JSON": "1"}
    env["FLEETWIRE_LOG_LEVEL"] = "DEBUG"  # "job accepted" is a DEBUG line (per job)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "broker_bridge",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    trace_id, request_id = uuid.uuid4().hex, f"request-{uuid.uuid4().hex}"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            jobs = job_service_pb2_grpc.JobServiceStub(channel)
            job = (
                await jobs.Submit(
                    job_service_pb2.SubmitRequest(job=spec()),
                    metadata=(
                        ("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"),
                        ("x-request-id", request_id),
                    ),
                )
            ).job
            await jobs.Cancel(job_service_pb2.CancelRequest(job_id=job.job_id))
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    accepted = [line for line in lines if line.get("event") == "job accepted"]
    assert accepted, stderr.decode()[-2000:]
    assert accepted[0]["trace_id"] == trace_id
    assert job.trace_id == trace_id
    assert accepted[0]["request_id"] == request_id
    assert accepted[0]["tenant"] == "anonymous"
    assert accepted[0]["job_id"] == job.job_id
    assert accepted[0]["process"] == "bridge"
