"""Schema migrations are applied by the project itself, and applying them again is harmless."""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fleetwire.process.settings import Settings
from fleetwire.store.db import apply_migrations, migrations, open_pool


async def test_migrations_apply_twice_without_harm(settings: Settings) -> None:
    pool = await open_pool(settings.postgres)  # creates the database and migrates
    try:
        async with pool.acquire() as conn:
            assert await apply_migrations(conn) == []
            versions = [
                r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
            ]
            assert versions == [version for version, _ in migrations()]
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
            }
            assert {"jobs", "attempts", "nodes", "schema_migrations"} <= tables
    finally:
        await pool.close()


async def test_concurrent_migrations_serialise(settings: Settings) -> None:
    """Three processes starting at once on an empty database: one applies every migration,
    the others wait for its lock and find nothing left to do."""
    parts = urlsplit(settings.postgres.dsn.get_secret_value())
    name = f"{parts.path.lstrip('/')}_migrate_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = urlunsplit(parts._replace(path=f"/{name}"))
        conns = [await asyncpg.connect(dsn) for _ in range(3)]
        try:
            results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        finally:
            for conn in conns:
                await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    every = [version for version, _ in migrations()]
    assert sorted(results, key=len) == [[], [], every]
