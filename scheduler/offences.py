"""Charging a node with an offence: its standing in this replica, the record, and — when
the offence excludes it — the end of its live session.

Records are throttled (``RecordThrottle``): the first few offences of a kind per window get
a row each, the rest one summed row when the window is over, so a node that floods the
mesh with offences cannot flood PostgreSQL. An excluded node's stream is ended at once (it
is told why when it dials again: NODE_EXCLUDED with the time left, ``NodeService``)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.process.settings import SchedulerSettings
from scheduler.metrics import SchedulerMetrics
from scheduler.penalties import POINTS, Offence, PenaltyBox, RecordThrottle
from scheduler.penalty_store import PenaltyStore
from scheduler.registry import NodeRegistry

log = structlog.get_logger(__name__)


class Offences:
    """Charges offences against the penalty box and records them in PostgreSQL.

    Lifecycle: ``start`` (the task that writes the summed rows of closed windows), then
    ``charge`` from anywhere, ``stop`` (writes what is still counted; idempotent)."""

    def __init__(
        self,
        settings: SchedulerSettings,
        scheduler_id: str,
        penalties: PenaltyBox,
        penalty_store: PenaltyStore,
        registry: NodeRegistry | None = None,
        throttle: RecordThrottle | None = None,
        metrics: SchedulerMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._settings = settings
        self._scheduler_id = scheduler_id
        self._penalties = penalties
        self._penalty_store = penalty_store
        self._registry = registry
        self._throttle = throttle or RecordThrottle()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_windows(), name="penalty-records")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self._write_counted(everything=True)

    async def charge(
        self, node_id: str, offence: Offence, job_id: uuid.UUID | None, attempt: int | None
    ) -> None:
        """Adds the offence to the node's standing and records it; past the threshold the
        node gets no work for the cooldown and its live session ends."""
        excluded = self._penalties.penalise(node_id, offence)
        if self._metrics is not None:
            self._metrics.offences.labels(offence.value).inc()
        until = datetime.now(UTC) + self._settings.penalty_cooldown if excluded else None
        if excluded:
            log.warning("node excluded", node_id=node_id, offence=offence.value, until=until)
        if excluded or self._throttle.admit(node_id, offence):
            await self._record(node_id, offence, POINTS[offence], job_id, attempt, until, 1)
        if excluded:
            await self._end_session(node_id)

    async def _record(
        self,
        node_id: str,
        offence: Offence,
        points: float,
        job_id: uuid.UUID | None,
        attempt: int | None,
        until: datetime | None,
        count: int,
    ) -> None:
        try:
            await self._penalty_store.record(
                node_id=node_id,
                offence=offence.value,
                points=points,
                job_id=job_id,
                attempt=attempt,
                excluded_until=until,
                scheduler_id=self._scheduler_id,
                count=count,
            )
        except BackendUnavailable:
            log.warning("penalty not recorded", node_id=node_id, offence=offence.value)

    async def _end_session(self, node_id: str) -> None:
        """Ends the excluded node's stream here; its jobs go elsewhere (reconnect grace 0:
        it will not be welcome back before the cooldown)."""
        session = self._registry.get(node_id) if self._registry is not None else None
        if session is None or self._registry is None:
            return
        await self._registry.remove(session, "excluded for its offences", keep_runs=False)
        if session.close is not None:
            session.close()

    async def _flush_windows(self) -> None:
        while True:
            await asyncio.sleep(self._throttle.window / 2)
            await self._write_counted(everything=False)

    async def _write_counted(self, *, everything: bool) -> None:
        for node_id, offence, count, points in self._throttle.due(everything=everything):
            await self._record(node_id, offence, points, None, None, None, count)
