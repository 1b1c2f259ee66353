"""Kill sweep (issue 13): one mesh component SIGKILLed in the middle of 600 submits and
restarted 3 s later; what PostgreSQL says afterwards. Prints a table; asserts nothing
(docs/benchmarks.md, "Kill sweep", has the results).

    python -m bench.kill_sweep [--runs N] [--only bridge|scheduler|node|none] [--settle 180]
                               [--keep-logs] [--out FILE.json]

Each run is a mesh of its own (namespace, database, queues, Redis keys, free ports; all
removed at the end, as ``bench/run.py`` does): a bridge, a scheduler and one bench node
(``bench.bench_node``, 16 slots) as real processes (``bench/processes.py``), default
settings otherwise. Clients submit 600 jobs: 300 single ``Submit`` (mode POLLING: the
answer is the acceptance) and 3 ``SubmitBatch`` of 100 among them, 20 calls in flight,
every call with a ``client_request_id`` and retried with the same id on UNAVAILABLE,
DEADLINE_EXCEEDED or CANCELLED (a connection that died under the call) after 50 ms, on
channels whose reconnect backoff is 50-200 ms (grpc's default, 1 s doubling to 120 s,
would measure the client's patience). Once 320 distinct jobs were told to clients, the
component's process is SIGKILLed; it is started again (same ports, node id and key) 3 s
later. Then the run waits until every job row of the run is terminal (``--settle`` s at
most) and reads the row of the table from PostgreSQL:

- accepted: distinct job ids the clients were told;
- SUCCEEDED: of those, how many are SUCCEEDED (other states are listed);
- stuck: rows of the run (told or not) still live after the wait, with their ids, rows,
  attempts and the log lines that name them;
- doubled: jobs with more than one SUCCEEDED attempt; double-billed: jobs with more than
  one JOB_CHARGE ledger entry; ledger sum: the sum of all ledger amounts (double entry: 0);
- untold rows: job rows no client was told about (a retry that made a second job);
- submit wall time (first call to last answer) and the longest a request took (first try
  to answer, retries included).

The process logs are kept (and their folder printed) when a run finds a stuck, doubled or
untold job, a told job not SUCCEEDED, a request that failed or a try that ran into its
deadline (or with ``--keep-logs``); otherwise they are removed with the rest. Each try
carries ``x-request-id: <client_request_id>.<try>``, the ``request_id`` of the bridge's log
lines about it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.kill_sweep_clients import Told, submit_all, utc_now
from bench.kill_sweep_report import Row, details, plain, table
from bench.processes import Mesh, cleanup_namespace, wait_for_nodes, wait_for_port

COMPONENTS = ("scheduler", "node", "bridge")
DEFAULT_RUNS = {"scheduler": 3, "node": 1, "bridge": 2}
KILL_AT = 320  # distinct jobs told to clients
RESTART_AFTER_S = 3.0
SLOTS = 16
NODE_ID = "node-1"
TERMINAL = ("SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED", "DEAD_LETTERED")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class SweepRun:
    def __init__(self, component: str, run: int, settle_s: float, keep_logs: bool) -> None:
        self.component = component
        self.settle_s = settle_s
        self.keep_logs = keep_logs
        self.namespace = "k" + secrets.token_hex(4)
        self.work = Path(tempfile.mkdtemp(prefix=f"fleetwire-killsweep-{self.namespace}-"))
        self.mesh = Mesh(self.namespace, self.work)
        self.row = Row(component, run, self.namespace)

    @property
    def dsn(self) -> str:
        return self.mesh.env["FLEETWIRE_POSTGRES_DSN"]

    def start(self, name: str) -> None:
        if name == "scheduler":
            self.mesh.start_module("scheduler", "scheduler")
        elif name == "bridge":
            self.mesh.start_module("bridge", "broker_bridge")
        else:
            self.mesh.start_bench_node(NODE_ID, slots=SLOTS)

    def kill(self, name: str) -> None:
        process = self.mesh.children.pop(NODE_ID if name == "node" else name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    async def run(self) -> Row:
        say(f"{self.component} run {self.row.run}: namespace {self.namespace}, logs in {self.work}")
        keep = self.keep_logs
        try:
            self.start("scheduler")
            self.start("bridge")
            await wait_for_port(self.mesh.scheduler_address)
            await wait_for_port(self.mesh.bridge_address)
            self.start("node")
            await wait_for_nodes(self.mesh, {NODE_ID})
            await self.load()
            await self.settle()
            await self.read_back()
            keep = keep or bool(self.row.stuck or self.row.doubled or self.row.untold_rows)
            keep = keep or self.row.succeeded != self.row.accepted or bool(self.row.failed_requests)
            keep = keep or bool(self.row.timed_out_tries)
            if keep:
                await asyncio.to_thread(self.log_lines_of_bad_jobs)
        finally:
            self.mesh.stop_all()
            await cleanup_namespace(self.namespace)
            if keep:
                self.row.logs_kept_in = str(self.work)
                say(f"logs kept in {self.work}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)
        return self.row

    async def load(self) -> None:
        told = Told()
        started = time.monotonic()
        submitting = asyncio.create_task(submit_all(self.mesh.bridge_address, told, self.namespace))
        while self.component != "none" and not submitting.done() and len(told.distinct) < KILL_AT:
            await asyncio.wait([submitting], timeout=0.005)
        row = self.row
        if self.component == "none":
            pass  # the control: nothing is killed
        elif submitting.done():
            say(f"all answered before {KILL_AT} were told ({len(told.distinct)}); no kill")
        else:
            row.accepted_at_kill = len(told.distinct)
            await asyncio.to_thread(self.kill, self.component)
            row.killed_at_s = time.monotonic() - started
            say(
                f"SIGKILLed {self.component} at {row.accepted_at_kill} accepted "
                f"({utc_now()}, {row.killed_at_s:.2f} s into the submits)"
            )
            await asyncio.sleep(RESTART_AFTER_S)
            self.start(self.component)
            if self.component == "bridge":
                await wait_for_port(self.mesh.bridge_address)
            elif self.component == "scheduler":
                await wait_for_port(self.mesh.scheduler_address)
            row.back_at_s = time.monotonic() - started
            say(f"{self.component} restarted ({utc_now()})")
        await submitting
        row.submit_wall_s = time.monotonic() - started
        self.started = started
        self.told = told
        row.accepted = len(told.distinct)
        seconds = list(told.seconds.values())
        row.max_request_s = max(seconds, default=0.0)
        row.max_request_id = max(told.seconds, key=told.seconds.__getitem__, default="")
        row.max_request_tries = told.tries.get(row.max_request_id, [])
        row.timed_out_tries = {rid: told.tries[rid] for rid in sorted(told.timed_out)}
        row.median_request_s = statistics.median(seconds) if seconds else 0.0
        row.refused_calls = dict(told.refused)
        row.failed_requests = dict(told.failed)
        say(
            f"submitted: {row.accepted} accepted in {row.submit_wall_s:.1f} s, "
            f"refused calls {told.refused}, failed requests {len(told.failed)}"
        )

    async def settle(self) -> None:
        """Waits until every job row of the run is terminal, ``settle_s`` at most (the
        killed component's own restart and the mesh's recovery included)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            deadline = time.monotonic() + self.settle_s
            while True:
                live = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE NOT (state = ANY($1::text[]))", list(TERMINAL)
                )
                if live == 0:
                    self.row.all_terminal_s = round(time.monotonic() - self.started, 1)
                    return
                if time.monotonic() >= deadline:
                    say(f"{live} jobs still live after {self.settle_s:.0f} s")
                    return
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

    async def read_back(self) -> None:
        row, told = self.row, self.told
        ids = [uuid.UUID(j) for j in told.distinct]
        conn = await asyncpg.connect(self.dsn)
        try:
            states = {
                r["state"]: r["n"]
                for r in await conn.fetch(
                    "SELECT state, count(*) AS n FROM jobs WHERE job_id = ANY($1::uuid[])"
                    " GROUP BY state",
                    ids,
                )
            }
            missing = len(ids) - sum(states.values())
            row.succeeded = states.pop("SUCCEEDED", 0)
            row.other_states = {**states, **({"no row": missing} if missing else {})}
            untold = await conn.fetch(
                "SELECT state, count(*) AS n FROM jobs WHERE NOT (job_id = ANY($1::uuid[]))"
                " GROUP BY state",
                ids,
            )
            row.untold_states = {r["state"]: r["n"] for r in untold}
            row.untold_rows = sum(row.untold_states.values())
            # The whole row but its payloads, so the query fits every schema version (the
            # publish_claim / publish_due_at columns came with migration 0007).
            stuck = await conn.fetch(
                "SELECT job_id, to_jsonb(j) - 'spec' - 'output' - 'signature' - 'public_key'"
                " - 'request_digest' - 'submit_digest' AS row FROM jobs j"
                " WHERE NOT (state = ANY($1::text[])) ORDER BY created_at",
                list(TERMINAL),
            )
            row.stuck = len(stuck)
            for r in stuck:
                attempts = await conn.fetch(
                    "SELECT attempt, node_id, scheduler_id, outcome, dispatched_at, started_at,"
                    " ended_at, error_reason FROM attempts WHERE job_id = $1 ORDER BY attempt",
                    r["job_id"],
                )
                row.stuck_jobs.append(
                    {
                        **json.loads(r["row"]),
                        "told": str(r["job_id"]) in told.distinct,
                        "attempts": [plain(a) for a in attempts],
                    }
                )
            doubled = await conn.fetch(
                "SELECT job_id, count(*) AS n FROM attempts WHERE outcome = 'SUCCEEDED'"
                " GROUP BY job_id HAVING count(*) > 1"
            )
            row.doubled = len(doubled)
            for r in doubled:
                attempts = await conn.fetch(
                    "SELECT attempt, node_id, scheduler_id, outcome, dispatched_at, ended_at"
                    " FROM attempts WHERE job_id = $1 ORDER BY attempt",
                    r["job_id"],
                )
                row.doubled_jobs.append(
                    {"job_id": str(r["job_id"]), "attempts": [plain(a) for a in attempts]}
                )
            row.double_billed = await conn.fetchval(
                "SELECT count(*) FROM (SELECT job_id FROM ledger_entries WHERE kind = 'JOB_CHARGE'"
                " GROUP BY job_id HAVING count(*) > 1) t"
            )
            row.billed = await conn.fetchval(
                "SELECT count(DISTINCT job_id) FROM ledger_entries WHERE kind = 'JOB_CHARGE'"
            )
            row.ledger_sum = int(
                await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM ledger_entries")
            )
        finally:
            await conn.close()
        row.retried_requests = len(told.retried)

    def log_lines_of_bad_jobs(self) -> None:
        """Prints the log lines naming each stuck or doubled job."""
        bad = [j["job_id"] for j in self.row.stuck_jobs] + [
            j["job_id"] for j in self.row.doubled_jobs
        ]
        logs = sorted(self.work.glob("*.log"))
        for job_id in bad[:10]:
            print(f"--- log lines naming {job_id}")
            for path in logs:
                for line in path.read_text(errors="replace").splitlines():
                    if job_id in line:
                        print(f"{path.name}: {line[:400]}")


async def sweep(plan: list[tuple[str, int]], settle_s: float, keep_logs: bool) -> list[Row]:
    rows = []
    for component, run in plan:
        rows.append(await SweepRun(component, run, settle_s, keep_logs).run())
        print(table(rows[-1:]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="runs per component (default 3/1/2)")
    parser.add_argument(
        "--only",
        choices=[*COMPONENTS, "none"],
        action="append",
        help="repeatable; none: a control run that kills nothing",
    )
    parser.add_argument("--settle", type=float, default=180.0, help="most seconds to wait")
    parser.add_argument("--keep-logs", action="store_true", help="keep every run's logs")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    plan = [
        (component, n)
        for component in (args.only or COMPONENTS)
        for n in range(1, (args.runs or DEFAULT_RUNS.get(component, 1)) + 1)
    ]
    began = datetime.now(UTC)
    rows = asyncio.run(sweep(plan, args.settle, args.keep_logs))
    print(
        f"\nkill sweep, {began.isoformat(timespec='seconds')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(table(rows))
    print()
    for r in rows:
        print(details(r))
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {"started_at": began.isoformat(), "rows": [asdict(r) for r in rows]},
                indent=2,
                default=str,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
