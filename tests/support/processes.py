"""Process trees from /proc, for tests that kill a parent and look for what it left."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.engine_priority import descendants as process_descendants


@dataclass(frozen=True)
class ProcessRecord:
    """One process as it was seen: its pid and start time (together they name it even if
    the pid is reused later), its name (``comm``) and command line."""

    pid: int
    start_ticks: int
    name: str
    cmdline: str

    @property
    def title(self) -> str:
        """The first word of the command line: the title a process gave itself, whole
        (``name`` is cut at 15 characters), e.g. ``VLLM::EngineCore``."""
        return self.cmdline.split(" ", 1)[0]

    def __str__(self) -> str:
        return f"{self.pid} {self.name} ({self.cmdline[:100]})"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The name, in parentheses, may hold spaces: split after its closing parenthesis.
    return stat[stat.rindex(")") + 2 :].split()


def process_record(pid: int) -> ProcessRecord | None:
    """The process ``pid`` now, or None when there is none (or only its zombie)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    return ProcessRecord(pid, int(fields[19]), name, cmdline.strip())


def descendants(pid: int) -> list[ProcessRecord]:
    """Every live process below ``pid`` (children of all its threads, their children...),
    found as the node finds its engine's (``node.engine_priority.descendants``)."""
    records = (process_record(child) for child in process_descendants(pid))
    return [record for record in records if record is not None]


def still_running(records: list[ProcessRecord]) -> list[ProcessRecord]:
    """Those of ``records`` still alive (a zombie is dead: its memory is freed)."""
    alive = []
    for record in records:
        now = process_record(record.pid)
        if now is not None and now.start_ticks == record.start_ticks:
            alive.append(record)
    return alive
