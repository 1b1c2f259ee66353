"""NodeService: the handshake that proves a node's key, then the stream's read loop.

Order on every stream: a free connection slot for the peer's address
(``peer_limits``) → Hello → Challenge → Auth (signature over the challenge) → Welcome.
Only then is the node registered and able to receive work. After Welcome, silence longer
than the lease ends the session; its jobs go back to the queue.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from typing import Any, NoReturn, TypeAlias

import grpc
import structlog

from fleetwire.domain.errors import (
    DeadlineExceeded,
    FieldViolation,
    FleetwireError,
    InvalidArgument,
    NodeExcluded,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from fleetwire.domain.validation import NODE_ID
from fleetwire.messaging.topology import SUBCLOUD_NAME, Topology
from fleetwire.process.settings import SchedulerSettings
from fleetwire.protocol import signing
from fleetwire.rpc.status import abort_with
from fleetwire.rpc.stream_writer import StreamWriter
from fleetwire.rpc.tls import name_matches
from fleetwire.store.nodes import NodeStore
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from fleetwire.v1 import node_service_pb2_grpc
from scheduler.matching import NodeProfile
from scheduler.node_claims import ClaimLimits, admitted_profile, check_hello, session_slots
from scheduler.peer_limits import PeerConnections, peer_address
from scheduler.presence import NodePresence
from scheduler.registry import NodeRegistry, NodeSession

log = structlog.get_logger(__name__)

Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpcio ships no type stubs
HANDSHAKE_TIMEOUT = 10.0
PEER_FULL_RETRY = timedelta(seconds=5)

MessageHandler = Callable[[NodeSession, nodes_pb2.NodeStreamRequest], Awaitable[None]]


class NodeService(node_service_pb2_grpc.NodeServiceServicer):
    """Authenticates nodes and pumps their messages into ``on_message``."""

    def __init__(
        self,
        settings: SchedulerSettings,
        scheduler_id: str,
        store: NodeStore,
        registry: NodeRegistry,
        topology: Topology,
        on_message: MessageHandler,
        presence: NodePresence,
        server_names: Callable[[], frozenset[str]],
        mesh_models: Collection[str],
        excluded_for: Callable[[str], float] = lambda _node_id: 0.0,
    ) -> None:
        """``server_names`` gives the names of the certificate this scheduler presents now
        ({""} in plaintext): the only names a node's handshake may be signed for."""
        self._settings = settings
        self._excluded_for = excluded_for
        self._server_names = server_names
        self._mesh_models = frozenset(mesh_models)
        self._limits = ClaimLimits(
            max_hello_bytes=settings.max_hello_bytes,
            max_models=settings.max_node_models,
            max_subclouds=settings.max_node_subclouds,
            max_slots=settings.max_node_slots,
        )
        self._scheduler_id = scheduler_id
        self._store = store
        self._registry = registry
        self._topology = topology
        self._on_message = on_message
        self._presence = presence
        self.peers = PeerConnections(settings.max_connections_per_peer)

    async def NodeStream(  # noqa: N802 - gRPC method name
        self, request_iterator: Any, context: Context
    ) -> None:
        """Refuses a stream from one connection too many for its peer's address first,
        before reading anything; then the handshake and the session."""
        peer = context.peer()
        hold = self.peers.admit(peer)
        if hold is None:
            address = peer_address(peer)
            err = ResourceExhausted(
                f"too many connections from {address} (at most {self.peers.limit} "
                "with a node stream each); try again later",
                retry_delay=PEER_FULL_RETRY,
                reason="TOO_MANY_CONNECTIONS",
                quota_subject=f"peer:{address}",
            )
            log.warning("node stream refused", reason=err.reason, peer=peer)
            await abort_with(context, err)
            return
        stream_task = asyncio.current_task()
        if stream_task is not None:  # the call's task may end without the finally below
            stream_task.add_done_callback(lambda _task: hold.release())
        try:
            await self._serve(context)
        finally:
            hold.release()

    async def _serve(self, context: Context) -> None:
        try:
            session = await self._handshake(context)
        except FleetwireError as err:
            log.warning("node refused", reason=err.reason, error=err.message, peer=context.peer())
            await abort_with(context, err)
            return
        previous = self._registry.get(session.node_id)
        if previous is not None:
            await self._registry.remove(previous, "replaced by a new session")
            if previous.close is not None:
                previous.close()  # its stream, maybe half-open, must not linger
        self._registry.add(session)
        stream_task = asyncio.current_task()
        if stream_task is not None:
            session.close = stream_task.cancel  # e.g. when its key is revoked (key_watch)
            # grpc may end the call's task without running the ``finally`` below (a call
            # cancelled by the client while a write raced it): the session goes anyway.
            stream_task.add_done_callback(
                lambda _task: self._registry.discard(session, "the stream's call ended")
            )
        await self._presence.announce(session)
        log.info(
            "node connected",
            node_id=session.node_id,
            slots=session.slots,
            routes=sorted(session.routes),
            session=session.session_id,
        )
        reason, lease_expired = "stream ended", False
        try:
            reason, lease_expired = await self._read_loop(session, context)
        except FleetwireError as err:  # e.g. an undecodable message; the edge ends the call
            reason = f"refused: {err.message}"
            raise
        finally:
            await self._registry.remove(session, reason, lease_expired=lease_expired)
            await self._presence.forget(session)
            log.info("node disconnected", node_id=session.node_id, reason=reason)

    async def _read(self, context: Context, within: float) -> nodes_pb2.NodeStreamRequest | None:
        async with asyncio.timeout(within):
            message = await context.read()
        if message is grpc.aio.EOF:
            return None
        if not isinstance(message, nodes_pb2.NodeStreamRequest):  # the deserializer's type
            raise TypeError(f"unexpected message on the node stream: {type(message).__name__}")
        return message

    async def _handshake_read(self, context: Context) -> nodes_pb2.NodeStreamRequest | None:
        """A handshake message; a node that sends nothing in time is refused quietly."""
        try:
            return await self._read(context, HANDSHAKE_TIMEOUT)
        except TimeoutError:
            # DEADLINE_EXCEEDED, not a refusal: a slow node is told to try again.
            raise DeadlineExceeded(
                f"the handshake did not finish within {HANDSHAKE_TIMEOUT:g} s",
                reason="HANDSHAKE_TIMEOUT",
            ) from None

    async def _handshake(self, context: Context) -> NodeSession:
        first = await self._handshake_read(context)
        if first is None or first.WhichOneof("message") != "hello":
            raise Unauthenticated("the first message must be Hello")
        hello = first.hello
        if not NODE_ID.match(hello.node_id):
            raise Unauthenticated("node_id must be 1-64 characters of [a-z0-9-]")
        if not signing.acceptable_public_key(hello.public_key):
            raise Unauthenticated(
                "public_key must be a raw 32-byte ed25519 key: a canonical point not of "
                "small order",
                reason="WEAK_KEY",
            )
        _check_subclouds(hello)
        check_hello(hello, self._limits)
        public_key = bytes(hello.public_key)

        # Nothing is read or written for the node before it proves its key.
        nonce = secrets.token_bytes(32)
        await context.write(
            nodes_pb2.NodeStreamResponse(
                challenge=nodes_pb2.Challenge(nonce=nonce, scheduler_id=self._scheduler_id)
            )
        )
        answer = await self._handshake_read(context)
        if answer is None or answer.WhichOneof("message") != "auth":
            raise Unauthenticated("Challenge must be answered with Auth")
        server_name = answer.auth.server_name
        if not name_matches(server_name, self._server_names()):
            # The node verified another server's certificate: a relay passed our challenge.
            raise Unauthenticated(
                f"the node answered a challenge for server {server_name or '(plaintext)'!r}, "
                "which is not this scheduler",
                reason="SERVER_NAME_MISMATCH",
            )
        signed = signing.node_auth_bytes(
            nonce, self._scheduler_id, hello.node_id, public_key, server_name
        )
        if not signing.verify(public_key, signed, answer.auth.signature):
            raise Unauthenticated("challenge signature does not verify")
        await self._check_registration(hello, public_key)
        excluded_for = self._excluded_for(hello.node_id)
        if excluded_for > 0:
            raise NodeExcluded(
                f"node {hello.node_id} is excluded for its offences for another "
                f"{excluded_for:.0f} s",
                retry_delay=timedelta(seconds=excluded_for),
            )
        trusted = self._settings.trust_node_claims
        subclouds = None if trusted else await self._store.granted_subclouds(hello.node_id)
        networks = None if trusted else await self._store.granted_networks(hello.node_id)
        profile = admitted_profile(
            NodeProfile.from_hello(hello), self._mesh_models, subclouds, networks
        )

        session_id = uuid.uuid4().hex
        stream_task = asyncio.current_task()

        async def write(message: nodes_pb2.NodeStreamResponse) -> None:
            try:
                await context.write(message)
            except Exception as err:
                # A stream that cannot take a write is over, whatever its reads say (a
                # finished call can leave a read pending): end the session at once, so
                # no further dispatch goes to it, rather than after its lease.
                log.warning(
                    "write to node stream failed; ending its session",
                    node_id=hello.node_id,
                    error=str(err) or type(err).__name__,
                )
                if stream_task is not None and stream_task is not asyncio.current_task():
                    stream_task.cancel()
                raise

        writer: StreamWriter[nodes_pb2.NodeStreamResponse] = StreamWriter(
            write, name=f"node-writes-{hello.node_id}"
        )
        welcome = nodes_pb2.Welcome(session_id=session_id, takes_batches=True)
        welcome.heartbeat_interval.FromTimedelta(self._settings.heartbeat_interval)
        welcome.lease.FromTimedelta(self._settings.lease)
        await writer.send(nodes_pb2.NodeStreamResponse(welcome=welcome))
        if hello.takes_batches:
            writer.batch_with(_response_batch)
        send = writer.send
        return NodeSession(
            node_id=hello.node_id,
            public_key=public_key,
            key_id=signing.key_id(public_key),
            session_id=session_id,
            routes=self._routes_of(profile),
            profile=profile,
            slots=session_slots(hello),
            send=send,
            announced=frozenset((ref.job_id, ref.attempt) for ref in hello.running_jobs),
        )

    async def _check_registration(self, hello: nodes_pb2.Hello, public_key: bytes) -> None:
        """Admits a node that proved ``public_key``: registered and not revoked, or (dev
        profile) registered now; an unknown one waits as a request for an operator."""
        node_id = hello.node_id
        registered = await self._store.node_key(node_id)
        if registered is None:
            if not self._settings.auto_register_nodes:
                await self._request_admission(hello, public_key)
            if not await self._store.register_node(node_id, public_key, signing.key_id(public_key)):
                raise PermissionDenied(
                    f"node {node_id} is registered with another key", reason="KEY_MISMATCH"
                )
            log.info("node registered on first use", node_id=node_id)
            return
        key, revoked = registered
        if revoked:
            raise PermissionDenied(f"node {node_id}'s key is revoked", reason="KEY_REVOKED")
        if key != public_key:
            raise PermissionDenied(
                f"node {node_id} is registered with another key", reason="KEY_MISMATCH"
            )
        await self._store.touch_node(node_id)

    async def _request_admission(self, hello: nodes_pb2.Hello, public_key: bytes) -> NoReturn:
        """Records the proven request of an unknown node (bounded) and refuses it until an
        operator approves it; the node keeps asking."""
        kid = signing.key_id(public_key)
        recorded = await self._store.request_admission(
            hello.node_id,
            public_key,
            region=hello.region,
            models=",".join(m.name for m in hello.models),
            max_pending=self._settings.max_pending_nodes,
            ttl=self._settings.pending_node_ttl,
        )
        if not recorded:
            raise PermissionDenied(
                "too many nodes wait for admission; try again later", reason="ADMISSION_FULL"
            )
        log.info("node awaits approval", node_id=hello.node_id, key_id=kid)
        raise PermissionDenied(
            f"node {hello.node_id} (key {kid}) awaits an operator's approval: "
            f"fleetwire admin nodes approve {hello.node_id} --key-id {kid}",
            reason="NODE_PENDING",
        )

    def _routes_of(self, profile: NodeProfile) -> frozenset[str]:
        """The queues the node's jobs arrive on: public routes for a public node, its
        subclouds' routes for a node reserved to subclouds."""
        pools = sorted(profile.subclouds) or [""]
        return frozenset(
            self._topology.route_key(network, model, pool)
            for network in profile.networks
            for model in profile.models
            for pool in pools
        )

    async def _read_loop(self, session: NodeSession, context: Context) -> tuple[str, bool]:
        """Reads until the stream ends; returns why, and whether the lease ran out."""
        lease = self._settings.lease.total_seconds()
        while True:
            try:
                message = await self._read(context, lease)
            except TimeoutError:
                return f"silent for longer than its lease ({timedelta(seconds=lease)})", True
            except grpc.RpcError:
                return "stream broken", False
            if message is None:
                return "node closed the stream", False
            session.last_seen = time.monotonic()
            if message.WhichOneof("message") == "batch":
                for inner in message.batch.messages:
                    await self._handle(session, inner)
            else:
                await self._handle(session, message)

    async def _handle(self, session: NodeSession, message: nodes_pb2.NodeStreamRequest) -> None:
        kind = message.WhichOneof("message")
        if kind == "batch":  # batches are not nested (NodeStreamRequest.batch)
            log.warning("nested batch from node ignored", node_id=session.node_id)
            return
        if kind == "heartbeat":
            await self._presence.heartbeat(
                session, message.heartbeat.free_slots, message.heartbeat.running_jobs
            )
        try:
            await self._on_message(session, message)
        except Exception:
            # A backing service hiccup (e.g. PostgreSQL restarting) must not cut the
            # node off: the message's effect is retried by the job's own path.
            log.exception("node message not handled", node_id=session.node_id)


def _response_batch(
    messages: Sequence[nodes_pb2.NodeStreamResponse],
) -> nodes_pb2.NodeStreamResponse:
    return nodes_pb2.NodeStreamResponse(batch=nodes_pb2.NodeStreamResponseBatch(messages=messages))


def _check_subclouds(hello: nodes_pb2.Hello) -> None:
    """Subclouds are routing-key words (``SUBCLOUD_NAME``); a name the mesh cannot keep apart
    from another ("a.b" and "a_b") is refused, never merged into someone else's queue."""
    bad = [
        FieldViolation(f"hello.subclouds[{i}]", f"must match {SUBCLOUD_NAME.pattern}")
        for i, name in enumerate(hello.subclouds)
        if not SUBCLOUD_NAME.fullmatch(name)
    ]
    if bad:
        raise InvalidArgument(bad)
