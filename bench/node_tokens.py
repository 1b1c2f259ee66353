"""Tokens per second and time to first token of a node's engine, measured through the
node's own runtime (``node.vllm_runtime.VllmRuntime``, the code path jobs take).

    .venv/bin/python bench/node_tokens.py [--model DIR] [--tokens 256] [--runs 5] [--out F]

Starts one engine with the node's default settings (8 slots, 512-token context), warms it
up, then measures (1) single streams one after another and (2) 8 streams started together
(after one untimed run of them).
Prints one JSON object. Greedy decoding with ``ignore_eos``, so every stream produces
exactly ``--tokens`` tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from node.runtime import GenerationRequest, SamplingSpec
from node.vllm_runtime import VllmRuntime


async def one_stream(runtime: VllmRuntime, request_id: str, tokens: int) -> tuple[float, float]:
    """(time to first token in ms, wall time in s) of one stream."""
    request = GenerationRequest(
        request_id=request_id,
        prompt=f"Benchmark prompt {request_id}",
        messages=(),
        sampling=SamplingSpec(max_tokens=tokens, temperature=0.0, ignore_eos=True),
    )
    started = time.perf_counter()
    first: float | None = None
    produced = 0
    async for chunk in runtime.generate(request):
        if chunk.token_count and first is None:
            first = time.perf_counter()
        produced = chunk.completion_tokens
    ended = time.perf_counter()
    assert produced == tokens, (produced, tokens)
    return ((first or ended) - started) * 1000, ended - started


async def measure(model: Path, tokens: int, runs: int, concurrency: int) -> dict[str, object]:
    runtime = VllmRuntime(str(model), served_name="bench")
    t0 = time.perf_counter()
    await runtime.start()
    start_s = time.perf_counter() - t0
    try:
        for i in range(3):  # warm-up: the first requests after start are slower
            await one_stream(runtime, f"warm-{i}", 32)
        single = [await one_stream(runtime, f"single-{i}", tokens) for i in range(runs)]
        # One untimed concurrent run first, as the mesh measurement does: the first batch of
        # long sequences after start is slower (measured 20-50 % below the next ones).
        await asyncio.gather(
            *(one_stream(runtime, f"warm-batch-{i}", tokens) for i in range(concurrency))
        )
        batches = []
        for run in range(runs):
            t = time.perf_counter()
            results = await asyncio.gather(
                *(one_stream(runtime, f"batch-{run}-{i}", tokens) for i in range(concurrency))
            )
            batches.append((time.perf_counter() - t, results))
    finally:
        await runtime.stop()
    return {
        "model": str(model),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "engine_start_s": round(start_s, 1),
        "tokens_per_stream": tokens,
        "single_stream": {
            "tokens_per_s_median": round(statistics.median(tokens / s for _, s in single)),
            "tokens_per_s_range": [
                round(min(tokens / s for _, s in single)),
                round(max(tokens / s for _, s in single)),
            ],
            "ttft_ms_median": round(statistics.median(t for t, _ in single), 1),
            "ttft_ms_range": [
                round(min(t for t, _ in single), 1),
                round(max(t for t, _ in single), 1),
            ],
        },
        f"concurrent_{concurrency}": {
            "tokens_per_s_total_median": round(
                statistics.median(concurrency * tokens / wall for wall, _ in batches)
            ),
            "ttft_ms_max_median": round(
                statistics.median(max(t for t, _ in results) for _, results in batches), 1
            ),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path(".cache/models/tiny-llama"))
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, help="Also write the JSON here (vLLM logs to stdout).")
    args = parser.parse_args()
    result = asyncio.run(measure(args.model, args.tokens, args.runs, args.concurrency))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":  # required: vLLM starts its engine processes with spawn
    main()
