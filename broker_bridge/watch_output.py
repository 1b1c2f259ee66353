"""What Watch sends of a finished job's output when its event stream no longer has it.

A finished job's stream is kept only for FLEETWIRE_REDIS_FINISHED_STREAM_RETENTION (or was
lost with Redis); PostgreSQL keeps the signed output for good. A Watch that found none of
the final attempt's chunks in the stream sends that output as one chunk instead, numbered
as the first chunk of the attempt, so that the chunks every follower receives add up to
``Job.output`` and ``usage.completion_tokens``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from fleetwire.v1 import job_pb2, job_service_pb2


@dataclass(frozen=True, slots=True)
class WatchCursor:
    """Where a resumed Watch picks up: after chunk ``sequence`` of attempt ``attempt``.

    Sequence numbers restart at 1 with every attempt, so a cursor of a sequence alone would
    skip the first chunks of a retry that a client resuming across attempts has never seen.
    With ``attempt`` set, a chunk passes when ``(attempt, sequence)`` comes after the cursor's:
    every chunk of a later attempt, the rest of the cursor's attempt, nothing of an earlier
    one. ``attempt`` 0 is the cursor of older clients: any chunk numbered after ``sequence``.
    """

    attempt: int = 0
    sequence: int = 0

    def passes(self, attempt: int, sequence: int) -> bool:
        if self.attempt == 0:
            return sequence > self.sequence
        return (attempt, sequence) > (self.attempt, self.sequence)


FROM_START = WatchCursor()
"""The cursor of a Watch that wants every chunk."""


def final_attempt(job: job_pb2.Job) -> int:
    """The attempt whose output the job carries: the signed one, else the last started."""
    return job.signature.attempt or job.attempts


def output_chunk(
    job: job_pb2.Job, *, streamed_attempts: Collection[int], cursor: WatchCursor
) -> job_service_pb2.TokenChunk | None:
    """The whole output of a SUCCEEDED job as chunk 1 of its final attempt, when the
    stream carried no chunk of that attempt; None otherwise (not SUCCEEDED, no output, the
    chunks were streamed, or chunk 1 of that attempt is behind the cursor: a client that
    resumes after a chunk of it already has part of the text, which a chunk numbered 1 must
    not repeat; it takes the rest from the final ``Job.output``)."""
    if job.state != job_pb2.JOB_STATE_SUCCEEDED or not job.output:
        return None
    attempt = final_attempt(job)
    if attempt in streamed_attempts or not cursor.passes(attempt, 1):
        return None
    return job_service_pb2.TokenChunk(
        sequence=1,
        text=job.output,
        token_count=job.usage.completion_tokens,
        attempt=attempt,
    )
