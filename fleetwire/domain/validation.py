"""Submit's validation: every field checked, defaults applied, all violations reported.

Also the well-formedness of every ``google.protobuf.Duration`` and ``Timestamp`` in any
request (``time_field_violations``), which the gRPC edge checks before a handler runs: the
protobuf runtime decodes a Duration of 2**62 s or one with nanos of the wrong sign without
complaint, and converting it later fails or silently means something else.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import timedelta

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from fleetwire.domain.errors import FieldViolation, InvalidArgument
from fleetwire.messaging.topology import SUBCLOUD_NAME
from fleetwire.process.settings import BridgeSettings
from fleetwire.v1 import job_pb2

MAX_STOP_STRINGS = 8
MAX_STOP_BYTES = 64
MAX_LABELS = 16
MAX_LABEL_BYTES = 64
MAX_REQUEST_ID_BYTES = 128
CHAT_ROLES = frozenset({"system", "user", "assistant"})
MAX_MESSAGES = 256
MAX_GPU_MEMORY_MIB = 1 << 22  # 4 TiB: anything larger is a unit mistake
# GPU classes and regions: short plain names. Subclouds are stricter (SUBCLOUD_NAME): a
# subcloud is a routing-key word, and two names must never share a queue.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NODE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")  # what a node calls itself in Hello
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")  # "v1", "sha256:ab12..."

# The ranges google/protobuf/duration.proto and timestamp.proto define.
MAX_DURATION_SECONDS = 315_576_000_000  # about 10,000 years
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_NANOS = 999_999_999
_DURATION = duration_pb2.Duration.DESCRIPTOR.full_name
_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name


def validate_spec(
    spec: job_pb2.JobSpec, *, models: list[str], limits: BridgeSettings
) -> job_pb2.JobSpec:
    """Returns a copy of ``spec`` with defaults applied (priority normal, mode polling,
    network mainnet, the default TTL). Raises InvalidArgument naming every bad field."""
    bad: list[FieldViolation] = []

    def violation(field: str, description: str) -> None:
        bad.append(FieldViolation(f"job.{field}", description))

    if not spec.model:
        violation("model", "required")
    elif spec.model not in models:
        violation("model", f"unknown model {spec.model!r}; served: {', '.join(models)}")

    has_prompt, has_messages = bool(spec.prompt), len(spec.messages) > 0
    if has_prompt == has_messages:
        violation("prompt", "set exactly one of prompt and messages")
    prompt_bytes = len(spec.prompt.encode()) + sum(len(m.content.encode()) for m in spec.messages)
    if prompt_bytes > limits.max_prompt_bytes:
        violation("prompt", f"{prompt_bytes} bytes; at most {limits.max_prompt_bytes}")
    if len(spec.messages) > MAX_MESSAGES:
        violation("messages", f"at most {MAX_MESSAGES} messages")
    for i, message in enumerate(spec.messages):
        if message.role not in CHAT_ROLES:
            violation(f"messages[{i}].role", f"must be one of {sorted(CHAT_ROLES)}")
    if spec.model_version and not VERSION.fullmatch(spec.model_version):
        violation("model_version", f"must match {VERSION.pattern}")

    constraints = spec.constraints
    if constraints.min_gpu_memory_mib > MAX_GPU_MEMORY_MIB:
        violation("constraints.min_gpu_memory_mib", f"at most {MAX_GPU_MEMORY_MIB} (MiB)")
    for name in ("gpu_class", "region"):
        value = getattr(constraints, name)
        if value and not NAME.fullmatch(value):
            violation(f"constraints.{name}", f"must match {NAME.pattern}")
    if constraints.subcloud and not SUBCLOUD_NAME.fullmatch(constraints.subcloud):
        violation("constraints.subcloud", f"must match {SUBCLOUD_NAME.pattern}")

    sampling = spec.sampling
    if not spec.HasField("sampling") or sampling.max_tokens == 0:
        violation("sampling.max_tokens", "required, at least 1")
    elif sampling.max_tokens > limits.max_output_tokens:
        violation("sampling.max_tokens", f"at most {limits.max_output_tokens}")
    if not 0.0 <= sampling.temperature <= 2.0:
        violation("sampling.temperature", "must be within [0, 2]")
    if not 0.0 <= sampling.top_p <= 1.0:
        violation("sampling.top_p", "must be within (0, 1]; 0 means 1")
    if len(sampling.stop) > MAX_STOP_STRINGS:
        violation("sampling.stop", f"at most {MAX_STOP_STRINGS} stop strings")
    if any(not s or len(s.encode()) > MAX_STOP_BYTES for s in sampling.stop):
        violation("sampling.stop", f"each stop string must have 1 to {MAX_STOP_BYTES} bytes")

    for field, enum in (
        ("priority", job_pb2.PriorityClass),
        ("mode", job_pb2.InferenceMode),
        ("network", job_pb2.Network),
    ):
        value = getattr(spec, field)
        if value not in enum.values():
            violation(field, f"unknown value {value}")

    ttl = limits.default_ttl
    malformed = duration_problem(spec.ttl) if spec.HasField("ttl") else None
    if malformed is not None:
        violation("ttl", malformed)
    else:
        if spec.HasField("ttl"):
            ttl = spec.ttl.ToTimedelta()
        if not timedelta(seconds=1) <= ttl <= limits.max_ttl:
            violation("ttl", f"must be within 1s and {limits.max_ttl}")

    if len(spec.client_request_id.encode()) > MAX_REQUEST_ID_BYTES:
        violation("client_request_id", f"at most {MAX_REQUEST_ID_BYTES} bytes")
    elif not spec.client_request_id.isprintable():
        violation("client_request_id", "printable characters only")
    if len(spec.labels) > MAX_LABELS:
        violation("labels", f"at most {MAX_LABELS} labels")
    if any(
        len(k.encode()) > MAX_LABEL_BYTES or len(v.encode()) > MAX_LABEL_BYTES
        for k, v in spec.labels.items()
    ):
        violation("labels", f"keys and values at most {MAX_LABEL_BYTES} bytes")

    if bad:
        raise InvalidArgument(bad)

    normal = job_pb2.JobSpec()
    normal.CopyFrom(spec)
    if normal.priority == job_pb2.PRIORITY_CLASS_UNSPECIFIED:
        normal.priority = job_pb2.PRIORITY_CLASS_NORMAL
    if normal.mode == job_pb2.INFERENCE_MODE_UNSPECIFIED:
        normal.mode = job_pb2.INFERENCE_MODE_POLLING
    if normal.network == job_pb2.NETWORK_UNSPECIFIED:
        normal.network = job_pb2.NETWORK_MAINNET
    if normal.sampling.top_p == 0.0:
        normal.sampling.top_p = 1.0
    normal.ttl.FromTimedelta(ttl)
    return normal


def duration_problem(duration: duration_pb2.Duration) -> str | None:
    """Why ``duration`` is not a google.protobuf.Duration as its definition allows (seconds
    within ±315,576,000,000; nanos within ±999,999,999 and of the sign of seconds), or None.
    """
    if not -MAX_DURATION_SECONDS <= duration.seconds <= MAX_DURATION_SECONDS:
        return f"malformed Duration: seconds must be within ±{MAX_DURATION_SECONDS:,}"
    if not -MAX_NANOS <= duration.nanos <= MAX_NANOS:
        return f"malformed Duration: nanos must be within ±{MAX_NANOS:,}"
    if (duration.seconds > 0 > duration.nanos) or (duration.seconds < 0 < duration.nanos):
        return "malformed Duration: nanos must have the sign of seconds"
    return None


def timestamp_problem(timestamp: timestamp_pb2.Timestamp) -> str | None:
    """Why ``timestamp`` is not a google.protobuf.Timestamp as its definition allows (0001-01-01
    to 9999-12-31 UTC; nanos within 0..999,999,999), or None."""
    if not MIN_TIMESTAMP_SECONDS <= timestamp.seconds <= MAX_TIMESTAMP_SECONDS:
        return "malformed Timestamp: must be within 0001-01-01 and 9999-12-31 UTC"
    if not 0 <= timestamp.nanos <= MAX_NANOS:
        return f"malformed Timestamp: nanos must be within 0 and {MAX_NANOS:,}"
    return None


def time_field_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Every malformed Duration or Timestamp anywhere in ``message``, named by its field path
    as the request spells it (``job.ttl``, ``jobs[3].ttl``). Message types that cannot hold
    one cost a cached lookup and nothing more."""
    found: list[FieldViolation] = []
    for path, value in _time_values(message, prefix):
        kind = value.DESCRIPTOR.full_name
        problem = (
            duration_problem(value)  # type: ignore[arg-type]
            if kind == _DURATION
            else timestamp_problem(value)  # type: ignore[arg-type]
        )
        if problem is not None:
            found.append(FieldViolation(path, problem))
    return found


def _time_values(message: Message, prefix: str) -> Iterator[tuple[str, Message]]:
    """(path, value) of every Duration and Timestamp set in ``message``, depth first."""
    for field in _time_bearing_fields(message.DESCRIPTOR):
        path = f"{prefix}.{field.name}" if prefix else field.name
        value = getattr(message, field.name)
        items: list[tuple[str, Message]]
        if field.message_type.GetOptions().map_entry:
            items = [(f"{path}[{key}]", item) for key, item in value.items()]
        elif field.is_repeated:
            items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        elif message.HasField(field.name):
            items = [(path, value)]
        else:
            continue
        for item_path, item in items:
            if item.DESCRIPTOR.full_name in (_DURATION, _TIMESTAMP):
                yield item_path, item
            else:
                yield from _time_values(item, item_path)


@functools.cache
def _time_bearing_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    """The message-typed fields of ``descriptor`` through which a Duration or Timestamp can
    be reached (a map counts through its values)."""
    return tuple(
        f
        for f in descriptor.fields
        if f.message_type is not None and _holds_time(f.message_type, frozenset())
    )


def _holds_time(descriptor: Descriptor, visiting: frozenset[str]) -> bool:
    if descriptor.full_name in (_DURATION, _TIMESTAMP):
        return True
    if descriptor.full_name in visiting:  # a recursive type: its other fields decide
        return False
    inner = visiting | {descriptor.full_name}
    return any(
        f.message_type is not None and _holds_time(f.message_type, inner) for f in descriptor.fields
    )
