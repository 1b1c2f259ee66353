"""How validation answers are judged and what they make of a node's reputation. Pure logic.

A challenge is one prompt sampled at temperature 0. Its answer is not known in advance: it
is *settled* when two nodes give answers that agree, and from then on every answer is
judged against it. Answers that agree are PASS; the others WRONG. Agreement tolerates what
honest engines do: greedy decoding is deterministic on one engine build and hardware, but
numerics differ across GPUs and batch shapes, and once two greedy runs pick different
tokens (a near tie) they go their own way. So two answers agree when they are equal or
share a prefix of at least ``agreement`` of the longer one; a node that serves another
model or makes text up diverges from the first tokens.

Reputation is a decaying ratio (a Beta mean with a neutral prior): a new node is 0.5,
passes move it towards 1, a wrong answer (weighing four passes) and offence points pull it
down. Below the floor, a node that answered wrongly is on probation: no tenant work, only
validation jobs until it has passed enough of them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

WRONG_WEIGHT = 4.0  # a wrong answer outweighs this many passes
POINTS_PER_PASS = 10.0  # offence points that weigh as much as one wrong pass
MIN_INFORMATIVE_BYTES = 8  # an agreed answer this short (an early EOS) judges nobody


class Verdict(enum.StrEnum):
    PASS = "PASS"
    WRONG = "WRONG"


class Status(enum.StrEnum):
    OPEN = "OPEN"  # fewer than two answers agree so far
    SETTLED = "SETTLED"  # two agreed: the answer is known
    UNRESOLVED = "UNRESOLVED"  # given up: no agreement, or an answer too short to tell


def agree(a: bytes, b: bytes, agreement: float) -> bool:
    """Whether two answers to the same temperature-0 prompt are the same generation."""
    if a == b:
        return True
    longer = max(len(a), len(b))
    shared = next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    return shared >= agreement * longer


@dataclass(frozen=True, slots=True)
class Answer:
    node_id: str
    output: bytes  # as the node signed it (a NUL is a token too)
    verdict: Verdict | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    status: Status
    answer: bytes | None = None  # the settled answer
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # newly judged, by node


def judge(
    answers: Sequence[Answer],
    settled: bytes | None,
    *,
    agreement: float,
    max_answers: int,
) -> Judgement:
    """What the answers of one challenge decide, in the order they came. ``settled`` is its
    answer when already known. Only answers not judged before get a verdict."""
    if settled is None:
        settled = _agreed(answers, agreement)
        if settled is None:
            given_up = len(answers) >= max_answers
            return Judgement(Status.UNRESOLVED if given_up else Status.OPEN)
        if len(settled) < MIN_INFORMATIVE_BYTES:
            return Judgement(Status.UNRESOLVED)
    verdicts = {
        a.node_id: Verdict.PASS if agree(a.output, settled, agreement) else Verdict.WRONG
        for a in answers
        if a.verdict is None
    }
    return Judgement(Status.SETTLED, settled, verdicts)


def _agreed(answers: Sequence[Answer], agreement: float) -> bytes | None:
    """The first answer another node's agrees with, or None."""
    for i, first in enumerate(answers):
        for other in answers[i + 1 :]:
            if other.node_id != first.node_id and agree(first.output, other.output, agreement):
                return first.output
    return None


@dataclass(frozen=True, slots=True)
class Record:
    """A node's decayed validation outcomes and offence points."""

    passes: float = 0.0
    wrongs: float = 0.0
    offence_points: float = 0.0


def reputation(record: Record) -> float:
    """0..1; 0.5 for a node nothing is known of."""
    good = record.passes + 1.0
    bad = WRONG_WEIGHT * record.wrongs + record.offence_points / POINTS_PER_PASS + 1.0
    return good / (good + bad)


def on_probation(record: Record, floor: float) -> bool:
    """A node that answered wrongly and whose reputation is below ``floor``: it gets only
    validation jobs. Offences alone never put a node here (they exclude it for a while)."""
    return record.wrongs > 0 and reputation(record) < floor
