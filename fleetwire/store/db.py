"""PostgreSQL connection and schema migrations, applied by the project itself on start.

Migrations are the ``NNNN_*.sql`` files in ``fleetwire/store/migrations``, applied in order, each
in its own transaction, recorded in ``schema_migrations``. A transaction-level advisory lock
serialises processes that start at the same moment, so applying twice (or concurrently)
is harmless.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.process.settings import PostgresSettings

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

_MIGRATION_LOCK = 0x0F1EE7  # advisory lock key for migrations

BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # e.g. the server is shutting down
    asyncpg.exceptions.InternalClientError,  # a connection broken mid-operation
    TimeoutError,
)


def migrations() -> list[tuple[str, str]]:
    """(version, sql) of every migration, in order."""
    folder = resources.files("fleetwire.store") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text()) for p in files]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Applies the migrations not yet applied; returns the versions applied now."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migrations():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied_now.append(version)
    if applied_now:
        log.info("migrations applied", versions=applied_now)
    return applied_now


async def ensure_database(dsn: str) -> None:
    """Creates the DSN's database when it does not exist yet."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(dsn)
        name = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            pass  # another process created it at the same moment
        finally:
            await admin.close()
    else:
        await conn.close()


async def _no_session_reset(_conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset on release (``RESET ALL``, ``UNLISTEN *``, unlocking
    advisory locks: one more round trip per query). The project sets no session state,
    listens nowhere and takes only transaction-level locks; an open transaction is still
    rolled back by the pool before this is called."""


async def open_pool(settings: PostgresSettings, *, migrate: bool = True) -> asyncpg.Pool:
    """A connection pool on a migrated database. Raises BackendUnavailable when PostgreSQL
    cannot be reached."""
    dsn = settings.dsn.get_secret_value()
    try:
        if migrate:
            await ensure_database(dsn)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=settings.pool_min,
            max_size=settings.pool_max,
            command_timeout=settings.command_timeout.total_seconds(),
            # Opening a connection is bounded too (asyncpg's default: 60 s): a pool that
            # dials a stalled link must answer UNAVAILABLE within the same bound.
            timeout=settings.command_timeout.total_seconds(),
            reset=_no_session_reset,
        )
    except BACKEND_ERRORS as err:
        raise BackendUnavailable("postgresql", str(err)) from err
    if migrate:
        async with pool.acquire() as conn:
            await apply_migrations(conn)
    return pool


def translating(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turns connection-level asyncpg errors into BackendUnavailable."""

    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except BACKEND_ERRORS as err:
            raise BackendUnavailable("postgresql", str(err) or type(err).__name__) from err

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper
