"""The Celery side of the comparison: one no-op task on RabbitMQ with a Redis result
backend, in two configurations (``PROFILES``):

- ``default`` — a default Celery deployment: persistent messages, ack on receipt
  (before the task runs), prefetch multiplier 4, no publisher confirms. The headline peer.
- ``durable`` — the mesh's durability: ``task_acks_late`` (the message stays unacked until
  the task has run, as the mesh keeps a job's delivery until it is final), so
  ``worker_prefetch_multiplier`` 1 (Celery's advice with late acks: a worker holds no more
  unacked messages than it runs), ``task_reject_on_worker_lost`` (a killed pool process
  leaves its message to be redelivered instead of acked as failed), and publisher confirms
  (``confirm_publish``: ``delay()`` returns once the broker has the message, as ``Submit``
  answers only after the mesh's confirmed publish). Messages are persistent in both.

The worker is started by ``bench.run``:

    celery -A bench.celery_app worker --pool prefork --concurrency 2

Names come from ``BENCH_CELERY_NAMESPACE`` and ``BENCH_CELERY_PROFILE`` (queue and
exchange ``<ns>.celery`` or ``<ns>.celery-durable``, Redis keys ``<ns>:celery-task-meta-*``),
so a run never touches another's queues or keys.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
RESULT_URL = os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/0")
ANSWER = "fleetwire bench output"

PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "durable": {
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_reject_on_worker_lost": True,
        "task_default_delivery_mode": "persistent",
        "broker_transport_options": {"confirm_publish": True},
    },
}


def queue_name(namespace: str, profile: str) -> str:
    return f"{namespace}.celery" if profile == "default" else f"{namespace}.celery-{profile}"


def build_app(namespace: str, profile: str) -> Any:
    """A Celery app of one profile with the ``bench.noop`` task registered on it."""
    app = Celery(f"fleetwire_bench_{profile}", broker=BROKER_URL, backend=RESULT_URL)
    app.conf.update(
        task_default_queue=queue_name(namespace, profile),
        result_backend_transport_options={"global_keyprefix": f"{namespace}:"},
        result_expires=600,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        **PROFILES[profile],
    )

    @app.task(name="bench.noop", shared=False)  # type: ignore[untyped-decorator]
    def noop(prompt: str, max_tokens: int) -> str:
        """The same no-op the bench runtime does: a fixed short answer."""
        del prompt, max_tokens
        return ANSWER

    return app


app = build_app(
    os.environ.get("BENCH_CELERY_NAMESPACE", "bench"),
    os.environ.get("BENCH_CELERY_PROFILE", "default"),
)
