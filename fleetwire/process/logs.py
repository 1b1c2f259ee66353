"""Structured logging for every process: console text, or JSON lines with ``log_json``.

Every line written inside a trace carries its ids (``trace_id``, ``span_id``: W3C hex, the
current OpenTelemetry span's), so a job's lines on every process share its trace id.
"""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace


def configure_logging(*, level: str = "INFO", json: bool = False, process: str = "") -> None:
    """Routes structlog and stdlib logging to stderr, tagging every line with ``process``."""
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if process:
        processors.insert(0, _tag(process))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format=f"{process} %(name)s %(message)s")
    for noisy in ("aiormq", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_trace_ids(
    _logger: object, _name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Adds the current span's ``trace_id`` and ``span_id`` (W3C hex) unless the line names
    a trace id of its own; a line outside any trace is left as it is."""
    if "trace_id" not in event:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            event["trace_id"] = trace.format_trace_id(ctx.trace_id)
            event["span_id"] = trace.format_span_id(ctx.span_id)
    return event


def _tag(process: str) -> structlog.types.Processor:
    def add_process(
        _logger: object, _name: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event.setdefault("process", process)
        return event

    return add_process
