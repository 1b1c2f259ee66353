"""Runs a local mesh as child processes (``fleetwire up`` and ``fleetwire demo``).

Children are ordinary processes (vLLM cannot start inside a daemonic one). Stop order:
the console (when started), the nodes (they drain), then the scheduler, then the bridge;
each gets SIGTERM and, after its grace period, SIGKILL. Ctrl-C stops everything the same
way.

Each child runs in a session of its own (a Ctrl-C in the terminal reaches the supervisor
only, which stops the children in that order) and is bound to the supervisor by
``fleetwire.process.lifeline``: if the supervisor dies without stopping them (SIGKILL, a crash), the
kernel sends each child SIGKILL, and a node's engine processes die with their node. The
binding follows the thread that starts a child, so start and stop a mesh from one
long-lived thread (the main thread).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fleetwire.process.lifeline import bound_command
from fleetwire_tools.certs import ensure_dev_certificates

DEV_CERT_DIR = Path(".cache/certs")
DEV_API_KEY_FILE = Path(".cache/dev-api-key")
DEV_TENANT = "dev"


def dev_api_key(dsn: str, key_file: Path | None = DEV_API_KEY_FILE) -> str:
    """An API key of the tenant ``dev`` in the mesh's database: the one in ``key_file``
    while it is valid, else a new one (written there, mode 0600). ``key_file`` None: a new
    key, kept nowhere."""
    import asyncio

    from pydantic import SecretStr

    from fleetwire.process.settings import PostgresSettings
    from fleetwire.store.db import open_pool
    from fleetwire.store.tenants import TenantStore

    kept = key_file.read_text().strip() if key_file is not None and key_file.exists() else ""

    async def ensure() -> str:
        pool = await open_pool(PostgresSettings(dsn=SecretStr(dsn)))
        try:
            store = TenantStore(pool)
            if kept and await store.tenant_of_key(kept) == DEV_TENANT:
                return kept
            return (await store.create_key(DEV_TENANT, name="dev profile")).secret
        finally:
            await pool.close()

    key = asyncio.run(ensure())
    if key_file is not None:
        write_secret(key_file, key)
    return key


def write_secret(path: Path, secret: str) -> None:
    """Writes ``secret`` to ``path`` readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")


NODE_METRICS_PORT = 9463
"""FLEETWIRE_NODE_METRICS_PORT's default: the first node's; the others count up."""

OPEN_TENANT_DEFAULTS = {
    # A one-team mesh: every tenant may use every class and subcloud, and mainnet without
    # credit. Production keeps the bridge's defaults (no urgent, no subcloud, no debt).
    "FLEETWIRE_BRIDGE_DEFAULT_PRIORITIES": "none",
    "FLEETWIRE_BRIDGE_DEFAULT_SUBCLOUDS": "none",
    "FLEETWIRE_BRIDGE_DEFAULT_CREDIT_LIMIT": "none",
}


def dev_profile_env(cert_dir: Path = DEV_CERT_DIR) -> dict[str, str]:
    """The FLEETWIRE_* variables of the dev profile (``fleetwire up``, ``make demo``): TLS
    with a local CA and a certificate for localhost (``fleetwire certs``, made once in
    ``cert_dir``), trusted by the nodes and by clients that read ``FLEETWIRE_CA_FILE``; and
    nodes registered on first use, with the subclouds they claim, instead of waiting for an
    operator's approval and grants; and tenants unrestricted (``OPEN_TENANT_DEFAULTS``)."""
    made = ensure_dev_certificates(cert_dir)
    return {
        **OPEN_TENANT_DEFAULTS,
        "FLEETWIRE_BRIDGE_REQUIRE_API_KEY": "true",
        "FLEETWIRE_SCHEDULER_AUTO_REGISTER_NODES": "true",
        "FLEETWIRE_SCHEDULER_TRUST_NODE_CLAIMS": "true",
        "FLEETWIRE_TLS_CERT_FILE": str(made.server.cert.resolve()),
        "FLEETWIRE_TLS_KEY_FILE": str(made.server.key.resolve()),
        "FLEETWIRE_TLS_INSECURE": "false",
        "FLEETWIRE_NODE_CA_FILE": str(made.ca.resolve()),
        "FLEETWIRE_NODE_INSECURE": "false",
        "FLEETWIRE_CA_FILE": str(made.ca.resolve()),
        "FLEETWIRE_INSECURE": "false",
    }


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class LocalMesh:
    """Bridge, scheduler and ``nodes`` node agents, started with ``start`` and stopped with
    ``stop`` (idempotent)."""

    nodes: int = 2
    env: Mapping[str, str] = field(default_factory=dict)
    key_dir: Path = Path(".cache/keys")
    log_dir: Path | None = None
    # The node agents' module: ``node`` (vLLM), or a benchmark's (``bench.bench_node``).
    node_module: str = "node"
    # The operators' web console too (``python -m console``): the dev profile's meshes.
    console: bool = False
    children: list[Child] = field(default_factory=list)

    def _spawn(self, name: str, module: str, extra_env: Mapping[str, str]) -> Child:
        env = {**os.environ, **self.env, **extra_env}
        out: int | object = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            bound_command([sys.executable, "-m", module]),
            env=env,
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
        child = Child(name, process)
        self.children.append(child)
        return child

    def start(self) -> None:
        self._spawn("scheduler", "scheduler", {})
        self._spawn("bridge", "broker_bridge", {})
        if self.console:
            self._spawn("console", "console", {})
        for i in range(1, self.nodes + 1):
            self.start_node(f"node-{i}", metrics_port=self.node_metrics_port(i))

    def start_node(self, node_id: str, *, metrics_port: int | None = None) -> Child:
        extra = {
            "FLEETWIRE_NODE_NODE_ID": node_id,
            "FLEETWIRE_NODE_KEY_FILE": str(self.key_dir / f"{node_id}.key"),
        }
        if metrics_port is not None:
            extra["FLEETWIRE_NODE_METRICS_PORT"] = str(metrics_port)
        return self._spawn(node_id, self.node_module, extra)

    def node_metrics_port(self, index: int) -> int:
        """The metrics port of the ``index``-th node (from 1): one each from
        FLEETWIRE_NODE_METRICS_PORT (9463) up; 0 (any free port) stays 0."""
        configured = self.env.get("FLEETWIRE_NODE_METRICS_PORT") or os.environ.get(
            "FLEETWIRE_NODE_METRICS_PORT", ""
        )
        base = int(configured) if configured else NODE_METRICS_PORT
        return 0 if base == 0 else base + index - 1

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def failed(self) -> list[Child]:
        """Children that exited on their own."""
        return [c for c in self.children if c.process.poll() is not None]

    def stop(self, grace: float = 20.0) -> None:
        # The console first: it only calls the scheduler's admin port.
        groups = ("console", "node", "scheduler", "bridge")
        order = sorted(
            self.children,
            key=lambda c: next((i for i, g in enumerate(groups) if c.name.startswith(g)), 0),
        )
        for group in groups:
            members = [c for c in order if c.name.startswith(group)]
            for c in members:
                if c.process.poll() is None:
                    c.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for c in members:
                try:
                    c.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(c.process.pid, signal.SIGKILL)
                    c.process.wait()
        self.children.clear()
