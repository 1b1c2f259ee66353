"""RabbitMQ topology: names, routing keys, priorities and idempotent declaration.

``<ns>.jobs`` (topic) routes ``<network>.<model>`` to the durable classic queue
``<ns>.jobs.<network>.<model>`` (``x-max-priority``; classic because quorum queues carry no
priorities on RabbitMQ 3.10), and a subcloud's jobs ``<network>.<model>.<subcloud>`` to a
queue of their own. A subcloud name (``SUBCLOUD_NAME``: 1 to 64 of ``[a-z0-9-]``, starting
with a letter or digit) is its own routing-key word, unchanged, so two subclouds never
share a queue; jobs and nodes with any other name are refused before they get here.
Messages that expire or are rejected there dead-letter through ``<ns>.dlx`` (fanout) into
``<ns>.dead``, where the scheduler records them as EXPIRED or FAILED — the broker does the
expiring, no poller.

Staged retries: stage *n* is a fanout exchange and a queue of the same name,
``<ns>.retry.<n>-<delay>ms``, whose queue TTL is the stage's delay and whose dead-letter
exchange is ``<ns>.jobs``; a message published there keeps its routing key and priority,
waits out the delay and is routed back to its route queue. The delay is part of the name,
so changing the delays declares new queues instead of clashing with the old arguments.
After the last stage a job's message rests in ``<ns>.dead-letters`` for inspection.

Route queues expire when unused (``x-expires``, ``FLEETWIRE_ROUTE_QUEUE_EXPIRES``): no
consumer, no declaration and no ``basic.get`` for that long. A publisher declares a route
again at least every ``ROUTE_REDECLARE_INTERVAL`` while it publishes to it (publishing alone
is not use), and the expiry is longer than the longest job TTL plus that, so every message
an expiring queue still held had expired (and dead-lettered) before. A route queue that
exists with other arguments (declared before expiry existed, or with another value) is
used as it is, with a warning: redeclaring it would be PRECONDITION_FAILED, and an
operator's policy can give it an expiry (docs/operations.md).

Queue type (``FLEETWIRE_RABBITMQ_QUEUE_TYPE``): ``classic`` as above, or ``quorum`` for a
cluster (replicated on three nodes, surviving the loss of one). RabbitMQ 3.10's quorum
queues refuse ``x-max-priority``, so on quorum a route has one queue per priority class,
``<ns>.jobs.<route>.<class word>`` (``CLASS_WORDS``, highest first), bound with the routing
key ``<route>.<class word>`` that ``publish_key`` gives; the scheduler consumes them in
priority order (``scheduler/priority_gate.py``). A class word starts with ``_``, which no
subcloud name may, so ``mainnet.m._urgent`` is never the route of a subcloud. Every quorum
queue dead-letters at least once (``x-dead-letter-strategy``, which needs
``x-overflow: reject-publish``: a full queue nacks the publish instead of dropping the
oldest message), carries ``x-delivery-limit`` and, if set, ``x-max-length``. 3.10 quorum
queues honour ``x-expires``, ``x-message-ttl`` and per-message ``expiration`` (checked on a
live broker: an expired message dead-letters with reason ``expired``); the scheduler's
deadline reaper stays the guarantee either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import aiormq.abc
import structlog
from aiormq.exceptions import ChannelPreconditionFailed

from fleetwire.v1 import job_pb2

if TYPE_CHECKING:
    from fleetwire.process.settings import Settings

log = structlog.get_logger(__name__)

MAX_PRIORITY = 10

DEFAULT_ROUTE_QUEUE_EXPIRES = timedelta(hours=48)
ROUTE_REDECLARE_INTERVAL = timedelta(minutes=1)
"""How often a publisher declares a route again while it publishes to it."""
ROUTE_EXPIRY_MARGIN = timedelta(hours=1)
"""Route expiry beyond the longest job TTL: covers ``ROUTE_REDECLARE_INTERVAL`` and the
broker's timers (checked when the settings load)."""

PRIORITY_OF_CLASS: dict[int, int] = {
    job_pb2.PRIORITY_CLASS_URGENT: 9,
    job_pb2.PRIORITY_CLASS_NORMAL: 5,
    job_pb2.PRIORITY_CLASS_BULK: 1,
    job_pb2.PRIORITY_CLASS_TEST: 0,
}


class QueueType(StrEnum):
    """``FLEETWIRE_RABBITMQ_QUEUE_TYPE``."""

    CLASSIC = "classic"
    QUORUM = "quorum"


CLASS_WORDS: tuple[tuple[str, int], ...] = (
    ("_urgent", PRIORITY_OF_CLASS[job_pb2.PRIORITY_CLASS_URGENT]),
    ("_normal", PRIORITY_OF_CLASS[job_pb2.PRIORITY_CLASS_NORMAL]),
    ("_bulk", PRIORITY_OF_CLASS[job_pb2.PRIORITY_CLASS_BULK]),
    ("_test", PRIORITY_OF_CLASS[job_pb2.PRIORITY_CLASS_TEST]),
)
"""On quorum queues, the routing-key word and AMQP priority of each priority class's queue,
highest first. A message goes to the first class whose priority it reaches."""


def class_word(priority: int) -> str:
    """The ``CLASS_WORDS`` word of an AMQP priority (below every class: the lowest)."""
    for word, least in CLASS_WORDS:
        if priority >= least:
            return word
    return CLASS_WORDS[-1][0]


NETWORK_NAMES: dict[int, str] = {
    job_pb2.NETWORK_MAINNET: "mainnet",
    job_pb2.NETWORK_TESTNET: "testnet",
}

HEADER_JOB_ID = "x-fleetwire-job-id"
# The caller's own request id (gRPC metadata; logged as ``request_id``). Messages of bridges
# from before tracing carried the trace id under this name; a scheduler still reads it from
# a message without ``traceparent``.
HEADER_REQUEST_ID = "x-request-id"
# W3C Trace Context, as OpenTelemetry's AMQP instrumentations carry it: the job's trace,
# its parent the bridge's ``publish`` span; kept when a message goes through a retry stage.
HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"
HEADER_EXPIRES_AT_MS = "x-fleetwire-expires-at-ms"
HEADER_RETRIES = "x-fleetwire-retries"
HEADER_LAST_ERROR = "x-fleetwire-last-error"

_ROUTE_WORD = re.compile(r"[^a-z0-9_-]")
SUBCLOUD_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
"""What a subcloud may be called, for jobs (``JobSpec.constraints.subcloud``) and nodes
(``Hello.subclouds``, the node's config) alike: exactly the names ``route_key`` uses as they
are, so distinct subclouds have distinct queues ("a.b" and "a_b" would not)."""


def route_word(name: str) -> str:
    """A model name made safe as one routing-key word (dots and slashes become ``_``)."""
    return _ROUTE_WORD.sub("_", name.lower())


@dataclass(frozen=True, slots=True)
class Topology:
    """Every broker name of one mesh namespace; ``route_queue_expires`` is the route
    queues' ``x-expires`` (0: none)."""

    namespace: str
    route_queue_expires: timedelta = DEFAULT_ROUTE_QUEUE_EXPIRES
    queue_type: QueueType = QueueType.CLASSIC
    delivery_limit: int = 20
    max_length: int = 0  # quorum route queues' x-max-length; 0: none
    _mismatched: set[str] = field(default_factory=set, compare=False, repr=False)

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        """The topology the settings describe (namespace, expiry, queue type)."""
        return cls(
            settings.mesh.namespace,
            route_queue_expires=settings.mesh.route_queue_expires,
            queue_type=settings.rabbitmq.queue_type,
            delivery_limit=settings.rabbitmq.delivery_limit,
            max_length=settings.rabbitmq.queue_max_length,
        )

    @property
    def quorum(self) -> bool:
        return self.queue_type is QueueType.QUORUM

    def _typed(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``arguments`` for this queue type: classic as they are; quorum without
        ``x-max-priority`` and with the quorum arguments (module docstring)."""
        if not self.quorum:
            return arguments
        typed = {k: v for k, v in arguments.items() if k != "x-max-priority"}
        typed["x-queue-type"] = "quorum"
        typed["x-overflow"] = "reject-publish"
        if "x-dead-letter-exchange" in typed:
            # Without a dead-letter exchange a delivery limit would drop the message.
            typed["x-dead-letter-strategy"] = "at-least-once"
            typed["x-delivery-limit"] = self.delivery_limit
        return typed

    @property
    def jobs_exchange(self) -> str:
        return f"{self.namespace}.jobs"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead"

    @property
    def dead_letters_queue(self) -> str:
        """Where messages of DEAD_LETTERED jobs rest (published there by the scheduler)."""
        return f"{self.namespace}.dead-letters"

    def retry_stage(self, stage: int, delay_ms: int) -> str:
        """Name of retry stage ``stage`` (0-based): its exchange and its queue."""
        return f"{self.namespace}.retry.{stage + 1}-{delay_ms}ms"

    async def declare_retry_stage(
        self, channel: aiormq.abc.AbstractChannel, stage: int, delay_ms: int
    ) -> str:
        """Declares stage ``stage``'s exchange and delay queue (idempotent)."""
        name = self.retry_stage(stage, delay_ms)
        await channel.exchange_declare(name, exchange_type="fanout", durable=True)
        await channel.queue_declare(
            name,
            durable=True,
            arguments=self._typed(
                {
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": self.jobs_exchange,
                    "x-max-priority": MAX_PRIORITY,
                }
            ),
        )
        await channel.queue_bind(name, name, "")
        return name

    def route_key(self, network: str, model: str, subcloud: str = "") -> str:
        """``<network>.<model>``, or ``<network>.<model>.<subcloud>`` for a private pool's
        jobs (their own queue, consumed only where member nodes are connected).

        Raises ValueError for a subcloud that is not a ``SUBCLOUD_NAME``: callers validate
        names first (INVALID_ARGUMENT), so reaching this is a bug, never a shared queue."""
        key = f"{network}.{route_word(model)}"
        if not subcloud:
            return key
        if not SUBCLOUD_NAME.fullmatch(subcloud):
            raise ValueError(f"not a subcloud name: {subcloud!r}")
        return f"{key}.{subcloud}"

    def route_queue(self, route_key: str) -> str:
        """The classic queue of a route (``route_queues`` has every queue of either type)."""
        return f"{self.namespace}.jobs.{route_key}"

    def route_queues(self, route_key: str) -> list[str]:
        """Every queue of a route, highest priority first: the one classic queue, or the
        quorum queue of each priority class."""
        if not self.quorum:
            return [self.route_queue(route_key)]
        return [self.route_queue(f"{route_key}.{word}") for word, _ in CLASS_WORDS]

    def publish_key(self, route_key: str, priority: int) -> str:
        """The routing key a job of AMQP ``priority`` on ``route_key`` is published with:
        the route key (classic), or that plus the class word of its priority (quorum)."""
        return f"{route_key}.{class_word(priority)}" if self.quorum else route_key

    def route_of_key(self, routing_key: str) -> str:
        """The route of a routing key ``publish_key`` made."""
        if self.quorum and "." in routing_key:
            head, last = routing_key.rsplit(".", 1)
            if last.startswith("_"):
                return head
        return routing_key

    async def declare_base(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Declares the exchanges and the dead-letter queue (idempotent)."""
        await channel.exchange_declare(self.jobs_exchange, exchange_type="topic", durable=True)
        await channel.exchange_declare(
            self.dead_letter_exchange, exchange_type="fanout", durable=True
        )
        await channel.queue_declare(self.dead_letter_queue, durable=True, arguments=self._typed({}))
        await channel.queue_bind(self.dead_letter_queue, self.dead_letter_exchange, "")
        await channel.queue_declare(
            self.dead_letters_queue, durable=True, arguments=self._typed({})
        )

    def route_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-max-priority": MAX_PRIORITY,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }
        expires_ms = int(self.route_queue_expires.total_seconds() * 1000)
        if expires_ms > 0:
            arguments["x-expires"] = expires_ms
        if self.quorum and self.max_length > 0:
            arguments["x-max-length"] = self.max_length
        return self._typed(arguments)

    async def declare_route(self, channel: aiormq.abc.AbstractChannel, route_key: str) -> str:
        """Declares the route's queues and bindings (``declare_route_queues``); returns the
        first (the classic queue; on quorum, the urgent class's)."""
        return (await self.declare_route_queues(channel, route_key))[0]

    async def declare_route_queues(
        self, channel: aiormq.abc.AbstractChannel, route_key: str
    ) -> list[str]:
        """Declares every queue of the route and its binding (idempotent; it renews the
        queues' expiry); returns their names, highest priority first."""
        if not self.quorum:
            return [await self._declare_queue(channel, self.route_queue(route_key), route_key)]
        return [
            await self._declare_queue(
                channel, self.route_queue(f"{route_key}.{word}"), f"{route_key}.{word}"
            )
            for word, _ in CLASS_WORDS
        ]

    async def _declare_queue(
        self, channel: aiormq.abc.AbstractChannel, queue: str, binding_key: str
    ) -> str:
        """Declares one route queue bound with ``binding_key``. A queue that exists with
        other arguments is used as it is (warned once per process): the declaration is
        tried on a channel of its own, since the broker closes the channel of a
        PRECONDITION_FAILED."""
        probe = await channel.connection.channel(publisher_confirms=False)
        try:
            await probe.queue_declare(queue, durable=True, arguments=self.route_arguments())
        except ChannelPreconditionFailed as err:
            if queue not in self._mismatched:
                self._mismatched.add(queue)
                log.warning(
                    "route queue exists with other arguments; using it as it is (a policy "
                    "can set its expiry: docs/operations.md)",
                    queue=queue,
                    error=str(err),
                )
            await channel.queue_declare(queue, passive=True)
        finally:
            if not probe.is_closed:
                await probe.close()
        await channel.queue_bind(queue, self.jobs_exchange, binding_key)
        return queue
