"""``make bench``: the mesh against raw RabbitMQ, Celery and direct vLLM, measured in one
run on one machine. Prints a table and writes ``bench/results/latest.json``.

    python -m bench.run [--duration 8] [--clients 50] [--idle-nodes 1000] [--skip-tokens]
                        [--only PHASE ...] [--out bench/results/latest.json]

Each run has its own namespace (queues, exchanges, Redis keys) and database, and removes
them at the end; child processes are always stopped. Logs of the processes go to a
temporary directory, printed at the start (kept when the run fails).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench import (
    celery_app,
    celery_load,
    dramatiq_load,
    mesh_load,
    report,
    service_counters,
    stream_load,
)
from bench.idle_nodes import IdleFleet
from bench.mesh_load import LoadResult, bench_spec, job_body
from bench.processes import (
    MODEL_DIR,
    Mesh,
    cleanup_namespace,
    cpu_seconds,
    free_port,
    process_tree,
    rss_bytes,
    wait_for_nodes,
    wait_for_port,
)
from bench.raw_amqp import measure_raw

SLOTS_PER_NODE = 16
LATENCY_JOBS = 300
TOKENS = 256
STREAMS = 8
TOKEN_RUNS = 5
PEER_SETTLE_S = 6.0
"""Before a peer's counters are read again: RabbitMQ's stats interval (5 s); no PostgreSQL."""
PHASES = ("raw_amqp", "mesh", "celery", "dramatiq", "memory", "tokens")


class PeerClient(Protocol):
    """The client side of a peer (``bench.celery_load``, ``bench.dramatiq_load``)."""

    def wait_ready(self) -> None: ...

    def closed_loop(self, *, clients: int, duration: float, warmup: float = 1.0) -> LoadResult: ...

    def sequential(self, *, count: int) -> LoadResult: ...


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.namespace = "b" + secrets.token_hex(4)
        self.work = Path(tempfile.mkdtemp(prefix=f"fleetwire-bench-{self.namespace}-"))
        self.mesh = Mesh(self.namespace, self.work)
        self.keep_logs = False
        self.results: dict[str, Any] = {
            "namespace": self.namespace,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_average_at_start": list(os.getloadavg()),
            },
            "settings": {
                "clients": args.clients,
                "duration_s": args.duration,
                "slots_per_node": SLOTS_PER_NODE,
                "celery_worker_concurrency": celery_load.WORKER_CONCURRENCY,
                "celery_profiles": celery_app.PROFILES,
                "dramatiq_worker": {
                    "processes": dramatiq_load.WORKER_PROCESSES,
                    "threads": dramatiq_load.WORKER_THREADS,
                },
                "token_runs": TOKEN_RUNS,
            },
            "load_average": {},
        }

    def mark(self, phase: str) -> None:
        self.results["load_average"][phase] = load_average()

    async def run(self) -> dict[str, Any]:
        say(f"namespace {self.namespace}; process logs in {self.work}")
        phases: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "raw_amqp": self.raw,
            "mesh": self.mesh_phases,
            # The headline peer runs right after the mesh: closest in time, so in load.
            "celery": self.celery,
            "dramatiq": self.dramatiq,
            "memory": self.memory,
            "tokens": self.tokens,
        }
        chosen = self.args.only or [p for p in phases if p != "tokens" or not self.args.skip_tokens]
        try:
            for name, work in phases.items():
                if name in chosen:
                    await self.phase(name, work())
        finally:
            self.mesh.stop_all()
            await cleanup_namespace(self.namespace)
        self.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["ratios"] = report.ratios(self.results)
        self.results["targets"] = report.targets(self.results)
        if not self.keep_logs:
            shutil.rmtree(self.work, ignore_errors=True)
        return self.results

    async def phase(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        """Runs one phase; a failure is recorded (and printed) and the next phase runs."""
        try:
            await work
        except Exception as err:
            say(f"{name} FAILED: {type(err).__name__}: {err}")
            self.results.setdefault("failures", {})[name] = f"{type(err).__name__}: {err}"
            self.keep_logs = True

    async def raw(self) -> None:
        say("raw AMQP: publish with confirms, consume with manual ack")
        raw = await measure_raw(self.namespace, job_body(bench_spec()))
        self.results["raw_amqp"] = {**asdict(raw), "limit_per_s": raw.limit_per_s}
        self.mark("raw_amqp")

    async def ensure_mesh(self) -> None:
        """Starts the scheduler and the bridge unless an earlier phase did."""
        mesh = self.mesh
        for name, module in (("scheduler", "scheduler"), ("bridge", "broker_bridge")):
            if name not in mesh.children:
                mesh.start_module(name, module)
        await wait_for_port(mesh.scheduler_address)
        await wait_for_port(mesh.bridge_address)

    async def mesh_phases(self) -> None:
        mesh, args = self.mesh, self.args
        say("mesh: starting scheduler, bridge and 1 bench node")
        await self.ensure_mesh()
        mesh.start_bench_node("node-1", slots=SLOTS_PER_NODE)
        await wait_for_nodes(mesh, {"node-1"})
        bridge = mesh.bridge_address
        watched = {name: mesh.pid(name) for name in ("bridge", "scheduler", "node-1")}

        scale: dict[str, Any] = {}
        say(f"mesh: {args.clients} clients, 1 node, {args.duration} s")
        one, cpu, cost = await self.costed(
            watched,
            lambda: mesh_load.closed_loop(bridge, clients=args.clients, duration=args.duration),
            settle=service_counters.SETTLE_S,
        )
        self.results["mesh_cpu_ms_per_job"] = cpu
        self.results["mesh_service_cost"] = cost
        self.results["pg_commits_per_job"] = cost.get("pg_commits_per_job")
        scale["1 scheduler, 1 node"] = one.summary()
        self.results["mesh_throughput"] = one.summary()
        self.mark("mesh_throughput")

        await self.stream_phase(watched)

        say(f"mesh: latency, {LATENCY_JOBS} single jobs on an idle mesh")
        latency = await mesh_load.sequential(bridge, count=LATENCY_JOBS)
        self.results["mesh_latency"] = latency.summary()
        self.mark("mesh_latency")

        say("mesh: batches (SubmitBatch of 100), 1 node")
        batch = await mesh_load.batches(bridge, total=args.batch_jobs)
        self.results["mesh_batch"] = {**batch.summary(), "submit_ms": batch.latencies_ms[0]}
        self.mark("mesh_batch")

        mesh.start_bench_node("node-2", slots=SLOTS_PER_NODE)
        await wait_for_nodes(mesh, {"node-1", "node-2"})
        say(f"mesh: {args.clients} clients, 2 nodes")
        two = await mesh_load.closed_loop(bridge, clients=args.clients, duration=args.duration)
        scale["1 scheduler, 2 nodes"] = two.summary()

        for node_id in ("node-3", "node-4"):
            mesh.start_bench_node(node_id, slots=SLOTS_PER_NODE)
        await wait_for_nodes(mesh, {"node-1", "node-2", "node-3", "node-4"})
        say(f"mesh: {args.clients} clients, 4 nodes")
        four = await mesh_load.closed_loop(bridge, clients=args.clients, duration=args.duration)
        scale["1 scheduler, 4 nodes"] = four.summary()

        say("mesh: 2 schedulers (2 nodes each)")
        mesh.stop("node-3")
        mesh.stop("node-4")
        port_b = str(free_port())
        mesh.start_module(
            "scheduler-b",
            "scheduler",
            {"FLEETWIRE_SCHEDULER_PORT": port_b, "FLEETWIRE_SCHEDULER_ADMIN_PORT": "0"},
        )
        await wait_for_port(f"127.0.0.1:{port_b}")
        for node_id in ("node-5", "node-6"):
            mesh.start_bench_node(node_id, slots=SLOTS_PER_NODE, scheduler_port=port_b)
        await wait_for_nodes(mesh, {"node-1", "node-2", "node-5", "node-6"})
        twice = await mesh_load.closed_loop(bridge, clients=args.clients, duration=args.duration)
        scale["2 schedulers, 4 nodes"] = twice.summary()
        self.results["scale"] = scale
        self.mark("scale")
        # The peers run on an idle machine: no mesh process beside them (the tokens phase
        # starts the scheduler and the bridge again).
        for name in ("node-1", "node-2", "node-5", "node-6", "scheduler-b", "bridge", "scheduler"):
            mesh.stop(name)

    async def costed(
        self,
        watched: dict[str, int],
        load: Callable[[], Coroutine[Any, Any, LoadResult]],
        *,
        settle: float,
    ) -> tuple[LoadResult, dict[str, float], dict[str, Any]]:
        """Runs ``load`` and returns it with the CPU per job of each ``watched`` process
        (and of this process, the clients) and the backing services' counters per job,
        both divided by every job the load completed (warm-up included)."""
        watched = {**watched, "clients (this process)": os.getpid()}
        counters_before = await service_counters.read_counters(self.namespace)
        cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        result = await load()
        jobs = max(1, result.completed)
        cpu = {
            name: round((cpu_seconds(pid) - cpu_before[name]) * 1000 / jobs, 2)
            for name, pid in watched.items()
        }
        counters_end = await service_counters.read_counters(self.namespace)
        await asyncio.sleep(settle)
        counters_after = await service_counters.read_counters(self.namespace)
        cost = service_counters.per_job(counters_before, counters_end, counters_after, jobs)
        return result, cpu, cost

    async def stream_phase(self, watched: dict[str, int]) -> None:
        """The 50-client load through SubmitStream, once the bridge's stub has it."""
        args = self.args
        if not stream_load.submit_stream_available():
            say(f"mesh: streamed submits {stream_load.UNAVAILABLE}")
            self.results["mesh_stream"] = {"status": stream_load.UNAVAILABLE}
            return
        say(f"mesh: {args.clients} clients on SubmitStream, 1 node, {args.duration} s")
        streamed, cpu, cost = await self.costed(
            watched,
            lambda: stream_load.streamed_closed_loop(
                self.mesh.bridge_address, clients=args.clients, duration=args.duration
            ),
            settle=service_counters.SETTLE_S,
        )
        self.results["mesh_stream"] = {
            **streamed.summary(),
            "cpu_ms_per_job": cpu,
            "service_cost": cost,
        }
        self.mark("mesh_stream")

    async def memory(self) -> None:
        count = self.args.idle_nodes
        say(f"memory: a fresh scheduler with {count} simulated idle nodes")
        port = str(free_port())
        pid = self.mesh.start_module(
            "scheduler-mem",
            "scheduler",
            {"FLEETWIRE_SCHEDULER_PORT": port, "FLEETWIRE_SCHEDULER_ADMIN_PORT": "0"},
        )
        address = f"127.0.0.1:{port}"
        await wait_for_port(address)
        await asyncio.sleep(3)
        before = rss_bytes(pid)
        fleet = IdleFleet(address, count)
        started = time.perf_counter()
        try:
            await fleet.start()
            connect_s = time.perf_counter() - started
            await asyncio.sleep(10)  # a few heartbeat rounds
            after = rss_bytes(pid)
        finally:
            await fleet.stop()
            self.mesh.stop("scheduler-mem")
        self.results["memory"] = {
            "idle_nodes": count,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(after / 2**20, 1),
            "kib_per_node": round((after - before) / 1024 / count, 1),
            "connect_all_s": round(connect_s, 1),
        }
        self.mark("memory")

    async def celery(self) -> None:
        for profile in celery_app.PROFILES:
            await self.peer(
                f"celery_{profile}" if profile != "default" else "celery",
                f"celery ({profile})",
                functools.partial(celery_load.start_worker, self.mesh, profile),
                celery_load.worker_name(profile),
                celery_load.CeleryClient(self.namespace, profile),
            )

    async def dramatiq(self) -> None:
        await self.peer(
            "dramatiq",
            "dramatiq",
            lambda: dramatiq_load.start_worker(self.mesh),
            dramatiq_load.WORKER_NAME,
            dramatiq_load.DramatiqClient(self.namespace),
        )

    async def peer(
        self,
        key: str,
        label: str,
        start: Callable[[], int],
        worker: str,
        client: PeerClient,
    ) -> None:
        """One peer: its worker started, the 50-client load (CPU and counters per job),
        then the idle latency; the worker stopped after."""
        args = self.args
        say(f"{label}: starting its worker")
        pid = start()
        try:
            await asyncio.to_thread(client.wait_ready)
            say(f"{label}: {args.clients} clients, {args.duration} s")
            tree = process_tree(pid)
            load, cpu, cost = await self.costed(
                {f"worker-{i}": p for i, p in enumerate(tree)},
                lambda: asyncio.to_thread(
                    client.closed_loop, clients=args.clients, duration=args.duration
                ),
                settle=PEER_SETTLE_S,
            )
            say(f"{label}: latency, {LATENCY_JOBS} single jobs")
            latency = await asyncio.to_thread(client.sequential, count=LATENCY_JOBS)
        finally:
            self.mesh.stop(worker)
        workers = [v for n, v in cpu.items() if n.startswith("worker-")]
        self.results.setdefault("peers", {})[key] = {
            "throughput": load.summary(),
            "latency": latency.summary(),
            "cpu_ms_per_job": {
                "worker": round(sum(workers), 2),
                "worker processes": len(workers),
                "clients (this process)": cpu["clients (this process)"],
            },
            "service_cost": cost,
        }
        self.mark(key)

    async def tokens(self) -> None:
        if not (MODEL_DIR / "config.json").is_file():
            say(f"no model in {MODEL_DIR} (make model); skipping tokens/s")
            return
        say(f"tokens/s: AsyncLLM driven directly, {STREAMS} streams x {TOKENS} tokens")
        direct_out = self.work / "direct.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "bench/node_tokens.py",
            "--tokens",
            str(TOKENS),
            "--runs",
            str(TOKEN_RUNS),
            "--concurrency",
            str(STREAMS),
            "--out",
            str(direct_out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await process.wait() != 0 or not direct_out.exists():
            raise RuntimeError("bench/node_tokens.py failed")
        direct = json.loads(direct_out.read_text())
        say("tokens/s: the same through the mesh (one vLLM node)")
        await self.ensure_mesh()
        self.mesh.start_module(
            "node-llm",
            "node",
            {
                "FLEETWIRE_NODE_NODE_ID": "node-llm",
                "FLEETWIRE_NODE_KEY_FILE": str(self.work / "node-llm.key"),
            },
        )
        try:
            await wait_for_nodes(self.mesh, {"node-llm"}, within=180)
            through = await mesh_load.token_streams(
                self.mesh.bridge_address, streams=STREAMS, tokens=TOKENS, runs=TOKEN_RUNS
            )
        finally:
            self.mesh.stop("node-llm", grace=30)
        self.results["tokens"] = {
            "streams": STREAMS,
            "tokens_per_stream": TOKENS,
            "direct_tokens_per_s": direct[f"concurrent_{STREAMS}"]["tokens_per_s_total_median"],
            "mesh_tokens_per_s": through["tokens_per_s_median"],
            "mesh_runs": [round(r) for r in through["runs"]],  # type: ignore[union-attr]
        }
        self.mark("tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load run")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--batch-jobs", type=int, default=3000)
    parser.add_argument("--idle-nodes", type=int, default=1000)
    parser.add_argument("--skip-tokens", action="store_true", help="no vLLM phase")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(PHASES),
        help="run only this phase (repeatable); e.g. --only tokens for the tokens/s figure",
    )
    parser.add_argument("--out", default="bench/results/latest.json")
    args = parser.parse_args()
    results = asyncio.run(Bench(args).run())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.figures_table(results))
    print()
    print(report.cost_table(results))
    print()
    print(report.targets_table(results))
    print(f"\nload average (1 min) per phase: {results['load_average']}")
    print(f"written to {out}")


if __name__ == "__main__":  # vLLM (tokens phase) spawns processes: keep the guard
    main()
