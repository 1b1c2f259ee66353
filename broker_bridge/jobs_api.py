"""The bridge's asynchronous jobs API on its HTTP port: ``POST /v1/jobs`` (202 Accepted and
a ``Location``), ``GET`` / ``DELETE /v1/jobs/{id}``, ``GET /v1/jobs/{id}/events`` (server-
sent events, resumable with ``Last-Event-ID``), ``POST /v1/batches``, ``GET
/v1/batches/{id}``.

No job logic of its own, as the OpenAI endpoints: the caller is the ``Authenticator``'s,
a job is accepted by ``JobDesk.submit`` (which answers only after RabbitMQ confirmed the
publish), followed with ``JobDesk.status`` / ``watch`` (under the tenant's ``WatchSlots``,
shared with gRPC Watch), cancelled with ``JobDesk.cancel``; batches go through
``BatchDesk``. JSON is made in ``jobs_json`` and ``jobs_events``; errors in
``jobs_json.gateway_error`` (the one status mapping of ``openai_responses``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from broker_bridge import jobs_events as events
from broker_bridge import jobs_json
from broker_bridge.auth import Caller
from broker_bridge.batch_desk import BatchDesk
from broker_bridge.desk import JobDesk
from broker_bridge.http_bodies import idempotency_key, read_json
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.openai_responses import ErrorAnswer
from broker_bridge.watch_output import WatchCursor
from broker_bridge.watch_slots import WatchSlots
from fleetwire.domain.errors import FleetwireError
from fleetwire.process.settings import Settings
from fleetwire.process.tracing import current_trace_id
from fleetwire.v1 import job_pb2

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
ErrorMapping = Callable[[FleetwireError], ErrorAnswer]
Guard = Callable[[Handler, ErrorMapping], Handler]
CANCEL_REASON = "cancelled over HTTP (DELETE /v1/jobs/{id})"


class JobsApi:
    """The handlers, over the bridge's own desks, limits and metrics; ``caller``
    authenticates a request (and binds its tenant to the log context)."""

    def __init__(
        self,
        settings: Settings,
        desk: JobDesk,
        batches: BatchDesk,
        watches: WatchSlots,
        metrics: BridgeMetrics,
        caller: Callable[[Request], Awaitable[Caller]],
    ) -> None:
        self._default_max_tokens = settings.bridge.http_default_max_tokens
        self._desk = desk
        self._batches = batches
        self._watches = watches
        self._metrics = metrics
        self._caller = caller

    def routes(self, guard: Guard) -> list[Route]:
        """The routes, each wrapped by ``guard`` (span, error mapping) with this API's
        error naming."""

        def route(path: str, handler: Handler, method: str) -> Route:
            return Route(path, guard(handler, jobs_json.gateway_error), methods=[method])

        return [
            route("/v1/jobs", self.submit, "POST"),
            route("/v1/jobs/{job_id}", self.status, "GET"),
            route("/v1/jobs/{job_id}", self.cancel, "DELETE"),
            route("/v1/jobs/{job_id}/events", self.events, "GET"),
            route("/v1/batches", self.submit_batch, "POST"),
            route("/v1/batches/{batch_id}", self.batch_status, "GET"),
        ]

    async def submit(self, request: Request) -> Response:
        """202 with the accepted job (QUEUED; with a reused ``Idempotency-Key`` and the
        same body, the original job as it is now) and ``Location``."""
        caller = await self._caller(request)
        spec = jobs_json.job_spec_of(
            await read_json(request), default_max_tokens=self._default_max_tokens
        )
        key = idempotency_key(request)
        if key:
            spec.client_request_id = key
        try:
            job = await self._desk.submit(spec, caller=caller, trace_id=current_trace_id())
        except FleetwireError as err:
            self._metrics.refusal(err.code.name, err.reason)
            raise
        self._metrics.accepted(job.spec, caller.tenant_id)
        trace.get_current_span().set_attribute("fleetwire.job_id", job.job_id)
        return JSONResponse(
            jobs_json.job_view(job),
            status_code=202,
            headers={"location": jobs_json.jobs_path(job.job_id)},
        )

    async def status(self, request: Request) -> Response:
        caller = await self._caller(request)
        job = await self._desk.status(request.path_params["job_id"], tenant_id=caller.tenant_id)
        return JSONResponse(jobs_json.job_view(job))

    async def cancel(self, request: Request) -> Response:
        """As gRPC Cancel: the job CANCELLED, or unchanged in the terminal state it had."""
        caller = await self._caller(request)
        job = await self._desk.cancel(
            request.path_params["job_id"], CANCEL_REASON, tenant_id=caller.tenant_id
        )
        return JSONResponse(jobs_json.job_view(job))

    async def events(self, request: Request) -> Response:
        """Server-sent events (``jobs_events``): ``state``, ``chunk`` …, the final
        ``state``, ``done``. Refused before the answer starts — with a status — for an
        unknown job, a bad ``Last-Event-ID`` or no free Watch slot."""
        caller = await self._caller(request)
        job_id, tenant = request.path_params["job_id"], caller.tenant_id
        cursor = events.cursor_of(request.headers.get(events.LAST_EVENT_ID_HEADER))
        await self._desk.status(job_id, tenant_id=tenant)  # 404 before the stream starts
        self._watches.check(tenant)
        return StreamingResponse(
            self._event_stream(job_id, tenant, cursor),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _event_stream(
        self, job_id: str, tenant: str, cursor: WatchCursor
    ) -> AsyncIterator[bytes]:
        last = cursor
        with structlog.contextvars.bound_contextvars(tenant=tenant, job_id=job_id):
            try:
                async with self._watches.held(tenant):
                    final: job_pb2.Job | None = None
                    async for event in self._desk.watch(job_id, tenant_id=tenant, cursor=cursor):
                        if event.HasField("chunk"):
                            last = events.cursor_after(event.chunk)
                            yield events.frame("chunk", events.chunk_data(event.chunk), last)
                        elif event.HasField("job"):
                            final = event.job
                            yield events.frame("state", jobs_json.job_view(event.job), last)
                    if final is not None:
                        done = {"id": job_id, "state": jobs_json.job_view(final)["state"]}
                        yield events.frame("done", done, last)
            except FleetwireError as err:
                # After the answer started: the error's body as an event, then the end.
                log.info("job events ended by an error", reason=err.reason)
                yield events.frame("error", jobs_json.gateway_error(err).body, last)

    async def submit_batch(self, request: Request) -> Response:
        """202 with the batch's aggregate (every job QUEUED) and ``Location``."""
        caller = await self._caller(request)
        specs = jobs_json.batch_specs_of(
            await read_json(request), default_max_tokens=self._default_max_tokens
        )
        try:
            batch = await self._batches.submit(
                specs,
                idempotency_key(request) or "",
                caller=caller,
                trace_id=current_trace_id(),
            )
        except FleetwireError as err:
            self._metrics.refusal(err.code.name, err.reason)
            raise
        for spec in specs:
            self._metrics.accepted(spec, caller.tenant_id)
        return JSONResponse(
            jobs_json.batch_json(batch),
            status_code=202,
            headers={"location": jobs_json.batches_path(batch.batch_id)},
        )

    async def batch_status(self, request: Request) -> Response:
        caller = await self._caller(request)
        batch = await self._batches.status(
            request.path_params["batch_id"], tenant_id=caller.tenant_id
        )
        return JSONResponse(jobs_json.batch_json(batch))
