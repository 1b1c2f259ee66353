"""Helpers for bridge tests: extra in-process bridge replicas with their own settings (on
this run's services), API keys, and reading google.rpc details off an error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from broker_bridge.server import BridgeServer
from fleetwire.process.settings import Settings
from fleetwire.v1 import job_pb2, job_service_pb2_grpc


def with_bridge(settings: Settings, **bridge: Any) -> Settings:
    """``settings`` with bridge fields replaced (and port 0: any free port)."""
    group = settings.bridge.model_copy(update={"port": 0, **bridge})
    return settings.model_copy(update={"bridge": group})


@asynccontextmanager
async def running_bridge(settings: Settings) -> AsyncIterator[BridgeServer]:
    server = BridgeServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=1)


@asynccontextmanager
async def stub_of(server: BridgeServer) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def spec(
    prompt: str = "hi",
    *,
    model: str = "tiny-llama",
    priority: int = job_pb2.PRIORITY_CLASS_NORMAL,
    request_id: str = "",
    mode: int = job_pb2.INFERENCE_MODE_POLLING,
) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        model=model,
        prompt=prompt,
        priority=priority,
        mode=mode,
        client_request_id=request_id,
        sampling=job_pb2.SamplingParams(max_tokens=4),
    )


def details(error: grpc.aio.AioRpcError) -> dict[str, pb_message.Message]:
    """The google.rpc details of ``error`` by type name (ErrorInfo, RetryInfo, ...)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: dict[str, pb_message.Message] = {}
    if status is None:
        return found
    for detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.QuotaFailure,
            error_details_pb2.BadRequest,
        ):
            if detail.Is(kind.DESCRIPTOR):
                unpacked = kind()
                detail.Unpack(unpacked)
                found[kind.__name__] = unpacked
    return found


def reason_of(error: grpc.aio.AioRpcError) -> str:
    info = details(error).get("ErrorInfo")
    return info.reason if isinstance(info, error_details_pb2.ErrorInfo) else ""
