"""The node's metrics: its jobs by outcome, their timings and tokens, its slots and
sessions — and its engines' own vLLM metrics (``vllm:*``, e.g. ``vllm:num_requests_running``,
``vllm:time_to_first_token_seconds``), on the node's metrics port.

vLLM registers its metrics in prometheus-client's default registry (the engine's stats
come back to this process, where its Prometheus stat logger records them);
``EngineMetrics`` hands them on to the node's own registry when scraped, so one endpoint
serves both. Labels: model (of the node's config) and outcome (``succeeded`` or a Failure
reason the node itself chooses, a short fixed list).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.metrics import MetricsEndpoint
from fleetwire.process.node_settings import NodeSettings
from fleetwire.process.settings import TlsSettings
from fleetwire.v1 import node_service_pb2 as nodes_pb2

SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKENS_PER_SECOND = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class EngineMetrics(Collector):
    """The ``vllm:`` metrics of the default registry, as they are when scraped."""

    def collect(self) -> Iterable[Metric]:
        for metric in REGISTRY.collect():
            if metric.name.startswith("vllm:"):
                yield metric


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter(
            "fleetwire_node_jobs_total",
            "Jobs this node ended, by model and outcome (succeeded, or its Failure reason).",
            ["model", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "fleetwire_node_job_duration_seconds",
            "Accept to result of the jobs this node finished.",
            ["model"],
            buckets=SECONDS,
            registry=registry,
        )
        self.first_token = Histogram(
            "fleetwire_node_time_to_first_token_seconds",
            "Accept to first token of the jobs this node finished.",
            ["model"],
            buckets=SECONDS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "fleetwire_node_tokens_per_second",
            "Generation speed of each finished job (completion tokens per second).",
            ["model"],
            buckets=TOKENS_PER_SECOND,
            registry=registry,
        )
        self.tokens = Counter(
            "fleetwire_node_tokens_total",
            "Tokens of the jobs this node finished, by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=registry,
        )
        self._slots = Gauge(
            "fleetwire_node_slots",
            "Jobs the node runs at once (total) and those running now (busy).",
            ["state"],
            registry=registry,
        )
        self._sessions = Gauge(
            "fleetwire_node_sessions",
            "Handshakes the node completed since it started (more than 1: it reconnected).",
            registry=registry,
        )
        registry.register(EngineMetrics())

    def watch(
        self, slots: Callable[[], int], busy: Callable[[], int], sessions: Callable[[], int]
    ) -> None:
        """Reads the agent's slots and sessions when scraped."""
        self._slots.labels("total").set_function(slots)
        self._slots.labels("busy").set_function(busy)
        self._sessions.set_function(sessions)

    def ended(self, model: str, final: nodes_pb2.NodeStreamRequest) -> None:
        """Counts a job by its final message."""
        if final.HasField("result"):
            result = final.result
            self.jobs.labels(model, "succeeded").inc()
            self.duration.labels(model).observe(result.timings.total_ms / 1000)
            self.first_token.labels(model).observe(result.timings.time_to_first_token_ms / 1000)
            self.tokens_per_second.labels(model).observe(result.timings.tokens_per_second)
            self.tokens.labels(model, "prompt").inc(result.usage.prompt_tokens)
            self.tokens.labels(model, "completion").inc(result.usage.completion_tokens)
        elif final.HasField("failure"):
            self.jobs.labels(model, final.failure.reason.lower()).inc()


def start_endpoint(endpoint: MetricsEndpoint, settings: NodeSettings) -> int:
    """Serves the node's metrics: HTTPS with the node's metrics certificate, or plaintext on
    a loopback address only (a node owner's own machine). Returns the bound port."""
    secure = settings.metrics_cert_file is not None and settings.metrics_key_file is not None
    if not secure and not _loopback(settings.metrics_host):
        raise ConfigurationError(
            f"FLEETWIRE_NODE_METRICS_HOST={settings.metrics_host} is not a loopback address: "
            "set FLEETWIRE_NODE_METRICS_CERT_FILE and FLEETWIRE_NODE_METRICS_KEY_FILE to serve "
            "metrics beyond this machine (HTTPS)"
        )
    tls = TlsSettings(
        cert_file=settings.metrics_cert_file,
        key_file=settings.metrics_key_file,
        insecure=not secure,
    )
    return endpoint.start(settings.metrics_host, settings.metrics_port, tls)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
