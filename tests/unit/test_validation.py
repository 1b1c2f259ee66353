"""Submit's validation (every bad field named, all at once) and the error → status mapping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from fleetwire.domain.errors import (
    ERROR_DOMAIN,
    BackendUnavailable,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    FleetwireError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RouteUnavailable,
    Unauthenticated,
)
from fleetwire.domain.validation import (
    MAX_LABELS,
    MAX_REQUEST_ID_BYTES,
    MAX_STOP_STRINGS,
    validate_spec,
)
from fleetwire.process.settings import BridgeSettings
from fleetwire.rpc.status import status_for
from fleetwire.v1 import job_pb2

MODELS = ["tiny-llama", "other-model"]
# Explicit values, so neither the environment nor a .env file changes what is tested.
LIMITS = BridgeSettings(
    default_ttl=timedelta(minutes=10),
    max_ttl=timedelta(hours=24),
    max_prompt_bytes=1024,
    max_output_tokens=256,
)


def valid_spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="tiny-llama", prompt="Hello", sampling=job_pb2.SamplingParams(max_tokens=16)
    )


def violated_fields(spec: job_pb2.JobSpec) -> set[str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_spec(spec, models=MODELS, limits=LIMITS)
    return {v.field for v in caught.value.violations}


# --- Defaults. ----------------------------------------------------------------------------


def test_valid_spec_gets_defaults() -> None:
    spec = valid_spec()
    normal = validate_spec(spec, models=MODELS, limits=LIMITS)
    assert normal.priority == job_pb2.PRIORITY_CLASS_NORMAL
    assert normal.mode == job_pb2.INFERENCE_MODE_POLLING
    assert normal.network == job_pb2.NETWORK_MAINNET
    assert normal.ttl.ToTimedelta() == LIMITS.default_ttl
    assert normal.sampling.top_p == 1.0
    assert spec == valid_spec(), "the caller's spec must not be modified"


def test_explicit_values_are_kept() -> None:
    spec = valid_spec()
    spec.priority = job_pb2.PRIORITY_CLASS_URGENT
    spec.mode = job_pb2.INFERENCE_MODE_STREAM
    spec.network = job_pb2.NETWORK_TESTNET
    spec.ttl.FromTimedelta(timedelta(seconds=30))
    spec.sampling.top_p = 0.5
    normal = validate_spec(spec, models=MODELS, limits=LIMITS)
    assert normal.priority == job_pb2.PRIORITY_CLASS_URGENT
    assert normal.mode == job_pb2.INFERENCE_MODE_STREAM
    assert normal.network == job_pb2.NETWORK_TESTNET
    assert normal.ttl.ToTimedelta() == timedelta(seconds=30)
    assert normal.sampling.top_p == 0.5


def test_chat_spec_is_valid() -> None:
    spec = valid_spec()
    spec.prompt = ""
    spec.messages.add(role="system", content="Be brief.")
    spec.messages.add(role="user", content="Hi")
    spec.messages.add(role="assistant", content="Hello.")
    assert validate_spec(spec, models=MODELS, limits=LIMITS).messages == spec.messages


def test_limits_themselves_are_accepted() -> None:
    spec = valid_spec()
    spec.prompt = "x" * LIMITS.max_prompt_bytes
    spec.sampling.max_tokens = LIMITS.max_output_tokens
    spec.sampling.temperature = 2.0
    spec.sampling.top_p = 1.0
    spec.sampling.stop.extend(["s"] * MAX_STOP_STRINGS)
    spec.ttl.FromTimedelta(LIMITS.max_ttl)
    spec.labels.update({f"k{i}": "v" for i in range(MAX_LABELS)})
    spec.client_request_id = "r" * MAX_REQUEST_ID_BYTES
    validate_spec(spec, models=MODELS, limits=LIMITS)


# --- Each bad field is named. -------------------------------------------------------------

Edit = Callable[[job_pb2.JobSpec], None]


def _model(name: str) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        spec.model = name

    return edit


def _both_prompt_and_messages(spec: job_pb2.JobSpec) -> None:
    spec.messages.add(role="user", content="Hi")


def _neither_prompt_nor_messages(spec: job_pb2.JobSpec) -> None:
    spec.prompt = ""


def _prompt_too_large(spec: job_pb2.JobSpec) -> None:
    spec.prompt = "é" * (LIMITS.max_prompt_bytes // 2 + 1)  # counted in bytes, not characters


def _messages_too_large(spec: job_pb2.JobSpec) -> None:
    spec.prompt = ""
    spec.messages.add(role="system", content="x" * LIMITS.max_prompt_bytes)
    spec.messages.add(role="user", content="x")


def _sampling(**values: object) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        for name, value in values.items():
            setattr(spec.sampling, name, value)

    return edit


def _no_sampling(spec: job_pb2.JobSpec) -> None:
    spec.ClearField("sampling")


def _stops(*stops: str) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        spec.sampling.stop.extend(stops)

    return edit


def _bad_role(spec: job_pb2.JobSpec) -> None:
    spec.prompt = ""
    spec.messages.add(role="user", content="Hi")
    spec.messages.add(role="robot", content="Beep")


def _ttl(duration: timedelta) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        spec.ttl.FromTimedelta(duration)

    return edit


def _labels(count: int, size: int = 1) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        spec.labels.update({f"{i}".rjust(size, "k"): "v" for i in range(count)})

    return edit


def _client_request_id(length: int) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        spec.client_request_id = "r" * length

    return edit


def _enum(name: str, value: int) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        setattr(spec, name, value)

    return edit


def _constraint(**values: str) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        for name, value in values.items():
            setattr(spec.constraints, name, value)

    return edit


def _model_version(version: str) -> Edit:
    def edit(spec: job_pb2.JobSpec) -> None:
        spec.model_version = version

    return edit


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        pytest.param(_constraint(region="eu\n"), "job.constraints.region", id="region-newline"),
        pytest.param(
            _constraint(gpu_class="a100\n"), "job.constraints.gpu_class", id="gpu-newline"
        ),
        pytest.param(_model_version("v1\n"), "job.model_version", id="version-newline"),
    ],
)
def test_a_trailing_newline_is_no_plain_name(edit: Edit, field: str) -> None:
    """``$`` matches before a final newline; the names are matched whole."""
    spec = valid_spec()
    edit(spec)
    assert violated_fields(spec) == {field}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        pytest.param(_model("gpt-9"), "job.model", id="unknown-model"),
        pytest.param(_model(""), "job.model", id="missing-model"),
        pytest.param(_both_prompt_and_messages, "job.prompt", id="prompt-and-messages"),
        pytest.param(_neither_prompt_nor_messages, "job.prompt", id="no-prompt-no-messages"),
        pytest.param(_prompt_too_large, "job.prompt", id="prompt-too-large"),
        pytest.param(_messages_too_large, "job.prompt", id="messages-too-large"),
        pytest.param(_sampling(max_tokens=0), "job.sampling.max_tokens", id="max-tokens-0"),
        pytest.param(_no_sampling, "job.sampling.max_tokens", id="no-sampling"),
        pytest.param(
            _sampling(max_tokens=LIMITS.max_output_tokens + 1),
            "job.sampling.max_tokens",
            id="max-tokens-too-large",
        ),
        pytest.param(
            _sampling(temperature=2.5), "job.sampling.temperature", id="temperature-too-high"
        ),
        pytest.param(
            _sampling(temperature=-0.5), "job.sampling.temperature", id="temperature-negative"
        ),
        pytest.param(
            _sampling(temperature=float("nan")), "job.sampling.temperature", id="temperature-nan"
        ),
        pytest.param(_sampling(top_p=1.5), "job.sampling.top_p", id="top-p-too-high"),
        pytest.param(_sampling(top_p=-0.1), "job.sampling.top_p", id="top-p-negative"),
        pytest.param(
            _stops(*["s"] * (MAX_STOP_STRINGS + 1)), "job.sampling.stop", id="too-many-stops"
        ),
        pytest.param(_stops(""), "job.sampling.stop", id="empty-stop"),
        pytest.param(_stops("s" * 65), "job.sampling.stop", id="stop-too-long"),
        pytest.param(_bad_role, "job.messages[1].role", id="bad-role"),
        pytest.param(_ttl(timedelta(0)), "job.ttl", id="ttl-zero"),
        pytest.param(_ttl(timedelta(milliseconds=999)), "job.ttl", id="ttl-too-small"),
        pytest.param(_ttl(timedelta(hours=24, seconds=1)), "job.ttl", id="ttl-too-large"),
        pytest.param(_labels(MAX_LABELS + 1), "job.labels", id="too-many-labels"),
        pytest.param(_labels(1, size=65), "job.labels", id="label-key-too-long"),
        pytest.param(
            _client_request_id(MAX_REQUEST_ID_BYTES + 1),
            "job.client_request_id",
            id="client-request-id-too-long",
        ),
        pytest.param(_enum("priority", 99), "job.priority", id="unknown-priority"),
        pytest.param(_enum("mode", 99), "job.mode", id="unknown-mode"),
        pytest.param(_enum("network", 99), "job.network", id="unknown-network"),
    ],
)
def test_bad_field_is_named(edit: Edit, field: str) -> None:
    spec = valid_spec()
    edit(spec)
    assert violated_fields(spec) == {field}


def test_all_bad_fields_are_reported_at_once() -> None:
    spec = job_pb2.JobSpec(
        model="",
        sampling=job_pb2.SamplingParams(max_tokens=0, temperature=3.0, top_p=2.0),
        client_request_id="r" * (MAX_REQUEST_ID_BYTES + 1),
    )
    spec.ttl.FromTimedelta(timedelta(days=2))
    expected = {
        "job.model",
        "job.prompt",
        "job.sampling.max_tokens",
        "job.sampling.temperature",
        "job.sampling.top_p",
        "job.ttl",
        "job.client_request_id",
    }
    with pytest.raises(InvalidArgument) as caught:
        validate_spec(spec, models=MODELS, limits=LIMITS)
    assert {v.field for v in caught.value.violations} == expected
    for field in expected:
        assert field in caught.value.message
    assert all(v.description for v in caught.value.violations)


def test_unknown_model_names_the_served_models() -> None:
    spec = valid_spec()
    spec.model = "gpt-9"
    with pytest.raises(InvalidArgument) as caught:
        validate_spec(spec, models=MODELS, limits=LIMITS)
    (violation,) = caught.value.violations
    assert "gpt-9" in violation.description
    assert all(model in violation.description for model in MODELS)


# --- Errors on the wire (fleetwire.rpc.status.status_for). -------------------------------


Detail = TypeVar(
    "Detail", error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo
)


def unpack(status: status_pb2.Status, kind: type[Detail]) -> list[Detail]:
    """The details of ``status`` of one kind, unpacked."""
    found: list[Detail] = []
    for detail in status.details:
        assert isinstance(detail, any_pb2.Any)
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            assert detail.Unpack(message)
            found.append(message)
    return found


def test_invalid_argument_carries_error_info_and_bad_request() -> None:
    violations = [
        FieldViolation("job.model", "required"),
        FieldViolation("job.ttl", "must be within 1s and 1 day, 0:00:00"),
    ]
    status = status_for(InvalidArgument(violations))
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert "job.model: required" in status.message
    (info,) = unpack(status, error_details_pb2.ErrorInfo)
    assert info.reason == "INVALID_ARGUMENT"
    assert info.domain == ERROR_DOMAIN
    assert info.metadata["code"] == "INVALID_ARGUMENT"
    (bad_request,) = unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        (v.field, v.description) for v in violations
    ]
    assert unpack(status, error_details_pb2.RetryInfo) == []


@pytest.mark.parametrize(
    ("error", "code", "delay"),
    [
        pytest.param(
            ResourceExhausted("queue full", retry_delay=timedelta(seconds=5)),
            code_pb2.RESOURCE_EXHAUSTED,
            timedelta(seconds=5),
            id="resource-exhausted",
        ),
        pytest.param(
            BackendUnavailable("rabbitmq", "connection refused"),
            code_pb2.UNAVAILABLE,
            timedelta(seconds=1),
            id="backend-unavailable-default",
        ),
        pytest.param(
            BackendUnavailable("postgres", "down", retry_delay=timedelta(milliseconds=2500)),
            code_pb2.UNAVAILABLE,
            timedelta(milliseconds=2500),
            id="backend-unavailable",
        ),
    ],
)
def test_retryable_errors_carry_retry_info(
    error: FleetwireError, code: int, delay: timedelta
) -> None:
    status = status_for(error)
    assert status.code == code
    assert status.message == error.message
    (info,) = unpack(status, error_details_pb2.ErrorInfo)
    assert info.reason == error.reason
    (retry,) = unpack(status, error_details_pb2.RetryInfo)
    assert isinstance(retry.retry_delay, duration_pb2.Duration)
    assert retry.retry_delay.ToTimedelta() == delay
    assert unpack(status, error_details_pb2.BadRequest) == []


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument([FieldViolation("job.model", "required")]),
        NotFound("no such job"),
        FailedPrecondition("job is terminal"),
        Unauthenticated("bad signature"),
        PermissionDenied("key mismatch"),
        ResourceExhausted("slow down", retry_delay=timedelta(seconds=1)),
        BackendUnavailable("redis", "timeout"),
        RouteUnavailable("no queue for route"),
        DeadlineExceeded("too slow"),
        FleetwireError("boom"),
        NotFound("custom", reason="JOB_NOT_FOUND"),
    ],
    ids=lambda error: f"{type(error).__name__}-{error.reason}",
)
def test_status_code_matches_the_error(error: FleetwireError) -> None:
    status = status_for(error)
    assert status.code == error.code.value[0]
    assert code_pb2.Code.Name(status.code) == error.code.name
    (info,) = unpack(status, error_details_pb2.ErrorInfo)
    assert info.reason == error.reason
    assert info.domain == ERROR_DOMAIN
    assert info.metadata["code"] == error.code.name


def test_reason_override_and_class_default() -> None:
    assert NotFound("x").reason == "NOT_FOUND"
    assert NotFound("x", reason="JOB_NOT_FOUND").reason == "JOB_NOT_FOUND"
    assert RouteUnavailable("x").code is grpc.StatusCode.UNAVAILABLE
