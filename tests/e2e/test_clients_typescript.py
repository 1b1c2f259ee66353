"""The TypeScript client (clients/typescript) against the live mesh: node's test runner runs
clients/typescript/test/mesh.test.ts in a subprocess, pointed at this run's bridge with a
real API key, a key of a tenant with a tight rate limit (so the bridge's admission refuses
with RetryInfo and the client's retry is seen through), and the pinned node keys, so one
mesh serves every client's tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess

from pydantic import SecretStr

from fleetwire.process.settings import PostgresSettings
from fleetwire.store.db import open_pool
from fleetwire.store.tenants import TenantStore
from tests.conftest import ROOT
from tests.e2e.conftest import LiveMesh
from tests.e2e.test_clients_python import create_api_keys

MESH_TESTS = "clients/typescript/test/mesh.test.ts"
LIMITED_TENANT = "ts-limited"


async def _limit(dsn: str, tenant: str, *, rate_per_second: float, burst: int) -> None:
    pool = await open_pool(PostgresSettings(dsn=SecretStr(dsn)), migrate=False)
    try:
        await TenantStore(pool).set_limits(tenant, rate_per_second=rate_per_second, burst=burst)
    finally:
        await pool.close()


def test_typescript_client_against_the_live_mesh(live_mesh: LiveMesh) -> None:
    tenant_key, limited_key = create_api_keys(live_mesh, ["ts-tenant", LIMITED_TENANT])
    dsn = live_mesh.env["FLEETWIRE_POSTGRES_DSN"]
    asyncio.run(_limit(dsn, LIMITED_TENANT, rate_per_second=0.5, burst=1))
    env = {
        **os.environ,
        **live_mesh.client_env(),
        "FLEETWIRE_ADDRESS": live_mesh.bridge_address,
        "FLEETWIRE_API_KEY": tenant_key,
        "FLEETWIRE_TEST_LIMITED_API_KEY": limited_key,
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
    assert counts == {"pass": "4", "fail": "0", "skipped": "0"}, report
