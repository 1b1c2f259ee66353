"""The mesh census's reading (``scheduler.census``), with its stores faked: which routes
and queues it reports, eligible slots, a source that is down, and what a scrape shows
(the live side is tests/integration/test_metrics.py and test_prometheus.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.topology import Topology
from scheduler.census import PRIORITIES, MeshCensus
from scheduler.census_store import CensusStore, LedgerTotals, QueueCounter
from scheduler.metrics import CensusCollector, CensusReading, SchedulerMetrics
from scheduler.registry import NodeRegistry, NodeSession


async def _send(_message: Any) -> None:
    pass


def session(node_id: str, routes: set[str], slots: int, *, draining: bool = False) -> NodeSession:
    return NodeSession(
        node_id=node_id,
        public_key=b"k",
        key_id="key",
        session_id=node_id,
        routes=frozenset(routes),
        slots=slots,
        send=_send,
        draining=draining,
    )


class FakeStore:
    def __init__(self, waiting: dict[tuple[str, str], int], *, down: bool = False) -> None:
        self.waiting = waiting
        self.down = down

    async def waiting_jobs(self) -> dict[tuple[str, str], int]:
        if self.down:
            raise BackendUnavailable("postgresql", "down")
        return self.waiting

    async def ledger_totals(self) -> LedgerTotals:
        if self.down:
            raise BackendUnavailable("postgresql", "down")
        return LedgerTotals(debits=70, credits=70, entries=4)


class FakeQueues:
    def __init__(self, ready: dict[str, int], *, down: bool = False) -> None:
        self.ready_counts = ready
        self.down = down
        self.asked: list[str] = []
        self.closed = 0

    async def ready(self, queues: list[str]) -> dict[str, int]:
        self.asked = list(queues)
        if self.down:
            raise BackendUnavailable("rabbitmq", "down")
        return {q: self.ready_counts.get(q, 0) for q in queues}

    async def unacked(self, queues: list[str]) -> dict[str, int] | None:
        return None  # no management API: ready counts only

    async def close(self) -> None:
        self.closed += 1


def census(
    registry: NodeRegistry,
    store: FakeStore,
    queues: FakeQueues,
    excluded: set[str] | None = None,
    collector: CensusCollector | None = None,
) -> MeshCensus:
    return MeshCensus(
        collector or CensusCollector(),
        cast(CensusStore, store),
        cast(QueueCounter, queues),
        Topology("ns"),
        registry,
        lambda node_id: node_id in (excluded or set()),
        retry_delays=[timedelta(seconds=1), timedelta(seconds=5)],
        interval=60,
        broker_timeout=5,
    )


async def test_routes_are_those_served_here_or_with_jobs_waiting() -> None:
    registry = NodeRegistry()
    registry.add(session("a", {"mainnet.m"}, 2))
    registry.add(session("b", {"mainnet.m", "testnet.m"}, 3))
    store = FakeStore({("mainnet.starved", "PRIORITY_CLASS_BULK"): 4})
    queues = FakeQueues({"ns.dead-letters": 7, "ns.jobs.mainnet.starved": 4})
    reading = await census(registry, store, queues).poll()

    assert reading.route_slots == {"mainnet.m": 5, "testnet.m": 3, "mainnet.starved": 0}
    assert reading.waiting is not None
    assert reading.waiting[("mainnet.starved", "bulk")] == 4
    assert reading.waiting[("mainnet.m", "normal")] == 0  # every class, every route
    assert set(reading.waiting) == {(route, p) for route in reading.route_slots for p in PRIORITIES}
    assert PRIORITIES == ("urgent", "normal", "bulk", "test")
    # Dead, dead-letters, each retry stage, and only the routes in use (a passive declare
    # renews a queue's expiry).
    assert queues.asked == [
        "ns.dead",
        "ns.dead-letters",
        "ns.retry.1-1000ms",
        "ns.retry.2-5000ms",
        "ns.jobs.mainnet.m",
        "ns.jobs.mainnet.starved",
        "ns.jobs.testnet.m",
    ]
    assert reading.queues is not None
    by_queue = {(q.queue, q.kind): q.ready for q in reading.queues}
    assert by_queue[("dead-letters", "dead_letters")] == 7
    assert by_queue[("jobs.mainnet.starved", "route")] == 4
    assert by_queue[("retry.2-5000ms", "retry")] == 0
    assert reading.ledger == LedgerTotals(70, 70, 4)


async def test_excluded_and_draining_nodes_give_their_routes_no_eligible_slots() -> None:
    registry = NodeRegistry()
    registry.add(session("bad", {"mainnet.x"}, 4))
    registry.add(session("leaving", {"mainnet.y"}, 2, draining=True))
    registry.add(session("good", {"mainnet.y"}, 1))
    reading = await census(registry, FakeStore({}), FakeQueues({}), excluded={"bad"}).poll()
    assert reading.route_slots == {"mainnet.x": 0, "mainnet.y": 1}
    assert reading.nodes_excluded == 1


async def test_a_source_that_is_down_leaves_its_readings_out() -> None:
    registry = NodeRegistry()
    registry.add(session("a", {"mainnet.m"}, 2))
    queues = FakeQueues({}, down=True)
    reading = await census(registry, FakeStore({}, down=True), queues).poll()
    assert reading.waiting is None
    assert reading.ledger is None
    assert reading.queues is None
    assert queues.closed == 1  # a fresh channel next time
    assert reading.route_slots == {"mainnet.m": 2}  # local, still read


async def test_a_scrape_shows_the_latest_reading_and_nothing_before_the_first() -> None:
    registry = CollectorRegistry()
    metrics = SchedulerMetrics(registry, NodeRegistry())
    before = generate_latest(registry).decode()
    assert "fleetwire_queue_messages{" not in before
    assert 'fleetwire_validations_total{outcome="undecided"} 0.0' in before
    metrics.census.update(
        CensusReading(
            route_slots={"mainnet.m": 0},
            nodes_excluded=2,
            queues=(),
            waiting={("mainnet.m", "normal"): 3},
            ledger=LedgerTotals(debits=5, credits=6, entries=2),
        )
    )
    text = generate_latest(registry).decode()
    assert 'fleetwire_jobs_waiting{priority="normal",route="mainnet.m"} 3.0' in text
    assert 'fleetwire_route_slots{route="mainnet.m"} 0.0' in text
    assert "fleetwire_nodes_excluded 2.0" in text
    assert 'fleetwire_ledger_micro_credits{side="debit"} 5.0' in text
    assert 'fleetwire_ledger_micro_credits{side="credit"} 6.0' in text
    assert "fleetwire_ledger_entries 2.0" in text
