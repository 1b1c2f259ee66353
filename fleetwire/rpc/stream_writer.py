"""Writes to one gRPC stream, one at a time and in order, many messages per write under load.

A stream takes one write at a time. Messages sent while a write is in flight wait and go
out together in the next write (a group commit without a timer, ``Coalescer``): wrapped in
one batch message when the peer said it reads batches, else one after another. An idle
stream pays nothing (the first message is written at once); a busy one pays one gRPC write
— its framing, its syscall, the reader's wake-up — per batch instead of per message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from fleetwire.process.coalescer import Coalescer


class _Sized(Protocol):
    def ByteSize(self) -> int: ...  # noqa: N802 - protobuf's name


M = TypeVar("M", bound=_Sized)

MAX_BATCH_BYTES = 1 << 20
"""A batch holds messages up to this many bytes together (far below gRPC's 4 MiB limit);
a larger message goes on its own."""


class StreamWriter(Generic[M]):
    """``await writer.send(message)`` returns once the write that carried it is done, and
    raises that write's error. ``batch_with(wrap)`` turns batches on: from then on, two or
    more waiting messages are written as ``wrap(messages)``."""

    def __init__(self, write: Callable[[M], Awaitable[None]], *, name: str) -> None:
        self._write = write
        self._wrap: Callable[[Sequence[M]], M] | None = None
        self._pending: Coalescer[M, None] = Coalescer(self._write_all, name=name)

    def batch_with(self, wrap: Callable[[Sequence[M]], M]) -> None:
        self._wrap = wrap

    async def send(self, message: M) -> None:
        await self._pending(message)

    async def drain(self) -> None:
        """Waits until every message sent so far is written (or failed)."""
        await self._pending.drain()

    async def _write_all(self, messages: Sequence[M]) -> list[None]:
        wrap = self._wrap
        if wrap is None or len(messages) == 1:
            for message in messages:
                await self._write(message)
        else:
            for group in _groups(messages):
                await self._write(group[0] if len(group) == 1 else wrap(group))
        return [None] * len(messages)


def _groups(messages: Sequence[M]) -> list[list[M]]:
    """``messages`` in order, split so that no group but a lone message exceeds
    ``MAX_BATCH_BYTES``."""
    groups: list[list[M]] = [[]]
    size = 0
    for message in messages:
        length = message.ByteSize()
        if groups[-1] and size + length > MAX_BATCH_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(message)
        size += length
    return groups
