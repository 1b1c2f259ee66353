"""Relays node Progress and the jobs' state changes into their Redis event streams, off
the NodeStream read loops and the dispatchers' paths.

A read loop hands each chunk to ``submit`` (no I/O, no await) and reads the node's next
message at once; a dispatcher hands each committed state change the same way. One writer
task lets events gather for ``LINGER_S`` and appends them in one pipelined round trip (an
XADD per event, an EXPIRE per stream, a PUBLISH per terminal state), so a round trip
carries the events of many jobs and nobody waits for Redis. The events only wake
followers (Watch, SYNC waiters), who read states from PostgreSQL and poll when an event
is late or lost.

Order: events are written in the order they were submitted, one batch after the other, so
a job's chunks reach its stream in the order its node sent them. ``flushed`` waits until every
chunk submitted before the call is written: the dispatcher awaits it before it finalises a
job, because Watch, once PostgreSQL says the job is terminal, drains the stream and then
sends the final state — a chunk written after that would never reach the client.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.events import Event, JobEvents, StateEvent

log = structlog.get_logger(__name__)

CATCH_UP_WAIT_S = 5.0
"""How long settling a job waits for its token chunks to reach Redis (a round trip or two
normally; Redis failing is the only way to reach it, and then the job settles anyway)."""

LINGER_S = 0.01
"""How long the first chunk of a batch waits for others. Nodes already coalesce each job's
tokens (FLEETWIRE_NODE_TOKEN_FLUSH, 50 ms), so chunks of 8 streams arrive every 6 ms or so;
lingering puts several in one round trip instead of paying one per chunk. ``flushed`` cuts
it short."""
MAX_BATCH = 1024
"""Most chunks in one pipelined round trip."""
MAX_WAITING = 100_000
"""Chunks held while Redis is slow or away; beyond this new chunks are dropped (Watch then
misses tokens, never a result: the signed output is in PostgreSQL)."""


class ProgressRelay:
    """One scheduler's writer of job events (token chunks and state changes).

    Lifecycle: ``start`` (the writer task), ``submit`` from the read loops, ``flushed`` /
    ``drain`` to wait for what was submitted, ``stop`` (drains within a grace period, then
    cancels the writer; idempotent). Chunks submitted before ``start`` are written once it
    runs; after ``stop`` they are dropped. A Redis failure costs the chunks of that round
    trip (logged), never the writer.
    """

    def __init__(self, events: JobEvents) -> None:
        self._events = events
        self._waiting: list[tuple[str, Event]] = []
        self._submitted = 0  # chunks accepted by ``submit`` so far
        self._done = 0  # of those, written (or given up on)
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # someone waits in ``flushed``: skip the linger
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._dropped = 0

    async def start(self) -> None:
        if self._task is None and not self._stopped:
            self._task = asyncio.create_task(self._run(), name="progress-relay")
            self._task.add_done_callback(_log_crash)

    def submit(self, job_id: str, event: Event) -> None:
        """Queues ``event`` for ``job_id``'s stream; returns at once. A state change is
        written without lingering: followers wait for it."""
        if self._stopped or len(self._waiting) >= MAX_WAITING:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("job event dropped", job_id=job_id, dropped=self._dropped)
            return
        self._waiting.append((job_id, event))
        self._submitted += 1
        if isinstance(event, StateEvent):
            self._hurry.set()
        self._wake.set()

    async def caught_up(self, job_id: str, within: float = CATCH_UP_WAIT_S) -> None:
        """Waits until the chunks its node sent so far are in the job's stream, so that any
        state published next (above all the final one) comes after them; gives up with a
        warning after ``within`` seconds (only Redis failing takes that long)."""
        if not await self.flushed(within):
            log.warning("settling a job before its token chunks reached redis", job_id=job_id)

    async def flushed(self, within: float) -> bool:
        """Waits until every chunk submitted before this call is written (or was given up
        on after a Redis error). False if ``within`` seconds passed first."""
        target = self._submitted
        if self._done >= target:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (target, future)
        self._flushes.append(entry)
        self._hurry.set()
        try:
            await asyncio.wait_for(asyncio.shield(future), within)
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._flushes.remove(entry)

    async def drain(self, within: float) -> bool:
        """Waits until everything submitted so far is written; False on timeout."""
        return await self.flushed(within)

    async def stop(self, grace: float) -> None:
        """Writes what is waiting (up to ``grace`` seconds), then stops the writer."""
        if self._stopped:
            return
        if self._task is not None and not await self.drain(grace):
            log.warning("job events not relayed at stop", waiting=len(self._waiting))
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            task.cancel()
            await asyncio.wait([task])
        self._waiting.clear()
        self._done = self._submitted
        self._release_flushes()

    async def _run(self) -> None:
        while not self._stopped:  # as well as the cancel in stop(), should one be swallowed
            await self._wake.wait()
            if not self._hurry.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LINGER_S):
                        await self._hurry.wait()
            self._wake.clear()
            self._hurry.clear()
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                try:
                    await self._events.publish_events(batch)
                except BackendUnavailable as err:
                    log.warning("job events not relayed", events=len(batch), error=str(err))
                except Exception:
                    log.exception("job events not relayed", events=len(batch))
                self._done += len(batch)
                self._release_flushes()

    def _release_flushes(self) -> None:
        for target, future in self._flushes:
            if target <= self._done and not future.done():
                future.set_result(None)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("progress relay stopped", error=str(task.exception()))
