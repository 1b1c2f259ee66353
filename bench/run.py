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
from typing import Any

from bench import celery_load, mesh_load
from bench.idle_nodes import IdleFleet
from bench.mesh_load import bench_spec, job_body
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
            "memory": self.memory,
            "celery": lambda: asyncio.to_thread(self.celery),
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
        self.results["ratios"] = ratios(self.results)
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

        say(f"mesh: latency, {LATENCY_JOBS} single jobs on an idle mesh")
        latency = await mesh_load.sequential(bridge, count=LATENCY_JOBS)
        self.results["mesh_latency"] = latency.summary()
        self.mark("mesh_latency")

        scale: dict[str, Any] = {}
        say(f"mesh: {args.clients} clients, 1 node, {args.duration} s")
        watched = {name: mesh.pid(name) for name in ("bridge", "scheduler", "node-1")}
        watched["clients (this process)"] = os.getpid()
        cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        one = await mesh_load.closed_loop(
            bridge, clients=args.clients, duration=args.duration, warmup=0.0
        )
        self.results["mesh_cpu_ms_per_job"] = {
            name: round((cpu_seconds(pid) - cpu_before[name]) * 1000 / max(1, one.jobs), 2)
            for name, pid in watched.items()
        }
        scale["1 scheduler, 1 node"] = one.summary()
        self.results["mesh_throughput"] = one.summary()
        self.mark("mesh_throughput")

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
        for name in ("node-1", "node-2", "node-5", "node-6", "scheduler-b"):
            mesh.stop(name)

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

    def celery(self) -> None:
        say("celery: starting a prefork worker (concurrency 2)")
        worker = celery_load.start_worker(self.mesh)
        try:
            celery_load.wait_ready(self.namespace)
            say(f"celery: latency, {LATENCY_JOBS} single jobs")
            latency = celery_load.sequential(self.namespace, count=LATENCY_JOBS)
            say(f"celery: {self.args.clients} clients, {self.args.duration} s")
            tree = process_tree(worker)
            cpu_before = sum(cpu_seconds(pid) for pid in tree)
            clients_before = cpu_seconds(os.getpid())
            load = celery_load.closed_loop(
                self.namespace, clients=self.args.clients, duration=self.args.duration, warmup=0.0
            )
            jobs = max(1, load.jobs)
            self.results["celery_cpu_ms_per_job"] = {
                "worker (parent and pool)": round(
                    (sum(cpu_seconds(pid) for pid in tree) - cpu_before) * 1000 / jobs, 2
                ),
                "clients (this process)": round(
                    (cpu_seconds(os.getpid()) - clients_before) * 1000 / jobs, 2
                ),
            }
        finally:
            self.mesh.stop("celery-worker")
        self.results["celery_latency"] = latency.summary()
        self.results["celery_throughput"] = load.summary()
        self.mark("celery")

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


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    mesh = r.get("mesh_throughput", {}).get("jobs_per_s")
    raw = r.get("raw_amqp", {}).get("limit_per_s")
    tokens = r.get("tokens", {})
    return {
        "mesh_over_raw": div(mesh, raw),
        "batch_over_raw": div(r.get("mesh_batch", {}).get("jobs_per_s"), raw),
        "mesh_over_celery": div(mesh, r.get("celery_throughput", {}).get("jobs_per_s")),
        "tokens_mesh_over_direct": div(
            tokens.get("mesh_tokens_per_s"), tokens.get("direct_tokens_per_s")
        ),
    }


def table(r: dict[str, Any]) -> str:
    raw, q = r.get("raw_amqp", {}), r.get("ratios", {})
    lat, clat = r.get("mesh_latency", {}), r.get("celery_latency", {})
    mem, tok = r.get("memory", {}), r.get("tokens", {})

    def f(value: Any, fmt: str = ",.0f") -> str:
        return "n/a" if value is None else format(value, fmt)

    def target(ok: bool | None) -> str:
        return "" if ok is None else ("met" if ok else "NOT met")

    def ge(value: Any, bound: float) -> bool | None:
        return None if value is None else value >= bound

    latency_ok = None if not lat else lat["p50_ms"] <= 3 and lat["p99_ms"] <= 10
    rows = [
        ("raw AMQP publish, await each confirm", f"{f(raw.get('publish_each_per_s'))} msg/s", ""),
        (
            f"raw AMQP publish, {raw.get('window')} in flight",
            f"{f(raw.get('publish_window_per_s'))} msg/s",
            "",
        ),
        ("raw AMQP consume, manual ack", f"{f(raw.get('consume_per_s'))} msg/s", ""),
        ("raw AMQP publish+consume, await each", f"{f(raw.get('pipeline_each_per_s'))} msg/s", ""),
        ("raw AMQP publish+consume, windowed (limit)", f"{f(raw.get('limit_per_s'))} msg/s", ""),
        (
            f"mesh, {r['settings']['clients']} clients, 1 node",
            f"{f(r.get('mesh_throughput', {}).get('jobs_per_s'))} jobs/s",
            "",
        ),
        ("mesh / raw limit", f(q.get("mesh_over_raw"), ".2f"), ""),
        (
            "mesh batches (SubmitBatch 100)",
            f"{f(r.get('mesh_batch', {}).get('jobs_per_s'))} jobs/s",
            "",
        ),
        (
            "mesh batches / raw limit",
            f(q.get("batch_over_raw"), ".2f"),
            f"target >= 0.5: {target(ge(q.get('batch_over_raw'), 0.5))}",
        ),
        (
            f"celery, {r['settings']['clients']} clients",
            f"{f(r.get('celery_throughput', {}).get('jobs_per_s'))} jobs/s",
            "",
        ),
        (
            "mesh / celery",
            f(q.get("mesh_over_celery"), ".2f"),
            f"target >= 2: {target(ge(q.get('mesh_over_celery'), 2))}",
        ),
        (
            "mesh latency p50 / p99 (idle)",
            f"{f(lat.get('p50_ms'), '.1f')} / {f(lat.get('p99_ms'), '.1f')} ms",
            f"target <= 3 / 10: {target(latency_ok)}",
        ),
        (
            "celery latency p50 / p99 (idle)",
            f"{f(clat.get('p50_ms'), '.1f')} / {f(clat.get('p99_ms'), '.1f')} ms",
            "",
        ),
        (
            f"tokens/s direct AsyncLLM ({tok.get('streams', STREAMS)} streams)",
            f(tok.get("direct_tokens_per_s")),
            "",
        ),
        ("tokens/s through the mesh", f(tok.get("mesh_tokens_per_s")), ""),
        (
            "tokens mesh / direct",
            f(q.get("tokens_mesh_over_direct"), ".2f"),
            f"target >= 0.95: {target(ge(q.get('tokens_mesh_over_direct'), 0.95))}",
        ),
    ]
    for name, s in r.get("scale", {}).items():
        rows.append((f"scale: {name}", f"{f(s.get('jobs_per_s'))} jobs/s", ""))
    rows.append(
        (
            f"scheduler memory, {mem.get('idle_nodes', 0)} idle nodes",
            f"{f(mem.get('kib_per_node'), '.1f')} KiB/node "
            f"({f(mem.get('rss_before_mib'), '.0f')} -> {f(mem.get('rss_after_mib'), '.0f')} MiB)",
            f"target <= 50: {target(None if not mem else mem['kib_per_node'] <= 50)}",
        )
    )
    width = max(len(n) for n, _, _ in rows)
    vwidth = max(len(v) for _, v, _ in rows)
    return "\n".join(f"{n:<{width}}  {v:>{vwidth}}  {t}".rstrip() for n, v, t in rows)


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
        choices=["raw_amqp", "mesh", "memory", "celery", "tokens"],
        help="run only this phase (repeatable); e.g. --only tokens for the tokens/s figure",
    )
    parser.add_argument("--out", default="bench/results/latest.json")
    args = parser.parse_args()
    results = asyncio.run(Bench(args).run())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nload average (1 min) per phase: {results['load_average']}")
    print(f"written to {out}")


if __name__ == "__main__":  # vLLM (tokens phase) spawns processes: keep the guard
    main()
