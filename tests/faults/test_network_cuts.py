"""Services on separate hosts, and the network between them cut.

The bridge, the scheduler and two nodes each run on a host of their own: a network
namespace joined to a bridge device (``tests.support.netns``), dialling each other by name
over TLS with a certificate per host name. RabbitMQ, Redis and PostgreSQL stay on the
machine itself, reached through a relay on the bridge device's address; the test (the
client) stays in the root namespace. The nodes are real node agents (``python -m node``'s
code) on a runtime that emits a token every 0.25 s (``tests.support.slow_node``), so a job is
still running when its node's cable is pulled, without two vLLM engines on 2 cores.

Each fault ends with the same books: every accepted job SUCCEEDED, exactly one successful
attempt each, two ledger entries each (debit and credit), nothing else created.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest

from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
)
from fleetwire_tools.certs import DevCertificates, Issued, ensure_authority, issue
from tests.conftest import cleanup_namespace, isolated_env
from tests.support.eventually import eventually, eventually_sync
from tests.support.mesh_admin import bearer, create_operator_key
from tests.support.netns import Host, Network
from tests.support.tls import tls_env

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 3  # short: a cut node's lease runs out within seconds
BRIDGE_PORT, SCHEDULER_PORT, ADMIN_PORT = 50051, 50052, 50053  # each host has its own ports


@dataclass
class Service:
    name: str
    host: Host
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class NetMesh:
    net: Network
    ca: Path
    dsn: str  # as the test reaches PostgreSQL (the root namespace's loopback)
    operator_key: str
    services: dict[str, Service] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def channel(self, host: Host, port: int) -> grpc.aio.Channel:
        """A TLS channel to ``host`` from the root namespace: dialled at its address (its
        front address when it has one; the root namespace has no hosts file of ours),
        verified against its name."""
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        options = [*CLIENT_OPTIONS, ("grpc.ssl_target_name_override", host.name)]
        address = host.front_address or host.address
        return grpc.aio.secure_channel(f"{address}:{port}", credentials, options=options)

    async def connected_nodes(self) -> dict[str, mesh_admin_service_pb2.NodeView]:
        """The connected nodes by id, from the scheduler's admin port (empty while it does
        not answer)."""
        async with self.channel(self.host("scheduler"), ADMIN_PORT) as channel:
            stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
            try:
                reply = await stub.ListNodes(
                    mesh_admin_service_pb2.ListNodesRequest(),
                    timeout=5,
                    metadata=bearer(self.operator_key),
                )
            except grpc.aio.AioRpcError:
                return {}
        return {n.node_id: n for n in reply.nodes}

    def logs(self) -> str:
        return "\n".join(
            f"===== {s.name} =====\n" + s.log.read_text(errors="replace")[-8000:]
            for s in self.services.values()
        )


def _listening(address: str, port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"exited with {process.returncode}")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


@pytest.fixture(scope="module")
def net_mesh(
    run_id: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[NetMesh]:
    net = Network()
    namespace = f"{run_id}n"
    work = tmp_path_factory.mktemp("netns")
    mesh: NetMesh | None = None
    setup_failed = False
    try:
        net.start()
        hosts = {name: net.add_host(name) for name in ("bridge", "scheduler", "node-a", "node-b")}
        # Clients reach the bridge on a front link of its own, so that cutting its back
        # link (to the services) leaves them talking to it.
        net.add_front(hosts["bridge"])
        authority = ensure_authority(work / "certs")
        env = isolated_env(namespace, work / "unused.key")
        local_dsn = env["FLEETWIRE_POSTGRES_DSN"]
        services = net.services_name
        env |= {
            "FLEETWIRE_POSTGRES_DSN": f"postgresql://postgres@{services}:5432/fw_{namespace}",
            "FLEETWIRE_RABBITMQ_URL": f"amqp://guest:guest@{services}:5672/",
            "FLEETWIRE_REDIS_URL": f"redis://{services}:6379/0",
            "FLEETWIRE_BRIDGE_PORT": str(BRIDGE_PORT),
            "FLEETWIRE_SCHEDULER_PORT": str(SCHEDULER_PORT),
            "FLEETWIRE_SCHEDULER_ADMIN_PORT": str(ADMIN_PORT),
            "FLEETWIRE_NODE_SCHEDULER_ADDRESS": f"{hosts['scheduler'].name}:{SCHEDULER_PORT}",
            "FLEETWIRE_SCHEDULER_LEASE": str(LEASE_S),
            "FLEETWIRE_NODE_MODEL_NAME": "scripted",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("FLEETWIRE_SCHEDULER_TOKENIZERS", None)
        key = asyncio.run(create_operator_key(local_dsn))
        mesh = NetMesh(net, authority.cert, local_dsn, key)

        def start(name: str, module: str, extra: dict[str, str]) -> Service:
            host = hosts[name]
            made = issue(
                authority,
                work / "certs" / name,
                common_name=host.name,
                names=(host.name,),
                server=True,
            )
            child_env = {**os.environ, **env, **tls_env_for(authority.cert, made), **extra}
            log = work / f"{name}.log"
            process = subprocess.Popen(
                host.command(sys.executable, "-m", module),
                env=child_env,
                cwd=ROOT,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
            )
            service = Service(name, host, process, log)
            assert mesh is not None
            mesh.services[name] = service
            return service

        scheduler = start(
            "scheduler",
            "scheduler",
            {
                "FLEETWIRE_SCHEDULER_SCHEDULER_ID": "sched-net",
                # The test reaches the admin port from another host (the root namespace).
                "FLEETWIRE_SCHEDULER_ADMIN_HOST": "0.0.0.0",
            },
        )
        eventually_sync(
            lambda: _listening(scheduler.host.address, SCHEDULER_PORT, scheduler.process),
            within=60,
            what="the scheduler",
        )
        # Short timeouts towards the services: a Submit the bridge cannot complete is
        # answered UNAVAILABLE well within the client's deadline.
        bridge = start(
            "bridge",
            "broker_bridge",
            {"FLEETWIRE_POSTGRES_COMMAND_TIMEOUT": "3", "FLEETWIRE_RABBITMQ_PUBLISH_TIMEOUT": "3"},
        )
        eventually_sync(
            lambda: _listening(bridge.host.front_address, BRIDGE_PORT, bridge.process),
            within=60,
            what="the bridge",
        )
        for node in ("node-a", "node-b"):
            start(
                node,
                "tests.support.slow_node",
                {
                    "FLEETWIRE_NODE_NODE_ID": node,
                    "FLEETWIRE_NODE_KEY_FILE": str(work / f"{node}.key"),
                },
            )

        async def both_connected() -> bool:
            return {"node-a", "node-b"} <= set(await mesh.connected_nodes())

        asyncio.run(eventually(both_connected, within=60, what="both nodes to connect"))
        yield mesh
    except BaseException:
        setup_failed = True
        raise
    finally:
        if mesh is not None:
            for service in reversed(mesh.services.values()):
                service.stop()
            if setup_failed or request.session.testsfailed:
                print(mesh.logs())
        net.close()
        asyncio.run(cleanup_namespace(namespace))
    assert not net.leftovers(), f"namespaces or links left behind: {net.leftovers()}"


def tls_env_for(ca: Path, server: Issued) -> dict[str, str]:
    """TLS on: this host presents its own certificate; everyone trusts the run's CA."""
    return tls_env(DevCertificates(ca, server))


@pytest.fixture
async def net_jobs(net_mesh: NetMesh) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    async with net_mesh.channel(net_mesh.host("bridge"), BRIDGE_PORT) as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


def spec(tokens: int) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted",
        prompt="over the wire",
        client_request_id=str(uuid.uuid4()),
        sampling=job_pb2.SamplingParams(max_tokens=tokens),
    )


@dataclass(frozen=True)
class Books:
    """What PostgreSQL holds about a set of jobs."""

    states: dict[str, int]
    succeeded_attempts: dict[str, int]  # job → attempts with outcome SUCCEEDED
    ledger: dict[str, int]  # job → ledger entries

    def line(self, accepted: int) -> str:
        once = sum(1 for n in self.succeeded_attempts.values() if n == 1)
        billed = sorted(set(self.ledger.values()))
        return (
            f"accepted {accepted}, states {self.states}, finalised exactly once {once}, "
            f"ledger entries per job {billed}"
        )


async def books(dsn: str, job_ids: list[str]) -> Books:
    ids = [uuid.UUID(j) for j in job_ids]
    conn = await asyncpg.connect(dsn)
    try:
        states = await conn.fetch(
            "SELECT state, count(*) AS n FROM jobs WHERE job_id = ANY($1::uuid[]) GROUP BY state",
            ids,
        )
        attempts = await conn.fetch(
            "SELECT j.job_id::text AS job, count(a.*) FILTER (WHERE a.outcome = 'SUCCEEDED') AS n"
            " FROM jobs j LEFT JOIN attempts a USING (job_id)"
            " WHERE j.job_id = ANY($1::uuid[]) GROUP BY j.job_id",
            ids,
        )
        ledger = await conn.fetch(
            "SELECT j.job_id::text AS job, count(l.*) AS n"
            " FROM jobs j LEFT JOIN ledger_entries l USING (job_id)"
            " WHERE j.job_id = ANY($1::uuid[]) GROUP BY j.job_id",
            ids,
        )
    finally:
        await conn.close()
    return Books(
        {r["state"]: r["n"] for r in states},
        {r["job"]: r["n"] for r in attempts},
        {r["job"]: r["n"] for r in ledger},
    )


async def attempts_of(dsn: str, job_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch(
                "SELECT attempt, node_id, outcome, error_reason FROM attempts WHERE job_id = $1"
                " ORDER BY attempt",
                uuid.UUID(job_id),
            )
        )
    finally:
        await conn.close()


async def job_state(dsn: str, job_id: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(
            await conn.fetchval("SELECT state FROM jobs WHERE job_id = $1", uuid.UUID(job_id))
        )
    finally:
        await conn.close()


async def offences_of(dsn: str, node_id: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT offence FROM node_penalties WHERE node_id = $1", node_id)
    finally:
        await conn.close()
    return [r["offence"] for r in rows]


async def test_node_cut_off_mid_job_finishes_elsewhere_once_and_its_late_result_changes_nothing(
    net_mesh: NetMesh, net_jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    dsn = net_mesh.dsn
    # 40 tokens at 0.25 s: 10 s of work, still running when the lease (3 s) of a cut node
    # has run out and its link is back.
    reply = await net_jobs.Submit(job_service_pb2.SubmitRequest(job=spec(40)), timeout=15)
    job_id = reply.job.job_id

    async def running_on() -> str:
        if await job_state(dsn, job_id) != "RUNNING":
            return ""
        rows = await attempts_of(dsn, job_id)
        return str(rows[-1]["node_id"]) if rows else ""

    first = await eventually(running_on, within=30, what="the job to run on a node")
    other = "node-b" if first == "node-a" else "node-a"
    cut_host = net_mesh.host(first)
    welcomed = (await net_mesh.connected_nodes())[first].connected_at.ToMicroseconds()
    started = time.monotonic()
    net_mesh.net.cut(cut_host)
    try:

        async def lost_and_moved() -> bool:
            rows = await attempts_of(dsn, job_id)
            return len(rows) >= 2 and rows[0]["outcome"] == "LOST" and rows[-1]["node_id"] == other

        await eventually(lost_and_moved, within=20, interval=0.2, what="the lease to run out")
        lease_ran_out_after = time.monotonic() - started
    finally:
        # Back while the cut node still runs the job: its result comes late, not never.
        net_mesh.net.restore(cut_host)

    # The cut node reconnects and announces the job it still runs; its heartbeats count it
    # until the job ends, and its result, sent before the next heartbeat on the same stream,
    # has then been read by the scheduler.
    seen_running = False

    async def late_result_sent() -> bool:
        nonlocal seen_running
        view = (await net_mesh.connected_nodes()).get(first)
        if view is None or view.connected_at.ToMicroseconds() <= welcomed:
            return False
        seen_running = seen_running or view.running_jobs > 0
        return seen_running and view.running_jobs == 0

    await eventually(
        late_result_sent, within=40, interval=0.2, what=f"{first} to reconnect and finish its job"
    )

    async def succeeded() -> bool:
        return await job_state(dsn, job_id) == "SUCCEEDED"

    await eventually(succeeded, within=40, interval=0.2, what="the job to succeed elsewhere")
    rows = await attempts_of(dsn, job_id)
    outcome = await books(dsn, [job_id])
    offences = await offences_of(dsn, first)
    print(
        f"fault (a) node link cut: lease ran out after {lease_ran_out_after:.1f} s; "
        f"attempts {[(r['attempt'], r['node_id'], r['outcome']) for r in rows]}; "
        f"{outcome.line(1)}; offences of {first}: {offences}"
    )
    assert outcome.states == {"SUCCEEDED": 1}
    assert outcome.succeeded_attempts == {job_id: 1}
    assert outcome.ledger == {job_id: 2}, "billed once, by the attempt that finished it"
    assert [r["outcome"] for r in rows] == ["LOST", "SUCCEEDED"]
    assert rows[1]["node_id"] == other
    # The late result is an honest node's resend of an attempt it was given: refused
    # ("moved-on") without a further offence; the lapsed lease is the one charged.
    assert offences == ["LEASE_EXPIRED"]


@dataclass
class SubmitStream:
    """Submits short jobs one after another until stopped, counting what each call got."""

    jobs: job_service_pb2_grpc.JobServiceStub
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # status code name → calls
    refused_request_ids: list[str] = field(default_factory=list)
    refusal_seconds: list[float] = field(default_factory=list)  # how long each refusal took
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            request = job_service_pb2.SubmitRequest(job=spec(2))
            sent = time.monotonic()
            try:
                reply = await self.jobs.Submit(request, timeout=15)
                self.accepted.append(reply.job.job_id)
            except grpc.aio.AioRpcError as err:
                code = err.code().name
                self.refused[code] = self.refused.get(code, 0) + 1
                self.refused_request_ids.append(request.job.client_request_id)
                self.refusal_seconds.append(time.monotonic() - sent)
                await asyncio.sleep(0.2)  # a client backing off
            await asyncio.sleep(0.05)


async def all_succeeded(dsn: str, job_ids: list[str], within: float) -> None:
    ids = [uuid.UUID(j) for j in job_ids]

    async def done() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[]) AND state <> 'SUCCEEDED'",
                ids,
            )
        finally:
            await conn.close()
        return bool(waiting == 0)

    await eventually(done, within=within, interval=0.5, what="every accepted job to succeed")


async def test_scheduler_cut_off_from_broker_and_nodes_loses_and_doubles_nothing(
    net_mesh: NetMesh, net_jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """The scheduler's cable pulled for longer than a lease while clients submit: the
    scheduler loses RabbitMQ, Redis, PostgreSQL and its nodes at once, and gets them back."""
    dsn = net_mesh.dsn
    scheduler = net_mesh.host("scheduler")
    stream = SubmitStream(net_jobs)
    submitter = asyncio.create_task(stream.run())
    try:
        await eventually(lambda: len(stream.accepted) >= 10, within=30, what="submits before")
        before = len(stream.accepted)
        net_mesh.net.cut(scheduler)
        try:
            await asyncio.sleep(LEASE_S * 2 + 2)  # the fault's length is the point here
        finally:
            net_mesh.net.restore(scheduler)
        during = len(stream.accepted) - before
        back = len(stream.accepted)
        await eventually(
            lambda: len(stream.accepted) >= back + 10, within=60, what="submits after the cut"
        )
    finally:
        stream.stop.set()
        await submitter
    await all_succeeded(dsn, stream.accepted, within=90)
    outcome = await books(dsn, stream.accepted)
    print(
        f"fault (b) scheduler link cut {LEASE_S * 2 + 2} s: {outcome.line(len(stream.accepted))}"
        f" (before {before}, during {during}); refused {stream.refused}"
    )
    assert not stream.refused, "the bridge was not cut: no Submit may fail"
    assert outcome.states == {"SUCCEEDED": len(stream.accepted)}
    assert set(outcome.succeeded_attempts.values()) == {1}
    assert set(outcome.ledger.values()) == {2}


async def jobs_of_requests(dsn: str, request_ids: list[str]) -> list[str]:
    """Ids of jobs created by Submits with these request ids."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT job_id::text AS job FROM jobs WHERE client_request_id = ANY($1::text[])",
            request_ids,
        )
    finally:
        await conn.close()
    return [r["job"] for r in rows]


async def test_bridge_cut_off_from_its_services_refuses_submits_and_loses_nothing(
    net_mesh: NetMesh, net_jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """The bridge's back link (to PostgreSQL, RabbitMQ and Redis) pulled while clients,
    on its front link, submit: Submits fail UNAVAILABLE while it is out and succeed again
    after; every accepted job SUCCEEDED once, and a refused one left no half-made job (an
    UNAVAILABLE whose INSERT did reach PostgreSQL may still run: then it runs once)."""
    dsn = net_mesh.dsn
    bridge = net_mesh.host("bridge")
    stream = SubmitStream(net_jobs)
    submitter = asyncio.create_task(stream.run())
    try:
        await eventually(lambda: len(stream.accepted) >= 10, within=30, what="submits before")
        before = len(stream.accepted)
        cut_at = time.monotonic()
        net_mesh.net.cut(bridge)
        try:
            await eventually(
                lambda: stream.refused.get("UNAVAILABLE", 0) >= 3,
                within=60,
                interval=0.2,
                what="Submits refused UNAVAILABLE while the bridge is cut off",
            )
        finally:
            net_mesh.net.restore(bridge)
            cut_for = time.monotonic() - cut_at
        during = len(stream.accepted) - before
        back = len(stream.accepted)
        await eventually(
            lambda: len(stream.accepted) >= back + 10, within=60, what="submits after the cut"
        )
    finally:
        stream.stop.set()
        await submitter
    await all_succeeded(dsn, stream.accepted, within=90)
    outcome = await books(dsn, stream.accepted)
    made_by_refused = await jobs_of_requests(dsn, stream.refused_request_ids)
    await all_succeeded(dsn, made_by_refused, within=60)
    refused_books = await books(dsn, made_by_refused)
    print(
        f"fault (c) bridge back link cut {cut_for:.1f} s: {outcome.line(len(stream.accepted))}"
        f" (before {before}, while cut {during}); refused {stream.refused},"
        f" each after {min(stream.refusal_seconds):.1f}-{max(stream.refusal_seconds):.1f} s;"
        f" jobs made by refused calls {len(made_by_refused)}"
        f" ({refused_books.line(len(made_by_refused))})"
    )
    assert set(stream.refused) == {"UNAVAILABLE"}, stream.refused
    assert outcome.states == {"SUCCEEDED": len(stream.accepted)}
    assert set(outcome.succeeded_attempts.values()) == {1}
    assert set(outcome.ledger.values()) == {2}
    assert set(refused_books.succeeded_attempts.values()) <= {1}
    assert set(refused_books.ledger.values()) <= {2}
