"""Typed views of the wire messages: job states, results and token chunks.

Every ``JobResult`` keeps the ``Job`` message it was made from (``.message``), so nothing
the server sent is lost and verification digests exactly what was received.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleetwire.v1 import job_pb2, job_service_pb2
from fleetwire_client.errors import VerificationError
from fleetwire_client.verification import verify_job


class JobState(enum.IntEnum):
    """``fleetwire.v1.JobState``; the last five are terminal and never change again."""

    UNSPECIFIED = job_pb2.JOB_STATE_UNSPECIFIED
    QUEUED = job_pb2.JOB_STATE_QUEUED
    DISPATCHED = job_pb2.JOB_STATE_DISPATCHED
    RUNNING = job_pb2.JOB_STATE_RUNNING
    RETRYING = job_pb2.JOB_STATE_RETRYING
    SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
    FAILED = job_pb2.JOB_STATE_FAILED
    EXPIRED = job_pb2.JOB_STATE_EXPIRED
    CANCELLED = job_pb2.JOB_STATE_CANCELLED
    DEAD_LETTERED = job_pb2.JOB_STATE_DEAD_LETTERED

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @classmethod
    def of(cls, value: int) -> JobState:
        """The state for a wire value; values this client does not know are UNSPECIFIED."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.EXPIRED,
        JobState.CANCELLED,
        JobState.DEAD_LETTERED,
    }
)


class Priority(enum.IntEnum):
    """``fleetwire.v1.PriorityClass``."""

    URGENT = job_pb2.PRIORITY_CLASS_URGENT
    NORMAL = job_pb2.PRIORITY_CLASS_NORMAL
    BULK = job_pb2.PRIORITY_CLASS_BULK
    TEST = job_pb2.PRIORITY_CLASS_TEST


class Mode(enum.IntEnum):
    """``fleetwire.v1.InferenceMode``: what Submit waits for."""

    SYNC = job_pb2.INFERENCE_MODE_SYNC
    POLLING = job_pb2.INFERENCE_MODE_POLLING
    STREAM = job_pb2.INFERENCE_MODE_STREAM
    BATCH = job_pb2.INFERENCE_MODE_BATCH


class Network(enum.IntEnum):
    """``fleetwire.v1.Network``."""

    MAINNET = job_pb2.NETWORK_MAINNET
    TESTNET = job_pb2.NETWORK_TESTNET


@dataclass(frozen=True, slots=True)
class Token:
    """A chunk of generated text from Watch. ``sequence`` is 1-based and gap-free within
    ``attempt``; a retried job starts again at 1 with the next attempt."""

    sequence: int
    text: str
    token_count: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Signature:
    """The node's signature of a result (``fleetwire.v1.ResultSignature``)."""

    node_id: str
    key_id: str
    public_key: bytes
    signature: bytes
    attempt: int
    finished_at_unix_ms: int


@dataclass(frozen=True, slots=True)
class JobResult:
    """A job as the mesh reported it. ``output``, ``usage`` and ``signature`` are set when
    SUCCEEDED; ``error_reason``/``error_message`` when FAILED, EXPIRED, CANCELLED or
    DEAD_LETTERED."""

    message: job_pb2.Job

    @property
    def job_id(self) -> str:
        return str(self.message.job_id)

    @property
    def state(self) -> JobState:
        return JobState.of(self.message.state)

    @property
    def terminal(self) -> bool:
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED

    @property
    def output(self) -> str:
        return str(self.message.output)

    @property
    def finish_reason(self) -> str:
        return str(self.message.finish_reason)

    @property
    def prompt_tokens(self) -> int:
        return int(self.message.usage.prompt_tokens)

    @property
    def completion_tokens(self) -> int:
        return int(self.message.usage.completion_tokens)

    @property
    def attempts(self) -> int:
        return int(self.message.attempts)

    @property
    def trace_id(self) -> str:
        """The job's W3C trace id (32 hex digits): the trace of the Submit that accepted it,
        the one its log lines on every process carry."""
        return str(self.message.trace_id)

    @property
    def error_reason(self) -> str:
        return str(self.message.error.reason)

    @property
    def error_message(self) -> str:
        return str(self.message.error.message)

    @property
    def spec(self) -> job_pb2.JobSpec:
        """The spec as the mesh stored it, with defaults applied (what the digest covers)."""
        return self.message.spec

    @property
    def created_at(self) -> datetime | None:
        return self.message.created_at.ToDatetime() if self.message.HasField("created_at") else None

    @property
    def ttl(self) -> timedelta:
        return self.message.spec.ttl.ToTimedelta()  # type: ignore[no-any-return]

    @property
    def signature(self) -> Signature | None:
        sig = self.message.signature
        if not self.message.HasField("signature") or not sig.signature:
            return None
        return Signature(
            node_id=sig.node_id,
            key_id=sig.key_id,
            public_key=bytes(sig.public_key),
            signature=bytes(sig.signature),
            attempt=sig.attempt,
            finished_at_unix_ms=sig.finished_at_unix_ms,
        )

    @property
    def stream_matched(self) -> bool | None:
        """Whether the tokens streamed for the successful attempt are its signed output:
        True, False (the node was charged; ``output`` is the signed text), or None when
        the mesh could not compare (nothing streamed, a gap, a reconnect)."""
        check = self.message.stream_check
        if check == job_pb2.STREAM_CHECK_MATCHED:
            return True
        if check == job_pb2.STREAM_CHECK_MISMATCHED:
            return False
        return None

    def verify(self, public_key: bytes | str | None = None) -> bool:
        """Offline check of the node's ed25519 signature (docs/signing.md): True only when
        SUCCEEDED and the signature covers this job id, spec, output, token counts, attempt,
        node and finish time. Pass the node's public key (raw or hex) from a source you
        trust; without one the key named by the job is used, which proves integrity only."""
        return verify_job(self.message, public_key)

    def verify_or_raise(self, public_key: bytes | str | None = None) -> JobResult:
        """``verify`` that raises VerificationError instead of returning False."""
        if not self.verify(public_key):
            raise VerificationError(f"job {self.job_id}: signature does not verify")
        return self


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Aggregate progress of a batch (``fleetwire.v1.Batch``): every job is counted in
    exactly one of queued, running, succeeded, failed, expired and cancelled."""

    message: job_service_pb2.Batch

    @property
    def batch_id(self) -> str:
        return str(self.message.batch_id)

    @property
    def job_ids(self) -> list[str]:
        """The member jobs, in the order they were submitted."""
        return list(self.message.job_ids)

    @property
    def total(self) -> int:
        return int(self.message.total)

    @property
    def finished(self) -> int:
        """Jobs in a terminal state."""
        m = self.message
        return int(m.succeeded + m.failed + m.expired + m.cancelled)

    @property
    def succeeded(self) -> int:
        return int(self.message.succeeded)

    @property
    def done(self) -> bool:
        """True when every job is terminal."""
        return bool(self.message.done)


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One WatchBatch event: the aggregate after it, and the member job that became
    terminal (None in the first event, which carries only the current aggregate)."""

    progress: BatchProgress
    job: JobResult | None


WatchEvent = Token | JobResult
"""What ``watch`` yields: token chunks, and the job whenever its state changes."""


def event_of(response: job_service_pb2.WatchResponse) -> WatchEvent | None:
    """The typed event of one Watch message (None for an event kind this client lacks)."""
    kind = response.WhichOneof("event")
    if kind == "chunk":
        c = response.chunk
        return Token(c.sequence, c.text, c.token_count, c.attempt)
    if kind == "job":
        return JobResult(response.job)
    return None
