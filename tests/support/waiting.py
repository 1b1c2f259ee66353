"""Tests wait for conditions, not for time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    within: float,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Calls ``probe`` until it returns something truthy and returns that; fails the test
    with ``what`` (and the last value seen) when ``within`` seconds pass first."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} did not hold within {within:g} s (last: {last!r})")
        await asyncio.sleep(interval)
