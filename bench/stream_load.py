"""Streamed submits: the 50-client load through ``JobService.SubmitStream`` (jobs sent and
answered by reference on long-lived streams instead of one ``Submit`` call per job). Until
the generated stub has the RPC, ``bench.run`` prints the row as not measured.

The same contract as ``bench.mesh_load.closed_loop``: ``clients`` jobs in flight at any
time, for ``duration`` seconds after ``warmup``; a job counts only when its answer is the
job SUCCEEDED (mode SYNC) with the result signature the scheduler verified; ``completed``
counts every such job of the run, warm-up included (the divisor of the CPU and counter
figures). The clients are grouped ``CLIENTS_PER_STREAM`` to a stream, one stream per
channel (the unary load's ``CLIENTS_PER_CHANNEL``): 50 clients are 5 streams of 10 jobs in
flight each, so the jobs in flight are the same as the unary load's and Celery's 50.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from bench.mesh_load import SUBMIT_TIMEOUT_S, LoadResult, bench_spec
from bench.processes import open_channel
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

UNAVAILABLE = "not measured (SubmitStream not available)"
CLIENTS_PER_STREAM = 10


def submit_stream_available() -> bool:
    """Whether the generated ``JobServiceStub`` has ``SubmitStream`` (a stub's methods are
    attributes of an instance, set in its ``__init__``; the channel is never dialled)."""
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        return hasattr(job_service_pb2_grpc.JobServiceStub(channel), "SubmitStream")


def _verified(reply: job_service_pb2.SubmitStreamResponse) -> bool:
    job = reply.accepted.job
    return (
        reply.WhichOneof("outcome") == "accepted"
        and job.state == job_pb2.JOB_STATE_SUCCEEDED
        and bool(job.signature.signature)
    )


async def streamed_closed_loop(
    address: str,
    *,
    clients: int,
    duration: float,
    warmup: float = 1.0,
    ca_file: Path | None = None,
) -> LoadResult:
    """``clients`` SYNC jobs kept in flight on SubmitStream streams of
    ``CLIENTS_PER_STREAM``; see the module for what counts."""
    widths = [CLIENTS_PER_STREAM] * (clients // CLIENTS_PER_STREAM)
    if clients % CLIENTS_PER_STREAM:
        widths.append(clients % CLIENTS_PER_STREAM)
    result = LoadResult()
    request = job_service_pb2.SubmitRequest(job=bench_spec())
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def one_stream(width: int) -> None:
        async with open_channel(address, ca_file) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            call = stub.SubmitStream(timeout=warmup + duration + SUBMIT_TIMEOUT_S)
            sent: dict[int, float] = {}
            next_ref = 0

            async def send() -> None:
                nonlocal next_ref
                next_ref += 1
                sent[next_ref] = time.perf_counter()
                await call.write(job_service_pb2.SubmitStreamRequest(ref=next_ref, submit=request))

            try:
                for _ in range(width):
                    await send()
                while sent:
                    reply = await call.read()
                    if reply is grpc.aio.EOF:
                        break
                    began = sent.pop(reply.ref)
                    ended = time.perf_counter()
                    ok = _verified(reply)
                    result.completed += ok
                    if began >= measure_from and ended <= stop_at:
                        if ok:
                            result.jobs += 1
                            result.latencies_ms.append((ended - began) * 1000)
                        else:
                            result.errors += 1
                    if ended < stop_at:
                        await send()
                await call.done_writing()
            except grpc.aio.AioRpcError:
                result.errors += len(sent)
            finally:
                call.cancel()

    await asyncio.gather(*(one_stream(width) for width in widths))
    result.seconds = duration
    return result
