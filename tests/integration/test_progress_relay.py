"""scheduler.progress_relay.ProgressRelay on the real Redis: chunks of many jobs, submitted
without waiting, land in each job's stream in order; ``flushed`` returns only once they are
there; ``stop`` drains; a Redis outage costs chunks, never the writer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from fleetwire.messaging.events import ChunkEvent, JobEvents, connect_redis
from fleetwire.process.settings import Settings
from scheduler.progress_relay import ProgressRelay


async def chunks_of(events: JobEvents, job_id: str) -> list[ChunkEvent]:
    return [e for _, e in await events.read(job_id, "0", block=None) if isinstance(e, ChunkEvent)]


async def test_chunks_of_many_jobs_arrive_in_order_and_flushed_waits_for_them(
    events: JobEvents, settings: Settings
) -> None:
    relay = ProgressRelay(events)
    await relay.start()
    jobs = [str(uuid.uuid4()) for _ in range(8)]
    try:
        for sequence in range(1, 101):  # interleaved, as 8 streams of one node send them
            for job_id in jobs:
                relay.submit(job_id, ChunkEvent(1, sequence, f"{sequence},", 1))
            if sequence % 10 == 0:
                await asyncio.sleep(0)  # let the writer take a batch mid-way
        assert await relay.flushed(5.0)
        for job_id in jobs:  # no await between flushed() and the reads' view of Redis
            written = await chunks_of(events, job_id)
            assert [c.sequence for c in written] == list(range(1, 101))
            assert "".join(c.text for c in written) == "".join(f"{i}," for i in range(1, 101))
        redis = connect_redis(settings.redis.url.get_secret_value())
        ttl = await redis.ttl(events.stream_key(jobs[0]))
        await redis.aclose()
        assert ttl > 0  # the stream expires like one written chunk by chunk
    finally:
        await relay.stop(1.0)


async def test_stop_writes_what_was_submitted(events: JobEvents) -> None:
    relay = ProgressRelay(events)
    await relay.start()
    job_id = str(uuid.uuid4())
    for sequence in range(1, 51):
        relay.submit(job_id, ChunkEvent(1, sequence, "x", 1))
    await relay.stop(5.0)
    assert len(await chunks_of(events, job_id)) == 50
    relay.submit(job_id, ChunkEvent(1, 51, "late", 1))  # after stop: dropped, no error
    await relay.stop(1.0)  # idempotent
    assert len(await chunks_of(events, job_id)) == 50


async def test_redis_away_costs_chunks_not_the_writer(settings: Settings) -> None:
    dead = connect_redis("redis://127.0.0.1:1/0")  # nothing listens there
    relay = ProgressRelay(
        JobEvents(dead, settings.mesh.namespace, maxlen=100, ttl=timedelta(minutes=1))
    )
    await relay.start()
    try:
        relay.submit("job", ChunkEvent(1, 1, "lost", 1))
        assert await relay.flushed(10.0)  # given up on, not hanging
        relay.submit("job", ChunkEvent(1, 2, "lost too", 1))
        assert await relay.flushed(10.0)  # the writer still runs
    finally:
        await relay.stop(1.0)
        await dead.aclose()
