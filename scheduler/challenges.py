"""Prompts for validation jobs: ordinary-looking requests the mesh can check.

A node sees a validation job as it sees any job: a Dispatch with a spec. So the spec is
built the way tenants build theirs — a short instruction about a few everyday words, normal
priority, a plain TTL, streaming or not — and only its sampling is fixed: temperature 0,
so the answer is a function of the model and the prompt, and a few dozen tokens, so
checking costs the node little. The words are drawn from a secrets-seeded generator: a node
cannot learn the prompts in advance. (Tenants send temperature-0 prompts too; a node that
serves those honestly and others not still fails the share of validation jobs it lies on.)
"""

from __future__ import annotations

import random

from google.protobuf import duration_pb2

from fleetwire.v1 import job_pb2

_TASKS = (
    "Write a short story about {a} and {b}.",
    "Explain how {a} relates to {b} in two sentences.",
    "List three facts about {a}.",
    "Describe {a} to someone who has never seen {b}.",
    "Summarise what you know about {a}, {b} and {c}.",
    "Give an example of {a} used with {b}.",
    "Write a haiku about {a}.",
    "Compare {a} with {b}.",
    "What is the difference between {a} and {c}?",
    "Continue the sentence: The {a} near the {b}",
)
_WORDS = (
    "a river",
    "the moon",
    "bread",
    "a lighthouse",
    "copper",
    "winter",
    "a violin",
    "the harbour",
    "salt",
    "a library",
    "thunder",
    "glass",
    "a garden",
    "the desert",
    "coffee",
    "a bridge",
    "silk",
    "the forest",
    "a clock",
    "rain",
    "a mountain",
    "paper",
    "the ocean",
    "honey",
    "a train",
    "iron",
    "spring",
    "a candle",
    "the city",
    "wool",
    "a compass",
    "snow",
    "a market",
    "the valley",
    "tea",
    "a kite",
    "stone",
    "autumn",
    "a telescope",
    "the island",
    "chalk",
    "a lantern",
    "fog",
    "a piano",
    "the meadow",
)
_MODES = (
    job_pb2.INFERENCE_MODE_STREAM,
    job_pb2.INFERENCE_MODE_POLLING,
    job_pb2.INFERENCE_MODE_SYNC,
)


def challenge_spec(
    model: str,
    network: int,
    *,
    max_tokens: int,
    ttl_seconds: int,
    rng: random.Random | None = None,
) -> job_pb2.JobSpec:
    """A new validation prompt for ``model`` on ``network``."""
    rng = rng or random.SystemRandom()
    a, b, c = rng.sample(_WORDS, 3)
    prompt = rng.choice(_TASKS).format(a=a, b=b, c=c)
    return job_pb2.JobSpec(
        model=model,  # no version: most tenants name none, and nodes are compared by name
        prompt=prompt[0].upper() + prompt[1:],
        sampling=job_pb2.SamplingParams(
            temperature=0.0, max_tokens=rng.randint(8, max(8, max_tokens))
        ),
        mode=rng.choice(_MODES),
        priority=job_pb2.PRIORITY_CLASS_NORMAL,
        network=network,  # type: ignore[arg-type]
        ttl=duration_pb2.Duration(seconds=ttl_seconds),
    )
