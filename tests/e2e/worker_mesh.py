"""The mesh of the node-worker tests (``test_node_worker.py``, ``test_node_worker_lifecycle.py``),
one for the session, in its own namespace and database: a scheduler that admits no node on
its own (``FLEETWIRE_SCHEDULER_AUTO_REGISTER_NODES=false``), a bridge, and two vLLM nodes on
the tiny model with 4 slots and a 2048-token context each; their keys are registered with
``fleetwire admin nodes register`` over the scheduler's admin port. node-b is configured by a
TOML file.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from fleetwire.v1 import job_pb2
from fleetwire_tools.supervisor import Child, LocalMesh
from tests.conftest import MODEL_DIR, cleanup_namespace
from tests.e2e.conftest import NODE_START_TIMEOUT, LiveMesh, e2e_env
from tests.support.eventually import eventually_sync
from tests.support.job_client import JobClient, make_spec
from tests.support.mesh_admin import connected_since

CONTEXT = 2048
SLOTS = 4
FLEETWIRE = [sys.executable, "-m", "fleetwire_tools.cli"]
NODES = ("node-a", "node-b")
DRAINING = "stop requested; draining"  # what a node logs on its first SIGTERM


class WorkerMesh(LiveMesh):
    """The module's mesh, with the CLI and node control the tests need."""

    def __init__(self, mesh: LocalMesh, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(mesh, env, log_dir)
        self.dsn = env["FLEETWIRE_POSTGRES_DSN"]
        self.node_env: dict[str, dict[str, str]] = {}
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*FLEETWIRE, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def key_file(self, node_id: str) -> Path:
        return self.mesh.key_dir / f"{node_id}.key"

    def register(self, node_id: str, *extra: str) -> dict[str, str]:
        """Creates the node's key file if needed and registers its public key."""
        key_file = self.key_file(node_id)
        if not key_file.exists():
            self.cli("keys", "new", "--file", str(key_file))
        public = json.loads(self.cli("keys", "show", "--file", str(key_file)).stdout)
        shown: dict[str, str] = json.loads(
            self.cli(
                "admin", "nodes", "register", node_id, "--public-key", public["public_key"], *extra
            ).stdout
        )
        return shown

    def start_node(self, node_id: str) -> Child:
        return self.mesh._spawn(  # the supervisor's own spawn, with this node's extra env
            node_id,
            "node",
            {
                "FLEETWIRE_NODE_NODE_ID": node_id,
                "FLEETWIRE_NODE_KEY_FILE": str(self.key_file(node_id)),
                **self.node_env.get(node_id, {}),
            },
        )

    def connected_since(self, node_id: str) -> float:
        """When the node's current stream was welcomed; larger after a reconnect."""
        return connected_since(self.admin_address, self.operator_key, node_id, self.ca_file)

    def node_log(self, node_id: str) -> str:
        return (self.log_dir / f"{node_id}.log").read_text(errors="replace")

    def offences(self, node_ids: tuple[str, ...]) -> list[asyncpg.Record]:
        """Every penalty charged to ``node_ids``, oldest first."""

        async def fetch() -> list[asyncpg.Record]:
            if self._conn is None:
                self._conn = await asyncpg.connect(self.dsn)
            return list(
                await self._conn.fetch(
                    "SELECT node_id, offence, job_id, attempt FROM node_penalties"
                    " WHERE node_id = ANY($1::text[]) ORDER BY id",
                    list(node_ids),
                )
            )

        return self._loop.run_until_complete(fetch())

    def verdicts(self, node_ids: tuple[str, ...]) -> dict[str, int]:
        """How the nodes' validation answers were judged: PASS and WRONG counts together."""

        async def fetch() -> dict[str, int]:
            if self._conn is None:
                self._conn = await asyncpg.connect(self.dsn)
            rows = await self._conn.fetch(
                "SELECT verdict, count(*) AS n FROM validation_answers"
                " WHERE node_id = ANY($1::text[]) AND verdict IS NOT NULL GROUP BY verdict",
                list(node_ids),
            )
            return {r["verdict"]: r["n"] for r in rows}

        return self._loop.run_until_complete(fetch())

    def attempts(self, job_id: str) -> list[asyncpg.Record]:
        """The job's attempts, over one connection kept for the module (a new connection
        per poll is slow enough on a loaded machine to let a job finish unobserved)."""

        async def fetch() -> list[asyncpg.Record]:
            if self._conn is None:
                self._conn = await asyncpg.connect(self.dsn)
            return list(
                await self._conn.fetch(
                    "SELECT attempt, node_id, outcome, error_reason FROM attempts"
                    " WHERE job_id = $1 ORDER BY attempt",
                    uuid.UUID(job_id),
                )
            )

        return self._loop.run_until_complete(fetch())

    def close(self) -> None:
        if self._conn is not None:
            self._loop.run_until_complete(self._conn.close())
        self._loop.close()

    def wait_until(self, what: str, check: object, timeout: float) -> None:
        assert callable(check)

        def done() -> bool:
            if check():
                return True
            if exited := [c.name for c in self.mesh.failed()]:
                raise AssertionError(f"waiting for {what}: {exited} exited")
            return False

        eventually_sync(done, within=timeout, interval=0.2, what=what)


@pytest.fixture(scope="session")
def worker_mesh(
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[WorkerMesh]:
    if not (MODEL_DIR / "config.json").exists():
        pytest.fail(f"the tiny model is missing at {MODEL_DIR}: run `make model`")
    namespace = f"{run_id}w"
    key_dir = tmp_path_factory.mktemp("worker-keys")
    env = e2e_env(namespace, key_dir, tmp_path_factory.mktemp("worker-certs")) | {
        "FLEETWIRE_SCHEDULER_AUTO_REGISTER_NODES": "false",
        "FLEETWIRE_NODE_MAX_NUM_SEQS": str(SLOTS),
        "FLEETWIRE_NODE_MAX_MODEL_LEN": str(CONTEXT),
        "FLEETWIRE_NODE_DRAIN_GRACE": "60",
        "FLEETWIRE_NODE_KEEP_JOBS_ON_RECONNECT": "true",
        "FLEETWIRE_SCHEDULER_RECONNECT_GRACE": "30",
    }
    log_dir = tmp_path_factory.mktemp("worker-logs")
    config = tmp_path_factory.mktemp("node-config") / "node-b.toml"
    config.write_text(
        'region = "eu-west"\n'
        'networks = ["mainnet", "testnet"]\n\n'
        "[[models]]\n"
        'name = "tiny-llama"\n'
        f"path = {json.dumps(str(MODEL_DIR))}\n"
        'version = "tiny-test-1"\n'
        f"max_num_seqs = {SLOTS}\n"
        f"max_model_len = {CONTEXT}\n"
        "kv_cache_mib = 256\n"
        "price_per_1k_prompt_tokens = 100\n"
        "price_per_1k_completion_tokens = 300\n"
    )
    mesh = LocalMesh(nodes=0, env=env, key_dir=key_dir, log_dir=log_dir)
    live = WorkerMesh(mesh, env, log_dir)
    live.node_env["node-b"] = {"FLEETWIRE_NODE_CONFIG": str(config)}
    mesh.start()
    try:
        eventually_sync(
            lambda: live.cli("admin", "nodes", "list", check=False).returncode == 0,
            within=60,
            what="the scheduler's admin port",
        )
        for node_id in NODES:
            live.register(node_id)
            live.start_node(node_id)
        live.wait_for_nodes(set(NODES), NODE_START_TIMEOUT)
        yield live
    finally:
        failed_before = request.session.testsfailed
        live.close()
        mesh.stop()
        if request.session.testsfailed > failed_before or failed_before:
            print(live.log_tails(120))
        asyncio.run(cleanup_namespace(namespace))


def client_of(mesh: WorkerMesh) -> JobClient:
    return mesh.client()


def long_spec(prompt: str, tokens: int) -> job_pb2.JobSpec:
    spec = make_spec(prompt, max_tokens=tokens)
    spec.sampling.ignore_eos = True
    return spec


def running_on(mesh: WorkerMesh, job_id: str) -> str | None:
    """The node running the job, as soon as it has accepted it (its attempt is RUNNING in
    PostgreSQL); None when it finished before it was seen running. Read from the database
    rather than Status or Watch: on a loaded machine the job would otherwise be half done
    before the test acts."""

    def running_node() -> str | bool:
        attempts = mesh.attempts(job_id)
        if attempts and attempts[-1]["outcome"] == "SUCCEEDED":
            return True  # too late to act on it
        if attempts and attempts[-1]["outcome"] == "RUNNING":
            return str(attempts[-1]["node_id"])
        return False

    seen = eventually_sync(running_node, within=120, interval=0.02, what="the job to start")
    return seen if isinstance(seen, str) else None


def start_long_job(
    mesh: WorkerMesh, client: JobClient, prompt: str, tokens: int, *, tries: int = 3
) -> tuple[str, str]:
    """Submits a long ignore-eos job and returns (job id, node) once it runs. A job that
    finished before the test could see it running proves nothing (on a starved machine the
    Submit answer can arrive seconds late while the node generates): another is submitted,
    up to ``tries`` times."""
    for attempt in range(1, tries + 1):
        job_id = client.submit(long_spec(f"{prompt} ({attempt})", tokens)).job_id
        node = running_on(mesh, job_id)
        if node is not None:
            return job_id, node
    pytest.fail(f"in {tries} tries every {tokens}-token job finished before it was seen running")
