"""What becomes of a job once an attempt is over: a pure decision, no I/O.

The dispatcher classifies how the attempt ended (``Ending``: it verified the result, read
the node's failure, saw the node vanish) and ``settle`` turns that, the attempt's number,
the retry stages already passed and the retry policy into a ``Settlement``: the step to
take, the attempt's recorded outcome, the reason and message to store, and the offence to
charge the node with, if any. The dispatcher only executes it (``Dispatcher._execute``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from scheduler.penalties import Offence


class Ending(Enum):
    """How an attempt ended, as the dispatcher saw it."""

    SUCCEEDED = "succeeded"  # the result verified; the job is final (or had moved on)
    BAD_SIGNATURE = "bad-signature"  # a result whose signature did not verify
    INVALID_RESULT = "invalid-result"  # a result with a field no honest node sends
    NODE_CANCELLED = "node-cancelled"  # the node ended it as CANCELLED; nobody had asked
    CANCELLED = "cancelled"  # aborted because the job was cancelled
    FAILED = "failed"  # the node's failure, not retryable (e.g. the context overran)
    FAILED_RETRYABLE = "failed-retryable"  # the node's failure, worth another attempt
    REJECTED = "rejected"  # the node refused the dispatch
    DISPATCH_TIMEOUT = "dispatch-timeout"  # no Accept in time
    LOST = "lost"  # the node's stream ended mid-job
    LEASE_EXPIRED = "lease-expired"  # the node went silent past its lease mid-job
    DEADLINE_PASSED = "deadline-passed"  # the job's TTL ran out while it ran


class Step(Enum):
    """What the dispatcher does."""

    ACK = "ack"  # nothing to write: the job is settled, or not ours to settle
    FAIL = "fail"  # the attempt and the job FAILED
    EXPIRE = "expire"  # the job EXPIRED (the node is told to stop)
    RETRY_STAGED = "retry-staged"  # the job RETRYING, through retry stage ``stage``
    REQUEUE = "requeue"  # the job RETRYING, straight back to its queue
    DEAD_LETTER = "dead-letter"  # the job DEAD_LETTERED, its message parked


class AttemptOutcome(StrEnum):
    """The outcome recorded on the attempt's row (``attempts.outcome``)."""

    FAILED = "FAILED"
    LOST = "LOST"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    stages: int  # how many delayed retry stages there are


@dataclass(frozen=True, slots=True)
class Settlement:
    step: Step
    reason: str = ""
    message: str = ""
    attempt_outcome: AttemptOutcome | None = None
    offence: Offence | None = None
    stage: int = 0  # for RETRY_STAGED: the stage to go through
    last_error: str = ""  # for DEAD_LETTER: what went wrong last (the parked message's header)


# Endings that go round again: the attempt's outcome, the reason stored, whether the retry
# waits in a stage (failures) or goes straight back (the node, not the job, was the
# problem), and the offence.
_RETRIES: dict[Ending, tuple[AttemptOutcome, str | None, bool, Offence | None]] = {
    Ending.BAD_SIGNATURE: (AttemptOutcome.FAILED, "BAD_SIGNATURE", True, Offence.BAD_SIGNATURE),
    Ending.INVALID_RESULT: (
        AttemptOutcome.FAILED,
        "INVALID_RESULT",
        False,
        Offence.INVALID_RESULT,
    ),
    Ending.NODE_CANCELLED: (AttemptOutcome.FAILED, "NODE_CANCELLED", False, Offence.NODE_CANCELLED),
    Ending.FAILED_RETRYABLE: (AttemptOutcome.FAILED, None, True, Offence.FAILURE),
    Ending.REJECTED: (AttemptOutcome.REJECTED, "REJECTED", False, Offence.REJECTED),
    Ending.DISPATCH_TIMEOUT: (
        AttemptOutcome.LOST,
        "DISPATCH_TIMEOUT",
        False,
        Offence.DISPATCH_TIMEOUT,
    ),
    Ending.LOST: (AttemptOutcome.LOST, "NODE_LOST", False, None),
    Ending.LEASE_EXPIRED: (AttemptOutcome.LOST, "NODE_LOST", False, Offence.LEASE_EXPIRED),
}


def settle(
    ending: Ending,
    *,
    attempt: int,
    stages_passed: int,
    policy: RetryPolicy,
    reason: str = "",
    message: str = "",
) -> Settlement:
    """The settlement of attempt ``attempt`` that ended with ``ending``. ``reason`` and
    ``message`` are the node's (its failure's reason, its rejection, why it was lost);
    ``stages_passed`` counts the retry stages the job went through already. A job goes
    round again until ``policy.max_attempts`` attempts were made or, for failures, the
    last stage was passed; then it is dead-lettered."""
    if ending in (Ending.SUCCEEDED, Ending.CANCELLED):
        return Settlement(Step.ACK)
    if ending is Ending.FAILED:
        return Settlement(
            Step.FAIL, reason=reason, message=message, attempt_outcome=AttemptOutcome.FAILED
        )
    if ending is Ending.DEADLINE_PASSED:
        return Settlement(Step.EXPIRE, reason="TTL_EXPIRED", message="TTL ran out while running")
    outcome, fixed_reason, staged, offence = _RETRIES[ending]
    if ending is Ending.BAD_SIGNATURE:
        message = "result signature did not verify"
    elif ending is Ending.INVALID_RESULT:
        message = "the node's result failed the mesh's checks"
    elif ending is Ending.NODE_CANCELLED:
        message = "the node cancelled a job nobody cancelled"
    elif ending is Ending.REJECTED:
        message = reason
    elif ending is Ending.DISPATCH_TIMEOUT:
        message = "node did not accept in time"
    elif ending in (Ending.LOST, Ending.LEASE_EXPIRED):
        message = reason or message
    stored = fixed_reason or reason
    if attempt >= policy.max_attempts or (staged and stages_passed >= policy.stages):
        return give_up(attempt, outcome, f"{stored}: {message}", offence=offence)
    return Settlement(
        Step.RETRY_STAGED if staged else Step.REQUEUE,
        reason=stored,
        message=message,
        attempt_outcome=outcome,
        offence=offence,
        stage=stages_passed if staged else 0,
    )


def give_up(
    attempt: int,
    outcome: AttemptOutcome,
    last_error: str,
    *,
    offence: Offence | None = None,
) -> Settlement:
    """Dead-letters the job after ``attempt`` attempts, the last ending with ``last_error``."""
    return Settlement(
        Step.DEAD_LETTER,
        reason="ATTEMPTS_EXHAUSTED",
        message=f"gave up after {attempt} attempt(s); last error: {last_error}",
        attempt_outcome=outcome,
        offence=offence,
        last_error=last_error,
    )
