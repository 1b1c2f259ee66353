"""scheduler.node_claims: slots capped by the models' own concurrency, profiles narrowed
to the mesh's models and the granted subclouds."""

from __future__ import annotations

import pytest

from fleetwire.domain.errors import PermissionDenied
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.matching import NodeProfile
from scheduler.node_claims import admitted_profile, session_slots

PROFILE = NodeProfile(
    networks=frozenset({"mainnet"}),
    models={"tiny-llama": "v1", "other": "v2"},
    subclouds=frozenset({"a", "b"}),
)


def test_slots_are_what_the_node_announces_capped_by_its_models() -> None:
    assert session_slots(nodes_pb2.Hello(slots=8)) == 8
    assert session_slots(nodes_pb2.Hello(slots=0)) == 1
    capped = nodes_pb2.Hello(
        slots=50, models=[nodes_pb2.ServedModel(name="m", slots=4), nodes_pb2.ServedModel(slots=2)]
    )
    assert session_slots(capped) == 6


def test_models_outside_the_mesh_are_dropped() -> None:
    assert admitted_profile(PROFILE, {"tiny-llama"}, None).models == {"tiny-llama": "v1"}
    with pytest.raises(PermissionDenied) as refused:
        admitted_profile(PROFILE, {"nothing-it-serves"}, None)
    assert refused.value.reason == "NO_MESH_MODEL"


def test_subclouds_are_the_granted_ones_among_the_claimed() -> None:
    assert admitted_profile(PROFILE, {"tiny-llama"}, None).subclouds == {"a", "b"}
    assert admitted_profile(PROFILE, {"tiny-llama"}, {"b", "c"}).subclouds == {"b"}
    with pytest.raises(PermissionDenied) as refused:
        admitted_profile(PROFILE, {"tiny-llama"}, {"c"})
    assert refused.value.reason == "SUBCLOUD_NOT_GRANTED"
    public = NodeProfile(networks=frozenset({"mainnet"}), models={"tiny-llama": ""})
    assert admitted_profile(public, {"tiny-llama"}, set()).subclouds == frozenset()


def test_networks_are_the_granted_ones_among_the_claimed() -> None:
    both = NodeProfile(networks=frozenset({"mainnet", "testnet"}), models={"tiny-llama": ""})
    assert admitted_profile(both, {"tiny-llama"}, None, None).networks == {"mainnet", "testnet"}
    assert admitted_profile(both, {"tiny-llama"}, None, {"testnet"}).networks == {"testnet"}
    with pytest.raises(PermissionDenied) as refused:
        admitted_profile(both, {"tiny-llama"}, None, set())
    assert refused.value.reason == "NETWORK_NOT_GRANTED"


def test_server_names_match_as_tls_compares_them() -> None:
    from fleetwire.rpc.tls import name_matches

    names = frozenset({"Sched.Example", "*.mesh.example", "127.0.0.1"})
    assert name_matches("sched.example.", names)
    assert name_matches("a.mesh.example", names)
    assert not name_matches("a.b.mesh.example", names)
    assert not name_matches("mesh.example", names)
    assert name_matches("127.0.0.1", names)
    assert not name_matches("", names)
    assert name_matches("", frozenset({""}))
    assert not name_matches("relay.example", names)
