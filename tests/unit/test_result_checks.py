"""The checks a result and its progress pass before the mesh stores or bills them."""

from __future__ import annotations

import math

import pytest

from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.result_checks import (
    CHAT_TEMPLATE_SLACK,
    MAX_CHUNK_BYTES,
    PROMPT_TOKEN_SLACK,
    billable_usage,
    max_output_bytes,
    max_prompt_tokens,
    progress_problem,
    result_problem,
)

NOW_MS = 1_800_000_000_000
SPEC = job_pb2.JobSpec(model="m", prompt="four", sampling=job_pb2.SamplingParams(max_tokens=8))


def honest() -> nodes_pb2.Result:
    return nodes_pb2.Result(
        job_id="j",
        attempt=1,
        output="a short answer",
        finish_reason="length",
        usage=job_pb2.Usage(prompt_tokens=2, completion_tokens=8),
        timings=job_pb2.Timings(
            queue_ms=1, time_to_first_token_ms=2, total_ms=3, tokens_per_second=40
        ),
        finished_at_unix_ms=NOW_MS - 10,
        signature=bytes(64),
    )


def test_an_honest_result_passes() -> None:
    assert result_problem(honest(), SPEC, now_ms=NOW_MS) is None


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("output", "x" * (8 * 32 + 1), "longer"),
        ("finish_reason", "abort", "finish_reason"),
        ("finish_reason", "", "finish_reason"),
        ("signature", b"short", "signature"),
        ("finished_at_unix_ms", 0, "finished_at"),
        ("finished_at_unix_ms", NOW_MS + 3_600_000, "finished_at"),
    ],
)
def test_a_bad_field_is_named(field: str, value: object, problem: str) -> None:
    result = honest()
    setattr(result, field, value)
    found = result_problem(result, SPEC, now_ms=NOW_MS)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 1e12])
@pytest.mark.parametrize("name", ["queue_ms", "time_to_first_token_ms", "total_ms"])
def test_timings_must_be_finite_and_in_range(name: str, value: float) -> None:
    result = honest()
    setattr(result.timings, name, value)  # 1e12 ms: more than a week
    assert result_problem(result, SPEC, now_ms=NOW_MS) is not None


@pytest.mark.parametrize(("value", "ok"), [(math.nan, False), (-1.0, False), (1e12, True)])
def test_tokens_per_second_is_finite_and_unbounded(value: float, ok: bool) -> None:
    """Every token in one engine step divides by microseconds: huge, and honest."""
    result = honest()
    result.timings.tokens_per_second = value
    assert (result_problem(result, SPEC, now_ms=NOW_MS) is None) is ok


def test_a_count_beyond_bigint_is_invalid() -> None:
    result = honest()
    result.usage.completion_tokens = 2**63
    assert "2^63" in (result_problem(result, SPEC, now_ms=NOW_MS) or "")


def test_usage_is_billed_at_most_what_the_spec_allows() -> None:
    claimed = billable_usage(job_pb2.Usage(prompt_tokens=3, completion_tokens=8), SPEC)
    assert (claimed.prompt_tokens, claimed.completion_tokens, claimed.source) == (3, 8, "claimed")
    inflated = billable_usage(job_pb2.Usage(prompt_tokens=10**9, completion_tokens=9), SPEC)
    assert (inflated.prompt_tokens, inflated.completion_tokens) == (4 + PROMPT_TOKEN_SLACK, 8)
    assert inflated.inflated
    assert inflated.source == "capped"


def test_a_chat_prompt_is_capped_by_its_messages_and_the_template() -> None:
    """A chat's prompt tokens come from its messages and the model's template, not from
    ``prompt`` (empty): an honest chat must not look inflated."""
    chat = job_pb2.JobSpec(model="m", sampling=job_pb2.SamplingParams(max_tokens=8))
    chat.messages.append(job_pb2.ChatMessage(role="user", content="hello there"))
    cap = max_prompt_tokens(chat)
    assert cap >= CHAT_TEMPLATE_SLACK + len("userhello there")
    assert not billable_usage(job_pb2.Usage(prompt_tokens=40, completion_tokens=8), chat).inflated
    assert billable_usage(job_pb2.Usage(prompt_tokens=cap + 1, completion_tokens=8), chat).inflated


def test_progress_is_bounded_per_chunk_and_per_job() -> None:
    limit = max_output_bytes(SPEC)
    assert progress_problem("abc", 0, limit) is None
    assert progress_problem("x" * (MAX_CHUNK_BYTES + 1), 0, 10**9) is not None
    assert progress_problem("abc", limit - 2, limit) is not None
    assert progress_problem("a\x00", 0, limit) is None, "a byte-level tokenizer can make a NUL"
