"""The bridge removes possibly-half-written rows once the database answers again."""

from __future__ import annotations

import uuid

import pytest

from broker_bridge import unsettled
from broker_bridge.unsettled import UnsettledRows
from fleetwire.domain.errors import BackendUnavailable
from tests.support.eventually import eventually


class FlakyUndo:
    """Fails ``failures`` times with BackendUnavailable, then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendUnavailable("postgresql", "down")


async def test_undo_is_retried_until_the_database_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(unsettled, "RETRY_EVERY", 0.01)
    rows = UnsettledRows()
    await rows.start()
    key, undo = uuid.uuid4(), FlakyUndo(failures=3)
    rows.remember(key, "job x", undo)
    assert rows.holds(key)
    try:
        await eventually(
            lambda: not rows.holds(key), within=5, interval=0.01, what="the undo to be settled"
        )
    finally:
        await rows.stop()
    assert not rows.holds(key)
    assert undo.calls == 4


async def test_settle_runs_the_undo_now_and_raises_while_down() -> None:
    rows = UnsettledRows()  # not started: only settle() may run the undo
    key, undo = uuid.uuid4(), FlakyUndo(failures=1)
    rows.remember(key, "batch y", undo)
    with pytest.raises(BackendUnavailable):
        await rows.settle(key)
    assert rows.holds(key)
    await rows.settle(key)
    assert not rows.holds(key)
    await rows.settle(key)  # nothing left to do
    assert undo.calls == 2
