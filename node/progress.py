"""Coalesces one job's generated tokens into Progress messages.

The engine yields a chunk per decoding step (one token per stream, several hundred a second
on a fast engine). Sending each as its own Progress costs a gRPC message on the node, and a
message plus a Redis write in the scheduler, per token; a reader cannot tell 50 ms apart
(20 updates a second). So chunks wait here until ``window`` has passed since the oldest
unsent one, or until ``max_tokens`` tokens are waiting, and then go out as one Progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog

from fleetwire.v1 import node_service_pb2 as nodes_pb2

log = structlog.get_logger(__name__)

Send = Callable[[nodes_pb2.NodeStreamRequest], Awaitable[None]]

SEND_ERRORS = (grpc.RpcError, asyncio.InvalidStateError, ConnectionError)
"""What a write on a broken stream raises; the agent notices the broken stream itself."""


class ProgressBatcher:
    """One job's outgoing token chunks.

    Guarantees: sequence numbers start at 1 and grow by one per Progress; the texts of the
    Progress messages, concatenated, are exactly the texts given to ``add`` (and their token
    counts add up); the first chunk goes out at once (time to first token); after ``close``
    returns every chunk has been handed to ``send``, so a final Result sent afterwards comes
    after all of them. With ``window`` 0 every chunk is its own Progress, sent by ``add``.

    A failed write (broken stream) is logged and the rest of the job's Progress is dropped:
    tokens are a live view, the signed Result carries the whole output.

    Lifecycle: ``add`` any number of times, then ``close`` (flush and stop) on success or
    ``stop`` (discard and stop) on any path; both are idempotent. The batcher owns at most
    one task, started the first time a chunk has to wait.
    """

    def __init__(
        self, job_id: str, attempt: int, send: Send, *, window: float, max_tokens: int
    ) -> None:
        self._job_id = job_id
        self._attempt = attempt
        self._send = send
        self._window = window
        self._max_tokens = max(1, max_tokens)
        self._parts: list[str] = []
        self._tokens = 0
        self._oldest = 0.0  # monotonic time of the oldest unsent chunk
        self._sequence = 0
        self._broken = False
        self._closing = False
        self._pending = asyncio.Event()  # chunks are waiting (or closing)
        self._urgent = asyncio.Event()  # send without waiting out the window
        self._task: asyncio.Task[None] | None = None

    @property
    def sequence(self) -> int:
        """The sequence number of the last Progress sent (0: none yet)."""
        return self._sequence

    async def add(self, text: str, token_count: int) -> None:
        """Queues a chunk; sends it at once when it is the first, or when there is no window."""
        if not text and not token_count:
            return
        if self._closing:
            raise RuntimeError("ProgressBatcher.add after close")
        if not self._parts and not self._tokens:
            self._oldest = time.monotonic()
        self._parts.append(text)
        self._tokens += token_count
        if self._window <= 0 or (self._sequence == 0 and self._task is None):
            await self._send_pending()
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"progress-{self._job_id}")
        self._pending.set()
        if self._tokens >= self._max_tokens:
            self._urgent.set()

    async def close(self) -> None:
        """Sends what is waiting and stops; returns when every chunk was handed to ``send``."""
        self._closing = True
        task = self._task
        if task is None:
            await self._send_pending()
            return
        self._pending.set()
        self._urgent.set()
        await asyncio.wait([task])
        self._task = None
        task.result()  # a failure of the sender is the job's failure

    async def stop(self) -> None:
        """Stops without sending what is waiting (the job failed or was cancelled)."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("progress sender failed", job_id=self._job_id, error=str(task.exception()))

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            if not self._closing:
                delay = self._oldest + self._window - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._urgent.wait()
            await self._send_pending()
            if self._closing and not self._parts and not self._tokens:
                return

    async def _send_pending(self) -> None:
        """One Progress with everything waiting (nothing when nothing waits)."""
        if not self._parts and not self._tokens:
            return
        text, tokens = "".join(self._parts), self._tokens
        self._parts, self._tokens = [], 0
        self._pending.clear()
        self._urgent.clear()
        if self._broken:
            return
        self._sequence += 1
        message = nodes_pb2.NodeStreamRequest(
            progress=nodes_pb2.Progress(
                job_id=self._job_id,
                attempt=self._attempt,
                sequence=self._sequence,
                text=text,
                token_count=tokens,
            )
        )
        try:
            await self._send(message)
        except SEND_ERRORS as err:
            self._broken = True
            log.info("progress not sent; stream broken", job_id=self._job_id, error=str(err))
