"""``fleetwire demo``: the whole mesh on this machine, real jobs, verified signatures."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from fleetwire.client_calls import JobClient, make_spec, state_name
from fleetwire.settings import load_settings
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


def run_demo(*, nodes: int, jobs: int, timeout: float, console: Console) -> int:
    """Returns the process exit code: 0 when every job SUCCEEDED with a valid signature."""
    settings = load_settings()
    mesh = LocalMesh(nodes=nodes, log_dir=Path(".cache/demo-logs"))
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
            job = client.wait(job_id, timeout=max(1.0, deadline - time.monotonic()))
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
