"""How the templates write protobuf values: enum names, times, credits, hex. Jinja filters,
registered by ``console.web``. Pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fleetwire.v1 import job_pb2, mesh_admin_service_pb2

MICRO = 1_000_000


def state_name(value: int) -> str:
    """``SUCCEEDED`` for JOB_STATE_SUCCEEDED."""
    return str(job_pb2.JobState.Name(value)).removeprefix("JOB_STATE_")


def priority_name(value: int) -> str:
    return str(job_pb2.PriorityClass.Name(value)).removeprefix("PRIORITY_CLASS_").lower()


def network_name(value: int) -> str:
    return str(job_pb2.Network.Name(value)).removeprefix("NETWORK_").lower()


def role_name(value: int) -> str:
    return (
        str(mesh_admin_service_pb2.OperatorRole.Name(value)).removeprefix("OPERATOR_ROLE_").lower()
    )


def stream_check_name(value: int) -> str:
    return str(job_pb2.StreamCheck.Name(value)).removeprefix("STREAM_CHECK_").lower()


def is_set(stamp: Any) -> bool:
    return bool(stamp.seconds or stamp.nanos)


def stamp(value: Any, empty: str = "—") -> str:
    """A protobuf Timestamp as ``2026-01-02 03:04:05`` (UTC); ``empty`` when unset."""
    if not is_set(value):
        return empty
    return str(value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S"))


def iso(value: Any) -> str:
    """A protobuf Timestamp in ISO 8601 (for ``<time datetime>``); "" when unset."""
    return str(value.ToDatetime(tzinfo=UTC).isoformat()) if is_set(value) else ""


def millis_between(start: Any, end: Any) -> str:
    """The time from one Timestamp to another, ``1.234 s`` or ``56 ms``; "—" if either is unset."""
    if not (is_set(start) and is_set(end)):
        return "—"
    ms = (end.ToMicroseconds() - start.ToMicroseconds()) / 1000
    return f"{ms / 1000:.3f} s" if ms >= 1000 else f"{ms:.0f} ms"


def unix_ms(value: int) -> str:
    if not value:
        return "—"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def credits(micro: int) -> str:
    """Micro-credits as credits with six decimals and a sign, ``-0.001200``."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(int(micro)), MICRO)
    return f"{sign}{whole:,}.{frac:06d}"


def hex_of(value: bytes, group: int = 0) -> str:
    text = bytes(value).hex()
    if not group:
        return text
    return " ".join(text[i : i + group] for i in range(0, len(text), group))


def percent(share: float) -> str:
    return f"{share * 100:.1f} %"


FILTERS = {
    "state_name": state_name,
    "priority_name": priority_name,
    "network_name": network_name,
    "role_name": role_name,
    "stream_check_name": stream_check_name,
    "stamp": stamp,
    "iso": iso,
    "millis_between": millis_between,
    "unix_ms": unix_ms,
    "credits": credits,
    "hex": hex_of,
    "percent": percent,
}
