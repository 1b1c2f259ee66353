"""How validation answers are judged and what they do to reputation (pure rules)."""

from __future__ import annotations

import random

import pytest

from fleetwire.v1 import job_pb2
from scheduler.challenges import challenge_spec
from scheduler.validation_rules import (
    Answer,
    Record,
    Status,
    Verdict,
    agree,
    judge,
    on_probation,
    reputation,
)

ANSWER = b"The river runs past the mill and on into the sea."
OTHER = b"Completely unrelated text that a lazy node made up."


def rules(answers: list[Answer], settled: bytes | None = None) -> tuple[Status, dict[str, Verdict]]:
    judgement = judge(answers, settled, agreement=0.5, max_answers=4)
    return judgement.status, judgement.verdicts


@pytest.mark.parametrize(
    ("a", "b", "agreed"),
    [
        (ANSWER, ANSWER, True),
        (ANSWER, ANSWER[:36] + b" then the lake.", True),  # late divergence
        (ANSWER, ANSWER[:10] + OTHER, False),  # diverges early: another generation
        (ANSWER, OTHER, False),
        (b"", b"", True),
        (ANSWER, b"", False),
        (b"\x00abc", b"\x00abc", True),  # a NUL is a token like any
    ],
)
def test_agreement_tolerates_late_divergence_only(a: bytes, b: bytes, agreed: bool) -> None:
    assert agree(a, b, 0.5) is agreed
    assert agree(b, a, 0.5) is agreed


def test_two_answers_that_agree_settle_a_challenge_and_both_pass() -> None:
    status, verdicts = rules([Answer("a", ANSWER), Answer("b", ANSWER)])
    assert status is Status.SETTLED
    assert verdicts == {"a": Verdict.PASS, "b": Verdict.PASS}


def test_one_answer_or_two_that_disagree_judge_nobody() -> None:
    assert rules([Answer("a", ANSWER)]) == (Status.OPEN, {})
    assert rules([Answer("a", ANSWER), Answer("lazy", OTHER)]) == (Status.OPEN, {})


def test_a_third_answer_breaks_the_tie_and_the_odd_one_is_wrong() -> None:
    status, verdicts = rules([Answer("lazy", OTHER), Answer("a", ANSWER), Answer("b", ANSWER)])
    assert status is Status.SETTLED
    assert verdicts == {"lazy": Verdict.WRONG, "a": Verdict.PASS, "b": Verdict.PASS}


def test_a_settled_answer_judges_each_new_answer_once() -> None:
    answers = [Answer("a", ANSWER, Verdict.PASS), Answer("b", ANSWER, Verdict.PASS)]
    assert rules([*answers, Answer("lazy", OTHER)], ANSWER) == (
        Status.SETTLED,
        {"lazy": Verdict.WRONG},
    )
    assert rules([*answers, Answer("c", ANSWER)], ANSWER) == (Status.SETTLED, {"c": Verdict.PASS})


def test_answers_of_one_node_never_agree_with_themselves() -> None:
    assert rules([Answer("a", ANSWER), Answer("a", ANSWER)]) == (Status.OPEN, {})


def test_no_agreement_within_the_most_answers_gives_the_challenge_up() -> None:
    answers = [Answer(f"n{i}", bytes([65 + i]) * 20) for i in range(4)]
    assert rules(answers) == (Status.UNRESOLVED, {})


def test_an_agreed_answer_too_short_to_tell_judges_nobody() -> None:
    """An early end of sequence: a lazy node answering nothing would pass it."""
    assert rules([Answer("a", b"ok"), Answer("b", b"ok")]) == (Status.UNRESOLVED, {})


def test_reputation_is_neutral_at_first_and_moves_with_outcomes() -> None:
    assert reputation(Record()) == 0.5
    assert reputation(Record(passes=10)) > 0.9
    assert reputation(Record(passes=10, offence_points=20)) < reputation(Record(passes=10))
    assert reputation(Record(wrongs=1)) < 0.3
    # One wrong answer among many passes (a node unlucky on a near tie) keeps it working.
    assert not on_probation(Record(passes=20, wrongs=1), floor=0.3)
    assert on_probation(Record(passes=1, wrongs=1), floor=0.3)
    # Offences alone exclude for a while; they never put a node on probation.
    assert not on_probation(Record(offence_points=1000), floor=0.3)


def test_challenges_look_like_tenant_jobs_and_sample_greedily() -> None:
    rng = random.Random(7)
    specs = [
        challenge_spec(
            "tiny-llama", job_pb2.NETWORK_MAINNET, max_tokens=24, ttl_seconds=300, rng=rng
        )
        for _ in range(50)
    ]
    assert len({s.prompt for s in specs}) > 40
    assert all(s.sampling.temperature == 0 and 8 <= s.sampling.max_tokens <= 24 for s in specs)
    assert {s.mode for s in specs} >= {job_pb2.INFERENCE_MODE_STREAM, job_pb2.INFERENCE_MODE_SYNC}
    assert all(s.priority == job_pb2.PRIORITY_CLASS_NORMAL and s.ttl.seconds == 300 for s in specs)
