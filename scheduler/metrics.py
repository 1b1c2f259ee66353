"""The scheduler's metrics: jobs finished by state, offences, validations, node results'
timings, the nodes and slots of this replica (read when scraped), and the mesh's state as
the census last read it (``scheduler.census``: queue depths, jobs waiting, eligible slots
per route, excluded nodes, ledger totals). ``fleetwire.process.metrics`` serves them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fleetwire.messaging.topology import NETWORK_NAMES
from fleetwire.v1 import job_pb2
from scheduler.census_store import LedgerTotals
from scheduler.registry import NodeRegistry

SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

VALIDATION_OUTCOMES = ("pass", "wrong", "undecided", "unanswered")
"""``fleetwire_validations_total{outcome}``: a validation answer judged right, judged
wrong, not judged (no two answers agree yet), or a validation job the node did not
answer."""


@dataclass(frozen=True, slots=True)
class QueueReading:
    """Ready messages of one queue: ``queue`` is its name without the namespace
    (``jobs.mainnet.tiny-llama``, ``retry.1-60000ms``, ``dead``, ``dead-letters``), ``kind``
    one of ``route``, ``retry``, ``dead``, ``dead_letters``."""

    queue: str
    kind: str
    ready: int
    unacked: int | None = None  # from the management plugin; None when not read


@dataclass(frozen=True, slots=True)
class CensusReading:
    """One pass of the census. A source that could not be read is None, and its series
    are left out of the scrape rather than shown stale."""

    route_slots: Mapping[str, int] = field(default_factory=dict)
    nodes_excluded: int = 0
    queues: tuple[QueueReading, ...] | None = None
    waiting: Mapping[tuple[str, str], int] | None = None  # (route, priority) -> jobs
    ledger: LedgerTotals | None = None


class CensusCollector(Collector):
    """Exposes the latest ``CensusReading``. The census replaces the reading whole from the
    event loop; a scrape (another thread) reads whichever reading is current, never half
    of one. Nothing is exposed before the first pass."""

    def __init__(self) -> None:
        self._reading: CensusReading | None = None

    def update(self, reading: CensusReading) -> None:
        self._reading = reading

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_families(None))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(_families(self._reading))


def _families(reading: CensusReading | None) -> list[GaugeMetricFamily]:
    queues = GaugeMetricFamily(
        "fleetwire_queue_messages",
        "Messages in the mesh's queues: route queues in use, retry stages, dead (being "
        "recorded) and dead-letters (DEAD_LETTERED jobs' messages). Ready only: unacked "
        "counts need RabbitMQ's management plugin.",
        labels=["queue", "kind", "state"],
    )
    waiting = GaugeMetricFamily(
        "fleetwire_jobs_waiting",
        "Jobs QUEUED or RETRYING (PostgreSQL), by route and priority class, for every route "
        "with waiting jobs or served by this replica.",
        labels=["route", "priority"],
    )
    slots = GaugeMetricFamily(
        "fleetwire_route_slots",
        "Slots of this replica's nodes that may take a route's jobs (connected, not "
        "draining, not excluded), for the routes of fleetwire_jobs_waiting.",
        labels=["route"],
    )
    excluded = GaugeMetricFamily(
        "fleetwire_nodes_excluded",
        "Connected nodes this replica excludes from matching (penalty points over the threshold).",
    )
    ledger = GaugeMetricFamily(
        "fleetwire_ledger_micro_credits",
        "Sums over all ledger entries in micro-credits: debits (charges, as a positive "
        "number) and credits (earnings). Double entry keeps them equal.",
        labels=["side"],
    )
    entries = GaugeMetricFamily("fleetwire_ledger_entries", "Ledger entries written.")
    families = [queues, waiting, slots, excluded, ledger, entries]
    if reading is None:
        return families
    excluded.add_metric([], reading.nodes_excluded)
    for route, count in sorted(reading.route_slots.items()):
        slots.add_metric([route], count)
    for q in reading.queues or ():
        queues.add_metric([q.queue, q.kind, "ready"], q.ready)
        if q.unacked is not None:
            queues.add_metric([q.queue, q.kind, "unacked"], q.unacked)
    for (route, priority), jobs in sorted((reading.waiting or {}).items()):
        waiting.add_metric([route, priority], jobs)
    if reading.ledger is not None:
        ledger.add_metric(["debit"], reading.ledger.debits)
        ledger.add_metric(["credit"], reading.ledger.credits)
        entries.add_metric([], reading.ledger.entries)
    return families


class SchedulerMetrics:
    def finished(self, state: str, reason: str, spec: job_pb2.JobSpec) -> None:
        """Counts a job made terminal (``spec``: its model, priority and network)."""
        self._finished.labels(
            state,
            reason,
            spec.model,
            job_pb2.PriorityClass.Name(spec.priority).removeprefix("PRIORITY_CLASS_").lower(),
            NETWORK_NAMES.get(spec.network, ""),
        ).inc()

    def __init__(self, registry: CollectorRegistry, nodes: NodeRegistry) -> None:
        self._finished = Counter(
            "fleetwire_jobs_finished_total",
            "Jobs this replica made terminal, by state and reason (empty when SUCCEEDED), "
            "model, priority class and network.",
            ["state", "reason", "model", "priority", "network"],
            registry=registry,
        )
        self.offences = Counter(
            "fleetwire_offences_total",
            "Offences charged to nodes by this replica, by offence.",
            ["offence"],
            registry=registry,
        )
        self.validations = Counter(
            "fleetwire_validations_total",
            "Validation answers this replica judged, by outcome: pass, wrong, undecided "
            "(not judged yet), unanswered (the validation job failed).",
            ["outcome"],
            registry=registry,
        )
        for outcome in VALIDATION_OUTCOMES:  # known and few: each series exists from 0
            self.validations.labels(outcome)
        self.duration = Histogram(
            "fleetwire_job_duration_seconds",
            "Accept to result of finalised jobs, as the node timed it.",
            buckets=SECONDS,
            registry=registry,
        )
        self.first_token = Histogram(
            "fleetwire_time_to_first_token_seconds",
            "Accept to first token of finalised jobs, as the node timed it.",
            buckets=SECONDS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "fleetwire_queue_wait_seconds",
            "Acceptance to first dispatch of a job (its queue wait).",
            buckets=SECONDS,
            registry=registry,
        )
        self.retries = Counter(
            "fleetwire_retries_total",
            "Jobs sent round again, by retry stage (0: straight back to the queue, e.g. a "
            "node lost or a reject; 1..n: through that delayed stage).",
            ["stage"],
            registry=registry,
        )
        connected = Gauge(
            "fleetwire_nodes_connected",
            "Nodes with a live NodeStream on this replica.",
            registry=registry,
        )
        connected.set_function(lambda: len(list(nodes.sessions)))
        slots = Gauge(
            "fleetwire_slots",
            "Slots of the nodes connected to this replica: all of them, and those free.",
            ["state"],
            registry=registry,
        )
        slots.labels("total").set_function(lambda: sum(s.slots for s in nodes.sessions))
        slots.labels("free").set_function(lambda: sum(s.free_slots for s in nodes.sessions))
        self.census = CensusCollector()
        registry.register(self.census)
