"""A real local mesh for end-to-end tests: scheduler, bridge and two node agents running
vLLM on the tiny model, as child processes (``fleetwire_tools.supervisor.LocalMesh``),
over TLS: the servers present a certificate of a CA made for the run, which the nodes and
every client of the tests verify."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetwire.domain.keys import load_key
from fleetwire_tools.supervisor import LocalMesh
from tests.conftest import MODEL_DIR, cleanup_namespace, free_port, isolated_env
from tests.support.eventually import eventually_sync
from tests.support.job_client import JobClient
from tests.support.mesh_admin import create_operator_key, listed_nodes
from tests.support.tls import make_certificates, tls_env

NODE_START_TIMEOUT = 300.0
# The nodes serve the tiny model's whole context (2,048 tokens, not the default 512), so a
# job that must still be running when a test cancels it can be long: 2,000 tokens take
# about 4 s on an idle node, longer than any stall of a loaded machine seen so far.
CONTEXT = 2048
LONG_JOB_TOKENS = 2000


def e2e_env(namespace: str, key_dir: Path, cert_dir: Path) -> dict[str, str]:
    """An isolated mesh's variables with TLS on (a CA and certificate in ``cert_dir``) and
    an admin operator's key (``FLEETWIRE_ADMIN_KEY``, what the CLI sends), made in the
    mesh's database before anything starts."""
    env = isolated_env(namespace, key_dir / "node.key") | tls_env(make_certificates(cert_dir))
    env["FLEETWIRE_ADMIN_KEY"] = asyncio.run(create_operator_key(env["FLEETWIRE_POSTGRES_DSN"]))
    return env


class LiveMesh:
    def __init__(self, mesh: LocalMesh, env: dict[str, str], log_dir: Path) -> None:
        self.mesh = mesh
        self.env = env
        self.log_dir = log_dir
        self.bridge_address = f"127.0.0.1:{env['FLEETWIRE_BRIDGE_PORT']}"
        self.ca_file = Path(env["FLEETWIRE_CA_FILE"])
        self.admin_address = f"127.0.0.1:{env['FLEETWIRE_SCHEDULER_ADMIN_PORT']}"
        self.operator_key = env["FLEETWIRE_ADMIN_KEY"]
        # The bridge's OpenAI-compatible API, over TLS with the run's CA.
        self.http_url = f"https://localhost:{env['FLEETWIRE_BRIDGE_HTTP_PORT']}/v1"

    def client(self) -> JobClient:
        return JobClient(self.bridge_address, self.ca_file)

    def client_env(self) -> dict[str, str]:
        """What a client process (CLI, SDK, example, grpcurl) needs to trust the mesh."""
        return {"FLEETWIRE_CA_FILE": str(self.ca_file), "FLEETWIRE_INSECURE": "false"}

    def public_key(self, node_id: str) -> bytes:
        return bytes(load_key(self.mesh.key_dir / f"{node_id}.key").verify_key)

    @property
    def scheduler_address(self) -> str:
        return self.env["FLEETWIRE_NODE_SCHEDULER_ADDRESS"]

    def connected_nodes(self) -> set[str]:
        """Node ids the scheduler's MeshAdminService lists as connected."""
        return set(listed_nodes(self.admin_address, self.operator_key, self.ca_file))

    def wait_for_nodes(self, nodes: set[str], timeout: float) -> None:
        def connected() -> bool:
            if failed := self.mesh.failed():
                raise RuntimeError(f"mesh process exited early: {[c.name for c in failed]}")
            return nodes <= self.connected_nodes()

        eventually_sync(connected, within=timeout, interval=0.5, what=f"nodes {nodes} to connect")

    def log_tails(self, lines: int = 60) -> str:
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"===== {path.name} =====\n" + "\n".join(tail))
        return "\n".join(out)


@pytest.fixture(scope="session")
def live_mesh(
    run_id: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[LiveMesh]:
    """Two vLLM nodes, a scheduler and a bridge in a namespace, database and ports of their
    own (apart from the in-process servers of the integration tests)."""
    if not (MODEL_DIR / "config.json").exists():
        pytest.fail(f"the tiny model is missing at {MODEL_DIR}: run `make model`")
    namespace = f"{run_id}e"
    key_dir = tmp_path_factory.mktemp("node-keys")
    env = e2e_env(namespace, key_dir, tmp_path_factory.mktemp("certs"))
    env["FLEETWIRE_NODE_MAX_MODEL_LEN"] = str(CONTEXT)
    env["FLEETWIRE_BRIDGE_HTTP_PORT"] = str(free_port())  # a child's port must be known
    log_dir = tmp_path_factory.mktemp("mesh-logs")
    mesh = LocalMesh(nodes=2, env=env, key_dir=key_dir, log_dir=log_dir)
    live = LiveMesh(mesh, env, log_dir)
    mesh.start()
    try:
        live.wait_for_nodes({"node-1", "node-2"}, NODE_START_TIMEOUT)
        yield live
    finally:
        failed_before = request.session.testsfailed
        mesh.stop()
        if failed_before:
            print(live.log_tails())
        asyncio.run(cleanup_namespace(namespace))


# The node-worker tests' mesh (one for the session, shared by their two modules).
from tests.e2e.worker_mesh import worker_mesh  # noqa: E402, F401
