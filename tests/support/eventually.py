"""Waiting for conditions, not for time: the one helper every suite uses."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    within: float,
    what: str,
    *,
    interval: float = 0.05,
) -> T:
    """Calls ``probe`` (plain or async) until it returns something truthy, and returns
    that; raises AssertionError naming ``what`` (and the last value seen) when ``within``
    seconds pass first. Checked once more at the end, so a slow machine costs time, not a
    false failure."""
    deadline = time.monotonic() + within
    while True:
        outcome = probe()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        value = cast(T, outcome)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T],
    within: float,
    what: str,
    *,
    interval: float = 0.05,
) -> T:
    """``eventually`` for synchronous tests and fixtures (the end-to-end tests drive their
    mesh from plain functions): the same contract, with a plain ``probe``."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what} (last: {value!r})")
        time.sleep(interval)
