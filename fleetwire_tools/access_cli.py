"""``fleetwire admin keys …`` and ``fleetwire admin tenants …``: tenants' API keys and
policies, over a scheduler's admin port (an operator key, no database credentials)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from google.protobuf import field_mask_pb2

from fleetwire.v1 import job_pb2
from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2
from fleetwire_tools.admin_port import (
    Address,
    Json,
    admin_call,
    console,
    err_console,
    network_values,
    print_key_rows,
    printable,
    stamp,
)

api_keys_app = typer.Typer(help="Tenants' API keys for the bridge.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants' policies: what each may use.", no_args_is_help=True)
PRIORITY_NAMES = ("urgent", "normal", "bulk", "test")


@api_keys_app.command("create")
def api_keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant id (created if new).")],
    name: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    address: Address = None,
    as_json: Json = False,
) -> None:
    """Create an API key for TENANT. The key is printed once and stored only hashed:
    clients send it as `authorization: Bearer <key>`."""
    request = admin_pb2.CreateApiKeyRequest(tenant=tenant, name=name)
    reply = admin_call(address, "CreateApiKey", request)
    if as_json:
        console.print(
            json.dumps({"tenant": reply.tenant, "key_id": reply.key_id, "key": reply.key})
        )
        return
    console.print(f"tenant {reply.tenant}, key id {reply.key_id}", markup=False)
    console.print(f"key (shown once, store it now): {reply.key}", soft_wrap=True, markup=False)


@api_keys_app.command("list")
def api_keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    address: Address = None,
    as_json: Json = False,
) -> None:
    """List API keys (ids, tenants, state; never the keys themselves)."""
    reply = admin_call(address, "ListApiKeys", admin_pb2.ListApiKeysRequest(tenant=tenant or ""))
    rows = [
        {
            "key_id": k.key_id,
            "tenant": k.tenant,
            "name": k.name,
            "created_at": stamp(k.created_at),
            "revoked_at": stamp(k.revoked_at),
        }
        for k in reply.keys
    ]
    print_key_rows(
        rows, as_json, lambda row, state: f"{row['tenant']:24} {state}  {printable(row['name'])}"
    )


@api_keys_app.command("revoke")
def api_keys_revoke(key_id: str, address: Address = None) -> None:
    """Revoke the API key KEY_ID; every bridge refuses it within
    FLEETWIRE_BRIDGE_AUTH_CACHE_TTL."""
    admin_call(address, "RevokeApiKey", admin_pb2.RevokeApiKeyRequest(key_id=key_id))
    console.print(json.dumps({"key_id": key_id, "revoked": True}))


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _shown(policy: admin_pb2.TenantPolicy) -> dict[str, Any]:
    """A policy as the CLI prints it: names, None where the mesh's default applies."""

    def names(field: str, values: list[int], enum: Any, prefix: str) -> list[str] | None:
        if not policy.HasField(field):  # type: ignore[arg-type]
            return None
        return [enum.Name(v).removeprefix(prefix).lower() for v in values]

    return {
        "tenant": policy.tenant,
        "priorities": names(
            "priorities", list(policy.priorities.classes), job_pb2.PriorityClass, "PRIORITY_CLASS_"
        ),
        "networks": names("networks", list(policy.networks.networks), job_pb2.Network, "NETWORK_"),
        "subclouds": list(policy.subclouds.names) if policy.HasField("subclouds") else None,
        "credit_limit": policy.credit_limit_micro_credits
        if policy.HasField("credit_limit_micro_credits")
        else None,
    }


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
        typer.Option(
            help="Every part not given goes back to the mesh's default (else the options "
            "change only themselves)."
        ),
    ] = False,
    address: Address = None,
) -> None:
    """Change TENANT's policy: the options given replace those parts, the rest stays (with
    --clear: the mesh's defaults but for the options given); bridges apply it within
    FLEETWIRE_BRIDGE_AUTH_CACHE_TTL."""
    policy = admin_pb2.TenantPolicy(tenant=tenant)
    paths = []
    chosen_priorities = _names(priorities)
    if chosen_priorities is not None:
        unknown = sorted(set(chosen_priorities) - set(PRIORITY_NAMES))
        if unknown:
            err_console.print(
                f"unknown priorities: {', '.join(unknown)} ({', '.join(PRIORITY_NAMES)})"
            )
            raise typer.Exit(2)
        policy.priorities.CopyFrom(
            admin_pb2.PriorityClasses(
                classes=[f"PRIORITY_CLASS_{p.upper()}" for p in chosen_priorities]
            )
        )
        paths.append("priorities")
    chosen_networks = _names(networks)
    if chosen_networks is not None:
        policy.networks.CopyFrom(
            admin_pb2.Networks(networks=network_values(chosen_networks, "--networks"))
        )
        paths.append("networks")
    chosen_subclouds = _names(subclouds)
    if chosen_subclouds is not None:
        policy.subclouds.CopyFrom(admin_pb2.Subclouds(names=chosen_subclouds))
        paths.append("subclouds")
    if credit_limit is not None:
        policy.credit_limit_micro_credits = credit_limit
        paths.append("credit_limit_micro_credits")
    if clear:
        paths = ["priorities", "networks", "subclouds", "credit_limit_micro_credits"]
    if not paths:
        err_console.print("nothing to change: give an option (or --clear)")
        raise typer.Exit(2)
    request = admin_pb2.UpdateTenantPolicyRequest(
        policy=policy, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    reply = admin_call(address, "UpdateTenantPolicy", request)
    typer.echo(json.dumps(_shown(reply.policy)))


@tenants_app.command("show")
def tenants_show(tenant: str, address: Address = None) -> None:
    """TENANT's policy (null: the mesh's default, FLEETWIRE_BRIDGE_DEFAULT_*)."""
    reply = admin_call(address, "GetTenantPolicy", admin_pb2.GetTenantPolicyRequest(tenant=tenant))
    typer.echo(json.dumps(_shown(reply.policy)))
