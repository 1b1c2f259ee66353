"""FleetwireError → grpc status with google.rpc details, in one place (used by the edge of
every server, ``fleetwire.rpc.edge``, and by handlers that end a stream themselves)."""

from __future__ import annotations

from typing import Any, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from fleetwire.domain.errors import (
    ERROR_DOMAIN,
    BackendUnavailable,
    FleetwireError,
    InvalidArgument,
    NodeExcluded,
    ResourceExhausted,
)


def _packed(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def status_for(error: FleetwireError) -> status_pb2.Status:
    """The google.rpc.Status (with details) that stands for ``error`` on the wire."""
    details = [
        _packed(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=ERROR_DOMAIN, metadata={"code": error.code.name}
            )
        )
    ]
    if isinstance(error, InvalidArgument):
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted) and error.quota_subject:
        details.append(
            _packed(
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(
                            subject=error.quota_subject, description=error.message
                        )
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted | BackendUnavailable | NodeExcluded):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(error.retry_delay)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    code = cast(int, error.code.value[0])
    code_pb2.Code.Name(code)  # every grpc.StatusCode is a google.rpc.Code (else ValueError)
    return status_pb2.Status(code=code, message=error.message, details=details)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: FleetwireError) -> None:
    """Ends the call with ``error``'s status and details."""
    await context.abort_with_status(rpc_status.to_status(status_for(error)))


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ``google.rpc.ErrorInfo`` reason a fleetwire server sent with ``error``, or ""."""
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:  # a status whose details disagree with its code
        return ""
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def retry_delay_of(error: grpc.aio.AioRpcError) -> float | None:
    """The ``google.rpc.RetryInfo`` delay a fleetwire server sent with ``error``, in
    seconds, or None."""
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))
    except ValueError:
        return None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None
