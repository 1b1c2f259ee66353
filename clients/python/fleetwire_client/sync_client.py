"""The blocking client. ``AsyncClient`` (async_client.py) has the same surface for asyncio.

Every call has a deadline (``timeout`` seconds, default the client's) that bounds the whole
call including retries; UNAVAILABLE and RESOURCE_EXHAUSTED are retried per the
``RetryPolicy`` (honouring the server's RetryInfo); every failure is raised as a typed
``FleetwireError`` (errors.py), never as a raw ``grpc.RpcError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire.v1.job_service_pb2 import NodeKey
from fleetwire_client.errors import Unavailable, error_from_rpc
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
from fleetwire_client.transport import channel_credentials
from fleetwire_client.verification import NodeKeyCache, verify_job_with_keys
from fleetwire_client.watch_cursor import WatchCursor

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0


class Client:
    """A blocking fleetwire client over one gRPC channel; use it as a context manager.

    ``address`` defaults to ``$FLEETWIRE_ADDRESS`` or ``127.0.0.1:50051``; ``api_key`` to
    ``$FLEETWIRE_API_KEY`` (sent as ``authorization: Bearer <key>``). The channel is TLS,
    the bridge's certificate verified against ``ca_file`` (``$FLEETWIRE_CA_FILE``) or the
    system's roots; ``insecure=True`` dials plaintext; ``credentials`` overrides both
    (``transport.py``). Thread-safe like the channel.
    """

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
    ) -> None:
        self.address = resolve_address(address)
        self._metadata = call_metadata(api_key)
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        secure = channel_credentials(credentials, ca_file=ca_file, insecure=insecure)
        if secure is None:
            self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(self.address, secure, options=CHANNEL_OPTIONS)
        self._stub = job_service_pb2_grpc.JobServiceStub(self._channel)
        self._node_keys = NodeKeyCache()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; idempotent. Open Watch streams end with Cancelled."""
        self._channel.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel is connected; raises Unavailable after ``timeout``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as err:
            raise Unavailable(f"{self.address} not ready after {timeout}s") from err

    def submit(
        self,
        job: JobRequest | job_pb2.JobSpec | str,
        *,
        timeout: float | None = None,
        traceparent: str | None = None,
    ) -> JobResult:
        """Submits one job and returns it as accepted (QUEUED or later; terminal for
        ``Mode.SYNC``). An answer means the job is stored and queued; an error means it was
        not accepted, except DeadlineExceeded, after which it may still run. The job joins
        the trace ``traceparent`` names, else the caller's current OpenTelemetry span's
        (``trace_metadata``), else one the bridge starts; ``JobResult.trace_id`` says which."""
        request = job_service_pb2.SubmitRequest(job=spec_of(job))
        extra = trace_metadata(traceparent)
        return JobResult(self._unary(self._stub.Submit, request, timeout, extra).job)

    def submit_batch(
        self,
        jobs: Iterable[JobRequest | job_pb2.JobSpec | str],
        *,
        client_request_id: str | None = None,
        timeout: float | None = None,
        traceparent: str | None = None,
    ) -> BatchProgress:
        """Submits every job in one SubmitBatch call under a new batch id: all of them are
        accepted or none (a refusal cancels what was already published, and raises). A retry
        is idempotent: the batch carries ``client_request_id`` (a fresh UUID unless given),
        and the same id returns the original batch. Members must not carry their own id.
        Its jobs share one trace, as for ``submit``."""
        request = batch_request(jobs, client_request_id)
        extra = trace_metadata(traceparent)
        return BatchProgress(self._unary(self._stub.SubmitBatch, request, timeout, extra).batch)

    def batch_status(self, batch_id: str, *, timeout: float | None = None) -> BatchProgress:
        """The batch's aggregate progress. NotFound for an unknown (or another tenant's) id."""
        request = job_service_pb2.BatchStatusRequest(batch_id=batch_id)
        return BatchProgress(self._unary(self._stub.BatchStatus, request, timeout).batch)

    def watch_batch(self, batch_id: str, *, timeout: float | None = None) -> Iterator[BatchEvent]:
        """Yields the current aggregate first, then each member job when it becomes terminal
        with the new aggregate, and ends when every job is terminal. Not resumed when the
        stream drops: follow up with ``batch_status`` and ``status``."""
        call = self._stub.WatchBatch(
            job_service_pb2.WatchBatchRequest(batch_id=batch_id),
            timeout=timeout,
            metadata=self._metadata,
        )
        try:
            for response in call:
                job = JobResult(response.job) if response.HasField("job") else None
                yield BatchEvent(BatchProgress(response.batch), job)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        finally:
            call.cancel()

    def wait_batch(self, batch_id: str, *, timeout: float | None = None) -> list[JobResult]:
        """Follows the batch until every job is terminal; returns the jobs in submission
        order. DeadlineExceeded after ``timeout`` seconds (the jobs keep running)."""
        finished: dict[str, JobResult] = {}
        job_ids: list[str] = []
        for event in self.watch_batch(batch_id, timeout=timeout):
            job_ids = event.progress.job_ids
            if event.job is not None:
                finished[event.job.job_id] = event.job
        return [finished.get(job_id) or self.status(job_id) for job_id in job_ids]

    def status(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """The job's current state (with output and signature when SUCCEEDED). NotFound for
        an unknown id."""
        request = job_service_pb2.StatusRequest(job_id=job_id)
        return JobResult(self._unary(self._stub.Status, request, timeout).job)

    def cancel(self, job_id: str, reason: str = "", *, timeout: float | None = None) -> JobResult:
        """Cancels the job; a terminal job is returned unchanged. NotFound for an unknown id."""
        request = job_service_pb2.CancelRequest(job_id=job_id, reason=reason)
        return JobResult(self._unary(self._stub.Cancel, request, timeout).job)

    def watch(
        self,
        job_id: str,
        *,
        after_sequence: int = 0,
        after_attempt: int = 0,
        timeout: float | None = None,
    ) -> Iterator[WatchEvent]:
        """Yields the job's current state first, then ``Token`` chunks and every state
        change, and ends after a terminal state. A dropped stream (UNAVAILABLE) is resumed
        after the attempt and sequence of the last chunk seen (``watch_cursor``), so a
        retry's new attempt arrives whole from its chunk 1; the resumed stream repeats the
        current state first. ``after_attempt``/``after_sequence`` start after a chunk the
        caller already has (``after_attempt`` 0: after that sequence in any attempt).
        ``timeout`` (default: none) bounds the whole stream, resumptions included."""
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
                for response in call:
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
            time.sleep(delay)

    def tokens(self, job_id: str, *, timeout: float | None = None) -> Iterator[str]:
        """Only the generated text of ``watch``, chunk by chunk."""
        for event in self.watch(job_id, timeout=timeout):
            if isinstance(event, Token):
                yield event.text

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobResult:
        """Follows the job until it is terminal and returns it. DeadlineExceeded after
        ``timeout`` seconds (the job keeps running)."""
        for event in self.watch(job_id, timeout=timeout):
            if isinstance(event, JobResult) and event.terminal:
                return event
        return self.status(job_id)

    def node_keys(self, node_id: str, *, timeout: float | None = None) -> list[NodeKey]:
        """Every key the mesh registered for ``node_id``, newest first (ListNodeKeys)."""
        request = job_service_pb2.ListNodeKeysRequest(node_id=node_id)
        return list(self._unary(self._stub.ListNodeKeys, request, timeout).keys)

    def verify(self, job: JobResult, *, timeout: float | None = None) -> bool:
        """Offline check of ``job``'s signature with the key the mesh registered for its
        node (not the key the job names): fetched once and reused for KEY_RECHECK_S;
        False also for a result signed after its key was revoked."""
        signature = job.message.signature
        if not job.succeeded or not signature.signature:
            return False
        now = time.monotonic()
        keys = self._node_keys.get(signature.node_id, signature.key_id, now)
        if keys is None:
            keys = self.node_keys(signature.node_id, timeout=timeout)
            self._node_keys.put(signature.node_id, keys, now)
        return verify_job_with_keys(job.message, keys)

    def _unary(
        self,
        method: Callable[..., T],
        request: Any,
        timeout: float | None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> T:
        metadata = (*self._metadata, *extra)
        total = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=_left(deadline), metadata=metadata)
            except grpc.RpcError as err:
                error = error_from_rpc(err)
            delay = self._retry.delay_before_retry(attempt, error, time_left=_left(deadline))
            if delay is None:
                raise error
            time.sleep(delay)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
