"""Load on the mesh through its public API (grpc.aio): closed-loop clients, single jobs on
an idle mesh, batches, and real-model token streams. A job counts only when Submit (mode
SYNC) returned it SUCCEEDED with a result signature the scheduler verified."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.processes import BENCH_MODEL, open_channel
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

SUBMIT_TIMEOUT_S = 60.0
CLIENTS_PER_CHANNEL = 10


def bench_spec(
    *,
    model: str = BENCH_MODEL,
    max_tokens: int = 4,
    mode: int = job_pb2.INFERENCE_MODE_SYNC,
    ignore_eos: bool = False,
) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model=model,
        prompt="Benchmark prompt",
        sampling=job_pb2.SamplingParams(
            max_tokens=max_tokens, temperature=0.0, ignore_eos=ignore_eos
        ),
        mode=mode,  # type: ignore[arg-type]
        priority=job_pb2.PRIORITY_CLASS_NORMAL,
        network=job_pb2.NETWORK_MAINNET,
    )


def job_body(spec: job_pb2.JobSpec) -> bytes:
    """What the bridge publishes for ``spec`` (the raw benchmark's payload)."""
    envelope = job_pb2.Job(job_id="00000000-0000-4000-8000-000000000000", spec=spec)
    envelope.expires_at.GetCurrentTime()
    return bytes(envelope.SerializeToString())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class LoadResult:
    """Jobs (and their latencies) completed inside the measured window; ``completed``
    counts every successful job of the run, warm-up and tail included: the divisor of
    per-job costs read over the whole run (CPU, the backing services' counters)."""

    jobs: int = 0
    errors: int = 0
    completed: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "jobs": self.jobs,
            "errors": self.errors,
            "completed": self.completed,
            "seconds": round(self.seconds, 2),
            "jobs_per_s": round(self.per_s, 1),
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
        }


def _verified(job: job_pb2.Job) -> bool:
    return job.state == job_pb2.JOB_STATE_SUCCEEDED and bool(job.signature.signature)


async def _submit(stub: job_service_pb2_grpc.JobServiceStub, spec: job_pb2.JobSpec) -> bool:
    reply = await stub.Submit(job_service_pb2.SubmitRequest(job=spec), timeout=SUBMIT_TIMEOUT_S)
    return _verified(reply.job)


async def closed_loop(
    address: str,
    *,
    clients: int,
    duration: float,
    warmup: float = 1.0,
    ca_file: Path | None = None,
) -> LoadResult:
    """``clients`` concurrent callers, each submitting SYNC jobs back to back; counts the
    jobs completed in the ``duration`` after ``warmup`` (over TLS with ``ca_file``)."""
    channels = [
        open_channel(address, ca_file) for _ in range(max(1, clients // CLIENTS_PER_CHANNEL))
    ]
    stubs = [job_service_pb2_grpc.JobServiceStub(c) for c in channels]
    spec = bench_spec()
    result = LoadResult()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def client(index: int) -> None:
        stub = stubs[index % len(stubs)]
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                ok = await _submit(stub, spec)
            except grpc.aio.AioRpcError:
                ok = False
            ended = time.perf_counter()
            result.completed += ok
            if began >= measure_from and ended <= stop_at:
                if ok:
                    result.jobs += 1
                    result.latencies_ms.append((ended - began) * 1000)
                else:
                    result.errors += 1

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        for channel in channels:
            await channel.close()
    result.seconds = duration
    return result


async def sequential(
    address: str, *, count: int, warmup: int = 20, ca_file: Path | None = None
) -> LoadResult:
    """One job at a time on an idle mesh: submit → verified result, ``count`` times."""
    result = LoadResult()
    async with open_channel(address, ca_file) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        spec = bench_spec()
        for _ in range(warmup):
            await _submit(stub, spec)
        started = time.perf_counter()
        for _ in range(count):
            began = time.perf_counter()
            ok = await _submit(stub, spec)
            if ok:
                result.jobs += 1
                result.completed += 1
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
            else:
                result.errors += 1
        result.seconds = time.perf_counter() - started
    return result


async def batches(
    address: str, *, total: int, batch_size: int = 100, submitters: int = 4
) -> LoadResult:
    """``total`` jobs in SubmitBatch calls of ``batch_size`` from ``submitters`` concurrent
    callers; jobs/s from the first submit until BatchStatus shows every batch done."""
    result = LoadResult()
    spec = bench_spec(mode=job_pb2.INFERENCE_MODE_BATCH)
    request = job_service_pb2.SubmitBatchRequest(jobs=[spec] * batch_size)
    async with grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        started = time.perf_counter()
        batch_ids: list[str] = []
        todo = total // batch_size

        async def submitter() -> None:
            nonlocal todo
            while todo > 0:
                todo -= 1
                reply = await stub.SubmitBatch(request, timeout=SUBMIT_TIMEOUT_S)
                batch_ids.append(reply.batch.batch_id)

        await asyncio.gather(*(submitter() for _ in range(submitters)))
        submitted = time.perf_counter()
        pending = set(batch_ids)
        deadline = time.monotonic() + 300
        while pending and time.monotonic() < deadline:
            for batch_id in list(pending):
                reply = await stub.BatchStatus(
                    job_service_pb2.BatchStatusRequest(batch_id=batch_id), timeout=10
                )
                if reply.batch.done:
                    pending.discard(batch_id)
                    result.jobs += reply.batch.succeeded
                    result.completed += reply.batch.succeeded
                    result.errors += reply.batch.total - reply.batch.succeeded
            if pending:
                await asyncio.sleep(0.05)
        result.seconds = time.perf_counter() - started
        result.latencies_ms.append((submitted - started) * 1000)  # time to submit them all
    return result


async def token_streams(
    address: str, *, streams: int, tokens: int, runs: int
) -> dict[str, float | list[float]]:
    """``streams`` concurrent real-model jobs of exactly ``tokens`` tokens, ``runs`` times;
    tokens/s of all streams together, submit to the last verified result."""
    rates: list[float] = []
    async with grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        spec = bench_spec(model="tiny-llama", max_tokens=tokens, ignore_eos=True)
        warm = bench_spec(model="tiny-llama", max_tokens=32, ignore_eos=True)
        for _ in range(3):
            await _submit(stub, warm)
        # One untimed run of the measured shape, as bench/node_tokens.py does before its
        # concurrent runs: the engine's first batch of long sequences is slower.
        await asyncio.gather(*(_submit(stub, spec) for _ in range(streams)))
        for _ in range(runs):
            started = time.perf_counter()
            replies = await asyncio.gather(
                *(
                    stub.Submit(job_service_pb2.SubmitRequest(job=spec), timeout=120)
                    for _ in range(streams)
                )
            )
            wall = time.perf_counter() - started
            assert all(_verified(r.job) for r in replies), [r.job.state for r in replies]
            produced = sum(r.job.usage.completion_tokens for r in replies)
            rates.append(produced / wall)
    return {"tokens_per_s_median": round(statistics.median(rates)), "runs": rates}
