"""What Watch sends of a finished job's output when its event stream no longer has it.

A finished job's stream is kept only for FLEETWIRE_REDIS_FINISHED_STREAM_RETENTION (or was
lost with Redis); PostgreSQL keeps the signed output for good. A Watch that found none of
the final attempt's chunks in the stream sends that output as one chunk instead, numbered
as the first chunk of the attempt, so that the chunks every follower receives add up to
``Job.output`` and ``usage.completion_tokens``.
"""

from __future__ import annotations

from collections.abc import Collection

from fleetwire.v1 import job_pb2, job_service_pb2


def final_attempt(job: job_pb2.Job) -> int:
    """The attempt whose output the job carries: the signed one, else the last started."""
    return job.signature.attempt or job.attempts


def output_chunk(
    job: job_pb2.Job, *, streamed_attempts: Collection[int], after_sequence: int
) -> job_service_pb2.TokenChunk | None:
    """The whole output of a SUCCEEDED job as chunk 1 of its final attempt, when the
    stream carried no chunk of that attempt; None otherwise (not SUCCEEDED, no output, the
    chunks were streamed, or ``after_sequence`` ≥ 1: a client that resumes after a chunk
    already has part of the text, which a chunk numbered 1 must not repeat; it takes the
    rest from the final ``Job.output``)."""
    if job.state != job_pb2.JOB_STATE_SUCCEEDED or not job.output:
        return None
    attempt = final_attempt(job)
    if attempt in streamed_attempts or after_sequence >= 1:
        return None
    return job_service_pb2.TokenChunk(
        sequence=1,
        text=job.output,
        token_count=job.usage.completion_tokens,
        attempt=attempt,
    )
