"""The parked messages of DEAD_LETTERED jobs in ``<ns>.dead-letters`` (AMQP access only).

AMQP cannot delete one message by id. ``remove`` takes the queue's messages one by one
without acking them, acks the job's, and hands the others back with one requeueing nack,
which RabbitMQ puts back in their places. While a scan runs the messages it holds are
invisible to other readers, so scans of one replica are serialised; a concurrent scan on
another replica may miss its message (``remove`` then answers False, and the message
stays parked: harmless, PostgreSQL is what makes a replay once only).
"""

from __future__ import annotations

import asyncio
import contextlib

import aiormq
import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.amqp import AMQP_ERRORS, AmqpLink
from fleetwire.messaging.topology import HEADER_JOB_ID, Topology

log = structlog.get_logger(__name__)

# A dead-letters queue this long needs purging, not scanning; the replay still happens.
MAX_SCAN = 5000

_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.ChannelNotFoundEntity,
    *AMQP_ERRORS,
)


class DeadLetterShelf:
    def __init__(self, link: AmqpLink, topology: Topology) -> None:
        self._link = link
        self._queue = topology.dead_letters_queue
        self._topology = topology
        self._lock = asyncio.Lock()

    async def remove(self, job_id: str) -> bool:
        """Removes the parked message of ``job_id``; False when it is not there (or not
        within the first ``MAX_SCAN`` messages). Raises BackendUnavailable when RabbitMQ is
        down; messages taken but not removed go back to the queue in any case."""
        async with self._lock:
            channel = await self._link.channel(publisher_confirms=False)
            try:
                return await self._take(channel, job_id)
            except _BROKER_ERRORS as err:
                raise BackendUnavailable("rabbitmq", str(err) or type(err).__name__) from err
            finally:
                # Closing the channel requeues whatever it still holds, also after an error.
                if not channel.is_closed:
                    with contextlib.suppress(*AMQP_ERRORS):
                        await channel.close()

    async def _take(self, channel: aiormq.abc.AbstractChannel, job_id: str) -> bool:
        await self._topology.declare_base(channel)
        ok = await channel.queue_declare(self._queue, passive=True)
        last_tag: int | None = None
        found = False
        for _ in range(min(int(ok.message_count or 0), MAX_SCAN)):
            message = await channel.basic_get(self._queue, no_ack=False, timeout=10)
            if message.delivery_tag is None:  # empty: others took the rest meanwhile
                break
            properties = message.header.properties
            tagged = (properties.headers or {}).get(HEADER_JOB_ID)
            if isinstance(tagged, bytes):
                tagged = tagged.decode(errors="replace")
            if job_id in (properties.message_id, tagged):
                await channel.basic_ack(message.delivery_tag)
                found = True
                break
            last_tag = message.delivery_tag
        if last_tag is not None:
            await channel.basic_nack(last_tag, multiple=True, requeue=True)
        log.info("dead-letters scanned", job_id=job_id, removed=found)
        return found
