"""The mesh census: every ``FLEETWIRE_SCHEDULER_METRICS_POLL_INTERVAL`` it reads what no
counter of this process knows — queue depths (RabbitMQ), jobs waiting by route and
priority and the ledger's totals (PostgreSQL), and this replica's excluded nodes and
eligible slots per route — and hands the reading to ``CensusCollector``, which a scrape
exposes. Reads happen here, on the event loop, never in the scrape's thread.

Which queues: ``<ns>.dead``, ``<ns>.dead-letters``, every configured retry stage, and the
route queues of routes in use — served by this replica's nodes or holding waiting jobs.
Not every route the mesh could have: a passive declare renews a queue's ``x-expires``, so
asking about unused routes would keep them alive for ever.

A source that is down leaves its series out of the next scrape (logged), so a dashboard
shows a gap instead of a stale number; the others are still read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.topology import Topology
from fleetwire.process.background import BackgroundTask
from fleetwire.v1 import job_pb2
from scheduler.census_store import CensusStore, LedgerTotals, QueueCounter
from scheduler.metrics import CensusCollector, CensusReading, QueueReading
from scheduler.registry import NodeRegistry

log = structlog.get_logger(__name__)

PRIORITIES = tuple(
    name.removeprefix("PRIORITY_CLASS_").lower()
    for name, number in job_pb2.PriorityClass.items()
    if number != job_pb2.PRIORITY_CLASS_UNSPECIFIED
)
"""The ``priority`` label's values (those of ``fleetwire_jobs_submitted_total``)."""


def priority_label(stored: str) -> str:
    """``PRIORITY_CLASS_NORMAL`` (as the jobs table stores it) -> ``normal``."""
    return stored.removeprefix("PRIORITY_CLASS_").lower()


class MeshCensus:
    """``start`` / ``stop`` (idempotent; closes its AMQP channel); ``poll`` runs one pass
    and returns its reading (tests call it directly)."""

    def __init__(
        self,
        collector: CensusCollector,
        store: CensusStore,
        queues: QueueCounter,
        topology: Topology,
        registry: NodeRegistry,
        excluded: Callable[[str], bool],
        *,
        retry_delays: list[timedelta],
        interval: float,
        broker_timeout: float,
    ) -> None:
        self._collector = collector
        self._store = store
        self._queues = queues
        self._topology = topology
        self._registry = registry
        self._excluded = excluded
        self._interval = interval
        self._broker_timeout = broker_timeout
        self._fixed_queues = [
            (topology.dead_letter_queue, "dead"),
            (topology.dead_letters_queue, "dead_letters"),
            *(
                (topology.retry_stage(stage, int(delay.total_seconds() * 1000)), "retry")
                for stage, delay in enumerate(retry_delays)
            ),
        ]
        self._loop = BackgroundTask("mesh-census", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self._queues.close()

    async def _run(self) -> None:
        while not self._loop.stopping:
            try:
                await self.poll()
            except Exception:  # the loop must outlive any one pass
                log.exception("mesh census failed")
            await asyncio.sleep(self._interval)

    async def poll(self) -> CensusReading:
        route_slots = self._eligible_slots()
        excluded = sum(1 for s in self._registry.sessions if self._excluded(s.node_id))
        stored = await self._waiting()
        routes = set(route_slots) | {route for route, _ in stored or {}}
        waiting: dict[tuple[str, str], int] | None = None
        if stored is not None:
            waiting = {(route, p): 0 for route in routes for p in PRIORITIES}
            for (route, priority), jobs in stored.items():
                key = (route, priority_label(priority))
                waiting[key] = waiting.get(key, 0) + jobs
        reading = CensusReading(
            route_slots={route: route_slots.get(route, 0) for route in routes},
            nodes_excluded=excluded,
            queues=await self._queue_readings(routes),
            waiting=waiting,
            ledger=await self._ledger(),
        )
        self._collector.update(reading)
        return reading

    def _eligible_slots(self) -> dict[str, int]:
        """Route -> slots of connected nodes that may take its jobs now."""
        totals: dict[str, int] = {}
        for session in self._registry.sessions:
            if session.draining or self._excluded(session.node_id):
                for route in session.routes:
                    totals.setdefault(route, 0)
                continue
            for route in session.routes:
                totals[route] = totals.get(route, 0) + session.slots
        return totals

    async def _waiting(self) -> dict[tuple[str, str], int] | None:
        try:
            return await self._store.waiting_jobs()
        except BackendUnavailable as err:
            log.warning("jobs waiting not read; PostgreSQL unavailable", error=err.message)
            return None

    async def _ledger(self) -> LedgerTotals | None:
        try:
            return await self._store.ledger_totals()
        except BackendUnavailable as err:
            log.warning("ledger totals not read; PostgreSQL unavailable", error=err.message)
            return None

    async def _queue_readings(self, routes: set[str]) -> tuple[QueueReading, ...] | None:
        named = [
            *self._fixed_queues,
            *(
                (queue, "route")
                for route in sorted(routes)
                for queue in self._topology.route_queues(route)
            ),
        ]
        try:
            async with asyncio.timeout(self._broker_timeout):
                counts = await self._queues.ready([queue for queue, _ in named])
        except (BackendUnavailable, TimeoutError) as err:
            log.warning("queue depths not read; RabbitMQ unavailable", error=str(err))
            await self._queues.close()
            return None
        unacked = await self._queues.unacked([queue for queue, _ in named]) or {}
        prefix = f"{self._topology.namespace}."
        return tuple(
            QueueReading(queue.removeprefix(prefix), kind, counts[queue], unacked.get(queue))
            for queue, kind in named
        )
