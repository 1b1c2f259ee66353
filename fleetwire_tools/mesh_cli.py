"""``fleetwire up``: a whole local mesh as child processes, stopped in order on Ctrl-C,
SIGTERM or SIGHUP, and gone with this process whatever kills it (``fleetwire.process.lifeline``)."""

from __future__ import annotations

import signal
import time
from typing import Annotated, NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def up(
    nodes: Annotated[int, typer.Option(help="Number of node agents.")] = 2,
    node_module: Annotated[
        str,
        typer.Option(
            help="Module the node agents run: node (vLLM), or bench.bench_node (a benchmark's "
            "instant runtime, never for production).",
            hidden=True,
        ),
    ] = "node",
) -> None:
    """Run a whole local mesh (scheduler, bridge, nodes) until Ctrl-C or SIGTERM; the
    children die with this process even when it is killed."""
    from fleetwire.process.settings import load_settings
    from fleetwire_tools.supervisor import (
        DEV_API_KEY_FILE,
        DEV_CERT_DIR,
        LocalMesh,
        dev_api_key,
        dev_profile_env,
    )

    dev_api_key(load_settings().postgres.dsn.get_secret_value())
    mesh = LocalMesh(nodes=nodes, node_module=node_module, env=dev_profile_env())
    # SIGTERM and SIGHUP (a closed terminal) stop the mesh in order, like Ctrl-C. If this
    # process dies without stopping it (SIGKILL), the children die with it (lifeline).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        mesh.start()
        console.print(
            f"[bold]fleetwire up[/]: scheduler, bridge and {nodes} node(s). Ctrl-C stops.\n"
            f"dev profile: TLS with the local CA in {DEV_CERT_DIR}/ (made by `fleetwire "
            f"certs`; clients pass --cacert {DEV_CERT_DIR / 'ca.pem'} or set "
            "FLEETWIRE_CA_FILE), nodes registered on first use, and tenants unrestricted "
            "(urgent, any subcloud, no credit check). Not for production.\n"
            f"API key of the tenant 'dev' in {DEV_API_KEY_FILE}: "
            f"export FLEETWIRE_API_KEY=$(cat {DEV_API_KEY_FILE})"
        )
        while not mesh.failed():
            time.sleep(0.5)
        for child in mesh.failed():
            err_console.print(f"{child.name} exited with {child.process.returncode}")
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        mesh.stop()
    console.print("stopped")
