"""The Python SDK as an application installs it: into a fresh venv, from this repository's
two distributions (``protocol/`` and ``clients/python``), with nothing of the core.

The venv gets only what those two declare (grpcio, protobuf, PyNaCl and the google.rpc
error-detail messages, with their own dependencies), and a script run in it submits a job
to the live mesh, streams it and verifies the node's signature offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import LiveMesh

ROOT = Path(__file__).resolve().parents[2]

# Distributions a fresh venv may hold after installing the SDK: ours, what they declare,
# what those need in turn (PyNaCl: cffi, pycparser; grpcio: typing-extensions), and the
# venv's own installer.
ALLOWED = {
    "fleetwire-protocol",
    "fleetwire-client",
    "grpcio",
    "protobuf",
    "pynacl",
    "googleapis-common-protos",
    "cffi",
    "pycparser",
    "typing-extensions",
    "pip",
    "setuptools",
}

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    from fleetwire_client import Client, JobRequest, Token

    core = [m for m in ("fleetwire.store", "fleetwire.process", "asyncpg", "aiormq", "redis")
            if importlib.util.find_spec(m) is not None]
    with Client(sys.argv[1]) as client:
        job = client.submit(JobRequest(prompt="fresh venv", max_tokens=8))
        tokens = sum(e.token_count for e in client.watch(job.job_id, timeout=120)
                     if isinstance(e, Token))
        done = client.wait(job.job_id, timeout=120)
    keys = json.loads(sys.argv[2])
    signer = done.signature.node_id if done.signature else ""
    print(json.dumps({"core": core, "state": done.state.name, "tokens": tokens,
                      "verified": signer in keys and done.verify(keys[signer]),
                      "forged": done.verify(keys["other"])}))
    """
)


def _normalised(name: str) -> str:
    return name.lower().replace("_", "-")


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("sdk-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            *("-m", "pip", "install", "--disable-pip-version-check", "-q"),
            str(ROOT / "protocol"),
            str(ROOT / "clients" / "python"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}{install.stderr}"
    return python


def test_the_sdk_installs_with_the_protocol_and_nothing_of_the_core(sdk_venv: Path) -> None:
    listed = subprocess.run(
        [str(sdk_venv), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    installed = {_normalised(d["name"]) for d in json.loads(listed.stdout)}
    assert {"fleetwire-protocol", "fleetwire-client"} <= installed
    assert installed <= ALLOWED, f"the SDK pulled in {sorted(installed - ALLOWED)}"


def test_the_installed_sdk_runs_and_verifies_a_job(sdk_venv: Path, live_mesh: LiveMesh) -> None:
    # Either node may run the job: the script pins the key of the node that signed it, and
    # checks that a key of no node does not verify.
    keys = {node: live_mesh.public_key(node).hex() for node in ("node-1", "node-2")}
    keys["other"] = "11" * 32
    run = subprocess.run(
        [str(sdk_venv), "-c", SCRIPT, live_mesh.bridge_address, json.dumps(keys)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=sdk_venv.parent,  # not the repository: nothing of it on sys.path
        # TLS: the SDK verifies the bridge against the mesh's CA, read from the environment.
        env={"FLEETWIRE_CA_FILE": str(live_mesh.ca_file), "PATH": os.environ["PATH"]},
    )
    assert run.returncode == 0, f"the SDK script failed:\n{run.stdout}{run.stderr}"
    answer = json.loads(run.stdout.splitlines()[-1])
    assert answer["core"] == [], f"core modules importable in the SDK venv: {answer['core']}"
    assert answer["state"] == "SUCCEEDED"
    assert answer["tokens"] > 0
    assert answer["verified"], "the signature does not verify under the signing node's key"
    assert not answer["forged"], "a signature verified under a key of no node"
