"""The JobService servicer: protobuf in, domain call, protobuf out; errors mapped once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from broker_bridge.desk import JobDesk
from fleetwire.errors import DeadlineExceeded
from fleetwire.grpc_errors import translate_errors
from fleetwire.topology import HEADER_REQUEST_ID
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpcio ships no type stubs


def trace_id_of(context: Context) -> str:
    """The caller's ``x-request-id`` metadata, or a new id."""
    for key, value in context.invocation_metadata() or ():
        if key == HEADER_REQUEST_ID and isinstance(value, str) and value:
            return value[:128]
    return uuid.uuid4().hex


class JobService(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, desk: JobDesk) -> None:
        self._desk = desk

    @translate_errors
    async def Submit(  # noqa: N802 - gRPC method name
        self, request: job_service_pb2.SubmitRequest, context: Context
    ) -> job_service_pb2.SubmitResponse:
        trace_id = trace_id_of(context)
        await context.send_initial_metadata(((HEADER_REQUEST_ID, trace_id),))
        job = await self._desk.submit(request.job, trace_id=trace_id)
        if request.job.mode == job_pb2.INFERENCE_MODE_SYNC:
            try:
                job = await self._desk.wait_terminal(job.job_id)
            except TimeoutError as err:  # pragma: no cover - grpc cancels first
                raise DeadlineExceeded(f"job {job.job_id} still running") from err
        return job_service_pb2.SubmitResponse(job=job)

    @translate_errors
    async def Status(  # noqa: N802
        self, request: job_service_pb2.StatusRequest, context: Context
    ) -> job_service_pb2.StatusResponse:
        return job_service_pb2.StatusResponse(job=await self._desk.status(request.job_id))

    @translate_errors
    async def Watch(  # noqa: N802
        self, request: job_service_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[job_service_pb2.WatchResponse]:
        async for event in self._desk.watch(request.job_id, after_sequence=request.after_sequence):
            yield event

    @translate_errors
    async def Cancel(  # noqa: N802
        self, request: job_service_pb2.CancelRequest, context: Context
    ) -> job_service_pb2.CancelResponse:
        return job_service_pb2.CancelResponse(
            job=await self._desk.cancel(request.job_id, request.reason)
        )
