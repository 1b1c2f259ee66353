"""This replica's copy of each node's reputation, for matching (``NodeRegistry``).

PostgreSQL holds what reputation is made of (validation answers and offences,
``ValidationStore.standings``); the issuer refreshes a node's copy when it connects and
whenever one of its answers is judged. Between refreshes the copy does not decay: at a
half-life of a day, minutes do not matter.
"""

from __future__ import annotations

from scheduler.validation_rules import Record, on_probation, reputation
from scheduler.validation_store import Standing


class Reputations:
    def __init__(self, floor: float) -> None:
        self._floor = floor
        self._standings: dict[str, Standing] = {}

    def update(self, standings: dict[str, Standing]) -> None:
        self._standings.update(standings)

    def standing(self, node_id: str) -> Standing:
        return self._standings.get(node_id, Standing(Record()))

    def score(self, node_id: str) -> float:
        return reputation(self.standing(node_id).record)

    def on_probation(self, node_id: str) -> bool:
        return on_probation(self.standing(node_id).record, self._floor)
