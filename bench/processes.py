"""An isolated mesh for one benchmark run: its own namespace (queues, exchanges, Redis
keys), database and ports; processes started as children and always stopped; everything
the run created removed at the end (``cleanup_namespace``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiormq
import asyncpg
import grpc
import redis.asyncio as aioredis
from pydantic import SecretStr

from fleetwire.process.settings import PostgresSettings
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.store.db import open_pool
from fleetwire.store.operators import OperatorStore, Role
from fleetwire.v1 import mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from fleetwire_tools.supervisor import OPEN_TENANT_DEFAULTS

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
MODEL_DIR = Path(".cache/models/tiny-llama")

BENCH_MODEL = "bench-noop"
"""The model name bench nodes serve (kept apart from the real model's route)."""
IDLE_MODEL = "bench-idle"
"""The model name of the simulated idle nodes."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_env(namespace: str) -> dict[str, str]:
    """FLEETWIRE_* variables of one isolated mesh (as ``tests/conftest.py`` builds them),
    with the tenant rate and queue-depth guards opened wide: a benchmark measures the path,
    not the admission limits. Plaintext, said explicitly, like the baselines it is compared
    with (raw AMQP, Celery on Redis)."""
    env = {
        "FLEETWIRE_TLS_INSECURE": "true",
        "FLEETWIRE_NODE_INSECURE": "true",
        "FLEETWIRE_INSECURE": "true",
        "FLEETWIRE_SCHEDULER_AUTO_REGISTER_NODES": "true",
        "FLEETWIRE_SCHEDULER_TRUST_NODE_CLAIMS": "true",
        "FLEETWIRE_BRIDGE_REQUIRE_API_KEY": "false",
        **OPEN_TENANT_DEFAULTS,
        "FLEETWIRE_NAMESPACE": namespace,
        "FLEETWIRE_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:5432/fw_{namespace}",
        "FLEETWIRE_BRIDGE_PORT": str(free_port()),
        "FLEETWIRE_SCHEDULER_PORT": str(free_port()),
        "FLEETWIRE_SCHEDULER_ADMIN_PORT": str(free_port()),
        "FLEETWIRE_BRIDGE_METRICS_PORT": "0",
        "FLEETWIRE_BRIDGE_HTTP_PORT": "0",
        "FLEETWIRE_SCHEDULER_METRICS_PORT": "0",
        "FLEETWIRE_NODE_METRICS_PORT": "0",
        "FLEETWIRE_MODELS": f'["tiny-llama", "{BENCH_MODEL}", "{IDLE_MODEL}"]',
        # The peers have no validation jobs either; in production about
        # FLEETWIRE_SCHEDULER_VALIDATION_SHARE more node work (docs/trust.md).
        "FLEETWIRE_SCHEDULER_VALIDATION_SHARE": "0",
        "FLEETWIRE_SCHEDULER_VALIDATION_BURST": "0",
        "FLEETWIRE_BRIDGE_TENANT_RATE": "1000000",
        "FLEETWIRE_BRIDGE_TENANT_BURST": "1000000",
        "FLEETWIRE_BRIDGE_MAX_QUEUE_DEPTH": "1000000",
        "FLEETWIRE_BRIDGE_MAX_WAITING_PER_TENANT": "1000000",
        # Every bench node and simulated idle node dials from 127.0.0.1 (idle_nodes.py opens
        # a channel per 100 nodes): under the default 32 today, but a benchmark measures the
        # path, not this guard.
        "FLEETWIRE_SCHEDULER_MAX_CONNECTIONS_PER_PEER": "100000",
        # idle_nodes.py multiplexes 100 NodeStreams on one channel; the production cap (4)
        # would queue all but 4 of them.
        "FLEETWIRE_SCHEDULER_MAX_STREAMS_PER_CONNECTION": "1000",
        "FLEETWIRE_NODE_MODEL_PATH": str(MODEL_DIR),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env["FLEETWIRE_NODE_SCHEDULER_ADDRESS"] = f"127.0.0.1:{env['FLEETWIRE_SCHEDULER_PORT']}"
    return env


@dataclass
class Mesh:
    """Child processes of one isolated mesh. ``stop_all`` is idempotent."""

    namespace: str
    work_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _operator_key: str = ""

    def __post_init__(self) -> None:
        self.env = self.env or isolated_env(self.namespace)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def bridge_address(self) -> str:
        return f"127.0.0.1:{self.env['FLEETWIRE_BRIDGE_PORT']}"

    @property
    def scheduler_address(self) -> str:
        return f"127.0.0.1:{self.env['FLEETWIRE_SCHEDULER_PORT']}"

    @property
    def ca_file(self) -> Path | None:
        """The CA of a mesh that runs TLS (``FLEETWIRE_CA_FILE`` in its env), else None."""
        ca = self.env.get("FLEETWIRE_CA_FILE")
        return Path(ca) if ca and self.env.get("FLEETWIRE_TLS_INSECURE") == "false" else None

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.env['FLEETWIRE_SCHEDULER_ADMIN_PORT']}"

    async def operator_key(self) -> str:
        """An operator key of this mesh (made in its database on first use)."""
        if not self._operator_key:
            pool = await open_pool(
                PostgresSettings(dsn=SecretStr(self.env["FLEETWIRE_POSTGRES_DSN"]))
            )
            try:
                issued = await OperatorStore(pool).create_key("bench", Role.VIEWER, actor="bench")
            finally:
                await pool.close()
            self._operator_key = issued.secret
        return self._operator_key

    def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> int:
        log = (self.work_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            env={**os.environ, **self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children[name] = process
        return process.pid

    def start_module(self, name: str, module: str, extra_env: dict[str, str] | None = None) -> int:
        return self.spawn(name, [sys.executable, "-m", module], extra_env)

    def start_bench_node(
        self, node_id: str, *, slots: int, scheduler_port: str | None = None
    ) -> int:
        extra = {
            "FLEETWIRE_NODE_NODE_ID": node_id,
            "FLEETWIRE_NODE_KEY_FILE": str(self.work_dir / f"{node_id}.key"),
            "FLEETWIRE_NODE_MODEL_NAME": BENCH_MODEL,
            "FLEETWIRE_NODE_MAX_NUM_SEQS": str(slots),
        }
        if scheduler_port is not None:
            extra["FLEETWIRE_NODE_SCHEDULER_ADDRESS"] = f"127.0.0.1:{scheduler_port}"
        return self.start_module(node_id, "bench.bench_node", extra)

    def pid(self, name: str) -> int:
        return self.children[name].pid

    def stop(self, name: str, grace: float = 15.0) -> None:
        process = self.children.pop(name, None)
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop_all(self) -> None:
        order = sorted(self.children, key=lambda n: (not n.startswith("node"), n))
        for name in order:
            self.stop(name)

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.children.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"processes exited: {dead} (logs in {self.work_dir})")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.work_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            found.extend(process_tree(int(child)))
    return found


async def connected_nodes(mesh: Mesh) -> set[str]:
    """The nodes the mesh's admin port lists as connected."""
    metadata = (("authorization", f"Bearer {await mesh.operator_key()}"),)
    async with open_channel(mesh.admin_address, mesh.ca_file) as channel:
        stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        reply = await stub.ListNodes(
            mesh_admin_service_pb2.ListNodesRequest(), timeout=10, metadata=metadata
        )
        return {node.node_id for node in reply.nodes}


async def wait_for_nodes(mesh: Mesh, node_ids: set[str], within: float = 60.0) -> None:
    """Returns once every node in ``node_ids`` is connected (listed by the mesh)."""
    deadline = time.monotonic() + within
    seen: set[str] = set()
    while time.monotonic() < deadline:
        mesh.check_alive()
        with contextlib.suppress(grpc.aio.AioRpcError):
            seen = await connected_nodes(mesh)
            if node_ids <= seen:
                return
        await asyncio.sleep(0.3)
    raise TimeoutError(f"nodes not connected after {within} s: {sorted(node_ids - seen)}")


def open_channel(address: str, ca_file: Path | None = None) -> grpc.aio.Channel:
    """A client channel: TLS verified against ``ca_file``, plaintext without one."""
    if ca_file is None:
        return grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
    return grpc.aio.secure_channel(address, credentials, options=CLIENT_OPTIONS)


async def wait_for_port(address: str, within: float = 60.0, ca_file: Path | None = None) -> None:
    async with open_channel(address, ca_file) as channel:
        await asyncio.wait_for(channel.channel_ready(), within)


async def cleanup_namespace(namespace: str, extra_queues: tuple[str, ...] = ()) -> None:
    """Removes the database, queues, exchanges and Redis keys of one run."""
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "fw_{namespace}" WITH (FORCE)')
        finally:
            await conn.close()
    with contextlib.suppress(OSError, aiormq.exceptions.AMQPError):
        connection = await aiormq.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            for queue in [*await _queues_of(namespace), *extra_queues]:
                await channel.queue_delete(queue)
            for exchange in await _exchanges_of(namespace):
                await channel.exchange_delete(exchange)
        finally:
            await connection.close()
    with contextlib.suppress(OSError):
        redis = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in redis.scan_iter(match=f"{namespace}:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await redis.delete(*keys[i : i + 1000])
        finally:
            await redis.aclose()


async def _rabbitmqctl_names(what: str, namespace: str) -> list[str]:
    try:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            what,
            "name",
            "-q",
            "--no-table-headers",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    except (OSError, TimeoutError):
        return []
    return [name for name in out.decode().split() if name.startswith(f"{namespace}.")]


async def _queues_of(namespace: str) -> list[str]:
    return await _rabbitmqctl_names("list_queues", namespace)


async def _exchanges_of(namespace: str) -> list[str]:
    return await _rabbitmqctl_names("list_exchanges", namespace)
