"""OpenAI request bodies → a ``JobSpec``: pure, no I/O, no HTTP.

The spec is then validated, admitted and accepted by ``JobDesk.submit`` exactly as a gRPC
Submit is; this module only translates names. A field fleetwire cannot honour (``n`` other
than 1, tools, logprobs, penalties, ...) is refused as ``InvalidArgument`` naming it, never
silently dropped. docs/http.md has the table.
"""

from __future__ import annotations

import math
from datetime import timedelta
from enum import Enum
from typing import Any

from fleetwire.domain.errors import FieldViolation, InvalidArgument
from fleetwire.domain.validation import MAX_DURATION_SECONDS
from fleetwire.v1 import job_pb2

PRIORITIES = {
    "urgent": job_pb2.PRIORITY_CLASS_URGENT,
    "normal": job_pb2.PRIORITY_CLASS_NORMAL,
    "bulk": job_pb2.PRIORITY_CLASS_BULK,
    "test": job_pb2.PRIORITY_CLASS_TEST,
}
NETWORKS = {"mainnet": job_pb2.NETWORK_MAINNET, "testnet": job_pb2.NETWORK_TESTNET}
CONSTRAINT_FIELDS = frozenset({"min_gpu_memory_mib", "gpu_class", "region", "subcloud"})
# The ranges of the JobSpec fields integers land in: a larger value is refused here, by
# name, instead of failing in the protobuf runtime (a 500).
INT64 = (-(1 << 63), (1 << 63) - 1)
UINT32 = (0, (1 << 32) - 1)
UINT64 = (0, (1 << 64) - 1)

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


def _number(
    body: dict[str, Any], field: str, bad: list[FieldViolation], *, name: str = ""
) -> float | None:
    """``body[field]`` as a finite float (None when absent or null); ``name`` is how a
    violation names the field (default: ``field``)."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        bad.append(FieldViolation(name or field, "must be a number"))
        return None
    try:
        number = float(value)  # an integer of 400 digits does not fit
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        bad.append(FieldViolation(name or field, "must be a finite number"))
        return None
    return number


def _integer(
    body: dict[str, Any],
    field: str,
    bad: list[FieldViolation],
    *,
    within: tuple[int, int] = INT64,
    name: str = "",
) -> int | None:
    """``body[field]`` as an integer within ``within`` (None when absent or null)."""
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one kind of number: 5.0 is the integer 5
    if isinstance(value, bool) or not isinstance(value, int):
        bad.append(FieldViolation(name or field, "must be an integer"))
        return None
    low, high = within
    if not low <= value <= high:
        bad.append(FieldViolation(name or field, f"must be within {low} and {high}"))
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
    """Whether the answer is a stream (``spec_of`` has refused a ``stream`` that is not a
    boolean)."""
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
    apply_fleetwire_fields(body, spec, bad)
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
    _stream_fields(body, bad)
    for penalty in ("presence_penalty", "frequency_penalty"):
        value = _number(body, penalty, bad)
        _check(value is None or value == 0, penalty, "only 0 is supported", bad)
    max_tokens = _integer(body, "max_tokens", bad, within=UINT32)
    _check(max_tokens is None or max_tokens >= 1, "max_tokens", "at least 1", bad)
    if endpoint is Endpoint.CHAT:
        newer = _integer(body, "max_completion_tokens", bad, within=UINT32)
        _check(newer is None or newer >= 1, "max_completion_tokens", "at least 1", bad)
        max_tokens = newer if newer is not None else max_tokens
    if max_tokens:
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


def _stream_fields(body: dict[str, Any], bad: list[FieldViolation]) -> None:
    """``stream``, ``stream_options`` and ``user`` are read elsewhere or ignored, but a
    value of the wrong type is refused rather than taken as absent."""
    stream = body.get("stream")
    _check(stream is None or isinstance(stream, bool), "stream", "must be a boolean", bad)
    options = body.get("stream_options")
    if options is not None and _check(
        isinstance(options, dict), "stream_options", "must be an object", bad
    ):
        usage = options.get("include_usage")
        _check(
            usage is None or isinstance(usage, bool),
            "stream_options.include_usage",
            "must be a boolean",
            bad,
        )
    user = body.get("user")
    _check(user is None or isinstance(user, str), "user", "must be a string", bad)


def apply_fleetwire_fields(
    body: dict[str, Any], spec: job_pb2.JobSpec, bad: list[FieldViolation]
) -> None:
    """fleetwire's own fields: priority, ttl (seconds), network, subcloud, constraints,
    labels — spelled alike in the OpenAI bodies and the jobs API's (``jobs_json``)."""
    priority = body.get("priority")
    if priority is not None and _check(
        isinstance(priority, str) and priority in PRIORITIES,
        "priority",
        f"one of {sorted(PRIORITIES)}",
        bad,
    ):
        spec.priority = PRIORITIES[priority]
    network = body.get("network")
    if network is not None and _check(
        isinstance(network, str) and network in NETWORKS,
        "network",
        f"one of {sorted(NETWORKS)}",
        bad,
    ):
        spec.network = NETWORKS[network]
    ttl = _number(body, "ttl", bad)
    if ttl is not None and _check(
        0 < ttl <= MAX_DURATION_SECONDS,
        "ttl",
        f"seconds, more than 0 and at most {MAX_DURATION_SECONDS}",
        bad,
    ):
        spec.ttl.FromTimedelta(timedelta(seconds=ttl))
    constraints = body.get("constraints")
    if constraints is None:
        constraints = {}
    if _check(isinstance(constraints, dict), "constraints", "must be an object", bad):
        for name in sorted(set(constraints) - CONSTRAINT_FIELDS):
            bad.append(FieldViolation(f"constraints.{name}", "unknown constraint"))
        memory = _integer(
            constraints,
            "min_gpu_memory_mib",
            bad,
            within=UINT64,
            name="constraints.min_gpu_memory_mib",
        )
        if memory is not None:
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
