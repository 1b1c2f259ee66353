"""Charging a node with an offence: its standing in this replica, and the record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.process.settings import SchedulerSettings
from scheduler.penalties import POINTS, Offence, PenaltyBox
from scheduler.penalty_store import PenaltyStore

log = structlog.get_logger(__name__)


class Offences:
    """Charges offences against the penalty box and records them in PostgreSQL."""

    def __init__(
        self,
        settings: SchedulerSettings,
        scheduler_id: str,
        penalties: PenaltyBox,
        penalty_store: PenaltyStore,
    ) -> None:
        self._settings = settings
        self._scheduler_id = scheduler_id
        self._penalties = penalties
        self._penalty_store = penalty_store

    async def charge(
        self, node_id: str, offence: Offence, job_id: uuid.UUID | None, attempt: int | None
    ) -> None:
        """Adds the offence to the node's standing and records it; past the threshold the
        node gets no work for the cooldown."""
        excluded = self._penalties.penalise(node_id, offence)
        until = datetime.now(UTC) + self._settings.penalty_cooldown if excluded else None
        if excluded:
            log.warning("node excluded", node_id=node_id, offence=offence.value, until=until)
        try:
            await self._penalty_store.record(
                node_id=node_id,
                offence=offence.value,
                points=POINTS[offence],
                job_id=job_id,
                attempt=attempt,
                excluded_until=until,
                scheduler_id=self._scheduler_id,
            )
        except BackendUnavailable:
            log.warning("penalty not recorded", node_id=node_id, offence=offence.value)
