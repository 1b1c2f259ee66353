"""Throughput and failure rate over time, as the geometry of a small SVG chart the
templates draw (no JavaScript, no chart library): one stacked bar per minute — succeeded,
failed (FAILED, EXPIRED, DEAD_LETTERED), cancelled — and a line of the failure rate. Pure
logic over ``JobThroughput``'s minutes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fleetwire.v1 import mesh_admin_service_pb2

WIDTH = 1200
HEIGHT = 180
AXIS = 22  # room under the bars for the time labels
LEFT = 56  # room left of the bars for the scale


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    # (y, height) of each segment, bottom up: succeeded, failed, cancelled.
    succeeded: tuple[float, float]
    failed: tuple[float, float]
    cancelled: tuple[float, float]
    label: str  # "HH:MM: n succeeded, n failed, n cancelled" (the bar's tooltip)


@dataclass(frozen=True, slots=True)
class ThroughputChart:
    width: int
    height: int
    plot_height: int
    left: int
    bars: list[Bar]
    failure_line: str  # SVG polyline points of the failure rate (0 at the bottom, 1 at the top)
    peak: int  # jobs in the busiest minute (the top of the scale)
    ticks: list[tuple[float, str]]  # (x, "HH:MM") under the bars
    finished: int
    failed: int
    per_minute: float
    failure_rate: float  # failed / finished over the window; 0 when nothing finished
    minutes: int


def failed_in(minute: mesh_admin_service_pb2.ThroughputMinute) -> int:
    """Jobs that ended without a result: FAILED, EXPIRED and DEAD_LETTERED."""
    return int(minute.failed + minute.expired + minute.dead_lettered)


def throughput_chart(
    minutes: Sequence[mesh_admin_service_pb2.ThroughputMinute],
) -> ThroughputChart:
    plot = HEIGHT - AXIS
    totals = [int(m.succeeded) + failed_in(m) + int(m.cancelled) for m in minutes]
    peak = max([*totals, 1])
    slot = (WIDTH - LEFT) / max(len(minutes), 1)
    bars: list[Bar] = []
    points: list[str] = []
    ticks: list[tuple[float, str]] = []
    every = max(1, len(minutes) // 6)
    for i, (minute, total) in enumerate(zip(minutes, totals, strict=True)):
        x = LEFT + i * slot
        bottom = float(plot)
        segments = []
        for count in (int(minute.succeeded), failed_in(minute), int(minute.cancelled)):
            h = plot * count / peak
            segments.append((bottom - h, h))
            bottom -= h
        at: datetime = minute.start.ToDatetime()
        clock = at.strftime("%H:%M")
        bars.append(
            Bar(
                x=x + slot * 0.1,
                width=slot * 0.8,
                succeeded=segments[0],
                failed=segments[1],
                cancelled=segments[2],
                label=f"{clock} UTC: {minute.succeeded} succeeded, {failed_in(minute)} failed, "
                f"{minute.cancelled} cancelled",
            )
        )
        rate = failed_in(minute) / total if total else 0.0
        points.append(f"{x + slot / 2:.1f},{plot - rate * plot:.1f}")
        if i % every == 0:
            ticks.append((x + slot / 2, clock))
    finished = sum(totals)
    failed = sum(failed_in(m) for m in minutes)
    return ThroughputChart(
        width=WIDTH,
        height=HEIGHT,
        plot_height=plot,
        left=LEFT,
        bars=bars,
        failure_line=" ".join(points),
        peak=peak,
        ticks=ticks,
        finished=finished,
        failed=failed,
        per_minute=finished / len(minutes) if minutes else 0.0,
        failure_rate=failed / finished if finished else 0.0,
        minutes=len(minutes),
    )
