"""Tracing settings (``FLEETWIRE_TRACING_*``) of every process; part of ``settings.Settings``.

The OTLP endpoint may also come from OpenTelemetry's own standard variables
(``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, then ``OTEL_EXPORTER_OTLP_ENDPOINT``), read here
like every other setting; the exporter itself reads the rest of its standard variables
(headers, certificate, timeout, compression), as OpenTelemetry documents them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from fleetwire.process.settings_base import _Group, _group

OTLP_ENDPOINT_VARIABLES = (
    "FLEETWIRE_TRACING_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class TracingSettings(_Group):
    """Tracing (OpenTelemetry): spans are always made, so every job has a W3C trace id;
    they leave the process only through the exporters configured here (none by default)."""

    model_config = _group("FLEETWIRE_TRACING_") | SettingsConfigDict(populate_by_name=True)

    otlp_endpoint: str = Field(
        "",
        validation_alias=AliasChoices(*OTLP_ENDPOINT_VARIABLES),
        description="OTLP/gRPC collector the spans are exported to, batched (e.g. "
        "http://127.0.0.1:4317; https:// for TLS). Empty: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
        "else OTEL_EXPORTER_OTLP_ENDPOINT, when set; else no OTLP export.",
    )
    file: Path | None = Field(
        None,
        description="Append each finished span to this file as one JSON line, as it ends "
        "(tests, debugging; several processes may share one file). Unset: no file.",
    )
