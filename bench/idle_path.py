"""The idle path hop by hop: where the time of one SYNC Submit goes on an idle mesh.

A mesh of its own (bridge, scheduler, one bench node; namespace, database and queues of the
run, removed at the end) with every process writing its spans to a file
(``FLEETWIRE_TRACING_FILE``). After a warm-up, ``--jobs`` SYNC Submits run one after another;
then each job's trace is read back: its spans' start and end relative to the bridge's server
span of the Submit, by span name, median over the jobs. The gaps between spans are what no
span covers (gRPC framing, AMQP delivery, event-loop wake-ups, the other processes' turns).

    .venv/bin/python -m bench.idle_path              # 200 jobs, prints the table
    .venv/bin/python -m bench.idle_path --jobs 500 --out idle-path.json

It prints; it asserts nothing. On a loaded machine every figure grows; the shares are what
to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.mesh_load import sequential
from bench.processes import Mesh, cleanup_namespace, wait_for_nodes, wait_for_port

PROCESSES = ("scheduler", "bridge")


def read_spans(files: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Every span of ``files`` by trace id."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if line.strip():
                span = json.loads(line)
                traces[span["trace_id"]].append(span)
    return traces


def hop_table(traces: dict[str, list[dict[str, Any]]], *, since: int) -> list[dict[str, Any]]:
    """Per span name (``service/name``): median start and duration in ms, relative to the
    trace's first span (the bridge's Submit server span), over the traces that began after
    ``since`` (Unix ns) and have it."""
    starts: dict[str, list[float]] = defaultdict(list)
    lengths: dict[str, list[float]] = defaultdict(list)
    for spans in traces.values():
        root = min(spans, key=lambda s: s["start_unix_nano"])
        if "Submit" not in root["name"] or root["start_unix_nano"] < since:
            continue  # not a Submit's trace (admin calls, validation jobs)
        origin = root["start_unix_nano"]
        seen: set[str] = set()
        for span in spans:
            key = f"{span['service']}/{span['name']}"
            if key in seen:
                continue  # the first of a repeated span (e.g. one per chunk)
            seen.add(key)
            starts[key].append((span["start_unix_nano"] - origin) / 1e6)
            lengths[key].append((span["end_unix_nano"] - span["start_unix_nano"]) / 1e6)
    rows = [
        {
            "span": key,
            "jobs": len(starts[key]),
            "start_ms": round(statistics.median(starts[key]), 3),
            "duration_ms": round(statistics.median(lengths[key]), 3),
        }
        for key in starts
    ]
    return sorted(rows, key=lambda row: row["start_ms"])


async def measure(jobs: int, work: Path) -> dict[str, Any]:
    namespace = "i" + secrets.token_hex(4)
    mesh = Mesh(namespace, work)
    files = {name: work / f"{name}.spans.jsonl" for name in (*PROCESSES, "node-1")}
    try:
        for name in PROCESSES:
            mesh.start_module(
                name,
                name if name != "bridge" else "broker_bridge",
                {"FLEETWIRE_TRACING_FILE": str(files[name])},
            )
        await wait_for_port(mesh.scheduler_address)
        await wait_for_port(mesh.bridge_address)
        mesh.env["FLEETWIRE_TRACING_FILE"] = str(files["node-1"])
        mesh.start_bench_node("node-1", slots=16)
        del mesh.env["FLEETWIRE_TRACING_FILE"]
        await wait_for_nodes(mesh, {"node-1"})
        await sequential(mesh.bridge_address, count=0, warmup=20)
        measured_from = time.time_ns()  # the warm-up's traces do not count
        result = await sequential(mesh.bridge_address, count=jobs, warmup=0)
        await asyncio.sleep(1.0)  # the last spans are written as they end
    finally:
        mesh.stop_all()
        await cleanup_namespace(namespace)
    latencies = sorted(result.latencies_ms)
    return {
        "jobs": result.completed,
        "errors": result.errors,
        "p50_ms": round(statistics.median(latencies), 3) if latencies else None,
        "hops": hop_table(read_spans(list(files.values())), since=measured_from),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleetwire-idle-path-"))
    report = asyncio.run(measure(args.jobs, work))
    print(f"{report['jobs']} SYNC jobs, {report['errors']} errors, p50 {report['p50_ms']} ms")
    print(f"{'span':<48} {'jobs':>5} {'start ms':>9} {'ms':>8}")
    for row in report["hops"]:
        print(
            f"{row['span']:<48} {row['jobs']:>5} {row['start_ms']:>9.3f} {row['duration_ms']:>8.3f}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
