"""``fleetwire admin operators …``: operators' keys for the scheduler's admin port. Over the
admin port with an admin's key, except ``bootstrap``, which writes the mesh's PostgreSQL
directly: how the first key is made, or a lost one replaced (each change is audited)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2
from fleetwire_tools.admin_port import (
    Address,
    Json,
    admin_call,
    console,
    err_console,
    print_key_rows,
    stamp,
)

operators_app = typer.Typer(
    help="Operators' keys for the admin port (MeshAdminService).", no_args_is_help=True
)
RoleOption = Annotated[str, typer.Option(help="viewer (read the mesh) or admin (also act).")]


def _role(label: str) -> str:
    if label not in ("viewer", "admin"):
        err_console.print("--role must be viewer or admin")
        raise typer.Exit(2)
    return f"OPERATOR_ROLE_{label.upper()}"


def _show_key(name: str, role: str, key_id: str, key: str, as_json: bool) -> None:
    if as_json:
        console.print(json.dumps({"name": name, "role": role, "key_id": key_id, "key": key}))
        return
    console.print(f"operator {name} ({role}), key id {key_id}", markup=False)
    console.print(f"key (shown once, store it now): {key}", soft_wrap=True, markup=False)


@operators_app.command("create")
def operators_create(
    name: Annotated[str, typer.Argument(help="Who holds the key (a person or a service).")],
    role: RoleOption = "viewer",
    address: Address = None,
    as_json: Json = False,
) -> None:
    """Create an operator key (an admin's FLEETWIRE_ADMIN_KEY does it). It is printed once and
    stored only hashed: admin clients send it as `authorization: Bearer <key>`."""
    request = admin_pb2.CreateOperatorKeyRequest(name=name, role=_role(role))
    reply = admin_call(address, "CreateOperatorKey", request)
    _show_key(reply.name, role, reply.key_id, reply.key, as_json)


@operators_app.command("bootstrap")
def operators_bootstrap(
    name: Annotated[str, typer.Argument(help="Who holds the key (a person or a service).")],
    role: RoleOption = "admin",
    as_json: Json = False,
) -> None:
    """Create an operator key straight in the mesh's PostgreSQL (FLEETWIRE_POSTGRES_DSN):
    the first admin key of a new mesh, or a replacement when every admin key is lost. The
    one admin command that needs database credentials; audited as cli:<user>."""
    import asyncio
    import getpass

    from fleetwire.process.settings import load_settings
    from fleetwire.store.db import open_pool
    from fleetwire.store.operators import IssuedOperatorKey, OperatorStore, Role

    _role(role)

    async def create() -> IssuedOperatorKey:
        pool = await open_pool(load_settings().postgres)
        try:
            return await OperatorStore(pool).create_key(
                name, Role.of(role), actor=f"cli:{getpass.getuser()}"
            )
        finally:
            await pool.close()

    try:
        issued = asyncio.run(create())
    except ValueError as err:
        err_console.print(str(err), markup=False)
        raise typer.Exit(2) from None
    _show_key(issued.operator.name, role, issued.operator.key_id, issued.secret, as_json)


@operators_app.command("list")
def operators_list(address: Address = None, as_json: Json = False) -> None:
    """List operator keys (ids, names, roles, state; never the keys themselves)."""
    reply = admin_call(address, "ListOperatorKeys", admin_pb2.ListOperatorKeysRequest())
    rows = [
        {
            "key_id": k.key_id,
            "name": k.name,
            "role": admin_pb2.OperatorRole.Name(k.role).removeprefix("OPERATOR_ROLE_").lower(),
            "created_at": stamp(k.created_at),
            "revoked_at": stamp(k.revoked_at),
        }
        for k in reply.keys
    ]
    print_key_rows(rows, as_json, lambda row, state: f"{row['name']:24} {row['role']:7} {state}")


@operators_app.command("revoke")
def operators_revoke(key_id: str, address: Address = None) -> None:
    """Revoke the operator key KEY_ID; every scheduler refuses it within
    FLEETWIRE_SCHEDULER_ADMIN_CACHE_TTL."""
    admin_call(address, "RevokeOperatorKey", admin_pb2.RevokeOperatorKeyRequest(key_id=key_id))
    console.print(json.dumps({"key_id": key_id, "revoked": True}))
