"""A mesh whose services run on hosts of a ``tests.support.netns.Network``, and the books
its network-fault tests check.

``open_net_mesh`` makes the network, the run's certificate authority and database and an
operator key; ``NetMesh.start`` runs a service on one host, presenting a certificate for
the host's name (and any shared name, such as the one every scheduler answers to), with
every service's environment pointed at the services' host by name. Leaving the context
stops every service, prints their logs when something failed, and removes the network,
the database, the queues and the Redis keys.

``Books`` is what PostgreSQL holds about a set of jobs; every fault ends with the same
check: each accepted job SUCCEEDED, one successful attempt each, two ledger entries each
(debit and credit).
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
from collections.abc import Iterator
from contextlib import contextmanager
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
from fleetwire_tools.certs import Authority, DevCertificates, ensure_authority, issue
from tests.conftest import cleanup_namespace, isolated_env
from tests.support.eventually import eventually, eventually_sync
from tests.support.mesh_admin import bearer, create_operator_key
from tests.support.netns import Host, Network
from tests.support.tls import tls_env

ROOT = Path(__file__).resolve().parents[2]
BRIDGE_PORT, SCHEDULER_PORT, ADMIN_PORT = 50051, 50052, 50053  # each host has its own ports
POSTGRES_PORT, RABBITMQ_PORT, REDIS_PORT = 5432, 5672, 6379  # on the services' host


@dataclass
class Service:
    name: str
    host: Host
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is closed politely."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        """SIGTERM: asks the service to stop (``stop`` waits for it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_listening(self, port: int, within: float = 60) -> None:
        eventually_sync(lambda: self.listening(port), within=within, what=f"{self.name}:{port}")

    def listening(self, port: int) -> bool:
        """The service accepts connections on ``port`` (its front address if it has one);
        raises if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex((self.host.front_address or self.host.address, port)) == 0


@dataclass
class NetMesh:
    net: Network
    authority: Authority
    work: Path
    env: dict[str, str]  # every service's FLEETWIRE_* variables, before its own
    dsn: str  # as the test reaches PostgreSQL (the root namespace's loopback)
    operator_key: str
    services: dict[str, Service] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return self.net.hosts[name]

    def start(
        self, name: str, module: str, extra: dict[str, str], *, names: tuple[str, ...] = ()
    ) -> Service:
        """Runs ``python -m module`` on host ``name`` with TLS on: it presents a certificate
        for its host's name and ``names``, and trusts the run's authority."""
        host = self.host(name)
        made = issue(
            self.authority,
            self.work / "certs" / name,
            common_name=host.name,
            names=(host.name, *names),
            server=True,
        )
        child_env = {
            **os.environ,
            **self.env,
            **tls_env(DevCertificates(self.authority.cert, made)),
            **extra,
        }
        log = self.work / f"{name}.log"
        process = subprocess.Popen(
            host.command(sys.executable, "-m", module),
            env=child_env,
            cwd=ROOT,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        service = Service(name, host, process, log)
        self.services[name] = service
        return service

    def channel(self, host: Host, port: int, *, name: str = "") -> grpc.aio.Channel:
        """A TLS channel to ``host`` from the root namespace: dialled at its address (its
        front address when it has one; the root namespace has no hosts file of ours),
        verified against its name (or ``name``)."""
        ca = self.authority.cert.read_bytes()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        options = [*CLIENT_OPTIONS, ("grpc.ssl_target_name_override", name or host.name)]
        address = host.front_address or host.address
        return grpc.aio.secure_channel(f"{address}:{port}", credentials, options=options)

    async def connected_nodes(
        self, scheduler: str = "scheduler"
    ) -> dict[str, mesh_admin_service_pb2.NodeView]:
        """The nodes connected to the mesh by id (each view names its scheduler), from
        ``scheduler``'s admin port (empty while it does not answer)."""
        async with self.channel(self.host(scheduler), ADMIN_PORT) as channel:
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


@contextmanager
def open_net_mesh(
    run_id: str, work: Path, request: pytest.FixtureRequest, *, lease_s: int
) -> Iterator[NetMesh]:
    """A started network (hosts are the caller's to add) with the run's authority,
    database and operator key. On exit: every service stopped (logs printed when the
    set-up or a test failed), the network, database, queues and Redis keys removed."""
    net = Network()
    namespace = f"{run_id}n"
    mesh: NetMesh | None = None
    failed = False
    try:
        net.start()
        authority = ensure_authority(work / "certs")
        env = isolated_env(namespace, work / "unused.key")
        local_dsn = env["FLEETWIRE_POSTGRES_DSN"]
        services = net.services_name
        env |= {
            "FLEETWIRE_POSTGRES_DSN": f"postgresql://postgres@{services}:{POSTGRES_PORT}"
            f"/fw_{namespace}",
            "FLEETWIRE_RABBITMQ_URL": f"amqp://guest:guest@{services}:{RABBITMQ_PORT}/",
            "FLEETWIRE_REDIS_URL": f"redis://{services}:{REDIS_PORT}/0",
            "FLEETWIRE_BRIDGE_PORT": str(BRIDGE_PORT),
            "FLEETWIRE_SCHEDULER_PORT": str(SCHEDULER_PORT),
            "FLEETWIRE_SCHEDULER_ADMIN_PORT": str(ADMIN_PORT),
            # The test reaches the admin port from another host (the root namespace).
            "FLEETWIRE_SCHEDULER_ADMIN_HOST": "0.0.0.0",
            "FLEETWIRE_SCHEDULER_LEASE": str(lease_s),
            "FLEETWIRE_NODE_MODEL_NAME": "scripted",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("FLEETWIRE_SCHEDULER_TOKENIZERS", None)
        key = asyncio.run(create_operator_key(local_dsn))
        mesh = NetMesh(net, authority, work, env, local_dsn, key)
        yield mesh
    except BaseException:
        failed = True
        raise
    finally:
        if mesh is not None:
            for service in mesh.services.values():
                service.terminate()
            for service in mesh.services.values():
                service.stop()
            if failed or request.session.testsfailed:
                print(mesh.logs())
        net.close()
        asyncio.run(cleanup_namespace(namespace))
    assert not net.leftovers(), f"namespaces or links left behind: {net.leftovers()}"


def spec(tokens: int, request_id: str = "") -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model="scripted",
        prompt="over the wire",
        client_request_id=request_id or str(uuid.uuid4()),
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

    def assert_each_succeeded_once(self, job_ids: list[str]) -> None:
        """Every job SUCCEEDED, with one successful attempt and two ledger entries."""
        assert self.states == {"SUCCEEDED": len(job_ids)}, self.states
        assert set(self.succeeded_attempts) == set(job_ids)
        assert set(self.succeeded_attempts.values()) == {1}, "finalised exactly once"
        assert set(self.ledger.values()) == {2}, "billed once: one debit, one credit"


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


async def jobs_of_requests(dsn: str, request_ids: list[str]) -> dict[str, list[str]]:
    """The ids of the jobs created by Submits with these request ids, by request id."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT client_request_id AS request, job_id::text AS job FROM jobs"
            " WHERE client_request_id = ANY($1::text[])",
            request_ids,
        )
    finally:
        await conn.close()
    made: dict[str, list[str]] = {}
    for row in rows:
        made.setdefault(row["request"], []).append(row["job"])
    return made


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


@dataclass
class SubmitStream:
    """Submits short jobs one after another until stopped, counting what each call got.

    With ``retry``, a refused Submit is sent again with the same client request id until
    it is answered (``resubmits`` counts the extra calls), as a careful client does;
    without, the next Submit is a new job."""

    jobs: job_service_pb2_grpc.JobServiceStub
    retry: bool = False
    accepted: list[str] = field(default_factory=list)
    answered: dict[str, str] = field(default_factory=dict)  # request id → job id
    refused: dict[str, int] = field(default_factory=dict)  # status code name → calls
    refused_request_ids: list[str] = field(default_factory=list)
    refusal_seconds: list[float] = field(default_factory=list)  # how long each refusal took
    resubmits: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            await self._submit_one()
            await asyncio.sleep(0.05)

    async def _submit_one(self) -> None:
        request = job_service_pb2.SubmitRequest(job=spec(2))
        while True:
            sent = time.monotonic()
            try:
                reply = await self.jobs.Submit(request, timeout=15)
            except grpc.aio.AioRpcError as err:
                code = err.code().name
                self.refused[code] = self.refused.get(code, 0) + 1
                self.refused_request_ids.append(request.job.client_request_id)
                self.refusal_seconds.append(time.monotonic() - sent)
                await asyncio.sleep(0.2)  # a client backing off
                if not self.retry:
                    return
                self.resubmits += 1
                continue
            self.accepted.append(reply.job.job_id)
            self.answered[request.job.client_request_id] = reply.job.job_id
            return
