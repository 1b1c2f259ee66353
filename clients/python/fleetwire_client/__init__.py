"""fleetwire_client: the Python SDK of the fleetwire mesh.

``Client`` (blocking) and ``AsyncClient`` (asyncio) have the same surface: ``submit``,
``status``, ``watch`` (tokens and state changes), ``tokens``, ``wait``, ``cancel``, and for
batches ``submit_batch``, ``batch_status``, ``watch_batch`` and ``wait_batch``. Results are
``JobResult``; ``JobResult.verify(public_key)`` checks the node's signature offline
(docs/signing.md). Failures are typed ``FleetwireError`` subclasses.

The protobuf stubs (``fleetwire.v1``) and the signing scheme (``fleetwire.protocol``) come
from the protocol distribution, ``fleetwire-protocol``: the SDK needs nothing else of ours.
"""

from fleetwire_client.async_client import AsyncClient
from fleetwire_client.errors import (
    ERRORS_BY_CODE,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    FleetwireError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
    VerificationError,
)
from fleetwire_client.job_requests import JobRequest
from fleetwire_client.models import (
    BatchEvent,
    BatchProgress,
    JobResult,
    JobState,
    Mode,
    Network,
    Priority,
    Signature,
    Token,
    WatchEvent,
)
from fleetwire_client.retry import NO_RETRIES, RetryPolicy
from fleetwire_client.sync_client import Client
from fleetwire_client.verification import verify_job, verify_job_with_keys
from fleetwire_client.watch_cursor import WatchCursor

__version__ = "0.1.0"

__all__ = [
    "ERRORS_BY_CODE",
    "NO_RETRIES",
    "AlreadyExists",
    "AsyncClient",
    "BatchEvent",
    "BatchProgress",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "FleetwireError",
    "InvalidArgument",
    "JobRequest",
    "JobResult",
    "JobState",
    "Mode",
    "Network",
    "NotFound",
    "PermissionDenied",
    "Priority",
    "ResourceExhausted",
    "RetryPolicy",
    "ServerError",
    "Signature",
    "Token",
    "Unauthenticated",
    "Unavailable",
    "VerificationError",
    "WatchCursor",
    "WatchEvent",
    "verify_job",
    "verify_job_with_keys",
]
