"""docs/configuration.md against fleetwire/process/settings.py, and how values are parsed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from fleetwire.process.settings import MeshSettings, PostgresSettings, SchedulerSettings, Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def settings_groups() -> dict[str, type[BaseSettings]]:
    """Each group of ``Settings``, by its field name."""
    groups: dict[str, type[BaseSettings]] = {}
    for name, field in Settings.model_fields.items():
        group = field.annotation
        assert isinstance(group, type)
        assert issubclass(group, BaseSettings), f"Settings.{name} is not a settings group"
        groups[name] = group
    return groups


def every_setting() -> dict[str, FieldInfo]:
    """Every setting by its environment variable: the group's prefix + the field name."""
    settings: dict[str, FieldInfo] = {}
    for group in settings_groups().values():
        prefix = group.model_config.get("env_prefix", "")
        for name, field in group.model_fields.items():
            variable = f"{prefix}{name}".upper()
            assert variable not in settings, f"{variable} names two settings"
            settings[variable] = field
    return settings


def documented_rows() -> dict[str, list[str]]:
    """The table rows of docs/configuration.md, by variable: [variable, type, default,
    description]."""
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `FLEETWIRE_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        variable = cells[0].strip("`")
        assert variable not in rows, f"docs/configuration.md lists {variable} twice"
        rows[variable] = cells
    return rows


def default_text(field: FieldInfo) -> str:
    """How the table writes a field's default."""
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g} s"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(
            [v.total_seconds() if isinstance(v, timedelta) else v for v in value]
        ).replace(".0", "")
    if value == "":
        return "empty"
    return str(value)


def test_every_group_has_its_own_prefix() -> None:
    prefixes = [g.model_config.get("env_prefix", "") for g in settings_groups().values()]
    assert all(p.startswith("FLEETWIRE_") for p in prefixes)
    assert len(set(prefixes)) == len(prefixes)


def test_every_setting_is_documented() -> None:
    missing = sorted(set(every_setting()) - set(documented_rows()))
    assert not missing, (
        f"docs/configuration.md lacks a row for {', '.join(missing)}; add one per setting "
        "(variable, type, default, description)"
    )


def test_every_documented_setting_exists() -> None:
    stale = sorted(set(documented_rows()) - set(every_setting()))
    assert not stale, f"docs/configuration.md documents settings that do not exist: {stale}"


@pytest.mark.parametrize("variable", sorted(every_setting()))
def test_documented_default_and_description_match(variable: str) -> None:
    field = every_setting()[variable]
    rows = documented_rows()
    if variable not in rows:
        pytest.fail(f"docs/configuration.md lacks a row for {variable}")
    _, _, default, description = rows[variable]
    assert field.description, f"{variable} has no Field description"
    assert field.description in description, (
        f"docs/configuration.md: description of {variable} should contain {field.description!r}"
    )
    expected, written = default_text(field), default.strip("`")
    assert written == expected or written.startswith(f"{expected} "), (
        f"docs/configuration.md: default of {variable} should read {expected!r}"
    )


# --- Parsing. -----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No FLEETWIRE_* variable from outside, and a working directory without .env."""
    for variable in every_setting():
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_duration_in_seconds(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLEETWIRE_SCHEDULER_LEASE", "3")
    assert SchedulerSettings().lease == timedelta(seconds=3)
    assert Settings().scheduler.lease == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.5", timedelta(milliseconds=500)),
        ("PT3S", timedelta(seconds=3)),
        ("PT1M30S", timedelta(seconds=90)),
        ("P1DT2H", timedelta(days=1, hours=2)),
    ],
)
def test_duration_formats(clean_env: pytest.MonkeyPatch, raw: str, expected: timedelta) -> None:
    clean_env.setenv("FLEETWIRE_SCHEDULER_LEASE", raw)
    assert SchedulerSettings().lease == expected


def test_list_is_json(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLEETWIRE_MODELS", '["a","b"]')
    assert MeshSettings().models == ["a", "b"]
    assert Settings().mesh.models == ["a", "b"]


def test_defaults_without_environment(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.mesh.models == ["tiny-llama"]
    assert settings.scheduler.lease == timedelta(seconds=10)


def test_dotenv_is_read_and_environment_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "FLEETWIRE_MODELS='[\"from-dotenv\"]'\nFLEETWIRE_SCHEDULER_LEASE=6\nUNRELATED=1\n"
    )
    clean_env.setenv("FLEETWIRE_SCHEDULER_LEASE", "7")
    settings = Settings()
    assert settings.mesh.models == ["from-dotenv"]
    assert settings.scheduler.lease == timedelta(seconds=7)


def test_models_that_would_share_a_queue_are_refused() -> None:
    with pytest.raises(ValueError, match="share the route"):
        MeshSettings(models=["eu.small", "eu_small"])
    assert MeshSettings(models=["tiny-llama", "scripted"]).models == ["tiny-llama", "scripted"]


def test_secrets_can_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DSN kept out of the environment: a file named like its variable in
    FLEETWIRE_SECRETS_DIR; the environment still wins when it sets the variable."""
    (tmp_path / "FLEETWIRE_POSTGRES_DSN").write_text("postgresql://u:from-a-file@db/x\n")
    monkeypatch.setenv("FLEETWIRE_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("FLEETWIRE_POSTGRES_DSN", raising=False)
    assert PostgresSettings().dsn.get_secret_value() == "postgresql://u:from-a-file@db/x"
    monkeypatch.setenv("FLEETWIRE_POSTGRES_DSN", "postgresql://u:from-env@db/x")
    assert PostgresSettings().dsn.get_secret_value() == "postgresql://u:from-env@db/x"
