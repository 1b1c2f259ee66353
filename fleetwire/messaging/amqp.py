"""One reconnecting AMQP connection per process, with errors translated at the boundary.

A process may be given several broker addresses (a cluster's nodes: a comma-separated
``FLEETWIRE_RABBITMQ_URL``). It connects to the first that answers; when that connection
is lost, the next connect starts at the following address (round-robin), so a killed or
paused node is left for the next one without waiting for it to come back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from urllib.parse import urlsplit

import aiormq
import aiormq.abc
import structlog

from fleetwire.domain.errors import BackendUnavailable

log = structlog.get_logger(__name__)

AMQP_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ConnectionClosed,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,
)


def amqp_urls(urls: str | Sequence[str]) -> list[str]:
    """The addresses of ``urls``: a comma-separated string or a sequence of URLs."""
    parts = urls.split(",") if isinstance(urls, str) else list(urls)
    found = [u.strip() for u in parts if u.strip()]
    if not found:
        raise ValueError("no AMQP URL given")
    return found


def safe_url(url: str) -> str:
    """``url`` without its credentials, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}"


class AmqpLink:
    """Lazily (re)opens the connection; ``channel()`` never returns a closed channel.

    A failed connect (every address tried once, in order from the one after the last that
    served) raises BackendUnavailable; the next call tries again, so the process recovers by
    itself when a broker comes back."""

    def __init__(self, urls: str | Sequence[str], *, connect_timeout: float = 5.0) -> None:
        self._urls = amqp_urls(urls)
        self._connect_timeout = connect_timeout
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self._next = 0  # index of the address the next connect tries first
        self.generation = 0  # bumped on every new connection
        self.address = ""  # the connected address, without credentials

    @property
    def is_open(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def connection(self) -> aiormq.abc.AbstractConnection:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                return self._connection
            if self._connection is not None:
                # Lost: start from the next address rather than the one that just failed.
                self._connection = None
                self._next = (self._next + 1) % len(self._urls)
            self._connection = await self._connect_any()
            self.generation += 1
            log.info("amqp connected", generation=self.generation, address=self.address)
            return self._connection

    async def _connect_any(self) -> aiormq.abc.AbstractConnection:
        errors: list[str] = []
        for offset in range(len(self._urls)):
            index = (self._next + offset) % len(self._urls)
            url = self._urls[index]
            try:
                connection = await asyncio.wait_for(aiormq.connect(url), self._connect_timeout)
            except AMQP_ERRORS as err:
                errors.append(f"{safe_url(url)}: {str(err) or type(err).__name__}")
                continue
            self._next = index
            self.address = safe_url(url)
            return connection
        self._next = (self._next + 1) % len(self._urls)
        raise BackendUnavailable("rabbitmq", "; ".join(errors))

    async def channel(self, *, publisher_confirms: bool = True) -> aiormq.abc.AbstractChannel:
        connection = await self.connection()
        try:
            return await connection.channel(publisher_confirms=publisher_confirms)
        except AMQP_ERRORS as err:
            raise BackendUnavailable("rabbitmq", str(err) or type(err).__name__) from err

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                with contextlib.suppress(*AMQP_ERRORS):
                    await self._connection.close()
            self._connection = None
