"""``fleetwire admin nodes …`` and ``fleetwire admin keys …``: the node registry and the
tenants' API keys, straight in the mesh's PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from fleetwire.process.settings import load_settings

if TYPE_CHECKING:
    import asyncpg

    from fleetwire.store.nodes import NodeStore
    from fleetwire.store.tenants import TenantStore

T = TypeVar("T")

nodes_app = typer.Typer(help="Node registration: keys the scheduler accepts.", no_args_is_help=True)
api_keys_app = typer.Typer(help="Tenants' API keys for the bridge.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def with_pool(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Runs ``work`` against the mesh's PostgreSQL (created and migrated first)."""
    import asyncio

    from fleetwire.store.db import open_pool

    async def run() -> T:
        pool = await open_pool(load_settings().postgres)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def audit(action: str, target: str, detail: Mapping[str, object]) -> None:
    """Writes an admin action of this CLI to the audit log (``store.operators``)."""
    import getpass

    from fleetwire.store.operators import OperatorStore

    with_pool(
        lambda pool: OperatorStore(pool).audit(
            f"cli:{getpass.getuser()}", action, target, dict(detail)
        )
    )


def _run_node_store(work: Callable[[NodeStore], Awaitable[T]]) -> T:
    from fleetwire.store.nodes import NodeStore

    return with_pool(lambda pool: work(NodeStore(pool)))


NetworksOption = Annotated[
    list[str] | None,
    typer.Option(
        "--network",
        help="A network the node may serve (repeatable; default testnet only: mainnet earns "
        "credits, so it is granted on purpose).",
    ),
]


def _grant_networks(node_id: str, networks: list[str] | None) -> list[str]:
    chosen = networks or ["testnet"]
    bad = [n for n in chosen if n not in ("mainnet", "testnet")]
    if bad:
        err_console.print(f"[red]--network must be mainnet or testnet, not {', '.join(bad)}[/]")
        raise typer.Exit(2)

    async def grant_all(store: NodeStore) -> None:
        for network in chosen:
            await store.grant_network(node_id, network)

    _run_node_store(grant_all)
    return chosen


@nodes_app.command("register")
def nodes_register(
    node_id: str,
    public_key: Annotated[str, typer.Option(help="Hex public key (`keys show`/`keys new`).")],
    replace: Annotated[
        bool, typer.Option(help="Replace another registered key (key rotation).")
    ] = False,
    network: NetworksOption = None,
) -> None:
    """Register NODE_ID's public key (and grant it the networks given), so the scheduler
    accepts the node.

    Needed when FLEETWIRE_SCHEDULER_AUTO_REGISTER_NODES=false (production). Applies to the
    node's next handshake; a connected session keeps the key it proved.
    """
    from fleetwire.protocol.signing import key_id
    from fleetwire.store.nodes import Registration

    try:
        raw = bytes.fromhex(public_key)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        err_console.print("[red]--public-key must be 64 hex digits (a raw ed25519 key)[/]")
        raise typer.Exit(2)
    outcome = _run_node_store(lambda store: store.register(node_id, raw, replace=replace))
    if outcome is Registration.CONFLICT:
        err_console.print(
            f"[red]{node_id} is registered with another key[/]; pass --replace to rotate"
        )
        raise typer.Exit(1)
    networks = _grant_networks(node_id, network)
    shown = {"key_id": key_id(raw), "registration": outcome.value, "networks": networks}
    audit("node.register", node_id, shown)
    typer.echo(json.dumps({"node_id": node_id, **shown}))


@nodes_app.command("pending")
def nodes_pending(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Nodes that proved a key nobody admitted yet, waiting for `approve`."""
    rows = [
        {
            "node_id": r["node_id"],
            "key_id": r["key_id"],
            "region": r["region"],
            "models": r["models"],
            "first_seen_at": r["first_seen_at"].isoformat(),
            "last_seen_at": r["last_seen_at"].isoformat(),
        }
        for r in _run_node_store(lambda store: store.requests())
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        # Region and models are what an unadmitted node claimed: printed as plain text.
        region, models = (printable(row[k]) for k in ("region", "models"))
        console.print(
            f"{row['node_id']:24} key {row['key_id']}  {region:10} {models}"
            f"  since {row['first_seen_at']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def printable(text: str) -> str:
    """``text`` without control characters (a newline would fake a row)."""
    return "".join(c if c.isprintable() else "?" for c in text)


@nodes_app.command("approve")
def nodes_approve(
    node_id: str,
    key_id: Annotated[str, typer.Option(help="The key id the request shows (`pending`).")],
    network: NetworksOption = None,
) -> None:
    """Admit the waiting node NODE_ID with the key KEY_ID, granting it the networks given:
    its next handshake is welcome. An id registered with another key keeps it."""
    import getpass

    from fleetwire.store.nodes import Registration
    from fleetwire.store.operators import OperatorStore

    outcome = _run_node_store(lambda store: store.approve(node_id, key_id))
    if outcome is None:
        err_console.print(f"[red]no request of {node_id} with key {key_id}[/]")
        raise typer.Exit(1)
    if outcome is Registration.CONFLICT:
        err_console.print(f"[red]{node_id} is registered with another key[/]")
        raise typer.Exit(1)
    networks = _grant_networks(node_id, network)
    with_pool(
        lambda pool: OperatorStore(pool).audit(
            f"cli:{getpass.getuser()}",
            "node.approve",
            node_id,
            {"key_id": key_id, "networks": networks},
        )
    )
    typer.echo(
        json.dumps(
            {
                "node_id": node_id,
                "key_id": key_id,
                "registration": "approved",
                "networks": networks,
            }
        )
    )


@nodes_app.command("grant")
def nodes_grant(
    node_id: str,
    subcloud: Annotated[
        str | None, typer.Option(help="A subcloud (private pool) it may serve.")
    ] = None,
    network: Annotated[str | None, typer.Option(help="mainnet or testnet.")] = None,
    withdraw: Annotated[bool, typer.Option(help="Withdraw the grant instead.")] = False,
) -> None:
    """Grant NODE_ID a subcloud or a network it may serve (or withdraw it); applies from the
    node's next session. Claims in Hello count only when granted
    (FLEETWIRE_SCHEDULER_TRUST_NODE_CLAIMS is off outside the dev profile)."""
    import getpass

    from fleetwire.messaging.topology import SUBCLOUD_NAME
    from fleetwire.store.operators import OperatorStore

    if (subcloud is None) == (network is None):
        err_console.print("[red]give one of --subcloud and --network[/]")
        raise typer.Exit(2)
    if subcloud is not None:
        if not SUBCLOUD_NAME.fullmatch(subcloud):
            err_console.print(f"[red]--subcloud must match {SUBCLOUD_NAME.pattern}[/]")
            raise typer.Exit(2)
        if withdraw:
            changed = _run_node_store(lambda store: store.withdraw_subcloud(node_id, subcloud))
        else:
            changed = _run_node_store(lambda store: store.grant_subcloud(node_id, subcloud))
        what = {"subcloud": subcloud}
    else:
        if network not in ("mainnet", "testnet"):
            err_console.print("[red]--network must be mainnet or testnet[/]")
            raise typer.Exit(2)
        granted_network = str(network)
        changed = _run_node_store(
            lambda store: store.grant_network(node_id, granted_network, withdraw=withdraw)
        )
        what = {"network": granted_network}
    action = "node.withdraw" if withdraw else "node.grant"
    with_pool(
        lambda pool: OperatorStore(pool).audit(f"cli:{getpass.getuser()}", action, node_id, what)
    )
    typer.echo(
        json.dumps({"node_id": node_id, **what, "granted": not withdraw, "changed": changed})
    )


@nodes_app.command("revoke")
def nodes_revoke(node_id: str) -> None:
    """Revoke NODE_ID's key: its live session ends within
    FLEETWIRE_SCHEDULER_KEY_CHECK_INTERVAL and its next handshake is refused (KEY_REVOKED)."""
    if not _run_node_store(lambda store: store.revoke(node_id)):
        err_console.print(f"[red]unknown node {node_id}[/]")
        raise typer.Exit(1)
    audit("node.revoke", node_id, {})
    typer.echo(json.dumps({"node_id": node_id, "revoked": True}))


@nodes_app.command("list")
def nodes_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered nodes and their keys."""
    records = _run_node_store(lambda store: store.list_nodes())
    rows = [
        {
            "node_id": r.node_id,
            "key_id": r.key_id,
            "public_key": r.public_key.hex(),
            "revoked": r.revoked,
            "registered_at": r.registered_at.isoformat(),
            "last_seen_at": r.last_seen_at.isoformat() if r.last_seen_at else None,
        }
        for r in records
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        state = "[red]revoked[/]" if row["revoked"] else "active"
        console.print(
            f"{row['node_id']:24} key {row['key_id']} {state} "
            f"last seen {row['last_seen_at'] or '-'}"
        )


def _run_tenant_store(work: Callable[[TenantStore], Awaitable[T]]) -> T:
    from fleetwire.store.tenants import TenantStore

    return with_pool(lambda pool: work(TenantStore(pool)))


@api_keys_app.command("create")
def api_keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id (created if new).")],
    name: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API key for TENANT. The key is printed once and stored only hashed:
    clients send it as `authorization: Bearer <key>`."""
    try:
        issued = _run_tenant_store(lambda store: store.create_key(tenant, name=name))
    except ValueError as err:
        from rich.markup import escape

        err_console.print(f"[red]{escape(str(err))}[/]")
        raise typer.Exit(2) from None
    shown = {"tenant": issued.tenant_id, "key_id": issued.key_id, "key": issued.secret}
    audit("api-key.create", issued.key_id, {"tenant": issued.tenant_id, "name": name})
    if as_json:
        console.print(json.dumps(shown))
        return
    console.print(f"tenant {issued.tenant_id}, key id {issued.key_id}")
    console.print(f"key (shown once, store it now): {issued.secret}", soft_wrap=True)


@api_keys_app.command("list")
def api_keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List API keys (ids, tenants, state; never the keys themselves)."""
    records = _run_tenant_store(lambda store: store.list_keys(tenant))
    rows = [
        {
            "key_id": r.key_id,
            "tenant": r.tenant_id,
            "name": r.name,
            "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in records
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        state = f"[red]revoked {row['revoked_at']}[/]" if row["revoked_at"] else "active"
        console.print(f"{row['key_id']}  {row['tenant']:24} {state}  {row['name']}", soft_wrap=True)


@api_keys_app.command("revoke")
def api_keys_revoke(key_id: str) -> None:
    """Revoke the API key KEY_ID; every bridge refuses it within
    FLEETWIRE_BRIDGE_AUTH_CACHE_TTL."""
    if not _run_tenant_store(lambda store: store.revoke_key(key_id)):
        err_console.print(f"[red]no live key {key_id}[/]")
        raise typer.Exit(1)
    audit("api-key.revoke", key_id, {})
    console.print(json.dumps({"key_id": key_id, "revoked": True}))


tenants_app = typer.Typer(help="Tenants' policies: what each may use.", no_args_is_help=True)


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


PRIORITY_NAMES = ("urgent", "normal", "bulk", "test")
NETWORK_NAMES = ("mainnet", "testnet")


@tenants_app.command("policy")
def tenants_policy(
    tenant: str,
    priorities: Annotated[
        str | None, typer.Option(help="Comma-separated classes it may use (urgent,normal,…).")
    ] = None,
    networks: Annotated[str | None, typer.Option(help="mainnet and/or testnet.")] = None,
    subclouds: Annotated[str | None, typer.Option(help="Subclouds it may submit to.")] = None,
    credit_limit: Annotated[
        int | None, typer.Option(help="Micro-credits it may owe on mainnet.")
    ] = None,
    clear: Annotated[
        bool,
        typer.Option(help="Start from no restriction (else the options change only themselves)."),
    ] = False,
) -> None:
    """Change TENANT's policy: the options given replace those parts, the rest stays (with
    --clear: unrestricted but for the options given); bridges apply it within
    FLEETWIRE_BRIDGE_AUTH_CACHE_TTL."""
    from fleetwire.store.tenants import TenantLimits, TenantStore

    chosen = {"priorities": _names(priorities), "networks": _names(networks)}
    for field, allowed in (("priorities", PRIORITY_NAMES), ("networks", NETWORK_NAMES)):
        unknown = sorted(set(chosen[field] or ()) - set(allowed))
        if unknown:
            err_console.print(
                f"[red]unknown {field}: {', '.join(unknown)}[/] ({', '.join(allowed)})"
            )
            raise typer.Exit(2)
    current = (
        TenantLimits(None, None)
        if clear
        else with_pool(lambda pool: TenantStore(pool).limits_of(tenant))
    )

    def kept(given: list[str] | None, now: frozenset[str] | None) -> list[str] | None:
        if given is not None:
            return given
        return None if now is None else sorted(now)

    policy = {
        "priorities": kept(chosen["priorities"], current.priorities),
        "networks": kept(chosen["networks"], current.networks),
        "subclouds": kept(_names(subclouds), current.subclouds),
        "credit_limit": credit_limit if credit_limit is not None else current.credit_limit,
    }
    with_pool(
        lambda pool: TenantStore(pool).set_policy(
            tenant,
            priorities=policy["priorities"],  # type: ignore[arg-type]
            networks=policy["networks"],  # type: ignore[arg-type]
            subclouds=policy["subclouds"],  # type: ignore[arg-type]
            credit_limit=policy["credit_limit"],  # type: ignore[arg-type]
        )
    )
    audit("tenant.policy", tenant, policy)
    typer.echo(json.dumps({"tenant": tenant, **policy}))
