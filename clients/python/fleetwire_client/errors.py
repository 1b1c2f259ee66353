"""Typed exceptions for failed calls, mapped from gRPC status codes with one table.

The bridge answers every error with a canonical status code and ``google.rpc`` details in
the ``grpc-status-details-bin`` trailer (see ``protos/fleetwire/v1/job_service.proto``):
``ErrorInfo`` (a stable ``reason``) always, ``BadRequest`` for bad fields, ``RetryInfo`` when
a retry may succeed later. ``error_from_rpc`` turns any ``grpc.RpcError`` (sync or aio) into
the exception of ``ERRORS_BY_CODE`` carrying those details; callers never see a raw
``grpc.RpcError`` from this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field, as ``google.rpc.BadRequest`` names it (e.g. ``job.model``)."""

    field: str
    description: str


@dataclass(slots=True)
class ErrorDetails:
    """What the server's ``google.rpc.Status`` details said; every part may be absent."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay: timedelta | None = None
    violations: list[FieldViolation] = field(default_factory=list)


class FleetwireError(Exception):
    """Base of every error raised by the client. ``code`` is the gRPC status code,
    ``reason`` the server's stable ErrorInfo reason ("" when it sent none), and
    ``retry_delay`` the server's RetryInfo delay (None when it sent none)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: ErrorDetails | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or ErrorDetails()

    @property
    def reason(self) -> str:
        return self.details.reason

    @property
    def retry_delay(self) -> timedelta | None:
        return self.details.retry_delay

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"


class InvalidArgument(FleetwireError):
    """The request was malformed; ``violations`` names every bad field. Do not retry."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    @property
    def violations(self) -> list[FieldViolation]:
        return self.details.violations


class NotFound(FleetwireError):
    """No such job (also for jobs of other tenants)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(FleetwireError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(FleetwireError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(FleetwireError):
    """The API key is missing or unknown."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(FleetwireError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(FleetwireError):
    """A queue-depth or rate guard refused the call; retry after ``retry_delay``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(FleetwireError):
    """The bridge, or a service behind it, is down; nothing was accepted. Retryable."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(FleetwireError):
    """The call's deadline passed. A submitted job may still run; follow it by id."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(FleetwireError):
    code = grpc.StatusCode.CANCELLED


class ServerError(FleetwireError):
    """INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED and other codes with no class of their own."""


class VerificationError(Exception):
    """A result's signature does not verify (raised by ``JobResult.verify_or_raise``)."""


ERRORS_BY_CODE: dict[grpc.StatusCode, type[FleetwireError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
}
"""The one mapping from status code to exception class; codes not listed are ServerError."""


def parse_status_details(trailing_metadata: Any) -> ErrorDetails:
    """The ErrorInfo, RetryInfo and BadRequest details of a call's trailers; empty details
    when the trailer is absent or unreadable (a proxy may strip it)."""
    details = ErrorDetails()
    for key, value in trailing_metadata or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # a malformed trailer must not hide the status code
            return details
        for packed in status.details:
            _read_detail(packed, details)
    return details


def _read_detail(packed: Any, details: ErrorDetails) -> None:
    if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
        info = error_details_pb2.ErrorInfo()
        packed.Unpack(info)
        details.reason, details.domain = info.reason, info.domain
        details.metadata = dict(info.metadata)
    elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
        retry = error_details_pb2.RetryInfo()
        packed.Unpack(retry)
        details.retry_delay = retry.retry_delay.ToTimedelta()
    elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
        bad = error_details_pb2.BadRequest()
        packed.Unpack(bad)
        details.violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]


def error_from_status(status: status_pb2.Status) -> FleetwireError:
    """The typed exception for a ``google.rpc.Status`` carried in a message rather than a
    trailer (a SubmitStream answer's error), with its details."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    details = ErrorDetails()
    for packed in status.details:
        _read_detail(packed, details)
    cls = ERRORS_BY_CODE.get(code, ServerError)
    return cls(status.message or code.name, code=code, details=details)


def error_from_rpc(err: grpc.RpcError) -> FleetwireError:
    """The typed exception standing for a failed call (sync ``grpc.Call`` or
    ``grpc.aio.AioRpcError``), with the server's details attached."""
    code_of = getattr(err, "code", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    details_of = getattr(err, "details", None)
    message = (details_of() if callable(details_of) else None) or str(err)
    trailers_of = getattr(err, "trailing_metadata", None)
    trailers = trailers_of() if callable(trailers_of) else None
    cls = ERRORS_BY_CODE.get(code, ServerError)
    return cls(message, code=code, details=parse_status_details(trailers))
