"""The documented examples work as written, against the live mesh: the Python and TypeScript
quickstarts (clients/*/examples/) and the grpcurl commands of clients/grpcurl/README.md,
each with a real API key. Run with ``-s`` to see the transcripts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import LiveMesh
from tests.e2e.test_clients_python import create_api_keys

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
VERIFIED = re.compile(r"^\d+ tokens by node-[12] \(key [0-9a-f]{16}\): signature verified$", re.M)


@pytest.fixture(scope="module")
def example_env(live_mesh: LiveMesh) -> dict[str, str]:
    (key,) = create_api_keys(live_mesh, ["examples"])
    return {
        **os.environ,
        **live_mesh.client_env(),
        "FLEETWIRE_ADDRESS": live_mesh.bridge_address,
        "FLEETWIRE_API_KEY": key,
    }


def _run(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    print(f"$ {' '.join(args)}\n{result.stdout}{result.stderr}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _node_keys(live_mesh: LiveMesh) -> list[str]:
    return [live_mesh.public_key(node).hex() for node in ("node-1", "node-2")]


def test_python_quickstart(live_mesh: LiveMesh, example_env: dict[str, str]) -> None:
    example = "clients/python/examples/quickstart.py"
    out = _run([sys.executable, example, *_node_keys(live_mesh)], example_env)
    assert "[SUCCEEDED]" in out
    assert VERIFIED.search(out), out


def test_typescript_quickstart(live_mesh: LiveMesh, example_env: dict[str, str]) -> None:
    example = "clients/typescript/examples/quickstart.ts"
    out = _run(["node", "--import", "tsx", example, *_node_keys(live_mesh)], example_env)
    assert "[SUCCEEDED]" in out
    assert VERIFIED.search(out), out


def _grpcurl(env: dict[str, str], *args: str) -> str:
    header = f"authorization: Bearer {env['FLEETWIRE_API_KEY']}"
    return _run([GRPCURL, "-cacert", env["FLEETWIRE_CA_FILE"], "-H", header, *args], env)


def test_grpcurl_readme_commands(example_env: dict[str, str]) -> None:
    address = example_env["FLEETWIRE_ADDRESS"]
    service = "fleetwire.v1.JobService"
    assert service in _grpcurl(example_env, address, "list").split()
    assert "rpc Watch" in _grpcurl(example_env, address, "describe", service)

    submit = {
        "job": {
            "model": "tiny-llama",
            "prompt": "Once upon a time",
            "sampling": {"max_tokens": 160, "ignore_eos": True},
            "priority": "PRIORITY_CLASS_URGENT",
        }
    }
    job = json.loads(_grpcurl(example_env, "-d", json.dumps(submit), address, f"{service}/Submit"))
    job_id = job["job"]["job_id"]
    ident = json.dumps({"job_id": job_id})

    watched = _grpcurl(example_env, "-d", ident, address, f"{service}/Watch")
    events = [json.loads(chunk) for chunk in re.split(r"(?<=\n})\n(?={)", watched.strip())]
    # Watch streams the chunks (replayed when the job already finished) and ends with the
    # terminal state.
    assert events[-1]["job"]["state"] == "JOB_STATE_SUCCEEDED"
    assert any("chunk" in e for e in events)
    assert events[-1]["job"]["state"] == "JOB_STATE_SUCCEEDED"

    status = json.loads(_grpcurl(example_env, "-d", ident, address, f"{service}/Status"))
    assert status["job"]["state"] == "JOB_STATE_SUCCEEDED"
    assert status["job"]["signature"]["key_id"]
    cancelled = json.loads(_grpcurl(example_env, "-d", ident, address, f"{service}/Cancel"))
    assert cancelled["job"]["state"] == "JOB_STATE_SUCCEEDED"  # terminal: nothing changes

    # SubmitStream: three submits on one stream, each answered by its ref.
    SMALL = {"max_tokens": 8}  # noqa: N806
    requests = "\n".join(
        json.dumps(
            {"ref": ref, "submit": {"job": {"model": model, "prompt": "p", "sampling": SMALL}}}
        )
        for ref, model in ((1, "tiny-llama"), (2, "no-such-model"), (3, "tiny-llama"))
    )
    streamed = _grpcurl(example_env, "-d", requests, address, f"{service}/SubmitStream")
    parts = re.split(r"(?<=\n})\n(?={)", streamed.strip())
    answers = {a["ref"]: a for a in (json.loads(part) for part in parts)}
    assert set(answers) == {"1", "2", "3"}
    assert answers["1"]["accepted"]["job"]["job_id"] != answers["3"]["accepted"]["job"]["job_id"]
    assert answers["2"]["error"]["code"] == 3  # INVALID_ARGUMENT, as Submit would say
