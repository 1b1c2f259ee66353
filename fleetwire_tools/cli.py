"""``fleetwire``: one command for running and using a mesh."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleetwire.process.settings import load_settings
from fleetwire_client import (
    BatchProgress,
    Client,
    FleetwireError,
    InvalidArgument,
    JobRequest,
    JobResult,
    Token,
)
from fleetwire_tools.access_cli import api_keys_app, tenants_app
from fleetwire_tools.admin_cli import mesh_app
from fleetwire_tools.certs_cli import certs
from fleetwire_tools.connection import CONNECTION, connection_options
from fleetwire_tools.key_cli import keys_app
from fleetwire_tools.mesh_cli import up
from fleetwire_tools.operator_cli import operators_app
from fleetwire_tools.registry_cli import nodes_app
from fleetwire_tools.top_cli import top

if TYPE_CHECKING:
    pass

T = TypeVar("T")

app = typer.Typer(help="fleetwire: a mesh for LLM inference jobs.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
admin_app = typer.Typer(help="Administer the mesh.", no_args_is_help=True)
admin_app.add_typer(nodes_app, name="nodes")
admin_app.add_typer(api_keys_app, name="keys")
admin_app.add_typer(mesh_app, name="mesh")
admin_app.add_typer(operators_app, name="operators")
admin_app.add_typer(tenants_app, name="tenants")
admin_app.command("top")(top)
app.add_typer(admin_app, name="admin")
app.command()(up)


app.callback()(connection_options)


app.command()(certs)
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


@app.command("console")
def console_server() -> None:
    """Run the operators' web console (HTTPS, default https://localhost:9460/), which calls
    a scheduler's admin port (FLEETWIRE_CONSOLE_*) with each operator's own key."""
    _exec_module("console")


@app.command()
def node() -> None:
    """Run one node agent (vLLM); configure with FLEETWIRE_NODE_* settings."""
    _exec_module("node")


@app.command("make-model")
def make_model(
    out: Annotated[Path, typer.Option(help="Output directory.")] = DEFAULT_MODEL_DIR,
    seed: Annotated[int, typer.Option(help="Seed; same seed, same bytes.")] = 0,
) -> None:
    """Build the tiny random-weight Llama model and tokenizer (offline, deterministic)."""
    from fleetwire_tools.tiny_model import build_tiny_model

    path = build_tiny_model(out, seed=seed)
    console.print(f"model ready: {path}")


@app.command()
def migrate() -> None:
    """Create the database if needed and apply schema migrations."""
    import asyncio

    from fleetwire.store.db import open_pool

    async def run() -> None:
        pool = await open_pool(load_settings().postgres)
        await pool.close()

    asyncio.run(run())
    console.print("migrations applied")


# --- Using a mesh: job commands, on the Python SDK (clients/python, fleetwire_client) -----

AddressOption = Annotated[str | None, typer.Option("--address", help="Bridge host:port.")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="FLEETWIRE_API_KEY",
        help="API key, sent as 'authorization: Bearer <key>'.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (one object per job).")]
NodeKeyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--node-key",
        help="Public key (hex) of a node you trust; repeatable. A signature must verify under "
        "one of them. Without: the key the job names (proves integrity, not who signed).",
        show_default=False,
    ),
]


def _client(address: str | None, api_key: str | None) -> Client:
    return Client(
        _address(address),
        api_key=api_key,
        ca_file=CONNECTION.ca_file,
        insecure=CONNECTION.insecure or None,
    )


def _job_json(result: JobResult) -> str:
    return str(json_format.MessageToJson(result.message, indent=None))


def _signature_note(result: JobResult, node_keys: list[str] | None) -> str:
    """'verified' or 'INVALID' for a signed result, checked offline (docs/signing.md)."""
    try:
        keys: list[str | None] = [*node_keys] if node_keys else [None]
        verified = any(result.verify(key) for key in keys)
    except ValueError as err:  # a malformed --node-key
        err_console.print(f"[red]--node-key[/]: {err}")
        raise typer.Exit(2) from None
    how = "" if node_keys else " (key named by the job)"
    return ("[green]verified[/]" if verified else "[red]INVALID[/]") + how


def _print_job(result: JobResult, as_json: bool, node_keys: list[str] | None = None) -> None:
    if as_json:
        console.print_json(_job_json(result))
        return
    console.print(f"[bold]{result.job_id}[/] {result.state.name} attempts={result.attempts}")
    signature = result.signature
    if result.output or signature is not None:
        console.print(f"  output: {result.output!r}")
    if signature is not None:
        console.print(
            f"  node={signature.node_id} key={signature.key_id} "
            f"tokens={result.completion_tokens} signature {_signature_note(result, node_keys)}"
        )
    if result.error_reason:
        console.print(f"  error: {result.error_reason}: {result.error_message}")


def _failed(err: FleetwireError) -> NoReturn:
    reason = f" ({err.reason})" if err.reason else ""
    err_console.print(f"[red]{err.code.name}[/]{reason}: {err.message}", markup=True)
    if isinstance(err, InvalidArgument):
        for violation in err.violations:
            err_console.print(f"  {violation.field}: {violation.description}")
    raise typer.Exit(1)


def _follow(client: Client, job_id: str, *, stream: bool) -> JobResult:
    """Streams the job's tokens (when ``stream``) until it is terminal; returns it."""
    last: JobResult | None = None
    streamed = False
    for event in client.watch(job_id):
        if isinstance(event, Token):
            if stream:
                console.print(event.text, end="", highlight=False, markup=False)
                streamed = True
        else:
            last = event
    if streamed:
        console.print()
    return last if last is not None and last.terminal else client.status(job_id)


def _job_request(
    prompt: str,
    *,
    model: str,
    max_tokens: int,
    priority: str,
    temperature: float,
    seed: int | None,
    ttl: float | None,
    network: str,
    chat: bool,
) -> JobRequest:
    return JobRequest(
        prompt="" if chat else prompt,
        messages=[("user", prompt)] if chat else (),
        model=model,
        max_tokens=max_tokens,
        priority=priority,
        temperature=temperature,
        seed=seed,
        ttl=timedelta(seconds=ttl) if ttl else None,
        network=network,
    )


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
    as_json: JsonOption = False,
    address: AddressOption = None,
    node_key: NodeKeyOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit a job; by default stream its tokens and print the verified result."""
    request = _job_request(
        prompt,
        model=model,
        max_tokens=max_tokens,
        priority=priority,
        temperature=temperature,
        seed=seed,
        ttl=ttl,
        network=network,
        chat=chat,
    )
    try:
        with _client(address, api_key) as client:
            job = client.submit(request)
            if wait:
                job = _follow(client, job.job_id, stream=not as_json)
            _print_job(job, as_json, node_key)
    except FleetwireError as err:
        _failed(err)


@app.command()
def batch(
    prompts: Annotated[Path, typer.Argument(help="A file with one prompt per line; - for stdin.")],
    model: str = "tiny-llama",
    max_tokens: int = 32,
    priority: str = "bulk",
    temperature: float = 0.0,
    seed: Annotated[int | None, typer.Option()] = None,
    ttl: Annotated[float | None, typer.Option(help="TTL in seconds.")] = None,
    network: str = "mainnet",
    chat: bool = False,
    wait: Annotated[bool, typer.Option(help="Show progress and wait for every result.")] = True,
    as_json: JsonOption = False,
    address: AddressOption = None,
    node_key: NodeKeyOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit one job per line of PROMPTS as a batch, with progress, then the results.

    One SubmitBatch call (all jobs accepted or none); a progress bar on stderr until every
    job is terminal, then a table with verified signatures (or JSON lines with --json).
    Exits 1 unless every job succeeded. --no-wait prints the batch id and returns.
    """
    text = sys.stdin.read() if str(prompts) == "-" else prompts.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        err_console.print("no prompts")
        raise typer.Exit(1)
    requests = [
        _job_request(
            line,
            model=model,
            max_tokens=max_tokens,
            priority=priority,
            temperature=temperature,
            seed=seed,
            ttl=ttl,
            network=network,
            chat=chat,
        )
        for line in lines
    ]
    try:
        with _client(address, api_key) as client:
            batch = client.submit_batch(requests)
            if not wait:
                _print_batch_progress(batch, as_json)
                return
            jobs = _wait_all(client, batch, show=not as_json)
    except FleetwireError as err:
        _failed(err)
    if as_json:
        for job in jobs:
            print(_job_json(job))
    else:
        console.print(f"batch [bold]{batch.batch_id}[/]")
        _print_batch(jobs, node_key)
    if not all(job.succeeded for job in jobs):
        raise typer.Exit(1)


def _print_batch_progress(batch: BatchProgress, as_json: bool) -> None:
    if as_json:
        print(json_format.MessageToJson(batch.message, indent=None))
    else:
        console.print(f"batch [bold]{batch.batch_id}[/]: {batch.total} jobs accepted")


def _wait_all(client: Client, batch: BatchProgress, *, show: bool) -> list[JobResult]:
    """Every job of the batch once terminal, in order, with a progress bar on stderr
    driven by WatchBatch."""
    finished: dict[str, JobResult] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show,
    ) as progress:
        task = progress.add_task("jobs", total=batch.total)
        for event in client.watch_batch(batch.batch_id):
            progress.update(task, completed=event.progress.finished)
            if event.job is not None:
                finished[event.job.job_id] = event.job
    return [finished.get(job_id) or client.status(job_id) for job_id in batch.job_ids]


def _print_batch(jobs: list[JobResult], node_keys: list[str] | None) -> None:
    table = Table("job", "state", "tokens", "node", "signature", "output")
    for job in jobs:
        signature = job.signature
        table.add_row(
            job.job_id,
            job.state.name,
            str(job.completion_tokens) if job.succeeded else "",
            signature.node_id if signature else "",
            _signature_note(job, node_keys) if signature else "",
            repr(job.output[:40]) if job.output else job.error_reason,
        )
    console.print(table)


@app.command()
def status(
    job_id: str,
    as_json: JsonOption = False,
    address: AddressOption = None,
    node_key: NodeKeyOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show a job's state (and its verified result when done)."""
    try:
        with _client(address, api_key) as client:
            _print_job(client.status(job_id), as_json, node_key)
    except FleetwireError as err:
        _failed(err)


@app.command()
def watch(
    job_id: str,
    as_json: JsonOption = False,
    address: AddressOption = None,
    node_key: NodeKeyOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Stream a job's tokens and state changes until it is terminal."""
    try:
        with _client(address, api_key) as client:
            _print_job(_follow(client, job_id, stream=not as_json), as_json, node_key)
    except FleetwireError as err:
        _failed(err)


@app.command()
def cancel(
    job_id: str,
    reason: str = "",
    as_json: JsonOption = False,
    address: AddressOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Cancel a job."""
    try:
        with _client(address, api_key) as client:
            _print_job(client.cancel(job_id, reason), as_json)
    except FleetwireError as err:
        _failed(err)


@app.command()
def demo(
    nodes: int = 2,
    jobs: int = 6,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all results.")] = 300,
    keep: Annotated[
        bool, typer.Option(help="Keep the mesh and its console running after the results.")
    ] = False,
) -> None:
    """Start a local mesh (and its console), run jobs of several priorities, print verified
    results, stop."""
    from fleetwire_tools.demo import run_demo

    raise typer.Exit(run_demo(nodes=nodes, jobs=jobs, timeout=timeout, console=console, keep=keep))


if __name__ == "__main__":
    app()
