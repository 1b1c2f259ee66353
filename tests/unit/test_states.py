"""The job state machine: terminal states are final, the lifecycle is allowed, and the
domain enum and the wire enum stand for the same states."""

from __future__ import annotations

import itertools

import pytest

from fleetwire.domain.states import TERMINAL, JobState, can_transition, predecessors
from fleetwire.v1 import job_pb2

S = JobState
ALL_PAIRS = list(itertools.product(JobState, JobState))


def test_terminal_states_are_the_documented_five() -> None:
    assert {S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELLED, S.DEAD_LETTERED} == TERMINAL
    for state in JobState:
        assert state.is_terminal == (state in TERMINAL)


@pytest.mark.parametrize(
    ("current", "target"),
    [(c, t) for c, t in ALL_PAIRS if c.is_terminal],
    ids=str,
)
def test_terminal_state_never_transitions(current: JobState, target: JobState) -> None:
    assert not can_transition(current, target)
    assert current not in predecessors(target)


def test_nothing_enters_the_initial_state() -> None:
    assert predecessors(S.QUEUED) == frozenset()
    assert not any(can_transition(state, S.QUEUED) for state in JobState)


def test_no_state_transitions_to_itself_except_redispatch() -> None:
    """A redelivered message may dispatch a DISPATCHED job again (scheduler crash); no
    other state may be 'entered' from itself."""
    assert [s for s in JobState if can_transition(s, s)] == [S.DISPATCHED]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param([S.QUEUED, S.DISPATCHED, S.RUNNING, S.SUCCEEDED], id="happy-path"),
        pytest.param([S.QUEUED, S.DISPATCHED, S.SUCCEEDED], id="result-before-accept"),
        pytest.param(
            [S.QUEUED, S.DISPATCHED, S.RUNNING, S.RETRYING, S.DISPATCHED, S.RUNNING, S.SUCCEEDED],
            id="retry-after-running",
        ),
        pytest.param(
            [S.QUEUED, S.DISPATCHED, S.RETRYING, S.DISPATCHED, S.RUNNING, S.SUCCEEDED],
            id="retry-after-dispatch",
        ),
        pytest.param(
            [S.QUEUED, S.DISPATCHED, S.RUNNING, S.RETRYING, S.DEAD_LETTERED], id="dead-letter"
        ),
        pytest.param([S.QUEUED, S.DISPATCHED, S.RUNNING, S.DISPATCHED], id="redelivered"),
    ],
)
def test_lifecycle_is_allowed(path: list[JobState]) -> None:
    for current, target in itertools.pairwise(path):
        assert can_transition(current, target), f"{current} → {target}"


@pytest.mark.parametrize("live", [S.QUEUED, S.DISPATCHED, S.RUNNING, S.RETRYING])
@pytest.mark.parametrize("end", [S.FAILED, S.EXPIRED, S.CANCELLED])
def test_every_live_state_can_fail_expire_or_be_cancelled(live: JobState, end: JobState) -> None:
    assert can_transition(live, end)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.QUEUED, S.RUNNING),
        (S.QUEUED, S.SUCCEEDED),
        (S.QUEUED, S.RETRYING),
        (S.RETRYING, S.RUNNING),
        (S.RETRYING, S.SUCCEEDED),
        (S.RUNNING, S.QUEUED),
    ],
    ids=str,
)
def test_shortcuts_are_refused(current: JobState, target: JobState) -> None:
    assert not can_transition(current, target)


def test_can_transition_agrees_with_predecessors() -> None:
    for current, target in ALL_PAIRS:
        assert can_transition(current, target) == (current in predecessors(target))


@pytest.mark.parametrize("state", list(JobState), ids=str)
def test_proto_round_trip(state: JobState) -> None:
    wire = state.to_proto()
    assert job_pb2.JobState.Name(wire) == f"JOB_STATE_{state.value}"
    assert JobState.from_proto(wire) is state


def test_every_wire_state_but_unspecified_has_a_domain_state() -> None:
    wire = {name for name, _ in job_pb2.JobState.items() if name != "JOB_STATE_UNSPECIFIED"}
    assert wire == {f"JOB_STATE_{s.value}" for s in JobState}


def test_unspecified_is_not_a_state() -> None:
    with pytest.raises(ValueError, match="UNSPECIFIED"):
        JobState.from_proto(job_pb2.JOB_STATE_UNSPECIFIED)
