"""A node agent on the bench runtime (``node.bench_runtime``): the real ``NodeAgent``
(handshake, heartbeats, Accept, Progress, signed Result) with an engine that answers at
once, so a benchmark measures the mesh and not the model. A measurement instrument.

    python -m bench.bench_node        # configured by FLEETWIRE_NODE_* like ``python -m node``

Slots: ``FLEETWIRE_NODE_MAX_NUM_SEQS``. SIGTERM/SIGINT drains (up to 5 s) and exits 0.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from fleetwire.keys import load_or_create_key
from fleetwire.logs import configure_logging
from fleetwire.settings import Settings, load_settings
from node.agent import NodeAgent
from node.bench_runtime import bench_runtimes
from node.config import load_profile

log = structlog.get_logger(__name__)

DRAIN_GRACE_S = 5.0


async def run_bench_node(settings: Settings) -> None:
    s = settings.node
    profile = load_profile(s)
    runtimes = bench_runtimes(profile)
    for runtime in runtimes.values():
        await runtime.start()
    agent = NodeAgent(s, load_or_create_key(s.key_file), runtimes, profile)
    loop = asyncio.get_running_loop()
    drains: set[asyncio.Task[None]] = set()

    def on_stop() -> None:
        drains.add(asyncio.create_task(agent.drain(DRAIN_GRACE_S if not drains else 0.0)))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop)
    log.info("bench node starting", node_id=s.node_id, models=list(runtimes))
    try:
        await agent.run()
        await asyncio.gather(*drains, return_exceptions=True)
    finally:
        for runtime in runtimes.values():
            await runtime.stop()


def main() -> None:
    settings = load_settings()
    configure_logging(
        level=settings.mesh.log_level, json=settings.mesh.log_json, process=settings.node.node_id
    )
    asyncio.run(run_bench_node(settings))


if __name__ == "__main__":
    main()
