"""The raw limit: what aiormq and RabbitMQ do alone on this machine with the mesh's message
shape — persistent, priority queue (``x-max-priority`` 10), mandatory, publisher confirms,
consumed with manual ack — and a body the size of a serialized job."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiormq
import aiormq.abc

from bench.processes import RABBITMQ_URL

CONSUMER_PREFETCH = 100


@dataclass(frozen=True)
class RawResult:
    publish_each_per_s: float
    publish_window_per_s: float
    consume_per_s: float
    pipeline_each_per_s: float
    pipeline_window_per_s: float
    window: int
    payload_bytes: int

    @property
    def limit_per_s(self) -> float:
        """Confirmed publish + acked consume together, the best of the two publish modes."""
        return max(self.pipeline_each_per_s, self.pipeline_window_per_s)


def _properties() -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(
        content_type="application/x-protobuf", delivery_mode=2, priority=5, expiration="600000"
    )


async def _publish(
    channel: aiormq.abc.AbstractChannel, queue: str, body: bytes, count: int, window: int
) -> float:
    """Publishes ``count`` messages with at most ``window`` unconfirmed; returns seconds."""
    gate = asyncio.Semaphore(window)
    props = _properties()

    async def one() -> None:
        async with gate:
            confirm = await channel.basic_publish(
                body, routing_key=queue, mandatory=True, properties=props
            )
            assert isinstance(confirm, aiormq.spec.Basic.Ack), confirm

    started = time.perf_counter()
    if window == 1:
        for _ in range(count):
            await one()
    else:
        await asyncio.gather(*(one() for _ in range(count)))
    return time.perf_counter() - started


async def _consume(channel: aiormq.abc.AbstractChannel, queue: str, count: int) -> float:
    """Consumes ``count`` messages with manual ack; returns seconds from the first
    ``basic_consume`` to the last ack."""
    done = asyncio.Event()
    seen = 0

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        nonlocal seen
        assert message.delivery_tag is not None
        await message.channel.basic_ack(message.delivery_tag)
        seen += 1
        if seen >= count:
            done.set()

    await channel.basic_qos(prefetch_count=CONSUMER_PREFETCH)
    started = time.perf_counter()
    ok = await channel.basic_consume(queue, on_message)
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - started
    await channel.basic_cancel(ok.consumer_tag or "")
    return elapsed


async def measure_raw(
    namespace: str, body: bytes, *, each: int = 2000, windowed: int = 10000, window: int = 1000
) -> RawResult:
    queue = f"{namespace}.raw"
    connection = await aiormq.connect(RABBITMQ_URL)
    try:
        publisher = await connection.channel(publisher_confirms=True)
        consumer_conn = await aiormq.connect(RABBITMQ_URL)
        try:
            consumer = await consumer_conn.channel()
            await publisher.queue_declare(queue, durable=True, arguments={"x-max-priority": 10})
            await publisher.queue_purge(queue)
            # Warm-up (connection buffers, queue process).
            await _publish(publisher, queue, body, 200, 100)
            await _consume(consumer, queue, 200)

            each_s = await _publish(publisher, queue, body, each, 1)
            window_s = await _publish(publisher, queue, body, windowed, window)
            consume_s = await _consume(consumer, queue, each + windowed)

            async def pipeline(count: int, in_flight: int) -> float:
                started = time.perf_counter()
                await asyncio.gather(
                    _publish(publisher, queue, body, count, in_flight),
                    _consume(consumer, queue, count),
                )
                return time.perf_counter() - started

            pipe_each_s = await pipeline(each, 1)
            pipe_window_s = await pipeline(windowed, window)
            await publisher.queue_delete(queue)
        finally:
            await consumer_conn.close()
    finally:
        await connection.close()
    return RawResult(
        publish_each_per_s=each / each_s,
        publish_window_per_s=windowed / window_s,
        consume_per_s=(each + windowed) / consume_s,
        pipeline_each_per_s=each / pipe_each_s,
        pipeline_window_per_s=windowed / pipe_window_s,
        window=window,
        payload_bytes=len(body),
    )
