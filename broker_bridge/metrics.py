"""The bridge's metrics: jobs accepted and admission refusals (``fleetwire.process.metrics``
serves them). Tenant ids are labels only when ``FLEETWIRE_BRIDGE_TENANT_METRICS`` asks for
them, on a metric of their own (``fleetwire_tenant_jobs_submitted_total``): a mesh with
many tenants keeps its series bounded by default."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from broker_bridge.tenant_policy import priority_name
from fleetwire.messaging.topology import NETWORK_NAMES
from fleetwire.v1 import job_pb2


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry, *, per_tenant: bool = False) -> None:
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
        self.by_tenant = (
            Counter(
                "fleetwire_tenant_jobs_submitted_total",
                "Jobs accepted, by tenant (only with FLEETWIRE_BRIDGE_TENANT_METRICS).",
                ["tenant"],
                registry=registry,
            )
            if per_tenant
            else None
        )

    def accepted(self, spec: job_pb2.JobSpec, tenant: str) -> None:
        self.submitted.labels(
            spec.model, priority_name(spec.priority), NETWORK_NAMES.get(spec.network, "")
        ).inc()
        if self.by_tenant is not None:
            self.by_tenant.labels(tenant).inc()

    def refusal(self, code: str, reason: str) -> None:
        self.refused.labels(code, reason).inc()
