"""The node agent's settings (``FLEETWIRE_NODE_*``); part of ``settings.Settings``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field

from fleetwire.process.settings_base import Duration, _Group, _group


class NodeSettings(_Group):
    """The node agent."""

    model_config = _group("FLEETWIRE_NODE_")

    scheduler_address: str = Field("127.0.0.1:50052", description="Scheduler host:port.")
    ca_file: Path | None = Field(
        None,
        description="PEM CA certificates the scheduler's certificate must chain to; unset: "
        "the system's trust store.",
    )
    client_cert_file: Path | None = Field(
        None,
        description="PEM client certificate (chain) the node presents to a scheduler whose "
        "node port wants mTLS (FLEETWIRE_SCHEDULER_NODE_CLIENT_CA_FILE); set with "
        "FLEETWIRE_NODE_CLIENT_KEY_FILE, or neither. Needs TLS.",
    )
    client_key_file: Path | None = Field(
        None, description="PEM private key of FLEETWIRE_NODE_CLIENT_CERT_FILE."
    )
    server_name: str = Field(
        "",
        description="The name the scheduler's certificate must carry (and that the node signs "
        "into its handshake); empty: the host of FLEETWIRE_NODE_SCHEDULER_ADDRESS.",
    )
    insecure: bool = Field(
        False,
        description="Dial the scheduler in plaintext (no TLS). For tests and benchmarks on one "
        "machine only; logged as a warning at start.",
    )
    node_id: str = Field("node-1", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="Node id.")
    key_file: Path = Field(
        Path("node.key"), description="Private key file (created with mode 0600 if missing)."
    )
    model_path: Path = Field(
        Path(".cache/models/tiny-llama"), description="Model directory served by vLLM."
    )
    model_name: str = Field("tiny-llama", description="Model name clients ask for.")
    model_version: str = Field("", description="Model version; empty: from the directory.")
    max_num_seqs: int = Field(8, ge=1, description="Engine concurrency (the node's slots).")
    max_model_len: int = Field(512, ge=16, description="Context length in tokens.")
    kv_cache_mib: int = Field(256, ge=16, description="KV cache size on CPU, MiB.")
    region: str = Field("local", description="Region advertised to the mesh.")
    networks: list[str] = Field(
        default_factory=lambda: ["mainnet", "testnet"],
        description="Networks the node opts into (JSON list).",
    )
    reconnect_max_delay: Duration = Field(
        timedelta(seconds=10), description="Longest back-off between reconnects."
    )
    config: Path | None = Field(
        None,
        description="Node config file (TOML): served models, region, subclouds, networks, "
        "prices. Its values replace the model, region and network settings above.",
    )
    subclouds: list[str] = Field(
        default_factory=list, description="Private pools the node joins (JSON list)."
    )
    drain_grace: Duration = Field(
        timedelta(seconds=120),
        description="On SIGTERM, how long running jobs may take to finish before they are "
        "aborted and handed back.",
    )
    keep_jobs_on_reconnect: bool = Field(
        True,
        description="When the stream drops, keep running jobs and deliver their results on "
        "the next session (the scheduler waits FLEETWIRE_SCHEDULER_RECONNECT_GRACE for them); "
        "false: abort them at once.",
    )
    engine_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Nice value given to the inference engine's processes once started, so "
        "that the agent (and a scheduler or database on the same machine) runs before the "
        "engine's busy-waiting threads. 0: leave them as they are.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the node's Prometheus metrics endpoint (its own and its "
        "engines' vLLM metrics); plaintext only on a loopback address.",
    )
    metrics_port: int = Field(
        9463, ge=0, description="Port of the node's metrics endpoint (/metrics); 0: any free port."
    )
    metrics_cert_file: Path | None = Field(
        None,
        description="PEM certificate chain the metrics endpoint serves HTTPS with (with "
        "FLEETWIRE_NODE_METRICS_KEY_FILE); needed on an address other than loopback.",
    )
    metrics_key_file: Path | None = Field(
        None, description="PEM private key of FLEETWIRE_NODE_METRICS_CERT_FILE."
    )
    token_flush: Duration = Field(
        timedelta(milliseconds=50),
        ge=timedelta(0),
        description="How long generated tokens may wait to be sent together in one Progress "
        "(counted from the oldest unsent token; the first token of a job goes at once). "
        "0: one Progress per engine step.",
    )
    token_flush_tokens: int = Field(
        32,
        ge=1,
        description="Send the waiting tokens as soon as this many have gathered, even "
        "within FLEETWIRE_NODE_TOKEN_FLUSH.",
    )
