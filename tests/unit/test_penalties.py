"""The penalty box: points add up, decay, exclude past the threshold, readmit after the
cooldown."""

from __future__ import annotations

from scheduler.penalties import POINTS, Offence, PenaltyBox, RecordThrottle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def box(clock: FakeClock) -> PenaltyBox:
    return PenaltyBox(threshold=10, cooldown=60, decay_per_minute=1, clock=clock)


def test_a_pattern_of_offences_excludes_then_the_cooldown_readmits() -> None:
    clock = FakeClock()
    penalties = box(clock)
    assert not penalties.penalise("n1", Offence.BAD_SIGNATURE)
    assert penalties.penalise("n1", Offence.BAD_SIGNATURE)  # 10 points: excluded
    assert penalties.is_excluded("n1")
    assert not penalties.is_excluded("n2")
    clock.now += 59
    assert penalties.is_excluded("n1")
    clock.now += 2
    assert not penalties.is_excluded("n1")
    assert penalties.points("n1") == 0


def test_points_decay_so_occasional_failures_are_forgiven() -> None:
    clock = FakeClock()
    penalties = box(clock)
    for _ in range(30):
        assert not penalties.penalise("n1", Offence.FAILURE)
        clock.now += 90  # 1.5 points of decay between 1-point offences
    assert not penalties.is_excluded("n1")


def test_offences_in_quick_succession_exclude() -> None:
    clock = FakeClock()
    penalties = box(clock)
    excluded = [penalties.penalise("n1", Offence.DISPATCH_TIMEOUT) for _ in range(5)]
    assert excluded == [False, False, False, False, True]


def test_every_offence_has_points() -> None:
    assert set(POINTS) == set(Offence)


def test_records_are_throttled_per_node_offence_and_window() -> None:
    """The first few offences of a window get a row each; the rest are one summed row once
    the window is over, so a flood costs a bounded number of rows."""
    now = [0.0]
    throttle = RecordThrottle(per_window=3, window=10.0, clock=lambda: now[0])
    admitted = [throttle.admit("n", Offence.UNEXPECTED_RESULT) for _ in range(50)]
    assert admitted == [True] * 3 + [False] * 47
    assert throttle.admit("other", Offence.UNEXPECTED_RESULT), "per node"
    assert throttle.admit("n", Offence.BAD_SIGNATURE), "per offence"
    assert throttle.due() == [], "the window is not over"
    now[0] = 10.0
    assert throttle.due() == [("n", Offence.UNEXPECTED_RESULT, 47, 47 * 5.0)]
    assert throttle.admit("n", Offence.UNEXPECTED_RESULT), "a new window writes again"
    throttle.admit("n", Offence.UNEXPECTED_RESULT)
    throttle.admit("n", Offence.UNEXPECTED_RESULT)
    throttle.admit("n", Offence.UNEXPECTED_RESULT)
    assert throttle.due(everything=True) == [("n", Offence.UNEXPECTED_RESULT, 1, 5.0)]
