"""What a node serves and where it sits: the ``FLEETWIRE_NODE_*`` settings, optionally
replaced by a TOML config file (``FLEETWIRE_NODE_CONFIG``).

The file (every key optional; ``[[models]]`` replaces the single model of the settings)::

    region = "eu-west"
    subclouds = ["acme-lab"]
    networks = ["mainnet"]

    [[models]]
    name = "tiny-llama"                       # the name clients ask for
    path = "/srv/models/tiny-llama"           # local Hugging Face directory
    version = "2026-11-01"                    # free-form; empty: from the directory
    max_num_seqs = 8                          # engine concurrency (slots)
    max_model_len = 512                       # context length, tokens
    kv_cache_mib = 256                        # KV cache size (CPU); 0: let vLLM size it
    price_per_1k_prompt_tokens = 100          # micro-credits
    price_per_1k_completion_tokens = 300      # micro-credits

Pure logic, no I/O beyond reading the file: a bad file raises ``ConfigurationError`` naming
the key, before any engine starts.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetwire.domain.errors import ConfigurationError
from fleetwire.messaging.topology import NETWORK_NAMES, SUBCLOUD_NAME
from fleetwire.process.settings import NodeSettings

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
KNOWN_NETWORKS = frozenset(NETWORK_NAMES.values())
TOP_LEVEL_KEYS = frozenset({"region", "subclouds", "networks", "models"})
MODEL_KEYS = frozenset(
    {
        "name",
        "path",
        "version",
        "max_num_seqs",
        "max_model_len",
        "kv_cache_mib",
        "price_per_1k_prompt_tokens",
        "price_per_1k_completion_tokens",
    }
)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One served model: one vLLM engine."""

    name: str
    path: Path
    version: str = ""
    max_num_seqs: int = 8
    max_model_len: int = 512
    kv_cache_mib: int = 256
    """0 lets vLLM size the cache itself (``gpu_memory_utilization`` on a GPU)."""
    price_per_1k_prompt_tokens: int = 0
    price_per_1k_completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class NodeProfile:
    """Everything the node advertises besides its hardware."""

    models: tuple[ModelConfig, ...]
    region: str
    subclouds: tuple[str, ...]
    networks: tuple[str, ...]


def load_profile(settings: NodeSettings) -> NodeProfile:
    """The node's profile: from ``settings.config`` when set, else from the settings alone.

    Raises:
        ConfigurationError: the file is missing, not TOML, or has an unknown key or a bad
            value (the message names it).

    """
    base = NodeProfile(
        models=(
            ModelConfig(
                name=settings.model_name,
                path=settings.model_path,
                version=settings.model_version,
                max_num_seqs=settings.max_num_seqs,
                max_model_len=settings.max_model_len,
                kv_cache_mib=settings.kv_cache_mib,
            ),
        ),
        region=settings.region,
        subclouds=tuple(settings.subclouds),
        networks=tuple(settings.networks),
    )
    if settings.config is None:
        return _checked(base, "settings")
    try:
        data = tomllib.loads(settings.config.read_text())
    except OSError as err:
        raise ConfigurationError(f"node config {settings.config}: {err}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigurationError(f"node config {settings.config} is not TOML: {err}") from err
    return _checked(profile_from_mapping(data, base, str(settings.config)), str(settings.config))


def profile_from_mapping(data: dict[str, Any], base: NodeProfile, source: str) -> NodeProfile:
    """Applies a parsed config file over ``base``."""
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        raise ConfigurationError(f"{source}: unknown key(s) {sorted(unknown)}")
    models = base.models
    if "models" in data:
        entries = data["models"]
        if not isinstance(entries, list) or not entries:
            raise ConfigurationError(f"{source}: [[models]] must list at least one model")
        models = tuple(_model(entry, i, source) for i, entry in enumerate(entries))
    return NodeProfile(
        models=models,
        region=_str(data, "region", base.region, source),
        subclouds=tuple(_str_list(data, "subclouds", list(base.subclouds), source)),
        networks=tuple(_str_list(data, "networks", list(base.networks), source)),
    )


def _model(entry: Any, index: int, source: str) -> ModelConfig:
    where = f"{source}: models[{index}]"
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where} must be a table")
    unknown = set(entry) - MODEL_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {sorted(unknown)}")
    for required in ("name", "path"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise ConfigurationError(f"{where}.{required} is required (a string)")
    defaults = ModelConfig(name="", path=Path())
    return ModelConfig(
        name=entry["name"],
        path=Path(entry["path"]),
        version=_str(entry, "version", defaults.version, where),
        max_num_seqs=_int(entry, "max_num_seqs", defaults.max_num_seqs, where, minimum=1),
        max_model_len=_int(entry, "max_model_len", defaults.max_model_len, where, minimum=16),
        kv_cache_mib=_int(entry, "kv_cache_mib", defaults.kv_cache_mib, where, minimum=0),
        price_per_1k_prompt_tokens=_int(entry, "price_per_1k_prompt_tokens", 0, where, minimum=0),
        price_per_1k_completion_tokens=_int(
            entry, "price_per_1k_completion_tokens", 0, where, minimum=0
        ),
    )


def _checked(profile: NodeProfile, source: str) -> NodeProfile:
    names = [m.name for m in profile.models]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{source}: a model name appears twice: {names}")
    for name in names:
        if not MODEL_NAME.match(name):
            raise ConfigurationError(f"{source}: bad model name {name!r}")
    for subcloud in profile.subclouds:
        # The mesh's rule (a subcloud is a routing-key word); the scheduler refuses others.
        if not SUBCLOUD_NAME.fullmatch(subcloud):
            raise ConfigurationError(
                f"{source}: subcloud {subcloud!r} must be 1-64 characters of [a-z0-9-], "
                "starting with a letter or digit"
            )
    bad = [n for n in profile.networks if n not in KNOWN_NETWORKS]
    if bad or not profile.networks:
        raise ConfigurationError(
            f"{source}: networks must be some of {sorted(KNOWN_NETWORKS)}, got "
            f"{list(profile.networks)}"
        )
    return profile


def _str(data: dict[str, Any], key: str, default: str, where: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}.{key} must be a string, got {json.dumps(value)}")
    return value


def _str_list(data: dict[str, Any], key: str, default: list[str], where: str) -> list[str]:
    value = data.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{where}.{key} must be a list of strings")
    return value


def _int(data: dict[str, Any], key: str, default: int, where: str, *, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{where}.{key} must be an integer >= {minimum}")
    return value
