"""Publishes jobs to RabbitMQ: persistent, prioritised, expiring, mandatory, and confirmed
before the caller answers. Shared by the bridge (Submit) and the scheduler (dead-letter
replay), so a job enters the mesh the same way whoever creates it.

Each publication is a ``publish`` span (PRODUCER) of the job's trace, and the message's
``traceparent`` header names it: the scheduler's spans of the job are its children."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiormq
import aiormq.abc
import structlog
from aiormq.exceptions import DeliveryError, PublishError
from opentelemetry.trace import SpanKind

from fleetwire.domain.errors import BackendUnavailable, RouteUnavailable
from fleetwire.messaging.amqp import AMQP_ERRORS, AmqpLink
from fleetwire.messaging.topology import (
    HEADER_EXPIRES_AT_MS,
    HEADER_JOB_ID,
    PRIORITY_OF_CLASS,
    ROUTE_REDECLARE_INTERVAL,
    Topology,
)
from fleetwire.process.tracing import in_trace_of_job, trace_carrier, tracer
from fleetwire.v1 import job_pb2

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JobMessage:
    job_id: str
    route_key: str
    body: bytes  # fleetwire.v1.Job: id, spec, expiry
    priority: int
    ttl: timedelta
    expires_at_ms: int
    trace_id: str  # the job's W3C trace id (its row's ``trace_id``)

    @classmethod
    def of(
        cls,
        job_id: str,
        spec: job_pb2.JobSpec,
        *,
        route_key: str,
        expires_at: datetime,
        trace_id: str,
        ttl: timedelta | None = None,
    ) -> JobMessage:
        """The message of a job whose TTL (``spec.ttl``, or ``ttl`` when what is left of
        it is less) ends at ``expires_at``: the body carries id, spec and expiry, the TTL
        becomes the message expiration and the priority class its AMQP priority."""
        envelope = job_pb2.Job(job_id=job_id, spec=spec)
        envelope.expires_at.FromDatetime(expires_at)
        return cls(
            job_id=job_id,
            route_key=route_key,
            body=envelope.SerializeToString(),
            priority=PRIORITY_OF_CLASS[spec.priority],
            ttl=spec.ttl.ToTimedelta() if ttl is None else ttl,
            expires_at_ms=int(expires_at.timestamp() * 1000),
            trace_id=trace_id,
        )


class JobPublisher:
    """Owns one publishing channel; reconnects by itself after a broker outage."""

    def __init__(self, link: AmqpLink, topology: Topology, *, confirm_timeout: timedelta) -> None:
        self._link = link
        self._topology = topology
        self._confirm_timeout = confirm_timeout.total_seconds()
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._declared: dict[str, float] = {}  # route key -> when declared (monotonic)
        self._lock = asyncio.Lock()

    async def _ready_channel(self) -> aiormq.abc.AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._declared.clear()
                self._channel = await self._link.channel(publisher_confirms=True)
                await self._topology.declare_base(self._channel)
            return self._channel

    async def ensure_route(self, route_key: str) -> None:
        """Declares the route's queue on each new channel, so a job for a known model is
        routable even before any scheduler consumes it, and again when the last declaration
        is older than ``ROUTE_REDECLARE_INTERVAL``: publishing alone does not count as use,
        and a route published to must not expire (``Topology.route_queue_expires``)."""
        channel = await self._ready_channel()
        declared = self._declared.get(route_key)
        now = time.monotonic()
        if declared is None or now - declared >= ROUTE_REDECLARE_INTERVAL.total_seconds():
            await self._topology.declare_route(channel, route_key)
            self._declared[route_key] = now

    async def publish(self, message: JobMessage) -> None:
        """Returns once RabbitMQ confirmed the message. Raises RouteUnavailable when it was
        returned as unroutable and BackendUnavailable when the broker did not confirm it or
        refused it (a nack: a full quorum queue, no quorum).

        The ``publish`` span is a child of the current span when that is in the job's trace
        (Submit), else of an unknown parent in the job's trace (the outbox relay publishing
        a row whose writer died, a replay)."""
        with tracer().start_as_current_span(
            "publish",
            context=in_trace_of_job(message.trace_id),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.destination.name": self._topology.jobs_exchange,
                "messaging.rabbitmq.destination.routing_key": message.route_key,
                "messaging.message.id": message.job_id,
                "fleetwire.job_id": message.job_id,
            },
        ):
            await self._publish(message)

    async def _publish(self, message: JobMessage) -> None:
        try:
            await self.ensure_route(message.route_key)
            channel = await self._ready_channel()
            ttl_ms = max(1, int(message.ttl.total_seconds() * 1000))
            confirmation = await channel.basic_publish(
                message.body,
                exchange=self._topology.jobs_exchange,
                routing_key=self._topology.publish_key(message.route_key, message.priority),
                mandatory=True,
                timeout=self._confirm_timeout,
                properties=aiormq.spec.Basic.Properties(
                    content_type="application/x-protobuf",
                    message_type="fleetwire.v1.Job",
                    delivery_mode=2,
                    priority=message.priority,
                    expiration=str(ttl_ms),
                    message_id=message.job_id,
                    timestamp=datetime.now(UTC),
                    headers={
                        HEADER_JOB_ID: message.job_id,
                        HEADER_EXPIRES_AT_MS: message.expires_at_ms,
                        **trace_carrier(),  # traceparent: this publish span
                    },
                ),
            )
        except PublishError as err:
            raise RouteUnavailable(f"no queue serves route {message.route_key!r}") from err
        except DeliveryError as err:
            # A nack: a full quorum queue (reject-publish), or one whose leader was lost.
            # The channel is dropped: on RabbitMQ 3.10 a channel that saw a quorum queue's
            # leader go keeps nacking it (measured: for 20 s and more), a new one does not.
            await self._drop_channel()
            raise BackendUnavailable("rabbitmq", f"publish refused: {err}") from err
        except BackendUnavailable:
            raise
        except AMQP_ERRORS as err:
            self._channel = None
            raise BackendUnavailable("rabbitmq", str(err) or type(err).__name__) from err
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise BackendUnavailable("rabbitmq", f"publish not confirmed: {confirmation!r}")

    async def _drop_channel(self) -> None:
        async with self._lock:
            channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*AMQP_ERRORS):
                await channel.close()

    async def close(self) -> None:
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                with contextlib.suppress(*AMQP_ERRORS):
                    await self._channel.close()
            self._channel = None
