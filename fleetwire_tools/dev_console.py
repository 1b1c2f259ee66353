"""The console in the dev profile (``fleetwire up``, ``make demo``): an admin operator key
to log in with, the console's settings, and the lines that say where the console and the
metrics endpoints are while the mesh runs."""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path

from fleetwire.process.settings import Settings
from fleetwire_tools.supervisor import write_secret

DEV_OPERATOR_KEY_FILE = Path(".cache/dev-operator-key")
DEV_OPERATOR = "dev"


def dev_operator_key(dsn: str, key_file: Path | None = DEV_OPERATOR_KEY_FILE) -> str:
    """An admin operator key of the mesh's database: the one in ``key_file`` while it is
    live and an admin's, else a new one (written there, mode 0600; audited as
    ``cli:<user>``, as ``fleetwire admin operators bootstrap`` is). ``key_file`` None: a new
    key, kept nowhere (the demo's fresh database)."""
    from pydantic import SecretStr

    from fleetwire.process.settings import PostgresSettings
    from fleetwire.store.db import open_pool
    from fleetwire.store.operators import OperatorStore, Role

    kept = key_file.read_text().strip() if key_file is not None and key_file.exists() else ""

    async def ensure() -> str:
        pool = await open_pool(PostgresSettings(dsn=SecretStr(dsn)))
        try:
            store = OperatorStore(pool)
            if kept:
                operator = await store.operator_of_key(kept)
                if operator is not None and operator.role is Role.ADMIN:
                    return kept
            issued = await store.create_key(
                DEV_OPERATOR, Role.ADMIN, actor=f"cli:{getpass.getuser()} (dev profile)"
            )
            return issued.secret
        finally:
            await pool.close()

    key = asyncio.run(ensure())
    if key_file is not None:
        write_secret(key_file, key)
    return key


def console_env(settings: Settings, ca_file: str) -> dict[str, str]:
    """The console's variables in the dev profile: it calls this machine's admin port and
    trusts the dev CA there (it serves HTTPS with the dev certificate, like the others)."""
    return {
        "FLEETWIRE_CONSOLE_ADMIN_ADDRESS": f"127.0.0.1:{settings.scheduler.admin_port}",
        "FLEETWIRE_CONSOLE_ADMIN_CA_FILE": ca_file,
    }


def where_lines(
    settings: Settings, node_metrics_ports: list[int], *, nodes_secure: bool = False
) -> list[str]:
    """Where the console, the bridge's HTTP API and each metrics endpoint of a dev mesh
    are: the console, the bridge's and the scheduler's metrics over HTTPS (the dev CA); the
    OpenAI-compatible API (when on); the nodes' metrics on loopback,
    plain HTTP unless they were given a certificate (FLEETWIRE_NODE_METRICS_CERT_FILE)."""
    scheme = "https" if nodes_secure else "http"
    lines = [
        f"console: https://localhost:{settings.console.port}/",
        f"metrics: bridge https://localhost:{settings.bridge.metrics_port}/metrics, "
        f"scheduler https://localhost:{settings.scheduler.metrics_port}/metrics",
    ]
    if settings.bridge.http_enabled:
        lines.append(
            f"OpenAI-compatible API: https://localhost:{settings.bridge.http_port}/v1 "
            "(bearer: the API key; trust the dev CA with SSL_CERT_FILE=.cache/certs/ca.pem)"
        )
    nodes = [f"{scheme}://127.0.0.1:{port}/metrics" for port in node_metrics_ports if port]
    if nodes:
        lines.append(f"node metrics: {', '.join(nodes)}")
    return lines
