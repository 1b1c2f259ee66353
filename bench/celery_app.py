"""The Celery side of the comparison: one no-op task on RabbitMQ with a Redis result
backend, configured like a default Celery deployment (persistent messages, early ack,
prefetch multiplier 4). The worker is started by ``bench.run``:

    celery -A bench.celery_app worker --pool prefork --concurrency 2

Names come from ``BENCH_CELERY_NAMESPACE`` (queue and exchange ``<ns>.celery``, Redis keys
``<ns>:celery-task-meta-*``), so a run never touches another's queues or keys.
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

NAMESPACE = os.environ.get("BENCH_CELERY_NAMESPACE", "bench")
BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
RESULT_URL = os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/0")

app = Celery("fleetwire_bench", broker=BROKER_URL, backend=RESULT_URL)
app.conf.update(
    task_default_queue=f"{NAMESPACE}.celery",
    result_backend_transport_options={"global_keyprefix": f"{NAMESPACE}:"},
    result_expires=600,
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(prompt: str, max_tokens: int) -> str:
    """The same no-op the bench runtime does: a fixed short answer."""
    del prompt, max_tokens
    return "fleetwire bench output"
