"""The bridge's metrics (``broker_bridge.metrics``): labels bounded unless asked."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from broker_bridge.metrics import BridgeMetrics
from fleetwire.v1 import job_pb2


def test_tenant_ids_are_labels_only_when_asked_for() -> None:
    """Bounded labels by default: the per-tenant count exists only with the setting."""
    spec = job_pb2.JobSpec(model="tiny-llama", priority=job_pb2.PRIORITY_CLASS_NORMAL)
    spec.network = job_pb2.NETWORK_MAINNET
    bounded = CollectorRegistry()
    BridgeMetrics(bounded).accepted(spec, "acme")
    assert "tenant" not in generate_latest(bounded).decode()
    per_tenant = CollectorRegistry()
    BridgeMetrics(per_tenant, per_tenant=True).accepted(spec, "acme")
    sample = per_tenant.get_sample_value
    assert sample("fleetwire_tenant_jobs_submitted_total", {"tenant": "acme"}) == 1
    labels = {"model": "tiny-llama", "priority": "normal", "network": "mainnet"}
    assert sample("fleetwire_jobs_submitted_total", labels) == 1
