"""The asyncio client: the same surface and guarantees as ``Client`` (sync_client.py), on
``grpc.aio``. Create it inside a running event loop; ``async with`` closes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire.v1.job_service_pb2 import NodeKey
from fleetwire_client.errors import FleetwireError, Unavailable, error_from_rpc
from fleetwire_client.job_requests import (
    CHANNEL_OPTIONS,
    JobRequest,
    batch_request,
    call_metadata,
    resolve_address,
    spec_of,
    trace_metadata,
)
from fleetwire_client.models import (
    BatchEvent,
    BatchProgress,
    JobResult,
    Token,
    WatchEvent,
    event_of,
)
from fleetwire_client.retry import RetryPolicy
from fleetwire_client.submit_stream import SubmitStream
from fleetwire_client.sync_client import DEFAULT_TIMEOUT
from fleetwire_client.transport import channel_credentials
from fleetwire_client.verification import NodeKeyCache, verify_job_with_keys
from fleetwire_client.watch_cursor import WatchCursor

T = TypeVar("T")


class AsyncClient:
    """An asyncio fleetwire client over one ``grpc.aio`` channel. Arguments as ``Client``."""

    def __init__(
        self,
        address: str | None = None,
        *,
        api_key: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        ca_file: str | Path | None = None,
        insecure: bool | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        stream_submits: bool = False,
    ) -> None:
        self.address = resolve_address(address)
        self._metadata = call_metadata(api_key)
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        secure = channel_credentials(credentials, ca_file=ca_file, insecure=insecure)
        if secure is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(self.address, secure, options=CHANNEL_OPTIONS)
        self._stub = job_service_pb2_grpc.JobServiceStub(self._channel)
        self._node_keys = NodeKeyCache()
        # Concurrent POLLING submits share one SubmitStream call (submit_stream.py).
        self._submits = SubmitStream(self._stub, self._metadata) if stream_submits else None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; idempotent. Open Watch streams end with Cancelled."""
        if self._submits is not None:
            await self._submits.close()
        await self._channel.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until the channel is connected; raises Unavailable after ``timeout``."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError as err:
            raise Unavailable(f"{self.address} not ready after {timeout}s") from err

    async def submit(
        self,
        job: JobRequest | job_pb2.JobSpec | str,
        *,
        timeout: float | None = None,
        traceparent: str | None = None,
    ) -> JobResult:
        """As ``Client.submit``. With ``stream_submits=True`` (experimental, off by default:
        see the client's README) a POLLING job without a ``traceparent`` of its own goes on
        the client's SubmitStream (one stream for all concurrent submits; the same
        validation, admission, idempotency and errors as Submit) unless the bridge has no
        SubmitStream; SYNC and STREAM jobs, and traced ones, are a Submit call each."""
        request = job_service_pb2.SubmitRequest(job=spec_of(job))
        extra = trace_metadata(traceparent)
        streams = self._submits
        if (
            streams is not None
            and streams.available
            and not extra
            and request.job.mode == job_pb2.INFERENCE_MODE_POLLING
        ):
            try:
                answer = await self._retrying(lambda left: streams.submit(request, left), timeout)
                return JobResult(answer.job)
            except FleetwireError as err:
                if streams.available or err.code != grpc.StatusCode.UNIMPLEMENTED:
                    raise
        return JobResult((await self._unary(self._stub.Submit, request, timeout, extra)).job)

    async def submit_batch(
        self,
        jobs: Iterable[JobRequest | job_pb2.JobSpec | str],
        *,
        client_request_id: str | None = None,
        timeout: float | None = None,
        traceparent: str | None = None,
    ) -> BatchProgress:
        """As ``Client.submit_batch``: one SubmitBatch call, all jobs or none, idempotent."""
        request = batch_request(jobs, client_request_id)
        extra = trace_metadata(traceparent)
        batch = (await self._unary(self._stub.SubmitBatch, request, timeout, extra)).batch
        return BatchProgress(batch)

    async def batch_status(self, batch_id: str, *, timeout: float | None = None) -> BatchProgress:
        """As ``Client.batch_status``."""
        request = job_service_pb2.BatchStatusRequest(batch_id=batch_id)
        return BatchProgress((await self._unary(self._stub.BatchStatus, request, timeout)).batch)

    async def watch_batch(
        self, batch_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[BatchEvent]:
        """As ``Client.watch_batch``."""
        call = self._stub.WatchBatch(
            job_service_pb2.WatchBatchRequest(batch_id=batch_id),
            timeout=timeout,
            metadata=self._metadata,
        )
        try:
            async for response in call:
                job = JobResult(response.job) if response.HasField("job") else None
                yield BatchEvent(BatchProgress(response.batch), job)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        finally:
            call.cancel()

    async def wait_batch(self, batch_id: str, *, timeout: float | None = None) -> list[JobResult]:
        """As ``Client.wait_batch``."""
        finished: dict[str, JobResult] = {}
        job_ids: list[str] = []
        async for event in self.watch_batch(batch_id, timeout=timeout):
            job_ids = event.progress.job_ids
            if event.job is not None:
                finished[event.job.job_id] = event.job
        return [finished.get(job_id) or await self.status(job_id) for job_id in job_ids]

    async def status(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """As ``Client.status``."""
        request = job_service_pb2.StatusRequest(job_id=job_id)
        return JobResult((await self._unary(self._stub.Status, request, timeout)).job)

    async def cancel(
        self, job_id: str, reason: str = "", *, timeout: float | None = None
    ) -> JobResult:
        """As ``Client.cancel``."""
        request = job_service_pb2.CancelRequest(job_id=job_id, reason=reason)
        return JobResult((await self._unary(self._stub.Cancel, request, timeout)).job)

    async def watch(
        self,
        job_id: str,
        *,
        after_sequence: int = 0,
        after_attempt: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[WatchEvent]:
        """As ``Client.watch``: the current state, then tokens and state changes, ending
        after a terminal state; resumed after the last chunk's attempt and sequence when
        the stream drops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = WatchCursor(attempt=after_attempt, sequence=after_sequence)
        failures = 0
        while True:
            call = self._stub.Watch(
                cursor.request(job_id),
                timeout=_left(deadline),
                metadata=self._metadata,
            )
            try:
                async for response in call:
                    event = event_of(response)
                    if event is None:
                        continue
                    failures = 0
                    if isinstance(event, Token):
                        cursor = cursor.after(event)
                    yield event
                    if isinstance(event, JobResult) and event.terminal:
                        return
                return
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            finally:
                call.cancel()
            failures += 1
            delay = self._retry.delay_before_retry(failures, error, time_left=_left(deadline))
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def tokens(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[str]:
        """Only the generated text of ``watch``, chunk by chunk."""
        async for event in self.watch(job_id, timeout=timeout):
            if isinstance(event, Token):
                yield event.text

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """As ``Client.wait``."""
        async for event in self.watch(job_id, timeout=timeout):
            if isinstance(event, JobResult) and event.terminal:
                return event
        return await self.status(job_id)

    async def node_keys(self, node_id: str, *, timeout: float | None = None) -> list[NodeKey]:
        """Every key the mesh registered for ``node_id``, newest first (ListNodeKeys)."""
        request = job_service_pb2.ListNodeKeysRequest(node_id=node_id)
        return list((await self._unary(self._stub.ListNodeKeys, request, timeout)).keys)

    async def verify(self, job: JobResult, *, timeout: float | None = None) -> bool:
        """``Client.verify``: the job's signature checked with the mesh's key for its node."""
        signature = job.message.signature
        if not job.succeeded or not signature.signature:
            return False
        now = time.monotonic()
        keys = self._node_keys.get(signature.node_id, signature.key_id, now)
        if keys is None:
            keys = await self.node_keys(signature.node_id, timeout=timeout)
            self._node_keys.put(signature.node_id, keys, now)
        return verify_job_with_keys(job.message, keys)

    async def _unary(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        timeout: float | None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> T:
        metadata = (*self._metadata, *extra)
        return await self._retrying(
            lambda left: method(request, timeout=left, metadata=metadata), timeout
        )

    async def _retrying(
        self, attempt_once: Callable[[float | None], Awaitable[T]], timeout: float | None
    ) -> T:
        """``attempt_once(time left)`` until it succeeds, the retry policy gives up or the
        deadline passes; its errors as the typed exceptions."""
        total = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        attempt = 0
        while True:
            attempt += 1
            try:
                return await attempt_once(_left(deadline))
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            except FleetwireError as err:
                error = err
            delay = self._retry.delay_before_retry(attempt, error, time_left=_left(deadline))
            if delay is None:
                raise error
            await asyncio.sleep(delay)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
