"""Load from client threads for the peers whose client API blocks (Celery, Dramatiq): the
same closed loop and sequential run as ``bench/mesh_load.py`` drives through grpc.aio,
around one blocking call that submits a job and waits for its result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.mesh_load import LoadResult

Call = Callable[[], bool]
"""Submits one job, waits for its result, and says whether it was the expected one."""


def closed_loop(call: Call, *, clients: int, duration: float, warmup: float = 1.0) -> LoadResult:
    """``clients`` threads calling ``call`` back to back; counts the jobs completed in the
    ``duration`` after ``warmup`` (``completed`` counts every successful call)."""
    result = LoadResult()
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    def client() -> None:
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                ok = call()
            except Exception:
                ok = False
            ended = time.perf_counter()
            with lock:
                result.completed += ok
                if began >= measure_from and ended <= stop_at:
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


def sequential(call: Call, warm: Call, *, count: int, warmup: int = 20) -> LoadResult:
    """One job at a time: ``warmup`` untimed calls of ``warm``, then ``count`` of ``call``."""
    result = LoadResult()
    for _ in range(warmup):
        warm()
    started = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        if call():
            result.jobs += 1
            result.completed += 1
            result.latencies_ms.append((time.perf_counter() - began) * 1000)
        else:
            result.errors += 1
    result.seconds = time.perf_counter() - started
    return result


def wait_ready(warm: Call, timeout: float = 60.0) -> None:
    """Returns once ``warm`` succeeds (the worker is consuming); raises after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if warm():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"no worker answered within {timeout} s")
