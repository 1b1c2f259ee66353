"""Where a resumed Watch picks up: the attempt and sequence of the last chunk received.

Sequence numbers restart at 1 with every attempt of a job, so a cursor of a sequence alone
(``after_sequence``) would make a Watch that resumes after a retry started skip that
attempt's first chunks. The bridge reads the pair: it sends a chunk when its
``(attempt, sequence)`` comes after ``(after_attempt, after_sequence)``; with
``after_attempt`` 0 it compares sequences alone (what older clients send). Pure logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetwire.v1 import job_service_pb2
from fleetwire_client.models import Token


@dataclass(frozen=True, slots=True)
class WatchCursor:
    """After chunk ``sequence`` of attempt ``attempt``; ``WatchCursor()`` is the start."""

    attempt: int = 0
    sequence: int = 0

    def after(self, token: Token) -> WatchCursor:
        """The cursor once ``token`` was received: that chunk's own place."""
        return WatchCursor(attempt=token.attempt, sequence=token.sequence)

    def request(self, job_id: str) -> job_service_pb2.WatchRequest:
        """The WatchRequest that resumes ``job_id``'s stream after this cursor."""
        return job_service_pb2.WatchRequest(
            job_id=job_id, after_sequence=self.sequence, after_attempt=self.attempt
        )
