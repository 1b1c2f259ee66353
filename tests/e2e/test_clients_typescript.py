"""The TypeScript client (clients/typescript) against the live mesh: node's test runner runs
clients/typescript/test/mesh.test.ts in a subprocess, pointed at this run's bridge with a
real API key and the pinned node keys, so one mesh serves every client's tests."""

from __future__ import annotations

import json
import os
import re
import subprocess

from tests.conftest import ROOT
from tests.e2e.conftest import LiveMesh
from tests.e2e.test_clients_python import create_api_keys

MESH_TESTS = "clients/typescript/test/mesh.test.ts"


def test_typescript_client_against_the_live_mesh(live_mesh: LiveMesh) -> None:
    env = {
        **os.environ,
        **live_mesh.client_env(),
        "FLEETWIRE_ADDRESS": live_mesh.bridge_address,
        "FLEETWIRE_API_KEY": create_api_keys(live_mesh, ["ts-tenant"])[0],
        "FLEETWIRE_TEST_NODE_KEYS": json.dumps(
            {node: live_mesh.public_key(node).hex() for node in ("node-1", "node-2")}
        ),
    }
    result = subprocess.run(
        ["node", "--import", "tsx", "--test", "--test-reporter=tap", MESH_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    counts = dict(re.findall(r"^# (pass|fail|skipped) (\d+)$", report, re.MULTILINE))
    assert counts == {"pass": "3", "fail": "0", "skipped": "0"}, report
