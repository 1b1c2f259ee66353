"""Settlement, case by case: how an attempt ended → what becomes of the job."""

from __future__ import annotations

import pytest

from scheduler.penalties import Offence
from scheduler.settlement import (
    AttemptOutcome,
    Ending,
    RetryPolicy,
    Settlement,
    Step,
    give_up,
    settle,
)

POLICY = RetryPolicy(max_attempts=5, stages=3)


def first_attempt(ending: Ending, *, reason: str = "", message: str = "") -> Settlement:
    return settle(ending, attempt=1, stages_passed=0, policy=POLICY, reason=reason, message=message)


@pytest.mark.parametrize("ending", [Ending.SUCCEEDED, Ending.CANCELLED])
def test_a_settled_job_is_only_acked(ending: Ending) -> None:
    assert first_attempt(ending) == Settlement(Step.ACK)


def test_a_final_failure_fails_the_job_without_an_offence() -> None:
    decision = first_attempt(Ending.FAILED, reason="CONTEXT_LENGTH_EXCEEDED", message="8 > 4")
    assert decision == Settlement(
        Step.FAIL,
        reason="CONTEXT_LENGTH_EXCEEDED",
        message="8 > 4",
        attempt_outcome=AttemptOutcome.FAILED,
    )


def test_a_deadline_that_passed_while_running_expires_the_job() -> None:
    decision = first_attempt(Ending.DEADLINE_PASSED)
    assert (decision.step, decision.reason, decision.offence) == (
        Step.EXPIRE,
        "TTL_EXPIRED",
        None,
    )


@pytest.mark.parametrize(
    ("ending", "reason", "message", "expected"),
    [
        pytest.param(
            Ending.BAD_SIGNATURE,
            "",
            "",
            Settlement(
                Step.RETRY_STAGED,
                reason="BAD_SIGNATURE",
                message="result signature did not verify",
                attempt_outcome=AttemptOutcome.FAILED,
                offence=Offence.BAD_SIGNATURE,
            ),
            id="bad-signature: staged, penalised",
        ),
        pytest.param(
            Ending.FAILED_RETRYABLE,
            "ENGINE_ERROR",
            "boom",
            Settlement(
                Step.RETRY_STAGED,
                reason="ENGINE_ERROR",
                message="boom",
                attempt_outcome=AttemptOutcome.FAILED,
                offence=Offence.FAILURE,
            ),
            id="retryable failure: staged, penalised",
        ),
        pytest.param(
            Ending.REJECTED,
            "busy",
            "",
            Settlement(
                Step.REQUEUE,
                reason="REJECTED",
                message="busy",
                attempt_outcome=AttemptOutcome.REJECTED,
                offence=Offence.REJECTED,
            ),
            id="rejected: straight back, a point (only a rate of them adds up)",
        ),
        pytest.param(
            Ending.DISPATCH_TIMEOUT,
            "",
            "",
            Settlement(
                Step.REQUEUE,
                reason="DISPATCH_TIMEOUT",
                message="node did not accept in time",
                attempt_outcome=AttemptOutcome.LOST,
                offence=Offence.DISPATCH_TIMEOUT,
            ),
            id="dispatch timeout: straight back, penalised",
        ),
        pytest.param(
            Ending.LOST,
            "stream closed",
            "",
            Settlement(
                Step.REQUEUE,
                reason="NODE_LOST",
                message="stream closed",
                attempt_outcome=AttemptOutcome.LOST,
            ),
            id="stream lost: straight back, no offence",
        ),
        pytest.param(
            Ending.LEASE_EXPIRED,
            "silent for 10 s",
            "",
            Settlement(
                Step.REQUEUE,
                reason="NODE_LOST",
                message="silent for 10 s",
                attempt_outcome=AttemptOutcome.LOST,
                offence=Offence.LEASE_EXPIRED,
            ),
            id="lease expired: straight back, penalised",
        ),
    ],
)
def test_an_attempt_that_can_be_retried_goes_round_again(
    ending: Ending, reason: str, message: str, expected: Settlement
) -> None:
    assert first_attempt(ending, reason=reason, message=message) == expected


def test_a_staged_retry_goes_through_the_next_stage() -> None:
    decision = settle(Ending.FAILED_RETRYABLE, attempt=3, stages_passed=2, policy=POLICY)
    assert (decision.step, decision.stage) == (Step.RETRY_STAGED, 2)


def test_past_the_last_stage_a_failure_is_dead_lettered() -> None:
    decision = settle(
        Ending.FAILED_RETRYABLE,
        attempt=4,
        stages_passed=3,
        policy=POLICY,
        reason="ENGINE_ERROR",
        message="boom",
    )
    assert decision == Settlement(
        Step.DEAD_LETTER,
        reason="ATTEMPTS_EXHAUSTED",
        message="gave up after 4 attempt(s); last error: ENGINE_ERROR: boom",
        attempt_outcome=AttemptOutcome.FAILED,
        offence=Offence.FAILURE,
        last_error="ENGINE_ERROR: boom",
    )


def test_a_lost_node_does_not_use_up_the_stages() -> None:
    decision = settle(Ending.LOST, attempt=4, stages_passed=3, policy=POLICY, reason="gone")
    assert decision.step is Step.REQUEUE


@pytest.mark.parametrize("ending", [Ending.LOST, Ending.REJECTED, Ending.BAD_SIGNATURE])
def test_the_last_attempt_dead_letters_whatever_ended_it(ending: Ending) -> None:
    decision = settle(ending, attempt=5, stages_passed=0, policy=POLICY, reason="r")
    assert decision.step is Step.DEAD_LETTER
    assert decision.reason == "ATTEMPTS_EXHAUSTED"
    assert decision.message.startswith("gave up after 5 attempt(s)")


def test_give_up_names_the_last_error() -> None:
    assert give_up(6, AttemptOutcome.LOST, "no attempt finished") == Settlement(
        Step.DEAD_LETTER,
        reason="ATTEMPTS_EXHAUSTED",
        message="gave up after 6 attempt(s); last error: no attempt finished",
        attempt_outcome=AttemptOutcome.LOST,
        last_error="no attempt finished",
    )
