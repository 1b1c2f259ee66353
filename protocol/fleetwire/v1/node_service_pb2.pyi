import datetime

from fleetwire.v1 import job_pb2 as _job_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServedModel(_message.Message):
    __slots__ = ("name", "version", "runtime", "max_model_len", "price_per_1k_prompt_tokens", "price_per_1k_completion_tokens", "slots")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_1K_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_1K_COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    runtime: str
    max_model_len: int
    price_per_1k_prompt_tokens: int
    price_per_1k_completion_tokens: int
    slots: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., runtime: _Optional[str] = ..., max_model_len: _Optional[int] = ..., price_per_1k_prompt_tokens: _Optional[int] = ..., price_per_1k_completion_tokens: _Optional[int] = ..., slots: _Optional[int] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("gpu_class", "memory_mib", "name", "source")
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    gpu_class: str
    memory_mib: int
    name: str
    source: str
    def __init__(self, gpu_class: _Optional[str] = ..., memory_mib: _Optional[int] = ..., name: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "public_key", "agent_version", "networks", "models", "gpus", "region", "subclouds", "slots", "running_jobs", "takes_batches")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUDS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    TAKES_BATCHES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    public_key: bytes
    agent_version: str
    networks: _containers.RepeatedScalarFieldContainer[_job_pb2.Network]
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    region: str
    subclouds: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    running_jobs: _containers.RepeatedCompositeFieldContainer[JobRef]
    takes_batches: bool
    def __init__(self, node_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., agent_version: _Optional[str] = ..., networks: _Optional[_Iterable[_Union[_job_pb2.Network, str]]] = ..., models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., region: _Optional[str] = ..., subclouds: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., running_jobs: _Optional[_Iterable[_Union[JobRef, _Mapping]]] = ..., takes_batches: _Optional[bool] = ...) -> None: ...

class JobRef(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Auth(_message.Message):
    __slots__ = ("signature", "server_name")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    server_name: str
    def __init__(self, signature: _Optional[bytes] = ..., server_name: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("free_slots", "running_jobs", "gpu_utilization")
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    free_slots: int
    running_jobs: int
    gpu_utilization: float
    def __init__(self, free_slots: _Optional[int] = ..., running_jobs: _Optional[int] = ..., gpu_utilization: _Optional[float] = ...) -> None: ...

class Accept(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("job_id", "attempt", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("job_id", "attempt", "sequence", "text", "token_count")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    sequence: int
    text: str
    token_count: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., sequence: _Optional[int] = ..., text: _Optional[str] = ..., token_count: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("job_id", "attempt", "output", "finish_reason", "usage", "timings", "finished_at_unix_ms", "signature")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    output: str
    finish_reason: str
    usage: _job_pb2.Usage
    timings: _job_pb2.Timings
    finished_at_unix_ms: int
    signature: bytes
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., output: _Optional[str] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[_job_pb2.Usage, _Mapping]] = ..., timings: _Optional[_Union[_job_pb2.Timings, _Mapping]] = ..., finished_at_unix_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("job_id", "attempt", "reason", "message", "retryable")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    reason: str
    message: str
    retryable: bool
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class Draining(_message.Message):
    __slots__ = ("running_jobs",)
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    running_jobs: int
    def __init__(self, running_jobs: _Optional[int] = ...) -> None: ...

class NodeStreamRequest(_message.Message):
    __slots__ = ("hello", "auth", "heartbeat", "accept", "reject", "progress", "result", "failure", "draining", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    auth: Auth
    heartbeat: Heartbeat
    accept: Accept
    reject: Reject
    progress: Progress
    result: Result
    failure: Failure
    draining: Draining
    batch: NodeStreamRequestBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., accept: _Optional[_Union[Accept, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[Result, _Mapping]] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., draining: _Optional[_Union[Draining, _Mapping]] = ..., batch: _Optional[_Union[NodeStreamRequestBatch, _Mapping]] = ...) -> None: ...

class NodeStreamRequestBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[NodeStreamRequest]
    def __init__(self, messages: _Optional[_Iterable[_Union[NodeStreamRequest, _Mapping]]] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("nonce", "scheduler_id")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_ID_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    scheduler_id: str
    def __init__(self, nonce: _Optional[bytes] = ..., scheduler_id: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session_id", "heartbeat_interval", "lease", "takes_batches")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    TAKES_BATCHES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    heartbeat_interval: _duration_pb2.Duration
    lease: _duration_pb2.Duration
    takes_batches: bool
    def __init__(self, session_id: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., takes_batches: _Optional[bool] = ...) -> None: ...

class Dispatch(_message.Message):
    __slots__ = ("job_id", "attempt", "spec", "deadline", "request_digest", "trace_id", "traceparent")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    spec: _job_pb2.JobSpec
    deadline: _timestamp_pb2.Timestamp
    request_digest: bytes
    trace_id: str
    traceparent: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., spec: _Optional[_Union[_job_pb2.JobSpec, _Mapping]] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_digest: _Optional[bytes] = ..., trace_id: _Optional[str] = ..., traceparent: _Optional[str] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("job_id", "attempt", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class NodeStreamResponse(_message.Message):
    __slots__ = ("challenge", "welcome", "dispatch", "cancel", "drain", "batch")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    challenge: Challenge
    welcome: Welcome
    dispatch: Dispatch
    cancel: Cancel
    drain: Drain
    batch: NodeStreamResponseBatch
    def __init__(self, challenge: _Optional[_Union[Challenge, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., dispatch: _Optional[_Union[Dispatch, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ..., batch: _Optional[_Union[NodeStreamResponseBatch, _Mapping]] = ...) -> None: ...

class NodeStreamResponseBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[NodeStreamResponse]
    def __init__(self, messages: _Optional[_Iterable[_Union[NodeStreamResponse, _Mapping]]] = ...) -> None: ...
