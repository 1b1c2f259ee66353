"""What every settings group is made of: the environment prefix, the sources (environment,
``.env``, secret files) and the duration type (seconds or ISO 8601)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)


def _seconds(value: Any) -> Any:
    """Durations may be given as plain seconds ("2.5") as well as ISO 8601 ("PT2.5S")."""
    if isinstance(value, str):
        try:
            return timedelta(seconds=float(value))
        except ValueError:
            return value
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]


def _group(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


SECRETS_DIR_ENV = "FLEETWIRE_SECRETS_DIR"


class _Group(BaseSettings):
    """A settings group: its variables from the environment, then ``.env``, then — for
    secrets kept out of the environment — files named like the variables in the directory
    ``FLEETWIRE_SECRETS_DIR`` (e.g. ``$FLEETWIRE_SECRETS_DIR/FLEETWIRE_POSTGRES_DSN``, as
    Docker and Kubernetes mount secrets)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        directory = os.environ.get(SECRETS_DIR_ENV)
        files = (SecretsSettingsSource(settings_cls, secrets_dir=directory),) if directory else ()
        return (init_settings, env_settings, dotenv_settings, *files)
