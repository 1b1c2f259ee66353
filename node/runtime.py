"""What the node agent runs jobs on: the ``Runtime`` protocol, its requests, its chunks
and its errors. ``node.vllm_runtime.VllmRuntime`` implements it for vLLM; the benchmarks
inject a runtime of their own (``bench.bench_runtime``) through ``node.main.run_node``.
Nothing here imports an engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = [
    "FINISH_REASONS",
    "DuplicateRequestError",
    "EngineNotRunningError",
    "EngineStartError",
    "GenerationChunk",
    "GenerationFailedError",
    "GenerationRequest",
    "InvalidRequestError",
    "PromptTooLongError",
    "Runtime",
    "RuntimeFailure",
    "SamplingSpec",
    "VllmRuntimeError",
]

FINISH_REASONS: Final = frozenset({"stop", "length", "abort", "error"})
"""Every ``GenerationChunk.finish_reason`` a finished stream can carry."""


class RuntimeFailure(Exception):
    """Base of a runtime's errors."""


class InvalidRequestError(RuntimeFailure):
    """The request cannot run on this model (bad messages, no chat template). Not retryable."""


class PromptTooLongError(InvalidRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context. Not retryable.

    Raised before anything is submitted to the engine.
    """

    def __init__(self, *, prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
        super().__init__(
            f"prompt of {prompt_tokens} tokens plus max_tokens {max_tokens} exceeds "
            f"the model's context of {max_model_len} tokens"
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len


class DuplicateRequestError(RuntimeFailure):
    """A stream with this request id is already running on this runtime."""


class EngineNotRunningError(RuntimeFailure):
    """The engine is not started, is stopping, or has died. Retry on another node."""


class EngineStartError(RuntimeFailure):
    """The engine failed to start (bad model directory, not enough memory, ...)."""


class GenerationFailedError(RuntimeFailure):
    """vLLM failed the request for a reason other than its input. Retryable."""


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """How to sample. ``temperature == 0`` is greedy; ``seed`` makes sampling repeatable.

    ``ignore_eos`` keeps generating past the end-of-sequence token, so exactly
    ``max_tokens`` tokens come out (unless a stop string matches first).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation: either a plain ``prompt`` or chat ``messages``, never both.

    A plain prompt is tokenized with the model's special tokens (BOS); chat messages, as
    (role, content) pairs, are rendered with the model's chat template and a generation
    prompt for the assistant.
    """

    request_id: str
    prompt: str | None
    messages: tuple[tuple[str, str], ...]
    sampling: SamplingSpec

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must not be empty")
        if (self.prompt is None) == (not self.messages):
            raise ValueError("give exactly one of prompt and messages")


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """One step of a stream. The last chunk of every stream has ``finished=True``.

    ``text`` and ``token_count`` are the new text and tokens since the previous chunk
    (either may be empty or zero: the detokenizer holds back incomplete characters and
    text that may begin a stop string). ``finish_reason`` is one of ``FINISH_REASONS`` when
    finished, else None: "stop" (EOS or a stop string), "length" (``max_tokens``),
    "abort" (``abort`` or ``stop`` was called) or "error" (an engine-side failure of this
    request; retryable).
    """

    text: str
    token_count: int
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


VllmRuntimeError = RuntimeFailure  # the name the vLLM adapter's callers know


class Runtime(Protocol):
    """An inference engine serving one model, as the agent and the job runner use it.

    ``start`` and ``stop`` are idempotent; ``generate`` raises ``EngineNotRunningError``
    before ``start`` or after ``stop``, ``DuplicateRequestError`` for a request id in use,
    ``InvalidRequestError`` (``PromptTooLongError``) for input that cannot run, and
    streams chunks whose last one has ``finished=True``; ``abort`` ends a stream with
    ``finish_reason="abort"``."""

    @property
    def running(self) -> bool: ...

    @property
    def max_concurrency(self) -> int: ...

    @property
    def max_model_len(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def check_health(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]: ...

    async def abort(self, request_id: str) -> None: ...
