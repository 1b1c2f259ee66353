"""The node process: load the key, start the engine, serve until told to stop.

SIGTERM or SIGINT: drain (finish running jobs, up to the grace period) and exit 0.
A second signal: abort running jobs at once (the scheduler retries them elsewhere).
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from fleetwire.keys import load_or_create_key
from fleetwire.settings import Settings
from node.agent import NodeAgent
from node.vllm_runtime import VllmRuntime

log = structlog.get_logger(__name__)

DRAIN_GRACE = 120.0


async def run_node(settings: Settings) -> None:
    s = settings.node
    key = load_or_create_key(s.key_file)
    runtime = VllmRuntime(
        str(s.model_path),
        served_name=s.model_name,
        max_num_seqs=s.max_num_seqs,
        max_model_len=s.max_model_len,
        kv_cache_bytes=s.kv_cache_mib * 1024 * 1024,
    )
    log.info("starting engine", model=str(s.model_path), node_id=s.node_id)
    await runtime.start()
    agent = NodeAgent(s, key, runtime)
    loop = asyncio.get_running_loop()
    signals_seen = 0
    drain_task: asyncio.Task[None] | None = None

    def on_signal() -> None:
        nonlocal signals_seen, drain_task
        signals_seen += 1
        if signals_seen == 1:
            log.info("stop requested; draining")
            drain_task = asyncio.create_task(agent.drain(DRAIN_GRACE))
        else:
            log.warning("second stop signal; aborting running jobs")
            asyncio.create_task(agent.drain(0.0))  # noqa: RUF006 - awaited via run()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        await agent.run()
        if drain_task is not None:
            await drain_task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runtime.stop()
        log.info("node stopped")


def main() -> None:
    from fleetwire.logs import configure_logging
    from fleetwire.settings import load_settings

    settings = load_settings()
    configure_logging(
        level=settings.mesh.log_level, json=settings.mesh.log_json, process=settings.node.node_id
    )
    asyncio.run(run_node(settings))
