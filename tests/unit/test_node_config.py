"""The node's config file and what it advertises (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.settings import NodeSettings
from node.capabilities import gpu_class_of, parse_nvidia_smi
from node.config import ModelConfig, load_profile

EXAMPLE = """
region = "eu-west"
subclouds = ["acme-lab"]
networks = ["mainnet"]

[[models]]
name = "tiny-llama"
path = "models/tiny-llama"
version = "2026-11-01"
max_num_seqs = 6
max_model_len = 1024
kv_cache_mib = 0
price_per_1k_prompt_tokens = 100
price_per_1k_completion_tokens = 300

[[models]]
name = "other-model"
path = "models/other"
"""


def settings_with(tmp_path: Path, text: str | None) -> NodeSettings:
    config = None
    if text is not None:
        config = tmp_path / "node.toml"
        config.write_text(text)
    return NodeSettings(config=config, region="local", networks=["mainnet", "testnet"])


def test_without_a_file_the_settings_describe_one_model(tmp_path: Path) -> None:
    profile = load_profile(settings_with(tmp_path, None))
    assert profile.region == "local"
    assert profile.networks == ("mainnet", "testnet")
    assert profile.subclouds == ()
    (model,) = profile.models
    assert model.name == "tiny-llama"
    assert model.max_num_seqs == 8


def test_the_file_replaces_models_region_subclouds_and_networks(tmp_path: Path) -> None:
    profile = load_profile(settings_with(tmp_path, EXAMPLE))
    assert profile.region == "eu-west"
    assert profile.subclouds == ("acme-lab",)
    assert profile.networks == ("mainnet",)
    assert profile.models == (
        ModelConfig(
            name="tiny-llama",
            path=Path("models/tiny-llama"),
            version="2026-11-01",
            max_num_seqs=6,
            max_model_len=1024,
            kv_cache_mib=0,
            price_per_1k_prompt_tokens=100,
            price_per_1k_completion_tokens=300,
        ),
        ModelConfig(name="other-model", path=Path("models/other")),
    )


def test_keys_left_out_keep_the_settings(tmp_path: Path) -> None:
    profile = load_profile(settings_with(tmp_path, 'subclouds = ["a", "b"]\n'))
    assert profile.region == "local"
    assert profile.subclouds == ("a", "b")
    assert profile.models[0].name == "tiny-llama"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("regoin = 'x'\n", "unknown key"),
        ("[[models]]\nname = 'm'\n", r"models\[0\]\.path is required"),
        ("[[models]]\nname = 'm'\npath = 'p'\nmax_num_seqs = 0\n", "max_num_seqs"),
        ("[[models]]\nname = 'm'\npath = 'p'\nslots = 3\n", "unknown key"),
        ("[[models]]\nname = 'm'\npath = 'p'\n[[models]]\nname = 'm'\npath = 'q'\n", "twice"),
        ("networks = ['moonnet']\n", "networks"),
        ("subclouds = ['Not OK']\n", "subcloud"),
        ("region = 3\n", "region must be a string"),
        ("models = [\n", "not TOML"),
    ],
)
def test_a_bad_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_profile(settings_with(tmp_path, text))


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="node config"):
        load_profile(NodeSettings(config=tmp_path / "absent.toml"))


@pytest.mark.parametrize(
    ("name", "gpu_class"),
    [
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("Tesla T4", "tesla-t4"),
        ("", "unknown"),
    ],
)
def test_gpu_class_is_short_and_stable(name: str, gpu_class: str) -> None:
    assert gpu_class_of(name) == gpu_class


def test_nvidia_smi_output_is_parsed() -> None:
    gpus = parse_nvidia_smi("NVIDIA A100-SXM4-80GB, 81920\nNVIDIA L4, 23034\ngarbage\n")
    assert [(g.gpu_class, g.memory_mib, g.name, g.source) for g in gpus] == [
        ("a100", 81920, "NVIDIA A100-SXM4-80GB", "nvidia-smi"),
        ("l4", 23034, "NVIDIA L4", "nvidia-smi"),
    ]
