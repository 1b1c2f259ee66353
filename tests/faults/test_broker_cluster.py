"""A three-node RabbitMQ cluster with quorum queues, and one broker node lost mid-stream.

The cluster is the project's own (``scripts/rabbitmq-cluster.sh``, started here for the
module, stopped and wiped after it). A real bridge and a real scheduler (processes) are given the
three nodes' addresses, first node first, and quorum queues; a scripted node serves the
jobs. A stream of submits, each with a client request id it keeps across retries on
UNAVAILABLE, runs while (a) the node the bridge and scheduler are connected to is
SIGKILLed and later restarted, and (b) the node leading the route's queue is partitioned
from the other two (it pauses: pause_minority) and later healed. Each ends with the books
of the network-cut tests: every accepted job SUCCEEDED, one successful attempt each, two
ledger entries each (debit and credit), one job per request id and nothing else created.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest

from fleetwire.messaging.topology import Topology
from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.conftest import free_port
from tests.support import net_mesh
from tests.support.broker_cluster import BrokerCluster, cluster_available
from tests.support.eventually import eventually, eventually_sync
from tests.support.scripted_node import ScriptedNode, running

pytestmark = pytest.mark.skipif(
    not cluster_available(), reason="Debian's rabbitmq-server is not installed"
)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
SUBMITS_BEFORE_FAULT = 15
SUBMITS_DURING_FAULT = 10
SUBMITS_AFTER_FAULT = 10
FAULT_HOLD_S = 5.0  # how long the node stays dead or cut off


@pytest.fixture(scope="module")
def cluster() -> Iterator[BrokerCluster]:
    cluster = BrokerCluster()
    took = cluster.start()
    print(f"rabbitmq cluster up in {took:.1f} s")
    yield cluster
    cluster.reset()  # stopped, and its data gone: every run starts from a fresh cluster


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class ClusterMesh:
    bridge: Service
    scheduler: Service
    env: dict[str, str]


@pytest.fixture
def cluster_mesh(
    cluster: BrokerCluster,
    mesh_env: dict[str, str],
    run_id: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[ClusterMesh]:
    """A bridge and a scheduler (processes) on the cluster with quorum queues, a namespace
    of this test's own; all three nodes up before they start."""
    cluster.start()  # idempotent: brings back a node an earlier test left down
    env = {
        **os.environ,
        **mesh_env,
        "FLEETWIRE_NAMESPACE": f"{run_id}q{uuid.uuid4().hex[:6]}",
        "FLEETWIRE_RABBITMQ_URL": cluster.urls(),
        "FLEETWIRE_RABBITMQ_QUEUE_TYPE": "quorum",
        "FLEETWIRE_RABBITMQ_MANAGEMENT_URL": "",
        "FLEETWIRE_RABBITMQ_PUBLISH_TIMEOUT": "3",
        "FLEETWIRE_BRIDGE_OUTBOX_LEASE": "2",
        "FLEETWIRE_SCHEDULER_LEASE": "30",
    }
    started: dict[str, Service] = {}
    for name, module, port_var in (
        ("scheduler", "scheduler", "FLEETWIRE_SCHEDULER_PORT"),
        ("bridge", "broker_bridge", "FLEETWIRE_BRIDGE_PORT"),
    ):
        port = free_port()
        log = tmp_path / f"{name}.log"
        extra = {port_var: str(port)}
        if name == "scheduler":
            extra["FLEETWIRE_SCHEDULER_ADMIN_PORT"] = str(free_port())
            extra["FLEETWIRE_SCHEDULER_SCHEDULER_ID"] = f"sched-{request.node.name[-8:]}"
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**env, **extra},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        started[name] = Service(name, port, process, log)
        eventually_sync(lambda p=port, pr=process: _listening(p, pr), within=60, what=f"the {name}")
    yield ClusterMesh(started["bridge"], started["scheduler"], env)
    for service in started.values():
        service.stop()
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        for service in started.values():
            text = service.log.read_text(errors="replace")[-12000:]
            print(f"===== {service.name} =====\n{text}")


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"exited with {process.returncode}")
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def spec(request_id: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted",
        prompt="quorum",
        client_request_id=request_id,
        sampling=job_pb2.SamplingParams(max_tokens=3),
    )


@dataclass
class SubmitStream:
    """Submits one job at a time, each retried with its request id until accepted."""

    jobs: job_service_pb2_grpc.JobServiceStub
    accepted: dict[str, str] = field(default_factory=dict)  # request id -> job id
    retried: int = 0
    unexpected: list[grpc.StatusCode] = field(default_factory=list)
    last_refusal: float = 0.0
    first_refusal: float = 0.0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            request_id = uuid.uuid4().hex
            while not self.stop.is_set():
                try:
                    reply = await self.jobs.Submit(
                        job_service_pb2.SubmitRequest(job=spec(request_id)), timeout=10
                    )
                except grpc.aio.AioRpcError as err:
                    if err.code() not in RETRYABLE:
                        self.unexpected.append(err.code())
                    self.retried += 1
                    self.last_refusal = time.monotonic()
                    self.first_refusal = self.first_refusal or self.last_refusal
                    await asyncio.sleep(0.2)
                    continue
                self.accepted[request_id] = reply.job.job_id
                break
            await asyncio.sleep(0.05)


@dataclass
class Books:
    jobs: net_mesh.Books  # states, finalisations and ledger entries of the accepted jobs
    jobs_per_request: dict[str, int]
    stray: int


async def books(dsn: str, stream: SubmitStream, since: object) -> Books:
    """The accepted jobs' books (``net_mesh.books``), jobs per request id, and jobs created
    since ``since`` that no client was told of."""
    jobs = await net_mesh.books(dsn, list(stream.accepted.values()))
    ids = [uuid.UUID(j) for j in stream.accepted.values()]
    conn = await asyncpg.connect(dsn)
    try:
        per_request = await conn.fetch(
            "SELECT client_request_id AS r, count(*) AS n FROM jobs"
            " WHERE client_request_id = ANY($1::text[]) GROUP BY client_request_id",
            list(stream.accepted),
        )
        stray = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE created_at >= $2 AND NOT (job_id = ANY($1::uuid[]))",
            ids,
            since,
        )
    finally:
        await conn.close()
    return Books(jobs, {r["r"]: r["n"] for r in per_request}, int(stray))


async def stream_across(
    fault: Callable[[], Awaitable[None]],
    heal: Callable[[], Awaitable[None]],
    mesh: ClusterMesh,
    label: str,
) -> None:
    """Runs the submit stream across ``fault`` … ``heal`` and checks the books."""
    dsn = mesh.env["FLEETWIRE_POSTGRES_DSN"]
    node = ScriptedNode(
        f"127.0.0.1:{mesh.scheduler.port}",
        f"node-{label.replace(' ', '-')}",
        "scripted",
        lambda _n: "ok",
    )
    conn = await asyncpg.connect(dsn)
    since = await conn.fetchval("SELECT now()")
    await conn.close()
    async with (
        running(node),
        grpc.aio.insecure_channel(f"127.0.0.1:{mesh.bridge.port}") as channel,
    ):
        stream = SubmitStream(job_service_pb2_grpc.JobServiceStub(channel))
        submitter = asyncio.create_task(stream.run())
        try:
            await eventually(
                lambda: len(stream.accepted) >= SUBMITS_BEFORE_FAULT,
                within=60,
                what="submits accepted before the fault",
            )
            fault_at = time.monotonic()
            await fault()
            before_heal = len(stream.accepted)
            await eventually(
                lambda: len(stream.accepted) >= before_heal + SUBMITS_DURING_FAULT,
                within=60,
                what="submits accepted while the broker node is gone",
            )
            recovered_s = stream.last_refusal - fault_at if stream.last_refusal >= fault_at else 0.0
            await asyncio.sleep(max(0.0, FAULT_HOLD_S - (time.monotonic() - fault_at)))
            await heal()
            after = len(stream.accepted)
            await eventually(
                lambda: len(stream.accepted) >= after + SUBMITS_AFTER_FAULT,
                within=60,
                what="submits accepted after the node is back",
            )
        finally:
            stream.stop.set()
            await submitter
        ids = [uuid.UUID(j) for j in stream.accepted.values()]

        async def all_succeeded() -> bool:
            c = await asyncpg.connect(dsn)
            try:
                waiting = await c.fetchval(
                    "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[])"
                    " AND state <> 'SUCCEEDED'",
                    ids,
                )
            finally:
                await c.close()
            return bool(waiting == 0)

        await eventually(all_succeeded, within=90, interval=0.3, what="every job to succeed")
    books_now = await books(dsn, stream, since)
    accepted = len(stream.accepted)
    print(
        f"{label}: accepted {accepted}, succeeded {books_now.jobs.states.get('SUCCEEDED', 0)}, "
        f"retried submits {stream.retried}, submits refused for {recovered_s:.1f} s after "
        f"the fault, ledger entries per job {sorted(set(books_now.jobs.ledger.values()))}, "
        f"dispatches {len(node.dispatches)}"
    )
    assert not stream.unexpected, f"only UNAVAILABLE may refuse a submit: {stream.unexpected}"
    books_now.jobs.assert_each_succeeded_once(list(stream.accepted.values()))
    assert set(books_now.jobs_per_request.values()) == {1}, "one job per request id"
    assert books_now.stray == 0, "nothing else created"


async def test_sigkill_of_the_connected_broker_node_loses_and_doubles_nothing(
    cluster: BrokerCluster, cluster_mesh: ClusterMesh
) -> None:
    # Fresh processes connect to the first address: node 1, which also leads the queues
    # they declared there (quorum leaders are placed on the declaring client's node).

    async def kill() -> None:
        await asyncio.to_thread(cluster.kill, 1)

    async def restart() -> None:
        await asyncio.to_thread(cluster.restart, 1)

    await stream_across(kill, restart, cluster_mesh, "kill node 1")


async def test_partition_of_the_queue_leader_loses_and_doubles_nothing(
    cluster: BrokerCluster, cluster_mesh: ClusterMesh
) -> None:
    topology = Topology(cluster_mesh.env["FLEETWIRE_NAMESPACE"])
    queue = f"{topology.route_queue(topology.route_key('mainnet', 'scripted'))}._normal"
    cut: list[int] = []

    async def partition() -> None:
        leader = await asyncio.to_thread(cluster.leader_of, queue)
        cut.append(leader)
        await asyncio.to_thread(cluster.partition, leader)

    async def heal() -> None:
        await asyncio.to_thread(cluster.heal, cut[0])

    await stream_across(partition, heal, cluster_mesh, "partition leader")
