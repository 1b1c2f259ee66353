"""What TLS costs the mesh: the same load on a plaintext mesh and on a TLS mesh (a CA of
its own, as `make demo` and the e2e tests run), one after the other in one run, with the
ratios printed. Asserts nothing (docs/benchmarks.md, "TLS", has the figures).

    python -m bench.tls_cost [--clients 20] [--duration 8] [--rounds 2]

Each mesh is its own (namespace, database, queues, free ports; removed at the end): a
scheduler, a bridge and one bench node (``bench.bench_node``, 16 slots) as processes. Per
mesh: idle latency (200 single SYNC jobs, one at a time) and closed-loop throughput
(``--clients`` SYNC submitters for ``--duration`` s). With ``--rounds`` > 1 the two meshes
alternate (plaintext, TLS, plaintext, TLS, …) so a change in the machine's load hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import mesh_load
from bench.processes import Mesh, cleanup_namespace, isolated_env, wait_for_nodes, wait_for_port
from fleetwire_tools.certs import ensure_dev_certificates

SLOTS = 16
LATENCY_JOBS = 200


def tls_env(directory: Path) -> dict[str, str]:
    made = ensure_dev_certificates(directory)
    return {
        "FLEETWIRE_TLS_CERT_FILE": str(made.server.cert),
        "FLEETWIRE_TLS_KEY_FILE": str(made.server.key),
        "FLEETWIRE_TLS_INSECURE": "false",
        "FLEETWIRE_NODE_CA_FILE": str(made.ca),
        "FLEETWIRE_NODE_INSECURE": "false",
        "FLEETWIRE_CA_FILE": str(made.ca),
        "FLEETWIRE_INSECURE": "false",
    }


async def one_mesh(tls: bool, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    namespace = "b" + secrets.token_hex(4)
    env = isolated_env(namespace) | (tls_env(work / f"{namespace}-certs") if tls else {})
    mesh = Mesh(namespace, work / namespace, env)
    try:
        mesh.start_module("scheduler", "scheduler")
        mesh.start_module("bridge", "broker_bridge")
        await wait_for_port(mesh.scheduler_address, ca_file=mesh.ca_file)
        await wait_for_port(mesh.bridge_address, ca_file=mesh.ca_file)
        mesh.start_bench_node("node-1", slots=SLOTS)
        await wait_for_nodes(mesh, {"node-1"})
        latency = await mesh_load.sequential(
            mesh.bridge_address, count=LATENCY_JOBS, ca_file=mesh.ca_file
        )
        load = await mesh_load.closed_loop(
            mesh.bridge_address,
            clients=args.clients,
            duration=args.duration,
            ca_file=mesh.ca_file,
        )
        return {"latency": latency.summary(), "throughput": load.summary()}
    finally:
        mesh.stop_all()
        await cleanup_namespace(namespace)


def _median(rows: list[dict[str, Any]], part: str, key: str) -> float:
    return float(statistics.median(float(r[part][key]) for r in rows))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"plaintext": [], "tls": []}
    with tempfile.TemporaryDirectory(prefix="fw-tls-cost-") as tmp:
        for _ in range(args.rounds):
            for name, tls in (("plaintext", False), ("tls", True)):
                print(f"{name} mesh …", flush=True)
                runs[name].append(await one_mesh(tls, args, Path(tmp)))
    summary: dict[str, Any] = {"runs": runs}
    for name, rows in runs.items():
        summary[name] = {
            "jobs_per_s": _median(rows, "throughput", "jobs_per_s"),
            "p50_ms": _median(rows, "latency", "p50_ms"),
            "p99_ms": _median(rows, "latency", "p99_ms"),
        }
    plain, tls = summary["plaintext"], summary["tls"]
    summary["ratios"] = {
        "throughput tls / plaintext": round(tls["jobs_per_s"] / plain["jobs_per_s"], 3),
        "idle p50 tls / plaintext": round(tls["p50_ms"] / plain["p50_ms"], 3),
        "idle p99 tls / plaintext": round(tls["p99_ms"] / plain["p99_ms"], 3),
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    summary = asyncio.run(main_async(args))
    print("| mesh | jobs/s | idle p50 ms | idle p99 ms |\n|---|---:|---:|---:|")
    for name in ("plaintext", "tls"):
        row = summary[name]
        print(f"| {name} | {row['jobs_per_s']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")
    for label, ratio in summary["ratios"].items():
        print(f"{label}: {ratio}")
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
