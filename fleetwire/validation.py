"""Submit's validation: every field checked, defaults applied, all violations reported."""

from __future__ import annotations

import re
from datetime import timedelta

from fleetwire.errors import FieldViolation, InvalidArgument
from fleetwire.settings import BridgeSettings
from fleetwire.signing import RequestFacts
from fleetwire.v1 import job_pb2

MAX_STOP_STRINGS = 8
MAX_STOP_BYTES = 64
MAX_LABELS = 16
MAX_LABEL_BYTES = 64
MAX_REQUEST_ID_BYTES = 128
CHAT_ROLES = frozenset({"system", "user", "assistant"})
MAX_MESSAGES = 256
MAX_GPU_MEMORY_MIB = 1 << 22  # 4 TiB: anything larger is a unit mistake
# model versions, GPU classes, regions and subclouds: short plain names
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")  # "v1", "sha256:ab12..."


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
    if spec.model_version and not VERSION.match(spec.model_version):
        violation("model_version", f"must match {VERSION.pattern}")

    constraints = spec.constraints
    if constraints.min_gpu_memory_mib > MAX_GPU_MEMORY_MIB:
        violation("constraints.min_gpu_memory_mib", f"at most {MAX_GPU_MEMORY_MIB} (MiB)")
    for name in ("gpu_class", "region", "subcloud"):
        value = getattr(constraints, name)
        if value and not NAME.match(value):
            violation(f"constraints.{name}", f"must match {NAME.pattern}")

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

    ttl = spec.ttl.ToTimedelta() if spec.HasField("ttl") else limits.default_ttl
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


def request_facts(job_id: str, spec: job_pb2.JobSpec) -> RequestFacts:
    """The signed facts of a (validated) spec; see docs/signing.md."""
    s = spec.sampling
    return RequestFacts(
        job_id=job_id,
        model=spec.model,
        model_version=spec.model_version,
        prompt=spec.prompt,
        messages=[(m.role, m.content) for m in spec.messages],
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed if s.HasField("seed") else None,
        stop=list(s.stop),
        ignore_eos=s.ignore_eos,
    )
