"""``fleetwire``: one command for running and using a mesh."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.protobuf import json_format
from rich.console import Console

from fleetwire.client_calls import JobClient, is_terminal, make_spec, state_name
from fleetwire.settings import load_settings
from fleetwire.v1 import job_pb2
from fleetwire.verify import verify_job

app = typer.Typer(help="fleetwire: a mesh for LLM inference jobs.", no_args_is_help=True)
keys_app = typer.Typer(help="Node key files.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err_console = Console(stderr=True)

DEFAULT_MODEL_DIR = Path(".cache/models/tiny-llama")


def _address(address: str | None) -> str:
    return address or f"127.0.0.1:{load_settings().bridge.port}"


def _exec_module(module: str) -> None:
    os.execv(sys.executable, [sys.executable, "-m", module])


@app.command()
def bridge() -> None:
    """Run one broker bridge (JobService, default port 50051)."""
    _exec_module("broker_bridge")


@app.command()
def scheduler() -> None:
    """Run one scheduler (NodeService, default port 50052)."""
    _exec_module("scheduler")


@app.command()
def node() -> None:
    """Run one node agent (vLLM); configure with FLEETWIRE_NODE_* settings."""
    _exec_module("node")


@app.command()
def up(nodes: Annotated[int, typer.Option(help="Number of node agents.")] = 2) -> None:
    """Run a whole local mesh (scheduler, bridge, nodes) until Ctrl-C."""
    from fleetwire.supervisor import LocalMesh

    mesh = LocalMesh(nodes=nodes)
    mesh.start()
    console.print(f"[bold]fleetwire up[/]: scheduler, bridge and {nodes} node(s). Ctrl-C stops.")
    try:
        while not mesh.failed():
            time.sleep(0.5)
        for child in mesh.failed():
            err_console.print(f"{child.name} exited with {child.process.returncode}")
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        mesh.stop()
    console.print("stopped")


@app.command("make-model")
def make_model(
    out: Annotated[Path, typer.Option(help="Output directory.")] = DEFAULT_MODEL_DIR,
    seed: Annotated[int, typer.Option(help="Seed; same seed, same bytes.")] = 0,
) -> None:
    """Build the tiny random-weight Llama model and tokenizer (offline, deterministic)."""
    from fleetwire.tiny_model import build_tiny_model

    path = build_tiny_model(out, seed=seed)
    console.print(f"model ready: {path}")


@app.command()
def migrate() -> None:
    """Create the database if needed and apply schema migrations."""
    import asyncio

    from fleetwire.db import open_pool

    async def run() -> None:
        pool = await open_pool(load_settings().postgres)
        await pool.close()

    asyncio.run(run())
    console.print("migrations applied")


def _print_job(job: job_pb2.Job, as_json: bool) -> None:
    if as_json:
        console.print_json(json_format.MessageToJson(job))
        return
    verified = verify_job(job) if job.state == job_pb2.JOB_STATE_SUCCEEDED else None
    console.print(f"[bold]{job.job_id}[/] {state_name(job.state)} attempts={job.attempts}")
    if job.output:
        console.print(f"  output: {job.output!r}")
        console.print(
            f"  node={job.signature.node_id} key={job.signature.key_id} "
            f"tokens={job.usage.completion_tokens} signature "
            + ("[green]verified[/]" if verified else "[red]INVALID[/]")
        )
    if job.error.reason:
        console.print(f"  error: {job.error.reason}: {job.error.message}")


@app.command()
def submit(
    prompt: str,
    model: str = "tiny-llama",
    max_tokens: int = 32,
    priority: str = "normal",
    temperature: float = 0.0,
    seed: Annotated[int | None, typer.Option()] = None,
    ttl: Annotated[float | None, typer.Option(help="TTL in seconds.")] = None,
    network: str = "mainnet",
    chat: bool = False,
    wait: Annotated[bool, typer.Option(help="Stream tokens and wait for the result.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    address: Annotated[str | None, typer.Option(help="Bridge host:port.")] = None,
) -> None:
    """Submit a job; by default stream its tokens and print the verified result."""
    client = JobClient(_address(address))
    try:
        job = client.submit(
            make_spec(
                prompt,
                model=model,
                max_tokens=max_tokens,
                priority=priority,
                temperature=temperature,
                seed=seed,
                ttl=timedelta(seconds=ttl) if ttl else None,
                network=network,
                chat=chat,
            )
        )
        if wait:
            job = _follow(client, job.job_id, stream=not as_json)
        _print_job(job, as_json)
    except grpc.RpcError as err:
        _rpc_failed(err)
    finally:
        client.close()


def _follow(client: JobClient, job_id: str, *, stream: bool) -> job_pb2.Job:
    last = None
    for event in client.watch(job_id):
        if event.HasField("chunk") and stream:
            console.print(event.chunk.text, end="", highlight=False, markup=False)
        elif event.HasField("job"):
            last = event.job
            if is_terminal(last):
                break
    if stream:
        console.print()
    return last if last is not None else client.status(job_id)


def _rpc_failed(err: grpc.RpcError) -> None:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    err_console.print(f"[red]{getattr(code, 'name', code)}[/]: {details}")
    raise typer.Exit(1)


@app.command()
def status(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    address: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Show a job's state (and its verified result when done)."""
    client = JobClient(_address(address))
    try:
        _print_job(client.status(job_id), as_json)
    except grpc.RpcError as err:
        _rpc_failed(err)
    finally:
        client.close()


@app.command()
def watch(job_id: str, address: Annotated[str | None, typer.Option()] = None) -> None:
    """Stream a job's tokens and state changes until it is terminal."""
    client = JobClient(_address(address))
    try:
        _print_job(_follow(client, job_id, stream=True), False)
    except grpc.RpcError as err:
        _rpc_failed(err)
    finally:
        client.close()


@app.command()
def cancel(
    job_id: str, reason: str = "", address: Annotated[str | None, typer.Option()] = None
) -> None:
    """Cancel a job."""
    client = JobClient(_address(address))
    try:
        _print_job(client.cancel(job_id, reason), False)
    except grpc.RpcError as err:
        _rpc_failed(err)
    finally:
        client.close()


@keys_app.command("new")
def keys_new(file: Annotated[Path, typer.Option(help="Key file to create (0600).")]) -> None:
    """Create a node key file and print its public key."""
    from fleetwire.keys import create_key
    from fleetwire.signing import key_id

    key = create_key(file)
    public = bytes(key.verify_key)
    console.print(json.dumps({"public_key": public.hex(), "key_id": key_id(public)}))


@keys_app.command("show")
def keys_show(file: Annotated[Path, typer.Option(help="Key file.")]) -> None:
    """Print the public key of a node key file."""
    from fleetwire.keys import load_key
    from fleetwire.signing import key_id

    public = bytes(load_key(file).verify_key)
    console.print(json.dumps({"public_key": public.hex(), "key_id": key_id(public)}))


@app.command()
def demo(
    nodes: int = 2,
    jobs: int = 6,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all results.")] = 300,
) -> None:
    """Start a local mesh, run jobs of several priorities, print verified results, stop."""
    from fleetwire.demo import run_demo

    raise typer.Exit(run_demo(nodes=nodes, jobs=jobs, timeout=timeout, console=console))


if __name__ == "__main__":
    app()
