"""Shared fixtures. Every test run gets its own names: a RabbitMQ namespace, a PostgreSQL
database and Redis key prefix (the namespace), and free ports, so runs never collide.
Everything created is removed at the end of the session."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiormq
import asyncpg
import pytest
import redis.asyncio as aioredis

from fleetwire.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / ".cache" / "models" / "tiny-llama"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks each test by its folder: unit, integration or e2e."""
    for item in items:
        for marker in ("unit", "integration", "e2e"):
            if f"{os.sep}{marker}{os.sep}" in str(item.path):
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def run_id() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture(scope="session")
def mesh_env(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """FLEETWIRE_* variables of this run's isolated mesh; also applied to os.environ so
    in-process components and child processes see the same settings."""
    env = {
        "FLEETWIRE_NAMESPACE": run_id,
        "FLEETWIRE_POSTGRES_DSN": f"postgresql://postgres@127.0.0.1:5432/fw_{run_id}",
        "FLEETWIRE_BRIDGE_PORT": str(free_port()),
        "FLEETWIRE_SCHEDULER_PORT": str(free_port()),
        "FLEETWIRE_SCHEDULER_LEASE": "6",
        "FLEETWIRE_SCHEDULER_HEARTBEAT_INTERVAL": "1",
        "FLEETWIRE_NODE_MODEL_PATH": str(MODEL_DIR),
        "FLEETWIRE_NODE_KEY_FILE": str(tmp_path_factory.mktemp("keys") / "node.key"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env["FLEETWIRE_NODE_SCHEDULER_ADDRESS"] = f"127.0.0.1:{env['FLEETWIRE_SCHEDULER_PORT']}"
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
        asyncio.run(_cleanup(run_id))


async def _cleanup(run_id: str) -> None:
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
        for route in ("mainnet.tiny-llama", "testnet.tiny-llama", "mainnet.other-model"):
            await channel.queue_delete(f"{run_id}.jobs.{route}")
        await channel.queue_delete(f"{run_id}.dead")
        await channel.exchange_delete(f"{run_id}.jobs")
        await channel.exchange_delete(f"{run_id}.dlx")
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


@pytest.fixture(scope="session")
def settings(mesh_env: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture
async def amqp_channel(settings: Settings) -> AsyncIterator[aiormq.abc.AbstractChannel]:
    connection = await aiormq.connect(settings.rabbitmq.url.get_secret_value())
    channel = await connection.channel()
    yield channel
    await connection.close()
