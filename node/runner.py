"""Runs one dispatched job on the runtime: Accept, Progress per chunk, then a signed Result
or a Failure. No stream handling here; messages go out through ``send``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog
from nacl.signing import SigningKey

from fleetwire import signing
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from fleetwire.validation import request_facts
from node.vllm_runtime import (
    GenerationRequest,
    InvalidRequestError,
    PromptTooLongError,
    SamplingSpec,
    VllmRuntime,
)

log = structlog.get_logger(__name__)

Send = Callable[[nodes_pb2.NodeStreamRequest], Awaitable[None]]


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

    def __init__(self, node_id: str, key: SigningKey, runtimes: Mapping[str, VllmRuntime]) -> None:
        self._node_id = node_id
        self.key = key
        self._runtimes = runtimes

    def digest_matches(self, dispatch: nodes_pb2.Dispatch) -> bool:
        """The node signs only what it recomputed itself from the spec it received."""
        ours = signing.request_digest(request_facts(dispatch.job_id, dispatch.spec))
        return ours == dispatch.request_digest

    async def run(self, job: RunningJob, dispatch: nodes_pb2.Dispatch, send: Send) -> None:
        """Generates, streams Progress, and ends with exactly one Result or Failure."""
        accepted = time.monotonic()
        first_token: float | None = None
        started: float | None = None
        parts: list[str] = []
        sequence = 0
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
                    sequence += 1
                    parts.append(chunk.text)
                    await send(
                        nodes_pb2.NodeStreamRequest(
                            progress=nodes_pb2.Progress(
                                job_id=job.job_id,
                                attempt=job.attempt,
                                sequence=sequence,
                                text=chunk.text,
                                token_count=chunk.token_count,
                            )
                        )
                    )
                if chunk.finished:
                    finish_reason = chunk.finish_reason or "stop"
        except PromptTooLongError as err:
            await self._fail(job, send, "PROMPT_TOO_LONG", str(err), retryable=False)
            return
        except InvalidRequestError as err:
            await self._fail(job, send, "INVALID_REQUEST", str(err), retryable=False)
            return
        except Exception as err:
            log.exception("engine error", job_id=job.job_id)
            await self._fail(
                job, send, "ENGINE_ERROR", f"{type(err).__name__}: {err}", retryable=True
            )
            return
        if job.cancelled or finish_reason == "abort":
            if job.hand_back:
                await self._fail(
                    job,
                    send,
                    "NODE_SHUTDOWN",
                    f"the node stopped after {completion_tokens} tokens; run it elsewhere",
                    retryable=True,
                    tokens=completion_tokens,
                )
            else:
                await self._fail(
                    job,
                    send,
                    "CANCELLED",
                    f"aborted on request after {completion_tokens} tokens",
                    retryable=False,
                    tokens=completion_tokens,
                )
            return
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
        await send(nodes_pb2.NodeStreamRequest(result=result))
        log.info(
            "job done",
            job_id=job.job_id,
            attempt=job.attempt,
            tokens=completion_tokens,
            finish_reason=finish_reason,
        )

    async def _fail(
        self,
        job: RunningJob,
        send: Send,
        reason: str,
        message: str,
        *,
        retryable: bool,
        tokens: int | None = None,
    ) -> None:
        log.info(
            "job failed",
            job_id=job.job_id,
            attempt=job.attempt,
            reason=reason,
            retryable=retryable,
            tokens=tokens,
        )
        await send(
            nodes_pb2.NodeStreamRequest(
                failure=nodes_pb2.Failure(
                    job_id=job.job_id,
                    attempt=job.attempt,
                    reason=reason,
                    message=message,
                    retryable=retryable,
                )
            )
        )
