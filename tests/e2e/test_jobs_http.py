"""The jobs API's 202 flow on the live mesh (real vLLM nodes, HTTPS with the run's CA), run
with the real ``curl`` exactly as docs/http.md ("The 202 flow with curl") writes it — the
commands are read from the doc, only the address, key and CA are the run's — so the doc
cannot rot: submit (202 + Location), poll to SUCCEEDED with a signature that verifies
offline, events cut after five and resumed by Last-Event-ID with no chunk repeated or
skipped, and a running job cancelled."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from google.protobuf import json_format

from fleetwire.protocol.facts import verify_job
from fleetwire.v1 import job_pb2
from tests.e2e.conftest import LiveMesh
from tests.e2e.test_clients_python import create_api_keys
from tests.support.sse import Event, parse_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "http.md"
HEADING = "### The 202 flow with curl"


def doc_commands() -> str:
    """The ``sh`` block under the heading, as the doc has it."""
    text = DOC.read_text()
    assert HEADING in text, f"docs/http.md has no {HEADING!r}"
    found = re.search(r"```sh\n(.*?)```", text[text.index(HEADING) :], re.S)
    assert found is not None, "no sh block under the heading"
    return found.group(1)


README = DOC.parents[1] / "README.md"
README_MARK = "<!-- curl-202-example"


def readme_commands() -> str:
    """The README's curl example of the 202 flow (the ``sh`` block after its marker)."""
    text = README.read_text()
    assert README_MARK in text, "README.md has no curl example of the 202 flow"
    found = re.search(r"```sh\n(.*?)```", text[text.index(README_MARK) :], re.S)
    assert found is not None, "no sh block after the marker"
    return found.group(1)


def run_commands(commands: str, live_mesh: LiveMesh, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``commands`` under bash -euo pipefail with the run's address, key and CA."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is not installed"
    [key] = create_api_keys(live_mesh, [f"curl-{uuid.uuid4().hex[:6]}"])
    env = {
        "PATH": os.environ["PATH"],
        "BRIDGE_URL": live_mesh.http_url.removesuffix("/v1"),
        "FLEETWIRE_API_KEY": key,
        "FLEETWIRE_CA_FILE": str(live_mesh.ca_file),
    }
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 0, (run.stdout, run.stderr, live_mesh.log_tails())
    return run


def events_in(path: Path) -> list[Event]:
    return parse_events(path.read_text().splitlines())


def chunk_keys(events: list[Event]) -> list[tuple[int, int]]:
    return [(e.data["attempt"], e.data["sequence"]) for e in events if e.event == "chunk"]


def test_the_readme_curl_example(live_mesh: LiveMesh, tmp_path: Path) -> None:
    run_commands(readme_commands(), live_mesh, tmp_path)
    view = json.loads((tmp_path / "job.json").read_text())
    assert view["state"] == "SUCCEEDED"
    job = json_format.ParseDict(view["job"], job_pb2.Job())
    assert verify_job(job, live_mesh.public_key(view["signature"]["node_id"]))


def test_the_documented_curl_flow(live_mesh: LiveMesh, tmp_path: Path) -> None:
    run = run_commands(doc_commands(), live_mesh, tmp_path)
    printed = run.stdout.splitlines()

    # Submit and poll: the Location printed first, the job SUCCEEDED and signed.
    assert re.fullmatch(r"/v1/jobs/[0-9a-f-]{36}", printed[0]), printed
    view = json.loads((tmp_path / "job.json").read_text())
    assert view["state"] == "SUCCEEDED"
    assert printed[1] == '"state":"SUCCEEDED"'
    assert f"/v1/jobs/{view['id']}" == printed[0]
    assert view["output"]
    assert view["usage"]["completion_tokens"] >= 1
    job = json_format.ParseDict(view["job"], job_pb2.Job())
    assert verify_job(job, live_mesh.public_key(view["signature"]["node_id"]))

    # Events: five, the client gone; then the rest after Last-Event-ID.
    first, second = events_in(tmp_path / "events-1.txt"), events_in(tmp_path / "events-2.txt")
    assert len(first) == 5
    assert chunk_keys(first), "the first part saw no chunk: the cut tested nothing"
    assert "done" not in [e.event for e in first]
    # The current state first (a job that finished meanwhile replays its chunks first).
    assert second[0].event in ("state", "chunk")
    if second[0].event == "state":
        assert second[0].id == first[-1].id  # a state event carries the resume cursor
    assert [e.event for e in second[-2:]] == ["state", "done"]
    final = second[-2].data
    assert final["state"] == "SUCCEEDED"
    keys = chunk_keys(first) + chunk_keys(second)
    assert len(set(keys)) == len(keys), "a chunk was repeated"
    attempt = final["signature"]["attempt"]
    assert keys == [(attempt, n) for n in range(1, len(keys) + 1)], "a chunk was skipped"
    texts = [e.data["text"] for e in first + second if e.event == "chunk"]
    assert "".join(texts) == final["output"]
    assert final["usage"]["completion_tokens"] == 400

    # The long job cancelled while it ran.
    assert printed[-1] == '"state":"CANCELLED"', printed
