"""``fleetwire demo``: the whole mesh on this machine, real jobs, verified signatures.

It uses the mesh as any application would: through the Python SDK (``fleetwire_client``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from rich.console import Console

from fleetwire.process.settings import Settings, load_settings
from fleetwire_client import (
    Client,
    DeadlineExceeded,
    JobRequest,
    JobResult,
    RetryPolicy,
    Unavailable,
)
from fleetwire_tools.dev_console import console_env, dev_operator_key, where_lines
from fleetwire_tools.supervisor import DEV_CERT_DIR, LocalMesh, dev_api_key, dev_profile_env

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


def run_demo(*, nodes: int, jobs: int, timeout: float, console: Console, keep: bool = False) -> int:
    """Returns the process exit code: 0 when every job SUCCEEDED with a valid signature.
    ``keep``: the mesh and its console go on running after the results until Ctrl-C."""
    settings = load_settings()
    tls = dev_profile_env()
    env = {**demo_env(settings), **tls}
    asyncio.run(_fresh_database(env["FLEETWIRE_POSTGRES_DSN"]))
    api_key = dev_api_key(env["FLEETWIRE_POSTGRES_DSN"], key_file=None)
    operator_key = dev_operator_key(env["FLEETWIRE_POSTGRES_DSN"], key_file=None)
    env |= console_env(settings, tls["FLEETWIRE_CA_FILE"])
    mesh = LocalMesh(
        nodes=nodes,
        env=env,
        key_dir=Path(".cache/demo-keys"),
        log_dir=Path(".cache/demo-logs"),
        console=True,
    )
    console.print(
        f"[bold]fleetwire demo[/]: starting scheduler, bridge, {nodes} vLLM node(s) and the "
        "console "
        f"(logs in .cache/demo-logs/); dev profile: TLS with the local CA in {DEV_CERT_DIR}/, "
        "nodes registered on first use, tenants unrestricted (urgent, any subcloud, no "
        "credit check)"
    )
    mesh.start()
    for line in where_lines(settings, [mesh.node_metrics_port(i) for i in range(1, nodes + 1)]):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"console login (an admin operator key of this demo's mesh): {operator_key}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    # The bridge comes up while the client dials: retry UNAVAILABLE for up to ~30 s.
    client = Client(
        f"127.0.0.1:{settings.bridge.port}",
        ca_file=tls["FLEETWIRE_CA_FILE"],
        api_key=api_key,
        retry=RetryPolicy(max_attempts=30, max_backoff=1.0),
    )
    try:
        _wait_until_serving(mesh, client, timeout=60)
        submitted: list[tuple[str, str]] = []
        for i in range(jobs):
            priority, prompt = PROMPTS[i % len(PROMPTS)]
            request = (
                JobRequest(messages=[("user", prompt)], max_tokens=24, priority=priority)
                if i == 0
                else JobRequest(prompt=prompt, max_tokens=24, priority=priority)
            )
            job = client.submit(request)
            submitted.append((priority, job.job_id))
            console.print(f"submitted {priority:6} {job.job_id}")
        console.print("waiting for the nodes' engines to start and the results to come back…")
        deadline = time.monotonic() + timeout
        ok = True
        for priority, job_id in submitted:
            job = _wait_for_job(mesh, client, job_id, deadline)
            verified = job.verify()
            ok &= job.succeeded and verified
            mark = "[green]signature verified[/]" if verified else "[red]signature INVALID[/]"
            signature = job.signature
            console.print(
                f"[bold]{job_id}[/] {priority:6} {job.state.name} on "
                f"{signature.node_id if signature else '-'} "
                f"(key {signature.key_id if signature else '-'}), "
                f"{job.completion_tokens} tokens, {mark}"
            )
            console.print(f"    {job.output!r}", markup=False, highlight=False)
            if job.error_reason:
                console.print(f"    error: {job.error_reason}: {job.error_message}")
        console.print("[bold green]all results verified[/]" if ok else "[bold red]demo failed[/]")
        if keep:
            _linger(mesh, console, settings)
        return 0 if ok else 1
    finally:
        client.close()
        console.print("stopping the mesh…")
        mesh.stop()


def _linger(mesh: LocalMesh, console: Console, settings: Settings) -> None:
    """Keeps the mesh running for the console until Ctrl-C (or a process dying)."""
    console.print(
        f"the mesh keeps running: its jobs are on the console "
        f"(https://localhost:{settings.console.port}/); Ctrl-C stops"
    )
    try:
        while not mesh.failed():
            time.sleep(0.5)
    except KeyboardInterrupt:
        return


def _raise_if_failed(mesh: LocalMesh) -> None:
    """A mesh process that died says why in its log (e.g. a node refused at the handshake)."""
    if failed := mesh.failed():
        names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in failed)
        raise RuntimeError(f"mesh process exited: {names}; see .cache/demo-logs/")


def _wait_for_job(mesh: LocalMesh, client: Client, job_id: str, deadline: float) -> JobResult:
    """Follows the job until it is terminal, the deadline passes, or a mesh process dies."""
    while True:
        try:
            return client.wait(job_id, timeout=5.0)
        except DeadlineExceeded:
            if time.monotonic() > deadline:
                return client.status(job_id)
            _raise_if_failed(mesh)


def _wait_until_serving(mesh: LocalMesh, client: Client, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _raise_if_failed(mesh)
        try:
            client.wait_ready(timeout=1.0)
            return
        except Unavailable:
            continue
    raise TimeoutError("the bridge did not start serving; see .cache/demo-logs/")
