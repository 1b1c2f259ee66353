"""Many idle nodes from one process, at the protocol level: each opens a NodeStream, does
the real handshake (Hello, signed Auth, Welcome) with its own ed25519 key and then only
heartbeats. Used to measure the scheduler's memory per connected idle node."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from nacl.signing import SigningKey

from bench.processes import IDLE_MODEL
from fleetwire.protocol import signing
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import job_pb2, node_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2

STREAMS_PER_CHANNEL = 100  # the bench meshes allow 1,000 streams per connection
HANDSHAKES_AT_ONCE = 50


class IdleFleet:
    """``start`` connects ``count`` nodes (returns when all are welcomed); ``stop`` closes
    them."""

    def __init__(self, address: str, count: int, prefix: str = "idle") -> None:
        self._address = address
        self._count = count
        self._prefix = prefix
        self._channels: list[grpc.aio.Channel] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.welcomed = 0

    async def start(self, within: float = 180.0) -> None:
        channels = (self._count + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL
        self._channels = [
            grpc.aio.insecure_channel(self._address, options=CLIENT_OPTIONS)
            for _ in range(channels)
        ]
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        ready = [asyncio.Event() for _ in range(self._count)]
        for i in range(self._count):
            channel = self._channels[i // STREAMS_PER_CHANNEL]
            self._tasks.append(asyncio.create_task(self._node(i, channel, gate, ready[i])))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready)), within)

    async def _node(
        self, index: int, channel: grpc.aio.Channel, gate: asyncio.Semaphore, ready: asyncio.Event
    ) -> None:
        key = SigningKey.generate()
        node_id = f"{self._prefix}-{index:05d}"
        public = bytes(key.verify_key)
        call: Any = node_service_pb2_grpc.NodeServiceStub(channel).NodeStream()
        async with gate:
            await call.write(
                nodes_pb2.NodeStreamRequest(
                    hello=nodes_pb2.Hello(
                        node_id=node_id,
                        public_key=public,
                        agent_version="bench-idle",
                        networks=[job_pb2.NETWORK_MAINNET],
                        models=[nodes_pb2.ServedModel(name=IDLE_MODEL, runtime="bench", slots=1)],
                        slots=1,
                        region="local",
                    )
                )
            )
            challenge = (await call.read()).challenge
            signed = signing.node_auth_bytes(
                challenge.nonce, challenge.scheduler_id, node_id, public
            )
            await call.write(
                nodes_pb2.NodeStreamRequest(
                    auth=nodes_pb2.Auth(signature=signing.sign(key, signed))
                )
            )
            welcome = await call.read()
            if welcome is grpc.aio.EOF or welcome.WhichOneof("message") != "welcome":
                raise ConnectionError(f"{node_id}: no Welcome")
        self.welcomed += 1
        ready.set()
        interval = welcome.welcome.heartbeat_interval.ToTimedelta().total_seconds() or 2.0
        while True:
            await asyncio.sleep(interval)
            await call.write(
                nodes_pb2.NodeStreamRequest(heartbeat=nodes_pb2.Heartbeat(free_slots=1))
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()
