"""Runs a module under yappi's CPU clock and, when it exits, writes where its CPU went.

    python -m bench.cpu_profile MODULE OUT.txt

Used by ``python -m bench.profile_mesh --cpu``. A sampling wall-clock profiler
(pyinstrument) charges a process for the time it waits for a core, which on a loaded
2-core machine is much of it; the CPU clock counts only the time the process runs. The
report has the own (exclusive) CPU time by library — asyncio, the standard library, each
installed package, the project's packages, built-in calls — and the hottest functions.
"""

from __future__ import annotations

import re
import runpy
import sys
from collections import Counter
from pathlib import Path


def short_path(module_path: str) -> str:
    """A module's path without this machine's prefixes: the part after ``site-packages/``,
    the project-relative path, or the standard library's path below ``lib/python3.x/``."""
    for marker in ("site-packages/", f"{Path.cwd().as_posix()}/"):
        if marker in module_path:
            return module_path.split(marker, 1)[1]
    if match := re.search(r"lib/python3\.\d+/(.+)$", module_path):
        return match.group(1)
    return module_path


def library_of(module_path: str) -> str:
    if match := re.search(r"site-packages/([^/]+)", module_path):
        return match.group(1)
    if "/asyncio/" in module_path:
        return "asyncio"
    project = Path.cwd().as_posix() + "/"
    if module_path.startswith(project):
        return module_path.removeprefix(project).split("/")[0]
    if module_path.startswith("<frozen"):
        return "imports"
    if "/" not in module_path:  # builtins, marshal, _sodium, ...: C functions
        return "built-in (C) calls"
    return "standard library"


def report(out: Path) -> None:
    import yappi

    stats = yappi.get_func_stats()
    by_library: Counter[str] = Counter()
    functions: list[tuple[float, str]] = []
    for entry in stats:
        by_library[library_of(entry.module)] += entry.tsub
        functions.append((entry.tsub, f"{entry.name} ({short_path(entry.module)}:{entry.lineno})"))
    total = sum(by_library.values()) or 1.0
    lines = [f"own CPU time by library (total {total:.2f} s, imports included)"]
    lines += [f"  {share / total:6.1%}  {name}" for name, share in by_library.most_common(20)]
    lines.append("hottest functions (own CPU time)")
    functions.sort(reverse=True)
    lines += [f"  {own / total:6.1%}  {name}" for own, name in functions[:30]]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    import yappi

    module, out = sys.argv[1], Path(sys.argv[2])
    sys.argv = [module]
    yappi.set_clock_type("cpu")
    yappi.start(builtins=True)
    try:
        runpy.run_module(module, run_name="__main__")
    finally:
        yappi.stop()
        report(out)


if __name__ == "__main__":
    main()
