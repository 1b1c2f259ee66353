"""Typed models of the jobs API's bodies (``/v1/jobs``, ``/v1/batches``, the events), for the
OpenAPI document only.

The handlers do not parse with these: ``jobs_json`` maps a body by hand (every bad field
named) and builds the views; ``tests/unit/test_openapi_document.py`` keeps the documented
fields equal to ``jobs_json``'s accepted ones and validates what it builds against the
generated schemas. A field that is null is taken as absent, as ``jobs_json`` reads it.
Settings-dependent limits (the model registry, largest ``max_tokens`` and ``ttl``, prompt
size, batch size) are filled in by ``openapi_jobs``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from broker_bridge.openapi_models import (
    INT64_MAX,
    Constraints,
    LabelText,
    StopString,
    SubcloudName,
    Usage,
)
from fleetwire.domain import validation
from fleetwire.domain.states import JobState

# An empty version is taken as absent.
VersionText = Annotated[str, Field(pattern=f"^$|{validation.VERSION.pattern}")]


class _Body(BaseModel):
    """A request object: fields not listed are refused (400 naming the field)."""

    model_config = ConfigDict(extra="forbid")


class JobMessage(_Body):
    """One chat message: exactly ``role`` and ``content``."""

    role: Literal["system", "user", "assistant"]
    content: str


class JobSampling(_Body):
    """``sampling``: how the model samples."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1, description="0 means 1.")
    seed: int | None = Field(None, ge=-INT64_MAX - 1, le=INT64_MAX)
    stop: StopString | list[StopString] | None = Field(None, max_length=validation.MAX_STOP_STRINGS)
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Largest number of output tokens (default: the bridge's "
        "`FLEETWIRE_BRIDGE_HTTP_DEFAULT_MAX_TOKENS`).",
    )
    ignore_eos: bool | None = Field(None, description="Generate until `max_tokens`.")


class JobRequest(_Body):
    """``POST /v1/jobs`` (and each of a batch's ``jobs``): one job, mode POLLING. Exactly one
    of ``prompt`` and ``messages`` (400 otherwise); the idempotency key is the
    ``Idempotency-Key`` header (a body naming ``mode`` or ``client_request_id`` is 400)."""

    model: str = Field(description="A model of the mesh's registry (else 404).")
    model_version: VersionText | None = None
    prompt: str | None = Field(
        None, description="The prompt's bytes (with all messages) are limited."
    )
    messages: list[JobMessage] | None = Field(None, max_length=validation.MAX_MESSAGES)
    sampling: JobSampling | None = None
    priority: Literal["urgent", "normal", "bulk", "test"] | None = Field(
        None, description="The priority class (default normal; the tenant's policy applies)."
    )
    ttl: float | None = Field(
        None, ge=1, description="Seconds the job may wait and run before it expires."
    )
    network: Literal["mainnet", "testnet"] | None = Field(
        None, description="mainnet (billed; the default) or testnet."
    )
    subcloud: SubcloudName | None = Field(
        None, description="The subcloud (wins over `constraints.subcloud`)."
    )
    constraints: Constraints | None = None
    labels: (
        Annotated[
            dict[LabelText, LabelText],
            Field(
                max_length=validation.MAX_LABELS,
                description=f"At most {validation.MAX_LABELS} labels, keys and values at "
                f"most {validation.MAX_LABEL_BYTES} bytes.",
            ),
        ]
        | None
    ) = None


class BatchRequest(_Body):
    """``POST /v1/batches``: the jobs, accepted all together or not at all."""

    jobs: list[JobRequest] = Field(min_length=1)


# ---- answers -------------------------------------------------------------------------


class JobError(BaseModel):
    reason: str = Field(description="Stable, e.g. `CANCELLED_BY_CLIENT`, `TTL_EXPIRED`.")
    message: str


class JobSignature(BaseModel):
    """The node's signature and what it covers (verify offline: docs/signing.md)."""

    node_id: str
    key_id: str
    public_key: str = Field(description="The node's raw ed25519 key, base64.")
    signature: str = Field(description="64 bytes, base64.")
    attempt: int = Field(ge=0)
    request_digest: str = Field(description="SHA-256, base64.")
    output_digest: str = Field(description="SHA-256, base64.")
    finished_at_unix_ms: int
    signed_bytes: str = Field(description="The result bytes the node signed, base64.")


class JobLinks(BaseModel):
    self: str = Field(description="`/v1/jobs/{id}`.")
    events: str = Field(description="`/v1/jobs/{id}/events`.")


Timestamp = Annotated[
    str, Field(description="RFC 3339, UTC.", json_schema_extra={"format": "date-time"})
]


class JobView(BaseModel):
    """A job as POST, GET and DELETE answer it and each ``state`` event carries. Every field
    is present; null where it does not apply."""

    id: str
    object: Literal["job"]
    state: JobState
    done: bool = Field(description="The state is terminal: it never changes again.")
    model: str
    attempts: int = Field(ge=0, description="Attempts started so far.")
    created_at: Timestamp | None
    updated_at: Timestamp | None
    expires_at: Timestamp | None
    output: str | None = Field(description="The signed output; set when SUCCEEDED.")
    finish_reason: str | None = Field(description="`stop`, `length` or `abort`; when SUCCEEDED.")
    usage: Usage | None
    error: JobError | None = Field(description="Set when the job ended without an output.")
    signature: JobSignature | None = Field(description="Set when SUCCEEDED.")
    trace_id: str
    links: JobLinks
    job: dict[str, Any] = Field(description="The whole `fleetwire.v1.Job`, protobuf JSON.")


class BatchCounts(BaseModel):
    """Every job of the batch in exactly one."""

    queued: int = Field(ge=0)
    running: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    expired: int = Field(ge=0)
    cancelled: int = Field(ge=0)


class BatchLinks(BaseModel):
    self: str = Field(description="`/v1/batches/{id}`.")
    jobs: list[str] = Field(description="Each job's own URL, in the batch's order.")


class BatchView(BaseModel):
    """A batch's aggregate progress."""

    id: str
    object: Literal["batch"]
    total: int = Field(ge=0)
    counts: BatchCounts
    done: bool = Field(description="Every job is terminal.")
    created_at: Timestamp | None
    job_ids: list[str]
    links: BatchLinks


class ChunkEvent(BaseModel):
    """The ``data`` of a ``chunk`` event: generated text as the node streams it."""

    attempt: int = Field(ge=0)
    sequence: int = Field(ge=0)
    text: str
    token_count: int = Field(ge=0)


class DoneEvent(BaseModel):
    """The ``data`` of the ``done`` event, after the terminal ``state``."""

    id: str
    state: JobState
