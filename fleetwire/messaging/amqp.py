"""One reconnecting AMQP connection per process, with errors translated at the boundary."""

from __future__ import annotations

import asyncio
import contextlib

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


class AmqpLink:
    """Lazily (re)opens the connection; ``channel()`` never returns a closed channel.

    A failed connect raises BackendUnavailable; the next call tries again, so the process
    recovers by itself when the broker comes back."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self.generation = 0  # bumped on every new connection

    @property
    def is_open(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def connection(self) -> aiormq.abc.AbstractConnection:
        async with self._lock:
            if self._connection is not None and not self._connection.is_closed:
                return self._connection
            try:
                self._connection = await asyncio.wait_for(
                    aiormq.connect(self._url), self._connect_timeout
                )
            except AMQP_ERRORS as err:
                raise BackendUnavailable("rabbitmq", str(err) or type(err).__name__) from err
            self.generation += 1
            log.info("amqp connected", generation=self.generation)
            return self._connection

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
