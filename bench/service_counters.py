"""What a job costs the backing services, from the servers' own counters, read before and
after a load phase:

- PostgreSQL: ``pg_stat_database.xact_commit`` / ``xact_rollback`` of the run's database
  ``fw_<ns>`` (only the run's processes use it; read-only transactions count too).
  A backend reports its counts at most once a second while busy and up to 10 s after it
  went idle (PostgreSQL 15's ``PGSTAT_IDLE_INTERVAL``), so the reading after a load waits
  ``SETTLE_S`` first; the idle mesh's own background (about 2 commits/s) is counted.
- Redis: ``INFO commandstats`` calls per command, read at the load's end (no lag). The
  server is shared: whatever else runs on it in the same seconds counts too, so the rate
  seen in the settle after the load (other users, the run's idle processes) is taken off
  over the load's duration (``per_job``).
- RabbitMQ: the management API's ``message_stats`` (publish, deliver_get, ack, redeliver)
  summed over the run's queues (``<ns>.*``). The broker refreshes them every
  ``collect_statistics_interval`` (5 s by default), which the same settle covers.

A source that cannot be read gives None (the per-job figures then say so) instead of
failing the phase.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from bench.processes import POSTGRES_ADMIN_DSN, REDIS_URL
from fleetwire.process.settings import RabbitMQSettings

SETTLE_S = 12.0
"""Longer than PostgreSQL's idle stats interval (10 s) and RabbitMQ's stats interval (5 s)."""
AMQP_STATS = ("publish", "deliver_get", "ack", "redeliver")
REDIS_SHOWN_PER_JOB = 0.05
"""Commands called fewer times per job than this are left out of the per-command list."""


@dataclass(frozen=True)
class Counters:
    """One reading of the servers' counters (None: that source could not be read)."""

    at: float
    pg: dict[str, int] | None = None
    redis_commands: dict[str, int] | None = None
    amqp: dict[str, int] | None = None
    problems: dict[str, str] = field(default_factory=dict)


async def read_counters(namespace: str) -> Counters:
    problems: dict[str, str] = {}
    pg = redis_commands = amqp = None
    try:
        pg = await _postgres(f"fw_{namespace}")
    except (OSError, asyncpg.PostgresError) as err:
        problems["postgres"] = f"{type(err).__name__}: {err}"
    try:
        redis_commands = await _redis()
    except (OSError, aioredis.RedisError) as err:
        problems["redis"] = f"{type(err).__name__}: {err}"
    try:
        amqp = await asyncio.to_thread(_amqp_queue_stats, namespace)
    except (OSError, ValueError) as err:
        problems["rabbitmq"] = f"{type(err).__name__}: {err}"
    return Counters(time.monotonic(), pg, redis_commands, amqp, problems)


def per_job(before: Counters, end: Counters, after: Counters, jobs: int) -> dict[str, Any]:
    """What a job cost, from readings ``before`` a load, at its ``end`` and ``after`` the
    settle: PostgreSQL and RabbitMQ from ``before`` to ``after`` (their counters lag);
    Redis (its counters do not lag) from ``before`` to ``end``, less the background rate
    seen from ``end`` to ``after`` (other users of the shared server, the run's idle
    processes) over the load's duration."""
    jobs = max(1, jobs)

    def rate(a: int, b: int) -> float:
        return round((b - a) / jobs, 3)

    out: dict[str, Any] = {"jobs": jobs, "load_s": round(end.at - before.at, 1)}
    if before.pg is not None and after.pg is not None:
        out["pg_commits_per_job"] = rate(before.pg["xact_commit"], after.pg["xact_commit"])
        out["pg_rollbacks_per_job"] = rate(before.pg["xact_rollback"], after.pg["xact_rollback"])
    if None not in (before.redis_commands, end.redis_commands, after.redis_commands):
        out.update(_redis_per_job(before, end, after, jobs))
    if before.amqp is not None and after.amqp is not None:
        out["amqp_per_job"] = {
            name: rate(before.amqp.get(name, 0), after.amqp.get(name, 0)) for name in AMQP_STATS
        }
    problems = {**before.problems, **end.problems, **after.problems}
    if problems:
        out["unreadable"] = problems
    return out


def _redis_per_job(before: Counters, end: Counters, after: Counters, jobs: int) -> dict[str, Any]:
    load_s = max(1e-3, end.at - before.at)
    quiet_s = max(1e-3, after.at - end.at)
    b, e, a = before.redis_commands or {}, end.redis_commands or {}, after.redis_commands or {}

    def less_background(name: str) -> float:
        during = e.get(name, 0) - b.get(name, 0)
        background = (a.get(name, 0) - e.get(name, 0)) / quiet_s * load_s
        return max(0.0, during - background) / jobs

    by_command = {name: round(less_background(name), 3) for name in a}
    total = sum(e.values()) - sum(b.values())
    background_per_s = (sum(a.values()) - sum(e.values())) / quiet_s
    return {
        "redis_commands_per_job": round(max(0.0, total - background_per_s * load_s) / jobs, 3),
        "redis_commands_per_job_raw": round(total / jobs, 3),
        "redis_background_per_s": round(background_per_s, 1),
        "redis_per_command_per_job": dict(
            sorted(
                ((n, v) for n, v in by_command.items() if v >= REDIS_SHOWN_PER_JOB),
                key=lambda item: -item[1],
            )
        ),
    }


async def _postgres(database: str) -> dict[str, int]:
    conn = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    if row is None:
        raise OSError(f"no database {database}")
    return {"xact_commit": int(row["xact_commit"]), "xact_rollback": int(row["xact_rollback"])}


async def _redis() -> dict[str, int]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def _amqp_queue_stats(namespace: str) -> dict[str, int]:
    """``message_stats`` summed over the queues named ``<namespace>.*`` of the default vhost."""
    url = urllib.parse.urlsplit(RabbitMQSettings().management_url.get_secret_value())
    base = f"{url.scheme}://{url.hostname}:{url.port or 15672}{url.path.rstrip('/')}"
    request = urllib.request.Request(f"{base}/api/queues/%2F?columns=name,message_stats")
    if url.username:
        token = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as reply:
        queues = json.load(reply)
    totals = dict.fromkeys(AMQP_STATS, 0)
    for queue in queues:
        if str(queue.get("name", "")).startswith(f"{namespace}."):
            stats = queue.get("message_stats") or {}
            for name in AMQP_STATS:
                totals[name] += int(stats.get(name, 0))
    return totals
