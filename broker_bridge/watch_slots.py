"""How many Watch streams each tenant may hold open on this replica at once.

Each open Watch holds a Redis connection while it waits (``FLEETWIRE_REDIS_MAX_CONNECTIONS``
bounds them per process); without a per-tenant limit one tenant could take them all. The
count is per replica (a process's own streams), which is what the connections are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fleetwire.domain.errors import ResourceExhausted


class WatchSlots:
    def __init__(self, per_tenant: int) -> None:
        self._per_tenant = per_tenant
        self._open: Counter[str] = Counter()

    def check(self, tenant_id: str) -> None:
        """ResourceExhausted when ``tenant_id`` has no free slot now (``held`` may still
        refuse later): lets an answer be refused before it starts."""
        if self._open[tenant_id] >= self._per_tenant:
            raise ResourceExhausted(
                f"tenant {tenant_id} has {self._per_tenant} Watch streams open on this "
                "bridge (FLEETWIRE_BRIDGE_MAX_WATCHES_PER_TENANT); close one first",
                retry_delay=timedelta(seconds=1),
                reason="TOO_MANY_WATCHES",
                quota_subject=f"tenant:{tenant_id}",
            )

    @asynccontextmanager
    async def held(self, tenant_id: str) -> AsyncIterator[None]:
        """One slot of ``tenant_id`` for the block; ResourceExhausted when none is free."""
        self.check(tenant_id)
        self._open[tenant_id] += 1
        try:
            yield
        finally:
            self._open[tenant_id] -= 1
            if not self._open[tenant_id]:
                del self._open[tenant_id]
