"""broker_bridge.watch_output: when Watch sends a finished job's output from PostgreSQL."""

from __future__ import annotations

import pytest

from broker_bridge.watch_output import final_attempt, output_chunk
from fleetwire.v1 import job_pb2, job_service_pb2


def succeeded(*, attempts: int = 2, signed: int = 2, output: str = "the answer") -> job_pb2.Job:
    job = job_pb2.Job(
        job_id="j", state=job_pb2.JOB_STATE_SUCCEEDED, attempts=attempts, output=output
    )
    job.usage.completion_tokens = 7
    job.signature.attempt = signed
    return job


def test_the_whole_output_is_chunk_1_of_the_signed_attempt() -> None:
    chunk = output_chunk(succeeded(), streamed_attempts=set(), after_sequence=0)
    assert chunk == job_service_pb2.TokenChunk(
        sequence=1, text="the answer", token_count=7, attempt=2
    )


def test_an_earlier_attempt_in_the_stream_does_not_count() -> None:
    assert output_chunk(succeeded(), streamed_attempts={1}, after_sequence=0) is not None


def test_none_when_the_stream_carried_the_final_attempt() -> None:
    assert output_chunk(succeeded(), streamed_attempts={1, 2}, after_sequence=0) is None


@pytest.mark.parametrize("after", [1, 5])
def test_none_for_a_client_resuming_after_a_chunk(after: int) -> None:
    assert output_chunk(succeeded(), streamed_attempts=set(), after_sequence=after) is None


@pytest.mark.parametrize(
    "state",
    [job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_EXPIRED],
)
def test_none_unless_succeeded(state: int) -> None:
    job = succeeded()
    job.state = state  # type: ignore[assignment]
    assert output_chunk(job, streamed_attempts=set(), after_sequence=0) is None


def test_none_for_an_empty_output() -> None:
    job = succeeded(output="")
    assert output_chunk(job, streamed_attempts=set(), after_sequence=0) is None


def test_final_attempt_is_the_signed_one_else_the_last_started() -> None:
    assert final_attempt(succeeded(attempts=3, signed=2)) == 2
    assert final_attempt(job_pb2.Job(attempts=3)) == 3
