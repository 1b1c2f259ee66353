import datetime

from fleetwire.v1 import job_pb2 as _job_pb2
from fleetwire.v1 import job_service_pb2 as _job_service_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Registration(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGISTRATION_UNSPECIFIED: _ClassVar[Registration]
    REGISTRATION_CREATED: _ClassVar[Registration]
    REGISTRATION_UNCHANGED: _ClassVar[Registration]
    REGISTRATION_REPLACED: _ClassVar[Registration]
    REGISTRATION_REINSTATED: _ClassVar[Registration]

class OperatorRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_ROLE_UNSPECIFIED: _ClassVar[OperatorRole]
    OPERATOR_ROLE_VIEWER: _ClassVar[OperatorRole]
    OPERATOR_ROLE_ADMIN: _ClassVar[OperatorRole]
REGISTRATION_UNSPECIFIED: Registration
REGISTRATION_CREATED: Registration
REGISTRATION_UNCHANGED: Registration
REGISTRATION_REPLACED: Registration
REGISTRATION_REINSTATED: Registration
OPERATOR_ROLE_UNSPECIFIED: OperatorRole
OPERATOR_ROLE_VIEWER: OperatorRole
OPERATOR_ROLE_ADMIN: OperatorRole

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeView(_message.Message):
    __slots__ = ("node_id", "scheduler_id", "models", "region", "subclouds", "slots", "free_slots", "running_jobs", "draining", "penalty_points", "excluded", "penalties_24h", "connected_at", "last_seen", "reputation", "validations_passed", "validations_wrong", "on_probation", "excluded_until", "offences_24h")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_ID_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUDS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    PENALTY_POINTS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    PENALTIES_24H_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    VALIDATIONS_PASSED_FIELD_NUMBER: _ClassVar[int]
    VALIDATIONS_WRONG_FIELD_NUMBER: _ClassVar[int]
    ON_PROBATION_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    OFFENCES_24H_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    scheduler_id: str
    models: _containers.RepeatedScalarFieldContainer[str]
    region: str
    subclouds: _containers.RepeatedScalarFieldContainer[str]
    slots: int
    free_slots: int
    running_jobs: int
    draining: bool
    penalty_points: float
    excluded: bool
    penalties_24h: int
    connected_at: _timestamp_pb2.Timestamp
    last_seen: _timestamp_pb2.Timestamp
    reputation: float
    validations_passed: int
    validations_wrong: int
    on_probation: bool
    excluded_until: _timestamp_pb2.Timestamp
    offences_24h: _containers.RepeatedCompositeFieldContainer[OffenceCount]
    def __init__(self, node_id: _Optional[str] = ..., scheduler_id: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., region: _Optional[str] = ..., subclouds: _Optional[_Iterable[str]] = ..., slots: _Optional[int] = ..., free_slots: _Optional[int] = ..., running_jobs: _Optional[int] = ..., draining: _Optional[bool] = ..., penalty_points: _Optional[float] = ..., excluded: _Optional[bool] = ..., penalties_24h: _Optional[int] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reputation: _Optional[float] = ..., validations_passed: _Optional[int] = ..., validations_wrong: _Optional[int] = ..., on_probation: _Optional[bool] = ..., excluded_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offences_24h: _Optional[_Iterable[_Union[OffenceCount, _Mapping]]] = ...) -> None: ...

class OffenceCount(_message.Message):
    __slots__ = ("offence", "count")
    OFFENCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    offence: str
    count: int
    def __init__(self, offence: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeView]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeView, _Mapping]]] = ...) -> None: ...

class QueueDepthsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RouteDepth(_message.Message):
    __slots__ = ("route", "priority", "waiting_jobs", "queue_messages")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WAITING_JOBS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    route: str
    priority: _job_pb2.PriorityClass
    waiting_jobs: int
    queue_messages: int
    def __init__(self, route: _Optional[str] = ..., priority: _Optional[_Union[_job_pb2.PriorityClass, str]] = ..., waiting_jobs: _Optional[int] = ..., queue_messages: _Optional[int] = ...) -> None: ...

class QueueDepthsResponse(_message.Message):
    __slots__ = ("depths",)
    DEPTHS_FIELD_NUMBER: _ClassVar[int]
    depths: _containers.RepeatedCompositeFieldContainer[RouteDepth]
    def __init__(self, depths: _Optional[_Iterable[_Union[RouteDepth, _Mapping]]] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.Job, _Mapping]]] = ...) -> None: ...

class ReplayDeadLetterRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ReplayDeadLetterResponse(_message.Message):
    __slots__ = ("job", "parked_message_removed")
    JOB_FIELD_NUMBER: _ClassVar[int]
    PARKED_MESSAGE_REMOVED_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    parked_message_removed: bool
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., parked_message_removed: _Optional[bool] = ...) -> None: ...

class JobTrailRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class AttemptView(_message.Message):
    __slots__ = ("attempt", "node_id", "scheduler_id", "outcome", "dispatched_at", "started_at", "ended_at", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DISPATCHED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    node_id: str
    scheduler_id: str
    outcome: str
    dispatched_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    error: _job_pb2.JobError
    def __init__(self, attempt: _Optional[int] = ..., node_id: _Optional[str] = ..., scheduler_id: _Optional[str] = ..., outcome: _Optional[str] = ..., dispatched_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ...) -> None: ...

class JobTrailResponse(_message.Message):
    __slots__ = ("job", "attempts", "replayed_as", "tenant")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_AS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    attempts: _containers.RepeatedCompositeFieldContainer[AttemptView]
    replayed_as: str
    tenant: str
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., attempts: _Optional[_Iterable[_Union[AttemptView, _Mapping]]] = ..., replayed_as: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("account", "balance_micro_credits", "entries")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    account: str
    balance_micro_credits: int
    entries: int
    def __init__(self, account: _Optional[str] = ..., balance_micro_credits: _Optional[int] = ..., entries: _Optional[int] = ...) -> None: ...

class ListPendingNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PendingNode(_message.Message):
    __slots__ = ("node_id", "key_id", "region", "models", "first_seen", "last_seen")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    key_id: str
    region: str
    models: _containers.RepeatedScalarFieldContainer[str]
    first_seen: _timestamp_pb2.Timestamp
    last_seen: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., key_id: _Optional[str] = ..., region: _Optional[str] = ..., models: _Optional[_Iterable[str]] = ..., first_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListPendingNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[PendingNode]
    def __init__(self, nodes: _Optional[_Iterable[_Union[PendingNode, _Mapping]]] = ...) -> None: ...

class ApproveNodeRequest(_message.Message):
    __slots__ = ("node_id", "key_id", "networks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    key_id: str
    networks: _containers.RepeatedScalarFieldContainer[_job_pb2.Network]
    def __init__(self, node_id: _Optional[str] = ..., key_id: _Optional[str] = ..., networks: _Optional[_Iterable[_Union[_job_pb2.Network, str]]] = ...) -> None: ...

class ApproveNodeResponse(_message.Message):
    __slots__ = ("node_id", "key_id", "networks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    key_id: str
    networks: _containers.RepeatedScalarFieldContainer[_job_pb2.Network]
    def __init__(self, node_id: _Optional[str] = ..., key_id: _Optional[str] = ..., networks: _Optional[_Iterable[_Union[_job_pb2.Network, str]]] = ...) -> None: ...

class RevokeNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RevokeNodeResponse(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node_id", "public_key", "replace", "networks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    public_key: bytes
    replace: bool
    networks: _containers.RepeatedScalarFieldContainer[_job_pb2.Network]
    def __init__(self, node_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., replace: _Optional[bool] = ..., networks: _Optional[_Iterable[_Union[_job_pb2.Network, str]]] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("node_id", "key_id", "registration", "networks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    key_id: str
    registration: Registration
    networks: _containers.RepeatedScalarFieldContainer[_job_pb2.Network]
    def __init__(self, node_id: _Optional[str] = ..., key_id: _Optional[str] = ..., registration: _Optional[_Union[Registration, str]] = ..., networks: _Optional[_Iterable[_Union[_job_pb2.Network, str]]] = ...) -> None: ...

class ListRegisteredNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisteredNode(_message.Message):
    __slots__ = ("node_id", "key_id", "public_key", "revoked", "registered_at", "last_seen", "networks", "subclouds", "excluded_until", "offences_24h")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUDS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    OFFENCES_24H_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    key_id: str
    public_key: bytes
    revoked: bool
    registered_at: _timestamp_pb2.Timestamp
    last_seen: _timestamp_pb2.Timestamp
    networks: _containers.RepeatedScalarFieldContainer[_job_pb2.Network]
    subclouds: _containers.RepeatedScalarFieldContainer[str]
    excluded_until: _timestamp_pb2.Timestamp
    offences_24h: _containers.RepeatedCompositeFieldContainer[OffenceCount]
    def __init__(self, node_id: _Optional[str] = ..., key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., revoked: _Optional[bool] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., networks: _Optional[_Iterable[_Union[_job_pb2.Network, str]]] = ..., subclouds: _Optional[_Iterable[str]] = ..., excluded_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offences_24h: _Optional[_Iterable[_Union[OffenceCount, _Mapping]]] = ...) -> None: ...

class ListRegisteredNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[RegisteredNode]
    def __init__(self, nodes: _Optional[_Iterable[_Union[RegisteredNode, _Mapping]]] = ...) -> None: ...

class GrantNodeRequest(_message.Message):
    __slots__ = ("node_id", "subcloud", "network", "withdraw")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUD_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    subcloud: str
    network: _job_pb2.Network
    withdraw: bool
    def __init__(self, node_id: _Optional[str] = ..., subcloud: _Optional[str] = ..., network: _Optional[_Union[_job_pb2.Network, str]] = ..., withdraw: _Optional[bool] = ...) -> None: ...

class GrantNodeResponse(_message.Message):
    __slots__ = ("node_id", "changed")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    changed: bool
    def __init__(self, node_id: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("tenant", "key_id", "key")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    key_id: str
    key: str
    def __init__(self, tenant: _Optional[str] = ..., key_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ApiKeyView(_message.Message):
    __slots__ = ("key_id", "tenant", "name", "created_at", "revoked_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant: str
    name: str
    created_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKeyView]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKeyView, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class PriorityClasses(_message.Message):
    __slots__ = ("classes",)
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    classes: _containers.RepeatedScalarFieldContainer[_job_pb2.PriorityClass]
    def __init__(self, classes: _Optional[_Iterable[_Union[_job_pb2.PriorityClass, str]]] = ...) -> None: ...

class Networks(_message.Message):
    __slots__ = ("networks",)
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    networks: _containers.RepeatedScalarFieldContainer[_job_pb2.Network]
    def __init__(self, networks: _Optional[_Iterable[_Union[_job_pb2.Network, str]]] = ...) -> None: ...

class Subclouds(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class TenantPolicy(_message.Message):
    __slots__ = ("tenant", "priorities", "networks", "subclouds", "credit_limit_micro_credits")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PRIORITIES_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    SUBCLOUDS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    priorities: PriorityClasses
    networks: Networks
    subclouds: Subclouds
    credit_limit_micro_credits: int
    def __init__(self, tenant: _Optional[str] = ..., priorities: _Optional[_Union[PriorityClasses, _Mapping]] = ..., networks: _Optional[_Union[Networks, _Mapping]] = ..., subclouds: _Optional[_Union[Subclouds, _Mapping]] = ..., credit_limit_micro_credits: _Optional[int] = ...) -> None: ...

class GetTenantPolicyRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class GetTenantPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: TenantPolicy
    def __init__(self, policy: _Optional[_Union[TenantPolicy, _Mapping]] = ...) -> None: ...

class UpdateTenantPolicyRequest(_message.Message):
    __slots__ = ("policy", "update_mask")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    policy: TenantPolicy
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, policy: _Optional[_Union[TenantPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateTenantPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: TenantPolicy
    def __init__(self, policy: _Optional[_Union[TenantPolicy, _Mapping]] = ...) -> None: ...

class CreateOperatorKeyRequest(_message.Message):
    __slots__ = ("name", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: OperatorRole
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[OperatorRole, str]] = ...) -> None: ...

class CreateOperatorKeyResponse(_message.Message):
    __slots__ = ("name", "role", "key_id", "key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: OperatorRole
    key_id: str
    key: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[OperatorRole, str]] = ..., key_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class ListOperatorKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OperatorKeyView(_message.Message):
    __slots__ = ("key_id", "name", "role", "created_at", "revoked_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    name: str
    role: OperatorRole
    created_at: _timestamp_pb2.Timestamp
    revoked_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., name: _Optional[str] = ..., role: _Optional[_Union[OperatorRole, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListOperatorKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[OperatorKeyView]
    def __init__(self, keys: _Optional[_Iterable[_Union[OperatorKeyView, _Mapping]]] = ...) -> None: ...

class RevokeOperatorKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeOperatorKeyResponse(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("limit", "target")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    limit: int
    target: str
    def __init__(self, limit: _Optional[int] = ..., target: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("at", "actor", "action", "target", "detail_json")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DETAIL_JSON_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    actor: str
    action: str
    target: str
    detail_json: str
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., detail_json: _Optional[str] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class ValidateNodeRequest(_message.Message):
    __slots__ = ("node_id", "jobs")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    jobs: int
    def __init__(self, node_id: _Optional[str] = ..., jobs: _Optional[int] = ...) -> None: ...

class ValidateNodeResponse(_message.Message):
    __slots__ = ("owed",)
    OWED_FIELD_NUMBER: _ClassVar[int]
    owed: int
    def __init__(self, owed: _Optional[int] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WhoAmIResponse(_message.Message):
    __slots__ = ("name", "key_id", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    key_id: str
    role: OperatorRole
    def __init__(self, name: _Optional[str] = ..., key_id: _Optional[str] = ..., role: _Optional[_Union[OperatorRole, str]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("tenant", "states", "node_id", "created_after", "created_before", "page_size", "page_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    states: _containers.RepeatedScalarFieldContainer[_job_pb2.JobState]
    node_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, tenant: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_job_pb2.JobState, str]]] = ..., node_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class JobSummary(_message.Message):
    __slots__ = ("job_id", "tenant", "state", "model", "network", "priority", "route", "attempts", "node_id", "created_at", "updated_at", "error", "replay_of", "validation", "signed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REPLAY_OF_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    state: _job_pb2.JobState
    model: str
    network: _job_pb2.Network
    priority: _job_pb2.PriorityClass
    route: str
    attempts: int
    node_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    error: _job_pb2.JobError
    replay_of: str
    validation: bool
    signed: bool
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., state: _Optional[_Union[_job_pb2.JobState, str]] = ..., model: _Optional[str] = ..., network: _Optional[_Union[_job_pb2.Network, str]] = ..., priority: _Optional[_Union[_job_pb2.PriorityClass, str]] = ..., route: _Optional[str] = ..., attempts: _Optional[int] = ..., node_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_job_pb2.JobError, _Mapping]] = ..., replay_of: _Optional[str] = ..., validation: _Optional[bool] = ..., signed: _Optional[bool] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobSummary]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class JobThroughputRequest(_message.Message):
    __slots__ = ("minutes",)
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    minutes: int
    def __init__(self, minutes: _Optional[int] = ...) -> None: ...

class ThroughputMinute(_message.Message):
    __slots__ = ("start", "succeeded", "failed", "expired", "cancelled", "dead_lettered")
    START_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    succeeded: int
    failed: int
    expired: int
    cancelled: int
    dead_lettered: int
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., expired: _Optional[int] = ..., cancelled: _Optional[int] = ..., dead_lettered: _Optional[int] = ...) -> None: ...

class JobThroughputResponse(_message.Message):
    __slots__ = ("minutes",)
    MINUTES_FIELD_NUMBER: _ClassVar[int]
    minutes: _containers.RepeatedCompositeFieldContainer[ThroughputMinute]
    def __init__(self, minutes: _Optional[_Iterable[_Union[ThroughputMinute, _Mapping]]] = ...) -> None: ...

class ListNodeKeyHistoryRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ListNodeKeyHistoryResponse(_message.Message):
    __slots__ = ("node_id", "keys")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    keys: _containers.RepeatedCompositeFieldContainer[_job_service_pb2.NodeKey]
    def __init__(self, node_id: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[_job_service_pb2.NodeKey, _Mapping]]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class TenantView(_message.Message):
    __slots__ = ("tenant", "created_at", "balance_micro_credits", "ledger_entries", "live_api_keys", "waiting_jobs", "policy")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    LEDGER_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LIVE_API_KEYS_FIELD_NUMBER: _ClassVar[int]
    WAITING_JOBS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    created_at: _timestamp_pb2.Timestamp
    balance_micro_credits: int
    ledger_entries: int
    live_api_keys: int
    waiting_jobs: int
    policy: TenantPolicy
    def __init__(self, tenant: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., balance_micro_credits: _Optional[int] = ..., ledger_entries: _Optional[int] = ..., live_api_keys: _Optional[int] = ..., waiting_jobs: _Optional[int] = ..., policy: _Optional[_Union[TenantPolicy, _Mapping]] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantView]
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantView, _Mapping]]] = ...) -> None: ...

class ListLedgerAccountsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class LedgerAccount(_message.Message):
    __slots__ = ("account", "balance_micro_credits", "entries", "last_entry_at")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_ENTRY_AT_FIELD_NUMBER: _ClassVar[int]
    account: str
    balance_micro_credits: int
    entries: int
    last_entry_at: _timestamp_pb2.Timestamp
    def __init__(self, account: _Optional[str] = ..., balance_micro_credits: _Optional[int] = ..., entries: _Optional[int] = ..., last_entry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLedgerAccountsResponse(_message.Message):
    __slots__ = ("accounts", "total_charged_micro_credits", "total_earned_micro_credits", "entries")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHARGED_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EARNED_MICRO_CREDITS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[LedgerAccount]
    total_charged_micro_credits: int
    total_earned_micro_credits: int
    entries: int
    def __init__(self, accounts: _Optional[_Iterable[_Union[LedgerAccount, _Mapping]]] = ..., total_charged_micro_credits: _Optional[int] = ..., total_earned_micro_credits: _Optional[int] = ..., entries: _Optional[int] = ...) -> None: ...
