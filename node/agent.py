"""The node agent: one long-lived NodeStream to the scheduler, reconnected with backoff.

Per connection: Hello → (Challenge) → Auth → (Welcome), then a heartbeat task and a read
loop that starts one task per Dispatch. If the stream drops, the agent reconnects with
backoff; running jobs keep running (``keep_jobs_on_reconnect``), are announced in the next
Hello, and their results go out on the next session — or, with that setting off, they are
aborted (the scheduler has already put them back in the queue).

Closing a session gracefully (shutdown, a Drain from the mesh, a key rotation), in order:
announce Draining → refuse new dispatches → let running jobs finish and send their results
→ close our side of the stream → wait for the mesh to end it. ``drain`` does that and then
stops; ``rotate_key`` does that and reconnects at once with the new key (the engines stay
up). Jobs still running when the drain's grace period ends are aborted and handed back
(a retryable ``NODE_SHUTDOWN`` failure), so they finish elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine, Mapping, Sequence
from importlib import metadata
from typing import Any

import grpc
import structlog
from nacl.signing import SigningKey

from fleetwire.messaging.topology import NETWORK_NAMES
from fleetwire.process.settings import NodeSettings
from fleetwire.process.tracing import attached
from fleetwire.protocol import signing
from fleetwire.rpc.stream_writer import StreamWriter
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from fleetwire.v1 import node_service_pb2_grpc
from node.capabilities import detect_gpus, model_version_of
from node.config import NodeProfile
from node.dialer import (
    Dialer,
    HandshakeRefused,
    awaits_approval,
    excluded_for,
    refused_for_good,
)
from node.metrics import NodeMetrics
from node.progress import Send
from node.runner import JobRunner, RunningJob, TokenFlush
from node.runtime import Runtime

log = structlog.get_logger(__name__)

NETWORK_VALUES: dict[str, Any] = {name: value for value, name in NETWORK_NAMES.items()}


AGENT_VERSION = metadata.version("fleetwire")  # sent in Hello, shown by ListNodes
HAND_BACK_TIMEOUT_S = 5.0
"""How long aborted jobs get to send their hand-back Failure before their tasks are cancelled."""


class NodeAgent:
    """``run`` until ``drain`` (or a refused handshake); owns every task it starts."""

    def __init__(
        self,
        settings: NodeSettings,
        key: SigningKey,
        runtimes: Mapping[str, Runtime],
        profile: NodeProfile,
        *,
        gpus: list[nodes_pb2.GpuInfo] | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._key = key
        self._runtimes = dict(runtimes)
        self._profile = profile
        self._gpus = gpus if gpus is not None else detect_gpus()
        self._runner = JobRunner(
            settings.node_id,
            key,
            self._runtimes,
            TokenFlush(
                window=settings.token_flush.total_seconds(),
                max_tokens=settings.token_flush_tokens,
            ),
            metrics,
        )
        self._jobs: dict[tuple[str, int], RunningJob] = {}
        self._draining = asyncio.Event()
        # Set to end the current session gracefully (drain, Drain from the mesh, rotation).
        self._closing = asyncio.Event()
        self._next_key: SigningKey | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = asyncio.Event()
        self.connected = asyncio.Event()
        self.sessions = 0
        """Handshakes completed so far (for logs and tests)."""
        # keep_jobs_on_reconnect: jobs outlive their session; final messages that could not
        # be sent wait here for the next session.
        self._keep_jobs = settings.keep_jobs_on_reconnect
        self._current_send: Send | None = None
        self._undelivered: list[nodes_pb2.NodeStreamRequest] = []
        self._dialer = Dialer(settings)
        if metrics is not None:
            metrics.watch(lambda: self.slots, self._active, lambda: self.sessions)

    @property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    @property
    def slots(self) -> int:
        """Jobs the node runs at once: the sum of its engines' real concurrency."""
        return sum(runtime.max_concurrency for runtime in self._runtimes.values())

    def _active(self, model: str | None = None) -> int:
        """Running jobs that still hold an engine slot (an aborted job frees its slot at
        once, before its task has finished reporting)."""
        return sum(
            1
            for job in self._jobs.values()
            if not job.cancelled and (model is None or job.model == model)
        )

    def hello(self) -> nodes_pb2.Hello:
        p = self._profile
        models = []
        for config in p.models:
            runtime = self._runtimes[config.name]
            models.append(
                nodes_pb2.ServedModel(
                    name=config.name,
                    version=config.version or model_version_of(config.path),
                    runtime="vllm",
                    max_model_len=runtime.max_model_len,
                    price_per_1k_prompt_tokens=config.price_per_1k_prompt_tokens,
                    price_per_1k_completion_tokens=config.price_per_1k_completion_tokens,
                    slots=runtime.max_concurrency,
                )
            )
        return nodes_pb2.Hello(
            node_id=self._settings.node_id,
            public_key=self.public_key,
            agent_version=AGENT_VERSION,
            networks=[NETWORK_VALUES[n] for n in p.networks if n in NETWORK_VALUES],
            models=models,
            gpus=self._gpus,
            region=p.region,
            subclouds=list(p.subclouds),
            slots=self.slots,
            running_jobs=self._carried_over(),
            takes_batches=True,
        )

    def _carried_over(self) -> list[nodes_pb2.JobRef]:
        """Jobs from an earlier session that the mesh may re-attach: those still running
        and those finished while disconnected (their outcome follows Welcome). Empty
        unless ``keep_jobs_on_reconnect``: otherwise a lost stream aborts its jobs."""
        if not self._keep_jobs:
            return []
        refs = {(job.job_id, job.attempt) for job in self._jobs.values()}
        for message in self._undelivered:
            body = getattr(message, message.WhichOneof("message") or "", None)
            if body is not None:
                refs.add((body.job_id, body.attempt))
        return [nodes_pb2.JobRef(job_id=j, attempt=a) for j, a in sorted(refs)]

    async def run(self) -> None:
        """Connects and serves; reconnects with exponential backoff and jitter."""
        delay = 0.5
        try:
            while not self._draining.is_set():
                if self._next_key is not None:
                    self._use_key(self._next_key)
                self._closing.clear()
                try:
                    await self._session()
                    delay = 0.5
                except (grpc.RpcError, ConnectionError, OSError) as err:
                    details = err.details() if isinstance(err, grpc.aio.AioRpcError) else ""
                    excluded = excluded_for(err) if isinstance(err, grpc.RpcError) else None
                    if isinstance(err, grpc.RpcError) and awaits_approval(err):
                        # Admission takes an operator: keep asking, at the longest back-off.
                        log.warning("waiting for an operator's approval", detail=details)
                        delay = self._settings.reconnect_max_delay.total_seconds()
                    elif excluded is not None:
                        # The scheduler said for how long; dial again when that is over.
                        log.warning("excluded by the scheduler", detail=details, seconds=excluded)
                        delay = excluded
                    elif isinstance(err, grpc.RpcError) and refused_for_good(err):
                        raise HandshakeRefused(str(details or err)) from err
                    else:
                        code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
                        log.warning("stream lost", error=str(code or err))
                finally:
                    self.connected.clear()
                    self._current_send = None
                    if not self._keep_jobs:
                        await self._abort_all("stream lost", hand_back=False)
                    elif self._jobs:
                        log.info("stream lost; jobs keep running", running=len(self._jobs))
                if self._draining.is_set():
                    break
                if self._next_key is not None:
                    continue  # a rotation closed the session: reconnect at once
                sleep = min(delay, self._settings.reconnect_max_delay.total_seconds())
                with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                    async with asyncio.timeout(sleep * random.uniform(0.5, 1.0)):
                        await self._draining.wait()
                delay *= 2
        finally:
            self._stopped.set()

    async def drain(self, grace: float) -> None:
        """Stops accepting, waits up to ``grace`` seconds for running jobs, then aborts the
        rest, handing them back to the mesh as retryable, and lets ``run`` return."""
        self._draining.set()
        self._closing.set()
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        if tasks and grace > 0:
            log.info("draining", running=len(tasks), grace_s=grace)
            await asyncio.wait(tasks, timeout=grace)
        await self._abort_all("node shutting down", hand_back=True)

    def rotate_key(self, key: SigningKey) -> None:
        """Switches to ``key`` without losing a job: the current session drains (running
        jobs finish and are signed with the old key, which the mesh verified for this
        session), then the node reconnects at once with ``key``."""
        if bytes(key.verify_key) == self.public_key:
            log.info("key unchanged; nothing to rotate")
            return
        self._next_key = key
        self._closing.set()
        log.info("key rotation: draining this session", running=len(self._jobs))

    def _use_key(self, key: SigningKey) -> None:
        old = signing.key_id(self.public_key)
        self._key = key
        self._runner.key = key
        self._next_key = None
        log.info("key rotated", old_key_id=old, key_id=signing.key_id(self.public_key))

    async def _abort_all(self, reason: str, *, hand_back: bool) -> None:
        """Aborts every running job. With ``hand_back`` (the stream is still open) each job
        first reports a retryable NODE_SHUTDOWN failure; otherwise their tasks are cancelled
        at once (the mesh has already put them back)."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancelled = True
            job.hand_back = hand_back
            runtime = self._runtimes.get(job.model)
            if runtime is not None:
                with contextlib.suppress(Exception):
                    await runtime.abort(job.request_id)
        tasks = [j.task for j in jobs if j.task is not None]
        if hand_back and tasks:
            await asyncio.wait(tasks, timeout=HAND_BACK_TIMEOUT_S)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if jobs:
            log.info("aborted jobs", count=len(jobs), reason=reason, handed_back=hand_back)

    async def _session(self) -> None:
        async with self._dialer.channel() as channel:
            stub = node_service_pb2_grpc.NodeServiceStub(channel)
            call = stub.NodeStream()
            writer: StreamWriter[nodes_pb2.NodeStreamRequest] = StreamWriter(
                call.write, name="node-stream-writes"
            )
            send = writer.send
            welcome = await self._handshake(call, send)
            if welcome.takes_batches:
                writer.batch_with(_request_batch)
            self.sessions += 1
            self.connected.set()
            log.info(
                "connected",
                scheduler=self._settings.scheduler_address,
                session=welcome.session_id,
                key_id=signing.key_id(self.public_key),
                slots=self.slots,
            )
            interval = welcome.heartbeat_interval.ToTimedelta().total_seconds() or 2.0
            self._current_send = send
            await self._deliver_held_over(send)
            # Side tasks are owned here rather than by a TaskGroup: a TaskGroup would wrap a
            # broken stream's RpcError from the read loop in an ExceptionGroup, which ``run``
            # must see as a plain RpcError to reconnect.
            side_tasks = [
                asyncio.create_task(_logged(self._heartbeat(send, interval))),
                asyncio.create_task(_logged(self._announce_drain(send, call))),
            ]
            try:
                await self._read_loop(call, send)
            finally:
                for task in side_tasks:
                    task.cancel()
                await asyncio.gather(*side_tasks, return_exceptions=True)

    async def _deliver_held_over(self, send: Send) -> None:
        """Sends the results and failures of jobs that finished while disconnected."""
        held, self._undelivered = self._undelivered, []
        for message in held:
            await send(message)
        if held:
            log.info("delivered results held over a reconnect", count=len(held))

    async def _send_surviving(self, message: nodes_pb2.NodeStreamRequest) -> None:
        """A job's sender when jobs outlive their session: writes to the current session;
        while there is none, keeps final messages (Result, Failure) for the next one and
        drops the rest (Accept, Progress)."""
        send = self._current_send
        if send is not None:
            try:
                await send(message)
                return
            except (grpc.RpcError, asyncio.InvalidStateError, ConnectionError):
                pass
        if message.WhichOneof("message") in ("result", "failure"):
            self._undelivered.append(message)

    async def _handshake(self, call: Any, send: Any) -> nodes_pb2.Welcome:
        await send(nodes_pb2.NodeStreamRequest(hello=self.hello()))
        challenge = await call.read()
        if challenge is grpc.aio.EOF or challenge.WhichOneof("message") != "challenge":
            raise ConnectionError("expected Challenge")
        # The name this channel verified the scheduler's certificate for: a relay that
        # passed us another scheduler's challenge gets an answer naming the relay.
        signed = signing.node_auth_bytes(
            challenge.challenge.nonce,
            challenge.challenge.scheduler_id,
            self._settings.node_id,
            self.public_key,
            self._dialer.server_name,
        )
        auth = nodes_pb2.Auth(
            signature=signing.sign(self._key, signed), server_name=self._dialer.server_name
        )
        await send(nodes_pb2.NodeStreamRequest(auth=auth))
        welcome = await call.read()
        if welcome is grpc.aio.EOF or welcome.WhichOneof("message") != "welcome":
            raise ConnectionError("expected Welcome")
        return welcome.welcome  # type: ignore[no-any-return]

    async def _heartbeat(self, send: Any, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            free = 0 if self._closing.is_set() else self._free_slots()
            await send(
                nodes_pb2.NodeStreamRequest(
                    heartbeat=nodes_pb2.Heartbeat(free_slots=free, running_jobs=len(self._jobs))
                )
            )

    def _free_slots(self) -> int:
        return sum(
            max(0, runtime.max_concurrency - self._active(name))
            for name, runtime in self._runtimes.items()
        )

    async def _announce_drain(self, send: Any, call: Any) -> None:
        await self._closing.wait()
        await send(
            nodes_pb2.NodeStreamRequest(draining=nodes_pb2.Draining(running_jobs=len(self._jobs)))
        )
        await self._idle.wait()
        log.info("session drained; closing the stream")
        await call.done_writing()

    async def _read_loop(self, call: Any, send: Any) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            if message.WhichOneof("message") == "batch":
                for inner in message.batch.messages:
                    await self._handle(inner, send)
            else:
                await self._handle(message, send)

    async def _handle(self, message: nodes_pb2.NodeStreamResponse, send: Any) -> None:
        kind = message.WhichOneof("message")
        if kind == "dispatch":
            await self._start_job(message.dispatch, send)
        elif kind == "cancel":
            await self._cancel(message.cancel)
        elif kind == "drain":
            log.info("drain requested by the mesh", reason=message.drain.reason)
            self._draining.set()
            self._closing.set()

    async def _start_job(self, dispatch: nodes_pb2.Dispatch, send: Any) -> None:
        key = (dispatch.job_id, dispatch.attempt)
        model = dispatch.spec.model
        runtime = self._runtimes.get(model)
        reject_reason = ""
        if self._closing.is_set():
            reject_reason = "node is draining"
        elif runtime is None:
            reject_reason = f"model {model!r} is not served here"
        elif self._active(model) >= runtime.max_concurrency:
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
            model=model,
        )
        self._jobs[key] = job
        self._idle.clear()
        if self._keep_jobs:
            send = self._send_surviving

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
        with attached(job.trace):
            log.info("cancel requested", job_id=cancel.job_id, reason=cancel.reason)
        job.cancelled = True
        runtime = self._runtimes.get(job.model)
        if runtime is not None:
            await runtime.abort(job.request_id)


def _request_batch(
    messages: Sequence[nodes_pb2.NodeStreamRequest],
) -> nodes_pb2.NodeStreamRequest:
    return nodes_pb2.NodeStreamRequest(batch=nodes_pb2.NodeStreamRequestBatch(messages=messages))


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    """Runs a session's side task; a failed write (the stream broke) is logged, not raised:
    the read loop notices the broken stream and ends the session."""
    try:
        await work
    except (grpc.RpcError, asyncio.InvalidStateError, ConnectionError) as err:
        log.info("stream write failed", error=str(err))
