"""The project's error hierarchy and its one mapping to gRPC status.

Handlers raise these; the edge of every gRPC server (``grpc_edge.ErrorEdge``) turns them into
a canonical status code with google.rpc details (ErrorInfo always; BadRequest, RetryInfo
where they apply), and any other exception into ``Internal``. Lower layers (aiormq, asyncpg,
redis) are translated into ``BackendUnavailable`` at the store boundary, so UNAVAILABLE
always means "a backing service is down".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc

ERROR_DOMAIN = "fleetwire.dev"


class ConfigurationError(Exception):
    """A local configuration problem (bad key file, missing model); not a wire error."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request, as google.rpc.BadRequest reports it."""

    field: str
    description: str


class FleetwireError(Exception):
    """Base of every error that crosses the wire. ``reason`` is stable and machine-readable."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(FleetwireError):
    """A request field is malformed or out of bounds."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(f"invalid request: {summary}")
        self.violations = violations


class NotFound(FleetwireError):
    """The object does not exist (or belongs to another tenant)."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(FleetwireError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Unauthenticated(FleetwireError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(FleetwireError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class ResourceExhausted(FleetwireError):
    """A limit was hit; the client may retry after ``retry_delay``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_delay: timedelta,
        reason: str | None = None,
        quota_subject: str = "",
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_delay = retry_delay
        # Which limit was hit ("tenant:acme", "queue:mainnet.tiny-llama"): sent as a
        # google.rpc.QuotaFailure violation when set.
        self.quota_subject = quota_subject


class BackendUnavailable(FleetwireError):
    """A backing service (RabbitMQ, PostgreSQL, Redis) is down or unreachable.

    Nothing was accepted; the client may retry after ``retry_delay``."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "BACKEND_UNAVAILABLE"

    def __init__(
        self, service: str, message: str, *, retry_delay: timedelta = timedelta(seconds=1)
    ) -> None:
        super().__init__(f"{service} is unavailable: {message}")
        self.service = service
        self.retry_delay = retry_delay


class NodeExcluded(FleetwireError):
    """A node's offences exclude it from this scheduler for a while; it may dial again
    after ``retry_delay`` (docs/trust.md)."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "NODE_EXCLUDED"

    def __init__(self, message: str, *, retry_delay: timedelta) -> None:
        super().__init__(message)
        self.retry_delay = retry_delay


class RouteUnavailable(FleetwireError):
    """RabbitMQ returned the job as unroutable: no queue serves its route."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "ROUTE_UNAVAILABLE"


class DeadlineExceeded(FleetwireError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Internal(FleetwireError):
    """An unexpected fault of the server (a bug, not the caller's doing). The client learns
    only this and the trace id under which the server logged the exception; its text stays
    in the log."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self, trace_id: str) -> None:
        super().__init__(f"internal error; the server logged it under trace id {trace_id}")
        self.trace_id = trace_id
