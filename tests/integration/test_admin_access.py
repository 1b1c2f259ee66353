"""Who may use the mesh, administered over the scheduler's admin port (no database
credentials): node registrations and grants, tenants' API keys and policies, operators'
keys, and the audit log that names the operator of each action — on this run's real
scheduler, bridge and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any, TypeAlias, cast

import grpc
import pytest
from google.protobuf import field_mask_pb2
from nacl.signing import SigningKey

from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2
from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2
from fleetwire.v1.mesh_admin_service_pb2_grpc import MeshAdminServiceStub
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import (
    bearer,
    reason_of,
    running_bridge,
    spec,
    stub_of,
    with_bridge,
)
from tests.support.eventually import eventually

Admin: TypeAlias = MeshAdminServiceStub
STRONG_KEY = bytes(SigningKey.generate().verify_key)


async def refusal(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code(), reason_of(err)
    return grpc.StatusCode.OK, ""


async def audited(admin: Admin, target: str) -> list[tuple[str, str]]:
    reply = await admin.ListAuditEntries(admin_pb2.ListAuditEntriesRequest(target=target))
    return [(e.action, e.actor) for e in reply.entries]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_nodes_are_registered_granted_listed_and_revoked(admin: Admin) -> None:
    node_id = unique("access-node")
    key, other = (bytes(SigningKey.generate().verify_key) for _ in range(2))
    first = await admin.RegisterNode(admin_pb2.RegisterNodeRequest(node_id=node_id, public_key=key))
    assert first.registration == admin_pb2.REGISTRATION_CREATED
    assert list(first.networks) == [job_pb2.NETWORK_TESTNET], "testnet only unless told"
    again = await admin.RegisterNode(admin_pb2.RegisterNodeRequest(node_id=node_id, public_key=key))
    assert again.registration == admin_pb2.REGISTRATION_UNCHANGED
    squat = admin.RegisterNode(admin_pb2.RegisterNodeRequest(node_id=node_id, public_key=other))
    assert await refusal(squat) == (grpc.StatusCode.FAILED_PRECONDITION, "KEY_MISMATCH")
    rotated = await admin.RegisterNode(
        admin_pb2.RegisterNodeRequest(node_id=node_id, public_key=other, replace=True)
    )
    assert rotated.registration == admin_pb2.REGISTRATION_REPLACED

    grant = admin_pb2.GrantNodeRequest(node_id=node_id, subcloud="access-pool")
    assert (await admin.GrantNode(grant)).changed
    assert not (await admin.GrantNode(grant)).changed
    await admin.GrantNode(
        admin_pb2.GrantNodeRequest(node_id=node_id, network=job_pb2.NETWORK_MAINNET)
    )
    await admin.RevokeNode(admin_pb2.RevokeNodeRequest(node_id=node_id))

    listed = await admin.ListRegisteredNodes(admin_pb2.ListRegisteredNodesRequest())
    (node,) = [n for n in listed.nodes if n.node_id == node_id]
    assert node.public_key == other
    assert node.revoked
    assert set(node.networks) == {job_pb2.NETWORK_MAINNET, job_pb2.NETWORK_TESTNET}
    assert list(node.subclouds) == ["access-pool"]
    actions = [
        action
        for action, actor in await audited(admin, node_id)
        if actor.startswith("operator:tests")
    ]
    # Newest first; the refused squat left no entry, an unchanged grant does.
    assert actions == ["node.revoke", *["node.grant"] * 3, *["node.register"] * 3]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (admin_pb2.RegisterNodeRequest(node_id="Bad Id", public_key=bytes(32)), "node_id"),
        (admin_pb2.RegisterNodeRequest(node_id="short-key", public_key=b"x"), "public_key"),
        # The identity point: small order, one signature would verify for many messages.
        (
            admin_pb2.RegisterNodeRequest(node_id="weak-key", public_key=bytes([1] + [0] * 31)),
            "public_key",
        ),
        (
            admin_pb2.RegisterNodeRequest(
                node_id="n", public_key=STRONG_KEY, networks=[cast(Any, 7)]
            ),
            "networks",
        ),
    ],
)
async def test_a_bad_registration_is_invalid_argument(
    admin: Admin, request_: admin_pb2.RegisterNodeRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await admin.RegisterNode(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")


async def test_api_keys_made_over_the_admin_port_open_and_close_the_bridge(
    admin: Admin, settings: Settings
) -> None:
    tenant = unique("access-tenant")
    created = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant=tenant, name="ci"))
    assert created.key.startswith("fwk_")
    listed = await admin.ListApiKeys(admin_pb2.ListApiKeysRequest(tenant=tenant))
    assert [(k.key_id, k.name) for k in listed.keys] == [(created.key_id, "ci")]
    assert created.key not in str(listed), "the secret is shown once"

    strict = with_bridge(settings, require_api_key=True, auth_cache_ttl=timedelta(0))
    async with running_bridge(strict) as bridge, stub_of(bridge) as jobs:
        status = jobs.Status(
            job_service_pb2.StatusRequest(job_id=str(uuid.uuid4())), metadata=bearer(created.key)
        )
        assert (await refusal(status))[0] == grpc.StatusCode.NOT_FOUND, "the key is accepted"
        await admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=created.key_id))
        status = jobs.Status(
            job_service_pb2.StatusRequest(job_id=str(uuid.uuid4())), metadata=bearer(created.key)
        )
        assert await refusal(status) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    again = admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=created.key_id))
    assert (await refusal(again))[0] == grpc.StatusCode.NOT_FOUND
    assert [a for a, _ in await audited(admin, created.key_id)] == [
        "api-key.revoke",
        "api-key.create",
    ]


async def test_a_tenant_policy_is_changed_field_by_field(admin: Admin, settings: Settings) -> None:
    tenant = unique("access-policy")
    key = (await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(tenant=tenant))).key
    policy = admin_pb2.TenantPolicy(
        tenant=tenant,
        priorities=admin_pb2.PriorityClasses(classes=[job_pb2.PRIORITY_CLASS_NORMAL]),
        credit_limit_micro_credits=5,
    )
    set_ = await admin.UpdateTenantPolicy(admin_pb2.UpdateTenantPolicyRequest(policy=policy))
    assert list(set_.policy.priorities.classes) == [job_pb2.PRIORITY_CLASS_NORMAL]
    assert set_.policy.credit_limit_micro_credits == 5
    assert not set_.policy.HasField("networks"), "unset: the mesh's default"

    strict = with_bridge(settings, require_api_key=True, auth_cache_ttl=timedelta(0))
    async with running_bridge(strict) as bridge, stub_of(bridge) as jobs:
        urgent = jobs.Submit(
            job_service_pb2.SubmitRequest(job=spec(priority=job_pb2.PRIORITY_CLASS_URGENT)),
            metadata=bearer(key),
        )
        assert await refusal(urgent) == (grpc.StatusCode.PERMISSION_DENIED, "PRIORITY_NOT_ALLOWED")

    # Only the credit limit changes; then priorities go back to the default (in the mask, unset).
    only_credit = admin_pb2.UpdateTenantPolicyRequest(
        policy=admin_pb2.TenantPolicy(tenant=tenant, credit_limit_micro_credits=9),
        update_mask=field_mask_pb2.FieldMask(paths=["credit_limit_micro_credits"]),
    )
    kept = (await admin.UpdateTenantPolicy(only_credit)).policy
    assert (list(kept.priorities.classes), kept.credit_limit_micro_credits) == (
        [job_pb2.PRIORITY_CLASS_NORMAL],
        9,
    )
    cleared = admin_pb2.UpdateTenantPolicyRequest(
        policy=admin_pb2.TenantPolicy(tenant=tenant),
        update_mask=field_mask_pb2.FieldMask(paths=["priorities"]),
    )
    await admin.UpdateTenantPolicy(cleared)
    shown = (await admin.GetTenantPolicy(admin_pb2.GetTenantPolicyRequest(tenant=tenant))).policy
    assert not shown.HasField("priorities")
    assert shown.credit_limit_micro_credits == 9
    entries = await admin.ListAuditEntries(admin_pb2.ListAuditEntriesRequest(target=tenant))
    assert json.loads(entries.entries[0].detail_json)["credit_limit"] == 9

    for bad, field in (
        (admin_pb2.TenantPolicy(tenant=tenant, credit_limit_micro_credits=-1), "credit_limit"),
        (admin_pb2.TenantPolicy(tenant="Not A Tenant"), "policy.tenant"),
        (
            admin_pb2.TenantPolicy(
                tenant=tenant, subclouds=admin_pb2.Subclouds(names=["Not A Pool"])
            ),
            "policy.subclouds",
        ),
    ):
        call = admin.UpdateTenantPolicy(admin_pb2.UpdateTenantPolicyRequest(policy=bad))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (caught.value.details() or "")
    unknown_field = admin_pb2.UpdateTenantPolicyRequest(
        policy=admin_pb2.TenantPolicy(tenant=tenant),
        update_mask=field_mask_pb2.FieldMask(paths=["rate"]),
    )
    assert (await refusal(admin.UpdateTenantPolicy(unknown_field)))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_an_admin_makes_and_revokes_operator_keys(
    admin: Admin, scheduler: SchedulerServer, settings: Settings
) -> None:
    name = unique("access-viewer")
    made = await admin.CreateOperatorKey(
        admin_pb2.CreateOperatorKeyRequest(name=name, role=admin_pb2.OPERATOR_ROLE_VIEWER)
    )
    assert made.key.startswith("fwo_")
    listed = await admin.ListOperatorKeys(admin_pb2.ListOperatorKeysRequest())
    assert (made.key_id, admin_pb2.OPERATOR_ROLE_VIEWER) in [
        (k.key_id, k.role) for k in listed.keys
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.admin_port}") as channel:
        as_viewer = MeshAdminServiceStub(channel)
        reads = as_viewer.ListOperatorKeys(
            admin_pb2.ListOperatorKeysRequest(), metadata=bearer(made.key)
        )
        assert (await refusal(reads))[0] == grpc.StatusCode.OK
        escalate = as_viewer.CreateOperatorKey(
            admin_pb2.CreateOperatorKeyRequest(name="sneaky", role=admin_pb2.OPERATOR_ROLE_ADMIN),
            metadata=bearer(made.key),
        )
        assert await refusal(escalate) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_TOO_LOW")
        await admin.RevokeOperatorKey(admin_pb2.RevokeOperatorKeyRequest(key_id=made.key_id))

        async def refused() -> bool:
            again = as_viewer.ListNodes(admin_pb2.ListNodesRequest(), metadata=bearer(made.key))
            return bool((await refusal(again))[0] == grpc.StatusCode.UNAUTHENTICATED)

        ttl = settings.scheduler.admin_cache_ttl.total_seconds()
        await eventually(refused, within=ttl + 3, what="the revoked operator key refused")
    actions = await audited(admin, made.key_id)
    assert [a for a, _ in actions] == ["operator-key.revoke", "operator-key.create"]
    assert all(actor.startswith("operator:tests (") for _, actor in actions)
    no_role = admin.CreateOperatorKey(admin_pb2.CreateOperatorKeyRequest(name="no-role"))
    assert (await refusal(no_role))[0] == grpc.StatusCode.INVALID_ARGUMENT
