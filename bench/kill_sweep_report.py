"""What a kill-sweep run found, as a row of the results table and its details
(``bench/kill_sweep.py``)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg


@dataclass
class Row:
    component: str
    run: int
    namespace: str
    accepted: int = 0
    succeeded: int = 0
    stuck: int = 0
    doubled: int = 0
    double_billed: int = 0
    ledger_sum: int = 0
    billed: int = 0
    other_states: dict[str, int] = field(default_factory=dict)
    untold_rows: int = 0
    untold_states: dict[str, int] = field(default_factory=dict)
    submit_wall_s: float = 0.0
    max_request_s: float = 0.0
    max_request_id: str = ""
    max_request_tries: list[str] = field(default_factory=list)
    timed_out_tries: dict[str, list[str]] = field(default_factory=dict)
    median_request_s: float = 0.0
    retried_requests: int = 0
    refused_calls: dict[str, int] = field(default_factory=dict)
    failed_requests: dict[str, str] = field(default_factory=dict)
    accepted_at_kill: int = 0
    killed_at_s: float = 0.0
    back_at_s: float = 0.0
    all_terminal_s: float | None = None
    stuck_jobs: list[dict[str, Any]] = field(default_factory=list)
    doubled_jobs: list[dict[str, Any]] = field(default_factory=list)
    logs_kept_in: str | None = None


def plain(record: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, datetime):
            out[key] = value.astimezone(UTC).isoformat(timespec="milliseconds")
        elif isinstance(value, uuid.UUID):
            out[key] = str(value)
        else:
            out[key] = value
    return out


def table(rows: list[Row]) -> str:
    head = (
        "| killed | run | accepted | SUCCEEDED | stuck | doubled / double-billed | ledger sum "
        "| submit wall | max request | all terminal after |\n"
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        terminal = "not within the wait" if r.all_terminal_s is None else f"{r.all_terminal_s} s"
        lines.append(
            f"| {r.component} | {r.run} | {r.accepted} | {r.succeeded} | {r.stuck} "
            f"| {r.doubled} / {r.double_billed} | {r.ledger_sum} | {r.submit_wall_s:.1f} s "
            f"| {r.max_request_s:.2f} s | {terminal} |"
        )
    return "\n".join(lines)


STUCK_FIELDS = (
    "job_id",
    "state",
    "told",
    "client_request_id",
    "batch_id",
    "trace_id",
    "created_at",
    "attempts",
    "publish_claim",
    "publish_due_at",
)


def tries_text(tries: list[str]) -> str:
    """A request's tries: all of them when few, else the first two and the last."""
    if len(tries) <= 4:
        return "; ".join(tries)
    return "; ".join([*tries[:2], f"... {len(tries) - 3} more tries ...", tries[-1]])


def details(r: Row) -> str:
    parts = [
        f"{r.component} run {r.run} ({r.namespace}): killed at {r.accepted_at_kill} accepted "
        f"({r.killed_at_s:.1f} s), back at {r.back_at_s:.1f} s; billed {r.billed}; "
        f"{r.retried_requests} requests retried, refused calls {r.refused_calls}; "
        f"median request {r.median_request_s:.3f} s, "
        f"longest {r.max_request_id}: {tries_text(r.max_request_tries)}"
    ]
    timed_out = list(r.timed_out_tries.items())
    if timed_out:
        parts.append(f"  {len(timed_out)} requests had a try run past its deadline; the first:")
    for rid, tries in timed_out[:3]:
        parts.append(f"    {rid}: {tries_text(tries)}")
    if r.other_states:
        parts.append(f"  told jobs not SUCCEEDED: {r.other_states}")
    if r.untold_rows:
        parts.append(f"  rows no client was told about: {r.untold_states}")
    if r.failed_requests:
        parts.append(f"  requests failed (not retryable): {r.failed_requests}")
    for job in r.stuck_jobs[:5]:
        brief = {k: job.get(k) for k in STUCK_FIELDS if k in job}
        parts.append(f"  STUCK {json.dumps(brief, default=str)}")
    if len(r.stuck_jobs) > 5:
        parts.append(f"  ... {len(r.stuck_jobs) - 5} more stuck (all of them in --out)")
    for job in r.doubled_jobs:
        parts.append(f"  DOUBLED {json.dumps(job, default=str)}")
    if r.logs_kept_in:
        parts.append(f"  logs kept in {r.logs_kept_in}")
    return "\n".join(parts)
