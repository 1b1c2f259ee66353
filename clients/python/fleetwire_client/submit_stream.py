"""Concurrent submits of one client on one ``SubmitStream`` call (see
``protos/fleetwire/v1/job_service.proto``).

Each ``submit`` writes one request with a reference of its own and waits for the answer
with that reference; a reader task owned by the stream hands answers to their callers. The
stream is opened on first use and again after it broke. When it breaks, every submit still
waiting gets ``Unavailable`` (or the stream's own error), which the client's retry policy
retries with the same ``client_request_id`` — so a job accepted just before the break is
answered, not doubled. A bridge without SubmitStream (UNIMPLEMENTED) makes ``available``
false, and the client goes back to one Submit call per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import grpc
import grpc.aio
from google.rpc import status_pb2

from fleetwire.v1 import job_service_pb2, job_service_pb2_grpc
from fleetwire_client.errors import (
    DeadlineExceeded,
    FleetwireError,
    Unavailable,
    error_from_rpc,
    error_from_status,
)


class SubmitStream:
    """``submit`` from any number of tasks; ``close`` ends the stream (idempotent)."""

    def __init__(
        self, stub: job_service_pb2_grpc.JobServiceStub, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._refs = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[job_service_pb2.SubmitStreamResponse]] = {}
        self._call: Any = None  # grpc.aio.StreamStreamCall
        self._reader: asyncio.Task[None] | None = None
        self._opening = asyncio.Lock()
        self._writing = asyncio.Lock()  # grpc.aio takes one write at a time
        self.available = True

    async def submit(
        self, request: job_service_pb2.SubmitRequest, within: float | None
    ) -> job_service_pb2.SubmitResponse:
        """The job, or the typed error the bridge answered for it; Unavailable when the
        stream broke before its answer, DeadlineExceeded after ``within`` seconds."""
        call = await self._open()
        ref = next(self._refs)
        answer: asyncio.Future[job_service_pb2.SubmitStreamResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting[ref] = answer
        try:
            async with self._writing:
                await call.write(job_service_pb2.SubmitStreamRequest(ref=ref, submit=request))
            response = await asyncio.wait_for(asyncio.shield(answer), within)
        except TimeoutError as err:
            raise DeadlineExceeded(f"no answer on the submit stream within {within}s") from err
        except (grpc.RpcError, asyncio.InvalidStateError) as err:
            raise self._broken(err) from err
        finally:
            self._waiting.pop(ref, None)
        if response.HasField("error"):
            raise error_from_status(
                status_pb2.Status.FromString(response.error.SerializeToString())
            )
        return response.accepted

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._call = self._reader = None

    async def _open(self) -> Any:
        async with self._opening:
            if self._call is None or self._call.done():
                self._call = self._stub.SubmitStream(metadata=self._metadata)
                self._reader = asyncio.create_task(self._read(self._call), name="submit-stream")
            return self._call

    async def _read(self, call: Any) -> None:
        """Hands each answer to its caller until the stream ends; then fails the callers
        still waiting on this stream."""
        error: FleetwireError = Unavailable("the submit stream ended")
        try:
            async for response in call:
                waiter = self._waiting.get(response.ref)
                if waiter is not None and not waiter.done():
                    waiter.set_result(response)
        except grpc.RpcError as err:
            error = self._broken(err)
        finally:
            if self._call is call:
                self._call = None
            for waiter in list(self._waiting.values()):
                if not waiter.done():
                    waiter.set_exception(error)

    def _broken(self, err: BaseException) -> FleetwireError:
        if isinstance(err, grpc.RpcError):
            typed = error_from_rpc(err)
            if typed.code == grpc.StatusCode.UNIMPLEMENTED:
                self.available = False
            return typed
        return Unavailable(f"the submit stream broke: {err}")
