"""``fleetwire demo``: the whole mesh on this machine, real jobs, verified signatures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rich.console import Console

from fleetwire.client_calls import JobClient, is_terminal, make_spec, state_name
from fleetwire.settings import Settings, load_settings
from fleetwire.supervisor import LocalMesh
from fleetwire.v1 import job_pb2
from fleetwire.verify import verify_job

PROMPTS = [
    ("urgent", "The mesh routes every job"),
    ("normal", "Once upon a time"),
    ("bulk", "A list of GPU nodes:"),
    ("urgent", "Signed results prove"),
    ("normal", "Tokens stream back"),
    ("bulk", "The scheduler verifies"),
]


def demo_env(settings: Settings) -> dict[str, str]:
    """The demo's own namespace and database (``<db>_demo``), so it never meets the state
    of a mesh you run with ``fleetwire up`` (or of an earlier demo)."""
    parts = urlsplit(settings.postgres.dsn.get_secret_value())
    database = parts.path.lstrip("/") or "fleetwire"
    dsn = urlunsplit(parts._replace(path=f"/{database}_demo"))
    return {"FLEETWIRE_NAMESPACE": "demo", "FLEETWIRE_POSTGRES_DSN": dsn}


async def _fresh_database(dsn: str) -> None:
    parts = urlsplit(dsn)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')
    finally:
        await admin.close()


def run_demo(*, nodes: int, jobs: int, timeout: float, console: Console) -> int:
    """Returns the process exit code: 0 when every job SUCCEEDED with a valid signature."""
    settings = load_settings()
    env = demo_env(settings)
    asyncio.run(_fresh_database(env["FLEETWIRE_POSTGRES_DSN"]))
    mesh = LocalMesh(
        nodes=nodes,
        env=env,
        key_dir=Path(".cache/demo-keys"),
        log_dir=Path(".cache/demo-logs"),
    )
    console.print(
        f"[bold]fleetwire demo[/]: starting scheduler, bridge and {nodes} vLLM node(s) "
        "(logs in .cache/demo-logs/)"
    )
    mesh.start()
    client = JobClient(f"127.0.0.1:{settings.bridge.port}")
    try:
        _wait_until_serving(mesh, client, timeout=60)
        submitted: list[tuple[str, str]] = []
        for i in range(jobs):
            priority, prompt = PROMPTS[i % len(PROMPTS)]
            job = _submit_with_retry(
                client, make_spec(prompt, max_tokens=24, priority=priority, chat=i == 0)
            )
            submitted.append((priority, job.job_id))
            console.print(f"submitted {priority:6} {job.job_id}")
        console.print("waiting for the nodes' engines to start and the results to come back…")
        deadline = time.monotonic() + timeout
        ok = True
        for priority, job_id in submitted:
            job = _wait_for_job(mesh, client, job_id, deadline)
            verified = verify_job(job)
            ok &= job.state == job_pb2.JOB_STATE_SUCCEEDED and verified
            mark = "[green]signature verified[/]" if verified else "[red]signature INVALID[/]"
            console.print(
                f"[bold]{job_id}[/] {priority:6} {state_name(job.state)} on "
                f"{job.signature.node_id or '-'} (key {job.signature.key_id or '-'}), "
                f"{job.usage.completion_tokens} tokens, {mark}"
            )
            console.print(f"    {job.output!r}", markup=False, highlight=False)
            if job.error.reason:
                console.print(f"    error: {job.error.reason}: {job.error.message}")
        console.print("[bold green]all results verified[/]" if ok else "[bold red]demo failed[/]")
        return 0 if ok else 1
    finally:
        client.close()
        console.print("stopping the mesh…")
        mesh.stop()


def _wait_for_job(mesh: LocalMesh, client: JobClient, job_id: str, deadline: float) -> job_pb2.Job:
    """Follows the job until it is terminal, the deadline passes, or a mesh process dies
    (then the logs say why, e.g. a node refused at the handshake)."""
    while True:
        job = client.wait(job_id, timeout=5.0)
        if is_terminal(job) or time.monotonic() > deadline:
            return job
        if failed := mesh.failed():
            names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in failed)
            raise RuntimeError(f"mesh process exited: {names}; see .cache/demo-logs/")


def _wait_until_serving(mesh: LocalMesh, client: JobClient, *, timeout: float) -> None:
    import grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if failed := mesh.failed():
            names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in failed)
            raise RuntimeError(f"mesh process exited: {names}; see .cache/demo-logs/")
        try:
            client.wait_ready(timeout=1.0)
            return
        except grpc.FutureTimeoutError:
            continue
    raise TimeoutError("the bridge did not start serving; see .cache/demo-logs/")


def _submit_with_retry(client: JobClient, spec: job_pb2.JobSpec) -> job_pb2.Job:
    import grpc

    for _ in range(30):
        try:
            return client.submit(spec)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                raise
            time.sleep(1.0)
    return client.submit(spec)
