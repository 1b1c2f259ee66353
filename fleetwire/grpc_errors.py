"""The edge: FleetwireError → grpc status with google.rpc details, in one place."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from fleetwire.errors import (
    ERROR_DOMAIN,
    BackendUnavailable,
    FleetwireError,
    InvalidArgument,
    ResourceExhausted,
)

log = structlog.get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


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
    if isinstance(error, ResourceExhausted | BackendUnavailable):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(error.retry_delay)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    code = cast(int, error.code.value[0])
    assert code_pb2.Code.Name(code)  # every grpc.StatusCode is a google.rpc.Code
    return status_pb2.Status(code=code, message=error.message, details=details)


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], error: FleetwireError) -> None:
    """Ends the call with ``error``'s status and details."""
    await context.abort_with_status(rpc_status.to_status(status_for(error)))


def translate_errors(handler: F) -> F:
    """Wraps a grpc.aio servicer method (unary or server-streaming) so a FleetwireError
    becomes its canonical status; anything else is logged and becomes INTERNAL."""

    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream_wrapper(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in handler(self, request, context):
                    yield item
            except FleetwireError as err:
                await abort_with(context, err)

        return cast(F, stream_wrapper)

    @functools.wraps(handler)
    async def unary_wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await handler(self, request, context)
        except FleetwireError as err:
            await abort_with(context, err)
            return None

    return cast(F, unary_wrapper)
