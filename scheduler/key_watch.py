"""Ends the sessions of nodes whose key was revoked since they connected.

A handshake checks the key once; this loop checks the registry for every live session
every ``key_check_interval`` (one query for all of them), so an operator's revocation takes
effect within that time, not at the node's next reconnect. The session's stream is
cancelled: the node reconnects and is refused at the handshake (KEY_REVOKED), and its
running jobs go back to the queue like those of a lost node. A key *replaced* by a
rotation (``register --replace``) is not a revocation: the session keeps the key it proved
until the node reconnects with its new one, so the jobs in flight finish. To cut off a
stolen key, revoke it and let its session end (one interval) before registering a new key:
a replacement within the same interval keeps the old session.
"""

from __future__ import annotations

import asyncio

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.process.background import BackgroundTask
from fleetwire.store.nodes import NodeStore
from scheduler.registry import NodeRegistry

log = structlog.get_logger(__name__)


class KeyWatch:
    """``start`` / ``stop``; ``check`` runs one pass (tests call it directly)."""

    def __init__(self, store: NodeStore, registry: NodeRegistry, *, interval: float) -> None:
        self._store = store
        self._registry = registry
        self._interval = interval
        self._loop = BackgroundTask("key-watch", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while not self._loop.stopping:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except BackendUnavailable as err:
                log.warning("node keys not checked; PostgreSQL unavailable", error=str(err))
            except Exception:  # the loop must outlive any one pass: it enforces revocations
                log.exception("node keys not checked")

    async def check(self) -> int:
        """Ends every session whose node is revoked (or no longer registered); returns how
        many it ended."""
        sessions = list(self._registry.sessions)
        if not sessions:
            return 0
        keys = await self._store.keys_of([s.node_id for s in sessions])
        ended = 0
        for session in sessions:
            registered = keys.get(session.node_id)
            if registered is not None and not registered[1]:
                continue
            reason = "key revoked" if registered else "node no longer registered"
            log.warning("ending the session of a node", node_id=session.node_id, reason=reason)
            await self._registry.remove(session, reason)
            if session.close is not None:
                session.close()
            ended += 1
        return ended
