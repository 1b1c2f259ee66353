"""Services on separate hosts, and the network between them cut.

The bridge, the scheduler and two nodes each run on a host of their own: a network
namespace joined to a bridge device (``tests.support.netns``), dialling each other by name
over TLS with a certificate per host name. RabbitMQ, Redis and PostgreSQL stay on the
machine itself, reached through a relay on the bridge device's address; the test (the
client) stays in the root namespace. The nodes are real node agents (``python -m node``'s
code) on a runtime that emits a token every 0.25 s (``tests.support.slow_node``), so a job is
still running when its node's cable is pulled, without two vLLM engines on 2 cores.

Faults: (a) a node's cable pulled mid-job; (b) the scheduler's cable (broker, stores and
nodes at once); (c) the bridge's back link (all its services); (d) the bridge's link to
PostgreSQL alone; (e) the scheduler's link to RabbitMQ alone, for longer than the AMQP
heartbeat timeout on both sides. Each fault ends with the same books: every accepted job
SUCCEEDED, exactly one successful attempt each, two ledger entries each (debit and
credit), nothing else created.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from fleetwire.v1 import job_service_pb2, job_service_pb2_grpc
from tests.support.eventually import eventually
from tests.support.net_mesh import (
    BRIDGE_PORT,
    POSTGRES_PORT,
    RABBITMQ_PORT,
    SCHEDULER_PORT,
    NetMesh,
    SubmitStream,
    all_succeeded,
    books,
    jobs_of_requests,
    open_net_mesh,
    spec,
)

LEASE_S = 3  # short: a cut node's lease runs out within seconds
# The scheduler's AMQP heartbeat (seconds): RabbitMQ gives a silent connection up after
# about two of them, the scheduler's client (aiormq) after (5 + 1) x 3 = 18 s.
SCHEDULER_AMQP_HEARTBEAT_S = 5
BROKER_CUT_S = 20  # beyond both heartbeat timeouts and the lease


@pytest.fixture(scope="module")
def net_mesh(
    run_id: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[NetMesh]:
    work = tmp_path_factory.mktemp("netns")
    with open_net_mesh(run_id, work, request, lease_s=LEASE_S) as mesh:
        for name in ("bridge", "scheduler", "node-a", "node-b"):
            mesh.net.add_host(name)
        # Clients reach the bridge on a front link of its own, so that cutting its back
        # link (to the services) leaves them talking to it.
        mesh.net.add_front(mesh.host("bridge"))
        services = mesh.net.services_name
        scheduler = mesh.start(
            "scheduler",
            "scheduler",
            {
                "FLEETWIRE_SCHEDULER_SCHEDULER_ID": "sched-net",
                "FLEETWIRE_RABBITMQ_URL": f"amqp://guest:guest@{services}:{RABBITMQ_PORT}/"
                f"?heartbeat={SCHEDULER_AMQP_HEARTBEAT_S}",
            },
        )
        scheduler.wait_listening(SCHEDULER_PORT)
        # Short timeouts towards the services: a Submit the bridge cannot complete is
        # answered UNAVAILABLE well within the client's deadline.
        bridge = mesh.start(
            "bridge",
            "broker_bridge",
            {"FLEETWIRE_POSTGRES_COMMAND_TIMEOUT": "3", "FLEETWIRE_RABBITMQ_PUBLISH_TIMEOUT": "3"},
        )
        bridge.wait_listening(BRIDGE_PORT)
        for node in ("node-a", "node-b"):
            mesh.start(
                node,
                "tests.support.slow_node",
                {
                    "FLEETWIRE_NODE_NODE_ID": node,
                    "FLEETWIRE_NODE_KEY_FILE": str(work / f"{node}.key"),
                    "FLEETWIRE_NODE_SCHEDULER_ADDRESS": (
                        f"{mesh.host('scheduler').name}:{SCHEDULER_PORT}"
                    ),
                },
            )

        async def both_connected() -> bool:
            return {"node-a", "node-b"} <= set(await mesh.connected_nodes())

        asyncio.run(eventually(both_connected, within=60, what="both nodes to connect"))
        yield mesh


@pytest.fixture
async def net_jobs(net_mesh: NetMesh) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    async with net_mesh.channel(net_mesh.host("bridge"), BRIDGE_PORT) as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


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
    outcome.assert_each_succeeded_once(stream.accepted)


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
    made = await jobs_of_requests(dsn, stream.refused_request_ids)
    made_by_refused = [job for jobs in made.values() for job in jobs]
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
    outcome.assert_each_succeeded_once(stream.accepted)
    assert set(refused_books.succeeded_attempts.values()) <= {1}
    assert set(refused_books.ledger.values()) <= {2}


def request_books_line(stream: SubmitStream, made: dict[str, list[str]]) -> str:
    """Whether every request id the stream sent made one job, the one it was told of."""
    doubled = sum(1 for jobs in made.values() if len(jobs) > 1)
    untold = sum(1 for r, jobs in made.items() if jobs != [stream.answered.get(r)])
    return f"request ids {len(made)}, with two jobs {doubled}, with a job no one was told {untold}"


async def test_bridge_cut_off_from_postgres_alone_refuses_then_recovers_by_itself(
    net_mesh: NetMesh, net_jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """Only the bridge's link to PostgreSQL pulled (RabbitMQ and Redis stay reachable)
    while a client submits and retries each refused Submit with the same request id:
    refusals are UNAVAILABLE within the bridge's statement timeout (3 s), the bridge takes
    Submits again by itself once the link is back, every request id made one job (the one
    its client was told of) and every job SUCCEEDED once, billed once."""
    dsn = net_mesh.dsn
    bridge = net_mesh.host("bridge")
    stream = SubmitStream(net_jobs, retry=True)
    submitter = asyncio.create_task(stream.run())
    try:
        await eventually(lambda: len(stream.accepted) >= 10, within=30, what="submits before")
        before = len(stream.accepted)
        cut_at = time.monotonic()
        net_mesh.net.cut_service(bridge, POSTGRES_PORT)
        try:
            await eventually(
                lambda: stream.refused.get("UNAVAILABLE", 0) >= 3,
                within=60,
                interval=0.2,
                what="Submits refused UNAVAILABLE while PostgreSQL is cut off",
            )
        except AssertionError as err:
            seconds = [round(s, 1) for s in stream.refusal_seconds]
            raise AssertionError(f"{err}; refused {stream.refused}, after {seconds} s") from None
        finally:
            net_mesh.net.restore_service(bridge, POSTGRES_PORT)
            restored_at = time.monotonic()
        during = len(stream.accepted) - before
        back = len(stream.accepted)
        await eventually(
            lambda: len(stream.accepted) > back, within=60, interval=0.1, what="a submit after"
        )
        first_after = time.monotonic() - restored_at
        await eventually(
            lambda: len(stream.accepted) >= back + 10, within=60, what="submits after the cut"
        )
    finally:
        stream.stop.set()
        await submitter
    await all_succeeded(dsn, stream.accepted, within=90)
    outcome = await books(dsn, stream.accepted)
    made = await jobs_of_requests(dsn, list(stream.answered))
    print(
        f"fault (d) bridge-PostgreSQL link cut {restored_at - cut_at:.1f} s:"
        f" {outcome.line(len(stream.accepted))} (before {before}, while cut {during});"
        f" refused {stream.refused}, each after"
        f" {min(stream.refusal_seconds):.1f}-{max(stream.refusal_seconds):.1f} s;"
        f" resubmits {stream.resubmits}; first accepted {first_after:.1f} s after the restore;"
        f" {request_books_line(stream, made)}"
    )
    assert set(stream.refused) == {"UNAVAILABLE"}, stream.refused
    assert max(stream.refusal_seconds) < 10, "refused within the statement timeout, not hung"
    # At most the call in flight when the link went (its last statement done before).
    assert during <= 1, "no Submit can be accepted without PostgreSQL"
    outcome.assert_each_succeeded_once(stream.accepted)
    assert made == {r: [job] for r, job in stream.answered.items()}, "one job per request id"


async def test_scheduler_cut_off_from_broker_alone_past_heartbeats_loses_and_doubles_nothing(
    net_mesh: NetMesh, net_jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    """Only the scheduler's link to RabbitMQ pulled, for longer than the AMQP heartbeat
    timeout on both sides (RabbitMQ closes the connection and requeues its unacked
    deliveries; the scheduler's client gives it up too), while the bridge keeps accepting:
    jobs wait in their queue, the scheduler reconnects by itself when the link is back,
    the redelivered jobs it had finished meanwhile are not run or billed again."""
    dsn = net_mesh.dsn
    scheduler = net_mesh.host("scheduler")
    log = net_mesh.services["scheduler"].log
    stream = SubmitStream(net_jobs, retry=True)
    submitter = asyncio.create_task(stream.run())
    try:
        await eventually(lambda: len(stream.accepted) >= 10, within=30, what="submits before")
        before = len(stream.accepted)
        # Evidence that the cut outlasted the heartbeats, not a readiness check: the
        # scheduler logs each AMQP connection it opens.
        connections_before = log.read_text(errors="replace").count("amqp connected")
        net_mesh.net.cut_service(scheduler, RABBITMQ_PORT)
        try:
            await asyncio.sleep(BROKER_CUT_S)  # the fault's length is the point here
        finally:
            net_mesh.net.restore_service(scheduler, RABBITMQ_PORT)
            restored_at = time.monotonic()
        during = stream.accepted[before:]
        await all_succeeded(dsn, during, within=60)
        drained_after = time.monotonic() - restored_at
        back = len(stream.accepted)
        await eventually(
            lambda: len(stream.accepted) >= back + 5, within=60, what="submits after the cut"
        )
    finally:
        stream.stop.set()
        await submitter
    await all_succeeded(dsn, stream.accepted, within=90)
    outcome = await books(dsn, stream.accepted)
    made = await jobs_of_requests(dsn, list(stream.answered))
    reconnects = log.read_text(errors="replace").count("amqp connected") - connections_before
    print(
        f"fault (e) scheduler-RabbitMQ link cut {BROKER_CUT_S} s (heartbeat"
        f" {SCHEDULER_AMQP_HEARTBEAT_S} s): {outcome.line(len(stream.accepted))}"
        f" (before {before}, accepted while cut {len(during)}, all of them SUCCEEDED"
        f" {drained_after:.1f} s after the restore); refused {stream.refused};"
        f" {request_books_line(stream, made)}; AMQP connections opened again {reconnects}"
    )
    assert reconnects >= 1, "the cut outlasted the heartbeats: the old connection was given up"
    assert not stream.refused, "the bridge was not cut: no Submit may fail"
    assert during, "the bridge kept accepting while the scheduler was cut off"
    outcome.assert_each_succeeded_once(stream.accepted)
    assert made == {r: [job] for r, job in stream.answered.items()}, "one job per request id"
