"""The same load on Celery: a prefork worker (concurrency 2) on RabbitMQ with the Redis
result backend, started as a subprocess and stopped after, in one of the profiles of
``bench/celery_app.py``. Clients are threads (Celery's client API blocks), each calling
``noop.delay(...).get()`` back to back."""

from __future__ import annotations

import sys
from typing import Any

from bench import celery_app, thread_load
from bench.mesh_load import LoadResult
from bench.processes import Mesh

WORKER_CONCURRENCY = 2
RESULT_TIMEOUT_S = 60.0


def worker_name(profile: str) -> str:
    return f"celery-worker-{profile}"


def start_worker(mesh: Mesh, profile: str) -> int:
    return mesh.spawn(
        worker_name(profile),
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
        {"BENCH_CELERY_NAMESPACE": mesh.namespace, "BENCH_CELERY_PROFILE": profile},
    )


class CeleryClient:
    """The client side of one profile: ``call`` submits a job and waits for its result."""

    def __init__(self, namespace: str, profile: str) -> None:
        self._task: Any = celery_app.build_app(namespace, profile).tasks["bench.noop"]

    def call(self) -> bool:
        answer = self._task.delay("Benchmark prompt", 4).get(timeout=RESULT_TIMEOUT_S)
        return bool(answer == celery_app.ANSWER)

    def warm(self) -> bool:
        return bool(self._task.delay("warm", 4).get(timeout=5) == celery_app.ANSWER)

    def wait_ready(self) -> None:
        thread_load.wait_ready(self.warm)

    def closed_loop(self, *, clients: int, duration: float, warmup: float = 1.0) -> LoadResult:
        return thread_load.closed_loop(self.call, clients=clients, duration=duration, warmup=warmup)

    def sequential(self, *, count: int) -> LoadResult:
        return thread_load.sequential(self.call, self.warm, count=count)
