"""A protocol-level node for fault tests: it speaks the real NodeStream protocol with a real
key (handshake, heartbeats) and answers each Dispatch as a script says — a retryable
failure, a forged signature, or a correctly signed result — and a test can make it send
anything else (``send``), e.g. a signed result it was never asked for. It stands in for a
misbehaving node, which a real vLLM node cannot be made to be; it is never used where a
real node's behaviour is under test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from nacl.signing import SigningKey

from fleetwire.protocol import signing
from fleetwire.v1 import job_pb2, node_service_pb2_grpc
from fleetwire.v1 import node_service_pb2 as nodes_pb2

# A script maps the dispatch count (1-based, over the node's life) to an answer.
Answer = str  # "ok" | "fail-retryable" | "fail-final" | "bad-signature" | "reject" | "cancelled"


@dataclass
class ScriptedNode:
    address: str
    node_id: str
    model: str
    script: Callable[[int], Answer]
    key: SigningKey = field(default_factory=SigningKey.generate)
    region: str = "local"
    networks: list[int] = field(default_factory=lambda: [job_pb2.NETWORK_MAINNET])
    subclouds: list[str] = field(default_factory=list)
    work_time: float = 0.0  # seconds each answer takes, to keep the node busy
    hold_results: bool = False  # keep outcomes in ``held`` instead of sending them
    held: list[nodes_pb2.NodeStreamRequest] = field(default_factory=list)
    # Announced in Hello as still running, and sent right after Welcome (a reconnect).
    announce: list[tuple[str, int]] = field(default_factory=list)
    deliver_after_welcome: list[nodes_pb2.NodeStreamRequest] = field(default_factory=list)
    dispatches: list[nodes_pb2.Dispatch] = field(default_factory=list)
    # How a dishonest node shapes its results: given the dispatch and the node, the Result
    # to send instead of the honest one (``signed_result`` signs whatever counts it is given).
    lie: Callable[[ScriptedNode, nodes_pb2.Dispatch], nodes_pb2.Result] | None = None
    # Progress texts to stream before the outcome (none by default).
    stream: Callable[[nodes_pb2.Dispatch], list[str]] | None = None
    # Every Result it wrote on the stream, so a test can replay one.
    results: list[nodes_pb2.Result] = field(default_factory=list)
    # Batches (NodeStreamRequest.batch / NodeStreamResponse.batch): offered in Hello; when
    # the Welcome takes them too, each answer (Accept, Progress..., outcome) is one batch.
    batched: bool = False
    slots: int = 1
    batches_received: int = 0
    batches_sent: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _batching: bool = False
    _write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _call: grpc.aio.StreamStreamCall | None = None  # type: ignore[type-arg]

    async def send(self, message: nodes_pb2.NodeStreamRequest) -> None:
        """Writes any message on the live stream: how a test makes the node misbehave
        (a result it was never asked for, a replayed one)."""
        assert self._call is not None, "not connected"
        await self._write(self._call, message)

    async def _serve(self) -> None:
        async with grpc.aio.insecure_channel(self.address) as channel:
            call = node_service_pb2_grpc.NodeServiceStub(channel).NodeStream()
            public = bytes(self.key.verify_key)
            await call.write(
                nodes_pb2.NodeStreamRequest(
                    hello=nodes_pb2.Hello(
                        node_id=self.node_id,
                        public_key=public,
                        networks=self.networks,
                        models=[nodes_pb2.ServedModel(name=self.model, runtime="scripted")],
                        slots=self.slots,
                        region=self.region,
                        subclouds=self.subclouds,
                        running_jobs=[
                            nodes_pb2.JobRef(job_id=job_id, attempt=attempt)
                            for job_id, attempt in self.announce
                        ],
                        takes_batches=self.batched,
                    )
                )
            )
            challenge = (await call.read()).challenge
            signed = signing.node_auth_bytes(
                challenge.nonce, challenge.scheduler_id, self.node_id, public
            )
            await call.write(
                nodes_pb2.NodeStreamRequest(
                    auth=nodes_pb2.Auth(signature=signing.sign(self.key, signed))
                )
            )
            welcome = await call.read()
            assert welcome.WhichOneof("message") == "welcome"
            self._batching = self.batched and welcome.welcome.takes_batches
            self._call = call
            self.connected.set()
            for pending in self.deliver_after_welcome:
                await self._write(call, pending)
            heartbeat = asyncio.create_task(self._heartbeat(call))
            try:
                while True:
                    message = await call.read()
                    if message is grpc.aio.EOF:
                        return
                    inner = [message]
                    if message.WhichOneof("message") == "batch":
                        self.batches_received += 1
                        inner = list(message.batch.messages)
                    for one in inner:
                        if one.WhichOneof("message") == "dispatch":
                            await self._answer(call, one.dispatch)
            finally:
                heartbeat.cancel()

    async def _write(
        self,
        call: grpc.aio.StreamStreamCall,  # type: ignore[type-arg]
        message: nodes_pb2.NodeStreamRequest,
    ) -> None:
        """One write at a time: grpc.aio does not allow concurrent writes on a stream (the
        heartbeat task and the answers would otherwise collide and stall the node)."""
        async with self._write_lock:
            await call.write(message)

    async def _heartbeat(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        while True:
            await asyncio.sleep(1)
            await self._write(call, nodes_pb2.NodeStreamRequest(heartbeat=nodes_pb2.Heartbeat()))

    async def _answer(self, call: grpc.aio.StreamStreamCall, dispatch: nodes_pb2.Dispatch) -> None:  # type: ignore[type-arg]
        """Answers as scripted: message by message, or (batching) all in one batch."""
        pending: list[nodes_pb2.NodeStreamRequest] = []

        async def emit(message: nodes_pb2.NodeStreamRequest) -> None:
            if self._batching:
                pending.append(message)
            else:
                await self._write(call, message)

        try:
            await self._answer_with(emit, dispatch)
        finally:
            if pending:
                self.batches_sent += 1
                batch = nodes_pb2.NodeStreamRequestBatch(messages=pending)
                await self._write(call, nodes_pb2.NodeStreamRequest(batch=batch))

    async def _answer_with(
        self,
        emit: Callable[[nodes_pb2.NodeStreamRequest], Awaitable[None]],
        dispatch: nodes_pb2.Dispatch,
    ) -> None:
        self.dispatches.append(dispatch)
        answer = self.script(len(self.dispatches))
        if answer == "reject":
            reject = nodes_pb2.Reject(
                job_id=dispatch.job_id, attempt=dispatch.attempt, reason="SCRIPTED_REJECT"
            )
            await emit(nodes_pb2.NodeStreamRequest(reject=reject))
            return
        await emit(
            nodes_pb2.NodeStreamRequest(
                accept=nodes_pb2.Accept(job_id=dispatch.job_id, attempt=dispatch.attempt)
            )
        )
        await asyncio.sleep(self.work_time)
        for sequence, text in enumerate(self.stream(dispatch) if self.stream else (), start=1):
            progress = nodes_pb2.Progress(
                job_id=dispatch.job_id,
                attempt=dispatch.attempt,
                sequence=sequence,
                text=text,
                token_count=1,
            )
            await emit(nodes_pb2.NodeStreamRequest(progress=progress))
        if answer == "cancelled":  # a cancel nobody asked for
            failure = nodes_pb2.Failure(
                job_id=dispatch.job_id, attempt=dispatch.attempt, reason="CANCELLED"
            )
            await self._send_outcome(emit, nodes_pb2.NodeStreamRequest(failure=failure))
            return
        if answer.startswith("fail"):
            await self._send_outcome(
                emit,
                nodes_pb2.NodeStreamRequest(
                    failure=nodes_pb2.Failure(
                        job_id=dispatch.job_id,
                        attempt=dispatch.attempt,
                        reason="SCRIPTED_FAILURE",
                        message="as scripted",
                        retryable=answer == "fail-retryable",
                    )
                ),
            )
            return
        result = self.lie(self, dispatch) if self.lie else self.signed_result(dispatch)
        if answer == "bad-signature":
            result.signature = bytes(64)
        await self._send_outcome(emit, nodes_pb2.NodeStreamRequest(result=result))

    def signed_result(
        self,
        dispatch: nodes_pb2.Dispatch,
        *,
        job_id: str = "",
        attempt: int = 0,
        output: str = "",
        prompt_tokens: int = 3,
        completion_tokens: int = 3,
    ) -> nodes_pb2.Result:
        """A Result for ``dispatch`` correctly signed with this node's key and id, or for
        ``job_id``/``attempt`` instead of the dispatch's (signed for those, so only the
        scheduler's bookkeeping can tell it was never asked for)."""
        job_id = job_id or dispatch.job_id
        attempt = attempt or dispatch.attempt
        output = output or f"scripted output {attempt}"
        finished = int(time.time() * 1000)
        facts = signing.ResultFacts(
            job_id=job_id,
            attempt=attempt,
            node_id=self.node_id,
            model=dispatch.spec.model,
            request_digest=bytes(dispatch.request_digest),
            output_digest=signing.output_digest(output),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finished_at_unix_ms=finished,
        )
        return nodes_pb2.Result(
            job_id=job_id,
            attempt=attempt,
            output=output,
            finish_reason="length",
            usage=job_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            finished_at_unix_ms=finished,
            signature=signing.sign(self.key, signing.result_bytes(facts)),
        )

    async def _send_outcome(
        self,
        emit: Callable[[nodes_pb2.NodeStreamRequest], Awaitable[None]],
        outcome: nodes_pb2.NodeStreamRequest,
    ) -> None:
        if self.hold_results:
            self.held.append(outcome)
        else:
            await emit(outcome)
            if outcome.WhichOneof("message") == "result":
                self.results.append(outcome.result)


@contextlib.asynccontextmanager
async def running(node: ScriptedNode) -> AsyncIterator[ScriptedNode]:
    """Runs ``node`` until the block ends; waits until it is welcomed."""
    task = asyncio.create_task(node._serve())
    try:
        await asyncio.wait_for(node.connected.wait(), 10)
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task
