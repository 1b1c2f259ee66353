"""Validation (blind) jobs and reputation (issue 16): the mesh asks nodes prompts whose
answer two nodes agree on, judges every answer, and a node that answers otherwise — a
*lazy* node, signing its own made-up text under the right model name — is found out,
excluded, and kept on probation (validation jobs only) while honest nodes keep working and
tenants pay nothing for any of it. Protocol-level nodes on a real scheduler, PostgreSQL,
Redis and RabbitMQ; the same with two real vLLM nodes is the e2e suite's."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from nacl.signing import SigningKey

from fleetwire.process.settings import Settings
from fleetwire.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
)
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.matching import JobNeeds
from scheduler.server import SchedulerServer
from scheduler.validation_store import VALIDATION_TENANT
from tests.integration.test_bad_results import spec, wait_state
from tests.support.eventually import eventually
from tests.support.mesh_admin import SendsOperatorKey
from tests.support.scripted_node import ScriptedNode, running


def true_answer(prompt: str) -> str:
    """What every honest scripted node answers: a function of the prompt alone, as
    temperature-0 decoding of one model is."""
    return "answer " + hashlib.sha256(prompt.encode()).hexdigest()[:32]


def honest(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
    return node.signed_result(dispatch, output=true_answer(dispatch.spec.prompt))


def lazy(node: ScriptedNode, dispatch: nodes_pb2.Dispatch) -> nodes_pb2.Result:
    """Made-up text, correctly signed: only the answer gives it away."""
    return node.signed_result(dispatch, output=f"cheap text {uuid.uuid4().hex}")


@contextlib.asynccontextmanager
async def validating_scheduler(
    settings: Settings, **overrides: Any
) -> AsyncIterator[SchedulerServer]:
    group = settings.scheduler.model_copy(
        update={
            "port": 0,
            "admin_port": 0,
            "scheduler_id": f"validating-{uuid.uuid4().hex[:6]}",
            "validation_burst": 4,
            "validation_share": 0.0,
            "penalty_cooldown": timedelta(seconds=2),
            "probation_interval": timedelta(seconds=1),
            **overrides,
        }
    )
    server = SchedulerServer(settings.model_copy(update={"scheduler": group}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1)


def node(
    server: SchedulerServer, name: str, *, answers: Any = honest, key: SigningKey | None = None
) -> ScriptedNode:
    return ScriptedNode(
        f"127.0.0.1:{server.port}",
        name,
        "scripted",
        lambda _n: "ok",
        lie=answers,
        key=key or SigningKey.generate(),
    )


async def verdicts(pool: asyncpg.Pool, node_id: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT verdict, count(*) AS n FROM validation_answers"
        " WHERE node_id = $1 AND verdict IS NOT NULL GROUP BY verdict",
        node_id,
    )
    return {r["verdict"]: r["n"] for r in rows}


async def wait_verdicts(
    pool: asyncpg.Pool, node_id: str, verdict: str, count: int
) -> dict[str, int]:
    async def enough() -> dict[str, int] | None:
        found = await verdicts(pool, node_id)
        return found if found.get(verdict, 0) >= count else None

    return await eventually(enough, within=60, what=f"{count} {verdict} answers of {node_id}")


async def test_a_lazy_node_is_found_out_excluded_and_kept_on_probation(
    settings: Settings, pool: asyncpg.Pool, jobs: job_service_pb2_grpc.JobServiceStub
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with validating_scheduler(settings) as server:
        first, second = node(server, f"honest-a-{tag}"), node(server, f"honest-b-{tag}")
        async with running(first), running(second):
            # A new node's burst: the two honest nodes settle challenges between them.
            await wait_verdicts(pool, first.node_id, "PASS", 2)
            await wait_verdicts(pool, second.node_id, "PASS", 2)

            key = SigningKey.generate()
            liar = node(server, f"lazy-{tag}", answers=lazy, key=key)
            async with running(liar):
                await wait_verdicts(pool, liar.node_id, "WRONG", 1)
                penalties = await eventually(
                    lambda: pool.fetch(
                        "SELECT offence FROM node_penalties WHERE node_id = $1"
                        " AND offence = 'WRONG_ANSWER'",
                        liar.node_id,
                    ),
                    within=10,
                    what="a WRONG_ANSWER offence",
                )
                assert penalties
                # Found out within its burst: every job it was sent was a validation job.
                assert 1 <= len(liar.dispatches) <= 4
            assert server.penalties.is_excluded(liar.node_id)
            assert server.reputations.on_probation(liar.node_id)

            # Back after the cooldown: on probation, it gets no tenant job, only
            # validation jobs (and answers them wrongly again).
            await asyncio.sleep(2.5)
            returned = node(server, liar.node_id, answers=lazy, key=key)
            async with running(returned):
                needs = JobNeeds.from_spec(spec())
                route = next(iter(server.registry.routes()))
                assert f"{liar.node_id}: PROBATION" in server.registry.why_not(route, needs)
                tenant_jobs = [
                    (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
                    for _ in range(4)
                ]
                finished = [
                    await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
                    for job_id in tenant_jobs
                ]
                await wait_verdicts(pool, liar.node_id, "WRONG", 2)
            assert {job.signature.node_id for job in finished} <= {first.node_id, second.node_id}
            tenants_of_liar = await pool.fetch(
                "SELECT DISTINCT tenant_id FROM jobs WHERE node_id = $1", liar.node_id
            )
            assert [r["tenant_id"] for r in tenants_of_liar] == [VALIDATION_TENANT]

    for honest_node in (first, second):
        assert "WRONG" not in await verdicts(pool, honest_node.node_id)
        assert not await pool.fetch(
            "SELECT 1 FROM node_penalties WHERE node_id = $1", honest_node.node_id
        )

    # Validation jobs cost tenants nothing: each is charged to the mesh's own account and
    # paid to the node's owner like any job.
    rows = await pool.fetch(
        "SELECT e.kind, e.account FROM ledger_entries e JOIN jobs j USING (job_id)"
        " WHERE j.validation_challenge IS NOT NULL AND j.node_id = ANY($1)",
        [first.node_id, second.node_id, liar.node_id],
    )
    charges = {r["account"] for r in rows if r["kind"] == "JOB_CHARGE"}
    assert charges == {f"tenant:{VALIDATION_TENANT}"}
    assert (
        sum(r["kind"] == "NODE_EARNING" for r in rows)
        == sum(r["kind"] == "JOB_CHARGE" for r in rows)
        >= 6
    )


async def test_an_operator_can_ask_for_validation_and_sees_reputation(
    settings: Settings, pool: asyncpg.Pool, operator_key: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    async with (
        validating_scheduler(settings, validation_burst=0) as server,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{server.admin_port}", interceptors=[SendsOperatorKey(operator_key)]
        ) as channel,
    ):
        admin = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        first, second = node(server, f"asked-a-{tag}"), node(server, f"asked-b-{tag}")
        async with running(first), running(second):
            await asyncio.sleep(1)
            assert not first.dispatches, "burst 0 and share 0: nothing is sent unasked"
            asked = await admin.ValidateNode(
                mesh_admin_service_pb2.ValidateNodeRequest(node_id=first.node_id, jobs=4)
            )
            assert asked.owed >= 1
            await wait_verdicts(pool, first.node_id, "PASS", 4)

            views = {
                v.node_id: v
                for v in (await admin.ListNodes(mesh_admin_service_pb2.ListNodesRequest())).nodes
            }
            view = views[first.node_id]
            assert view.validations_passed >= 4
            assert view.validations_wrong == 0
            assert view.reputation > 0.8
            assert not view.on_probation

            for bad, code in (
                (
                    mesh_admin_service_pb2.ValidateNodeRequest(node_id=first.node_id, jobs=0),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
                (
                    mesh_admin_service_pb2.ValidateNodeRequest(node_id=f"absent-{tag}", jobs=1),
                    grpc.StatusCode.FAILED_PRECONDITION,
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await admin.ValidateNode(bad)
                assert refused.value.code() is code
            # Nobody may hold a key of the mesh's own tenant: it would read the challenges.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await admin.CreateApiKey(
                    mesh_admin_service_pb2.CreateApiKeyRequest(tenant=VALIDATION_TENANT)
                )
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        audit = await pool.fetch("SELECT action FROM audit_log WHERE target = $1", first.node_id)
        assert "node.validate" in {r["action"] for r in audit}
