"""The JobService servicer: protobuf in, domain call, protobuf out; errors mapped once.

Every call is first resolved to a tenant (``authorization`` metadata) and runs in its
trace (the server span ``fleetwire.rpc.telemetry`` made: the caller's W3C ``traceparent``
continued, or a new trace) with its tenant and the caller's ``x-request-id`` bound to the
log context, so every log line of the call carries them and its trace id. The answer's
initial metadata says which trace served the call (``traceresponse``, W3C format); a job
accepted by Submit belongs to that trace, and ``Job.trace_id`` names it ever after.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeAlias

import structlog
from opentelemetry import trace

from broker_bridge.auth import Authenticator, Caller
from broker_bridge.batch_desk import BatchDesk
from broker_bridge.desk import JobDesk
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.submit_stream import answer_stream
from broker_bridge.watch_output import WatchCursor
from broker_bridge.watch_slots import WatchSlots
from fleetwire.domain.errors import (
    DeadlineExceeded,
    FieldViolation,
    FleetwireError,
    Internal,
    InvalidArgument,
)
from fleetwire.messaging.topology import HEADER_REQUEST_ID
from fleetwire.process.tracing import TRACERESPONSE, current_trace_id, traceparent_of, tracer
from fleetwire.rpc.status import status_for
from fleetwire.store.node_keys import NodeKeys
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

log = structlog.get_logger(__name__)

JOB_ID_METADATA = "x-fleetwire-job-id"
MAX_REQUEST_ID_CHARS = 128

Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpcio ships no type stubs


def request_id_of(context: Context) -> str:
    """The caller's ``x-request-id`` metadata (its own correlation id, at most 128
    characters), or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == HEADER_REQUEST_ID and isinstance(value, str) and value:
            return value[:MAX_REQUEST_ID_CHARS]
    return ""


class JobService(job_service_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        desk: JobDesk,
        batches: BatchDesk,
        auth: Authenticator,
        watches: WatchSlots,
        node_keys: NodeKeys,
        metrics: BridgeMetrics,
    ) -> None:
        self._metrics = metrics
        self._node_keys = node_keys
        self._desk = desk
        self._batches = batches
        self._auth = auth
        self._watches = watches

    async def _enter(
        self, context: Context, method: str, *, echo: bool = True
    ) -> tuple[Caller, str]:
        """Binds the call to the log context, says which trace serves it, authenticates;
        returns the caller and the call's trace id."""
        trace_id = current_trace_id()  # of the call's server span
        structlog.contextvars.bind_contextvars(rpc=method)
        request_id = request_id_of(context)
        if request_id:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        if echo:
            await context.send_initial_metadata(((TRACERESPONSE, traceparent_of()),))
        caller = await self._auth.caller(context.invocation_metadata() or ())
        structlog.contextvars.bind_contextvars(tenant=caller.tenant_id)
        return caller, trace_id

    async def Submit(  # noqa: N802 - gRPC method name
        self, request: job_service_pb2.SubmitRequest, context: Context
    ) -> job_service_pb2.SubmitResponse:
        caller, trace_id = await self._enter(context, "Submit", echo=False)

        async def tell_job_id(job: job_pb2.Job) -> None:
            # Sent before a SYNC wait: a client whose deadline runs out still has the job id.
            await context.send_initial_metadata(
                ((TRACERESPONSE, traceparent_of()), (JOB_ID_METADATA, job.job_id))
            )

        return await self._submit(request, caller, trace_id, accepted=tell_job_id)

    async def SubmitStream(  # noqa: N802
        self, requests: AsyncIterator[job_service_pb2.SubmitStreamRequest], context: Context
    ) -> AsyncIterator[job_service_pb2.SubmitStreamResponse]:
        caller, trace_id = await self._enter(context, "SubmitStream")

        async def submit_one(
            request: job_service_pb2.SubmitRequest,
        ) -> job_service_pb2.SubmitResponse:
            if request.job.mode == job_pb2.INFERENCE_MODE_STREAM:
                raise InvalidArgument(
                    [FieldViolation("job.mode", "STREAM is not taken on SubmitStream; use Watch")]
                )
            with tracer().start_as_current_span("submit"):
                return await self._submit(request, caller, trace_id)

        async for answer in answer_stream(requests, submit_one, self._stream_error):
            yield answer

    async def _submit(
        self,
        request: job_service_pb2.SubmitRequest,
        caller: Caller,
        trace_id: str,
        *,
        accepted: Callable[[job_pb2.Job], Awaitable[None]] | None = None,
    ) -> job_service_pb2.SubmitResponse:
        """One Submit, whichever RPC carried it: accepted by the desk, then (SYNC) followed
        until terminal."""
        with self._counting_refusals():
            job = await self._desk.submit(request.job, caller=caller, trace_id=trace_id)
        self._metrics.accepted(job.spec, caller.tenant_id)
        trace.get_current_span().set_attribute("fleetwire.job_id", job.job_id)
        if accepted is not None:
            await accepted(job)
        if job.spec.mode == job_pb2.INFERENCE_MODE_SYNC:
            try:
                job = await self._desk.wait_terminal(
                    job.job_id, tenant_id=caller.tenant_id, job=job
                )
            except TimeoutError as err:  # pragma: no cover - grpc cancels first
                raise DeadlineExceeded(f"job {job.job_id} still running") from err
        return job_service_pb2.SubmitResponse(job=job)

    @staticmethod
    def _stream_error(err: Exception) -> job_service_pb2.SubmitStreamError:
        """The status one Submit of a stream ended with, as Submit's trailer would carry
        it; an unexpected fault is logged and told as INTERNAL with its trace id, as the
        error edge does for a whole call."""
        if not isinstance(err, FleetwireError):
            trace_id = current_trace_id()
            log.error("unexpected error", rpc="SubmitStream", trace_id=trace_id, exc_info=err)
            err = Internal(trace_id)
        error = job_service_pb2.SubmitStreamError()
        error.ParseFromString(status_for(err).SerializeToString())  # the same fields
        return error

    async def Status(  # noqa: N802
        self, request: job_service_pb2.StatusRequest, context: Context
    ) -> job_service_pb2.StatusResponse:
        caller, _ = await self._enter(context, "Status")
        job = await self._desk.status(request.job_id, tenant_id=caller.tenant_id)
        return job_service_pb2.StatusResponse(job=job)

    async def Watch(  # noqa: N802
        self, request: job_service_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[job_service_pb2.WatchResponse]:
        caller, _ = await self._enter(context, "Watch")
        async with self._watches.held(caller.tenant_id):
            cursor = WatchCursor(attempt=request.after_attempt, sequence=request.after_sequence)
            async for event in self._desk.watch(
                request.job_id, tenant_id=caller.tenant_id, cursor=cursor
            ):
                yield event

    async def Cancel(  # noqa: N802
        self, request: job_service_pb2.CancelRequest, context: Context
    ) -> job_service_pb2.CancelResponse:
        caller, _ = await self._enter(context, "Cancel")
        job = await self._desk.cancel(request.job_id, request.reason, tenant_id=caller.tenant_id)
        return job_service_pb2.CancelResponse(job=job)

    async def SubmitBatch(  # noqa: N802
        self, request: job_service_pb2.SubmitBatchRequest, context: Context
    ) -> job_service_pb2.SubmitBatchResponse:
        caller, trace_id = await self._enter(context, "SubmitBatch")
        with self._counting_refusals():
            batch = await self._batches.submit(
                list(request.jobs), request.client_request_id, caller=caller, trace_id=trace_id
            )
        for spec in request.jobs:
            self._metrics.accepted(spec, caller.tenant_id)
        return job_service_pb2.SubmitBatchResponse(batch=batch)

    @contextlib.contextmanager
    def _counting_refusals(self) -> Iterator[None]:
        try:
            yield
        except FleetwireError as err:
            self._metrics.refusal(err.code.name, err.reason)
            raise

    async def BatchStatus(  # noqa: N802
        self, request: job_service_pb2.BatchStatusRequest, context: Context
    ) -> job_service_pb2.BatchStatusResponse:
        caller, _ = await self._enter(context, "BatchStatus")
        batch = await self._batches.status(request.batch_id, tenant_id=caller.tenant_id)
        return job_service_pb2.BatchStatusResponse(batch=batch)

    async def WatchBatch(  # noqa: N802
        self, request: job_service_pb2.WatchBatchRequest, context: Context
    ) -> AsyncIterator[job_service_pb2.WatchBatchResponse]:
        caller, _ = await self._enter(context, "WatchBatch")
        async with self._watches.held(caller.tenant_id):
            async for event in self._batches.watch(request.batch_id, tenant_id=caller.tenant_id):
                yield event

    async def ListNodeKeys(  # noqa: N802
        self, request: job_service_pb2.ListNodeKeysRequest, context: Context
    ) -> job_service_pb2.ListNodeKeysResponse:
        await self._enter(context, "ListNodeKeys")
        return await self._node_keys.list(request.node_id)
