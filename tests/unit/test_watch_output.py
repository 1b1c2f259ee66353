"""broker_bridge.watch_output: when Watch sends a finished job's output from PostgreSQL."""

from __future__ import annotations

import pytest

from broker_bridge.watch_output import WatchCursor, final_attempt, output_chunk
from fleetwire.v1 import job_pb2, job_service_pb2


def succeeded(*, attempts: int = 2, signed: int = 2, output: str = "the answer") -> job_pb2.Job:
    job = job_pb2.Job(
        job_id="j", state=job_pb2.JOB_STATE_SUCCEEDED, attempts=attempts, output=output
    )
    job.usage.completion_tokens = 7
    job.signature.attempt = signed
    return job


def test_the_whole_output_is_chunk_1_of_the_signed_attempt() -> None:
    chunk = output_chunk(succeeded(), streamed_attempts=set(), cursor=WatchCursor())
    assert chunk == job_service_pb2.TokenChunk(
        sequence=1, text="the answer", token_count=7, attempt=2
    )


def test_an_earlier_attempt_in_the_stream_does_not_count() -> None:
    assert output_chunk(succeeded(), streamed_attempts={1}, cursor=WatchCursor()) is not None


def test_none_when_the_stream_carried_the_final_attempt() -> None:
    assert output_chunk(succeeded(), streamed_attempts={1, 2}, cursor=WatchCursor()) is None


@pytest.mark.parametrize("after", [1, 5])
def test_none_for_a_client_resuming_after_a_chunk(after: int) -> None:
    assert (
        output_chunk(succeeded(), streamed_attempts=set(), cursor=WatchCursor(sequence=after))
        is None
    )


@pytest.mark.parametrize(
    "state",
    [job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_EXPIRED],
)
def test_none_unless_succeeded(state: int) -> None:
    job = succeeded()
    job.state = state  # type: ignore[assignment]
    assert output_chunk(job, streamed_attempts=set(), cursor=WatchCursor()) is None


def test_none_for_an_empty_output() -> None:
    job = succeeded(output="")
    assert output_chunk(job, streamed_attempts=set(), cursor=WatchCursor()) is None


def test_final_attempt_is_the_signed_one_else_the_last_started() -> None:
    assert final_attempt(succeeded(attempts=3, signed=2)) == 2
    assert final_attempt(job_pb2.Job(attempts=3)) == 3


def test_a_cursor_in_an_earlier_attempt_lets_the_retry_output_through() -> None:
    cursor = WatchCursor(attempt=1, sequence=5)
    assert output_chunk(succeeded(), streamed_attempts=set(), cursor=cursor) is not None


def test_a_cursor_in_the_final_attempt_holds_the_output_back() -> None:
    cursor = WatchCursor(attempt=2, sequence=1)
    assert output_chunk(succeeded(), streamed_attempts=set(), cursor=cursor) is None


@pytest.mark.parametrize(
    ("cursor", "attempt", "sequence", "passes"),
    [
        (WatchCursor(), 1, 1, True),
        (WatchCursor(sequence=3), 2, 3, False),  # older clients: the sequence alone
        (WatchCursor(sequence=3), 2, 4, True),
        (WatchCursor(attempt=1, sequence=3), 1, 3, False),
        (WatchCursor(attempt=1, sequence=3), 1, 4, True),
        (WatchCursor(attempt=1, sequence=3), 2, 1, True),  # a retry's first chunk
        (WatchCursor(attempt=2, sequence=1), 1, 9, False),  # an earlier attempt
    ],
)
def test_a_chunk_passes_the_cursor_when_it_comes_after_it(
    cursor: WatchCursor, attempt: int, sequence: int, passes: bool
) -> None:
    assert cursor.passes(attempt, sequence) is passes
