"""The node agent: one long-lived NodeStream to the scheduler, reconnected with backoff.

Per connection: Hello → (Challenge) → Auth → (Welcome), then a heartbeat task and a read
loop that starts one task per Dispatch. If the stream drops, jobs of that session are
aborted (the scheduler has already put them back in the queue) and the agent reconnects.
Shutdown (``drain``): announce Draining, refuse new work, let running jobs finish (up to
the grace period), close the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import grpc
import structlog
from nacl.signing import SigningKey

from fleetwire import __version__, signing
from fleetwire.grpc_options import CLIENT_OPTIONS
from fleetwire.settings import NodeSettings
from fleetwire.topology import NETWORK_NAMES
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from fleetwire.v1 import node_service_pb2_grpc
from node.capabilities import detect_gpus
from node.runner import JobRunner, RunningJob
from node.vllm_runtime import VllmRuntime

log = structlog.get_logger(__name__)

NETWORK_VALUES: dict[str, Any] = {name: value for value, name in NETWORK_NAMES.items()}


class HandshakeRefused(Exception):
    """The scheduler refused the node (unknown or mismatched key); retrying will not help."""


class NodeAgent:
    """``run`` until ``drain`` (or a refused handshake); owns every task it starts."""

    def __init__(self, settings: NodeSettings, key: SigningKey, runtime: VllmRuntime) -> None:
        self._settings = settings
        self._key = key
        self._runtime = runtime
        self._runner = JobRunner(settings.node_id, key, runtime)
        self._jobs: dict[tuple[str, int], RunningJob] = {}
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = asyncio.Event()
        self.connected = asyncio.Event()

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def hello(self) -> nodes_pb2.Hello:
        s = self._settings
        return nodes_pb2.Hello(
            node_id=s.node_id,
            public_key=self.public_key,
            agent_version=__version__,
            networks=[NETWORK_VALUES[n] for n in s.networks if n in NETWORK_VALUES],
            models=[
                nodes_pb2.ServedModel(
                    name=s.model_name,
                    version=s.model_version,
                    runtime="vllm",
                    max_model_len=self._runtime.max_model_len,
                )
            ],
            gpus=detect_gpus(),
            region=s.region,
            slots=self._runtime.max_concurrency,
        )

    async def run(self) -> None:
        """Connects and serves; reconnects with exponential backoff and jitter."""
        delay = 0.5
        while not self._draining.is_set():
            try:
                await self._session()
                delay = 0.5
            except HandshakeRefused:
                raise
            except (grpc.RpcError, ConnectionError, OSError) as err:
                code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
                if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    raise HandshakeRefused(
                        str(err.details() if isinstance(err, grpc.aio.AioRpcError) else err)
                    ) from err
                log.warning("stream lost", error=str(code or err))
            finally:
                self.connected.clear()
                await self._abort_all("stream lost")
            if self._draining.is_set():
                break
            sleep = min(delay, self._settings.reconnect_max_delay.total_seconds())
            await asyncio.sleep(sleep * random.uniform(0.5, 1.0))
            delay *= 2
        self._stopped.set()

    async def drain(self, grace: float) -> None:
        """Stops accepting, waits up to ``grace`` seconds for running jobs, then aborts the
        rest and lets ``run`` return."""
        self._draining.set()
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        if tasks:
            log.info("draining", running=len(tasks))
            await asyncio.wait(tasks, timeout=grace)
        await self._abort_all("node shutting down")

    async def _abort_all(self, reason: str) -> None:
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancelled = True
            with contextlib.suppress(Exception):
                await self._runtime.abort(job.request_id)
            if job.task is not None:
                job.task.cancel()
        await asyncio.gather(*(j.task for j in jobs if j.task is not None), return_exceptions=True)
        if jobs:
            log.info("aborted jobs", count=len(jobs), reason=reason)

    async def _session(self) -> None:
        async with grpc.aio.insecure_channel(
            self._settings.scheduler_address, options=CLIENT_OPTIONS
        ) as channel:
            stub = node_service_pb2_grpc.NodeServiceStub(channel)
            call = stub.NodeStream()
            write_lock = asyncio.Lock()

            async def send(message: nodes_pb2.NodeStreamRequest) -> None:
                async with write_lock:
                    await call.write(message)

            welcome = await self._handshake(call, send)
            self.connected.set()
            log.info(
                "connected", scheduler=self._settings.scheduler_address, session=welcome.session_id
            )
            interval = welcome.heartbeat_interval.ToTimedelta().total_seconds() or 2.0
            async with asyncio.TaskGroup() as tasks:
                heartbeat = tasks.create_task(self._heartbeat(send, interval))
                drain_watch = tasks.create_task(self._announce_drain(send, call))
                try:
                    await self._read_loop(call, send)
                finally:
                    heartbeat.cancel()
                    drain_watch.cancel()

    async def _handshake(self, call: Any, send: Any) -> nodes_pb2.Welcome:
        await send(nodes_pb2.NodeStreamRequest(hello=self.hello()))
        challenge = await call.read()
        if challenge is grpc.aio.EOF or challenge.WhichOneof("message") != "challenge":
            raise ConnectionError("expected Challenge")
        signed = signing.node_auth_bytes(
            challenge.challenge.nonce,
            challenge.challenge.scheduler_id,
            self._settings.node_id,
            self.public_key,
        )
        await send(
            nodes_pb2.NodeStreamRequest(
                auth=nodes_pb2.Auth(signature=signing.sign(self._key, signed))
            )
        )
        welcome = await call.read()
        if welcome is grpc.aio.EOF or welcome.WhichOneof("message") != "welcome":
            raise ConnectionError("expected Welcome")
        return welcome.welcome  # type: ignore[no-any-return]

    async def _heartbeat(self, send: Any, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            running = len(self._jobs)
            await send(
                nodes_pb2.NodeStreamRequest(
                    heartbeat=nodes_pb2.Heartbeat(
                        free_slots=max(0, self._runtime.max_concurrency - running),
                        running_jobs=running,
                    )
                )
            )

    async def _announce_drain(self, send: Any, call: Any) -> None:
        await self._draining.wait()
        await send(
            nodes_pb2.NodeStreamRequest(draining=nodes_pb2.Draining(running_jobs=len(self._jobs)))
        )
        await self._idle.wait()
        await call.done_writing()

    async def _read_loop(self, call: Any, send: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            kind = message.WhichOneof("message")
            if kind == "dispatch":
                await self._start_job(message.dispatch, send)
            elif kind == "cancel":
                await self._cancel(message.cancel)
            elif kind == "drain":
                log.info("drain requested by the mesh", reason=message.drain.reason)
                self._draining.set()

    async def _start_job(self, dispatch: nodes_pb2.Dispatch, send: Any) -> None:
        key = (dispatch.job_id, dispatch.attempt)
        reject_reason = ""
        if self._draining.is_set():
            reject_reason = "node is draining"
        elif len(self._jobs) >= self._runtime.max_concurrency:
            reject_reason = "no free slot"
        elif key in self._jobs:
            reject_reason = "already running"
        elif not self._runner.digest_matches(dispatch):
            reject_reason = "request digest does not match the spec"
        if reject_reason:
            await send(
                nodes_pb2.NodeStreamRequest(
                    reject=nodes_pb2.Reject(
                        job_id=dispatch.job_id, attempt=dispatch.attempt, reason=reject_reason
                    )
                )
            )
            return
        job = RunningJob(
            job_id=dispatch.job_id,
            attempt=dispatch.attempt,
            request_id=f"{dispatch.job_id}:{dispatch.attempt}",
        )
        self._jobs[key] = job
        self._idle.clear()

        async def accept_and_run() -> None:
            try:
                await send(
                    nodes_pb2.NodeStreamRequest(
                        accept=nodes_pb2.Accept(job_id=job.job_id, attempt=job.attempt)
                    )
                )
                await self._runner.run(job, dispatch, send)
            finally:
                self._jobs.pop(key, None)
                if not self._jobs:
                    self._idle.set()

        job.task = asyncio.create_task(accept_and_run(), name=f"job-{job.request_id}")

    async def _cancel(self, cancel: nodes_pb2.Cancel) -> None:
        job = self._jobs.get((cancel.job_id, cancel.attempt))
        if job is None:
            return
        log.info("cancel requested", job_id=cancel.job_id, reason=cancel.reason)
        job.cancelled = True
        await self._runtime.abort(job.request_id)
