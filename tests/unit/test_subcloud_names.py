"""One subcloud rule for jobs, node configs and Hello: the names a routing key keeps apart.
Once "a.b" and "a_b" (and "Acme" and "acme") shared a queue; now such names are refused
and every accepted name is its own routing-key word."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetwire.domain.errors import ConfigurationError, InvalidArgument
from fleetwire.domain.validation import validate_spec
from fleetwire.messaging.topology import SUBCLOUD_NAME, Topology, route_word
from fleetwire.process.settings import BridgeSettings, NodeSettings
from fleetwire.v1 import job_pb2
from node.config import load_profile

GOOD = ["acme", "acme-lab", "a", "0", "eu-west-1", "a" * 64]
BAD = ["a.b", "a_b", "Acme", "acme\n", "-acme", "a" * 65, "a/b", "a b", "", "é"]


def job(subcloud: str) -> job_pb2.JobSpec:
    spec = job_pb2.JobSpec(model="m", prompt="p", sampling=job_pb2.SamplingParams(max_tokens=1))
    spec.constraints.subcloud = subcloud
    return spec


def test_accepted_names_are_their_own_routing_key_word() -> None:
    topology = Topology("ns")
    keys = {topology.route_key("mainnet", "tiny-llama", name) for name in GOOD}
    assert len(keys) == len(GOOD)  # injective
    for name in GOOD:
        assert topology.route_key("mainnet", "tiny-llama", name) == f"mainnet.tiny-llama.{name}"


def test_names_the_word_folding_would_merge_are_refused() -> None:
    # route_word (still used for model names) folds these onto one word: as subclouds they
    # would share a queue, so the rule refuses them.
    assert route_word("a.b") == route_word("a_b") == route_word("A_B")
    assert not any(SUBCLOUD_NAME.fullmatch(name) for name in BAD)


@pytest.mark.parametrize("name", [n for n in BAD if n])
def test_route_key_refuses_a_name_outside_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match="not a subcloud name"):
        Topology("ns").route_key("mainnet", "tiny-llama", name)


@pytest.mark.parametrize("name", [n for n in BAD if n])
def test_a_job_with_such_a_subcloud_is_invalid_argument(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_spec(job(name), models=["m"], limits=BridgeSettings())
    assert [v.field for v in caught.value.violations] == ["job.constraints.subcloud"]


@pytest.mark.parametrize("name", GOOD)
def test_a_job_with_a_good_subcloud_is_valid(name: str) -> None:
    spec = validate_spec(job(name), models=["m"], limits=BridgeSettings())
    assert spec.constraints.subcloud == name


@pytest.mark.parametrize("name", [n for n in BAD if n])
def test_a_node_config_with_such_a_subcloud_is_refused(tmp_path: Path, name: str) -> None:
    settings = NodeSettings(model_path=tmp_path, key_file=tmp_path / "key", subclouds=[name])
    with pytest.raises(ConfigurationError, match="subcloud"):
        load_profile(settings)
