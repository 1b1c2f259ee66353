"""The ``fleetwire`` job commands (on the Python SDK) against the live mesh, as a user runs
them: a real API key, streamed tokens, JSON for scripts, a batch with verified results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import LiveMesh
from tests.e2e.test_clients_python import create_api_keys

FLEETWIRE = str(Path(sys.executable).parent / "fleetwire")


@pytest.fixture(scope="module")
def cli_env(live_mesh: LiveMesh) -> dict[str, str]:
    (key,) = create_api_keys(live_mesh, ["cli"])
    return {**os.environ, **live_mesh.client_env(), "FLEETWIRE_API_KEY": key, "COLUMNS": "200"}


def _fleetwire(
    live_mesh: LiveMesh, env: dict[str, str], *args: str, stdin: str = "", code: int = 0
) -> str:
    result = subprocess.run(
        [FLEETWIRE, *args, "--address", live_mesh.bridge_address],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(f"$ fleetwire {' '.join(args)}\n{result.stdout}{result.stderr}")
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def _pinned(live_mesh: LiveMesh) -> list[str]:
    return [
        arg
        for node in ("node-1", "node-2")
        for arg in ("--node-key", live_mesh.public_key(node).hex())
    ]


def test_cli_submit_streams_and_verifies(live_mesh: LiveMesh, cli_env: dict[str, str]) -> None:
    out = _fleetwire(
        live_mesh, cli_env, "submit", "Once upon a time", "--max-tokens", "16", *_pinned(live_mesh)
    )
    assert "SUCCEEDED" in out
    assert "signature verified\n" in out  # under a pinned node key

    submitted = json.loads(
        _fleetwire(live_mesh, cli_env, "submit", "hello", "--chat", "--no-wait", "--json")
    )
    job_id = submitted["jobId"]
    watched = _fleetwire(live_mesh, cli_env, "watch", job_id)
    assert "SUCCEEDED" in watched
    assert "signature verified (key named by the job)" in watched
    stranger = _fleetwire(live_mesh, cli_env, "status", job_id, "--node-key", "00" * 32)
    assert "signature INVALID" in stranger
    status = json.loads(_fleetwire(live_mesh, cli_env, "status", job_id, "--json"))
    assert status["state"] == "JOB_STATE_SUCCEEDED"
    cancelled = _fleetwire(live_mesh, cli_env, "cancel", job_id)
    assert "SUCCEEDED" in cancelled  # terminal: nothing changes

    refused = _fleetwire(
        live_mesh, {**cli_env, "FLEETWIRE_API_KEY": "fwk_000000000000_x"}, "status", job_id, code=1
    )
    assert "UNAUTHENTICATED" in refused


def test_cli_batch_reports_verified_results(live_mesh: LiveMesh, cli_env: dict[str, str]) -> None:
    prompts = "first prompt\nsecond prompt\n\nthird prompt\n"
    lines = _fleetwire(
        live_mesh, cli_env, "batch", "-", "--max-tokens", "8", "--json", stdin=prompts
    ).splitlines()
    jobs = [json.loads(line) for line in lines if line.startswith("{")]
    assert [job["spec"]["prompt"] for job in jobs] == [
        "first prompt",
        "second prompt",
        "third prompt",
    ]
    assert all(job["state"] == "JOB_STATE_SUCCEEDED" for job in jobs)

    table = _fleetwire(live_mesh, cli_env, "batch", "-", "--max-tokens", "8", stdin="one\ntwo\n")
    assert table.count("verified") == 2
