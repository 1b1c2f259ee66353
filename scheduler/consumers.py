"""AMQP consumption: one consumer per route some connected node serves, plus the
dead-letter consumer that records expired and rejected jobs.

Prefetch on a route equals the slots serving it, so unacked deliveries never outnumber the
slots and RabbitMQ keeps the rest in priority order. A route no local node serves is not
consumed at all, so another scheduler replica with such nodes gets its jobs.

On quorum queues (no priorities on RabbitMQ 3.10) a route is one queue per priority class:
each is consumed with the route's prefetch on the route's channel, and a ``PriorityGate``
passes the deliveries on to the dispatcher highest class first, as many at once as the
route has slots. A deferred delivery is republished to its queue and acked rather than
requeued, so deferrals do not count towards the quorum queues' delivery limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiormq.abc
import structlog
from aiormq.exceptions import DeliveryError

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.domain.states import JobState
from fleetwire.messaging.amqp import AMQP_ERRORS, AmqpLink
from fleetwire.messaging.events import JobEvents
from fleetwire.messaging.topology import (
    HEADER_EXPIRES_AT_MS,
    HEADER_LAST_ERROR,
    HEADER_RETRIES,
    Topology,
)
from fleetwire.process.tracing import attached
from fleetwire.store.jobs import JobStore
from fleetwire.v1 import job_pb2
from scheduler.dispatcher import ACK, REQUEUE, Action, Dispatcher, Verdict
from scheduler.job_spans import delivery_context
from scheduler.priority_gate import PriorityGate

log = structlog.get_logger(__name__)

RECONNECT_DELAY = 1.0
_BROKER_DOWN: tuple[type[BaseException], ...] = (BackendUnavailable, *AMQP_ERRORS)


@dataclass(eq=False)
class _RouteConsumer:
    channel: aiormq.abc.AbstractChannel
    consumer_tags: list[str]
    prefetch: int
    gate: PriorityGate | None  # quorum: the route's class queues' deliveries in order


class QueueConsumers:
    """Keeps consumers in step with the registry's routes; rebuilds them after a broker
    outage. ``start``/``stop``; ``stop`` cancels in-flight handlers, which leaves their
    deliveries unacked, so the broker redelivers them."""

    def __init__(
        self,
        link: AmqpLink,
        topology: Topology,
        dispatcher: Dispatcher,
        store: JobStore,
        events: JobEvents,
        routes: Callable[[], dict[str, int]],
        retry_delays: list[timedelta],
    ) -> None:
        self._link = link
        self._topology = topology
        self._dispatcher = dispatcher
        self._store = store
        self._events = events
        self._routes = routes
        self._consumers: dict[str, _RouteConsumer] = {}
        self._dead_channel: aiormq.abc.AbstractChannel | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._generation = -1
        self._publisher: aiormq.abc.AbstractChannel | None = None
        self._declared_stages: set[str] = set()
        self._stage_delays_ms = [int(d.total_seconds() * 1000) for d in retry_delays]

    def routes_changed(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._sync_task = asyncio.create_task(self._sync_forever(), name="consumers-sync")

    async def stop(self) -> None:
        if self._sync_task is not None:
            # The flag as well as the cancel: aiormq may turn a cancel that lands inside a
            # channel call into an error the loop retries on, and the loop must end anyway.
            self._stopping = True
            self._wake.set()
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
            self._sync_task = None
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for consumer in self._consumers.values():
            await _close(consumer.channel)
        self._consumers.clear()
        if self._dead_channel is not None:
            await _close(self._dead_channel)
        if self._publisher is not None:
            await _close(self._publisher)

    async def _sync_forever(self) -> None:
        while not self._stopping:
            try:
                await self._sync()
            except _BROKER_DOWN as err:
                if self._stopping:
                    return
                log.warning("amqp unavailable; retrying", error=str(err) or type(err).__name__)
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races the event.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONNECT_DELAY):
                    await self._wake.wait()
            self._wake.clear()

    async def _sync(self) -> None:
        """Opens, resizes and closes route consumers to match the registry."""
        connection = await self._link.connection()
        if self._link.generation != self._generation or connection.is_closed:
            self._consumers.clear()
            self._dead_channel = None
            self._generation = self._link.generation
        if self._dead_channel is None or self._dead_channel.is_closed:
            self._dead_channel = await self._link.channel(publisher_confirms=False)
            await self._topology.declare_base(self._dead_channel)
            await self._dead_channel.basic_qos(prefetch_count=32)
            await self._dead_channel.basic_consume(
                self._topology.dead_letter_queue, self._on_dead_letter
            )
        wanted = self._routes()
        for route in list(self._consumers):
            stale = self._consumers[route]
            if route not in wanted or stale.channel.is_closed:
                del self._consumers[route]
                await _close(stale.channel)
                log.info("stopped consuming", route=route)
        for route, slots in wanted.items():
            consumer = self._consumers.get(route)
            if consumer is None:
                channel = await self._link.channel(publisher_confirms=False)
                queues = await self._topology.declare_route_queues(channel, route)
                # Per consumer (quorum queues have no channel-wide prefetch): each class
                # queue of a quorum route holds at most ``slots`` deliveries here.
                await channel.basic_qos(prefetch_count=slots)
                gate = PriorityGate(slots) if self._topology.quorum else None
                handler = self._handler_for(route, gate)
                tags = [
                    (await channel.basic_consume(queue, handler)).consumer_tag or ""
                    for queue in queues
                ]
                self._consumers[route] = _RouteConsumer(channel, tags, slots, gate)
                log.info("consuming", route=route, prefetch=slots, queues=len(queues))
            elif consumer.prefetch != slots:
                await consumer.channel.basic_qos(prefetch_count=slots)
                consumer.prefetch = slots
                if consumer.gate is not None:
                    consumer.gate.resize(slots)

    def _handler_for(
        self, route: str, gate: PriorityGate | None
    ) -> Callable[[aiormq.abc.DeliveredMessage], Coroutine[Any, Any, None]]:
        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            task = asyncio.create_task(self._handle_in_turn(route, message, gate))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

        return on_message

    async def _handle_in_turn(
        self, route: str, message: aiormq.abc.DeliveredMessage, gate: PriorityGate | None
    ) -> None:
        if gate is None:
            await self._handle(route, message)
            return
        async with gate.admitted(message.header.properties.priority or 0):
            if message.channel.is_closed:
                # Its channel died while it waited: the broker hands it out again.
                return
            await self._handle(route, message)

    async def _handle(self, route: str, message: aiormq.abc.DeliveredMessage) -> None:
        tag = _tag(message)
        try:
            verdict = await self._dispatcher.handle_delivery(route, message)
        except BackendUnavailable as err:
            log.warning("backing service down; requeueing", route=route, error=err.message)
            await asyncio.sleep(RECONNECT_DELAY)
            verdict = REQUEUE
        except Exception:
            log.exception("delivery handler failed; requeueing", route=route)
            await asyncio.sleep(RECONNECT_DELAY)
            verdict = REQUEUE
        try:
            if verdict.action in (Action.RETRY_STAGE, Action.DEAD_LETTER):
                try:
                    await self._forward(message, verdict)
                except _BROKER_DOWN as err:
                    # Not forwarded: put it straight back; the job is RETRYING or final, and
                    # a redelivery runs or drops it accordingly. Nothing is lost either way.
                    log.warning("forward failed; requeueing", route=route, error=str(err))
                    verdict = REQUEUE
            if (
                verdict.action is Action.REQUEUE
                and self._topology.quorum
                and not message.channel.is_closed  # else the broker requeued it already
            ):
                try:
                    await self._forward(message, verdict)
                    verdict = ACK
                except _BROKER_DOWN as err:
                    log.warning("requeue by republish failed; nacking", error=str(err))
            if verdict.action is Action.REQUEUE:
                await message.channel.basic_nack(tag, requeue=True)
            else:
                await message.channel.basic_ack(tag)
        except AMQP_ERRORS as err:
            # The channel is gone; the broker requeues the delivery by itself.
            log.warning("ack/nack lost with its channel", route=route, error=str(err))

    async def _forward(self, message: aiormq.abc.DeliveredMessage, verdict: Verdict) -> None:
        """Republishes a delivery (confirmed, persistent, same body, routing key and
        priority) to a retry stage, the dead-letters queue or (REQUEUE) back to its route.
        ``x-death`` is dropped so RabbitMQ's cycle detection never discards the message on
        its way back. Raises (one of ``_BROKER_DOWN``) when the broker did not confirm."""
        props = message.header.properties
        headers = {k: v for k, v in (props.headers or {}).items() if k != "x-death"}
        if verdict.reason or verdict.action is not Action.REQUEUE:
            headers[HEADER_LAST_ERROR] = verdict.reason[:512]
        expiration = props.expiration
        expires_at_ms = headers.get(HEADER_EXPIRES_AT_MS)
        if isinstance(expires_at_ms, int):
            remaining = expires_at_ms - int(time.time() * 1000)
            expiration = str(max(1, remaining))
        delay_ms = 0
        if verdict.action is Action.RETRY_STAGE:
            headers[HEADER_RETRIES] = verdict.stage + 1
            delay_ms = self._stage_delays_ms[verdict.stage]
            exchange = self._topology.retry_stage(verdict.stage, delay_ms)
            routing_key = message.routing_key or ""
        elif verdict.action is Action.REQUEUE:
            exchange, routing_key = self._topology.jobs_exchange, message.routing_key or ""
        else:
            exchange, routing_key, expiration = "", self._topology.dead_letters_queue, None
        channel = await self._publish_channel()
        if verdict.action is Action.RETRY_STAGE and exchange not in self._declared_stages:
            await self._topology.declare_retry_stage(channel, verdict.stage, delay_ms)
            self._declared_stages.add(exchange)
        try:
            confirmation = await channel.basic_publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                mandatory=True,
                timeout=10,
                properties=aiormq.spec.Basic.Properties(
                    content_type=props.content_type,
                    message_type=props.message_type,
                    delivery_mode=2,
                    priority=props.priority,
                    expiration=expiration,
                    message_id=props.message_id,
                    timestamp=props.timestamp,
                    headers=headers,
                ),
            )
        except DeliveryError as err:  # nacked (PublishError: returned): not forwarded
            # A channel that saw a quorum queue's leader go keeps nacking: use a new one.
            self._publisher = None
            await _close(channel)
            raise ConnectionError(f"forward refused: {err}") from err
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise ConnectionError(f"forward not confirmed: {confirmation!r}")

    async def _publish_channel(self) -> aiormq.abc.AbstractChannel:
        if self._publisher is None or self._publisher.is_closed:
            self._declared_stages.clear()
            self._publisher = await self._link.channel(publisher_confirms=True)
        return self._publisher

    async def _on_dead_letter(self, message: aiormq.abc.DeliveredMessage) -> None:
        """Records a dead-lettered job (expired in its queue, or rejected) once, then acks;
        in the job's trace (its log lines carry the trace id)."""
        headers = message.header.properties.headers or {}
        with attached(delivery_context(headers)):
            await self._record_dead_letter(message)

    async def _record_dead_letter(self, message: aiormq.abc.DeliveredMessage) -> None:
        try:
            envelope = job_pb2.Job()
            envelope.ParseFromString(message.body)
            reason = _death_reason(message)
            if reason == "expired":
                state, code, text = JobState.EXPIRED, "TTL_EXPIRED", "TTL ran out while queued"
            else:
                state, code, text = JobState.FAILED, "REJECTED", f"dead-lettered: {reason}"
            row = await self._store.end_job(
                uuid.UUID(envelope.job_id), state, reason=code, message=text
            )
            if row is not None and row["state"] == state:
                log.info("job dead-lettered", job_id=envelope.job_id, state=state.value)
                await self._events.publish_state(envelope.job_id, state)
            await message.channel.basic_ack(_tag(message))
        except BackendUnavailable as err:
            log.warning("dead letter not recorded yet", error=err.message)
            await asyncio.sleep(RECONNECT_DELAY)
            await message.channel.basic_nack(_tag(message), requeue=True)
        except ValueError:
            log.exception("malformed dead letter dropped")
            await message.channel.basic_ack(_tag(message))


def _tag(message: aiormq.abc.DeliveredMessage) -> int:
    if message.delivery_tag is None:  # set on every consumed delivery
        raise RuntimeError("a consumed delivery without a delivery tag")
    return message.delivery_tag


def _death_reason(message: aiormq.abc.DeliveredMessage) -> str:
    """The ``reason`` of the newest ``x-death`` entry: "expired", "rejected"..."""
    deaths = (message.header.properties.headers or {}).get("x-death")
    if not isinstance(deaths, list) or not deaths or not isinstance(deaths[0], dict):
        return "unknown"
    reason = deaths[0].get("reason")
    return reason.decode() if isinstance(reason, bytes) else str(reason)


async def _close(channel: aiormq.abc.AbstractChannel) -> None:
    if not channel.is_closed:
        with contextlib.suppress(*AMQP_ERRORS):
            await channel.close()
