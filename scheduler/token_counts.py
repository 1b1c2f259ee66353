"""The mesh's own token counts, from each model's tokenizer (``FLEETWIRE_SCHEDULER_TOKENIZERS``:
model name → a directory with its ``tokenizer.json``), for billing from facts the mesh
checked rather than from what a node signed.

- **Prompt tokens** are counted exactly as the engine counts them: a raw prompt with the
  tokenizer and its special tokens (vLLM's count); a chat rendered with the model's chat
  template (``tokenizer_config.json`` or ``chat_template.jinja`` beside the tokenizer) the
  way Hugging Face's ``apply_chat_template`` renders it — a sandboxed Jinja environment,
  trim_blocks and lstrip_blocks, a generation prompt — then encoded without special tokens
  (the template writes its own), as the node does. A model without a template, or
  messages it refuses, keep the cap of ``result_checks.max_prompt_tokens``.
- **Completion tokens** cannot be recounted exactly: re-encoding the decoded output merges
  tokens the model generated apart (a generated ``"a"`` ``"b"`` comes back as ``"ab"``), so
  the recount ``r`` is at most a little above what was generated and often below. A claim
  ``c`` passes when ``c <= COMPLETION_FACTOR * r + COMPLETION_SLACK`` (and the spec's
  ``max_tokens``); beyond that it is an inflation, billed at that bound.

Tokenizers load once per model, at first use; no I/O besides that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
    """The mesh's bounds for one result: the prompt's token count (None for a chat the
    mesh cannot render) and the most completion tokens its output can have come from."""

    prompt_tokens: int | None
    completion_bound: int


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A model's chat template and the special tokens it may name."""

    source: str
    tokens: dict[str, str]

    @classmethod
    def beside(cls, directory: Path) -> ChatTemplate | None:
        """The template of the tokenizer in ``directory``; None when it has none."""
        config: dict[str, Any] = {}
        config_file = directory / "tokenizer_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
        source: Any = config.get("chat_template")
        if isinstance(source, list):  # named templates: the default one
            source = next((t.get("template") for t in source if t.get("name") == "default"), None)
        jinja_file = directory / "chat_template.jinja"
        if jinja_file.is_file():
            source = jinja_file.read_text()
        if not isinstance(source, str):
            return None
        tokens = {}
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = config.get(name)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                tokens[name] = value
        return cls(source, tokens)

    def render(self, messages: Sequence[tuple[str, str]]) -> str | None:
        """The prompt text of ``messages``; None when the template refuses them."""
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        environment.globals["raise_exception"] = raise_exception
        try:
            return environment.from_string(self.source).render(
                messages=[{"role": role, "content": content} for role, content in messages],
                add_generation_prompt=True,
                **self.tokens,
            )
        except TemplateError:
            return None


class TokenCounter:
    """Counts with the tokenizers of the models configured; a model without one is not
    counted (``counted`` returns None and the caps apply)."""

    def __init__(self, tokenizer_dirs: Mapping[str, Path]) -> None:
        self._dirs = dict(tokenizer_dirs)
        self._loaded: dict[str, Any] = {}
        self._templates: dict[str, ChatTemplate | None] = {}
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
        prompt: int | None = None
        if not spec.messages:
            prompt = len(tokenizer.encode(spec.prompt, add_special_tokens=True).ids)
        else:
            text = self._chat(spec.model, [(m.role, m.content) for m in spec.messages])
            if text is not None:
                prompt = len(tokenizer.encode(text, add_special_tokens=False).ids)
        recount = len(tokenizer.encode(output, add_special_tokens=False).ids) if output else 0
        return Counted(prompt, COMPLETION_FACTOR * recount + COMPLETION_SLACK)

    def _chat(self, model: str, messages: list[tuple[str, str]]) -> str | None:
        if model not in self._templates:
            self._templates[model] = ChatTemplate.beside(self._dirs[model])
        template = self._templates[model]
        return template.render(messages) if template is not None else None
