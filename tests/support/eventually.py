"""Waiting for conditions, not for time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    within: float,
    what: str,
    *,
    interval: float = 0.05,
) -> None:
    """Returns as soon as ``predicate`` (plain or async) is true; raises AssertionError
    naming ``what`` when ``within`` seconds pass first. Checked once more at the end, so a
    slow machine costs time, not a false failure."""
    deadline = time.monotonic() + within
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)
