"""``fleetwire admin operators …``: operators' keys for the scheduler's admin port, straight
in the mesh's PostgreSQL (how the first key is made; each change is audited)."""

from __future__ import annotations

import getpass
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console

from fleetwire_tools.registry_cli import with_pool

if TYPE_CHECKING:
    from fleetwire.store.operators import OperatorStore

T = TypeVar("T")

operators_app = typer.Typer(
    help="Operators' keys for the admin port (MeshAdminService).", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)


def _run(work: Callable[[OperatorStore], Awaitable[T]]) -> T:
    from fleetwire.store.operators import OperatorStore

    return with_pool(lambda pool: work(OperatorStore(pool)))


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@operators_app.command("create")
def operators_create(
    name: Annotated[str, typer.Argument(help="Who holds the key (a person or a service).")],
    role: Annotated[str, typer.Option(help="viewer (read the mesh) or admin (also act).")] = (
        "viewer"
    ),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an operator key. It is printed once and stored only hashed: admin clients send
    it as `authorization: Bearer <key>` (the CLI reads FLEETWIRE_ADMIN_KEY)."""
    from fleetwire.store.operators import Role

    if role not in ("viewer", "admin"):
        err_console.print("[red]--role must be viewer or admin[/]")
        raise typer.Exit(2)
    try:
        issued = _run(lambda store: store.create_key(name, Role.of(role), actor=_actor()))
    except ValueError as err:
        from rich.markup import escape

        err_console.print(f"[red]{escape(str(err))}[/]")
        raise typer.Exit(2) from None
    shown = {
        "name": issued.operator.name,
        "role": issued.operator.role.label,
        "key_id": issued.operator.key_id,
        "key": issued.secret,
    }
    if as_json:
        console.print(json.dumps(shown))
        return
    console.print(f"operator {shown['name']} ({shown['role']}), key id {shown['key_id']}")
    console.print(f"key (shown once, store it now): {issued.secret}", soft_wrap=True)


@operators_app.command("list")
def operators_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List operator keys (ids, names, roles, state; never the keys themselves)."""
    rows = [
        {
            "key_id": r.key_id,
            "name": r.name,
            "role": r.role,
            "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in _run(lambda store: store.list_keys())
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    for row in rows:
        state = f"[red]revoked {row['revoked_at']}[/]" if row["revoked_at"] else "active"
        console.print(f"{row['key_id']}  {row['name']:24} {row['role']:7} {state}", soft_wrap=True)


@operators_app.command("revoke")
def operators_revoke(key_id: str) -> None:
    """Revoke the operator key KEY_ID; every scheduler refuses it within
    FLEETWIRE_SCHEDULER_ADMIN_CACHE_TTL."""
    if not _run(lambda store: store.revoke_key(key_id, actor=_actor())):
        err_console.print(f"[red]no live operator key {key_id}[/]")
        raise typer.Exit(1)
    console.print(json.dumps({"key_id": key_id, "revoked": True}))
