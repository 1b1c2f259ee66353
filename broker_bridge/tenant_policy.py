"""What a tenant may submit: its policy (priority classes, networks, subclouds) and, for
mainnet, its credit. A part of the policy the tenant has none of is the mesh's default
(``FLEETWIRE_BRIDGE_DEFAULT_*``: no urgent class, no subcloud, no mainnet debt). Pure
checks on a validated spec; the desks call them before a job is written, so a refused job
costs nothing and leaves nothing behind."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence

from fleetwire.domain.errors import FailedPrecondition, PermissionDenied
from fleetwire.messaging.topology import NETWORK_NAMES
from fleetwire.process.settings import BridgeSettings
from fleetwire.store.tenants import TenantLimits
from fleetwire.v1 import job_pb2


def priority_name(priority: int) -> str:
    return str(job_pb2.PriorityClass.Name(priority)).removeprefix("PRIORITY_CLASS_").lower()


def with_defaults(policy: TenantLimits, settings: BridgeSettings) -> TenantLimits:
    """``policy`` with the mesh's defaults where the tenant has no rule of its own."""

    def default(names: list[str] | None) -> frozenset[str] | None:
        return None if names is None else frozenset(names)

    return dataclasses.replace(
        policy,
        priorities=policy.priorities
        if policy.priorities is not None
        else default(settings.default_priorities),
        networks=policy.networks
        if policy.networks is not None
        else default(settings.default_networks),
        subclouds=policy.subclouds
        if policy.subclouds is not None
        else default(settings.default_subclouds),
        credit_limit=policy.credit_limit
        if policy.credit_limit is not None
        else settings.default_credit_limit,
    )


def check_policy(spec: job_pb2.JobSpec, tenant_id: str, policy: TenantLimits) -> None:
    """PermissionDenied when the tenant's policy does not allow the spec's priority class,
    network or subcloud."""
    priority = priority_name(spec.priority)
    if policy.priorities is not None and priority not in policy.priorities:
        raise PermissionDenied(
            f"tenant {tenant_id} may not submit {priority} jobs "
            f"(allowed: {', '.join(sorted(policy.priorities)) or 'none'})",
            reason="PRIORITY_NOT_ALLOWED",
        )
    network = NETWORK_NAMES.get(spec.network, "")
    if policy.networks is not None and network not in policy.networks:
        raise PermissionDenied(
            f"tenant {tenant_id} may not submit to {network or 'that network'}",
            reason="NETWORK_NOT_ALLOWED",
        )
    subcloud = spec.constraints.subcloud
    if subcloud and policy.subclouds is not None and subcloud not in policy.subclouds:
        raise PermissionDenied(
            f"tenant {tenant_id} may not use the subcloud {subcloud}",
            reason="SUBCLOUD_NOT_ALLOWED",
        )


async def check_credit(
    specs: Sequence[job_pb2.JobSpec],
    tenant_id: str,
    policy: TenantLimits,
    balance_of: Callable[[str], Awaitable[int]],
) -> None:
    """FailedPrecondition (INSUFFICIENT_CREDIT) when ``specs`` hold a mainnet job and the
    tenant has a credit limit its balance has reached (read once)."""
    mainnet = any(spec.network == job_pb2.NETWORK_MAINNET for spec in specs)
    if policy.credit_limit is None or not mainnet:
        return
    balance = await balance_of(tenant_id)
    if balance + policy.credit_limit <= 0:
        raise FailedPrecondition(
            f"tenant {tenant_id} has no credit left for mainnet jobs (balance {balance}, "
            f"credit limit {policy.credit_limit} micro-credits); testnet jobs are free",
            reason="INSUFFICIENT_CREDIT",
        )
