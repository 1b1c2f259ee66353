import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_DISPATCHED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_RETRYING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_EXPIRED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_DEAD_LETTERED: _ClassVar[JobState]

class PriorityClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIORITY_CLASS_UNSPECIFIED: _ClassVar[PriorityClass]
    PRIORITY_CLASS_URGENT: _ClassVar[PriorityClass]
    PRIORITY_CLASS_NORMAL: _ClassVar[PriorityClass]
    PRIORITY_CLASS_BULK: _ClassVar[PriorityClass]
    PRIORITY_CLASS_TEST: _ClassVar[PriorityClass]

class InferenceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INFERENCE_MODE_UNSPECIFIED: _ClassVar[InferenceMode]
    INFERENCE_MODE_SYNC: _ClassVar[InferenceMode]
    INFERENCE_MODE_POLLING: _ClassVar[InferenceMode]
    INFERENCE_MODE_STREAM: _ClassVar[InferenceMode]
    INFERENCE_MODE_BATCH: _ClassVar[InferenceMode]

class Network(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_UNSPECIFIED: _ClassVar[Network]
    NETWORK_MAINNET: _ClassVar[Network]
    NETWORK_TESTNET: _ClassVar[Network]

class StreamCheck(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_CHECK_UNSPECIFIED: _ClassVar[StreamCheck]
    STREAM_CHECK_MATCHED: _ClassVar[StreamCheck]
    STREAM_CHECK_MISMATCHED: _ClassVar[StreamCheck]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_DISPATCHED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_RETRYING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_EXPIRED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_DEAD_LETTERED: JobState
PRIORITY_CLASS_UNSPECIFIED: PriorityClass
PRIORITY_CLASS_URGENT: PriorityClass
PRIORITY_CLASS_NORMAL: PriorityClass
PRIORITY_CLASS_BULK: PriorityClass
PRIORITY_CLASS_TEST: PriorityClass
INFERENCE_MODE_UNSPECIFIED: InferenceMode
INFERENCE_MODE_SYNC: InferenceMode
INFERENCE_MODE_POLLING: InferenceMode
INFERENCE_MODE_STREAM: InferenceMode
INFERENCE_MODE_BATCH: InferenceMode
NETWORK_UNSPECIFIED: Network
NETWORK_MAINNET: Network
NETWORK_TESTNET: Network
STREAM_CHECK_UNSPECIFIED: StreamCheck
STREAM_CHECK_MATCHED: StreamCheck
STREAM_CHECK_MISMATCHED: StreamCheck

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "seed", "stop", "max_tokens", "ignore_eos")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    max_tokens: int
    ignore_eos: bool
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., max_tokens: _Optional[int] = ..., ignore_eos: _Optional[bool] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("min_gpu_memory_mib", "gpu_class", "region", "subcloud")
    MIN_GPU_MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    min_gpu_memory_mib: int
    gpu_class: str
    region: str
    subcloud: str
    def __init__(self, min_gpu_memory_mib: _Optional[int] = ..., gpu_class: _Optional[str] = ..., region: _Optional[str] = ..., subcloud: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("model", "model_version", "prompt", "messages", "sampling", "mode", "priority", "ttl", "network", "constraints", "client_request_id", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    sampling: SamplingParams
    mode: InferenceMode
    priority: PriorityClass
    ttl: _duration_pb2.Duration
    network: Network
    constraints: Constraints
    client_request_id: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., mode: _Optional[_Union[InferenceMode, str]] = ..., priority: _Optional[_Union[PriorityClass, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., network: _Optional[_Union[Network, str]] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., client_request_id: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_ms", "time_to_first_token_ms", "total_ms", "tokens_per_second")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    time_to_first_token_ms: float
    total_ms: float
    tokens_per_second: float
    def __init__(self, queue_ms: _Optional[float] = ..., time_to_first_token_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., tokens_per_second: _Optional[float] = ...) -> None: ...

class ResultSignature(_message.Message):
    __slots__ = ("node_id", "key_id", "public_key", "signature", "attempt", "request_digest", "output_digest", "finished_at_unix_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    key_id: str
    public_key: bytes
    signature: bytes
    attempt: int
    request_digest: bytes
    output_digest: bytes
    finished_at_unix_ms: int
    def __init__(self, node_id: _Optional[str] = ..., key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., attempt: _Optional[int] = ..., request_digest: _Optional[bytes] = ..., output_digest: _Optional[bytes] = ..., finished_at_unix_ms: _Optional[int] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "spec", "output", "finish_reason", "usage", "timings", "signature", "error", "attempts", "created_at", "updated_at", "expires_at", "replay_of", "stream_check", "trace_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REPLAY_OF_FIELD_NUMBER: _ClassVar[int]
    STREAM_CHECK_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    spec: JobSpec
    output: str
    finish_reason: str
    usage: Usage
    timings: Timings
    signature: ResultSignature
    error: JobError
    attempts: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    replay_of: str
    stream_check: StreamCheck
    trace_id: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., output: _Optional[str] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., signature: _Optional[_Union[ResultSignature, _Mapping]] = ..., error: _Optional[_Union[JobError, _Mapping]] = ..., attempts: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replay_of: _Optional[str] = ..., stream_check: _Optional[_Union[StreamCheck, str]] = ..., trace_id: _Optional[str] = ...) -> None: ...
