"""The bridge's HTTP gateway against gRPC, on the same mesh in the same run.

A mesh of its own (bridge with its HTTP port, scheduler, one bench node serving
``bench-noop``, whose runtime answers at once; namespace, database and queues of the run,
removed at the end). Each path is warmed up, then measured:

- idle latency, ``--jobs`` jobs one after another (in 4 rounds, the paths in turn): gRPC
  SYNC ``Submit`` (the verified result); ``POST /v1/chat/completions`` non-streamed (the
  signed result); ``POST /v1/jobs`` then ``GET /v1/jobs/{id}`` every ``--poll-ms`` until
  ``done`` (SUCCEEDED);
- throughput, ``--clients`` concurrent clients for ``--duration`` s (after a 1 s warm-up):
  gRPC SYNC Submit against HTTP chat completions, closed loop.

The HTTP client is ``httpx`` (what the openai SDK uses), one keep-alive connection per
client; the gRPC client is ``bench.mesh_load``'s (one channel per 10 clients). Both run in
this process, which shares the machine's cores with the mesh: on 2 cores the client's own
CPU is part of every figure, more for HTTP (JSON, HTTP/1.1 parsing in Python).

    .venv/bin/python -m bench.http_gateway                  # prints the table
    .venv/bin/python -m bench.http_gateway --out http-gateway.json

It prints; it asserts nothing. Besides the latencies and rates: the CPU ms per job of the
bridge process and of this client during each load run, and what HTTP answered that was
not a result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.mesh_load import LoadResult, closed_loop, percentile, sequential
from bench.processes import (
    BENCH_MODEL,
    Mesh,
    cleanup_namespace,
    cpu_seconds,
    free_port,
    wait_for_nodes,
    wait_for_port,
)

PROCESSES = ("scheduler", "bridge")
SLOTS = 16  # as bench/run.py's nodes
WARMUP_JOBS = 10  # before each round of each path
ROUNDS = 4
HTTP_TIMEOUT_S = 60.0
PROMPT = "Benchmark prompt"  # bench_spec's
SAMPLING = {"max_tokens": 4, "temperature": 0}
CHAT_BODY = {
    "model": BENCH_MODEL,
    "messages": [{"role": "user", "content": PROMPT}],
    **SAMPLING,
}
JOB_BODY = {"model": BENCH_MODEL, "prompt": PROMPT, "sampling": SAMPLING}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Gateway:
    """The HTTP side of the mesh: its base URL and how often a poller asks."""

    base: str
    poll_s: float


async def chat_once(client: httpx.AsyncClient, refused: Counter[str] | None = None) -> bool:
    """One non-streamed chat completion; True when it is the signed result (else the
    status and error code are counted in ``refused``)."""
    reply = await client.post("/v1/chat/completions", json=CHAT_BODY)
    if reply.status_code == 200 and reply.json()["fleetwire"]["signature"]:
        return True
    if refused is not None:
        code = reply.json().get("error", {}).get("code", "") if reply.content else ""
        refused[f"{reply.status_code} {code}"] += 1
    return False


async def job_once(client: httpx.AsyncClient, gateway: Gateway) -> bool:
    """``POST /v1/jobs``, then ``GET`` its ``Location`` until done; True when SUCCEEDED
    and signed."""
    accepted = await client.post("/v1/jobs", json=JOB_BODY)
    if accepted.status_code != 202:
        return False
    location = accepted.headers["location"]
    while True:
        view = (await client.get(location)).json()
        if view["done"]:
            return bool(view["state"] == "SUCCEEDED" and view["signature"])
        await asyncio.sleep(gateway.poll_s)


async def http_sequential(gateway: Gateway, *, count: int, jobs_api: bool) -> LoadResult:
    """As ``mesh_load.sequential``, over HTTP: chat completions, or the 202 flow."""
    result = LoadResult()
    async with httpx.AsyncClient(base_url=gateway.base, timeout=HTTP_TIMEOUT_S) as client:

        async def once() -> bool:
            return await (job_once(client, gateway) if jobs_api else chat_once(client))

        for _ in range(WARMUP_JOBS):
            await once()
        started = time.perf_counter()
        for _ in range(count):
            began = time.perf_counter()
            if await once():
                result.jobs += 1
                result.completed += 1
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
            else:
                result.errors += 1
        result.seconds = time.perf_counter() - started
    return result


async def http_closed_loop(
    gateway: Gateway,
    *,
    clients: int,
    duration: float,
    refused: Counter[str],
    warmup: float = 1.0,
) -> LoadResult:
    """As ``mesh_load.closed_loop``, with chat completions: ``clients`` callers back to back,
    the jobs completed in the ``duration`` after ``warmup``; what was not a result is
    counted in ``refused`` (status and error code, or the exception's name)."""
    result = LoadResult()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=gateway.base, timeout=HTTP_TIMEOUT_S, limits=limits
    ) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def caller() -> None:
            while time.perf_counter() < stop_at:
                began = time.perf_counter()
                try:
                    ok = await chat_once(client, refused)
                except httpx.HTTPError as err:
                    refused[type(err).__name__] += 1
                    ok = False
                ended = time.perf_counter()
                result.completed += ok
                if began >= measure_from and ended <= stop_at:
                    if ok:
                        result.jobs += 1
                        result.latencies_ms.append((ended - began) * 1000)
                    else:
                        result.errors += 1

        await asyncio.gather(*(caller() for _ in range(clients)))
    result.seconds = duration
    return result


async def idle_rounds(
    mesh: Mesh, gateway: Gateway, jobs: int
) -> tuple[LoadResult, LoadResult, LoadResult]:
    """The three idle paths in ``ROUNDS`` rounds each (``jobs`` in all per path), in turn,
    so that a drift of the machine's load spreads over all three alike."""
    results = (LoadResult(), LoadResult(), LoadResult())
    for _ in range(ROUNDS):
        count = jobs // ROUNDS
        rounds = (
            await sequential(mesh.bridge_address, count=count, warmup=WARMUP_JOBS),
            await http_sequential(gateway, count=count, jobs_api=False),
            await http_sequential(gateway, count=count, jobs_api=True),
        )
        for total, part in zip(results, rounds, strict=True):
            total.jobs += part.jobs
            total.errors += part.errors
            total.completed += part.completed
            total.seconds += part.seconds
            total.latencies_ms += part.latencies_ms
    return results


async def wait_for_http(base: str, within: float = 60.0) -> None:
    """Until the bridge's HTTP port answers its OpenAPI document."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=base, timeout=2.0) as client:
        while True:
            try:
                if (await client.get("/openapi.json")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bridge's HTTP port {base} did not answer")
            await asyncio.sleep(0.2)


async def with_cpu(mesh: Mesh, work: Awaitable[T]) -> tuple[T, float, float]:
    """``work``'s result, the CPU seconds the bridge and this process spent during it."""
    bridge, client = cpu_seconds(mesh.pid("bridge")), time.process_time()
    result = await work
    return result, cpu_seconds(mesh.pid("bridge")) - bridge, time.process_time() - client


def cpu_per_job(result: LoadResult, bridge_s: float, client_s: float) -> dict[str, float]:
    """CPU ms per completed job (warm-up and tail included, as ``completed`` counts)."""
    jobs = max(1, result.completed)
    return {
        "bridge_cpu_ms_per_job": round(bridge_s * 1000 / jobs, 2),
        "client_cpu_ms_per_job": round(client_s * 1000 / jobs, 2),
    }


def latency(result: LoadResult) -> dict[str, Any]:
    return {
        "jobs": result.jobs,
        "errors": result.errors,
        "p50_ms": round(percentile(result.latencies_ms, 50), 2),
        "p99_ms": round(percentile(result.latencies_ms, 99), 2),
    }


async def measure(
    *, jobs: int, clients: int, duration: float, poll_ms: float, work: Path
) -> dict[str, Any]:
    namespace = "h" + secrets.token_hex(4)
    mesh = Mesh(namespace, work)
    http_port = free_port()
    mesh.env["FLEETWIRE_BRIDGE_HTTP_PORT"] = str(http_port)
    gateway = Gateway(f"http://127.0.0.1:{http_port}", poll_ms / 1000)
    try:
        for name in PROCESSES:
            mesh.start_module(name, name if name != "bridge" else "broker_bridge")
        await wait_for_port(mesh.scheduler_address)
        await wait_for_port(mesh.bridge_address)
        await wait_for_http(gateway.base)
        mesh.start_bench_node("node-1", slots=SLOTS)
        await wait_for_nodes(mesh, {"node-1"})
        grpc_idle, chat_idle, jobs_idle = await idle_rounds(mesh, gateway, jobs)
        grpc_load, grpc_bridge, grpc_client = await with_cpu(
            mesh, closed_loop(mesh.bridge_address, clients=clients, duration=duration)
        )
        refused: Counter[str] = Counter()
        chat_load, chat_bridge, chat_client = await with_cpu(
            mesh,
            http_closed_loop(gateway, clients=clients, duration=duration, refused=refused),
        )
        mesh.check_alive()
    finally:
        mesh.stop_all()
        await cleanup_namespace(namespace)
    idle = {
        "grpc_submit": latency(grpc_idle),
        "http_chat_completions": latency(chat_idle),
        "http_jobs_poll": latency(jobs_idle),
    }
    base = idle["grpc_submit"]
    for row in idle.values():
        row["added_p50_ms"] = round(row["p50_ms"] - base["p50_ms"], 2)
        row["added_p99_ms"] = round(row["p99_ms"] - base["p99_ms"], 2)
    load: dict[str, dict[str, Any]] = {
        "grpc_submit": grpc_load.summary() | cpu_per_job(grpc_load, grpc_bridge, grpc_client),
        "http_chat_completions": chat_load.summary()
        | cpu_per_job(chat_load, chat_bridge, chat_client)
        | {"refused": dict(refused)},
    }
    load["http_chat_completions"]["ratio_to_grpc"] = round(
        chat_load.per_s / grpc_load.per_s if grpc_load.per_s else 0.0, 3
    )
    return {
        "model": BENCH_MODEL,
        "jobs": jobs,
        "clients": clients,
        "duration_s": duration,
        "poll_ms": poll_ms,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "idle": idle,
        "throughput": load,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"idle: {report['jobs']} sequential jobs each; poll every {report['poll_ms']} ms; "
        f"load average after {report['load_average']}"
    )
    print(f"{'path':<34} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'err':>4}")
    names = {
        "grpc_submit": "gRPC SYNC Submit",
        "http_chat_completions": "HTTP POST /v1/chat/completions",
        "http_jobs_poll": "HTTP POST /v1/jobs + GET polling",
    }
    for key, row in report["idle"].items():
        print(
            f"{names[key]:<34} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{row['added_p50_ms']:>8.2f} {row['added_p99_ms']:>8.2f} {row['errors']:>4}"
        )
    print(
        f"throughput: {report['clients']} concurrent clients, {report['duration_s']} s "
        "(after 1 s warm-up)"
    )
    print(
        f"{'path':<34} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'err':>4} "
        f"{'bridge CPU ms/job':>18} {'client CPU ms/job':>18}"
    )
    for key, row in report["throughput"].items():
        ratio = row.get("ratio_to_grpc", 1.0)
        print(
            f"{names[key]:<34} {row['jobs_per_s']:>8.1f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {ratio:>6.3f} {row['errors']:>4} "
            f"{row['bridge_cpu_ms_per_job']:>18.2f} {row['client_cpu_ms_per_job']:>18.2f}"
        )
    refused = report["throughput"]["http_chat_completions"]["refused"]
    if refused:
        print(f"HTTP answers that were not a result: {refused}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="sequential jobs per path")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="GET interval of the 202 flow")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleetwire-http-gateway-"))
    report = asyncio.run(
        measure(
            jobs=args.jobs,
            clients=args.clients,
            duration=args.duration,
            poll_ms=args.poll_ms,
            work=work,
        )
    )
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
