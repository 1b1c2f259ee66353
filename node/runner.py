"""Runs one dispatched job on the runtime: Progress as tokens come (coalesced by
``node.progress``), then a signed Result or a Failure. No stream handling here; messages go
out through ``send``."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from nacl.signing import SigningKey
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from fleetwire.protocol import signing
from fleetwire.protocol.facts import request_facts
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from node.job_trace import note_final, run_span
from node.metrics import NodeMetrics
from node.progress import ProgressBatcher, Send
from node.runtime import (
    GenerationRequest,
    InvalidRequestError,
    PromptTooLongError,
    Runtime,
    SamplingSpec,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TokenFlush:
    """When generated tokens go out as a Progress: ``window`` seconds after the oldest
    unsent one, or once ``max_tokens`` are waiting (window 0: every chunk at once)."""

    window: float = 0.02
    max_tokens: int = 32


@dataclass(eq=False)
class RunningJob:
    """A job the node accepted. ``cancelled``: the mesh asked to stop it (ends as CANCELLED);
    ``hand_back``: the node is shutting down (ends as a retryable NODE_SHUTDOWN failure)."""

    job_id: str
    attempt: int
    request_id: str
    model: str = ""
    cancelled: bool = False
    hand_back: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Its ``run`` span's context, once running: a cancel is logged in the job's trace.
    trace: Context = field(default_factory=Context, repr=False)


class ContextOverrun(enum.Enum):
    """Which limit a request that does not fit the model's context overran (the Failure
    reason)."""

    PROMPT_TOO_LONG = "PROMPT_TOO_LONG"  # the prompt alone leaves no room for output
    CONTEXT_LENGTH_EXCEEDED = "CONTEXT_LENGTH_EXCEEDED"  # prompt + max_tokens is too much


def context_overrun(
    *, prompt_tokens: int, max_tokens: int, max_model_len: int
) -> tuple[ContextOverrun, str]:
    """The reason and message for a request whose prompt plus ``max_tokens`` exceeds the
    context: PROMPT_TOO_LONG only when the prompt alone fills it (no max_tokens could
    help); otherwise CONTEXT_LENGTH_EXCEEDED, saying how many output tokens would fit."""
    if prompt_tokens >= max_model_len:
        return ContextOverrun.PROMPT_TOO_LONG, (
            f"prompt of {prompt_tokens} tokens leaves no room for output in the model's "
            f"context of {max_model_len} tokens (max_tokens {max_tokens})"
        )
    return ContextOverrun.CONTEXT_LENGTH_EXCEEDED, (
        f"prompt of {prompt_tokens} tokens plus max_tokens {max_tokens} is "
        f"{prompt_tokens + max_tokens} tokens, more than the model's context of "
        f"{max_model_len} tokens; at most {max_model_len - prompt_tokens} output tokens fit"
    )


def generation_request(request_id: str, spec: job_pb2.JobSpec) -> GenerationRequest:
    s = spec.sampling
    return GenerationRequest(
        request_id=request_id,
        prompt=spec.prompt or None,
        messages=tuple((m.role, m.content) for m in spec.messages),
        sampling=SamplingSpec(
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            top_p=s.top_p or 1.0,
            seed=s.seed if s.HasField("seed") else None,
            stop=tuple(s.stop),
            ignore_eos=s.ignore_eos,
        ),
    )


class JobRunner:
    """Turns a Dispatch into engine work and signed messages. ``key`` may be replaced
    between jobs (key rotation); a job signs with the key current when it finishes."""

    def __init__(
        self,
        node_id: str,
        key: SigningKey,
        runtimes: Mapping[str, Runtime],
        flush: TokenFlush | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._node_id = node_id
        self.key = key
        self._runtimes = runtimes
        self._flush = flush or TokenFlush()
        self._metrics = metrics

    def digest_matches(self, dispatch: nodes_pb2.Dispatch) -> bool:
        """The node signs only what it recomputed itself from the spec it received."""
        ours = signing.request_digest(request_facts(dispatch.job_id, dispatch.spec))
        return ours == dispatch.request_digest

    async def run(self, job: RunningJob, dispatch: nodes_pb2.Dispatch, send: Send) -> None:
        """Generates, streams Progress, and ends with exactly one Result or Failure, sent
        after every Progress of the job; all of it in the job's ``run`` span (its log lines
        carry the job's trace id)."""
        with run_span(dispatch, self._node_id) as span:
            job.trace = otel_context.get_current()
            note_final(span, await self._run(job, dispatch, send))

    async def _run(
        self, job: RunningJob, dispatch: nodes_pb2.Dispatch, send: Send
    ) -> nodes_pb2.NodeStreamRequest:
        progress = ProgressBatcher(
            job.job_id,
            job.attempt,
            send,
            window=self._flush.window,
            max_tokens=self._flush.max_tokens,
        )
        try:
            final = await self._generate(job, dispatch, progress)
            await progress.close()
        finally:
            await progress.stop()
        if self._metrics is not None:
            self._metrics.ended(dispatch.spec.model, final)
        await send(final)
        return final

    async def _generate(
        self, job: RunningJob, dispatch: nodes_pb2.Dispatch, progress: ProgressBatcher
    ) -> nodes_pb2.NodeStreamRequest:
        """Runs the generation, handing chunks to ``progress``; returns the final message."""
        accepted = time.monotonic()
        first_token: float | None = None
        started: float | None = None
        parts: list[str] = []
        prompt_tokens = completion_tokens = 0
        finish_reason = ""
        request = generation_request(job.request_id, dispatch.spec)
        runtime = self._runtimes[dispatch.spec.model]
        try:
            async for chunk in runtime.generate(request):
                now = time.monotonic()
                started = started or now
                prompt_tokens, completion_tokens = chunk.prompt_tokens, chunk.completion_tokens
                if chunk.text or chunk.token_count:
                    first_token = first_token or now
                    parts.append(chunk.text)
                    await progress.add(chunk.text, chunk.token_count)
                if chunk.finished:
                    finish_reason = chunk.finish_reason or "stop"
        except PromptTooLongError as err:
            overrun, message = context_overrun(
                prompt_tokens=err.prompt_tokens,
                max_tokens=err.max_tokens,
                max_model_len=err.max_model_len,
            )
            return _failure(job, overrun.value, message, retryable=False)
        except InvalidRequestError as err:
            return _failure(job, "INVALID_REQUEST", str(err), retryable=False)
        except Exception as err:
            log.exception("engine error", job_id=job.job_id)
            return _failure(job, "ENGINE_ERROR", f"{type(err).__name__}: {err}", retryable=True)
        if job.cancelled or finish_reason == "abort":
            if job.hand_back:
                return _failure(
                    job,
                    "NODE_SHUTDOWN",
                    f"the node stopped after {completion_tokens} tokens; run it elsewhere",
                    retryable=True,
                    tokens=completion_tokens,
                )
            return _failure(
                job,
                "CANCELLED",
                f"aborted on request after {completion_tokens} tokens",
                retryable=False,
                tokens=completion_tokens,
            )
        finished = time.monotonic()
        output = "".join(parts)
        finished_at_ms = int(time.time() * 1000)
        facts = signing.ResultFacts(
            job_id=job.job_id,
            attempt=job.attempt,
            node_id=self._node_id,
            model=dispatch.spec.model,
            request_digest=bytes(dispatch.request_digest),
            output_digest=signing.output_digest(output),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finished_at_unix_ms=finished_at_ms,
        )
        generation_s = finished - (started or accepted)
        result = nodes_pb2.Result(
            job_id=job.job_id,
            attempt=job.attempt,
            output=output,
            finish_reason=finish_reason,
            usage=job_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            timings=job_pb2.Timings(
                queue_ms=((started or accepted) - accepted) * 1000,
                time_to_first_token_ms=((first_token or finished) - accepted) * 1000,
                total_ms=(finished - accepted) * 1000,
                tokens_per_second=completion_tokens / generation_s if generation_s > 0 else 0.0,
            ),
            finished_at_unix_ms=finished_at_ms,
            signature=signing.sign(self.key, signing.result_bytes(facts)),
        )
        log.info(
            "job done",
            job_id=job.job_id,
            attempt=job.attempt,
            tokens=completion_tokens,
            chunks=progress.sequence,
            finish_reason=finish_reason,
        )
        return nodes_pb2.NodeStreamRequest(result=result)


def _failure(
    job: RunningJob, reason: str, message: str, *, retryable: bool, tokens: int | None = None
) -> nodes_pb2.NodeStreamRequest:
    log.info(
        "job failed",
        job_id=job.job_id,
        attempt=job.attempt,
        reason=reason,
        retryable=retryable,
        tokens=tokens,
    )
    return nodes_pb2.NodeStreamRequest(
        failure=nodes_pb2.Failure(
            job_id=job.job_id,
            attempt=job.attempt,
            reason=reason,
            message=message,
            retryable=retryable,
        )
    )
