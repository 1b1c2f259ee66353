"""``fleetwire admin top``: one frame of the live view, read through a real scheduler's
admin port — a connected node with its slots and reputation, the minute's finished jobs
— and the frame's pure rendering."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fleetwire.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2
from fleetwire_tools.admin_port import console
from fleetwire_tools.top_cli import Snapshot, render, sparkline
from scheduler.server import SchedulerServer
from tests.integration.test_bad_results import spec, wait_state
from tests.integration.test_dead_letter_replay import fleetwire_cli
from tests.support.scripted_node import ScriptedNode, running


async def test_top_shows_the_nodes_and_the_jobs_finished(
    scheduler: SchedulerServer,
    jobs: job_service_pb2_grpc.JobServiceStub,
    operator_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one table row per node, not wrapped
    node = ScriptedNode(
        f"127.0.0.1:{scheduler.port}", f"top-{uuid.uuid4().hex[:6]}", "scripted", lambda _: "ok"
    )
    async with running(node):
        job_id = (await jobs.Submit(job_service_pb2.SubmitRequest(job=spec()))).job.job_id
        await wait_state(jobs, job_id, job_pb2.JOB_STATE_SUCCEEDED)
        code, out = await fleetwire_cli(
            "admin",
            "top",
            "--once",
            "--address",
            f"127.0.0.1:{scheduler.admin_port}",
            operator_key=operator_key,
        )
    assert code == 0, out
    assert node.node_id in out
    assert "0.50 (0/0)" in out  # its reputation: nothing known yet
    assert "finished jobs per minute" in out
    assert "succeeded" in out


def test_a_frame_shows_rates_and_standing() -> None:
    minute = admin_pb2.ThroughputMinute(succeeded=9, failed=1)
    minute.start.FromDatetime(datetime.now(UTC))
    snapshot = Snapshot(
        admin_pb2.QueueDepthsResponse(
            depths=[
                admin_pb2.RouteDepth(
                    route="mainnet.tiny-llama",
                    priority=job_pb2.PRIORITY_CLASS_BULK,
                    waiting_jobs=4,
                    queue_messages=3,
                )
            ]
        ),
        admin_pb2.JobThroughputResponse(minutes=[admin_pb2.ThroughputMinute(), minute]),
        admin_pb2.ListNodesResponse(
            nodes=[
                admin_pb2.NodeView(
                    node_id="lazy", slots=4, free_slots=4, reputation=0.17, on_probation=True
                )
            ]
        ),
    )
    with console.capture() as captured:
        console.print(render(snapshot))
    frame = captured.get()
    assert "mainnet.tiny-llama" in frame
    assert "bulk" in frame
    assert "failure rate 10.0 %" in frame
    assert "5.0 jobs/min" in frame
    assert "probation" in frame
    assert sparkline([0, 5, 10]) == " ▄█"
