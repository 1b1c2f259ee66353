"""broker_bridge.submit_stream: answers by ref in completion order, a bounded number in
flight, one job's error as its answer, and no task left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from broker_bridge.submit_stream import answer_stream
from fleetwire.v1 import job_pb2, job_service_pb2


def request(ref: int, prompt: str) -> job_service_pb2.SubmitStreamRequest:
    return job_service_pb2.SubmitStreamRequest(
        ref=ref, submit=job_service_pb2.SubmitRequest(job=job_pb2.JobSpec(prompt=prompt))
    )


async def sent(*requests: job_service_pb2.SubmitStreamRequest) -> AsyncIterator[object]:
    for item in requests:
        yield item


def error_of(err: Exception) -> job_service_pb2.SubmitStreamError:
    return job_service_pb2.SubmitStreamError(code=3, message=str(err))


async def test_answers_go_out_as_they_finish_each_under_its_ref() -> None:
    async def submit_one(r: job_service_pb2.SubmitRequest) -> job_service_pb2.SubmitResponse:
        await asyncio.sleep(float(r.job.prompt))
        return job_service_pb2.SubmitResponse(job=job_pb2.Job(job_id=r.job.prompt))

    answers = [
        a
        async for a in answer_stream(
            sent(request(1, "0.05"), request(2, "0.0"), request(3, "0.02")),  # type: ignore[arg-type]
            submit_one,
            error_of,
        )
    ]
    assert [(a.ref, a.accepted.job.job_id) for a in answers] == [
        (2, "0.0"),
        (3, "0.02"),
        (1, "0.05"),
    ]


async def test_an_error_answers_its_request_and_the_stream_goes_on() -> None:
    async def submit_one(r: job_service_pb2.SubmitRequest) -> job_service_pb2.SubmitResponse:
        if r.job.prompt == "bad":
            raise ValueError("refused")
        return job_service_pb2.SubmitResponse()

    answers = {
        a.ref: a
        async for a in answer_stream(
            sent(request(1, "bad"), request(2, "good")),  # type: ignore[arg-type]
            submit_one,
            error_of,
        )
    }
    assert answers[1].error.message == "refused"
    assert answers[2].HasField("accepted")


async def test_no_more_than_the_limit_is_in_flight() -> None:
    running = peak = 0

    async def submit_one(r: job_service_pb2.SubmitRequest) -> job_service_pb2.SubmitResponse:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return job_service_pb2.SubmitResponse()

    requests = [request(i, "x") for i in range(50)]
    answers = [
        a
        async for a in answer_stream(sent(*requests), submit_one, error_of, limit=4)  # type: ignore[arg-type]
    ]
    assert len(answers) == 50
    assert peak == 4


async def test_a_broken_request_stream_ends_the_stream_with_its_error() -> None:
    async def broken() -> AsyncIterator[job_service_pb2.SubmitStreamRequest]:
        yield request(1, "x")
        raise ConnectionError("gone")

    async def submit_one(r: job_service_pb2.SubmitRequest) -> job_service_pb2.SubmitResponse:
        await asyncio.sleep(10)
        return job_service_pb2.SubmitResponse()

    with pytest.raises(ConnectionError):
        async for _ in answer_stream(broken(), submit_one, error_of):
            pass


async def test_closing_the_stream_cancels_the_jobs_in_flight() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def submit_one(r: job_service_pb2.SubmitRequest) -> job_service_pb2.SubmitResponse:
        if r.job.prompt == "slow":
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return job_service_pb2.SubmitResponse()

    stream = answer_stream(
        sent(request(1, "slow"), request(2, "fast")),  # type: ignore[arg-type]
        submit_one,
        error_of,
    )
    first = await anext(stream)
    assert first.ref == 2
    await started.wait()
    await stream.aclose()
    assert cancelled.is_set()
