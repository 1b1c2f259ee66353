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
    """Run a whole local mesh (scheduler, bridge, nodes, the operators' console) until
    Ctrl-C or SIGTERM; the children die with this process even when it is killed."""
    from fleetwire.process.settings import load_settings
    from fleetwire_tools.dev_console import (
        DEV_OPERATOR_KEY_FILE,
        console_env,
        dev_operator_key,
        where_lines,
    )
    from fleetwire_tools.supervisor import (
        DEV_API_KEY_FILE,
        DEV_CERT_DIR,
        LocalMesh,
        dev_api_key,
        dev_profile_env,
    )

    settings = load_settings()
    dsn = settings.postgres.dsn.get_secret_value()
    dev_api_key(dsn)
    dev_operator_key(dsn)
    env = dev_profile_env()
    env |= console_env(settings, env["FLEETWIRE_CA_FILE"])
    mesh = LocalMesh(nodes=nodes, node_module=node_module, env=env, console=True)
    # SIGTERM and SIGHUP (a closed terminal) stop the mesh in order, like Ctrl-C. If this
    # process dies without stopping it (SIGKILL), the children die with it (lifeline).
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        mesh.start()
        node_ports = [mesh.node_metrics_port(i) for i in range(1, nodes + 1)]
        console.print(
            f"[bold]fleetwire up[/]: scheduler, bridge, {nodes} node(s) and the console. "
            "Ctrl-C stops.\n"
            f"dev profile: TLS with the local CA in {DEV_CERT_DIR}/ (made by `fleetwire "
            f"certs`; clients pass --cacert {DEV_CERT_DIR / 'ca.pem'} or set "
            "FLEETWIRE_CA_FILE), nodes registered on first use, and tenants unrestricted "
            "(urgent, any subcloud, no credit check). Not for production.\n"
            f"API key of the tenant 'dev' in {DEV_API_KEY_FILE}: "
            f"export FLEETWIRE_API_KEY=$(cat {DEV_API_KEY_FILE})\n"
            + "\n".join(where_lines(settings, node_ports))
            + f"\nlog in to the console with the operator key in {DEV_OPERATOR_KEY_FILE} "
            f"(admin; for the CLI too: export FLEETWIRE_ADMIN_KEY=$(cat {DEV_OPERATOR_KEY_FILE}))",
            soft_wrap=True,
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
