"""What a node may claim in Hello, checked against the mesh's limits and the operator's
grants (pure logic; the node service applies it).

Before the node proves its key, ``check_hello`` bounds what it may ask for: the size of
Hello, how many models and subclouds it names, how many slots it announces. After the
proof, ``admitted_profile`` keeps only what the mesh grants: models of the mesh's registry
(so no queue is made for a model nobody can submit) and subclouds the operator granted the
node (unless the mesh trusts claims, as the dev profile does). A node whose subclouds are
all ungranted is refused rather than turned into a public node.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from fleetwire.domain.errors import FieldViolation, InvalidArgument, PermissionDenied
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.matching import NodeProfile


@dataclass(frozen=True, slots=True)
class ClaimLimits:
    max_hello_bytes: int
    max_models: int
    max_subclouds: int
    max_slots: int


def check_hello(hello: nodes_pb2.Hello, limits: ClaimLimits) -> None:
    """Refuses a Hello that asks for more than the mesh allows, before any other work."""
    if hello.ByteSize() > limits.max_hello_bytes:
        raise PermissionDenied(
            f"Hello is {hello.ByteSize()} bytes; at most {limits.max_hello_bytes}",
            reason="HELLO_TOO_LARGE",
        )
    bad = []
    if len(hello.models) > limits.max_models:
        bad.append(FieldViolation("hello.models", f"at most {limits.max_models} models"))
    if len(hello.subclouds) > limits.max_subclouds:
        bad.append(FieldViolation("hello.subclouds", f"at most {limits.max_subclouds} subclouds"))
    if hello.slots > limits.max_slots:
        bad.append(FieldViolation("hello.slots", f"at most {limits.max_slots} slots"))
    if bad:
        raise InvalidArgument(bad)


def session_slots(hello: nodes_pb2.Hello) -> int:
    """The slots a session gets: what the node announces, capped by the concurrency its
    models report (when they report it), at least 1."""
    per_model = [m.slots for m in hello.models if m.slots > 0]
    slots = hello.slots if hello.slots > 0 else 1
    if per_model:
        slots = min(slots, sum(per_model))
    return max(1, slots)


def admitted_profile(
    profile: NodeProfile,
    mesh_models: Collection[str],
    granted: Collection[str] | None,
    granted_networks: Collection[str] | None = None,
) -> NodeProfile:
    """``profile`` narrowed to what the mesh grants; ``granted`` (subclouds) and
    ``granted_networks`` None trust the claims."""
    models = {name: version for name, version in profile.models.items() if name in mesh_models}
    if not models:
        raise PermissionDenied(
            f"the node serves none of the mesh's models ({', '.join(sorted(mesh_models))})",
            reason="NO_MESH_MODEL",
        )
    subclouds = profile.subclouds
    if granted is not None and subclouds:
        subclouds = subclouds & frozenset(granted)
        if not subclouds:
            raise PermissionDenied(
                f"subclouds {', '.join(sorted(profile.subclouds))} are not granted to this "
                "node (fleetwire admin nodes grant)",
                reason="SUBCLOUD_NOT_GRANTED",
            )
    networks = profile.networks
    if granted_networks is not None:
        networks = networks & frozenset(granted_networks)
        if not networks:
            raise PermissionDenied(
                f"networks {', '.join(sorted(profile.networks))} are not granted to this node "
                "(fleetwire admin nodes grant --network)",
                reason="NETWORK_NOT_GRANTED",
            )
    return replace(profile, models=models, subclouds=subclouds, networks=networks)
