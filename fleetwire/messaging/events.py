"""Redis: per-job event streams for Watch, and the cancel channel.

A job's events live in the capped, expiring stream ``<ns>:job:<id>:events``; each entry is
either a state change (``kind=state``) or a token chunk (``kind=chunk``). Redis holds only
what can be rebuilt: the job's state is always re-read from PostgreSQL, so a lost stream
costs a Watch its live tokens, never a job (Watch then sends the output from PostgreSQL).

Expiry: while the job is live every append sets the stream's expiry to ``ttl``; the
append that carries its terminal state sets it to ``finished_retention`` (short: only
followers that are reading right now still need it) and *seals* the stream: once its last
entry is a terminal state nothing more is appended, so a late chunk (of an attempt being
aborted) or a stale state change can neither extend the retention nor follow the end.
Both happen in one Lua script per stream, run in the round trip that writes the events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.domain.states import TERMINAL, JobState

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

FINISHED_RETENTION = timedelta(minutes=1)
"""Default of ``JobEvents``' ``finished_retention`` (FLEETWIRE_REDIS_FINISHED_STREAM_RETENTION)."""

_TERMINAL_TABLE = ", ".join(f"{state.value} = true" for state in sorted(TERMINAL))
APPEND_SCRIPT = (
    """
-- KEYS[1]: one job's event stream. ARGV[1]: MAXLEN (approximate), ARGV[2]: the live expiry
-- (ms), ARGV[3]: the retention after the terminal state (ms); then the events, each as its
-- number of fields followed by field, value pairs. Returns how many events were appended.
local TERMINAL = {"""
    + _TERMINAL_TABLE
    + """}
local function is_terminal(fields)
  local kind, state
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'kind' then kind = fields[i + 1] end
    if fields[i] == 'state' then state = fields[i + 1] end
  end
  return kind == 'state' and state ~= nil and TERMINAL[state] == true
end
local key = KEYS[1]
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #last > 0 and is_terminal(last[1][2]) then
  return 0  -- sealed: the job is finished, its retention runs out undisturbed
end
local i, appended, finished = 4, 0, false
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local fields = {}
  for j = 1, 2 * n do fields[j] = ARGV[i + j] end
  redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
  appended = appended + 1
  i = i + 1 + 2 * n
  if is_terminal(fields) then
    finished = true
    break
  end
end
if finished then
  redis.call('PEXPIRE', key, ARGV[3])
elseif appended > 0 then
  redis.call('PEXPIRE', key, ARGV[2])
end
return appended
"""
)
"""Appends events to one stream and sets its expiry, atomically (see the module's docstring).
One key per call, so it runs on Redis Cluster too."""
_APPEND_SHA = hashlib.sha1(APPEND_SCRIPT.encode()).hexdigest()


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


def _event_args(event: Event) -> list[str | int]:
    """One event as ``APPEND_SCRIPT`` reads it: the number of fields, then the pairs."""
    if isinstance(event, ChunkEvent):
        fields = _chunk_fields(event)
    else:
        fields = {"kind": "state", "state": event.state.value}
    args: list[str | int] = [len(fields)]
    for name, value in fields.items():
        args += [name, value]
    return args


class JobEvents:
    """Writes and tails job event streams.

    ``ttl`` is a live job's stream expiry, renewed by each event; ``finished_retention``
    replaces it when the terminal state is written, and nothing renews it afterwards."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        *,
        maxlen: int,
        ttl: timedelta,
        finished_retention: timedelta = FINISHED_RETENTION,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._maxlen = maxlen
        self._ttl_ms = max(1, int(ttl.total_seconds() * 1000))
        self._retention_ms = max(1, int(finished_retention.total_seconds() * 1000))

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

    async def publish_state(self, job_id: str, state: JobState) -> None:
        """Appends the state change; a terminal one also shortens the stream's expiry to
        the retention (in the same script) and is announced on ``final_channel``. Call it
        after the change is committed to PostgreSQL. Raises BackendUnavailable when Redis
        cannot be reached."""
        await self.publish_events([(job_id, StateEvent(state))])

    async def publish_chunk(self, job_id: str, chunk: ChunkEvent) -> None:
        await self.publish_events([(job_id, chunk)])

    async def publish_events(self, events: Sequence[tuple[str, Event]]) -> None:
        """Appends many events, of any jobs, in one round trip (a pipeline of one script
        per stream, not a transaction): each job's events in the order given. A terminal
        state sets its stream's expiry to the retention and seals it (later events of that
        job are dropped); other events renew a live stream's expiry. Terminal states are
        also announced on ``final_channel``. Raises BackendUnavailable when Redis cannot be
        reached or refuses a write; some of the events may have been written then."""
        if not events:
            return
        per_stream: dict[str, list[str | int]] = {}
        finished: list[str] = []
        for job_id, event in events:
            per_stream.setdefault(job_id, []).extend(_event_args(event))
            if isinstance(event, StateEvent) and event.state.is_terminal:
                finished.append(job_id)
        calls = [
            (self.stream_key(job_id), [self._maxlen, self._ttl_ms, self._retention_ms, *args])
            for job_id, args in per_stream.items()
        ]
        try:
            replies = await self._append(calls, announce=finished)
            unknown = [c for c, r in zip(calls, replies, strict=True) if _no_script(r)]
            errors = [r for r in replies if isinstance(r, Exception) and not _no_script(r)]
            if unknown:  # the first call since Redis (re)started: load it, run those again
                await self._redis.script_load(APPEND_SCRIPT)
                errors += [r for r in await self._append(unknown, []) if isinstance(r, Exception)]
        except REDIS_ERRORS as err:
            raise BackendUnavailable("redis", str(err)) from err
        if errors:
            raise BackendUnavailable("redis", str(errors[0])) from errors[0]

    async def _append(
        self, calls: Sequence[tuple[str, list[str | int]]], announce: Sequence[str]
    ) -> list[Any]:
        """Runs ``APPEND_SCRIPT`` once per (key, args), then announces ``announce`` on
        ``final_channel``: one round trip. The replies of the scripts come first, errors
        (NOSCRIPT...) among them as exceptions."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, args in calls:
                pipe.evalsha(_APPEND_SHA, 1, key, *args)
            for job_id in announce:
                pipe.publish(self.final_channel, job_id)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies[: len(calls)]

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


def _no_script(reply: object) -> bool:
    return isinstance(reply, NoScriptError)


def connect_redis(url: str, *, max_connections: int = 100) -> aioredis.Redis:
    """A Redis client with bounded timeouts and a bounded pool (connections are made
    lazily): a caller waits up to 5 s for a free connection, then gets a ConnectionError
    (BackendUnavailable at the edge) instead of opening one more."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=15,
    )
    return aioredis.Redis(connection_pool=pool)
