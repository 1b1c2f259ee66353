"""Eligibility and scoring rules."""

from __future__ import annotations

import pytest

from scheduler.matching import JobNeeds, NodeProfile, Standing, ineligibility, score

GPU_NODE = NodeProfile(
    networks=frozenset({"mainnet"}),
    models={"llama": "v2"},
    region="eu-west",
    gpus=(("a100", 81920),),
)


@pytest.mark.parametrize(
    ("needs", "reason"),
    [
        (JobNeeds(network="mainnet", model="llama"), None),
        (JobNeeds(network="testnet", model="llama"), "NETWORK"),
        (JobNeeds(network="mainnet", model="mistral"), "MODEL"),
        (JobNeeds(network="mainnet", model="llama", model_version="v1"), "MODEL_VERSION"),
        (JobNeeds(network="mainnet", model="llama", model_version="v2"), None),
        (JobNeeds(network="mainnet", model="llama", region="us-east"), "REGION"),
        (JobNeeds(network="mainnet", model="llama", region="eu-west"), None),
        (JobNeeds(network="mainnet", model="llama", gpu_class="l4"), "GPU"),
        (JobNeeds(network="mainnet", model="llama", min_gpu_memory_mib=100_000), "GPU"),
        (
            JobNeeds(network="mainnet", model="llama", gpu_class="a100", min_gpu_memory_mib=80_000),
            None,
        ),
        (JobNeeds(network="mainnet", model="llama", subcloud="acme"), "SUBCLOUD"),
    ],
)
def test_eligibility(needs: JobNeeds, reason: str | None) -> None:
    assert ineligibility(GPU_NODE, needs) == reason


def test_subcloud_nodes_take_only_their_subclouds_jobs() -> None:
    private = NodeProfile(
        networks=frozenset({"mainnet"}), models={"llama": ""}, subclouds=frozenset({"acme"})
    )
    assert (
        ineligibility(private, JobNeeds(network="mainnet", model="llama", subcloud="acme")) is None
    )
    assert (
        ineligibility(private, JobNeeds(network="mainnet", model="llama"))
        == "RESERVED_FOR_SUBCLOUD"
    )
    assert (
        ineligibility(private, JobNeeds(network="mainnet", model="llama", subcloud="other"))
        == "SUBCLOUD"
    )


def test_score_prefers_free_fast_unpenalised_nodes() -> None:
    idle = Standing(slots=8, free_slots=8)
    busy = Standing(slots=8, free_slots=1)
    fast = Standing(slots=8, free_slots=4, recent_ttft_ms=[5.0])
    slow = Standing(slots=8, free_slots=4, recent_ttft_ms=[500.0])
    penalised = Standing(slots=8, free_slots=8, penalty_points=5)
    assert score(idle) > score(busy)
    assert score(fast) > score(slow)
    assert score(idle) > score(penalised)
