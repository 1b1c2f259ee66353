"""What a node's result and progress may contain, checked before anything is stored or
billed: pure functions of the job's spec and the node's message, no I/O.

A node signs its output and its token counts, not the rest; either way a signature says who
answered, not that the answer is sane. So every field is checked (finite numbers in range,
names from a fixed set, lengths a job of this ``max_tokens`` can produce; a NUL in the
output is legitimate — byte-level tokenizers can generate one, and the output is stored
as bytes) and a result that
fails is the node's offence, never the batch's: it never reaches the coalesced statement
that finalises other nodes' jobs. Usage is not trusted either: the billed counts are the
claimed ones capped by what the spec allows (``billable_usage``), and a claim above the cap
is an offence of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.token_counts import PROMPT_SLACK, Counted

MAX_BYTES_PER_TOKEN = 32
"""Most UTF-8 bytes one generated token can add to the text (a long merged token, or a
replacement character per byte of a broken sequence); real tokenizers stay far below it."""
PROMPT_TOKEN_SLACK = 16
"""Tokens a raw prompt may count beyond one per byte: BOS/EOS."""
CHAT_TOKENS_PER_MESSAGE = 16
"""Markers a chat template puts around each message."""
CHAT_TEMPLATE_SLACK = 1024
"""Tokens of a chat template's own text (a default system prompt, say) beyond its markers."""
RESULT_FINISH_REASONS = frozenset({"stop", "length"})
MAX_TIMING_MS = 7 * 24 * 3600 * 1000.0
CLOCK_SKEW_MS = 5 * 60 * 1000
MAX_CHUNK_BYTES = 64 * 1024


def max_output_bytes(spec: job_pb2.JobSpec) -> int:
    """The most text a job of ``spec`` can produce, streamed or in its result."""
    return max(1, spec.sampling.max_tokens) * MAX_BYTES_PER_TOKEN


def max_prompt_tokens(spec: job_pb2.JobSpec) -> int:
    """The most tokens ``spec``'s prompt can count: no tokenizer makes more than one token
    per byte, plus a few special ones; a chat adds its roles, markers per message and the
    model's chat template (whose own text, a default system prompt say, the spec does not
    show)."""
    if spec.messages:
        return CHAT_TEMPLATE_SLACK + sum(
            len(m.role.encode()) + len(m.content.encode()) + CHAT_TOKENS_PER_MESSAGE
            for m in spec.messages
        )
    return len(spec.prompt.encode()) + PROMPT_TOKEN_SLACK


def result_problem(result: nodes_pb2.Result, spec: job_pb2.JobSpec, *, now_ms: int) -> str | None:
    """Why ``result`` cannot be stored as the answer to ``spec``; None when it can."""
    output = result.output
    if len(output.encode()) > max_output_bytes(spec):
        return f"output longer than {spec.sampling.max_tokens} tokens can be"
    if result.finish_reason not in RESULT_FINISH_REASONS:
        return f"finish_reason must be one of {sorted(RESULT_FINISH_REASONS)}"
    usage = result.usage
    if max(usage.prompt_tokens, usage.completion_tokens) >= 2**63:
        return "a token count beyond 2^63 - 1"
    if len(result.signature) != 64:
        return "signature is not 64 bytes"
    if not 0 < result.finished_at_unix_ms <= now_ms + CLOCK_SKEW_MS:
        return "finished_at_unix_ms is not a time up to now"
    timings = result.timings
    for name in ("queue_ms", "time_to_first_token_ms", "total_ms"):
        value = getattr(timings, name)
        if not (math.isfinite(value) and 0 <= value <= MAX_TIMING_MS):
            return f"timings.{name} must be a finite number of milliseconds up to a week"
    # No upper bound: an honest node that got every token in one engine step divides by
    # microseconds. It is informational; only what the database cannot hold is refused.
    rate = timings.tokens_per_second
    if not (math.isfinite(rate) and rate >= 0):
        return "timings.tokens_per_second must be finite and non-negative"
    return None


def progress_problem(text: str, streamed_bytes: int, spec_max_bytes: int) -> str | None:
    """Why a chunk of ``text`` cannot be relayed after ``streamed_bytes`` bytes of the same
    attempt; None when it can."""
    size = len(text.encode())
    if size > MAX_CHUNK_BYTES:
        return f"a progress chunk of {size} bytes (at most {MAX_CHUNK_BYTES})"
    if streamed_bytes + size > spec_max_bytes:
        return f"progress beyond the {spec_max_bytes} bytes the job's max_tokens can produce"
    return None


@dataclass(frozen=True, slots=True)
class BillableUsage:
    """The token counts a job is billed for, where they came from, and whether the node
    claimed more than the mesh allows."""

    prompt_tokens: int
    completion_tokens: int
    inflated: bool  # the claim exceeded the spec's caps or the mesh's own count
    counted: bool = False  # the mesh's tokenizer counted (``token_counts``)

    @property
    def source(self) -> str:
        """Which counts the bill used (``ledger_entries.usage_source``)."""
        if self.inflated:
            return "capped"
        return "counted" if self.counted else "claimed"


def billable_usage(
    usage: job_pb2.Usage, spec: job_pb2.JobSpec, counted: Counted | None = None
) -> BillableUsage:
    """The counts to bill: never above what ``spec`` allows (completion tokens by
    ``max_tokens``, prompt tokens by the prompt's length); with the mesh's own ``counted``
    (the model's tokenizer), the prompt is billed as the mesh counted it and a completion
    claim above what the output can have come from is cut to that bound. A job is never
    billed above its spec, whatever the node signed."""
    prompt_cap, completion_cap = max_prompt_tokens(spec), spec.sampling.max_tokens
    prompt = min(usage.prompt_tokens, prompt_cap)
    completion = min(usage.completion_tokens, completion_cap)
    inflated = usage.prompt_tokens > prompt_cap or usage.completion_tokens > completion_cap
    if counted is not None:
        if counted.prompt_tokens is not None:
            inflated |= usage.prompt_tokens > counted.prompt_tokens + PROMPT_SLACK
            prompt = min(counted.prompt_tokens, prompt_cap)
        inflated |= usage.completion_tokens > counted.completion_bound
        completion = min(completion, counted.completion_bound)
    return BillableUsage(prompt, completion, inflated, counted=counted is not None)


@dataclass(slots=True)
class StreamTally:
    """What one attempt streamed: its size against what its ``max_tokens`` can produce, and
    its text, to hold against the signed output at the end. Bounded by ``limit`` bytes."""

    limit: int
    parts: list[str] = field(default_factory=list)
    size: int = 0
    last_sequence: int = 0
    gapped: bool = False  # a chunk was refused or missed: the text cannot be compared
    refused: int = 0

    def add(self, sequence: int, text: str) -> str | None:
        """Counts the chunk in; the problem when it must be refused (not relayed)."""
        problem = progress_problem(text, self.size, self.limit)
        if problem is not None:
            self.refused += 1
            self.gapped = True
            return problem
        if sequence != self.last_sequence + 1:
            self.gapped = True
        self.last_sequence = sequence
        self.size += len(text.encode())
        self.parts.append(text)
        return None

    def matches(self, output: str) -> bool | None:
        """Whether the streamed text is the signed output; None when it cannot be told
        (nothing streamed, or chunks were refused or missed)."""
        if self.gapped or not self.parts:
            return None
        return "".join(self.parts) == output
