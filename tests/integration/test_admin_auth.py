"""The admin surface: MeshAdminService only on the scheduler's admin port, and every method
only for an operator key whose role allows it (``scheduler/admin_gate.py``), on this run's
real scheduler and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from fleetwire.process.settings import SchedulerSettings, Settings, TlsSettings
from fleetwire.store.operators import OperatorStore, Role
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import mesh_admin_service_pb2, mesh_admin_service_pb2_grpc
from fleetwire_tools.certs import ensure_authority, issue
from scheduler.admin_gate import POLICY
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import reason_of
from tests.support.eventually import eventually
from tests.support.mesh_admin import bearer, create_operator_key
from tests.support.tls import make_certificates

SERVICE = mesh_admin_service_pb2.DESCRIPTOR.services_by_name["MeshAdminService"]
# A harmless request per method: valid, and touching nothing (an unknown job for replay).
REQUESTS: dict[str, Any] = {
    "ListNodes": mesh_admin_service_pb2.ListNodesRequest(),
    "QueueDepths": mesh_admin_service_pb2.QueueDepthsRequest(),
    "ListDeadLetters": mesh_admin_service_pb2.ListDeadLettersRequest(limit=1),
    "ReplayDeadLetter": mesh_admin_service_pb2.ReplayDeadLetterRequest(job_id=str(uuid.uuid4())),
    "JobTrail": mesh_admin_service_pb2.JobTrailRequest(job_id=str(uuid.uuid4())),
    "GetBalance": mesh_admin_service_pb2.GetBalanceRequest(account="tenant:anonymous"),
    "ListPendingNodes": mesh_admin_service_pb2.ListPendingNodesRequest(),
    "ApproveNode": mesh_admin_service_pb2.ApproveNodeRequest(
        node_id="no-such-node", key_id="0000000000000000"
    ),
    "RevokeNode": mesh_admin_service_pb2.RevokeNodeRequest(node_id=f"none-{uuid.uuid4().hex}"),
    "RegisterNode": mesh_admin_service_pb2.RegisterNodeRequest(
        node_id="admin-auth-none", public_key=bytes(32)
    ),
    "ListRegisteredNodes": mesh_admin_service_pb2.ListRegisteredNodesRequest(),
    "GrantNode": mesh_admin_service_pb2.GrantNodeRequest(
        node_id="admin-auth-none", subcloud="none"
    ),
    "ValidateNode": mesh_admin_service_pb2.ValidateNodeRequest(node_id="admin-auth-none", jobs=1),
    "CreateApiKey": mesh_admin_service_pb2.CreateApiKeyRequest(tenant="admin-auth-none"),
    "ListApiKeys": mesh_admin_service_pb2.ListApiKeysRequest(tenant="admin-auth-none"),
    "RevokeApiKey": mesh_admin_service_pb2.RevokeApiKeyRequest(key_id="000000000000"),
    "GetTenantPolicy": mesh_admin_service_pb2.GetTenantPolicyRequest(tenant="admin-auth-none"),
    "UpdateTenantPolicy": mesh_admin_service_pb2.UpdateTenantPolicyRequest(
        policy=mesh_admin_service_pb2.TenantPolicy(tenant="admin-auth-none")
    ),
    "CreateOperatorKey": mesh_admin_service_pb2.CreateOperatorKeyRequest(
        name="admin-auth-none", role=mesh_admin_service_pb2.OPERATOR_ROLE_VIEWER
    ),
    "ListOperatorKeys": mesh_admin_service_pb2.ListOperatorKeysRequest(),
    "RevokeOperatorKey": mesh_admin_service_pb2.RevokeOperatorKeyRequest(key_id="000000000000"),
    "ListAuditEntries": mesh_admin_service_pb2.ListAuditEntriesRequest(limit=1),
    "WhoAmI": mesh_admin_service_pb2.WhoAmIRequest(),
    "ListJobs": mesh_admin_service_pb2.ListJobsRequest(page_size=1),
    "JobThroughput": mesh_admin_service_pb2.JobThroughputRequest(minutes=1),
    "ListNodeKeyHistory": mesh_admin_service_pb2.ListNodeKeyHistoryRequest(
        node_id="admin-auth-none"
    ),
    "ListTenants": mesh_admin_service_pb2.ListTenantsRequest(limit=1),
    "ListLedgerAccounts": mesh_admin_service_pb2.ListLedgerAccountsRequest(limit=1),
}


@pytest.fixture
async def admin_stub(
    scheduler: SchedulerServer,
) -> AsyncIterator[mesh_admin_service_pb2_grpc.MeshAdminServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.admin_port}") as channel:
        yield mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)


async def call(
    stub: mesh_admin_service_pb2_grpc.MeshAdminServiceStub, method: str, key: str | None
) -> tuple[grpc.StatusCode, str]:
    """The code and ErrorInfo reason of one call (OK, "" when it was served)."""
    try:
        await getattr(stub, method)(
            REQUESTS[method], metadata=bearer(key) if key else (), timeout=10
        )
    except grpc.aio.AioRpcError as err:
        return err.code(), reason_of(err)
    return grpc.StatusCode.OK, ""


def test_every_admin_method_has_a_policy_entry() -> None:
    """A new RPC must be placed in the policy (and in this test's requests) on purpose."""
    assert set(SERVICE.methods_by_name) == set(POLICY) == set(REQUESTS)


def test_the_admin_port_listens_on_this_machine_only_by_default() -> None:
    assert SchedulerSettings.model_fields["admin_host"].default == "127.0.0.1"


@pytest.mark.parametrize("method", sorted(REQUESTS))
async def test_no_credential_is_unauthenticated(
    admin_stub: mesh_admin_service_pb2_grpc.MeshAdminServiceStub, method: str
) -> None:
    assert await call(admin_stub, method, None) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "OPERATOR_KEY_MISSING",
    )


async def test_a_tenant_key_and_an_unknown_key_are_refused(
    admin_stub: mesh_admin_service_pb2_grpc.MeshAdminServiceStub, pool: asyncpg.Pool
) -> None:
    tenant = await TenantStore(pool).create_key("admin-auth-tenant")
    assert await call(admin_stub, "ListNodes", tenant.secret) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_AN_OPERATOR_KEY",
    )
    forged = "fwo_000000000000_" + "A" * 43
    assert await call(admin_stub, "ListNodes", forged) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "OPERATOR_KEY_INVALID",
    )
    assert await call(admin_stub, "ListNodes", "not-a-key") == (
        grpc.StatusCode.UNAUTHENTICATED,
        "OPERATOR_KEY_INVALID",
    )


async def test_a_viewer_reads_but_does_not_act(
    admin_stub: mesh_admin_service_pb2_grpc.MeshAdminServiceStub, pool: asyncpg.Pool
) -> None:
    viewer = await OperatorStore(pool).create_key("admin-auth-viewer", Role.VIEWER, actor="t")
    for method, needed in POLICY.items():
        code, reason = await call(admin_stub, method, viewer.secret)
        if needed is Role.VIEWER:
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), (method, code)
        else:
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_TOO_LOW"), method


async def test_an_admin_acts(
    admin_stub: mesh_admin_service_pb2_grpc.MeshAdminServiceStub, operator_key: str
) -> None:
    # Authorized: the unknown job is then NOT_FOUND, not a refusal.
    assert await call(admin_stub, "ReplayDeadLetter", operator_key) == (
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
    )


async def test_a_revoked_key_stops_working_within_the_cache_ttl(
    admin_stub: mesh_admin_service_pb2_grpc.MeshAdminServiceStub,
    pool: asyncpg.Pool,
    settings: Settings,
) -> None:
    store = OperatorStore(pool)
    issued = await store.create_key("admin-auth-revoked", Role.ADMIN, actor="t")
    assert await call(admin_stub, "ListNodes", issued.secret) == (grpc.StatusCode.OK, "")
    assert await store.revoke_key(issued.operator.key_id, actor="t")

    async def refused() -> bool:
        code, _ = await call(admin_stub, "ListNodes", issued.secret)
        return code == grpc.StatusCode.UNAUTHENTICATED

    ttl = settings.scheduler.admin_cache_ttl.total_seconds()
    await eventually(refused, within=ttl + 3, what="the revoked key refused")
    audit = [(r["action"], r["target"]) for r in await store.audit_entries(10)]
    assert ("operator-key.revoke", issued.operator.key_id) in audit
    assert ("operator-key.create", issued.operator.key_id) in audit


async def test_the_node_port_serves_no_admin_method(
    scheduler: SchedulerServer, operator_key: str
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{scheduler.port}") as channel:
        stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
        assert (await call(stub, "ListNodes", operator_key))[0] == grpc.StatusCode.UNIMPLEMENTED


async def test_an_admin_port_that_wants_mtls_refuses_clients_without_a_certificate(
    settings: Settings, tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path / "mesh")
    authority = ensure_authority(certs.ca.parent)
    client = issue(authority, tmp_path / "mesh" / "operator", common_name="ops", client=True)
    tls = TlsSettings(cert_file=certs.server.cert, key_file=certs.server.key, insecure=False)
    group = settings.scheduler.model_copy(
        update={
            "port": 0,
            "admin_port": 0,
            "admin_client_ca_file": certs.ca,
            "scheduler_id": f"mtls-{uuid.uuid4().hex[:6]}",
        }
    )
    server = SchedulerServer(settings.model_copy(update={"tls": tls, "scheduler": group}))
    await server.start()
    try:
        key = await create_operator_key(settings.postgres.dsn.get_secret_value(), role="viewer")
        address = f"127.0.0.1:{server.admin_port}"
        roots = certs.ca.read_bytes()
        bare = grpc.ssl_channel_credentials(root_certificates=roots)
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=roots,
            private_key=client.key.read_bytes(),
            certificate_chain=client.cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(address, bare) as channel:
            stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
            assert (await call(stub, "ListNodes", key))[0] == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(address, with_cert) as channel:
            stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
            assert await call(stub, "ListNodes", key) == (grpc.StatusCode.OK, "")
            # The certificate is not a credential by itself: the operator key still is.
            assert (await call(stub, "ListNodes", None))[0] == grpc.StatusCode.UNAUTHENTICATED
        # The node port does not ask nodes for a certificate.
        async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", bare) as channel:
            node_stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(channel)
            assert (await call(node_stub, "ListNodes", key))[0] == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(grace=1)
