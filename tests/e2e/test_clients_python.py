"""The Python SDK (clients/python, ``fleetwire_client``) against a live mesh: real bridge,
scheduler and vLLM nodes. The retry tests run a small real gRPC server instead, because the
live mesh's services cannot be stopped here (other runs share them)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from pydantic import SecretStr

from fleetwire.process.settings import PostgresSettings
from fleetwire.store.db import open_pool
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire_client import (
    AsyncClient,
    Client,
    InvalidArgument,
    JobRequest,
    JobResult,
    JobState,
    Mode,
    NotFound,
    Priority,
    ResourceExhausted,
    RetryPolicy,
    Token,
    Unauthenticated,
)
from tests.e2e.conftest import LONG_JOB_TOKENS, LiveMesh

WAIT = 240.0


async def _create_keys(dsn: str, tenants: list[str]) -> list[str]:
    pool = await open_pool(PostgresSettings(dsn=SecretStr(dsn)), migrate=False)
    try:
        store = TenantStore(pool)
        return [(await store.create_key(tenant, name="sdk tests")).secret for tenant in tenants]
    finally:
        await pool.close()


def create_api_keys(live_mesh: LiveMesh, tenants: list[str]) -> list[str]:
    """A new real API key for each tenant, stored in the live mesh's own database."""
    return asyncio.run(_create_keys(live_mesh.env["FLEETWIRE_POSTGRES_DSN"], tenants))


@pytest.fixture(scope="module")
def api_keys(live_mesh: LiveMesh) -> dict[str, str]:
    """Real API keys of two tenants of the live mesh."""
    tenants = ["sdk-tenant-a", "sdk-tenant-b"]
    return dict(zip(tenants, create_api_keys(live_mesh, tenants), strict=True))


def _tampered(result: JobResult, **changes: Any) -> JobResult:
    job = job_pb2.Job()
    job.CopyFrom(result.message)
    for name, value in changes.items():
        if name == "completion_tokens":
            job.usage.completion_tokens = value
        else:
            setattr(job, name, value)
    return JobResult(job)


def _check_signed(live_mesh: LiveMesh, result: JobResult) -> None:
    assert result.state is JobState.SUCCEEDED, (result.job_id, result.error_reason)
    signature = result.signature
    assert signature is not None
    key = live_mesh.public_key(signature.node_id)
    other = live_mesh.public_key("node-2" if signature.node_id == "node-1" else "node-1")
    assert result.verify(key)
    assert result.verify(key.hex())
    assert not result.verify(other), "verified under another node's key"
    assert not _tampered(result, output=result.output + " (edited)").verify(key)
    assert not _tampered(result, completion_tokens=result.completion_tokens + 1).verify(key)
    assert not _tampered(result, job_id="00000000-0000-4000-8000-000000000000").verify(key)


def test_sync_client_submits_streams_tokens_and_verifies(
    live_mesh: LiveMesh, api_keys: dict[str, str]
) -> None:
    with Client(
        live_mesh.bridge_address, ca_file=live_mesh.ca_file, api_key=api_keys["sdk-tenant-a"]
    ) as client:
        client.wait_ready(30)
        accepted = client.submit(
            JobRequest(prompt="the sync SDK says", max_tokens=24, mode=Mode.STREAM, seed=1)
        )
        assert accepted.state is JobState.QUEUED
        assert accepted.spec.priority == Priority.NORMAL

        tokens: list[Token] = []
        states: list[JobState] = []
        for event in client.watch(accepted.job_id, timeout=WAIT):
            if isinstance(event, Token):
                tokens.append(event)
            else:
                states.append(event.state)
        final = client.status(accepted.job_id)

    assert states[-1] is JobState.SUCCEEDED
    # Chunks of the attempt that produced the result (a retried job streams the earlier
    # attempts' chunks too, each attempt numbered from 1).
    tokens = [t for t in tokens if t.attempt == final.attempts]
    assert tokens, "no token chunks were streamed"
    assert [t.sequence for t in tokens] == list(range(1, len(tokens) + 1))
    # All of it: the scheduler writes a job's chunks to its stream before it finalises the
    # job, and Watch drains the stream before it sends the terminal state.
    assert "".join(t.text for t in tokens) == final.output
    assert sum(t.token_count for t in tokens) == final.completion_tokens
    _check_signed(live_mesh, final)
    assert final.stream_matched is True, "the scheduler held the stream against the output"
    with Client(
        live_mesh.bridge_address, ca_file=live_mesh.ca_file, api_key=api_keys["sdk-tenant-a"]
    ) as client:
        # With the key the mesh registered for the node, not the one the job names.
        assert client.verify(final)
        assert not client.verify(_tampered(final, output=final.output + " (edited)"))

    # The key is what names the tenant: another tenant does not see the job at all, and a
    # key the mesh never issued is refused.
    with (
        Client(
            live_mesh.bridge_address, ca_file=live_mesh.ca_file, api_key=api_keys["sdk-tenant-b"]
        ) as other,
        pytest.raises(NotFound),
    ):
        other.status(accepted.job_id)
    with (
        Client(
            live_mesh.bridge_address, ca_file=live_mesh.ca_file, api_key="fw_000000000000_bogus"
        ) as stranger,
        pytest.raises(Unauthenticated) as refused,
    ):
        stranger.status(accepted.job_id)
    assert refused.value.reason == "API_KEY_INVALID"


def test_sync_client_cancels_and_maps_errors(live_mesh: LiveMesh) -> None:
    with Client(live_mesh.bridge_address, ca_file=live_mesh.ca_file) as client:
        # A long job (LONG_JOB_TOKENS); on a loaded machine one can still end before the
        # cancel lands, so try up to 5.
        for _ in range(5):
            job = client.submit(
                JobRequest(prompt="long", max_tokens=LONG_JOB_TOKENS, ignore_eos=True)
            )
            cancelled: JobResult | None = None
            for _text in client.tokens(job.job_id, timeout=WAIT):
                if cancelled is None:
                    cancelled = client.cancel(job.job_id, "enough")
            assert cancelled is not None, "no token was streamed before the job ended"
            if cancelled.state is not JobState.SUCCEEDED:
                break
        assert cancelled.state is JobState.CANCELLED
        final = client.status(job.job_id)
        assert final.state is JobState.CANCELLED
        assert final.error_reason == "CANCELLED_BY_CLIENT"

        with pytest.raises(NotFound):
            client.status("00000000-0000-4000-8000-00000000dead")
        with pytest.raises(InvalidArgument) as bad:
            client.submit(JobRequest(prompt="x", model="no-such-model"))
        assert "job.model" in {v.field for v in bad.value.violations}
        assert bad.value.reason


async def test_async_client_submits_streams_tokens_and_verifies(
    live_mesh: LiveMesh, api_keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETWIRE_API_KEY", api_keys["sdk-tenant-b"])  # the key from the env
    async with AsyncClient(live_mesh.bridge_address, ca_file=live_mesh.ca_file) as client:
        await client.wait_ready(30)
        accepted = await client.submit(
            JobRequest(messages=[("user", "the async SDK says")], max_tokens=16, temperature=0.7)
        )
        events = [event async for event in client.watch(accepted.job_id, timeout=WAIT)]
        final = await client.wait(accepted.job_id, timeout=WAIT)
        chunks = [e for e in events if isinstance(e, Token) and e.attempt == final.attempts]
        assert "".join(t.text for t in chunks) == final.output  # all of it: see the sync test
        _check_signed(live_mesh, final)

        with pytest.raises(NotFound):
            await client.cancel("00000000-0000-4000-8000-00000000dead")


async def test_async_batch_and_sync_mode(live_mesh: LiveMesh) -> None:
    async with AsyncClient(live_mesh.bridge_address, ca_file=live_mesh.ca_file) as client:
        jobs = [JobRequest(prompt=f"batch {i}", max_tokens=8, priority="bulk") for i in range(4)]
        batch = await client.submit_batch(jobs, client_request_id="sdk-batch-1")
        assert batch.total == 4
        assert len(set(batch.job_ids)) == 4
        again = await client.submit_batch(jobs, client_request_id="sdk-batch-1")
        assert again.batch_id == batch.batch_id  # idempotent: a retry returns the same batch

        finished = await client.wait_batch(batch.batch_id, timeout=WAIT)
        assert [job.job_id for job in finished] == batch.job_ids
        for job in finished:
            _check_signed(live_mesh, job)
        progress = await client.batch_status(batch.batch_id)
        assert progress.done
        assert progress.succeeded == progress.finished == 4

        synced = await client.submit(
            JobRequest(prompt="sync mode", max_tokens=8, mode="sync"), timeout=WAIT
        )
        assert synced.state is JobState.SUCCEEDED
        _check_signed(live_mesh, synced)


def test_sync_batch_streams_progress(live_mesh: LiveMesh) -> None:
    with Client(live_mesh.bridge_address, ca_file=live_mesh.ca_file) as client:
        batch = client.submit_batch(["one", "two", JobRequest(prompt="three", max_tokens=4)])
        events = list(client.watch_batch(batch.batch_id, timeout=WAIT))
        with pytest.raises(NotFound):
            client.batch_status("00000000-0000-4000-8000-00000000dead")
    assert events[0].job is None
    assert events[-1].progress.done
    done = [event.job for event in events if event.job is not None]
    assert sorted(job.job_id for job in done) == sorted(batch.job_ids)
    assert all(job.state is JobState.SUCCEEDED for job in done)
    counts = [event.progress.finished for event in events]
    assert counts == sorted(counts)
    assert counts[-1] == 3


# --- Retries, against a small real gRPC server -------------------------------------------


class _Refusing(job_service_pb2_grpc.JobServiceServicer):
    """Answers Status with RESOURCE_EXHAUSTED + RetryInfo(delay) ``refusals`` times, then
    OK; records when each call arrived and its metadata."""

    def __init__(self, refusals: int, delay: timedelta) -> None:
        self.refusals = refusals
        self.delay = delay
        self.calls: list[tuple[float, dict[str, str]]] = []

    def Status(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.calls.append((time.monotonic(), dict(context.invocation_metadata())))
        if len(self.calls) <= self.refusals:
            retry = duration_pb2.Duration()
            retry.FromTimedelta(self.delay)
            details = []
            for detail in (
                error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="fleetwire.dev"),
                error_details_pb2.RetryInfo(retry_delay=retry),
            ):
                packed = any_pb2.Any()
                packed.Pack(detail)
                details.append(packed)
            status = status_pb2.Status(
                code=code_pb2.RESOURCE_EXHAUSTED, message="slow down", details=details
            )
            context.abort_with_status(rpc_status.to_status(status))
        return job_service_pb2.StatusResponse(
            job=job_pb2.Job(job_id=request.job_id, state=job_pb2.JOB_STATE_QUEUED)
        )


@pytest.fixture
def refusing_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, _Refusing]]:
    refusals, delay = request.param
    servicer = _Refusing(refusals, timedelta(seconds=delay))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)


def _gaps(servicer: _Refusing) -> list[float]:
    times = [t for t, _ in servicer.calls]
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("refusing_server", [(2, 0.4)], indirect=True)
def test_sync_retry_honours_retry_info(
    refusing_server: tuple[str, _Refusing], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, servicer = refusing_server
    monkeypatch.setenv("FLEETWIRE_API_KEY", "env-key")
    with Client(
        address, insecure=True, retry=RetryPolicy(max_attempts=5, initial_backoff=0.01)
    ) as client:
        job = client.status("job-1", timeout=20)
    assert job.state is JobState.QUEUED
    assert len(servicer.calls) == 3
    assert all(0.35 <= gap <= 2.5 for gap in _gaps(servicer)), _gaps(servicer)
    assert servicer.calls[0][1]["authorization"] == "Bearer env-key"


@pytest.mark.parametrize("refusing_server", [(2, 0.4)], indirect=True)
async def test_async_retry_honours_retry_info(refusing_server: tuple[str, _Refusing]) -> None:
    address, servicer = refusing_server
    async with AsyncClient(
        address, insecure=True, api_key="arg-key", retry=RetryPolicy(max_attempts=5)
    ) as c:
        job = await c.status("job-1", timeout=20)
    assert job.state is JobState.QUEUED
    assert len(servicer.calls) == 3
    assert all(0.35 <= gap <= 2.5 for gap in _gaps(servicer)), _gaps(servicer)
    assert servicer.calls[-1][1]["authorization"] == "Bearer arg-key"


@pytest.mark.parametrize("refusing_server", [(5, 0.2)], indirect=True)
def test_retries_stop_after_max_attempts_with_the_typed_error(
    refusing_server: tuple[str, _Refusing],
) -> None:
    address, servicer = refusing_server
    with (
        Client(address, insecure=True, retry=RetryPolicy(max_attempts=2)) as client,
        pytest.raises(ResourceExhausted) as refused,
    ):
        client.status("job-1", timeout=20)
    assert len(servicer.calls) == 2
    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.retry_delay == timedelta(seconds=0.2)


@pytest.mark.parametrize("refusing_server", [(5, 3.0)], indirect=True)
def test_retry_never_sleeps_past_the_deadline(refusing_server: tuple[str, _Refusing]) -> None:
    address, servicer = refusing_server
    started = time.monotonic()
    with Client(address, insecure=True) as client, pytest.raises(ResourceExhausted):
        client.status("job-1", timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert len(servicer.calls) == 1
