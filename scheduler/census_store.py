"""What the mesh census reads (``scheduler.census``): jobs waiting and ledger totals from
PostgreSQL, ready messages from RabbitMQ. Read only; it declares nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

import aiormq
import aiormq.abc
import asyncpg
import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.amqp import AMQP_ERRORS, AmqpLink
from fleetwire.store.db import translating

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT = 2.0
"""Seconds a channel close may take (after a timeout the broker may not answer)."""


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    """Sums over every ledger entry, in micro-credits: ``debits`` (charges, as a positive
    number) and ``credits`` (earnings). Double entry makes them equal."""

    debits: int
    credits: int
    entries: int


class CensusStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @translating
    async def waiting_jobs(self) -> dict[tuple[str, str], int]:
        """(route_key, priority as stored, e.g. ``PRIORITY_CLASS_NORMAL``) -> jobs QUEUED
        or RETRYING there."""
        rows = await self._pool.fetch(
            "SELECT route_key, priority, count(*) AS waiting FROM jobs"
            " WHERE state IN ('QUEUED', 'RETRYING') GROUP BY route_key, priority"
        )
        return {(r["route_key"], r["priority"]): int(r["waiting"]) for r in rows}

    @translating
    async def ledger_totals(self) -> LedgerTotals:
        """One statement, so both sums come from one snapshot: a job's charge and earning
        are written together (``JobStore.finalise_successes``), and the totals differ only
        when the ledger is wrong. Reads the whole table: cheap next to a poll interval up
        to millions of entries."""
        row = await self._pool.fetchrow(
            "SELECT coalesce(sum(-amount) FILTER (WHERE amount < 0), 0) AS debits,"
            " coalesce(sum(amount) FILTER (WHERE amount > 0), 0) AS credits,"
            " count(*) AS entries FROM ledger_entries"
        )
        return LedgerTotals(int(row["debits"]), int(row["credits"]), int(row["entries"]))


class ManagementApi:
    """Unacked messages per queue from RabbitMQ's management plugin (its HTTP API): one
    GET of the vhost's queues per reading, in a worker thread (the standard library's
    HTTP client; the reading is every few seconds). AMQP cannot tell unacked counts."""

    def __init__(self, url: str, vhost: str, *, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        self._base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        self._auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._vhost = urllib.parse.quote(vhost, safe="")
        self._timeout = timeout

    @classmethod
    def of(cls, management_url: str, amqp_url: str, *, timeout: float) -> ManagementApi | None:
        """The API of ``management_url`` for the AMQP URL's vhost (the first URL's, when
        it is a list); None when unset."""
        if not management_url:
            return None
        first = amqp_url.split(",", 1)[0].strip()
        vhost = urllib.parse.unquote(urllib.parse.urlsplit(first).path[1:]) or "/"
        return cls(management_url, vhost, timeout=timeout)

    async def unacked(self) -> dict[str, int]:
        """Queue name -> unacked messages, for every queue of the vhost. Raises
        BackendUnavailable when the API does not answer."""
        try:
            return await asyncio.to_thread(self._fetch)
        except (OSError, ValueError) as err:  # URLError and HTTPError are OSErrors
            raise BackendUnavailable("rabbitmq-management", str(err)) from err

    def _fetch(self) -> dict[str, int]:
        request = urllib.request.Request(
            f"{self._base}/api/queues/{self._vhost}?columns=name,messages_unacknowledged",
            headers={"Authorization": f"Basic {self._auth}"},
        )
        with urllib.request.urlopen(request, timeout=self._timeout) as reply:
            rows = json.loads(reply.read())
        return {str(r["name"]): int(r.get("messages_unacknowledged") or 0) for r in rows}


class QueueCounter:
    """Ready messages of named queues, by passive declare on a channel of its own, and
    their unacked ones from the management plugin when it is configured and answers.

    RabbitMQ's AMQP side answers only the ready count. A passive declare renews a queue's
    ``x-expires`` like any declaration, so callers ask only about queues in use anyway
    (docs/operations.md, route expiry)."""

    def __init__(self, link: AmqpLink, management: ManagementApi | None = None) -> None:
        self._link = link
        self._management = management
        self._channel: aiormq.abc.AbstractChannel | None = None

    async def unacked(self, queues: Iterable[str]) -> dict[str, int] | None:
        """Queue name -> unacked messages (0 for one the API does not list yet); None
        without a management API, or when it does not answer (logged)."""
        if self._management is None:
            return None
        try:
            known = await self._management.unacked()
        except BackendUnavailable as err:
            log.warning("unacked counts not read; management API unavailable", error=err.message)
            return None
        return {queue: known.get(queue, 0) for queue in queues}

    async def ready(self, queues: Iterable[str]) -> dict[str, int]:
        """Queue name -> ready messages; 0 for a queue that does not exist (a retry stage
        never used yet has no messages either). Raises BackendUnavailable when RabbitMQ is
        down."""
        counts: dict[str, int] = {}
        for queue in queues:
            counts[queue] = await self._ready(queue)
        return counts

    async def _ready(self, queue: str) -> int:
        try:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._link.channel(publisher_confirms=False)
            ok = await self._channel.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._channel = None  # the broker closed the channel with its NOT_FOUND
            return 0
        except BackendUnavailable:
            raise
        except AMQP_ERRORS as err:
            self._channel = None
            raise BackendUnavailable("rabbitmq", str(err) or type(err).__name__) from err
        return int(ok.message_count or 0)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*AMQP_ERRORS):  # TimeoutError among them
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await channel.close()
