"""Where the mesh's time goes under the throughput load: the scheduler and the bridge run
under pyinstrument (a sampling profiler, in-process), one bench node, ``--clients``
closed-loop SYNC clients for ``--duration`` seconds; then both are stopped (SIGTERM) and
write their profiles. Prints, per process, the share of wall time spent in each hot
function (cumulative) and the top libraries by own time.

    python -m bench.profile_mesh [--clients 50] [--duration 10] [--out-dir bench/results]
    python -m bench.profile_mesh --tokens     # 8 streams x 256 tokens on a real vLLM node
    python -m bench.profile_mesh --cpu        # CPU time by library (yappi), not wall samples

pyinstrument is used because py-spy cannot attach to the processes on the build machines
(it fails with "Failed to find python version from target process").
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from bench import mesh_load
from bench.processes import Mesh, cleanup_namespace, wait_for_nodes, wait_for_port

INTERESTING = (
    "fleetwire/",
    "scheduler/",
    "broker_bridge/",
    "node/",
    "asyncpg/",
    "redis/",
    "aiormq/",
    "grpc/",
    "structlog/",
    "nacl/",
    "google/protobuf/",
)


def _wrapped(module: str, out: Path, *, cpu: bool = False) -> list[str]:
    if cpu:
        return [sys.executable, "-m", "bench.cpu_profile", module, str(out)]
    return [
        sys.executable,
        "-m",
        "pyinstrument",
        "--interval",
        "0.001",
        "-r",
        "pstats",
        "-o",
        str(out),
        "-m",
        module,
    ]


def summary(path: Path, top: int = 30) -> list[tuple[float, float, str]]:
    """(cumulative share, own share, function) of the hottest project/library functions,
    shares of the busiest entry point's cumulative time."""
    stats = pstats.Stats(str(path))
    table = stats.stats  # type: ignore[attr-defined]
    total = max(entry[3] for entry in table.values()) or 1.0
    rows = []
    for (file, line, func), (_, _, own, cumulative, _) in table.items():
        if any(part in file for part in INTERESTING):
            short = file.split("site-packages/")[-1].removeprefix(f"{Path.cwd()}/")
            rows.append((cumulative / total, own / total, f"{func} ({short}:{line})"))
    rows.sort(reverse=True)
    return rows[:top]


async def profile(
    clients: int, duration: float, out_dir: Path, *, tokens: bool, cpu: bool = False
) -> None:
    namespace = "p" + secrets.token_hex(4)
    work = Path(tempfile.mkdtemp(prefix=f"fleetwire-profile-{namespace}-"))
    mesh = Mesh(namespace, work)
    kind = "tokens" if tokens else "throughput"
    suffix = "-cpu.txt" if cpu else ".pstats"
    outputs = {name: out_dir / f"profile-{kind}-{name}{suffix}" for name in ("scheduler", "bridge")}
    try:
        mesh.spawn("scheduler", _wrapped("scheduler", outputs["scheduler"], cpu=cpu))
        mesh.spawn("bridge", _wrapped("broker_bridge", outputs["bridge"], cpu=cpu))
        await wait_for_port(mesh.scheduler_address)
        await wait_for_port(mesh.bridge_address)
        if tokens:
            mesh.start_module(
                "node-llm",
                "node",
                {
                    "FLEETWIRE_NODE_NODE_ID": "node-llm",
                    "FLEETWIRE_NODE_KEY_FILE": str(work / "node-llm.key"),
                },
            )
            await wait_for_nodes(mesh, {"node-llm"}, within=180)
            streamed = await mesh_load.token_streams(
                mesh.bridge_address, streams=8, tokens=256, runs=3
            )
            print(f"under the profiler: {streamed}")
        else:
            mesh.start_bench_node("node-1", slots=16)
            await wait_for_nodes(mesh, {"node-1"})
            result = await mesh_load.closed_loop(
                mesh.bridge_address, clients=clients, duration=duration
            )
            print(f"under the profiler: {result.summary()}")
    finally:
        mesh.stop_all()
        await cleanup_namespace(namespace)
        shutil.rmtree(work, ignore_errors=True)
    for name, path in outputs.items():
        if not path.exists():
            print(f"{name}: no profile written")
            continue
        if cpu:
            print(f"\n== {name} (yappi, CPU clock)\n{path.read_text()}")
            continue
        print(f"\n== {name} (share of the process's sampled wall time)")
        print("   cumul    own  function")
        for cumulative, own, func in summary(path):
            print(f"  {cumulative:6.1%} {own:6.1%}  {func}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--tokens", action="store_true", help="profile 8 real-model streams instead (vLLM node)"
    )
    parser.add_argument(
        "--cpu", action="store_true", help="yappi's CPU clock instead of pyinstrument's samples"
    )
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        profile(args.clients, args.duration, args.out_dir, tokens=args.tokens, cpu=args.cpu)
    )


if __name__ == "__main__":
    main()
