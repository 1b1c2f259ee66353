"""Two of each: two bridges and two schedulers, each on a host of its own, serving one mesh
at once; one bridge and then one scheduler SIGKILLed while clients submit.

Hosts are network namespaces (``tests.support.netns``), every link TLS verified by name.
Clients (in the root namespace) are spread over the bridges, a channel per bridge; a
client whose Submit fails with a retryable code sends it again, same client request id, to
the other bridge (a fail-over). Four nodes (``tests.support.slow_node``: real node agents,
a token every 0.25 s) are spread over the schedulers: each dials a gRPC target listing both
schedulers' addresses, its own first (pick_first takes the first that answers), and
verifies the certificate for the name both schedulers share. So when a scheduler dies, its
nodes' next dial reaches the other one; the killed processes are not restarted.

The books at the end: every request id a client sent made one job, the one it was told
of; each SUCCEEDED with one successful attempt and two ledger entries; no other row.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest

from fleetwire.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support.eventually import eventually
from tests.support.net_mesh import (
    BRIDGE_PORT,
    SCHEDULER_PORT,
    NetMesh,
    all_succeeded,
    books,
    jobs_of_requests,
    open_net_mesh,
    spec,
)
from tests.support.netns import DOMAIN

LEASE_S = 5
BRIDGES = ("bridge-1", "bridge-2")
SCHEDULERS = ("sched-1", "sched-2")
NODES = {"node-a": 0, "node-b": 1, "node-c": 0, "node-d": 1}  # node → its first scheduler
SCHEDULERS_NAME = f"schedulers.{DOMAIN}"  # on both schedulers' certificates
CLIENTS = 6
JOB_TOKENS = 4  # 1 s on a slow node: jobs are running whenever a scheduler dies
PACE_S = 0.3  # between a client's Submits: about 20 jobs/s, below the nodes' 32 slots/s
STEP = 40  # answers between the phases (before, after the bridge kill, after the scheduler's)
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)


@pytest.fixture(scope="module")
def mesh(
    run_id: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[NetMesh]:
    work = tmp_path_factory.mktemp("two-of-each")
    with open_net_mesh(run_id, work, request, lease_s=LEASE_S) as mesh:
        for name in (*SCHEDULERS, *BRIDGES, *NODES):
            mesh.net.add_host(name)
        schedulers = [
            mesh.start(
                name,
                "scheduler",
                {"FLEETWIRE_SCHEDULER_SCHEDULER_ID": name},
                names=(SCHEDULERS_NAME,),
            )
            for name in SCHEDULERS
        ]
        bridges = [
            mesh.start(
                name,
                "broker_bridge",
                {
                    "FLEETWIRE_POSTGRES_COMMAND_TIMEOUT": "3",
                    "FLEETWIRE_RABBITMQ_PUBLISH_TIMEOUT": "3",
                    # A job the killed bridge wrote but did not publish is published by the
                    # other's outbox relay after this lease.
                    "FLEETWIRE_BRIDGE_OUTBOX_LEASE": "2",
                },
            )
            for name in BRIDGES
        ]
        for service in schedulers:
            service.wait_listening(SCHEDULER_PORT)
        for service in bridges:
            service.wait_listening(BRIDGE_PORT)
        addresses = [f"{mesh.host(s).address}:{SCHEDULER_PORT}" for s in SCHEDULERS]
        for node, first in NODES.items():
            ordered = addresses[first:] + addresses[:first]
            mesh.start(
                node,
                "tests.support.slow_node",
                {
                    "FLEETWIRE_NODE_NODE_ID": node,
                    "FLEETWIRE_NODE_KEY_FILE": str(work / f"{node}.key"),
                    "FLEETWIRE_NODE_SCHEDULER_ADDRESS": "ipv4:" + ",".join(ordered),
                    "FLEETWIRE_NODE_SERVER_NAME": SCHEDULERS_NAME,
                },
            )

        async def spread() -> bool:
            return await placement(mesh) == {n: SCHEDULERS[f] for n, f in NODES.items()}

        asyncio.run(eventually(spread, within=60, what="two nodes on each scheduler"))
        yield mesh


async def placement(mesh: NetMesh) -> dict[str, str]:
    """Each connected node's scheduler, as the mesh's presence says (asked of sched-2's
    admin port: the one that survives)."""
    return {n: view.scheduler_id for n, view in (await mesh.connected_nodes("sched-2")).items()}


@dataclass
class Clients:
    """``CLIENTS`` clients submitting until stopped, client ``i`` first to bridge
    ``i % 2``; a retryable refusal sends the same request to the other bridge."""

    stubs: list[job_service_pb2_grpc.JobServiceStub]
    answered: dict[str, str] = field(default_factory=dict)  # request id → job id
    by_bridge: list[int] = field(default_factory=lambda: [0] * len(BRIDGES))
    refused: dict[str, int] = field(default_factory=dict)
    resubmits: int = 0  # calls sent again (same request id) after a retryable refusal
    failovers: int = 0  # requests answered by another bridge than the one first asked
    recovery_seconds: list[float] = field(default_factory=list)  # first refusal → answer
    submit_seconds: list[float] = field(default_factory=list)  # each answered call
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, index: int) -> None:
        bridge = index % len(self.stubs)
        while not self.stop.is_set():
            request = job_service_pb2.SubmitRequest(job=spec(JOB_TOKENS))
            first_asked = bridge
            refused_at: float | None = None
            while True:
                sent = time.monotonic()
                try:
                    reply = await self.stubs[bridge].Submit(request, timeout=10)
                except grpc.aio.AioRpcError as err:
                    if err.code() not in RETRYABLE:
                        raise
                    self.refused[err.code().name] = self.refused.get(err.code().name, 0) + 1
                    refused_at = refused_at or sent
                    bridge = (bridge + 1) % len(self.stubs)
                    self.resubmits += 1
                    await asyncio.sleep(0.05)
                    continue
                break
            done = time.monotonic()
            self.submit_seconds.append(done - sent)
            if refused_at is not None:
                self.recovery_seconds.append(done - refused_at)
            self.answered[request.job.client_request_id] = reply.job.job_id
            self.by_bridge[bridge] += 1
            self.failovers += bridge != first_asked
            await asyncio.sleep(PACE_S)

    async def run(self) -> None:
        await asyncio.gather(*(self.client(i) for i in range(CLIENTS)))


async def attempts_by_scheduler(
    dsn: str, job_ids: list[str], killed: str, killed_at: float
) -> tuple[int, int]:
    """Attempts of ``killed`` that were LOST, and those it started that ended SUCCEEDED
    after its death (re-attached by the other scheduler when the node reconnected)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE outcome = 'LOST') AS lost,"
            " count(*) FILTER (WHERE outcome = 'SUCCEEDED'"
            "   AND ended_at > to_timestamp($3)) AS reattached"
            " FROM attempts WHERE job_id = ANY($1::uuid[]) AND scheduler_id = $2",
            [uuid.UUID(j) for j in job_ids],
            killed,
            killed_at,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["lost"]), int(row["reattached"])


async def every_job(dsn: str) -> dict[str, str]:
    """Every job row of the mesh (its database is this module's): job id → request id."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT job_id::text AS job, client_request_id AS request FROM jobs"
        )
    finally:
        await conn.close()
    return {r["job"]: r["request"] for r in rows}


async def test_a_bridge_and_a_scheduler_sigkilled_lose_and_double_nothing(
    mesh: NetMesh,
) -> None:
    dsn = mesh.dsn
    channels = [mesh.channel(mesh.host(b), BRIDGE_PORT) for b in BRIDGES]
    clients = Clients([job_service_pb2_grpc.JobServiceStub(c) for c in channels])
    submitting = asyncio.create_task(clients.run())

    async def answered(more: int, what: str) -> None:
        """Waits for ``more`` answers; a client's unexpected error ends the test here."""
        target = len(clients.answered) + more

        def enough() -> bool:
            if submitting.done():
                submitting.result()
            return len(clients.answered) >= target

        await eventually(enough, within=60, what=what)

    try:
        await answered(STEP, "answers from both bridges")
        assert all(clients.by_bridge), f"both bridges answered: {clients.by_bridge}"
        on_killed_before = clients.by_bridge[0]
        mesh.services["bridge-1"].kill()
        bridge_killed = time.monotonic()
        await answered(STEP, "answers after the bridge's kill")
        assert clients.by_bridge[0] - on_killed_before <= CLIENTS, "bridge-1 is dead"

        moving = {n for n, f in NODES.items() if f == 0}
        accepted_before = list(clients.answered.values())
        mesh.services["sched-1"].kill()
        scheduler_killed, scheduler_killed_wall = time.monotonic(), time.time()

        async def moved() -> bool:
            return await placement(mesh) == dict.fromkeys(NODES, "sched-2")

        await eventually(moved, within=60, interval=0.2, what="sched-1's nodes on sched-2")
        nodes_moved_after = time.monotonic() - scheduler_killed
        await all_succeeded(dsn, accepted_before, within=60)
        earlier_jobs_done_after = time.monotonic() - scheduler_killed
        await answered(STEP, "answers after the scheduler's kill")
    finally:
        clients.stop.set()
        await asyncio.gather(submitting, return_exceptions=True)
        for channel in channels:
            await channel.close()
    jobs = list(clients.answered.values())
    await all_succeeded(dsn, jobs, within=90)
    outcome = await books(dsn, jobs)
    made = await jobs_of_requests(dsn, list(clients.answered))
    rows = await every_job(dsn)
    lost, reattached = await attempts_by_scheduler(dsn, jobs, "sched-1", scheduler_killed_wall)
    print(
        f"two of each: {outcome.line(len(jobs))}; answered by bridge {clients.by_bridge};"
        f" refused {clients.refused}, resubmits {clients.resubmits},"
        f" failovers {clients.failovers}; a refused request answered"
        f" {max(clients.recovery_seconds, default=0):.2f} s at most after its first refusal;"
        f" Submit median {statistics.median(clients.submit_seconds):.3f} s,"
        f" max {max(clients.submit_seconds):.2f} s; sched-1's nodes {sorted(moving)} on"
        f" sched-2 {nodes_moved_after:.1f} s after its kill (the bridge's"
        f" {scheduler_killed - bridge_killed:.1f} s before); sched-1's attempts LOST {lost},"
        f" finished after its death {reattached}; the {len(accepted_before)} jobs accepted"
        f" before its kill all SUCCEEDED {earlier_jobs_done_after:.1f} s after it;"
        f" job rows {len(rows)}"
    )
    assert clients.failovers >= 1, "a client failed over from the killed bridge"
    assert set(clients.refused) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
    outcome.assert_each_succeeded_once(jobs)
    assert made == {r: [job] for r, job in clients.answered.items()}, "one job per request id"
    assert rows == {job: r for r, job in clients.answered.items()}, "no job no one was told of"
    assert lost + reattached >= 1, "sched-1 had jobs running when it was killed"
