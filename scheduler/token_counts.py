"""The mesh's own token counts, from each model's tokenizer (``FLEETWIRE_SCHEDULER_TOKENIZERS``:
model name → a directory with its ``tokenizer.json``), for billing from facts the mesh
checked rather than from what a node signed.

- **Prompt tokens** of a raw prompt are counted exactly as the engine counts them (the
  tokenizer with its special tokens: vLLM's count). A chat's count depends on the model's
  chat template, which the mesh does not render: chats keep the cap of
  ``result_checks.max_prompt_tokens``.
- **Completion tokens** cannot be recounted exactly: re-encoding the decoded output merges
  tokens the model generated apart (a generated ``"a"`` ``"b"`` comes back as ``"ab"``), so
  the recount ``r`` is at most a little above what was generated and often below. A claim
  ``c`` passes when ``c <= COMPLETION_FACTOR * r + COMPLETION_SLACK`` (and the spec's
  ``max_tokens``); beyond that it is an inflation, billed at that bound.

Tokenizers load once per model, at first use; no I/O besides that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetwire.domain.errors import ConfigurationError
from fleetwire.v1 import job_pb2

COMPLETION_FACTOR = 2
COMPLETION_SLACK = 8
PROMPT_SLACK = 2
"""Tokens a node's prompt count may exceed the mesh's (a tokenizer version adding a marker)."""


@dataclass(frozen=True, slots=True)
class Counted:
    """The mesh's bounds for one result: the prompt's token count (None for a chat) and
    the most completion tokens its output can have come from."""

    prompt_tokens: int | None
    completion_bound: int


class TokenCounter:
    """Counts with the tokenizers of the models configured; a model without one is not
    counted (``counted`` returns None and the caps apply)."""

    def __init__(self, tokenizer_dirs: Mapping[str, Path]) -> None:
        self._dirs = dict(tokenizer_dirs)
        self._loaded: dict[str, Any] = {}
        for model, directory in self._dirs.items():
            if not (directory / "tokenizer.json").is_file():
                raise ConfigurationError(
                    f"FLEETWIRE_SCHEDULER_TOKENIZERS: {directory}/tokenizer.json for model "
                    f"{model!r} does not exist"
                )

    def _tokenizer(self, model: str) -> Any:
        if model not in self._loaded:
            try:
                from tokenizers import Tokenizer
            except ImportError as err:  # the `model` extra is not installed
                raise ConfigurationError(
                    "FLEETWIRE_SCHEDULER_TOKENIZERS needs the tokenizers package "
                    "(pip install 'fleetwire[model]')"
                ) from err
            self._loaded[model] = Tokenizer.from_file(str(self._dirs[model] / "tokenizer.json"))
        return self._loaded[model]

    def counted(self, spec: job_pb2.JobSpec, output: str) -> Counted | None:
        """The mesh's counts for ``output`` as the answer to ``spec``; None when the model
        has no tokenizer configured."""
        if spec.model not in self._dirs:
            return None
        tokenizer = self._tokenizer(spec.model)
        prompt = (
            None
            if spec.messages
            else len(tokenizer.encode(spec.prompt, add_special_tokens=True).ids)
        )
        recount = len(tokenizer.encode(output, add_special_tokens=False).ids) if output else 0
        return Counted(prompt, COMPLETION_FACTOR * recount + COMPLETION_SLACK)
