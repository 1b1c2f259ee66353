"""Typed settings for every fleetwire process.

Each concern has its own group and environment prefix (``FLEETWIRE_RABBITMQ_*``,
``FLEETWIRE_BRIDGE_*``...). Values come from the environment, a ``.env`` file, or files in
``FLEETWIRE_SECRETS_DIR`` (secrets kept out of the environment); nothing else in the
project reads ``os.environ`` for configuration. ``docs/configuration.md`` has
the table of every setting (kept in sync by ``tests/unit/test_configuration_doc.py``).
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from fleetwire.messaging.topology import (
    DEFAULT_ROUTE_QUEUE_EXPIRES,
    ROUTE_EXPIRY_MARGIN,
    QueueType,
    route_word,
)
from fleetwire.process.node_settings import NodeSettings
from fleetwire.process.settings_base import Duration, _Group, _group
from fleetwire.process.tracing_settings import TracingSettings

__all__ = [
    "BridgeSettings",
    "ConsoleSettings",
    "Duration",
    "MeshSettings",
    "NodeSettings",
    "PostgresSettings",
    "RabbitMQSettings",
    "RedisSettings",
    "SchedulerSettings",
    "Settings",
    "TlsSettings",
    "TracingSettings",
    "load_settings",
]


class MeshSettings(_Group):
    """Settings shared by every process of one mesh."""

    model_config = _group("FLEETWIRE_")

    namespace: str = Field(
        "fw",
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="Prefix of every exchange, queue and Redis key, so meshes can share brokers.",
    )
    log_json: bool = Field(False, description="Log JSON lines instead of console text.")
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    models: list[str] = Field(
        default_factory=lambda: ["tiny-llama"],
        description="Model names the mesh accepts (JSON list). Submit rejects others.",
    )
    route_queue_expires: Duration = Field(
        DEFAULT_ROUTE_QUEUE_EXPIRES,
        ge=timedelta(0),
        description="A route queue unused this long (no consumer, not declared) is deleted "
        "by RabbitMQ (x-expires). At least FLEETWIRE_BRIDGE_MAX_TTL + 1 h, so every job it "
        "held had expired first; 0: no expiry argument (leave it to a RabbitMQ policy). "
        "Existing queues keep the arguments they were declared with (docs/operations.md).",
    )

    @field_validator("models")
    @classmethod
    def _models_keep_their_queues_apart(cls, models: list[str]) -> list[str]:
        """Two models whose routing-key words coincide (``a.b`` and ``a_b``) would share
        one queue: refused at start rather than mixed at run time."""
        seen: dict[str, str] = {}
        for model in models:
            word = route_word(model)
            if word in seen and seen[word] != model:
                raise ValueError(f"models {seen[word]!r} and {model!r} share the route {word!r}")
            seen[word] = model
        return models


class RabbitMQSettings(_Group):
    """RabbitMQ connection."""

    model_config = _group("FLEETWIRE_RABBITMQ_")

    url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="AMQP URL, or a comma-separated list of the URLs of a cluster's nodes: "
        "a process connects to the first that answers and, when that connection drops, to "
        "the next (round-robin).",
    )
    management_url: SecretStr = Field(
        SecretStr("http://guest:guest@127.0.0.1:15672/"),
        description="RabbitMQ's management API (the rabbitmq_management plugin), with its "
        "credentials: where the scheduler's census reads unacked messages per queue (AMQP "
        "tells ready ones only). Empty: ready counts only.",
    )
    publish_timeout: Duration = Field(
        timedelta(seconds=10),
        description="How long Submit (and a dead-letter replay) waits for the publisher confirm.",
    )
    queue_type: QueueType = Field(
        QueueType.CLASSIC,
        description="Type of the route, retry-stage and dead-letter queues: `classic` (one "
        "queue per route, AMQP priorities) or `quorum` (replicated; one queue per route and "
        "priority class, at-least-once dead-lettering, reject-publish overflow). Fixed per "
        "namespace: switch with a new FLEETWIRE_NAMESPACE (docs/deployment.md).",
    )
    delivery_limit: int = Field(
        20,
        ge=1,
        description="Quorum queues: deliveries of one message (redeliveries after a "
        "consumer's channel died) before RabbitMQ dead-letters it (x-delivery-limit); the "
        "scheduler records it FAILED. Deferrals do not count (they republish).",
    )
    queue_max_length: int = Field(
        0,
        ge=0,
        description="Quorum queues: messages a route queue holds at most (x-max-length; 0: "
        "no limit). Beyond, RabbitMQ refuses the publish (reject-publish) and Submit is "
        "UNAVAILABLE; the bridge's own queue-depth guard usually answers first.",
    )


class PostgresSettings(_Group):
    """PostgreSQL connection (the source of truth)."""

    model_config = _group("FLEETWIRE_POSTGRES_")

    dsn: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/fleetwire"),
        description="asyncpg DSN. The database is created if missing (needs CREATEDB).",
    )
    pool_min: int = Field(1, ge=0, description="Minimum pool size per process.")
    pool_max: int = Field(10, ge=1, description="Maximum pool size per process.")
    command_timeout: Duration = Field(
        timedelta(seconds=10), description="Timeout of one SQL command."
    )


class RedisSettings(_Group):
    """Redis connection (presence, hot status, token streams)."""

    model_config = _group("FLEETWIRE_REDIS_")

    url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL.")
    max_connections: int = Field(
        100,
        ge=4,
        description="Redis connections a process opens at most (each open Watch holds one "
        "while it waits); beyond, a call waits up to 5 s, then is UNAVAILABLE.",
    )
    stream_maxlen: int = Field(
        10_000, ge=100, description="Cap on events kept per job's event stream."
    )
    stream_ttl: Duration = Field(
        timedelta(hours=1),
        description="Expiry of a live job's event stream after its last event.",
    )
    finished_stream_retention: Duration = Field(
        timedelta(minutes=1),
        gt=timedelta(0),
        description="How long a job's event stream is kept once the job is terminal (for "
        "followers still reading it); nothing written later extends it. Watch then sends "
        "the output from PostgreSQL.",
    )


class TlsSettings(_Group):
    """TLS of the gRPC servers of this process (the bridge, the scheduler). On by default:
    a server refuses to start without a certificate unless plaintext is asked for."""

    model_config = _group("FLEETWIRE_TLS_")

    cert_file: Path | None = Field(
        None,
        description="PEM certificate chain the servers present (`fleetwire certs` makes one "
        "for a dev mesh). Re-read on SIGHUP; open streams keep their session.",
    )
    key_file: Path | None = Field(None, description="PEM private key of FLEETWIRE_TLS_CERT_FILE.")
    insecure: bool = Field(
        False,
        description="Serve plaintext (no TLS). For tests and benchmarks on one machine only; "
        "logged as a warning at start.",
    )


class BridgeSettings(_Group):
    """The broker bridge (public gRPC front door)."""

    # `none` in a variable is None: "no restriction" for the tenant defaults below.
    model_config = _group("FLEETWIRE_BRIDGE_") | SettingsConfigDict(env_parse_none_str="none")

    host: str = Field("0.0.0.0", description="Listen address.")
    port: int = Field(50051, description="Public gRPC port.")
    http_enabled: bool = Field(
        True,
        description="Serve the OpenAI-compatible HTTP API (docs/http.md) on "
        "FLEETWIRE_BRIDGE_HTTP_PORT beside the gRPC port.",
    )
    http_host: str = Field("0.0.0.0", description="Listen address of the HTTP API.")
    http_port: int = Field(
        8080,
        ge=0,
        description="Port of the OpenAI-compatible HTTP API (HTTPS with the server's "
        "certificate unless FLEETWIRE_TLS_INSECURE); 0: any free port.",
    )
    http_default_max_tokens: int = Field(
        256,
        ge=1,
        description="max_tokens of an HTTP API request that names none (OpenAI's "
        "max_tokens is optional; a job's is not).",
    )
    default_ttl: Duration = Field(timedelta(minutes=10), description="TTL of a job without one.")
    max_ttl: Duration = Field(timedelta(hours=24), description="Largest TTL accepted.")
    max_prompt_bytes: int = Field(32 * 1024, description="Largest prompt accepted, in bytes.")
    max_output_tokens: int = Field(
        4096, description="Largest max_tokens accepted (the model's own limit applies too)."
    )
    require_api_key: bool = Field(
        True,
        description="Refuse calls without a valid API key (UNAUTHENTICATED). False (anonymous "
        "mode, for a one-user local mesh; warned at start): calls without a key run as the "
        "tenant 'anonymous', which all such callers share; a key that is sent is checked.",
    )
    auth_cache_ttl: Duration = Field(
        timedelta(seconds=2),
        description="How long a replica trusts a key lookup; a revoked key stops working "
        "within this time.",
    )
    tenant_rate: float = Field(
        50.0, gt=0, description="Jobs per second a tenant may submit (token bucket refill)."
    )
    tenant_burst: int = Field(
        100, ge=1, description="Token bucket size: jobs a tenant may submit at once."
    )
    max_queue_depth: int = Field(
        10_000,
        ge=1,
        description="Depth of a route's queue above which bulk and test jobs are refused; "
        "normal jobs are refused at twice and urgent jobs at four times this depth.",
    )
    queue_depth_cache: Duration = Field(
        timedelta(seconds=1),
        description="How long a measured queue depth is reused (and a tenant's count of "
        "waiting jobs, while at most half its cap).",
    )
    queue_full_retry: Duration = Field(
        timedelta(seconds=5), description="Retry delay advised when a queue is too deep."
    )
    max_batch_jobs: int = Field(256, ge=1, description="Most jobs in one SubmitBatch call.")
    max_waiting_per_tenant: int = Field(
        1_000,
        ge=1,
        description="Jobs one tenant may have waiting (QUEUED or RETRYING) at once; more "
        "are refused, so no tenant fills a queue for the others.",
    )
    max_watches_per_tenant: int = Field(
        32,
        ge=1,
        description="Watch and WatchBatch streams one tenant may have open on a bridge "
        "replica at once; more are RESOURCE_EXHAUSTED, so no tenant holds every Redis "
        "connection.",
    )
    request_lock_lease: Duration = Field(
        timedelta(seconds=1.5),
        description="Lease of the Redis lock that serialises submits with one client request "
        "id; its holder renews it while working, so a dead bridge blocks retries at most this "
        "long.",
    )
    outbox_lease: Duration = Field(
        timedelta(seconds=5),
        description="How long a written job stays with the bridge publishing it; a job "
        "still unpublished after this (its bridge died) is published by any bridge's outbox "
        "relay.",
    )
    outbox_sweep: Duration = Field(
        timedelta(seconds=1),
        description="How often each bridge's outbox relay looks for lapsed unpublished jobs.",
    )
    stop_grace: Duration = Field(
        timedelta(seconds=5),
        description="How long a stopping bridge lets in-flight calls finish.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the Prometheus metrics endpoint (this machine)."
    )
    metrics_port: int = Field(
        9461,
        ge=0,
        description="Port of the Prometheus metrics endpoint (/metrics; HTTPS with the "
        "server's certificate unless FLEETWIRE_TLS_INSECURE); 0: any free port.",
    )
    tenant_metrics: bool = Field(
        False,
        description="Also count accepted jobs per tenant (fleetwire_tenant_jobs_submitted_total"
        "{tenant}): one series per tenant, so off unless the mesh has few tenants.",
    )
    default_priorities: list[str] | None = Field(
        default_factory=lambda: ["normal", "bulk", "test"],
        description="Priority classes a tenant whose policy names none may use (JSON list; "
        "`none`: every class). Urgent is granted per tenant (`fleetwire admin tenants policy`).",
    )
    default_networks: list[str] | None = Field(
        default_factory=lambda: ["mainnet", "testnet"],
        description="Networks a tenant whose policy names none may submit to (JSON list; "
        "`none`: both).",
    )
    default_subclouds: list[str] | None = Field(
        default_factory=list,
        description="Subclouds (private pools) a tenant whose policy names none may submit "
        "to (JSON list; `none`: any). Default none: a pool's users are granted it.",
    )
    default_credit_limit: int | None = Field(
        0,
        ge=0,
        description="Micro-credits a tenant without a credit limit of its own may owe on "
        "mainnet: a mainnet job is refused (FAILED_PRECONDITION INSUFFICIENT_CREDIT) once "
        "the tenant's balance plus this is not positive. `none`: no credit check.",
    )

    @field_validator("default_priorities", "default_networks", mode="after")
    @classmethod
    def _known_names(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        allowed = {
            "default_priorities": ("urgent", "normal", "bulk", "test"),
            "default_networks": ("mainnet", "testnet"),
        }[str(info.field_name)]
        unknown = sorted(set(names or ()) - set(allowed))
        if unknown:
            raise ValueError(f"unknown names {unknown} (known: {', '.join(allowed)})")
        return names


class SchedulerSettings(_Group):
    """The scheduler (NodeStream server and queue consumer)."""

    model_config = _group("FLEETWIRE_SCHEDULER_")

    host: str = Field("0.0.0.0", description="Listen address.")
    port: int = Field(50052, description="NodeStream gRPC port.")
    node_client_ca_file: Path | None = Field(
        None,
        description="When set, the node port requires a client certificate (mTLS) that "
        "chains to these PEM CA certificates, before a node's key handshake (which still "
        "decides who the node is); needs TLS. Unset: nodes need no certificate.",
    )
    admin_host: str = Field(
        "127.0.0.1",
        description="Listen address of the admin port (MeshAdminService); this machine only "
        "unless set otherwise.",
    )
    admin_port: int = Field(
        50053, description="Admin gRPC port (MeshAdminService; operator keys required)."
    )
    admin_client_ca_file: Path | None = Field(
        None,
        description="When set, the admin port also requires a client certificate (mTLS) "
        "that chains to these PEM CA certificates; needs TLS.",
    )
    admin_cache_ttl: Duration = Field(
        timedelta(seconds=2),
        description="How long a replica trusts an operator key lookup; a revoked key stops "
        "working within this time.",
    )
    scheduler_id: str = Field("", description="Replica id; empty means hostname plus process id.")
    heartbeat_interval: Duration = Field(
        timedelta(seconds=2), description="How often nodes heartbeat."
    )
    lease: Duration = Field(
        timedelta(seconds=10), description="Silence after which a node is offline."
    )
    dispatch_timeout: Duration = Field(
        timedelta(seconds=10), description="How long a node has to Accept a dispatch."
    )
    auto_register_nodes: bool = Field(
        False,
        description="Bind an unknown node id to the key it first proves (trust on first "
        "use): the dev profile (`fleetwire up`, `make demo`) only. Off: an unknown node "
        "waits as a request until `fleetwire admin nodes approve`.",
    )
    trust_node_claims: bool = Field(
        False,
        description="Believe the subclouds and networks a node claims in Hello: the dev "
        "profile only. Off: only those granted with `fleetwire admin nodes grant` count.",
    )
    max_node_slots: int = Field(
        64, ge=1, description="Most slots a node may announce; a Hello with more is refused."
    )
    max_node_models: int = Field(
        8, ge=1, description="Most models a node may name in Hello; more is refused."
    )
    max_node_subclouds: int = Field(
        8, ge=0, description="Most subclouds a node may name in Hello; more is refused."
    )
    max_streams_per_connection: int = Field(
        4,
        ge=1,
        description="Concurrent streams one connection may open on the node port (a node "
        "needs one); more wait for a free one.",
    )
    max_connections_per_peer: int = Field(
        32,
        ge=1,
        description="Connections with a live NodeStream one peer address (an IPv4 address, "
        "or an IPv6 /64) may have on the node port; a stream from one more connection is "
        "refused (RESOURCE_EXHAUSTED, TOO_MANY_CONNECTIONS) before its Hello is read. Room "
        "for many nodes behind one NAT.",
    )
    connection_idle: Duration = Field(
        timedelta(minutes=1),
        gt=timedelta(0),
        description="A connection to the node port with no open call for this long is "
        "closed (a live node always has its NodeStream open).",
    )
    max_hello_bytes: int = Field(
        16384,
        ge=1024,
        description="Largest Hello accepted, in bytes; a larger one is refused before any "
        "other work.",
    )
    max_pending_nodes: int = Field(
        1000,
        ge=0,
        description="Admission requests kept at most; beyond, unknown nodes are refused "
        "without a record.",
    )
    pending_node_ttl: Duration = Field(
        timedelta(minutes=10),
        gt=timedelta(0),
        description="An admission request not renewed for this long is dropped (a waiting "
        "node asks again every FLEETWIRE_NODE_RECONNECT_MAX_DELAY).",
    )
    key_check_interval: Duration = Field(
        timedelta(seconds=2),
        gt=timedelta(0),
        description="How often the keys of connected nodes are checked against the "
        "registry; a revoked key ends its session within this time (a key replaced by a "
        "rotation does not).",
    )
    defer_delay: Duration = Field(
        timedelta(seconds=1),
        description="Wait before handing back a job no connected node can take right now.",
    )
    retry_delays: list[Duration] = Field(
        default_factory=lambda: [
            timedelta(minutes=1),
            timedelta(minutes=5),
            timedelta(minutes=30),
        ],
        description="Delays of the retry stages a retryably failed job waits in (JSON list of "
        "seconds); after the last stage the job is dead-lettered.",
    )
    max_attempts: int = Field(
        8,
        ge=1,
        description="Attempts (including ones lost with their node) after which a job is "
        "dead-lettered.",
    )
    penalty_threshold: float = Field(
        10.0,
        gt=0,
        description="Penalty points at which a node is excluded (bad signature, unexpected or "
        "invalid result, inflated usage, oversized progress, stream mismatch 5; dispatch "
        "timeout, lease expired, a cancel nobody asked for 2; failure, reject 1; decaying "
        "1 point/min).",
    )
    penalty_cooldown: Duration = Field(
        timedelta(minutes=1), description="How long an excluded node gets no work."
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of the Prometheus metrics endpoint (this machine)."
    )
    metrics_port: int = Field(
        9462,
        ge=0,
        description="Port of the Prometheus metrics endpoint (/metrics; HTTPS with the "
        "server's certificate unless FLEETWIRE_TLS_INSECURE); 0: any free port.",
    )
    metrics_poll_interval: Duration = Field(
        timedelta(seconds=15),
        gt=timedelta(0),
        description="How often the metrics of the mesh's state are read: queue depths "
        "(RabbitMQ), jobs waiting and ledger totals (PostgreSQL), excluded nodes.",
    )
    tokenizers: dict[str, Path] = Field(
        default_factory=dict,
        description="Model name to the directory of its tokenizer.json (JSON object): the "
        "mesh counts prompt tokens and bounds completion tokens itself for these models "
        "instead of billing a node's signed counts up to the caps (docs/trust.md).",
    )
    validation_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Chance that a tenant job dispatched to a node earns it a validation "
        "(blind) job too: a prompt with a known temperature-0 answer, paid from the mesh's "
        "own account (docs/trust.md); 0 turns validation off.",
    )
    validation_burst: int = Field(
        3,
        ge=0,
        description="Validation jobs a node with fewer judged answers than this gets as soon "
        "as it connects (a newly approved node is checked before it earns a reputation).",
    )
    validation_max_tokens: int = Field(
        24, ge=4, description="Most tokens a validation job asks for (each asks 8 to this)."
    )
    validation_ttl: Duration = Field(
        timedelta(minutes=5), description="TTL of a validation job, as a tenant would set it."
    )
    validation_agreement: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Two answers agree when they are equal or share a prefix of at least this "
        "share of the longer one (greedy decoding that diverges late on other hardware still "
        "agrees; other text does not).",
    )
    validation_max_answers: int = Field(
        4,
        ge=2,
        description="Nodes asked a challenge before it is given up as UNRESOLVED (no two "
        "agreed) and judges nobody.",
    )
    probation_interval: Duration = Field(
        timedelta(seconds=30),
        description="How often a node on probation (reputation below the floor after a wrong "
        "answer: no tenant work) gets a validation job to earn its way back.",
    )
    reputation_floor: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Reputation below which a node that answered a validation job wrongly "
        "gets no tenant jobs, only validation jobs (probation).",
    )
    reputation_half_life: Duration = Field(
        timedelta(days=1),
        description="Half-life of validation outcomes and offence points in a node's reputation.",
    )
    price_per_1k_prompt_tokens: int = Field(
        100, ge=0, description="Micro-credits a mainnet job is charged per 1,000 prompt tokens."
    )
    price_per_1k_completion_tokens: int = Field(
        200,
        ge=0,
        description="Micro-credits a mainnet job is charged per 1,000 completion tokens.",
    )
    reconnect_grace: Duration = Field(
        timedelta(seconds=10),
        description="How long the jobs of a node whose stream broke wait for it to reconnect "
        "with them before they go back to the queue (0: at once).",
    )
    reap_interval: Duration = Field(
        timedelta(seconds=5),
        description="How often the deadline reaper closes live jobs past their deadline.",
    )
    reap_grace: Duration = Field(
        timedelta(seconds=30),
        description="How long past its expires_at a job may stay live (a result in flight "
        "still lands) before the deadline reaper makes it EXPIRED.",
    )
    reap_batch: int = Field(
        500, ge=1, description="Most jobs the deadline reaper closes in one statement."
    )
    stop_grace: Duration = Field(
        timedelta(seconds=5),
        description="How long a stopping scheduler lets in-flight calls finish and relayed "
        "token chunks reach Redis.",
    )


class ConsoleSettings(_Group):
    """The operators' web console: an HTTPS server of its own that reads and acts through
    a scheduler's admin port with the logged-in operator's key."""

    model_config = _group("FLEETWIRE_CONSOLE_")

    host: str = Field(
        "127.0.0.1", description="Listen address of the console (this machine unless set)."
    )
    port: int = Field(
        9460,
        ge=0,
        description="HTTPS port of the console (plain HTTP only with FLEETWIRE_TLS_INSECURE); "
        "0: any free port.",
    )
    admin_address: str = Field(
        "127.0.0.1:50053",
        description="A scheduler's admin port (host:port) the console calls for every page "
        "and action.",
    )
    admin_ca_file: Path | None = Field(
        None,
        description="PEM CA certificates the admin port's certificate must chain to; unset: "
        "the system's trust store.",
    )
    admin_client_cert_file: Path | None = Field(
        None,
        description="PEM client certificate the console presents to an admin port that "
        "wants mTLS (FLEETWIRE_SCHEDULER_ADMIN_CLIENT_CA_FILE); set with "
        "FLEETWIRE_CONSOLE_ADMIN_CLIENT_KEY_FILE, or neither.",
    )
    admin_client_key_file: Path | None = Field(
        None, description="PEM private key of FLEETWIRE_CONSOLE_ADMIN_CLIENT_CERT_FILE."
    )
    admin_insecure: bool = Field(
        False,
        description="Call the admin port in plaintext (a scheduler with "
        "FLEETWIRE_TLS_INSECURE). Tests on one machine only; logged as a warning at start.",
    )
    admin_timeout: Duration = Field(
        timedelta(seconds=5),
        gt=timedelta(0),
        description="Deadline of each admin call a page or action makes.",
    )
    session_idle: Duration = Field(
        timedelta(minutes=30),
        gt=timedelta(0),
        description="A console session unused this long ends (the operator logs in again).",
    )
    session_lifetime: Duration = Field(
        timedelta(hours=12),
        gt=timedelta(0),
        description="A console session ends this long after its login, however busy.",
    )
    max_sessions: int = Field(
        1000,
        ge=1,
        description="Sessions kept at most; a login beyond ends the least recently used.",
    )
    refresh_interval: Duration = Field(
        timedelta(seconds=5),
        gt=timedelta(0),
        description="How often the overview's live parts (queues, throughput, nodes) are "
        "sent again (server-sent events).",
    )
    stop_grace: Duration = Field(
        timedelta(seconds=3),
        description="How long a stopping console lets open requests finish.",
    )


class Settings(BaseModel):
    """All groups together; build once in ``__main__`` and pass down. A plain model: only
    the groups read the environment, each under its own prefix."""

    mesh: MeshSettings = Field(default_factory=MeshSettings)
    rabbitmq: RabbitMQSettings = Field(default_factory=RabbitMQSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _route_queues_outlive_their_jobs(self) -> Settings:
        """An expiring route queue deletes the messages it holds: refused at load unless
        every job's TTL (at most the bridge's max_ttl) has run out before."""
        expires = self.mesh.route_queue_expires
        least = self.bridge.max_ttl + ROUTE_EXPIRY_MARGIN
        if expires and expires < least:
            raise ValueError(
                f"FLEETWIRE_ROUTE_QUEUE_EXPIRES ({expires}) must be at least "
                f"FLEETWIRE_BRIDGE_MAX_TTL + {ROUTE_EXPIRY_MARGIN} ({least}), or 0"
            )
        return self


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Reads the settings from the environment (and ``.env``) once per process."""
    return Settings()
