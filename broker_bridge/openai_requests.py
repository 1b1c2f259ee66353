"""OpenAI request bodies → a ``JobSpec``: pure, no I/O, no HTTP.

The spec is then validated, admitted and accepted by ``JobDesk.submit`` exactly as a gRPC
Submit is; this module only translates names. A field fleetwire cannot honour (``n`` other
than 1, tools, logprobs, penalties, ...) is refused as ``InvalidArgument`` naming it, never
silently dropped. docs/http.md has the table.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import Any

from fleetwire.domain.errors import FieldViolation, InvalidArgument
from fleetwire.v1 import job_pb2

PRIORITIES = {
    "urgent": job_pb2.PRIORITY_CLASS_URGENT,
    "normal": job_pb2.PRIORITY_CLASS_NORMAL,
    "bulk": job_pb2.PRIORITY_CLASS_BULK,
    "test": job_pb2.PRIORITY_CLASS_TEST,
}
NETWORKS = {"mainnet": job_pb2.NETWORK_MAINNET, "testnet": job_pb2.NETWORK_TESTNET}
CONSTRAINT_FIELDS = frozenset({"min_gpu_memory_mib", "gpu_class", "region", "subcloud"})

# Accepted and mapped (or, for ``user`` and ``stream_options``, read elsewhere / ignored).
COMMON_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "n",
        "stream",
        "stream_options",
        "user",
        "presence_penalty",
        "frequency_penalty",
        # fleetwire's own (documented extra body fields)
        "priority",
        "ttl",
        "network",
        "subcloud",
        "constraints",
        "labels",
    }
)
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt"}


class Endpoint(Enum):
    CHAT = "chat"
    COMPLETION = "completion"


def _check(condition: bool, field: str, description: str, bad: list[FieldViolation]) -> bool:
    if not condition:
        bad.append(FieldViolation(field, description))
    return condition


def _number(body: dict[str, Any], field: str, bad: list[FieldViolation]) -> float | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        bad.append(FieldViolation(field, "must be a number"))
        return None
    return float(value)


def _integer(body: dict[str, Any], field: str, bad: list[FieldViolation]) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        bad.append(FieldViolation(field, "must be an integer"))
        return None
    return value


def _text(value: Any) -> str | None:
    """Message content: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    return None


def wants_stream(body: dict[str, Any]) -> bool:
    return body.get("stream") is True


def wants_usage_chunk(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def spec_of(body: Any, endpoint: Endpoint, *, idempotency_key: str | None) -> job_pb2.JobSpec:
    """The job of an OpenAI body (a parsed JSON object). InvalidArgument names every field
    that is malformed or that fleetwire does not support; limits (prompt size, max tokens,
    TTL, known models) are left to the bridge's one validation."""
    if not isinstance(body, dict):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    bad: list[FieldViolation] = []
    allowed = CHAT_FIELDS if endpoint is Endpoint.CHAT else COMPLETION_FIELDS
    bad.extend(
        FieldViolation(name, "not supported by fleetwire")
        for name in sorted(body)
        if name not in allowed
    )
    spec = job_pb2.JobSpec(mode=job_pb2.INFERENCE_MODE_SYNC)
    model = body.get("model")
    if isinstance(model, str) and model:
        spec.model = model
    else:
        bad.append(FieldViolation("model", "required (a string)"))
    if endpoint is Endpoint.CHAT:
        _messages(body.get("messages"), spec, bad)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            spec.prompt = prompt
        else:
            bad.append(FieldViolation("prompt", "must be one string"))
    _sampling(body, endpoint, spec.sampling, bad)
    _extras(body, spec, bad)
    if idempotency_key:
        spec.client_request_id = idempotency_key
    if bad:
        raise InvalidArgument(bad)
    return spec


def _messages(messages: Any, spec: job_pb2.JobSpec, bad: list[FieldViolation]) -> None:
    if not _check(
        isinstance(messages, list) and bool(messages), "messages", "a non-empty list", bad
    ):
        return
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            bad.append(FieldViolation(f"messages[{i}]", "must be an object"))
            continue
        role = message.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        content = _text(message.get("content"))
        if not isinstance(role, str) or content is None:
            bad.append(FieldViolation(f"messages[{i}]", "needs a role and text content"))
            continue
        spec.messages.add(role=role, content=content)


def _sampling(
    body: dict[str, Any],
    endpoint: Endpoint,
    sampling: job_pb2.SamplingParams,
    bad: list[FieldViolation],
) -> None:
    n = _integer(body, "n", bad)
    _check(n is None or n == 1, "n", "only 1 is supported", bad)
    for penalty in ("presence_penalty", "frequency_penalty"):
        value = _number(body, penalty, bad)
        _check(value is None or value == 0, penalty, "only 0 is supported", bad)
    max_tokens = _integer(body, "max_tokens", bad)
    if endpoint is Endpoint.CHAT:
        newer = _integer(body, "max_completion_tokens", bad)
        max_tokens = newer if newer is not None else max_tokens
    if max_tokens is not None and _check(max_tokens >= 1, "max_tokens", "at least 1", bad):
        sampling.max_tokens = max_tokens
    temperature = _number(body, "temperature", bad)
    if temperature is not None:
        sampling.temperature = temperature
    top_p = _number(body, "top_p", bad)
    if top_p is not None:
        sampling.top_p = top_p
    seed = _integer(body, "seed", bad)
    if seed is not None:
        sampling.seed = seed
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and _check(
        isinstance(stop, list) and all(isinstance(s, str) for s in stop),
        "stop",
        "a string or a list of strings",
        bad,
    ):
        sampling.stop.extend(stop)


def _extras(body: dict[str, Any], spec: job_pb2.JobSpec, bad: list[FieldViolation]) -> None:
    """fleetwire's own fields: priority, ttl (seconds), network, subcloud, constraints,
    labels."""
    priority = body.get("priority")
    if priority is not None and _check(
        priority in PRIORITIES, "priority", f"one of {sorted(PRIORITIES)}", bad
    ):
        spec.priority = PRIORITIES[priority]
    network = body.get("network")
    if network is not None and _check(
        network in NETWORKS, "network", f"one of {sorted(NETWORKS)}", bad
    ):
        spec.network = NETWORKS[network]
    ttl = _number(body, "ttl", bad)
    if ttl is not None and _check(ttl > 0, "ttl", "seconds, more than 0", bad):
        spec.ttl.FromTimedelta(timedelta(seconds=ttl))
    constraints = body.get("constraints") or {}
    if _check(isinstance(constraints, dict), "constraints", "must be an object", bad):
        for name in sorted(set(constraints) - CONSTRAINT_FIELDS):
            bad.append(FieldViolation(f"constraints.{name}", "unknown constraint"))
        memory = _integer(constraints, "min_gpu_memory_mib", bad)
        if memory is not None and _check(
            memory >= 0, "constraints.min_gpu_memory_mib", ">= 0", bad
        ):
            spec.constraints.min_gpu_memory_mib = memory
        for name in ("gpu_class", "region", "subcloud"):
            value = constraints.get(name)
            if value is not None and _check(
                isinstance(value, str), f"constraints.{name}", "a string", bad
            ):
                setattr(spec.constraints, name, value)
    subcloud = body.get("subcloud")
    if subcloud is not None and _check(isinstance(subcloud, str), "subcloud", "a string", bad):
        spec.constraints.subcloud = subcloud
    labels = body.get("labels")
    if labels is not None and _check(
        isinstance(labels, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()),
        "labels",
        "an object of strings",
        bad,
    ):
        spec.labels.update(labels)
