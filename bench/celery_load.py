"""The same load on Celery: a prefork worker (concurrency 2) on RabbitMQ with the Redis
result backend, started as a subprocess and stopped after. Clients are threads (Celery's
client API blocks), each calling ``noop.delay(...).get()`` back to back."""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench.mesh_load import LoadResult
from bench.processes import Mesh

WORKER_CONCURRENCY = 2
RESULT_TIMEOUT_S = 60.0


def celery_env(namespace: str) -> dict[str, str]:
    return {"BENCH_CELERY_NAMESPACE": namespace}


def start_worker(mesh: Mesh) -> int:
    return mesh.spawn(
        "celery-worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        celery_env(mesh.namespace),
    )


def _app_for(namespace: str):  # type: ignore[no-untyped-def]
    os.environ.update(celery_env(namespace))
    from bench import celery_app

    return celery_app


def wait_ready(namespace: str, timeout: float = 60.0) -> None:
    module = _app_for(namespace)
    deadline = time.monotonic() + timeout
    while True:
        try:
            module.noop.delay("warm", 4).get(timeout=5)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise


def closed_loop(
    namespace: str, *, clients: int, duration: float, warmup: float = 1.0
) -> LoadResult:
    module = _app_for(namespace)
    result = LoadResult()
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    def client() -> None:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                ok = module.noop.delay("Benchmark prompt", 4).get(timeout=RESULT_TIMEOUT_S) == (
                    "fleetwire bench output"
                )
            except Exception:
                ok = False
            ended = time.perf_counter()
            if began >= measure_from and ended <= stop_at:
                with lock:
                    if ok:
                        result.jobs += 1
                        result.latencies_ms.append((ended - began) * 1000)
                    else:
                        result.errors += 1

    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    result.seconds = duration
    return result


def sequential(namespace: str, *, count: int, warmup: int = 20) -> LoadResult:
    module = _app_for(namespace)
    result = LoadResult()
    for _ in range(warmup):
        module.noop.delay("warm", 4).get(timeout=RESULT_TIMEOUT_S)
    started = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        module.noop.delay("Benchmark prompt", 4).get(timeout=RESULT_TIMEOUT_S)
        result.jobs += 1
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
    result.seconds = time.perf_counter() - started
    return result
