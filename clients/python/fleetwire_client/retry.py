"""When to retry a failed call, and how long to wait first. Pure logic, no I/O.

Only UNAVAILABLE and RESOURCE_EXHAUSTED are retried: the bridge promises that neither
accepted anything ("nothing was accepted", job_service.proto), so a retry cannot run a job
twice. When the server sent ``google.rpc.RetryInfo`` its delay is honoured exactly (never
shortened; capped by ``max_server_delay``); otherwise the delay is exponential backoff with
full jitter. A call never sleeps past its own deadline.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from fleetwire_client.errors import FleetwireError

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries. ``max_attempts`` counts the first try (1 disables retries);
    delays are in seconds."""

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0
    max_server_delay: float = 60.0

    def delay_before_retry(
        self,
        attempt: int,
        error: FleetwireError,
        *,
        time_left: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before try ``attempt + 1`` after try ``attempt`` (1-based) failed
        with ``error``; None when the error is final: not retryable, out of attempts, or the
        wait would not end before the call's deadline (``time_left`` seconds away)."""
        if error.code not in RETRYABLE_CODES or attempt >= self.max_attempts:
            return None
        if error.retry_delay is not None:
            delay = min(max(error.retry_delay.total_seconds(), 0.0), self.max_server_delay)
        else:
            ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
            delay = (rng or random).uniform(0.0, ceiling)
        if time_left is not None and delay >= time_left:
            return None
        return delay


NO_RETRIES = RetryPolicy(max_attempts=1)
