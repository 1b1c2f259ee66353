"""fleetwire.process.coalescer.Coalescer: an idle call runs alone and at once, calls made while a
batch is in flight go together in the next one, answers reach their own callers, an error
reaches every caller of its batch (and only those), and a cancelled caller does not break
the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fleetwire.process.coalescer import Coalescer


class Recorder:
    """A batch function that records its batches and can be held open or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_on: set[int] = set()

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.fail_on & set(items):
            raise RuntimeError(f"batch {list(items)} failed")
        return [item * 10 for item in items]


async def test_an_idle_call_runs_alone_and_gets_its_answer() -> None:
    run = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(run, name="test")
    assert await coalescer(1) == 10
    assert await coalescer(2) == 20
    assert run.batches == [[1], [2]]


async def test_calls_made_during_a_batch_go_together_in_the_next() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer: Coalescer[int, int] = Coalescer(run, name="test")
    first = asyncio.create_task(coalescer(1))
    await asyncio.sleep(0)  # the first batch is in flight (held at the gate)
    rest = [asyncio.create_task(coalescer(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    run.gate.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40]
    assert run.batches == [[1], [2, 3, 4]]
    await coalescer.drain()


async def test_an_error_reaches_the_callers_of_its_batch_only() -> None:
    run = Recorder()
    run.gate.clear()
    run.fail_on = {2}
    coalescer: Coalescer[int, int] = Coalescer(run, name="test")
    first = asyncio.create_task(coalescer(1))
    await asyncio.sleep(0)
    failing = [asyncio.create_task(coalescer(n)) for n in (2, 3)]
    await asyncio.sleep(0)
    run.gate.set()
    assert await first == 10
    for task in failing:
        with pytest.raises(RuntimeError, match="failed"):
            await task
    assert await coalescer(5) == 50  # the coalescer still works afterwards


async def test_a_cancelled_caller_leaves_the_others_their_answers() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer: Coalescer[int, int] = Coalescer(run, name="test")
    calls = [asyncio.create_task(coalescer(n)) for n in (1, 2, 3)]
    await asyncio.sleep(0)
    calls[1].cancel()
    run.gate.set()
    assert await calls[0] == 10
    assert await calls[2] == 30
    assert calls[1].cancelled()
    await coalescer.drain()
