"""The penalty box: points add up, decay, exclude past the threshold, readmit after the
cooldown."""

from __future__ import annotations

from scheduler.penalties import POINTS, Offence, PenaltyBox


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
