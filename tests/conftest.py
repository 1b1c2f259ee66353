"""Shared fixtures. Every test run gets its own names: a RabbitMQ namespace, a PostgreSQL
database and Redis key prefix (the namespace), and free ports, so runs never collide.
Everything created is removed at the end of the session."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiormq
import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis

from broker_bridge.server import BridgeServer
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_service_pb2_grpc
from fleetwire_tools.supervisor import OPEN_TENANT_DEFAULTS
from tests.support.mesh_admin import create_operator_key

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / ".cache" / "models" / "tiny-llama"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SUITES = ("unit", "integration", "faults", "e2e")


def _suite_of(item: pytest.Item) -> int:
    for rank, suite in enumerate(SUITES):
        if f"{os.sep}{suite}{os.sep}" in str(item.path):
            return rank
    return len(SUITES)


# Per-suite timeouts (seconds, fixtures included), unless a test sets its own: pure logic
# is quick (the TypeScript checks run tsc), integration tests talk to local services,
# fault and end-to-end tests start processes and vLLM engines on 2 shared cores.
SUITE_TIMEOUTS = {"unit": 30, "integration": 90, "faults": 300, "e2e": 300}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test by its folder, gives it its suite's timeout, and runs the suites in
    order: unit, integration, faults, e2e (fast feedback first; real processes last)."""
    for item in items:
        rank = _suite_of(item)
        if rank < len(SUITES):
            suite = SUITES[rank]
            item.add_marker(getattr(pytest.mark, suite))
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SUITE_TIMEOUTS[suite]))
    items.sort(key=_suite_of)  # stable: keeps file order within a suite


def isolated_env(namespace: str, key_file: Path) -> dict[str, str]:
    """FLEETWIRE_* variables of one isolated mesh: its own namespace (queues, Redis keys),
    database and free ports. Plaintext, said explicitly (servers, nodes and clients): the
    in-process meshes of the integration and fault tests run on one machine; the TLS tests
    and the end-to-end mesh turn TLS on (``tests/support/tls.py``)."""
    env = {
        "FLEETWIRE_TLS_INSECURE": "true",
        "FLEETWIRE_NODE_INSECURE": "true",
        "FLEETWIRE_INSECURE": "true",
        # Scripted nodes come with fresh keys: trust on first use, as the dev profile does
        # (the admission tests turn it off).
        "FLEETWIRE_SCHEDULER_AUTO_REGISTER_NODES": "true",
        "FLEETWIRE_SCHEDULER_TRUST_NODE_CLAIMS": "true",
        # Anonymous mode, said explicitly: most tests call without a key; the tenant tests
        # start bridges that require one.
        "FLEETWIRE_BRIDGE_REQUIRE_API_KEY": "false",
        # Tenants unrestricted, as in the dev profile; the tenant-policy tests keep the
        # production defaults.
        **OPEN_TENANT_DEFAULTS,
        "FLEETWIRE_NAMESPACE": namespace,
        "FLEETWIRE_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:5432/fw_{namespace}",
        "FLEETWIRE_BRIDGE_PORT": str(free_port()),
        "FLEETWIRE_SCHEDULER_PORT": str(free_port()),
        "FLEETWIRE_SCHEDULER_ADMIN_PORT": str(free_port()),
        "FLEETWIRE_BRIDGE_METRICS_PORT": "0",
        "FLEETWIRE_BRIDGE_HTTP_PORT": "0",
        "FLEETWIRE_SCHEDULER_METRICS_PORT": "0",
        "FLEETWIRE_CONSOLE_PORT": "0",
        "FLEETWIRE_NODE_METRICS_PORT": "0",
        # Generous: two vLLM engines busy-wait on these 2 cores, and a starved node process
        # once went 6 s without a heartbeat reaching the scheduler (a lost lease mid-drain).
        "FLEETWIRE_SCHEDULER_LEASE": "15",
        "FLEETWIRE_SCHEDULER_HEARTBEAT_INTERVAL": "1",
        "FLEETWIRE_SCHEDULER_RETRY_DELAYS": "[0.3, 0.6, 0.9]",
        "FLEETWIRE_SCHEDULER_RECONNECT_GRACE": "3",
        "FLEETWIRE_SCHEDULER_REAP_INTERVAL": "0.5",
        "FLEETWIRE_SCHEDULER_REAP_GRACE": "2",
        # No validation jobs unless a test asks for them (tests/integration/test_validation.py
        # and the e2e validation test): the others count the jobs their nodes are sent.
        "FLEETWIRE_SCHEDULER_VALIDATION_SHARE": "0",
        "FLEETWIRE_SCHEDULER_VALIDATION_BURST": "0",
        "FLEETWIRE_MODELS": '["tiny-llama", "scripted"]',
        "FLEETWIRE_NODE_MODEL_PATH": str(MODEL_DIR),
        "FLEETWIRE_NODE_KEY_FILE": str(key_file),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env["FLEETWIRE_NODE_SCHEDULER_ADDRESS"] = f"127.0.0.1:{env['FLEETWIRE_SCHEDULER_PORT']}"
    if (MODEL_DIR / "tokenizer.json").exists():  # `make test-fast` runs without the model
        # The mesh counts the tiny model's tokens itself (the honest-node e2e test checks
        # no real vLLM result is taken for an inflated one).
        env["FLEETWIRE_SCHEDULER_TOKENIZERS"] = json.dumps({"tiny-llama": str(MODEL_DIR)})
    return env


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Keeps each phase's report on the item (``item.rep_call``), so fixtures can show the
    logs of the processes they started when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def run_id() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture(scope="session")
def mesh_env(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """FLEETWIRE_* variables of this run's isolated mesh; also applied to os.environ so
    in-process components and child processes see the same settings."""
    env = isolated_env(run_id, tmp_path_factory.mktemp("keys") / "node.key")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        asyncio.run(cleanup_namespace(run_id))


async def cleanup_namespace(run_id: str) -> None:
    """Removes the database, queues, exchanges and Redis keys of one isolated mesh."""
    settings = Settings()
    try:
        conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        await conn.execute(f'DROP DATABASE IF EXISTS "fw_{run_id}" WITH (FORCE)')
        await conn.close()
    except (OSError, asyncpg.PostgresError):
        pass
    try:
        connection = await aiormq.connect(settings.rabbitmq.url.get_secret_value())
        channel = await connection.channel()
        for queue in await broker_queue_names(f"{run_id}."):
            await channel.queue_delete(queue)
        for exchange in ("jobs", "dlx", "retry"):
            await channel.exchange_delete(f"{run_id}.{exchange}")
        await connection.close()
    except (OSError, aiormq.exceptions.AMQPError):
        pass
    try:
        redis = aioredis.Redis.from_url(settings.redis.url.get_secret_value())
        keys = [key async for key in redis.scan_iter(match=f"{run_id}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    except OSError:
        pass


async def broker_queue_names(prefix: str) -> list[str]:
    """The broker's queue names starting with ``prefix``, read with rabbitmqctl (empty when
    it is not there): declaring a queue to see whether it exists would renew its expiry."""
    try:
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl",
            "list_queues",
            "name",
            "-q",
            "--no-table-headers",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    except (OSError, TimeoutError):
        return []
    return [q for q in out.decode().split() if q.startswith(prefix)]


@pytest.fixture(scope="session")
def settings(mesh_env: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture(scope="session")
async def operator_key(settings: Settings) -> str:
    """An admin-role operator key of this run's mesh (its database made if need be)."""
    return await create_operator_key(settings.postgres.dsn.get_secret_value())


@pytest.fixture(scope="session")
async def bridge(settings: Settings) -> AsyncIterator[BridgeServer]:
    """The broker bridge in-process, on this run's services."""
    server = BridgeServer(settings)
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture
async def jobs(bridge: BridgeServer) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.port}") as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


@pytest.fixture
async def amqp_channel(settings: Settings) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    connection = await aiormq.connect(settings.rabbitmq.url.get_secret_value())
    channel = await connection.channel()
    yield channel
    await connection.close()
