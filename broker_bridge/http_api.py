"""The bridge's OpenAI-compatible HTTP API (Starlette): ``POST /v1/chat/completions``,
``POST /v1/completions`` (JSON, or server-sent events with ``stream: true``) and
``GET /v1/models``; and, on the same app, the asynchronous jobs API (``jobs_api``:
``/v1/jobs``, ``/v1/batches``). Every request carries an ``X-Request-Id``
(``http_request_ids``).

No job logic of its own: a request is authenticated by ``Authenticator`` (the bearer token
is the tenant's API key), translated by ``openai_requests``, and accepted by the same
``JobDesk.submit`` a gRPC Submit calls (validation, tenant policy, admission, idempotency
with ``Idempotency-Key`` as the client request id). The answer waits with
``JobDesk.wait_terminal`` (final notices) or follows ``JobDesk.watch`` (Redis token
streams), as SYNC Submit and Watch do. Every ``FleetwireError`` becomes OpenAI's error JSON
in one place (``openai_responses.error_answer``); anything else is a 500 naming the trace.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from broker_bridge import openai_responses as answers
from broker_bridge import openapi
from broker_bridge.auth import Authenticator, Caller
from broker_bridge.batch_desk import BatchDesk
from broker_bridge.desk import JobDesk
from broker_bridge.http_bodies import (
    MAX_BODY_BYTES,
    MAX_IDEMPOTENCY_KEY_CHARS,
    idempotency_key,
    read_json,
)
from broker_bridge.http_request_ids import RequestIds
from broker_bridge.jobs_api import ErrorMapping, JobsApi
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.openai_requests import Endpoint, spec_of, wants_stream, wants_usage_chunk
from broker_bridge.watch_slots import WatchSlots
from fleetwire.domain.errors import FleetwireError
from fleetwire.messaging.events import REDIS_ERRORS
from fleetwire.process.settings import Settings
from fleetwire.process.tracing import current_trace_id, tracer
from fleetwire.rpc.bearer import AUTHORIZATION
from fleetwire.v1 import job_pb2

# The body limits live in ``http_bodies``; still importable from here (the OpenAPI
# document reads them).
__all__ = ["MAX_BODY_BYTES", "MAX_IDEMPOTENCY_KEY_CHARS", "OpenAIApi", "ServedModels"]

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


ANSWER_GRACE_S = 2.0
"""How long past its TTL a non-streamed answer waits for the job's last state: a result
in flight still lands; after that the client gets a 504 at once rather than after the
deadline reaper's grace (``FLEETWIRE_SCHEDULER_REAP_GRACE``, 30 s)."""


def answer_within(job: job_pb2.Job) -> float:
    """Seconds a non-streamed answer waits for ``job``: what is left of its TTL, plus
    ``ANSWER_GRACE_S``."""
    expires_at: datetime = job.expires_at.ToDatetime(tzinfo=UTC)
    left = (expires_at - datetime.now(UTC)).total_seconds()
    return max(left, 0.0) + ANSWER_GRACE_S


def _error_response(answer: answers.ErrorAnswer) -> JSONResponse:
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class ServedModels:
    """The registry's models that at least one present node advertises now, from the
    schedulers' presence hashes in Redis (``<namespace>:node:<id>``, docs/http.md); the
    registry itself when Redis cannot be asked."""

    def __init__(self, redis: aioredis.Redis, namespace: str, registry: list[str]) -> None:
        self._redis = redis
        self._prefix = f"{namespace}:node:"
        self._registry = registry

    async def now(self) -> list[str]:
        try:
            keys = [k async for k in self._redis.scan_iter(match=f"{self._prefix}*", count=500)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, "models")
                replies: list[Any] = await pipe.execute() if keys else []
            served = {m for reply in replies if reply for m in bytes(reply).decode().split(",")}
        except REDIS_ERRORS as err:
            log.warning("node presence unavailable; listing the registry", error=str(err))
            return list(self._registry)
        return [model for model in self._registry if model in served]


class OpenAIApi:
    """The ASGI app's handlers, over the bridge's own desk, authenticator and limits."""

    def __init__(
        self,
        settings: Settings,
        desk: JobDesk,
        batches: BatchDesk,
        auth: Authenticator,
        watches: WatchSlots,
        metrics: BridgeMetrics,
        models: ServedModels,
    ) -> None:
        self._settings = settings
        self._desk = desk
        self._jobs = JobsApi(settings, desk, batches, watches, metrics, self._caller)
        self._auth = auth
        self._watches = watches
        self._metrics = metrics
        self._models = models

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._guarded(self.chat), methods=["POST"]),
                Route("/v1/completions", self._guarded(self.completions), methods=["POST"]),
                Route("/v1/models", self._guarded(self.list_models), methods=["GET"]),
                Route(openapi.PATH, openapi.endpoint(self._settings), methods=["GET"]),
                *self._jobs.routes(self._guarded),
            ],
            middleware=[Middleware(RequestIds)],
        )

    def _guarded(self, handler: Handler, errors: ErrorMapping = answers.error_answer) -> Handler:
        """Runs ``handler`` in a span of its own with the error mapping (``errors``)
        around it."""

        async def guarded(request: Request) -> Response:
            name = f"{request.method} {request.url.path}"
            with tracer().start_as_current_span(name, kind=trace.SpanKind.SERVER):
                structlog.contextvars.bind_contextvars(http=name)
                try:
                    return await handler(request)
                except FleetwireError as err:
                    return _error_response(errors(err))
                except Exception:
                    trace_id = current_trace_id()
                    log.exception("http request failed", trace_id=trace_id)
                    body = answers.error_body(
                        f"internal error; the server logged it under trace id {trace_id}",
                        kind="server_error",
                        code="internal",
                    )
                    return JSONResponse(body, status_code=500)
                finally:
                    structlog.contextvars.unbind_contextvars("http", "tenant")

        return guarded

    async def _caller(self, request: Request) -> Caller:
        header = request.headers.get(AUTHORIZATION)
        caller = await self._auth.caller(() if header is None else ((AUTHORIZATION, header),))
        structlog.contextvars.bind_contextvars(tenant=caller.tenant_id)
        return caller

    async def list_models(self, request: Request) -> Response:
        await self._caller(request)
        return JSONResponse(answers.model_list(await self._models.now(), created=0))

    async def chat(self, request: Request) -> Response:
        return await self._complete(request, Endpoint.CHAT)

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, Endpoint.COMPLETION)

    async def _complete(self, request: Request, endpoint: Endpoint) -> Response:
        caller = await self._caller(request)
        body = await read_json(request)
        spec = spec_of(body, endpoint, idempotency_key=idempotency_key(request))
        if not spec.sampling.max_tokens:
            spec.sampling.max_tokens = self._settings.bridge.http_default_max_tokens
        stream = wants_stream(body)
        if stream:
            spec.mode = job_pb2.INFERENCE_MODE_STREAM
        try:
            job = await self._desk.submit(spec, caller=caller, trace_id=current_trace_id())
        except FleetwireError as err:
            self._metrics.refusal(err.code.name, err.reason)
            raise
        self._metrics.accepted(job.spec, caller.tenant_id)
        trace.get_current_span().set_attribute("fleetwire.job_id", job.job_id)
        chat = endpoint is Endpoint.CHAT
        if stream:
            return await self._streamed(job, caller, chat=chat, usage=wants_usage_chunk(body))
        try:
            async with asyncio.timeout(answer_within(job)):
                job = await self._desk.wait_terminal(
                    job.job_id, tenant_id=caller.tenant_id, job=job
                )
        except TimeoutError:
            return _error_response(answers.overdue_answer(job))
        if job.state != job_pb2.JOB_STATE_SUCCEEDED:
            return _error_response(answers.unfinished_answer(job))
        payload = answers.chat_completion(job) if chat else answers.text_completion(job)
        return JSONResponse(payload, headers=answers.signature_headers(job))

    async def _streamed(
        self, job: job_pb2.Job, caller: Caller, *, chat: bool, usage: bool
    ) -> Response:
        """Server-sent events: a first chunk (the role), one chunk per token chunk as the
        node streams it (a retried job's earlier attempts included: a sent chunk cannot be
        taken back), a chunk with the finish reason, the usage chunk when asked, ``[DONE]``.
        A job that ends without output sends OpenAI's error object instead."""
        self._watches.check(caller.tenant_id)  # refused (429) before the response starts
        job_id, model, created = job.job_id, job.spec.model, int(time.time())

        def chunk(**fields: Any) -> bytes:
            return _sse(
                answers.stream_chunk(job_id, chat=chat, model=model, created=created, **fields)
            )

        async def events() -> AsyncIterator[bytes]:
            try:
                async with self._watches.held(caller.tenant_id):
                    yield chunk(first=True, text="" if chat else None)
                    final = job
                    async for event in self._desk.watch(job_id, tenant_id=caller.tenant_id):
                        if event.HasField("chunk"):
                            yield chunk(text=event.chunk.text)
                        elif event.HasField("job"):
                            final = event.job
                    if final.state != job_pb2.JOB_STATE_SUCCEEDED:
                        yield _sse(answers.unfinished_answer(final).body)
                        return
                    yield chunk(finish_reason=answers.finish_reason_of(final))
                    if usage:
                        yield _sse(answers.usage_chunk(final, chat=chat))
                    yield b"data: [DONE]\n\n"
            except FleetwireError as err:
                yield _sse(answers.error_answer(err).body)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={answers.JOB_ID_HEADER: job_id, "cache-control": "no-cache"},
        )
