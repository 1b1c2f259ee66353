"""The same load on Dramatiq: ``dramatiq`` with 2 worker processes of 1 worker thread each
(the same two task slots as Celery's prefork worker at concurrency 2) on RabbitMQ, results
on Redis, started as a subprocess and stopped after. Clients are threads (Dramatiq's client
API blocks), each calling ``noop.send(...).get_result(block=True)`` back to back."""

from __future__ import annotations

import os
import sys
from types import ModuleType

from bench import thread_load
from bench.mesh_load import LoadResult
from bench.processes import Mesh

WORKER_PROCESSES = 2
WORKER_THREADS = 1
RESULT_TIMEOUT_MS = 60_000
WORKER_NAME = "dramatiq-worker"


def _env(namespace: str) -> dict[str, str]:
    return {"BENCH_DRAMATIQ_NAMESPACE": namespace}


def start_worker(mesh: Mesh) -> int:
    return mesh.spawn(
        WORKER_NAME,
        [
            sys.executable,
            "-m",
            "dramatiq",
            "bench.dramatiq_app",
            "--processes",
            str(WORKER_PROCESSES),
            "--threads",
            str(WORKER_THREADS),
            "--queues",
            f"{mesh.namespace}.dramatiq",
        ],
        _env(mesh.namespace),
    )


class DramatiqClient:
    """The client side: ``call`` sends a message and blocks until its result is stored."""

    def __init__(self, namespace: str) -> None:
        # The app module reads its names once, at import: one namespace per process.
        os.environ.update(_env(namespace))
        from bench import dramatiq_app

        if namespace != dramatiq_app.NAMESPACE:
            raise RuntimeError(f"bench.dramatiq_app already loaded for {dramatiq_app.NAMESPACE}")
        self._app: ModuleType = dramatiq_app

    def _ask(self, prompt: str, timeout_ms: int) -> bool:
        message = self._app.noop.send(prompt, 4)
        answer = message.get_result(block=True, timeout=timeout_ms)
        return bool(answer == self._app.ANSWER)

    def call(self) -> bool:
        return self._ask("Benchmark prompt", RESULT_TIMEOUT_MS)

    def warm(self) -> bool:
        return self._ask("warm", 5_000)

    def wait_ready(self) -> None:
        thread_load.wait_ready(self.warm)

    def closed_loop(self, *, clients: int, duration: float, warmup: float = 1.0) -> LoadResult:
        return thread_load.closed_loop(self.call, clients=clients, duration=duration, warmup=warmup)

    def sequential(self, *, count: int) -> LoadResult:
        return thread_load.sequential(self.call, self.warm, count=count)
