"""The node process: load the key and config, start the engines, serve until told to stop.

Signals:
- SIGTERM or SIGINT: drain — announce Draining, accept nothing new, let running jobs finish
  (up to ``FLEETWIRE_NODE_DRAIN_GRACE``), send their results, close the stream, stop the
  engines, exit 0.
- A second SIGTERM/SIGINT: abort running jobs at once and hand them back to the mesh as
  retryable (they finish on another node), then exit 0.
- SIGHUP: key rotation — if ``<key file>.next`` exists (``fleetwire keys rotate``), drain
  this session, promote the new key and reconnect with it; the engines stay up.

However the process ends (SIGKILL included), the engine's processes end with it: see
``fleetwire.process.lifeline``.

Exit codes: 0 after a drain; ``EXIT_REFUSED`` (78, EX_CONFIG) when the mesh refuses the
node's key (not registered, revoked, or another key is registered): restarting will not
help until an operator registers the key, so a systemd unit should not restart on it
(``RestartPreventExitStatus=78``); ``EXIT_CONFIG`` (78 as well) for a bad config or key.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from fleetwire.domain.errors import ConfigurationError
from fleetwire.domain.keys import load_or_create_key, next_key_path, promote_next_key
from fleetwire.process import lifeline
from fleetwire.process.metrics import MetricsEndpoint
from fleetwire.process.settings import NodeSettings, Settings
from node.agent import NodeAgent
from node.config import NodeProfile, load_profile
from node.dialer import HandshakeRefused
from node.metrics import NodeMetrics, start_endpoint
from node.runtime import Runtime
from node.vllm_runtime import VllmRuntime

log = structlog.get_logger(__name__)

EXIT_REFUSED = 78
EXIT_CONFIG = 78


MakeRuntimes = Callable[[NodeProfile, NodeSettings], Mapping[str, Runtime]]


def vllm_runtimes(profile: NodeProfile, settings: NodeSettings) -> dict[str, Runtime]:
    """One vLLM engine per served model (not started)."""
    return dict(build_runtimes(profile, engine_nice=settings.engine_nice))


def build_runtimes(profile: NodeProfile, *, engine_nice: int) -> dict[str, VllmRuntime]:
    """One engine per served model (not started)."""
    return {
        model.name: VllmRuntime(
            str(model.path),
            served_name=model.name,
            max_num_seqs=model.max_num_seqs,
            max_model_len=model.max_model_len,
            kv_cache_bytes=model.kv_cache_mib * 1024 * 1024 if model.kv_cache_mib else None,
            engine_nice=engine_nice,
        )
        for model in profile.models
    }


async def run_node(settings: Settings, make_runtimes: MakeRuntimes = vllm_runtimes) -> int:
    """Runs the node until drained; returns the process exit code. ``make_runtimes``
    builds the engines (vLLM; a benchmark injects its own)."""
    s = settings.node
    key = load_or_create_key(s.key_file)
    profile = load_profile(s)
    # Before any engine starts: its processes die with this one, however it dies.
    lifeline.engines_die_with_this_process()
    if make_runtimes is vllm_runtimes and lifeline.supported():
        missing = [
            what
            for what, installed in (
                (lifeline.LAUNCHER, lifeline.launcher_path() is not None),
                ("the vLLM plugin fleetwire_lifeline", lifeline.vllm_plugin_installed()),
            )
            if not installed
        ]
        if missing:
            log.warning(
                "not installed (pip install this project): the engine's processes may "
                "outlive a killed agent",
                missing=missing,
            )
    runtimes = make_runtimes(profile, s)
    log.info(
        "starting engines",
        node_id=s.node_id,
        models=[f"{m.name}={m.path}" for m in profile.models],
        region=profile.region,
        subclouds=list(profile.subclouds),
    )
    endpoint = MetricsEndpoint("node")
    metrics = NodeMetrics(endpoint.registry)
    start_endpoint(endpoint, s)
    try:
        await asyncio.gather(*(runtime.start() for runtime in runtimes.values()))
        agent = NodeAgent(s, key, runtimes, profile, metrics=metrics)
        return await _serve(agent, s.key_file, s.drain_grace.total_seconds())
    finally:
        await asyncio.gather(
            *(runtime.stop() for runtime in runtimes.values()), return_exceptions=True
        )
        endpoint.stop()
        log.info("node stopped")


async def _serve(agent: NodeAgent, key_file: Path, grace: float) -> int:
    loop = asyncio.get_running_loop()
    stops_seen = 0
    tasks: set[asyncio.Task[None]] = set()

    def own(task: asyncio.Task[None]) -> None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_stop() -> None:
        nonlocal stops_seen
        stops_seen += 1
        if stops_seen == 1:
            log.info("stop requested; draining", grace_s=grace)
            own(asyncio.create_task(agent.drain(grace)))
        else:
            log.warning("second stop signal; aborting and handing back running jobs")
            own(asyncio.create_task(agent.drain(0.0)))

    def on_hangup() -> None:
        if not next_key_path(key_file).exists():
            log.info("SIGHUP: no rotated key waiting", expected=str(next_key_path(key_file)))
            return
        try:
            new_key = promote_next_key(key_file)
        except (ConfigurationError, OSError) as err:
            log.error("SIGHUP: cannot load the rotated key", error=str(err))
            return
        if new_key is not None:
            agent.rotate_key(new_key)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    try:
        tried_successor = False
        while True:
            try:
                await agent.run()
                break
            except HandshakeRefused as err:
                # The registered key was replaced before this node was told (SIGHUP): when a
                # rotated key waits, it is the one the mesh expects now.
                successor = None
                if not tried_successor and next_key_path(key_file).exists():
                    successor = promote_next_key(key_file)
                tried_successor = True
                if successor is None:
                    log.error(
                        "the mesh refused this node's key; register it "
                        "(fleetwire admin nodes register) and start the node again",
                        error=str(err),
                        public_key=agent.public_key.hex(),
                    )
                    return EXIT_REFUSED
                log.warning("key refused; switching to the rotated key", error=str(err))
                agent.rotate_key(successor)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return 0
    finally:
        # The engines stop after this returns; a stop signal then must not kill the process
        # with its default action (exit -15 in the middle of the engines' shutdown).
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: log.info("already stopping"))
        loop.remove_signal_handler(signal.SIGHUP)


def main(make_runtimes: MakeRuntimes = vllm_runtimes) -> None:
    """``python -m node``: the agent on vLLM engines (``make_runtimes`` for a benchmark's)."""
    from fleetwire.process.logs import configure_logging
    from fleetwire.process.settings import load_settings
    from fleetwire.process.tracing import configure_tracing

    settings = load_settings()
    configure_logging(
        level=settings.mesh.log_level, json=settings.mesh.log_json, process=settings.node.node_id
    )
    configure_tracing(settings.tracing, service="fleetwire-node", instance=settings.node.node_id)
    try:
        code = asyncio.run(run_node(settings, make_runtimes))
    except ConfigurationError as err:
        log.error("bad node configuration", error=str(err))
        code = EXIT_CONFIG
    sys.exit(code)
