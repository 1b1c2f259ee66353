"""Penalties: misbehaving nodes lose standing and, past a threshold, work for a while.

Each offence adds points; points decay linearly over time (one ``decay_per_minute`` per
minute), so an occasional hiccup is forgiven and a pattern is not. A node whose points
reach ``threshold`` is excluded from matching for ``cooldown`` and then readmitted with a
clean slate. Pure logic, no I/O: the scheduler records each offence in PostgreSQL itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class Offence(StrEnum):
    DISPATCH_TIMEOUT = "DISPATCH_TIMEOUT"  # did not Accept in time
    LEASE_EXPIRED = "LEASE_EXPIRED"  # went silent mid-job
    FAILURE = "FAILURE"  # a retryable failure
    BAD_SIGNATURE = "BAD_SIGNATURE"  # a result whose signature does not verify
    UNEXPECTED_RESULT = (
        "UNEXPECTED_RESULT"  # result for a job/attempt it does not run (or a replay)
    )
    INVALID_RESULT = "INVALID_RESULT"  # a field no honest node sends (NaN, NUL, too long)
    INFLATED_USAGE = "INFLATED_USAGE"  # signed token counts above what the spec allows
    OVERSIZED_PROGRESS = "OVERSIZED_PROGRESS"  # progress beyond what max_tokens can produce
    NODE_CANCELLED = "NODE_CANCELLED"  # ended a job as CANCELLED that nobody cancelled
    STREAM_MISMATCH = "STREAM_MISMATCH"  # the streamed text is not the signed output
    REJECTED = (
        "REJECTED"  # refused a dispatch: a point each, so only a rate above the decay adds up
    )
    WRONG_ANSWER = "WRONG_ANSWER"  # a validation job answered unlike the nodes that agreed


POINTS: dict[Offence, float] = {
    Offence.DISPATCH_TIMEOUT: 2.0,
    Offence.LEASE_EXPIRED: 2.0,
    Offence.FAILURE: 1.0,
    Offence.BAD_SIGNATURE: 5.0,
    Offence.UNEXPECTED_RESULT: 5.0,
    Offence.INVALID_RESULT: 5.0,
    Offence.INFLATED_USAGE: 5.0,
    Offence.OVERSIZED_PROGRESS: 5.0,
    Offence.NODE_CANCELLED: 2.0,
    Offence.STREAM_MISMATCH: 5.0,
    Offence.REJECTED: 1.0,
    Offence.WRONG_ANSWER: 10.0,
}


@dataclass
class _Standing:
    points: float = 0.0
    updated: float = 0.0
    excluded_until: float = 0.0


@dataclass
class PenaltyBox:
    """Per-node standing. ``threshold`` points exclude a node for ``cooldown`` seconds."""

    threshold: float = 10.0
    cooldown: float = 60.0
    decay_per_minute: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _standings: dict[str, _Standing] = field(default_factory=dict)

    def _current(self, node_id: str) -> _Standing:
        now = self.clock()
        standing = self._standings.setdefault(node_id, _Standing(updated=now))
        elapsed_min = (now - standing.updated) / 60.0
        standing.points = max(0.0, standing.points - elapsed_min * self.decay_per_minute)
        standing.updated = now
        if standing.excluded_until and now >= standing.excluded_until:
            standing.excluded_until = 0.0
            standing.points = 0.0
        return standing

    def penalise(self, node_id: str, offence: Offence) -> bool:
        """Adds the offence's points; True when this offence excluded the node."""
        standing = self._current(node_id)
        if standing.excluded_until:
            return False
        standing.points += POINTS[offence]
        if standing.points >= self.threshold:
            standing.excluded_until = self.clock() + self.cooldown
            return True
        return False

    def is_excluded(self, node_id: str) -> bool:
        return bool(self._current(node_id).excluded_until)

    def excluded_for(self, node_id: str) -> float:
        """Seconds left of the node's exclusion; 0 when it is not excluded."""
        until = self._current(node_id).excluded_until
        return max(0.0, until - self.clock()) if until else 0.0

    def points(self, node_id: str) -> float:
        return self._current(node_id).points


RECORDS_PER_WINDOW = 5
RECORD_WINDOW_S = 10.0


@dataclass
class _Tally:
    started: float
    written: int = 0
    unwritten: int = 0
    points: float = 0.0


@dataclass
class RecordThrottle:
    """Which offences get a penalty row of their own: per node and offence, the first
    ``per_window`` of each ``window`` seconds (with their job and attempt); the rest of the
    window are only counted, and ``due`` hands them out as one summed row when the window
    is over. A node sending offences as fast as it can costs the database at most
    ``per_window`` + 1 rows per offence and window. No I/O here."""

    per_window: int = RECORDS_PER_WINDOW
    window: float = RECORD_WINDOW_S
    clock: Callable[[], float] = time.monotonic
    _tallies: dict[tuple[str, Offence], _Tally] = field(default_factory=dict)

    def admit(self, node_id: str, offence: Offence) -> bool:
        """True: write this offence as a row now; False: it was counted for later."""
        now = self.clock()
        tally = self._tallies.get((node_id, offence))
        if tally is None or now - tally.started >= self.window:
            if tally is not None and tally.unwritten:
                return self._count(tally, offence)  # ``due`` has not taken it yet
            tally = self._tallies[(node_id, offence)] = _Tally(started=now)
        if tally.written < self.per_window:
            tally.written += 1
            return True
        return self._count(tally, offence)

    @staticmethod
    def _count(tally: _Tally, offence: Offence) -> bool:
        tally.unwritten += 1
        tally.points += POINTS[offence]
        return False

    def due(self, *, everything: bool = False) -> list[tuple[str, Offence, int, float]]:
        """(node, offence, count, points) of the counted offences of every window that is
        over (``everything``: of every window, e.g. at shutdown); their windows close."""
        now = self.clock()
        rows = []
        for key, tally in list(self._tallies.items()):
            if not everything and now - tally.started < self.window:
                continue
            if tally.unwritten:
                rows.append((key[0], key[1], tally.unwritten, tally.points))
            del self._tallies[key]
        return rows
