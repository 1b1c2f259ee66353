"""Typed models of the OpenAI-compatible bodies, for the OpenAPI document only.

The handlers do not parse with these (``openai_requests`` does, by hand, so that every bad
field is named as the gRPC edge names it); the document's JSON Schemas are generated from
them (pydantic v2), and ``tests/unit/test_openapi_document.py`` keeps their field names in
step with ``openai_requests``' accepted fields and with what ``openai_responses`` builds.
Limits that are constants of the bridge's validation are taken from it here; limits that
are settings (largest ``max_tokens``, ``ttl``, prompt size, the model registry) are filled
in by ``openapi_openai`` from the running bridge's settings.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetwire.domain import validation
from fleetwire.messaging.topology import SUBCLOUD_NAME

INT64_MAX = (1 << 63) - 1

StopString = Annotated[
    str,
    Field(
        min_length=1,
        max_length=validation.MAX_STOP_BYTES,
        description=f"1 to {validation.MAX_STOP_BYTES} bytes (UTF-8).",
    ),
]
# An empty name is taken as absent (the validation checks only names that are set).
SubcloudName = Annotated[str, Field(pattern=f"^$|{SUBCLOUD_NAME.pattern}")]
PlainName = Annotated[str, Field(pattern=f"^$|{validation.NAME.pattern}")]
LabelText = Annotated[str, Field(max_length=validation.MAX_LABEL_BYTES)]


class _Body(BaseModel):
    """A request object: fields not listed are refused (400 naming the field)."""

    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """An object whose unlisted fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class TextPart(_Open):
    """One part of a message's content; only text parts are accepted."""

    type: Literal["text"]
    text: str


class ChatMessage(_Open):
    """A chat message. Other fields of OpenAI's message (``name``, ...) are ignored."""

    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="`developer` is taken as `system`."
    )
    content: str | list[TextPart] = Field(
        description="A string, or a list of text parts (joined). The prompt's bytes (all "
        "messages together) are limited as `prompt` is."
    )


class StreamOptions(_Open):
    include_usage: bool | None = Field(
        None, description="Send a last chunk with no choices, the usage and `fleetwire`."
    )


class Constraints(_Body):
    """Where the job may run (fleetwire's own)."""

    min_gpu_memory_mib: int | None = Field(None, ge=0, le=validation.MAX_GPU_MEMORY_MIB)
    gpu_class: PlainName | None = None
    region: PlainName | None = None
    subcloud: SubcloudName | None = None


class _Sampling(_Body):
    """The fields both endpoints accept. A field that is null is taken as absent."""

    model: str = Field(description="A model of the mesh's registry (else 404).")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Largest number of output tokens (default: the bridge's "
        "`FLEETWIRE_BRIDGE_HTTP_DEFAULT_MAX_TOKENS`).",
    )
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1, description="0 means 1.")
    seed: int | None = Field(None, ge=-INT64_MAX - 1, le=INT64_MAX)
    stop: StopString | list[StopString] | None = Field(None, max_length=validation.MAX_STOP_STRINGS)
    n: Literal[1] | None = Field(None, description="Only 1 is supported.")
    presence_penalty: Literal[0] | None = Field(None, description="Only 0 is supported.")
    frequency_penalty: Literal[0] | None = Field(None, description="Only 0 is supported.")
    stream: bool | None = Field(None, description="Answer with server-sent events.")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="Accepted and ignored.")
    priority: Literal["urgent", "normal", "bulk", "test"] | None = Field(
        None, description="fleetwire: the priority class (the tenant's policy applies)."
    )
    ttl: float | None = Field(
        None, ge=1, description="fleetwire: seconds the job may wait and run before it expires."
    )
    network: Literal["mainnet", "testnet"] | None = Field(
        None, description="fleetwire: mainnet (billed; the default) or testnet."
    )
    subcloud: SubcloudName | None = Field(
        None, description="fleetwire: the subcloud (same as `constraints.subcloud`)."
    )
    constraints: Constraints | None = None
    labels: (
        Annotated[
            dict[LabelText, LabelText],
            Field(
                max_length=validation.MAX_LABELS,
                description=f"fleetwire: at most {validation.MAX_LABELS} labels, keys and "
                f"values at most {validation.MAX_LABEL_BYTES} bytes.",
            ),
        ]
        | None
    ) = None


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=validation.MAX_MESSAGES)
    max_completion_tokens: int | None = Field(
        None, ge=1, description="OpenAI's newer name of `max_tokens`; wins over it."
    )


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)]
    ) = Field(description="One string, or a list of exactly one.")


# Fields of OpenAI's API that fleetwire refuses (400, the field named in `param`); any other
# unknown field is refused the same way. Documented so that clients see them as refused.
REFUSED_CHAT_FIELDS = (
    "audio",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "metadata",
    "modalities",
    "parallel_tool_calls",
    "prediction",
    "reasoning_effort",
    "response_format",
    "service_tier",
    "store",
    "tool_choice",
    "tools",
    "top_logprobs",
    "web_search_options",
)
REFUSED_COMPLETION_FIELDS = ("best_of", "echo", "logit_bias", "logprobs", "suffix")


# ---- answers -------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)


class FleetwireProof(BaseModel):
    """What a client needs to verify the result offline (docs/signing.md)."""

    job_id: str
    node_id: str
    key_id: str
    signature: str = Field(description="ed25519 signature, base64.")
    trace_id: str
    job: dict[str, Any] = Field(description="The finished `fleetwire.v1.Job`, protobuf JSON.")


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None


class ChatCompletion(BaseModel):
    id: str = Field(description="`chatcmpl-<job id>`.")
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice] = Field(min_length=1, max_length=1)
    usage: Usage
    fleetwire: FleetwireProof


class TextChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: None


class TextCompletion(BaseModel):
    id: str = Field(description="`cmpl-<job id>`.")
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice] = Field(min_length=1, max_length=1)
    usage: Usage
    fleetwire: FleetwireProof


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None
    logprobs: None


class ChatCompletionChunk(BaseModel):
    """One event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice] = Field(min_length=1, max_length=1)


class TextChunkChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: None


class TextCompletionChunk(BaseModel):
    """One event of a streamed completion."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChunkChoice] = Field(min_length=1, max_length=1)


class UsageChunk(BaseModel):
    """The last event before ``[DONE]`` with ``stream_options.include_usage``."""

    id: str
    object: Literal["chat.completion.chunk", "text_completion"]
    created: int
    model: str
    choices: list[Any] = Field(max_length=0)
    usage: Usage
    fleetwire: FleetwireProof


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    """The registry's models at least one connected node serves now."""

    object: Literal["list"]
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: Literal[
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "rate_limit_error",
        "server_error",
    ]
    param: str | None = Field(description="The first bad field, as the body spells it.")
    code: str = Field(description="The error's stable reason in lower case.")


class ErrorBody(BaseModel):
    """OpenAI's error object."""

    error: ErrorDetail
