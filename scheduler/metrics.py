"""The scheduler's metrics: jobs finished by state, offences, node results' timings, and
the nodes and slots of this replica (read when scraped). ``fleetwire.process.metrics``
serves them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scheduler.registry import NodeRegistry

SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry, nodes: NodeRegistry) -> None:
        self.finished = Counter(
            "fleetwire_jobs_finished_total",
            "Jobs this replica made terminal, by state and reason (empty when SUCCEEDED).",
            ["state", "reason"],
            registry=registry,
        )
        self.offences = Counter(
            "fleetwire_offences_total",
            "Offences charged to nodes by this replica, by offence.",
            ["offence"],
            registry=registry,
        )
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
