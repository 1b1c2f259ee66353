"""What the mesh does with each message a node sends on its stream, and cancels.

The read loop of a node's stream hands every message here and never waits for PostgreSQL
or Redis on the way: Accept and outcomes resolve the attempt that waits for them (its
delivery's task settles it), progress goes to the relay, and a result announced after a
reconnect — no delivery waits for it — is verified and finalised directly.
"""

from __future__ import annotations

import uuid

import structlog

from fleetwire.messaging.events import ChunkEvent
from fleetwire.process.tracing import attached, within_trace
from fleetwire.store.attempts import AttemptStore
from fleetwire.store.jobs import JobStore
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.finalisation import Finaliser, ResultVerdict
from scheduler.offences import Offences
from scheduler.penalties import Offence
from scheduler.progress_relay import ProgressRelay
from scheduler.registry import NodeRegistry, NodeSession

log = structlog.get_logger(__name__)

_ANNOUNCED_OFFENCES = {
    ResultVerdict.BAD_SIGNATURE: Offence.BAD_SIGNATURE,
    ResultVerdict.INVALID: Offence.INVALID_RESULT,
}


class NodeMessages:
    """Demultiplexes node messages; forwards cancels to the nodes running a job."""

    def __init__(
        self,
        store: JobStore,
        attempts: AttemptStore,
        registry: NodeRegistry,
        relay: ProgressRelay,
        finaliser: Finaliser,
        offences: Offences,
    ) -> None:
        self._store = store
        self._attempts = attempts
        self._registry = registry
        self._relay = relay
        self._finaliser = finaliser
        self._offences = offences

    async def on_node_message(
        self, session: NodeSession, message: nodes_pb2.NodeStreamRequest
    ) -> None:
        kind = message.WhichOneof("message")
        if kind == "heartbeat":
            return
        if kind == "draining":
            session.draining = True
            log.info("node draining", node_id=session.node_id)
            return
        if kind == "progress":
            await self._relay_progress(session, message.progress)
            return
        body = getattr(message, kind) if kind else None
        if kind not in ("accept", "reject", "result", "failure") or body is None:
            log.warning("unexpected node message", node_id=session.node_id, kind=kind)
            return
        run = session.run_of(body.job_id, body.attempt)
        if run is None and kind == "result" and (body.job_id, body.attempt) in session.announced:
            await self._finalise_announced(session, message.result)
            return
        if run is None and kind == "result":
            # A result for a job/attempt this session does not run: wrong job, stale
            # attempt or a replay. It changes nothing, and it costs the node.
            log.warning(
                "unexpected result",
                node_id=session.node_id,
                job_id=body.job_id,
                attempt=body.attempt,
            )
            await self._offences.charge(
                session.node_id, Offence.UNEXPECTED_RESULT, _job_uuid(body.job_id), body.attempt
            )
            return
        if run is None:
            log.warning(
                "message for a job this session does not run",
                node_id=session.node_id,
                kind=kind,
                job_id=body.job_id,
                attempt=body.attempt,
            )
            return
        if kind == "accept":
            # RUNNING is recorded by the delivery's task (``_follow``), not here: the read
            # loop never waits for PostgreSQL, so a slow commit cannot hold up the chunks
            # and results of the node's other jobs.
            if not run.accepted.done():
                run.started = True
                run.accepted.set_result(None)
            return
        run.resolve(body)

    async def _relay_progress(self, session: NodeSession, progress: nodes_pb2.Progress) -> None:
        """Hands the chunk to the relay (the read loop does not wait for Redis), unless it
        is more than the job's ``max_tokens`` can produce: then it is refused, and the node
        charged once per attempt."""
        run = session.run_of(progress.job_id, progress.attempt)
        if run is None:
            return
        problem = run.stream.add(progress.sequence, progress.text)
        if problem is not None:
            if run.stream.refused == 1:
                with attached(run.trace):
                    log.warning(
                        "progress refused",
                        node_id=session.node_id,
                        job_id=progress.job_id,
                        problem=problem,
                    )
                await self._offences.charge(
                    session.node_id,
                    Offence.OVERSIZED_PROGRESS,
                    _job_uuid(progress.job_id),
                    progress.attempt,
                )
            return
        self._relay.submit(
            progress.job_id,
            ChunkEvent(
                attempt=progress.attempt,
                sequence=progress.sequence,
                text=progress.text,
                token_count=progress.token_count,
            ),
        )

    async def _finalise_announced(self, session: NodeSession, result: nodes_pb2.Result) -> None:
        """A result the node announced in Hello that no delivery of ours waits for (this
        scheduler restarted while the node ran it). Finalised directly when it is still the
        job's current attempt; the job's redelivered message then finds it final.

        Announcing does not make a job the node's: a result for an attempt that was never
        dispatched to this node (an invented id, another node's job) is rejected and
        penalised. A re-delivery of an attempt it did run changes nothing once the job has
        moved on (an honest node may resend a result whose delivery it could not confirm)."""
        job_id = _job_uuid(result.job_id)
        if job_id is None or not await self._dispatched_to(job_id, result.attempt, session):
            log.warning(
                "announced result for an attempt never dispatched to the node",
                node_id=session.node_id,
                job_id=result.job_id,
                attempt=result.attempt,
            )
            await self._offences.charge(
                session.node_id, Offence.UNEXPECTED_RESULT, job_id, result.attempt
            )
            return
        row = await self._store.get_job(job_id)
        if row is None:
            return
        # No delivery carries the job's context here: its verify and finalise spans join
        # the job's trace (by the row's trace id) under a parent the trace does not hold.
        with attached(within_trace(row["trace_id"] or "")):
            await self._relay.caught_up(result.job_id)
            spec = job_pb2.JobSpec()
            spec.ParseFromString(bytes(row["spec"]))
            verdict = await self._finaliser.finalise(
                session, job_id, bytes(row["request_digest"]), spec, result
            )
            offence = _ANNOUNCED_OFFENCES.get(verdict)
            if offence is not None:
                # The job's redelivered message runs it again elsewhere.
                await self._offences.charge(session.node_id, offence, job_id, result.attempt)
            log.info(
                "announced result",
                job_id=result.job_id,
                attempt=result.attempt,
                node_id=session.node_id,
                verdict=verdict.value,
            )

    async def _dispatched_to(self, job_id: uuid.UUID, attempt: int, session: NodeSession) -> bool:
        """Whether attempt ``attempt`` of the job was dispatched to the session's node."""
        return any(
            a["attempt"] == attempt and a["node_id"] == session.node_id
            for a in await self._attempts.attempts_of(job_id)
        )

    async def cancel_job(self, job_id: str) -> None:
        """Asks the node running ``job_id`` (if it is ours) to abort it."""
        for session in self._registry.sessions:
            for run in session.runs_of_job(job_id):
                with attached(run.trace):
                    log.info("cancelling on node", job_id=job_id, node_id=session.node_id)
                try:
                    await session.send(
                        nodes_pb2.NodeStreamResponse(
                            cancel=nodes_pb2.Cancel(
                                job_id=job_id, attempt=run.attempt, reason="cancelled by client"
                            )
                        )
                    )
                except Exception as err:
                    with attached(run.trace):
                        log.warning("cancel not sent", job_id=job_id, error=str(err))
                run.cancel_requested = True
                run.resolve(
                    nodes_pb2.Failure(job_id=job_id, attempt=run.attempt, reason="CANCELLED")
                )


def _job_uuid(raw: str) -> uuid.UUID | None:
    """A node-supplied job id as a UUID; None when it is not one (it names no job)."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
