"""The job state machine: which state may follow which, and which never change again.

Stored in PostgreSQL as the enum's name (``"QUEUED"``...). Every state change in the store is
a guarded ``UPDATE ... WHERE state = ANY(predecessors)``, so a late or duplicated event can
never move a job backwards or out of a terminal state.
"""

from __future__ import annotations

from enum import StrEnum

from fleetwire.v1 import job_pb2


class JobState(StrEnum):
    QUEUED = "QUEUED"
    DISPATCHED = "DISPATCHED"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    DEAD_LETTERED = "DEAD_LETTERED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    def to_proto(self) -> job_pb2.JobState:
        value: job_pb2.JobState = job_pb2.JobState.Value(f"JOB_STATE_{self.value}")
        return value

    @classmethod
    def from_proto(cls, value: int) -> JobState:
        name: str = job_pb2.JobState.Name(value)
        return cls(name.removeprefix("JOB_STATE_"))


TERMINAL: frozenset[JobState] = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.EXPIRED,
        JobState.CANCELLED,
        JobState.DEAD_LETTERED,
    }
)

_LIVE = frozenset({JobState.QUEUED, JobState.DISPATCHED, JobState.RUNNING, JobState.RETRYING})

# target state -> states it may be entered from. A redelivered message after a scheduler
# crash finds its job DISPATCHED or RUNNING, hence those may be dispatched again.
_PREDECESSORS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset(),
    JobState.DISPATCHED: _LIVE,
    JobState.RUNNING: frozenset({JobState.DISPATCHED}),
    JobState.RETRYING: frozenset({JobState.DISPATCHED, JobState.RUNNING}),
    JobState.SUCCEEDED: frozenset({JobState.DISPATCHED, JobState.RUNNING}),
    JobState.FAILED: _LIVE,
    JobState.EXPIRED: _LIVE,
    JobState.CANCELLED: _LIVE,
    JobState.DEAD_LETTERED: frozenset({JobState.RETRYING, JobState.DISPATCHED, JobState.RUNNING}),
}


def predecessors(target: JobState) -> frozenset[JobState]:
    """States from which ``target`` may be entered (empty for the initial state)."""
    return _PREDECESSORS[target]


def predecessor_names(target: JobState) -> list[str]:
    """``predecessors(target)`` as the column values a guarded UPDATE compares with."""
    return [state.value for state in _PREDECESSORS[target]]


def can_transition(current: JobState, target: JobState) -> bool:
    """True when ``current → target`` is allowed. Terminal states allow nothing."""
    return current in _PREDECESSORS[target]
