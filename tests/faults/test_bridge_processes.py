"""Two bridge processes receive the same client request id at the same moment: exactly one
job is created, and every caller gets it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.conftest import free_port
from tests.faults.conftest import _wait_for_port


@pytest.fixture
def bridge_processes(mesh_env: dict[str, str], tmp_path: Path) -> Iterator[list[int]]:
    ports, processes = [], []
    for n in range(2):
        port = free_port()
        env = {**os.environ, **mesh_env, "FLEETWIRE_BRIDGE_PORT": str(port)}
        log = (tmp_path / f"bridge-{n}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "broker_bridge"], env=env, stdout=log, stderr=log
            )
        )
        ports.append(port)
    try:
        for port, process in zip(ports, processes, strict=True):
            _wait_for_port(port, process, 30)
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)


async def test_duplicate_submits_on_two_bridge_processes_make_one_job(
    bridge_processes: list[int], settings: Settings
) -> None:
    request_id = f"two-processes-{uuid.uuid4()}"
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt="once",
        network=job_pb2.NETWORK_TESTNET,  # no node consumes it: the job just waits
        client_request_id=request_id,
        sampling=job_pb2.SamplingParams(max_tokens=3),
    )
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in bridge_processes]
    try:
        stubs = [job_service_pb2_grpc.JobServiceStub(c) for c in channels]
        answers = await asyncio.gather(
            *(
                stub.Submit(job_service_pb2.SubmitRequest(job=spec), timeout=30)
                for stub in stubs * 10
            )
        )
        ids = {answer.job.job_id for answer in answers}
        await stubs[0].Cancel(job_service_pb2.CancelRequest(job_id=next(iter(ids))))
    finally:
        for channel in channels:
            await channel.close()
    assert len(ids) == 1, f"duplicates created {len(ids)} jobs"
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        rows = await conn.fetch("SELECT job_id FROM jobs WHERE client_request_id = $1", request_id)
    finally:
        await conn.close()
    assert [str(r["job_id"]) for r in rows] == list(ids)
