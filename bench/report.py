"""The figures of one ``bench.run``: the ratios and targets (issue 19) written into the
JSON, and the printed tables. Every ratio is taken from the same run, never across runs;
the Celery peer of a ratio is Celery with its defaults (the headline)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MESH_PROCESSES = ("bridge", "scheduler", "node-1")
"""The mesh's processes whose CPU per job is added up against the Celery worker's."""
PEERS = {
    "celery": "Celery, defaults",
    "celery_durable": "Celery, durable",
    "dramatiq": "Dramatiq",
}


COMPARE: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    label: str
    key: str
    """Where the measured value is in the JSON (``ratios.<name>`` or a top-level key)."""
    sign: str
    bound: float

    def met(self, value: float) -> bool:
        return COMPARE[self.sign](value, self.bound)


TARGETS = (
    Target("single Submit, 50 clients: mesh / Celery", "ratios.mesh_over_celery", ">=", 1.0),
    Target("streamed submits / Celery", "ratios.stream_over_celery", ">=", 2.0),
    Target("SubmitBatch / raw AMQP limit", "ratios.batch_over_raw", ">=", 0.3),
    Target("idle latency p50 / Celery p50", "ratios.latency_p50_over_celery", "<=", 1.5),
    Target("idle latency p99 / Celery p99", "ratios.latency_p99_over_celery", "<=", 2.0),
    Target("tokens mesh / direct (median of 5)", "ratios.tokens_mesh_over_direct", ">=", 0.95),
    Target("CPU per job, mesh / Celery worker", "ratios.cpu_mesh_over_celery", "<=", 2.0),
    Target("PostgreSQL commits per job, 50 clients", "pg_commits_per_job", "<=", 1.0),
    Target("scheduler memory per idle node (KiB)", "memory.kib_per_node", "<=", 50.0),
)


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def peer(r: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(r.get("peers", {}).get(name, {}))


def mesh_cpu_ms_per_job(r: dict[str, Any]) -> float | None:
    """CPU per job of the bridge, the scheduler and the node together (clients excluded)."""
    cpu = r.get("mesh_cpu_ms_per_job", {})
    if not all(name in cpu for name in MESH_PROCESSES):
        return None
    return round(float(sum(cpu[name] for name in MESH_PROCESSES)), 2)


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    mesh = r.get("mesh_throughput", {}).get("jobs_per_s")
    raw = r.get("raw_amqp", {}).get("limit_per_s")
    celery = peer(r, "celery")
    lat, clat = r.get("mesh_latency", {}), celery.get("latency", {})
    tokens = r.get("tokens", {})
    return {
        "mesh_over_raw": _div(mesh, raw),
        "batch_over_raw": _div(r.get("mesh_batch", {}).get("jobs_per_s"), raw),
        "mesh_over_celery": _div(mesh, celery.get("throughput", {}).get("jobs_per_s")),
        "mesh_over_celery_durable": _div(
            mesh, peer(r, "celery_durable").get("throughput", {}).get("jobs_per_s")
        ),
        "mesh_over_dramatiq": _div(
            mesh, peer(r, "dramatiq").get("throughput", {}).get("jobs_per_s")
        ),
        "stream_over_celery": _div(
            r.get("mesh_stream", {}).get("jobs_per_s"),
            celery.get("throughput", {}).get("jobs_per_s"),
        ),
        "latency_p50_over_celery": _div(lat.get("p50_ms"), clat.get("p50_ms")),
        "latency_p99_over_celery": _div(lat.get("p99_ms"), clat.get("p99_ms")),
        "tokens_mesh_over_direct": _div(
            tokens.get("mesh_tokens_per_s"), tokens.get("direct_tokens_per_s")
        ),
        "cpu_mesh_over_celery": _div(
            mesh_cpu_ms_per_job(r), celery.get("cpu_ms_per_job", {}).get("worker")
        ),
    }


def _lookup(r: dict[str, Any], key: str) -> Any:
    value: Any = r
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and ``met`` (None: not measured)."""
    out = []
    for t in TARGETS:
        value = _lookup(r, t.key)
        met = None if value is None else t.met(value)
        row: dict[str, Any] = {
            "target": t.label,
            "key": t.key,
            "bound": f"{t.sign} {t.bound:g}",
            "value": value,
            "met": met,
        }
        status = r.get("mesh_stream", {}).get("status")
        if value is None and t.key == "ratios.stream_over_celery" and status:
            row["note"] = status
        out.append(row)
    return out


def _f(value: Any, fmt: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _align(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def figures_table(r: dict[str, Any]) -> str:
    raw, q = r.get("raw_amqp", {}), r.get("ratios", {})
    lat, mem, tok = r.get("mesh_latency", {}), r.get("memory", {}), r.get("tokens", {})
    thr = r.get("mesh_throughput", {})
    clients = r["settings"]["clients"]
    stream = r.get("mesh_stream", {})
    rows: list[tuple[str, ...]] = [
        ("raw AMQP publish, await each confirm", f"{_f(raw.get('publish_each_per_s'))} msg/s"),
        (
            f"raw AMQP publish, {raw.get('window', 1000)} in flight",
            f"{_f(raw.get('publish_window_per_s'))} msg/s",
        ),
        ("raw AMQP consume, manual ack", f"{_f(raw.get('consume_per_s'))} msg/s"),
        ("raw AMQP publish+consume, await each", f"{_f(raw.get('pipeline_each_per_s'))} msg/s"),
        ("raw AMQP publish+consume, windowed (limit)", f"{_f(raw.get('limit_per_s'))} msg/s"),
        (f"mesh Submit, {clients} clients, 1 node", f"{_f(thr.get('jobs_per_s'))} jobs/s"),
        (
            f"mesh SubmitStream, {clients} clients, 1 node",
            f"{_f(stream['jobs_per_s'])} jobs/s" if "jobs_per_s" in stream else "not measured",
        ),
        ("mesh / raw limit", _f(q.get("mesh_over_raw"), ".2f")),
        (
            "mesh batches (SubmitBatch 100)",
            f"{_f(r.get('mesh_batch', {}).get('jobs_per_s'))} jobs/s",
        ),
        (
            "mesh latency p50 / p99 (idle)",
            f"{_f(lat.get('p50_ms'), '.1f')} / {_f(lat.get('p99_ms'), '.1f')} ms",
        ),
        (
            f"mesh latency p50 / p99 ({clients} clients)",
            f"{_f(thr.get('p50_ms'), '.1f')} / {_f(thr.get('p99_ms'), '.1f')} ms",
        ),
    ]
    for name, label in PEERS.items():
        p = peer(r, name)
        t, pl = p.get("throughput", {}), p.get("latency", {})
        rows.append((f"{label}, {clients} clients", f"{_f(t.get('jobs_per_s'))} jobs/s"))
        rows.append(
            (
                f"{label}, latency p50 / p99 (idle)",
                f"{_f(pl.get('p50_ms'), '.1f')} / {_f(pl.get('p99_ms'), '.1f')} ms",
            )
        )
    rows += [
        ("mesh / Celery durable", _f(q.get("mesh_over_celery_durable"), ".2f")),
        ("mesh / Dramatiq", _f(q.get("mesh_over_dramatiq"), ".2f")),
        (
            f"tokens/s direct AsyncLLM ({tok.get('streams', 8)} streams, median of 5)",
            _f(tok.get("direct_tokens_per_s")),
        ),
        (
            "tokens/s through the mesh (median of 5)",
            f"{_f(tok.get('mesh_tokens_per_s'))}"
            + (f" (runs {', '.join(str(x) for x in tok['mesh_runs'])})" if tok else ""),
        ),
    ]
    for name, s in r.get("scale", {}).items():
        rows.append((f"scale: {name}", f"{_f(s.get('jobs_per_s'))} jobs/s"))
    rows.append(
        (
            f"scheduler memory, {mem.get('idle_nodes', 0)} idle nodes",
            f"{_f(mem.get('kib_per_node'), '.1f')} KiB/node ({_f(mem.get('rss_before_mib'), '.0f')}"
            f" -> {_f(mem.get('rss_after_mib'), '.0f')} MiB)",
        )
    )
    notes = [f"mesh SubmitStream: {stream['status']}"] if "status" in stream else []
    return "\n".join([_align(rows), *notes])


def cost_table(r: dict[str, Any]) -> str:
    """Per job, under the 50-client load: CPU per process and the backing services'
    counters, the mesh next to each peer."""
    columns: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("mesh", r.get("mesh_cpu_ms_per_job", {}), r.get("mesh_service_cost", {}))
    ]
    for name, label in PEERS.items():
        p = peer(r, name)
        columns.append((label, p.get("cpu_ms_per_job", {}), p.get("service_cost", {})))
    header = ("per job, 50 clients", *(label for label, _, _ in columns))
    rows: list[tuple[str, ...]] = [header]

    def row(label: str, values: list[Any]) -> None:
        rows.append((label, *(_f(v, ".2f") for v in values)))

    cpus = [cpu for _, cpu, _ in columns]
    costs = [cost for _, _, cost in columns]
    for process in (*MESH_PROCESSES, "worker"):
        row(f"CPU ms, {process}", [cpu.get(process) for cpu in cpus])
    row(
        "CPU ms, mesh processes / worker, together",
        [cpu.get("worker", _sum(cpu, MESH_PROCESSES)) for cpu in cpus],
    )
    row("CPU ms, clients (this process)", [cpu.get("clients (this process)") for cpu in cpus])
    row("PostgreSQL commits", [cost.get("pg_commits_per_job") for cost in costs])
    row("Redis commands, less background", [cost.get("redis_commands_per_job") for cost in costs])
    row(
        "Redis commands, raw (shared server)",
        [cost.get("redis_commands_per_job_raw") for cost in costs],
    )
    row("Redis background, commands/s", [cost.get("redis_background_per_s") for cost in costs])
    for stat in ("publish", "deliver_get", "ack"):
        row(f"AMQP {stat}", [cost.get("amqp_per_job", {}).get(stat) for cost in costs])
    lines = [_align(rows)]
    for label, _, cost in columns:
        commands = cost.get("redis_per_command_per_job")
        if commands:
            shown = ", ".join(f"{n} {v:.2f}" for n, v in list(commands.items())[:8])
            lines.append(f"Redis per job less background, {label}: {shown}")
    return "\n".join(lines)


def _sum(cpu: dict[str, Any], names: tuple[str, ...]) -> float | None:
    return round(sum(cpu[n] for n in names), 2) if all(n in cpu for n in names) else None


def targets_table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [("target", "measured", "bound", "")]
    for t in r.get("targets", []):
        value = t["value"]
        measured = "not measured" if value is None else f"{value:.2f}"
        verdict = "" if t["met"] is None else ("met" if t["met"] else "not met")
        rows.append((t["target"], measured, t["bound"], verdict))
    notes = [f"{t['target']}: {t['note']}" for t in r.get("targets", []) if "note" in t]
    return "\n".join([_align(rows), *notes])
