"""Children die with their parent (``fleetwire.process.lifeline``), SIGKILL included.

Each test starts a real parent, records the processes below it from /proc, kills the
parent with SIGKILL and waits until none of them is left: small parents first (spawned,
forked and launched children), then a node agent on vLLM (killed while serving, and while
its engine is still starting) and ``fleetwire up``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from fleetwire.v1 import mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from tests.conftest import MODEL_DIR, ROOT, cleanup_namespace, free_port, isolated_env
from tests.faults.conftest import SchedulerProcess
from tests.support.eventually import eventually
from tests.support.mesh_admin import bearer, create_operator_key
from tests.support.processes import ProcessRecord, descendants, still_running

# After the parent's death the kernel signals at once; allow for a loaded machine.
GONE_WITHIN = 15.0
ENGINE_START_TIMEOUT = 300.0


@dataclass
class Parent:
    """A started parent process and its log (its output, and its children's)."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        assert self.process.poll() is None, f"the parent exited with {self.process.returncode}"
        return True

    async def first_line(self) -> str:
        """The first line it printed (what the test needs to know)."""
        await eventually(lambda: self.alive() and "\n" in self.log.read_text(), 60, "its output")
        return self.log.read_text().splitlines()[0]


class Parents:
    """Starts parents; at the end kills them and whatever is left below them."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self.started: list[Parent] = []
        self._seen: list[ProcessRecord] = []

    def start(
        self, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Parent:
        log = self._log_dir / f"parent-{len(self.started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                env={**os.environ, **(env or {})},
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        parent = Parent(process, log)
        self.started.append(parent)
        return parent

    def tree(self, parent: Parent) -> list[ProcessRecord]:
        """The processes below ``parent`` now; remembered, so that whatever a failed test
        leaves of them is killed at the end."""
        records = descendants(parent.pid)
        self._seen.extend(records)
        return records

    def kill_all(self) -> None:
        for parent in self.started:
            if parent.process.poll() is None:
                self.tree(parent)
                parent.process.kill()
            parent.process.wait(10)
        for record in still_running(self._seen):
            os.kill(record.pid, signal.SIGKILL)


@pytest.fixture
def parents(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Parents]:
    """Parent processes of the test; their logs are printed when it failed."""
    started = Parents(tmp_path)
    yield started
    started.kill_all()
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        for parent in started.started:
            text = parent.log.read_text(errors="replace")[-6000:]
            print(f"===== {parent.log.name} =====\n{text}")


async def kill_and_expect_gone(parent: Parent, tree: list[ProcessRecord]) -> None:
    """SIGKILL ``parent``; every process of ``tree`` must end soon after."""
    parent.process.send_signal(signal.SIGKILL)
    parent.process.wait(10)

    def all_gone() -> bool:
        return not still_running(tree)

    try:
        await eventually(all_gone, GONE_WITHIN, "the killed parent's processes to end")
    except AssertionError as err:
        left = ", ".join(str(r) for r in still_running(tree))
        raise AssertionError(f"{err}; still running: {left}") from None


async def connected_nodes(admin_port: int, key: str, ca_file: Path | None = None) -> set[str]:
    """Node ids the scheduler's admin port lists as connected (empty while it is down);
    TLS verified against ``ca_file`` when given."""
    address = f"127.0.0.1:{admin_port}"
    roots = None
    if ca_file is not None:
        try:
            roots = await asyncio.to_thread(ca_file.read_bytes)
        except FileNotFoundError:  # not made yet: the mesh is not up
            return set()
    if roots is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(roots))
    try:
        async with channel:
            stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
            reply = await stub.ListNodes(
                mesh_admin_service_pb2.ListNodesRequest(), timeout=5, metadata=bearer(key)
            )
    except grpc.RpcError:
        return set()
    return {node.node_id for node in reply.nodes}


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


# --- Small parents: the mechanism by itself. ----------------------------------------------

MULTIPROCESSING_PARENT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    from fleetwire.process import lifeline
    lifeline.engines_die_with_this_process()
    child = multiprocessing.get_context(sys.argv[1]).Process(target=time.sleep, args=(300,))
    child.start()
    print(child.pid, flush=True)
    time.sleep(300)
    """
)


@pytest.mark.parametrize("method", ["spawn", "fork"])
async def test_multiprocessing_children_die_with_a_killed_parent(
    parents: Parents, method: str
) -> None:
    """How vLLM starts its engine: a spawned child (through the launcher) or a forked one
    (through the at-fork hook) is gone once its parent is killed."""
    parent = parents.start(sys.executable, "-c", MULTIPROCESSING_PARENT, method)
    child = int(await parent.first_line())
    tree = parents.tree(parent)
    assert child in {r.pid for r in tree}
    await kill_and_expect_gone(parent, tree)


LAUNCHING_PARENT = textwrap.dedent(
    """
    import subprocess, time
    from fleetwire.process.lifeline import bound_command
    child = subprocess.Popen(bound_command(["sleep", "300"]), start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(300)
    """
)


async def test_launched_program_dies_with_a_killed_parent(parents: Parents) -> None:
    """How ``fleetwire up`` starts its services: the launcher arms the lifeline and execs
    the program, which keeps the pid (in a session of its own) and dies with the parent."""
    parent = parents.start(sys.executable, "-c", LAUNCHING_PARENT)
    child = int(await parent.first_line())
    await eventually(
        lambda: any(r.pid == child and r.name == "sleep" for r in descendants(parent.pid)),
        30,
        "the launcher to exec the program",
    )
    await kill_and_expect_gone(parent, parents.tree(parent))


def test_launcher_ends_a_child_whose_parent_is_already_gone() -> None:
    """The race: a parent that died before the child armed its lifeline (the child's
    parent is then another process) still takes the child with it."""
    not_my_parent = str(os.getppid())
    result = subprocess.run(
        [sys.executable, "-m", "fleetwire.process.lifeline", not_my_parent, "--", "sleep", "30"],
        timeout=20,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL


# --- A node agent on vLLM. ------------------------------------------------------------------


def start_node_agent(
    parents: Parents, mesh_env: dict[str, str], tmp_path: Path, node_id: str, scheduler: int
) -> Parent:
    """``python -m node`` on the tiny model, dialling the scheduler at port ``scheduler``."""
    if not (MODEL_DIR / "config.json").exists():
        pytest.fail(f"the tiny model is missing at {MODEL_DIR}: run `make model`")
    env = {
        **mesh_env,
        "FLEETWIRE_NODE_SCHEDULER_ADDRESS": f"127.0.0.1:{scheduler}",
        "FLEETWIRE_NODE_NODE_ID": node_id,
        "FLEETWIRE_NODE_KEY_FILE": str(tmp_path / f"{node_id}.key"),
    }
    return parents.start(sys.executable, "-m", "node", env=env)


async def test_engine_dies_with_a_killed_node_agent(
    parents: Parents,
    start_scheduler: Callable[[str], SchedulerProcess],
    mesh_env: dict[str, str],
    tmp_path: Path,
    operator_key: str,
) -> None:
    """A serving node agent killed with SIGKILL leaves none of its engine's processes
    (``VLLM::EngineCore``, ``VLLM::Worker``) holding memory."""
    scheduler = start_scheduler("lifeline-scheduler")
    agent = start_node_agent(parents, mesh_env, tmp_path, "lifeline-serving", scheduler.port)

    async def serving() -> bool:
        listed = await connected_nodes(scheduler.admin_port, operator_key)
        return agent.alive() and "lifeline-serving" in listed

    await eventually(serving, ENGINE_START_TIMEOUT, "the node to start its engine and connect")
    tree = parents.tree(agent)
    titles = {r.title for r in tree}
    assert {"VLLM::EngineCore", "VLLM::Worker"} <= titles, [str(r) for r in tree]
    await kill_and_expect_gone(agent, tree)


async def test_engine_dies_with_a_node_agent_killed_while_it_starts(
    parents: Parents, mesh_env: dict[str, str], tmp_path: Path
) -> None:
    """Killed as soon as it has spawned the engine core, long before vLLM runs any plugin
    there (that comes after 10-30 s of imports and a handshake that would wait 5 minutes
    for the dead agent): the engine core is gone at once."""
    agent = start_node_agent(parents, mesh_env, tmp_path, "lifeline-starting", free_port())

    def engine_core_spawned() -> bool:
        return agent.alive() and any(
            "--multiprocessing-fork" in r.cmdline for r in descendants(agent.pid)
        )

    await eventually(engine_core_spawned, ENGINE_START_TIMEOUT, "the engine core process")
    await kill_and_expect_gone(agent, parents.tree(agent))


# --- fleetwire up. ------------------------------------------------------------------------


async def test_fleetwire_up_killed_leaves_none_of_its_processes(
    parents: Parents, run_id: str, tmp_path: Path
) -> None:
    """``fleetwire up`` killed with SIGKILL takes its scheduler, bridge, node and console with it
    (a bench node: no engine to wait for; the node tests above cover the engines)."""
    namespace = f"{run_id}u"
    # A bench node (bench/ is not installed: importable from the checkout).
    env = isolated_env(namespace, tmp_path / "node.key") | {"PYTHONPATH": str(ROOT)}
    admin_port = int(env["FLEETWIRE_SCHEDULER_ADMIN_PORT"])
    bridge_port = int(env["FLEETWIRE_BRIDGE_PORT"])
    key = await create_operator_key(env["FLEETWIRE_POSTGRES_DSN"])
    # The dev profile of `fleetwire up`: TLS with the CA it makes in its working directory.
    ca_file = tmp_path / ".cache" / "certs" / "ca.pem"
    try:
        up = parents.start(
            sys.executable,
            "-m",
            "fleetwire_tools.cli",
            "up",
            "--nodes",
            "1",
            "--node-module",
            "bench.bench_node",
            env=env,
            cwd=tmp_path,
        )

        async def mesh_up() -> bool:
            return (
                up.alive()
                and listening(bridge_port)
                and "node-1" in await connected_nodes(admin_port, key, ca_file)
            )

        await eventually(mesh_up, 120, "the mesh to come up")
        tree = parents.tree(up)
        services = {r.cmdline.rsplit(" -m ", 1)[-1] for r in tree}
        assert {"scheduler", "broker_bridge", "bench.bench_node", "console"} <= services, [
            str(r) for r in tree
        ]
        await kill_and_expect_gone(up, tree)
    finally:
        await cleanup_namespace(namespace)
