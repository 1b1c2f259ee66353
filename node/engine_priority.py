"""Lowers the CPU priority of the inference engine's processes below the node agent's.

vLLM's engine runs in child processes that busy-wait between steps (its worker keeps
polling for a second after each message; its engine core loops while it has requests). On
a machine where the mesh shares the cores with the engine — a CPU node, a small box running
the whole mesh — the agent's heartbeats and results, and any scheduler or database beside
it, then wait for CPU behind spinning processes: token runs stalled for seconds that way
(docs/benchmarks.md). A higher nice value on the engine's processes lets the control plane
run first whenever it has work; the engine still gets every cycle nobody else wants.

Linux keeps a nice value per thread and new threads inherit it from their creator, so every
thread of every descendant process is set once the engine has started.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children, ...), from /proc."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            found.extend(descendants(child))
    return found


def lower_engine_priority(nice: int, *, below: int | None = None) -> int:
    """Sets ``nice`` on every thread of every process below ``below`` (this process by
    default); returns how many threads were set. Best effort: a thread that exits meanwhile
    is skipped, and where /proc is missing (not Linux) nothing happens."""
    if nice <= 0:
        return 0
    count = 0
    for pid in descendants(os.getpid() if below is None else below):
        try:
            threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for tid in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                count += 1
            except OSError:
                continue
    log.info("engine priority lowered", nice=nice, threads=count)
    return count
