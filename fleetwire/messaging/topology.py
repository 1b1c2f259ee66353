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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiormq.abc
import structlog
from aiormq.exceptions import ChannelPreconditionFailed

from fleetwire.v1 import job_pb2

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
    _mismatched: set[str] = field(default_factory=set, compare=False, repr=False)

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
            arguments={
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": self.jobs_exchange,
                "x-max-priority": MAX_PRIORITY,
            },
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
        return f"{self.namespace}.jobs.{route_key}"

    async def declare_base(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Declares the exchanges and the dead-letter queue (idempotent)."""
        await channel.exchange_declare(self.jobs_exchange, exchange_type="topic", durable=True)
        await channel.exchange_declare(
            self.dead_letter_exchange, exchange_type="fanout", durable=True
        )
        await channel.queue_declare(self.dead_letter_queue, durable=True)
        await channel.queue_bind(self.dead_letter_queue, self.dead_letter_exchange, "")
        await channel.queue_declare(self.dead_letters_queue, durable=True)

    def route_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-max-priority": MAX_PRIORITY,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }
        expires_ms = int(self.route_queue_expires.total_seconds() * 1000)
        if expires_ms > 0:
            arguments["x-expires"] = expires_ms
        return arguments

    async def declare_route(self, channel: aiormq.abc.AbstractChannel, route_key: str) -> str:
        """Declares the route's queue and binding (idempotent; it renews the queue's
        expiry); returns the queue name. A queue that exists with other arguments is used as
        it is (warned once per process): the declaration is tried on a channel of its own,
        since the broker closes the channel of a PRECONDITION_FAILED."""
        queue = self.route_queue(route_key)
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
        await channel.queue_bind(queue, self.jobs_exchange, route_key)
        return queue
