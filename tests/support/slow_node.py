"""A real node agent whose engine takes its time: ``node.main`` (handshake, heartbeats,
Accept, Progress, signed Result, reconnects with jobs kept running) with a runtime that
produces one token every ``TOKEN_SECONDS``, so a job of ``max_tokens`` tokens is still
running when a test cuts the node's link. vLLM would cost about 1.5 GiB and a minute per
node on these 2 cores for nothing the network tests look at.

    python -m tests.support.slow_node    # configured by FLEETWIRE_NODE_* like ``python -m node``
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from bench.bench_runtime import BenchRuntime
from fleetwire.process.settings import NodeSettings
from node.config import NodeProfile
from node.main import main as node_main
from node.runtime import (
    DuplicateRequestError,
    EngineNotRunningError,
    GenerationChunk,
    GenerationRequest,
    Runtime,
)

TOKEN_SECONDS = 0.25
TOKEN = "tok "


class SlowRuntime(BenchRuntime):
    """``BenchRuntime`` with one chunk of one token per ``TOKEN_SECONDS``, ``max_tokens`` of
    them ("length"); an abort ends the stream at the next token ("abort")."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        if not self.running:
            raise EngineNotRunningError("the slow runtime is not started")
        request_id = request.request_id
        if request_id in self._streams:
            raise DuplicateRequestError(f"request {request_id!r} is already running")
        prompt_tokens = 1 + len((request.prompt or "").split())
        total = request.sampling.max_tokens
        self._streams.add(request_id)
        try:
            for produced in range(1, total + 1):
                await asyncio.sleep(TOKEN_SECONDS)
                if request_id in self._aborted:
                    yield GenerationChunk("", 0, True, "abort", prompt_tokens, produced - 1)
                    return
                last = produced == total
                yield GenerationChunk(
                    TOKEN, 1, last, "length" if last else None, prompt_tokens, produced
                )
        finally:
            self._streams.discard(request_id)
            self._aborted.discard(request_id)


def slow_runtimes(profile: NodeProfile, _settings: NodeSettings) -> Mapping[str, Runtime]:
    return {
        model.name: SlowRuntime(
            served_name=model.name, slots=model.max_num_seqs, max_model_len=model.max_model_len
        )
        for model in profile.models
    }


if __name__ == "__main__":
    node_main(slow_runtimes)
