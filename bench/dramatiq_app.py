"""The Dramatiq side of the comparison: one no-op actor on the same RabbitMQ
(``RabbitmqBroker``, Dramatiq's defaults: persistent messages, a message acked only after
its actor has run, no publisher confirms) with its ``Results`` middleware on Redis, so a
client waits for the answer (``message.get_result(block=True)``) as a SYNC ``Submit``
does. The worker is started by ``bench.run``:

    dramatiq bench.dramatiq_app --processes 2 --threads 1 --queues <ns>.dramatiq

Names come from ``BENCH_DRAMATIQ_NAMESPACE``: queue ``<ns>.dramatiq`` (and Dramatiq's own
``.DQ``/``.XQ`` beside it), result keys ``<ns>:dramatiq-results:*``, so a run never
touches another's queues or keys.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

NAMESPACE = os.environ.get("BENCH_DRAMATIQ_NAMESPACE", "bench")
BROKER_URL = os.environ.get("BENCH_DRAMATIQ_BROKER", "amqp://guest:guest@127.0.0.1:5672/%2F")
RESULT_URL = os.environ.get("BENCH_DRAMATIQ_BACKEND", "redis://127.0.0.1:6379/0")
QUEUE = f"{NAMESPACE}.dramatiq"
ANSWER = "fleetwire bench output"

broker = RabbitmqBroker(url=BROKER_URL)
broker.add_middleware(
    Results(  # type: ignore[no-untyped-call]
        backend=RedisBackend(  # type: ignore[no-untyped-call]
            url=RESULT_URL,
            namespace=f"{NAMESPACE}:dramatiq-results",
            use_namespace_prefix_keys=True,
        ),
        result_ttl=600_000,
    )
)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name=QUEUE, store_results=True)
def noop(prompt: str, max_tokens: int) -> str:
    """The same no-op the bench runtime does: a fixed short answer."""
    del prompt, max_tokens
    return ANSWER
