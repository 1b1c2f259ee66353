"""RabbitMQ or PostgreSQL stopped and restarted during a stream of submits, with a scheduler
and a node working: every Submit either returned a job that later SUCCEEDED exactly once
(never double-finalised or double-billed), or returned UNAVAILABLE and left nothing
behind. Each service is brought back with the project's own start-up script."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc

from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.faults.conftest import SchedulerProcess
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running

ROOT = Path(__file__).resolve().parents[2]


def spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=3)
    )


async def run(command: list[str]) -> None:
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True, timeout=300)


def refuses(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:``port`` any more."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def stopped(port: int, service: str) -> None:
    """Waits until the stopped service's port refuses connections, so that the start-up
    script cannot take a service still shutting down for one that answers."""
    await eventually(lambda: refuses(port), within=60, what=f"{service} to stop listening")


async def restart_rabbitmq() -> None:
    await run(["rabbitmqctl", "stop"])
    await stopped(5672, "RabbitMQ")
    await run([str(ROOT / "scripts" / "ensure-services.sh")])


def cluster_version() -> str:
    """The installed PostgreSQL major version (Debian's cluster layout)."""
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]


async def restart_postgresql() -> None:
    version = await asyncio.to_thread(cluster_version)
    await run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "fast"])
    await stopped(5432, "PostgreSQL")
    await run([str(ROOT / "scripts" / "ensure-services.sh")])


@dataclass
class Outcome:
    accepted: list[str]
    refused: int
    unexpected: list[grpc.StatusCode]
    accepted_before_restart: int
    states: dict[str, int]
    finalised_twice: int
    billed: int
    stray: int

    @property
    def accepted_after_restart(self) -> int:
        return len(self.accepted) - self.accepted_before_restart


async def submits_across(
    restart: Callable[[], Awaitable[None]],
    jobs: job_service_pb2_grpc.JobServiceStub,
    replica: SchedulerProcess,
    node_id: str,
    settings: Settings,
) -> Outcome:
    """Submits in a loop while ``restart`` runs, waits for the accepted jobs, and reports
    what PostgreSQL holds afterwards."""
    node = ScriptedNode(f"127.0.0.1:{replica.port}", node_id, "scripted", lambda _n: "ok")
    accepted: list[str] = []
    refused = 0
    unexpected: list[grpc.StatusCode] = []
    stop = asyncio.Event()

    async def submit_stream() -> None:
        nonlocal refused
        while not stop.is_set():
            try:
                reply = await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()), timeout=15)
                accepted.append(reply.job.job_id)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    unexpected.append(err.code())
                refused += 1
                await asyncio.sleep(0.2)  # a client backing off after UNAVAILABLE
            await asyncio.sleep(0.02)  # pacing the stream of submits

    dsn = settings.postgres.dsn.get_secret_value()
    conn = await asyncpg.connect(dsn)
    started_at = await conn.fetchval("SELECT now()")
    await conn.close()
    async with running(node):
        submitter = asyncio.create_task(submit_stream())
        try:
            await eventually(
                lambda: len(accepted) >= 10, within=60, what="submits accepted before the restart"
            )
            before = len(accepted)
            await restart()
            # The bridge and its pools reconnect: submits are accepted again (the scheduler's
            # reconnect shows in every accepted job succeeding, below).
            back = len(accepted)
            await eventually(
                lambda: len(accepted) >= back + 10,
                within=120,
                what="submits accepted again after the restart",
            )
        finally:
            stop.set()
            await submitter

        ids = [uuid.UUID(j) for j in accepted]
        conn = await asyncpg.connect(dsn)
        try:

            async def all_succeeded() -> bool:
                waiting = await conn.fetchval(
                    "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[])"
                    " AND state <> 'SUCCEEDED'",
                    ids,
                )
                return bool(waiting == 0)

            await eventually(
                all_succeeded, within=120, interval=0.2, what="every accepted job to succeed"
            )
            states = await conn.fetch(
                "SELECT state, count(*) AS n FROM jobs WHERE job_id = ANY($1::uuid[])"
                " GROUP BY state",
                ids,
            )
            finalised_twice = await conn.fetchval(
                "SELECT count(*) FROM (SELECT job_id FROM attempts WHERE job_id = ANY($1::uuid[])"
                " AND outcome = 'SUCCEEDED' GROUP BY job_id HAVING count(*) > 1) AS doubled",
                ids,
            )
            billed = await conn.fetchval(
                "SELECT count(*) FROM ledger_entries WHERE job_id = ANY($1::uuid[])", ids
            )
            stray = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE created_at >= $2"
                " AND NOT (job_id = ANY($1::uuid[]))",
                ids,
                started_at,
            )
        finally:
            await conn.close()
    print(f"accepted {len(accepted)}, refused {refused} (UNAVAILABLE)")
    return Outcome(
        accepted=accepted,
        refused=refused,
        unexpected=unexpected,
        accepted_before_restart=before,
        states={r["state"]: r["n"] for r in states},
        finalised_twice=finalised_twice,
        billed=billed,
        stray=stray,
    )


async def test_broker_restart_during_submits_loses_and_duplicates_nothing(
    jobs: job_service_pb2_grpc.JobServiceStub,
    start_scheduler: Callable[[str], SchedulerProcess],
    settings: Settings,
) -> None:
    replica = await asyncio.to_thread(start_scheduler, "sched-restart")
    outcome = await submits_across(restart_rabbitmq, jobs, replica, "steady", settings)
    assert not outcome.unexpected, f"only UNAVAILABLE may refuse a submit: {outcome.unexpected}"
    assert outcome.accepted_before_restart > 0
    assert outcome.accepted_after_restart > 0, "submits succeed again once the broker is back"
    assert outcome.states == {"SUCCEEDED": len(outcome.accepted)}
    assert outcome.finalised_twice == 0
    assert outcome.stray == 0, "a refused Submit left a job behind"


async def test_database_restart_during_submits_loses_and_doubles_nothing(
    jobs: job_service_pb2_grpc.JobServiceStub,
    start_scheduler: Callable[[str], SchedulerProcess],
    settings: Settings,
) -> None:
    replica = await asyncio.to_thread(start_scheduler, "sched-pg-restart")
    outcome = await submits_across(restart_postgresql, jobs, replica, "steady-pg", settings)
    assert not outcome.unexpected, f"only UNAVAILABLE may refuse a submit: {outcome.unexpected}"
    assert outcome.accepted_before_restart > 0
    assert outcome.accepted_after_restart > 0, "submits succeed again once the database is back"
    assert outcome.states == {"SUCCEEDED": len(outcome.accepted)}
    assert outcome.finalised_twice == 0
    assert outcome.billed == 2 * len(outcome.accepted), "each job billed exactly once"
    assert outcome.stray == 0, "a refused Submit left a job behind"
