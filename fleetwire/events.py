"""Redis: per-job event streams for Watch, and the cancel channel.

A job's events live in the capped, expiring stream ``<ns>:job:<id>:events``; each entry is
either a state change (``kind=state``) or a token chunk (``kind=chunk``). Redis holds only
what can be rebuilt: the job's state is always re-read from PostgreSQL, so a lost stream
costs a Watch its live tokens, never a job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fleetwire.errors import BackendUnavailable
from fleetwire.states import JobState

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class ChunkEvent:
    attempt: int
    sequence: int
    text: str
    token_count: int


@dataclass(frozen=True, slots=True)
class StateEvent:
    state: JobState


Event = ChunkEvent | StateEvent


def _decode(fields: dict[bytes, bytes]) -> Event:
    if fields[b"kind"] == b"chunk":
        return ChunkEvent(
            attempt=int(fields[b"attempt"]),
            sequence=int(fields[b"seq"]),
            text=fields[b"text"].decode(),
            token_count=int(fields[b"tokens"]),
        )
    return StateEvent(JobState(fields[b"state"].decode()))


def _chunk_fields(chunk: ChunkEvent) -> dict[str, str | int]:
    return {
        "kind": "chunk",
        "attempt": chunk.attempt,
        "seq": chunk.sequence,
        "text": chunk.text,
        "tokens": chunk.token_count,
    }


class JobEvents:
    """Writes and tails job event streams."""

    def __init__(
        self, redis: aioredis.Redis, namespace: str, *, maxlen: int, ttl: timedelta
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._maxlen = maxlen
        self._ttl = ttl

    @property
    def cancel_channel(self) -> str:
        return f"{self._namespace}:cancel"

    @property
    def final_channel(self) -> str:
        """Where each terminal state event is also announced (the job id): one
        subscription lets a bridge wake its SYNC waiters without a read per job."""
        return f"{self._namespace}:final"

    def stream_key(self, job_id: str) -> str:
        return f"{self._namespace}:job:{job_id}:events"

    async def _append(
        self, job_id: str, fields: dict[str, str | int], *, announce: bool = False
    ) -> None:
        key = self.stream_key(job_id)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.expire(key, self._ttl)
                if announce:
                    pipe.publish(self.final_channel, job_id)
                await pipe.execute()
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err)) from err

    async def publish_state(self, job_id: str, state: JobState) -> None:
        """Appends the state change; a terminal one is also announced on
        ``final_channel``. Call it after the change is committed to PostgreSQL."""
        await self._append(
            job_id, {"kind": "state", "state": state.value}, announce=state.is_terminal
        )

    async def publish_chunk(self, job_id: str, chunk: ChunkEvent) -> None:
        await self._append(job_id, _chunk_fields(chunk))

    async def publish_events(self, events: Sequence[tuple[str, Event]]) -> None:
        """Appends many events, of any jobs, in one round trip (a pipeline, not a
        transaction): each job's events in the order given; terminal states are also
        announced on ``final_channel``. Raises BackendUnavailable when Redis cannot be
        reached; some of the events may have been written then."""
        if not events:
            return
        keys: dict[str, None] = {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id, event in events:
                    key = self.stream_key(job_id)
                    keys[key] = None
                    if isinstance(event, ChunkEvent):
                        fields = _chunk_fields(event)
                    else:
                        fields = {"kind": "state", "state": event.state.value}
                    pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
                    if isinstance(event, StateEvent) and event.state.is_terminal:
                        pipe.publish(self.final_channel, job_id)
                for key in keys:
                    pipe.expire(key, self._ttl)
                await pipe.execute()
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err)) from err

    async def read(
        self, job_id: str, after_id: str, *, block: timedelta | None
    ) -> list[tuple[str, Event]]:
        """Events after stream id ``after_id`` ("0" for all), waiting up to ``block`` for
        the first (None: return at once)."""
        try:
            reply: Any = await self._redis.xread(
                {self.stream_key(job_id): after_id},
                block=None if block is None else max(1, int(block.total_seconds() * 1000)),
                count=256,
            )
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err)) from err
        events: list[tuple[str, Event]] = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                events.append((entry_id.decode(), _decode(fields)))
        return events

    async def request_cancel(self, job_id: str) -> None:
        """Tells every scheduler to abort ``job_id`` if one of its nodes runs it."""
        try:
            await self._redis.publish(self.cancel_channel, job_id)
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err)) from err


def connect_redis(url: str) -> aioredis.Redis:
    """A Redis client with bounded timeouts (connections are made lazily)."""
    return aioredis.Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15
    )
