"""A measurement instrument, not an inference engine: a ``node.runtime.Runtime`` that
answers every request at once with a fixed short output.

It exists so the benchmarks (``bench/``, ``docs/benchmarks.md``) can measure what the mesh
itself costs per job — Submit, queue, dispatch, Accept, Progress, signed Result, verify,
finalise — with the model's cost taken out. Only a benchmark injects it (``python -m
bench.bench_node``, ``node.main.run_node(..., make_runtimes=bench_runtimes)``): no product
setting selects it. It never loads a model and its output means nothing. Results it
produces are signed like any other, so the mesh treats them exactly as real ones: never
point a node running it at a production mesh.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

from node.config import NodeProfile
from node.runtime import (
    DuplicateRequestError,
    EngineNotRunningError,
    GenerationChunk,
    GenerationRequest,
    PromptTooLongError,
    Runtime,
)

__all__ = ["BENCH_OUTPUT", "BenchRuntime", "bench_runtimes"]

BENCH_OUTPUT: Final = "fleetwire bench output"
"""The text of every answer (4 "tokens", or ``max_tokens`` when that is smaller)."""

_OUTPUT_TOKENS: Final = 4


class BenchRuntime:
    """Answers each ``generate`` with one finished chunk, without waiting.

    Same lifecycle and guarantees as ``VllmRuntime`` where they matter to the node: ``start``
    and ``stop`` are idempotent, ``generate`` raises ``EngineNotRunningError`` before
    ``start``, ``DuplicateRequestError`` for a running request id and ``PromptTooLongError``
    when the prompt (counted as one token per whitespace-separated word, plus BOS) plus
    ``max_tokens`` exceeds ``max_model_len``; ``abort`` before the answer makes the stream end
    with "abort". ``max_concurrency`` is the configured number of slots.
    """

    def __init__(self, *, served_name: str, slots: int = 16, max_model_len: int = 512) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._served_name = served_name
        self._slots = slots
        self._max_model_len = max_model_len
        self._started = False
        self._aborted: set[str] = set()
        self._streams: set[str] = set()

    @property
    def running(self) -> bool:
        return self._started

    @property
    def max_concurrency(self) -> int:
        return self._slots

    @property
    def max_model_len(self) -> int:
        return self._max_model_len

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        self._aborted.update(self._streams)
        self._started = False

    async def check_health(self) -> None:
        if not self._started:
            raise EngineNotRunningError("the bench runtime is not started")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """One finished chunk: ``BENCH_OUTPUT``, finish reason "length"."""
        if not self._started:
            raise EngineNotRunningError("the bench runtime is not started")
        request_id = request.request_id
        if request_id in self._streams:
            raise DuplicateRequestError(f"request {request_id!r} is already running")
        text = request.prompt or " ".join(content for _, content in request.messages)
        prompt_tokens = 1 + len(text.split())
        max_tokens = request.sampling.max_tokens
        if prompt_tokens + max_tokens > self._max_model_len:
            raise PromptTooLongError(
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                max_model_len=self._max_model_len,
            )
        self._streams.add(request_id)
        try:
            await asyncio.sleep(0)  # let an abort issued right after the dispatch land
            if request_id in self._aborted:
                yield GenerationChunk("", 0, True, "abort", prompt_tokens, 0)
                return
            tokens = min(_OUTPUT_TOKENS, max_tokens)
            yield GenerationChunk(
                text=BENCH_OUTPUT,
                token_count=tokens,
                finished=True,
                finish_reason="length",
                prompt_tokens=prompt_tokens,
                completion_tokens=tokens,
            )
        finally:
            self._streams.discard(request_id)
            self._aborted.discard(request_id)

    async def abort(self, request_id: str) -> None:
        """Makes a stream that has not answered yet end with "abort"; else a no-op."""
        if request_id in self._streams:
            self._aborted.add(request_id)


def bench_runtimes(profile: NodeProfile) -> dict[str, Runtime]:
    """One ``BenchRuntime`` per served model, with the model's ``max_num_seqs`` as slots."""
    return {
        model.name: BenchRuntime(
            served_name=model.name,
            slots=model.max_num_seqs,
            max_model_len=model.max_model_len,
        )
        for model in profile.models
    }
