"""A request that does not fit the model's context fails with the reason that says what
overran: CONTEXT_LENGTH_EXCEEDED for prompt + max_tokens, PROMPT_TOO_LONG only when the
prompt alone leaves no room (once a 2-token prompt with a large max_tokens was reported
as PROMPT_TOO_LONG)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nacl.signing import SigningKey

from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from node.runner import ContextOverrun, JobRunner, RunningJob, context_overrun
from node.runtime import GenerationChunk, GenerationRequest, PromptTooLongError


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "expected"),
    [
        (2, 600, ContextOverrun.CONTEXT_LENGTH_EXCEEDED),
        (511, 2, ContextOverrun.CONTEXT_LENGTH_EXCEEDED),  # one output token would fit
        (512, 1, ContextOverrun.PROMPT_TOO_LONG),  # nothing fits after the prompt
        (800, 8, ContextOverrun.PROMPT_TOO_LONG),
    ],
)
def test_the_reason_names_what_overran(
    prompt_tokens: int, max_tokens: int, expected: ContextOverrun
) -> None:
    reason, message = context_overrun(
        prompt_tokens=prompt_tokens, max_tokens=max_tokens, max_model_len=512
    )
    assert reason is expected
    assert f"prompt of {prompt_tokens} tokens" in message
    assert f"max_tokens {max_tokens}" in message
    assert "context of 512 tokens" in message


def test_the_message_says_how_many_output_tokens_fit() -> None:
    _, message = context_overrun(prompt_tokens=2, max_tokens=600, max_model_len=512)
    assert "is 602 tokens" in message
    assert "at most 510 output tokens fit" in message


class OverrunRuntime:
    """Refuses every request as vLLM's runtime does when prompt + max_tokens is too much."""

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        raise PromptTooLongError(
            prompt_tokens=self.prompt_tokens,
            max_tokens=request.sampling.max_tokens,
            max_model_len=512,
        )
        yield  # an async generator, like the real one


async def _failure_of(prompt_tokens: int, max_tokens: int) -> nodes_pb2.Failure:
    sent: list[nodes_pb2.NodeStreamRequest] = []

    async def send(message: nodes_pb2.NodeStreamRequest) -> None:
        sent.append(message)

    runner = JobRunner(
        "node-1",
        SigningKey.generate(),
        {"m": OverrunRuntime(prompt_tokens)},  # type: ignore[dict-item]
    )
    spec = job_pb2.JobSpec(
        model="m", prompt="hi", sampling=job_pb2.SamplingParams(max_tokens=max_tokens)
    )
    dispatch = nodes_pb2.Dispatch(job_id="j", attempt=1, spec=spec)
    await runner.run(RunningJob(job_id="j", attempt=1, request_id="r"), dispatch, send)
    assert [m.WhichOneof("message") for m in sent] == ["failure"]
    return sent[0].failure


async def test_a_short_prompt_with_too_many_max_tokens_is_context_length_exceeded() -> None:
    failure = await _failure_of(prompt_tokens=2, max_tokens=600)
    assert failure.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert not failure.retryable
    assert "prompt of 2 tokens plus max_tokens 600" in failure.message
    assert "context of 512 tokens" in failure.message


async def test_a_prompt_that_fills_the_context_is_prompt_too_long() -> None:
    failure = await _failure_of(prompt_tokens=900, max_tokens=8)
    assert failure.reason == "PROMPT_TOO_LONG"
    assert not failure.retryable
