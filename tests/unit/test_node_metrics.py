"""The node's metrics (``node.metrics``): jobs counted by their final message, the endpoint
safe by default, and vLLM's own metrics handed on."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest

from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.metrics import MetricsEndpoint
from fleetwire.process.node_settings import NodeSettings
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from node.metrics import NodeMetrics, start_endpoint


def test_jobs_are_counted_by_outcome_with_their_timings_and_tokens() -> None:
    registry = CollectorRegistry()
    metrics = NodeMetrics(registry)
    result = nodes_pb2.Result(
        usage=job_pb2.Usage(prompt_tokens=5, completion_tokens=7),
        timings=job_pb2.Timings(total_ms=250, time_to_first_token_ms=40, tokens_per_second=28),
    )
    metrics.ended("tiny-llama", nodes_pb2.NodeStreamRequest(result=result))
    failure = nodes_pb2.Failure(reason="PROMPT_TOO_LONG")
    metrics.ended("tiny-llama", nodes_pb2.NodeStreamRequest(failure=failure))
    sample = registry.get_sample_value
    assert sample("fleetwire_node_jobs_total", {"model": "tiny-llama", "outcome": "succeeded"}) == 1
    assert (
        sample("fleetwire_node_jobs_total", {"model": "tiny-llama", "outcome": "prompt_too_long"})
        == 1
    )
    assert sample("fleetwire_node_tokens_total", {"model": "tiny-llama", "kind": "completion"}) == 7
    assert sample("fleetwire_node_job_duration_seconds_sum", {"model": "tiny-llama"}) == 0.25
    metrics.watch(lambda: 8, lambda: 3, lambda: 2)
    assert sample("fleetwire_node_slots", {"state": "busy"}) == 3
    assert sample("fleetwire_node_sessions") == 2


def test_vllm_metrics_of_the_default_registry_are_served_too() -> None:
    engine = Gauge("vllm:num_requests_running", "as vLLM names it", registry=REGISTRY)
    try:
        engine.set(4)
        registry = CollectorRegistry()
        NodeMetrics(registry)
        text = generate_latest(registry).decode()
        assert "vllm:num_requests_running 4.0" in text
        assert "python_gc_objects_collected_total" not in text  # only vLLM's are handed on
    finally:
        REGISTRY.unregister(engine)


def test_plaintext_metrics_beyond_this_machine_are_refused() -> None:
    settings = NodeSettings(metrics_host="0.0.0.0", metrics_port=0)
    with pytest.raises(ConfigurationError, match="FLEETWIRE_NODE_METRICS_CERT_FILE"):
        start_endpoint(MetricsEndpoint("node"), settings)
    endpoint = MetricsEndpoint("node")
    try:
        assert start_endpoint(endpoint, NodeSettings(metrics_host="127.0.0.1", metrics_port=0)) > 0
    finally:
        endpoint.stop()
