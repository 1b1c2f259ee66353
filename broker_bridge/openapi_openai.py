"""The OpenAPI paths of the OpenAI-compatible endpoints (``http_api.OpenAIApi``): chat
completions and completions (JSON, or server-sent events with ``stream: true``) and the
models, with the limits of the running bridge's settings filled into the request schemas.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from broker_bridge.http_bodies import MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY_CHARS
from broker_bridge.openapi_common import (
    BEARER,
    EVENT_STREAM,
    JSON,
    REQUEST_ID,
    PathGroup,
    error_responses,
    header_ref,
    json_content,
    schema_ref,
)
from broker_bridge.openapi_models import (
    REFUSED_CHAT_FIELDS,
    REFUSED_COMPLETION_FIELDS,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorBody,
    ModelList,
    TextCompletion,
    TextCompletionChunk,
    UsageChunk,
)
from fleetwire.process.settings import Settings

TAG = "openai"
COMPLETION_ERRORS = (400, 401, 403, 404, 409, 429, 500, 502, 503, 504)
MODELS_ERRORS = (401, 500, 503)
DONE = "[DONE]"
# What Python's str.isprintable() accepts of the characters an HTTP header can carry.
PRINTABLE_LATIN1 = "^[ -~\u00a1-\u00ac\u00ae-\u00ff]+$"


def _idempotency_key(max_chars: int) -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "The client request id: the same key with the same body answers the "
        "same job (never a second one); with another body it is 409 "
        f"`idempotency_key_reused`. 1 to {max_chars} printable characters.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": max_chars,
            "pattern": PRINTABLE_LATIN1,
            "description": f"At most {max_chars} bytes in UTF-8.",
        },
    }


def _event_stream(*chunks: type[BaseModel]) -> dict[str, Any]:
    """``text/event-stream``: each event's ``data`` is a chunk, the usage chunk, OpenAI's
    error object (the job ended without output; the stream then ends) or ``[DONE]``."""
    answers: tuple[type[BaseModel], ...] = (*chunks, UsageChunk, ErrorBody)
    payloads = [schema_ref(c) for c in answers]
    return {
        EVENT_STREAM: {
            # OpenAPI 3.2: `itemSchema` is each event (`schema` would be the whole stream).
            "itemSchema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "anyOf": [
                            {"const": DONE},
                            {
                                "type": "string",
                                "not": {"const": DONE},
                                "contentMediaType": JSON,
                                "contentSchema": {"anyOf": payloads},
                            },
                        ]
                    }
                },
            },
        }
    }


def _completion(
    summary: str,
    request: type[BaseModel],
    answer: type[BaseModel],
    chunk: type[BaseModel],
    operation_id: str,
    examples: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    return {
        "post": {
            "tags": [TAG],
            "operationId": operation_id,
            "summary": summary,
            "security": [{BEARER: []}],
            "parameters": [_idempotency_key(MAX_IDEMPOTENCY_KEY_CHARS), REQUEST_ID],
            "requestBody": {
                "required": True,
                "description": f"At most {MAX_BODY_BYTES} bytes.",
                "content": {JSON: {"schema": schema_ref(request), "examples": examples}},
            },
            "responses": {
                "200": {
                    "description": "The signed result (JSON), or with `stream: true` "
                    "server-sent events: the role, one chunk per token chunk, a chunk with "
                    "`finish_reason`, the usage chunk when asked, `[DONE]`.",
                    "headers": header_ref("RequestId", required=True)
                    | header_ref("JobId", required=True)
                    | header_ref("KeyId")
                    | header_ref("Signature"),
                    "content": json_content(answer) | _event_stream(chunk),
                },
                **error_responses(*COMPLETION_ERRORS),
            },
        }
    }


def _branches(prop: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a generated property schema."""
    branches = prop.get("anyOf", [prop])
    return [b for b in branches if b.get("type") != "null"]


def _limit(schemas: dict[str, Any], settings: Settings) -> None:
    """Fills the settings' limits (and the model registry) into the request schemas."""
    bridge = settings.bridge
    refused: dict[str, tuple[str, ...]] = {
        "ChatCompletionRequest": REFUSED_CHAT_FIELDS,
        "CompletionRequest": REFUSED_COMPLETION_FIELDS,
    }
    for name, refused_fields in refused.items():
        props = schemas[name]["properties"]
        props["model"]["enum"] = list(settings.mesh.models)
        for field in ("max_tokens", "max_completion_tokens"):
            for branch in _branches(props.get(field, {})):
                branch["maximum"] = bridge.max_output_tokens
        for branch in _branches(props["ttl"]):
            branch["maximum"] = bridge.max_ttl.total_seconds()
        for field in refused_fields:
            props[field] = {"not": {}, "description": "Refused: 400 naming it in `param`."}
    for branch in _branches(schemas["CompletionRequest"]["properties"]["prompt"]):
        target = branch.get("items", branch)
        target["maxLength"] = bridge.max_prompt_bytes
        target["description"] = f"At most {bridge.max_prompt_bytes} bytes (UTF-8)."


def _examples(settings: Settings, **task: Any) -> dict[str, Any]:
    """Request examples of both endpoints (``task``: ``messages`` or ``prompt``), for a model
    this bridge knows, within its limits: plain, streamed, with fleetwire's own fields."""
    model = settings.mesh.models[0] if settings.mesh.models else "tiny-llama"
    ttl = min(60.0, settings.bridge.max_ttl.total_seconds())
    base = {"model": model, **task, "max_tokens": 16}
    plain = {"summary": "The signed result as JSON", "value": base}
    streamed = {
        "summary": "Server-sent events, with the usage chunk",
        "value": base | {"stream": True, "stream_options": {"include_usage": True}},
    }
    fleetwire = {
        "summary": "With fleetwire's own fields",
        "value": base | {"priority": "bulk", "ttl": ttl, "labels": {"team": "search"}},
    }
    return {"plain": plain, "streamed": streamed, "fleetwire": fleetwire}


def group(settings: Settings) -> PathGroup:
    chat = _examples(settings, messages=[{"role": "user", "content": "Hello"}])
    text = _examples(settings, prompt="Once upon a time", stop=["\n"])
    return PathGroup(
        tag=TAG,
        description="OpenAI-compatible: the official SDKs work unchanged (docs/http.md).",
        paths={
            "/v1/chat/completions": _completion(
                "A chat completion (a chat job)",
                ChatCompletionRequest,
                ChatCompletion,
                ChatCompletionChunk,
                "createChatCompletion",
                chat,
            ),
            "/v1/completions": _completion(
                "A completion (a prompt job)",
                CompletionRequest,
                TextCompletion,
                TextCompletionChunk,
                "createCompletion",
                text,
            ),
            "/v1/models": {
                "get": {
                    "tags": [TAG],
                    "operationId": "listModels",
                    "summary": "The registry's models a connected node serves now",
                    "security": [{BEARER: []}],
                    "parameters": [REQUEST_ID],
                    "responses": {
                        "200": {
                            "description": "The models.",
                            "headers": header_ref("RequestId", required=True),
                            "content": json_content(ModelList),
                        },
                        **error_responses(*MODELS_ERRORS),
                    },
                }
            },
        },
        models=(
            ChatCompletionRequest,
            CompletionRequest,
            ChatCompletion,
            TextCompletion,
            ChatCompletionChunk,
            TextCompletionChunk,
            UsageChunk,
            ModelList,
        ),
        limits=lambda schemas: _limit(schemas, settings),
    )
