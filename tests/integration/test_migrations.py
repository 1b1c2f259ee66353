"""Schema migrations are applied by the project itself, and applying them again is harmless."""

from __future__ import annotations

import asyncio

import asyncpg

from fleetwire.db import apply_migrations, migrations, open_pool
from fleetwire.settings import Settings


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
    dsn = settings.postgres.dsn.get_secret_value()
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c) for c in conns))
        assert all(applied == [] for applied in results)
    finally:
        for conn in conns:
            await conn.close()
