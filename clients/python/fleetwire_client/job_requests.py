"""Building requests: the job spec, call metadata (API key, trace context) and channel
options.

Shared by the sync and async clients so both send byte-identical requests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from fleetwire.v1 import job_pb2, job_service_pb2
from fleetwire_client.models import Mode, Network, Priority

DEFAULT_ADDRESS = "127.0.0.1:50051"
API_KEY_ENV = "FLEETWIRE_API_KEY"
ADDRESS_ENV = "FLEETWIRE_ADDRESS"
E = TypeVar("E", Priority, Mode, Network)

USER_AGENT = "fleetwire-client-python/0.1.0"

# Keepalive and message limits matching the servers' (fleetwire/rpc/options.py).
CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.primary_user_agent", USER_AGENT),
]


def resolve_address(address: str | None) -> str:
    """``address``, else ``$FLEETWIRE_ADDRESS``, else the bridge's default port locally."""
    return address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


TRACE_HEADERS = ("traceparent", "tracestate")


def trace_metadata(traceparent: str | None = None) -> tuple[tuple[str, str], ...]:
    """W3C trace context for a Submit: ``traceparent`` as given, else the caller's current
    OpenTelemetry span's (when ``opentelemetry-api`` is installed — it is not a dependency —
    through its configured propagator), else nothing: the bridge then starts the job's
    trace. Either way the job's trace id comes back as ``JobResult.trace_id``."""
    if traceparent:
        return ((TRACE_HEADERS[0], traceparent),)
    try:
        from opentelemetry import propagate
    except ImportError:
        return ()
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((key, carrier[key]) for key in TRACE_HEADERS if carrier.get(key))


def call_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """``authorization: Bearer <key>`` for the key given, else ``$FLEETWIRE_API_KEY``;
    nothing when neither is set. (The bridge does not check keys yet; tenants will.)"""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return (("authorization", f"Bearer {key}"),) if key else ()


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job to submit; the fields of ``fleetwire.v1.JobSpec`` a caller usually sets.
    Exactly one of ``prompt`` and ``messages`` (role, content pairs) must be given."""

    prompt: str = ""
    messages: Sequence[tuple[str, str]] = ()
    model: str = "tiny-llama"
    model_version: str = ""
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 0.0
    seed: int | None = None
    stop: Sequence[str] = ()
    ignore_eos: bool = False
    priority: Priority | str = Priority.NORMAL
    mode: Mode | str = Mode.POLLING
    network: Network | str = Network.MAINNET
    ttl: timedelta | None = None
    labels: Mapping[str, str] | None = None
    client_request_id: str = ""

    def to_spec(self, *, request_id: bool = True) -> job_pb2.JobSpec:
        """The JobSpec message. A missing ``client_request_id`` gets a fresh UUID (unless
        ``request_id`` is false: batch members carry none), so a retried Submit returns the
        job of the first try instead of running it twice (the bridge's idempotency)."""
        spec = job_pb2.JobSpec(
            model=self.model,
            model_version=self.model_version,
            prompt=self.prompt,
            messages=[job_pb2.ChatMessage(role=r, content=c) for r, c in self.messages],
            sampling=job_pb2.SamplingParams(
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=list(self.stop),
                ignore_eos=self.ignore_eos,
            ),
            priority=_enum(Priority, self.priority),
            mode=_enum(Mode, self.mode),
            network=_enum(Network, self.network),
            labels=dict(self.labels or {}),
            client_request_id=self.client_request_id or (str(uuid.uuid4()) if request_id else ""),
        )
        if self.seed is not None:
            spec.sampling.seed = self.seed
        if self.ttl is not None:
            spec.ttl.FromTimedelta(self.ttl)
        return spec


def _enum(cls: type[E], value: E | str) -> Any:
    """The wire value of an enum member or of its name (case-insensitive)."""
    member = cls[value.upper()] if isinstance(value, str) else cls(value)
    return int(member)


def spec_of(job: JobRequest | job_pb2.JobSpec | str, *, request_id: bool = True) -> job_pb2.JobSpec:
    """A JobSpec from a request, a ready spec (sent unchanged) or a bare prompt."""
    if isinstance(job, str):
        job = JobRequest(prompt=job)
    if isinstance(job, JobRequest):
        return job.to_spec(request_id=request_id)
    return job


def batch_request(
    jobs: Iterable[JobRequest | job_pb2.JobSpec | str], client_request_id: str | None
) -> job_service_pb2.SubmitBatchRequest:
    """SubmitBatch's request; the batch gets a fresh idempotency key unless one is given."""
    return job_service_pb2.SubmitBatchRequest(
        jobs=[spec_of(job, request_id=False) for job in jobs],
        client_request_id=client_request_id or str(uuid.uuid4()),
    )
