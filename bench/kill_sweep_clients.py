"""The kill sweep's clients (``bench/kill_sweep.py``): 300 single submits and 3 batches of
100 among them, 20 calls in flight, each retried with its request id until answered, and a
record of what they were told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc

from bench.mesh_load import bench_spec
from broker_bridge.service import JOB_ID_METADATA
from fleetwire.messaging.topology import HEADER_REQUEST_ID
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

SINGLE_SUBMITS = 300
BATCHES = 3
BATCH_SIZE = 100
CONCURRENCY = 20
SUBMIT_TIMEOUT_S = 5.0
BATCH_TIMEOUT_S = 10.0
RETRY_PAUSE_S = 0.05

RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,  # the connection died under the call
)

# The client reconnects within 50-200 ms of the server being back.
SWEEP_CLIENT_OPTIONS = [
    *CLIENT_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 200),
]


@dataclass
class Told:
    """What the clients were told, and how long it took."""

    jobs: dict[str, list[str]] = field(default_factory=dict)  # request id -> job ids
    seconds: dict[str, float] = field(default_factory=dict)  # request id -> first try to answer
    refused: dict[str, int] = field(default_factory=dict)  # retried calls by code
    failed: dict[str, str] = field(default_factory=dict)  # request id -> non-retryable error
    distinct: set[str] = field(default_factory=set)
    retried: set[str] = field(default_factory=set)  # request ids that needed more than one try
    tries: dict[str, list[str]] = field(default_factory=dict)  # request id -> each try, UTC
    answers: int = 0  # calls answered so far
    timed_out: set[str] = field(default_factory=set)  # requests with a try past its deadline


def spec(request_id: str = "", *, mode: int = job_pb2.INFERENCE_MODE_POLLING) -> job_pb2.JobSpec:
    job = bench_spec(mode=mode)
    job.client_request_id = request_id
    return job


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


async def until_answered(
    call: Callable[[tuple[tuple[str, str], ...]], Awaitable[Any]], told: Told, request_id: str
) -> Any | None:
    """Calls ``call`` until it answers, as a retrying client does (same request id);
    None after a non-retryable error (recorded). Each try carries ``x-request-id``
    ``<request id>.<try>``, so the bridge's log lines of a try can be found (their
    ``request_id``)."""
    started = time.monotonic()
    tries = told.tries.setdefault(request_id, [])
    while True:
        began, answers_before = utc_now(), told.answers
        try:
            reply = await call(((HEADER_REQUEST_ID, f"{request_id}.{len(tries) + 1}"),))
        except grpc.aio.AioRpcError as err:
            headers = dict(err.initial_metadata() or ())
            tries.append(
                f"{began} -> {utc_now()} {err.code().name} (job id header "
                f"{'received' if JOB_ID_METADATA in headers else 'not received'}; "
                f"{told.answers - answers_before} other answers meanwhile)"
            )
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                told.timed_out.add(request_id)
            if err.code() not in RETRYABLE:
                told.failed[request_id] = f"{err.code().name}: {err.details()}"
                return None
            told.refused[err.code().name] = told.refused.get(err.code().name, 0) + 1
            told.retried.add(request_id)
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        told.answers += 1
        tries.append(f"{began} -> {utc_now()} OK")
        told.seconds[request_id] = time.monotonic() - started
        return reply


async def submit_all(address: str, told: Told, run_tag: str) -> None:
    """300 single submits and 3 batches of 100 among them, 20 in flight."""
    async with grpc.aio.insecure_channel(address, options=SWEEP_CLIENT_OPTIONS) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def single(n: int) -> None:
            request_id = f"sweep-{run_tag}-{n}"
            request = job_service_pb2.SubmitRequest(job=spec(request_id))
            async with gate:
                reply = await until_answered(
                    lambda md: stub.Submit(request, timeout=SUBMIT_TIMEOUT_S, metadata=md),
                    told,
                    request_id,
                )
            if reply is not None:
                told.jobs[request_id] = [reply.job.job_id]
                told.distinct.add(reply.job.job_id)

        async def batch(n: int) -> None:
            request_id = f"sweep-{run_tag}-batch-{n}"
            request = job_service_pb2.SubmitBatchRequest(
                jobs=[spec(mode=job_pb2.INFERENCE_MODE_BATCH) for _ in range(BATCH_SIZE)],
                client_request_id=request_id,
            )
            async with gate:
                reply = await until_answered(
                    lambda md: stub.SubmitBatch(request, timeout=BATCH_TIMEOUT_S, metadata=md),
                    told,
                    request_id,
                )
            if reply is not None:
                told.jobs[request_id] = list(reply.batch.job_ids)
                told.distinct.update(reply.batch.job_ids)

        calls: list[Awaitable[None]] = [single(n) for n in range(SINGLE_SUBMITS)]
        for n in range(BATCHES):  # batches among the singles, not all at the start
            calls.insert((n + 1) * SINGLE_SUBMITS // (BATCHES + 1) + n, batch(n))
        await asyncio.gather(*calls)
