"""The deadline reaper and the outbox relay on a jobs table of a million rows: what one sweep
and one claim cost, and which plan PostgreSQL uses. Prints figures; asserts nothing
(docs/benchmarks.md, "The deadline reaper and the outbox relay at a million rows", has the
results).

    python -m bench.reaper_scale [--rows 1000000] [--live 50000] [--overdue 2000]
                                 [--lapsed 500] [--out FILE.json]

A scratch database of its own (``fw_reaper_<hex>``, created and migrated through
``fleetwire.store.db.open_pool``, dropped at the end) is filled with ``INSERT ... SELECT
generate_series``: ``--live`` QUEUED jobs whose deadlines are 1-600 s ahead (``--lapsed`` of
them unpublished with a lapsed publish claim, 2,000 more with a claim still running),
``--overdue`` live jobs (QUEUED, DISPATCHED, RUNNING with an open attempt) whose deadlines
passed 31 s to 1 h ago, and terminal jobs for the rest (98 % SUCCEEDED, the others FAILED,
EXPIRED or CANCELLED; deadlines in the past, one attempt each), then ``VACUUM ANALYZE``.

Measured:
- ``EXPLAIN (ANALYZE, BUFFERS)`` of the reaper's SELECT (the ``due`` part of
  ``DeadlineStore.expire_overdue``, its WHERE / ORDER BY / LIMIT / FOR UPDATE SKIP LOCKED)
  with the values inlined (what a custom plan of the prepared statement sees), as a
  *generic* plan (``plan_cache_mode = force_generic_plan``: the values as parameters, which
  PostgreSQL may choose after five executions of a prepared statement), and without the
  partial index ``jobs_live_deadline_idx`` (dropped at the very end), each in a transaction
  rolled back;
- ``DeadlineStore.expire_overdue(grace 30 s, 500)`` called until it closes nothing, each call
  timed, then 20 calls with nothing overdue (what every replica pays every
  ``FLEETWIRE_SCHEDULER_REAP_INTERVAL``);
- ``OutboxStore.claim_lapsed(limit 200)`` called until it claims nothing, then 20 calls with
  nothing lapsed (what every bridge pays every ``FLEETWIRE_BRIDGE_OUTBOX_SWEEP``), and the
  plans of its inner SELECT (inlined and generic).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from bench.mesh_load import bench_spec
from bench.processes import POSTGRES_ADMIN_DSN
from fleetwire.process.settings import PostgresSettings
from fleetwire.store.db import open_pool
from fleetwire.store.outbox import OutboxStore
from scheduler.deadline_store import LIVE_STATES, DeadlineStore

GRACE = timedelta(seconds=30)  # FLEETWIRE_SCHEDULER_REAP_GRACE's default
REAP_BATCH = 500  # FLEETWIRE_SCHEDULER_REAP_BATCH's default
RELAY_BATCH = 200  # broker_bridge.outbox.RELAY_BATCH
LEASE = timedelta(seconds=5)  # FLEETWIRE_BRIDGE_OUTBOX_LEASE's default
IDLE_CALLS = 20
INFLIGHT_CLAIMS = 2_000

# The reaper's SELECT (scheduler/deadline_store.py, the ``due`` CTE) and the relay's
# (fleetwire/store/outbox.py, claim_lapsed's sub-select), values inlined.
_LIVE = "ARRAY[" + ", ".join(f"'{s}'" for s in LIVE_STATES) + "]::text[]"
REAPER_SELECT = (
    "SELECT job_id, state, node_id FROM jobs"
    f" WHERE state = ANY({_LIVE}) AND expires_at < now() - '30 seconds'::interval"
    f" ORDER BY expires_at LIMIT {REAP_BATCH} FOR UPDATE SKIP LOCKED"
)
REAPER_PREPARED = (
    "SELECT job_id, state, node_id FROM jobs"
    " WHERE state = ANY($1::text[]) AND expires_at < now() - $2::interval"
    " ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED"
)
RELAY_SELECT = (
    "SELECT job_id FROM jobs WHERE publish_due_at < now()"
    " AND state = 'QUEUED' AND expires_at > now()"
    " AND NOT (job_id = ANY(ARRAY[]::uuid[]))"
    f" ORDER BY publish_due_at LIMIT {RELAY_BATCH} FOR UPDATE SKIP LOCKED"
)
RELAY_PREPARED = (
    "SELECT job_id FROM jobs WHERE publish_due_at < now()"
    " AND state = 'QUEUED' AND expires_at > now()"
    " AND NOT (job_id = ANY($1::uuid[]))"
    " ORDER BY publish_due_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def fill(conn: asyncpg.Connection, args: argparse.Namespace) -> dict[str, float]:
    """Inserts the rows; returns seconds per step."""
    spec = bench_spec().SerializeToString()
    terminal = args.rows - args.live - args.overdue
    common = (
        "INSERT INTO jobs (job_id, state, spec, model, network, priority, route_key,"
        " request_digest, trace_id, created_at, updated_at, expires_at, attempts, node_id,"
        " output, finish_reason, prompt_tokens, completion_tokens, client_request_id,"
        " publish_claim, publish_due_at) "
    )
    steps: dict[str, float] = {}

    async def step(name: str, sql: str, *params: Any) -> None:
        began = time.perf_counter()
        await conn.execute(sql, *params, timeout=1800)  # the pool's command timeout is 10 s
        steps[name] = round(time.perf_counter() - began, 1)
        say(f"  {name}: {steps[name]} s")

    # Terminal jobs over the last 30 days, deadlines 10 minutes after creation.
    await step(
        f"{terminal:,} terminal jobs",
        common + "SELECT gen_random_uuid(),"
        " CASE WHEN i % 50 = 0 THEN (ARRAY['FAILED','EXPIRED','CANCELLED'])[1 + i % 3]"
        "  ELSE 'SUCCEEDED' END,"
        " $1, 'bench-noop', 'mainnet', 'PRIORITY_CLASS_NORMAL', 'mainnet.bench-noop',"
        " decode(md5(i::text), 'hex'), md5(i::text), t, t + interval '1 second',"
        " t + interval '10 minutes', 1, 'node-' || (i % 100),"
        " convert_to('fleetwire bench output', 'UTF8'), 'length', 3, 4, 'req-' || i, NULL, NULL"
        " FROM (SELECT i, now() - interval '30 days' * (i::float8 / $2) AS t"
        "  FROM generate_series(1, $2) AS i) s",
        spec,
        terminal,
    )
    await step(
        "their attempts",
        "INSERT INTO attempts (job_id, attempt, node_id, scheduler_id, outcome,"
        " dispatched_at, started_at, ended_at)"
        " SELECT job_id, 1, node_id, 'sched-1', CASE state WHEN 'SUCCEEDED' THEN 'SUCCEEDED'"
        "  WHEN 'CANCELLED' THEN 'CANCELLED' ELSE 'FAILED' END,"
        " created_at, created_at, updated_at FROM jobs",
    )
    # Live jobs, deadlines 1-600 s ahead; some unpublished (lapsed or running claims).
    await step(
        f"{args.live:,} live QUEUED jobs (deadline ahead)",
        common + "SELECT gen_random_uuid(), 'QUEUED', $1, 'bench-noop', 'mainnet',"
        " 'PRIORITY_CLASS_NORMAL', 'mainnet.bench-noop', decode(md5('l' || i), 'hex'),"
        " md5('l' || i), now(), now(), now() + interval '1 second' * (1 + i % 600), 0, NULL,"
        " NULL, NULL, NULL, NULL, 'live-' || i,"
        " CASE WHEN i <= $3::int + $4::int THEN gen_random_uuid() END,"
        " CASE WHEN i <= $3::int THEN now() - interval '1 second'"
        "  WHEN i <= $3::int + $4::int THEN now() + interval '5 seconds' END"
        " FROM generate_series(1, $2) AS i",
        spec,
        args.live,
        args.lapsed,
        INFLIGHT_CLAIMS,
    )
    # Overdue live jobs: a third QUEUED, a third DISPATCHED, a third RUNNING (with an open
    # attempt on a node), deadlines 31 s to 1 h ago.
    await step(
        f"{args.overdue:,} overdue live jobs",
        common + "SELECT gen_random_uuid(), (ARRAY['QUEUED','DISPATCHED','RUNNING'])[1 + i % 3],"
        " $1, 'bench-noop', 'mainnet', 'PRIORITY_CLASS_NORMAL', 'mainnet.bench-noop',"
        " decode(md5('o' || i), 'hex'), md5('o' || i), now() - interval '2 hours',"
        " now() - interval '1 hour',"
        " now() - interval '31 seconds' - interval '1 second' * (i % 3569),"
        " CASE WHEN i % 3 = 0 THEN 0 ELSE 1 END, CASE WHEN i % 3 = 0 THEN NULL ELSE 'node-7' END,"
        " NULL, NULL, NULL, NULL, 'overdue-' || i, NULL, NULL"
        " FROM generate_series(1, $2) AS i",
        spec,
        args.overdue,
    )
    await step(
        "their open attempts",
        "INSERT INTO attempts (job_id, attempt, node_id, scheduler_id, outcome, dispatched_at,"
        " started_at) SELECT job_id, 1, node_id, 'sched-1', state, updated_at,"
        " CASE WHEN state = 'RUNNING' THEN updated_at END FROM jobs"
        " WHERE state IN ('DISPATCHED', 'RUNNING')",
    )
    await step("VACUUM ANALYZE", "VACUUM ANALYZE jobs, attempts")
    return steps


async def explain(
    conn: asyncpg.Connection, sql: str, *, generic_params: str = ""
) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of ``sql`` in a transaction rolled back (FOR UPDATE takes
    locks). With ``generic_params`` (``"(v1, v2)"``), ``sql`` has parameters and runs as a
    prepared statement forced to a generic plan, as PostgreSQL may choose after five
    executions of a prepared statement."""
    tr = conn.transaction()
    await tr.start()
    try:
        if generic_params:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE probe AS {sql}")
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE probe{generic_params}")
        else:
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
    finally:
        await tr.rollback()  # also deallocates nothing: PREPARE is session state
        if generic_params:
            await conn.execute("DEALLOCATE probe")
    text = [r[0] for r in rows]
    executed = [line for line in text if line.startswith("Execution Time:")]
    return {
        "execution_ms": float(executed[0].split()[2]) if executed else None,
        "uses_index": sorted(set(_INDEX.findall("\n".join(text)))),
        "text": text,
    }


_INDEX = re.compile(
    r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)"
)


def ms_summary(values: list[float]) -> dict[str, Any]:
    return {
        "calls": len(values),
        "first_5_ms": [round(v, 2) for v in values[:5]],
        "median_after_5_ms": round(statistics.median(values[5:]), 2) if values[5:] else None,
        "max_ms": round(max(values), 2) if values else 0.0,
    }


async def plan_choices(pool: asyncpg.Pool, marker: str) -> list[dict[str, Any]]:
    """How often PostgreSQL planned the pool connection's prepared statements containing
    ``marker`` generically and custom (the pool has one connection, so it is the one the
    store's calls used)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE '%' || $1 || '%' AND statement NOT LIKE 'EXPLAIN%'",
            marker,
        )
    return [
        {
            "statement": r["statement"][:70],
            "generic": r["generic_plans"],
            "custom": r["custom_plans"],
        }
        for r in rows
    ]


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    name = "fw_reaper_" + secrets.token_hex(4)
    dsn = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": name,
        "rows": args.rows,
        "live_future": args.live,
        "lapsed_unpublished": args.lapsed,
        "inflight_claims": INFLIGHT_CLAIMS,
        "overdue": args.overdue,
        "load_average_at_start": list(os.getloadavg()),
    }
    say(f"scratch database {name}")
    pool = await open_pool(PostgresSettings(dsn=SecretStr(dsn), pool_min=1, pool_max=1))
    try:
        async with pool.acquire() as conn:
            results["fill_s"] = await fill(conn, args)
            results["jobs_by_state"] = {
                r["state"]: r["n"]
                for r in await conn.fetch("SELECT state, count(*) AS n FROM jobs GROUP BY 1")
            }
            results["table_mb"] = {
                r["relname"]: round(r["bytes"] / 2**20, 1)
                for r in await conn.fetch(
                    "SELECT c.relname, pg_relation_size(c.oid) AS bytes FROM pg_class c"
                    " WHERE c.relname IN ('jobs', 'attempts', 'jobs_live_deadline_idx',"
                    " 'jobs_unpublished_idx', 'jobs_pkey', 'jobs_live_idx')"
                )
            }
            say("plans of the reaper's SELECT")
            results["reaper_plan"] = await explain(conn, REAPER_SELECT)
            results["reaper_generic_plan"] = await explain(
                conn,
                REAPER_PREPARED,
                generic_params=f"({_LIVE}, '30 seconds'::interval, {REAP_BATCH})",
            )
            say("plans of the relay's SELECT")
            results["relay_plan"] = await explain(conn, RELAY_SELECT)
            results["relay_generic_plan"] = await explain(
                conn, RELAY_PREPARED, generic_params=f"(ARRAY[]::uuid[], {RELAY_BATCH})"
            )

        say("reaper: expire_overdue until nothing is overdue")
        store = DeadlineStore(pool)
        sweeps: list[dict[str, float]] = []
        while True:
            began = time.perf_counter()
            reaped = await store.expire_overdue(GRACE, REAP_BATCH)
            sweeps.append(
                {"closed": len(reaped or []), "ms": round((time.perf_counter() - began) * 1000, 2)}
            )
            if not reaped:
                break
        idle = []
        for _ in range(IDLE_CALLS):
            began = time.perf_counter()
            await store.expire_overdue(GRACE, REAP_BATCH)
            idle.append((time.perf_counter() - began) * 1000)
        results["reaper_sweeps"] = sweeps
        results["reaper_idle"] = ms_summary(idle)
        results["reaper_plan_choices"] = await plan_choices(pool, "WITH due AS")

        say("relay: claim_lapsed until nothing is lapsed")
        outbox = OutboxStore(pool)
        claims: list[dict[str, float]] = []
        while True:
            began = time.perf_counter()
            claimed = await outbox.claim_lapsed(uuid.uuid4(), LEASE, limit=RELAY_BATCH)
            claims.append(
                {"claimed": len(claimed), "ms": round((time.perf_counter() - began) * 1000, 2)}
            )
            if not claimed:
                break
        idle = []
        for _ in range(IDLE_CALLS):
            began = time.perf_counter()
            await outbox.claim_lapsed(uuid.uuid4(), LEASE, limit=RELAY_BATCH)
            idle.append((time.perf_counter() - began) * 1000)
        results["relay_claims"] = claims
        results["relay_idle"] = ms_summary(idle)
        results["relay_plan_choices"] = await plan_choices(pool, "publish_due_at < now()")

        async with pool.acquire() as conn:
            results["expired_after"] = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE error_reason = 'DEADLINE_PASSED'"
            )
            results["open_attempts_after"] = await conn.fetchval(
                "SELECT count(*) FROM attempts a JOIN jobs j USING (job_id)"
                " WHERE j.state = 'EXPIRED' AND a.outcome IN ('DISPATCHED', 'RUNNING')"
            )
            # What the partial index buys: the same SELECT without it. Put the overdue jobs
            # back first, so there is something to find.
            await conn.execute(
                "UPDATE jobs SET state = 'QUEUED', error_reason = NULL, error_message = NULL"
                " WHERE error_reason = 'DEADLINE_PASSED'"
            )
            await conn.execute("ANALYZE jobs")
            results["reaper_plan_again"] = await explain(conn, REAPER_SELECT)
            await conn.execute("DROP INDEX jobs_live_deadline_idx")
            results["reaper_plan_without_index"] = await explain(conn, REAPER_SELECT)
    finally:
        await pool.close()
        admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        say(f"dropped {name}")
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def report(r: dict[str, Any]) -> str:
    lines = [
        f"jobs: {r['rows']:,} rows {r['jobs_by_state']}; sizes (MiB) {r['table_mb']}",
        f"fill: {r['fill_s']}",
    ]
    for key, title in (
        ("reaper_plan", "reaper SELECT, values inlined (custom plan)"),
        ("reaper_generic_plan", "reaper SELECT, generic plan"),
        ("reaper_plan_again", "reaper SELECT again, after the sweeps (jobs put back)"),
        ("reaper_plan_without_index", "reaper SELECT without jobs_live_deadline_idx"),
        ("relay_plan", "relay SELECT, values inlined (custom plan)"),
        ("relay_generic_plan", "relay SELECT, generic plan"),
    ):
        plan = r[key]
        lines.append(
            f"\n{title}: {plan['execution_ms']} ms, indexes {plan['uses_index'] or 'none'}"
        )
        lines.extend(f"    {t}" for t in plan["text"])
    sweeps = r["reaper_sweeps"]
    lines.append(
        "\nexpire_overdue(30 s, 500): "
        + ", ".join(f"{s['closed']} in {s['ms']} ms" for s in sweeps)
        + f"; idle (nothing overdue) {r['reaper_idle']}"
    )
    lines.append(
        f"  closed {r['expired_after']} jobs; open attempts left on them {r['open_attempts_after']}"
    )
    lines.append(f"  plans of its prepared statement: {r['reaper_plan_choices']}")
    claims = r["relay_claims"]
    lines.append(
        "claim_lapsed(200): "
        + ", ".join(f"{c['claimed']} in {c['ms']} ms" for c in claims)
        + f"; idle (nothing lapsed) {r['relay_idle']}"
    )
    lines.append(f"  plans of its prepared statement: {r['relay_plan_choices']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=50_000)
    parser.add_argument("--overdue", type=int, default=2_000)
    parser.add_argument("--lapsed", type=int, default=500)
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    results = asyncio.run(measure(args))
    print()
    print(report(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
