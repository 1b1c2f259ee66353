"""SubmitStream's engine: many Submits of one stream in flight at once, each answered by
reference as soon as it is done.

The requests are read while earlier ones are still being accepted, up to ``limit`` in
flight; beyond that the reader waits for answers to go out, so a producer that sends faster
than the mesh accepts is slowed by HTTP/2 flow control rather than buffered without bound.
Each request becomes one task owned by the stream: when the stream ends (the client half-
closes and every answer is out) or breaks (the client goes away, the bridge stops), every
task still running is cancelled and awaited before the generator returns.

What one Submit does, and how its error is told, is the caller's (``submit_one`` and
``error_of``): this module only multiplexes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable

from fleetwire.v1 import job_service_pb2

MAX_IN_FLIGHT = 256
"""Requests of one stream being accepted at once (the proto documents the number)."""

SubmitOne = Callable[[job_service_pb2.SubmitRequest], Awaitable[job_service_pb2.SubmitResponse]]
ErrorOf = Callable[[Exception], job_service_pb2.SubmitStreamError]


async def answer_stream(
    requests: AsyncIterable[job_service_pb2.SubmitStreamRequest],
    submit_one: SubmitOne,
    error_of: ErrorOf,
    *,
    limit: int = MAX_IN_FLIGHT,
) -> AsyncIterator[job_service_pb2.SubmitStreamResponse]:
    """One response per request, in the order they finish. An exception of ``submit_one``
    becomes that request's error answer (``error_of``) and the stream goes on. An error of
    ``requests`` itself (a request that does not decode, a broken connection) ends the
    stream with that error at once: the requests after it are unknown."""
    answers: asyncio.Queue[job_service_pb2.SubmitStreamResponse | _End] = asyncio.Queue()
    slots = asyncio.Semaphore(limit)
    running: set[asyncio.Task[None]] = set()

    async def answer(request: job_service_pb2.SubmitStreamRequest) -> None:
        try:
            accepted = await submit_one(request.submit)
            response = job_service_pb2.SubmitStreamResponse(ref=request.ref, accepted=accepted)
        except Exception as err:  # one job's error is its answer, not the stream's end
            response = job_service_pb2.SubmitStreamResponse(ref=request.ref, error=error_of(err))
        finally:
            slots.release()
        answers.put_nowait(response)

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(answer(request), name="submit-stream-job")
                running.add(task)
                task.add_done_callback(running.discard)
            if running:  # every answer is queued before the end
                await asyncio.wait(set(running))
            answers.put_nowait(_End(None))
        except Exception as err:
            answers.put_nowait(_End(err))

    reader = asyncio.create_task(read(), name="submit-stream-reader")
    try:
        while not isinstance(item := await answers.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        for task in (reader, *running):
            task.cancel()
        await asyncio.gather(reader, *running, return_exceptions=True)


class _End:
    """The last item of the answers: the requests ended (``error`` None) or broke."""

    __slots__ = ("error",)

    def __init__(self, error: Exception | None) -> None:
        self.error = error
