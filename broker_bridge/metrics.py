"""The bridge's metrics: jobs accepted and admission refusals (``fleetwire.process.metrics``
serves them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from broker_bridge.tenant_policy import priority_name
from fleetwire.messaging.topology import NETWORK_NAMES
from fleetwire.v1 import job_pb2


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.submitted = Counter(
            "fleetwire_jobs_submitted_total",
            "Jobs accepted (written and published), by model, priority class and network.",
            ["model", "priority", "network"],
            registry=registry,
        )
        self.refused = Counter(
            "fleetwire_admission_refusals_total",
            "Submit and SubmitBatch calls refused, by gRPC code and ErrorInfo reason.",
            ["code", "reason"],
            registry=registry,
        )

    def accepted(self, spec: job_pb2.JobSpec) -> None:
        self.submitted.labels(
            spec.model, priority_name(spec.priority), NETWORK_NAMES.get(spec.network, "")
        ).inc()

    def refusal(self, code: str, reason: str) -> None:
        self.refused.labels(code, reason).inc()
