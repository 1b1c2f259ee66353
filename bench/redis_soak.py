"""Redis memory under sustained load: SYNC submitters against a real mesh (scheduler, bridge,
one bench node) for a few minutes, sampling Redis every 10 s. Prints figures; asserts
nothing (docs/operations.md, "Redis memory under load", has the results).

    python -m bench.redis_soak [--minutes 3] [--clients 10] [--retention 60]
                               [--phases before,after] [--sample 10]

Phases, each a mesh of its own (namespace, database, queues, Redis keys, removed at the end):
``before`` keeps finished streams as long as live ones (retention = the 1 h stream TTL, the
behaviour before FLEETWIRE_REDIS_FINISHED_STREAM_RETENTION); ``after`` uses ``--retention``.
Each sample: Redis's ``used_memory`` (the whole server: other users of it add noise), the
number of keys in the namespace, and the jobs finished so far. At the end: the namespace's
keys by pattern and the mean ``MEMORY USAGE`` of its job streams, so the namespace's own
bytes can be told from the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis

from bench.mesh_load import bench_spec
from bench.processes import REDIS_URL, Mesh, cleanup_namespace, wait_for_nodes, wait_for_port
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

OLD_TTL_S = 3600
SLOTS = 16
MIB = 1024 * 1024
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,}")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Sample:
    at_s: float
    used_memory: int
    keys: int
    jobs: int


@dataclass
class Phase:
    name: str
    retention_s: float
    samples: list[Sample] = field(default_factory=list)
    jobs: int = 0
    errors: int = 0
    seconds: float = 0.0
    patterns: Counter[str] = field(default_factory=Counter)
    stream_bytes: float = 0.0

    @property
    def jobs_per_min(self) -> float:
        return self.jobs / self.seconds * 60 if self.seconds else 0.0


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per minute."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 60 if den else 0.0


async def count_keys(redis: aioredis.Redis, namespace: str) -> int:
    return sum([1 async for _ in redis.scan_iter(match=f"{namespace}:*", count=5000)])


async def run_phase(phase: Phase, args: argparse.Namespace) -> None:
    namespace = "s" + secrets.token_hex(4)
    work = Path(tempfile.mkdtemp(prefix=f"fleetwire-soak-{namespace}-"))
    mesh = Mesh(namespace, work)
    mesh.env["FLEETWIRE_REDIS_FINISHED_STREAM_RETENTION"] = str(phase.retention_s)
    redis = aioredis.Redis.from_url(REDIS_URL)
    say(f"{phase.name}: namespace {namespace}, retention {phase.retention_s:g} s, logs in {work}")
    failed = False
    try:
        mesh.start_module("scheduler", "scheduler")
        mesh.start_module("bridge", "broker_bridge")
        await wait_for_port(mesh.scheduler_address)
        await wait_for_port(mesh.bridge_address)
        mesh.start_bench_node("node-1", slots=SLOTS)
        await wait_for_nodes(mesh, {"node-1"})
        await load_and_sample(phase, mesh, redis, namespace, args)
        await census(phase, redis, namespace)
    except BaseException:
        failed = True
        raise
    finally:
        mesh.stop_all()
        await redis.aclose()
        await cleanup_namespace(namespace)
        if not failed:
            shutil.rmtree(work, ignore_errors=True)


async def load_and_sample(
    phase: Phase, mesh: Mesh, redis: aioredis.Redis, namespace: str, args: argparse.Namespace
) -> None:
    duration = args.minutes * 60
    channels = [
        grpc.aio.insecure_channel(mesh.bridge_address, options=CLIENT_OPTIONS)
        for _ in range(max(1, args.clients // 10))
    ]
    stubs = [job_service_pb2_grpc.JobServiceStub(c) for c in channels]
    request = job_service_pb2.SubmitRequest(job=bench_spec())
    started = time.monotonic()
    stop_at = started + duration

    async def client(index: int) -> None:
        stub = stubs[index % len(stubs)]
        while time.monotonic() < stop_at:
            try:
                reply = await stub.Submit(request, timeout=60)
            except grpc.aio.AioRpcError:
                phase.errors += 1
                continue
            if reply.job.state == job_pb2.JOB_STATE_SUCCEEDED:
                phase.jobs += 1
            else:
                phase.errors += 1

    async def sample() -> None:
        info: dict[str, Any] = await redis.info("memory")
        phase.samples.append(
            Sample(
                at_s=time.monotonic() - started,
                used_memory=int(info["used_memory"]),
                keys=await count_keys(redis, namespace),
                jobs=phase.jobs,
            )
        )
        s = phase.samples[-1]
        say(
            f"{phase.name}: t={s.at_s:5.0f} s  jobs={s.jobs:6d}  keys={s.keys:6d}  "
            f"used_memory={s.used_memory / MIB:7.1f} MiB"
        )

    await sample()
    loaders = [asyncio.create_task(client(i)) for i in range(args.clients)]
    try:
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(args.sample, max(0.0, stop_at - time.monotonic())))
            mesh.check_alive()
            await sample()
        await asyncio.gather(*loaders)
    finally:
        for task in loaders:
            task.cancel()
        await asyncio.gather(*loaders, return_exceptions=True)
        for channel in channels:
            await channel.close()
    phase.seconds = duration


async def census(phase: Phase, redis: aioredis.Redis, namespace: str) -> None:
    """The namespace's keys by pattern (ids replaced), and the mean size of its streams."""
    streams: list[bytes] = []
    async for key in redis.scan_iter(match=f"{namespace}:*", count=5000):
        name = key.decode()
        pattern = _ID.sub("<id>", name.replace(namespace, "<ns>", 1))
        phase.patterns[pattern] += 1
        if name.endswith(":events") and len(streams) < 200:
            streams.append(key)
    sizes = [await redis.memory_usage(key, samples=0) for key in streams]
    known = [s for s in sizes if s]
    phase.stream_bytes = statistics.fmean(known) if known else 0.0


def jobs_in_last(phase: Phase, seconds: float) -> int:
    """Jobs finished in the last ``seconds`` of the run (to the nearest sample)."""
    end = phase.samples[-1]
    earlier = [s for s in phase.samples if s.at_s <= end.at_s - seconds] or phase.samples[:1]
    return end.jobs - earlier[-1].jobs


def report(phases: list[Phase]) -> None:
    """Growth per minute over the run (before: every job's stream stays for the hour), and
    what the namespace holds at the end against the jobs of the last retention window
    (after: a finished job's stream stays for the retention only)."""
    print()
    print("Redis under sustained SYNC load (bench node runtime)")
    print(
        f"{'phase':7} {'retention':>9} {'minutes':>7} {'jobs/min':>8} {'errors':>6} "
        f"{'stream B':>8} {'keys max':>8} {'keys end':>8} "
        f"{'used_memory/min':>15} {'namespace/min':>13}"
    )
    for phase in phases:
        if not phase.samples:
            continue
        points = phase.samples
        print(
            f"{phase.name:7} {phase.retention_s:>7g} s {points[-1].at_s / 60:>7.1f} "
            f"{phase.jobs_per_min:>8.0f} {phase.errors:>6} {phase.stream_bytes:>8.0f} "
            f"{max(s.keys for s in points):>8} {points[-1].keys:>8} "
            f"{slope_per_min([(s.at_s, s.used_memory) for s in points]) / MIB:>11.2f} MiB "
            f"{slope_per_min([(s.at_s, s.keys * phase.stream_bytes) for s in points]) / MIB:>9.2f}"
            " MiB"
        )
    for phase in phases:
        if not phase.samples or not phase.jobs_per_min:
            continue
        first, end = phase.samples[0], phase.samples[-1]
        patterns = ", ".join(f"{p} x{n}" for p, n in phase.patterns.most_common())
        print(f"{phase.name}: keys at the end: {patterns or 'none'}")
        if phase.retention_s >= OLD_TTL_S:
            per_1k = 1000 / phase.jobs_per_min
            growth = slope_per_min([(s.at_s, s.used_memory) for s in phase.samples]) * per_1k
            keys = slope_per_min([(s.at_s, s.keys) for s in phase.samples]) * per_1k
            print(
                f"{phase.name}: per 1,000 jobs/min: used_memory +{growth / MIB:.2f} MiB/min, "
                f"+{keys:.0f} keys/min (every finished job's stream stays "
                f"{phase.retention_s / 60:g} min): {growth * phase.retention_s / 60 / MIB:.0f} "
                "MiB once the first streams expire"
            )
            continue
        recent = jobs_in_last(phase, phase.retention_s)
        if not recent:
            continue
        per_1k = 1000 / (recent * 60 / phase.retention_s)  # recent jobs/min -> 1,000
        held = (end.used_memory - first.used_memory) * per_1k
        own = end.keys * phase.stream_bytes * per_1k
        settled = [s for s in phase.samples if s.at_s >= phase.retention_s + 20]
        drift = slope_per_min([(s.at_s, s.keys) for s in settled])
        print(
            f"{phase.name}: {end.keys} keys at the end for {recent} jobs finished in the last "
            f"{phase.retention_s:g} s (ratio {end.keys / recent:.2f}); per 1,000 jobs/min: "
            f"namespace {own / MIB:.1f} MiB, used_memory +{held / MIB:.1f} MiB over the "
            f"start; keys after the first retention: {drift:+.0f}/min at "
            f"{phase.jobs_per_min:.0f} jobs/min"
        )


async def main_async(args: argparse.Namespace) -> None:
    phases = []
    for name in args.phases.split(","):
        retention = OLD_TTL_S if name == "before" else args.retention
        phase = Phase(name, retention)
        await run_phase(phase, args)
        phases.append(phase)
    report(phases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="load per phase")
    parser.add_argument("--clients", type=int, default=10, help="concurrent SYNC submitters")
    parser.add_argument("--retention", type=float, default=60.0, help="seconds, phase after")
    parser.add_argument("--phases", default="before,after", help="before,after or one of them")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
