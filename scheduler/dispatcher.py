"""From an AMQP delivery to a final job: reserve, dispatch, follow, verify, finalise, ack.

The delivery stays unacked until the job is final in PostgreSQL (or handed back), so a
scheduler that dies at any point leaves the message to be redelivered; the guarded updates
of the store make the redelivery finalise nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

import aiormq.abc
import structlog

from fleetwire import signing
from fleetwire.coalescer import Coalescer
from fleetwire.errors import BackendUnavailable
from fleetwire.events import ChunkEvent, JobEvents, StateEvent
from fleetwire.job_store import JobStore, OpenedAttempt, SignedOutcome
from fleetwire.ledger import Prices
from fleetwire.settings import SchedulerSettings
from fleetwire.states import JobState
from fleetwire.topology import HEADER_REQUEST_ID, HEADER_RETRIES
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.matching import JobNeeds
from scheduler.penalties import POINTS, Offence, PenaltyBox
from scheduler.penalty_store import PenaltyStore
from scheduler.progress_relay import ProgressRelay
from scheduler.registry import (
    DispatchTimedOut,
    JobRun,
    Lost,
    NodeRegistry,
    NodeSession,
    Outcome,
)
from scheduler.settlement import (
    AttemptOutcome,
    Ending,
    RetryPolicy,
    Settlement,
    Step,
    give_up,
    settle,
)

log = structlog.get_logger(__name__)


class Action(Enum):
    """What the consumer does with the AMQP delivery once an attempt is over."""

    ACK = "ack"  # the job is settled (or not ours to run)
    REQUEUE = "requeue"  # back to its queue at once (node lost, no slot): not a failure
    RETRY_STAGE = "retry-stage"  # republish to retry stage ``stage``, then ack
    DEAD_LETTER = "dead-letter"  # park in the dead-letters queue, then ack


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    stage: int = 0
    reason: str = ""


@dataclass
class Reservation:
    """The session holding a reserved slot; it changes when the node reconnects mid-job."""

    session: NodeSession


ACK = Verdict(Action.ACK)
REQUEUE = Verdict(Action.REQUEUE)

_NEXT_STATE = {
    Step.FAIL: JobState.FAILED,
    Step.RETRY_STAGED: JobState.RETRYING,
    Step.REQUEUE: JobState.RETRYING,
    Step.DEAD_LETTER: JobState.DEAD_LETTERED,
}

RELAY_WAIT_S = 5.0
"""How long settling a job waits for its token chunks to reach Redis (a round trip or two
normally; Redis failing is the only way to reach it, and then the job settles anyway)."""


class Dispatcher:
    """Runs each delivered job through one attempt on a connected node."""

    def __init__(
        self,
        settings: SchedulerSettings,
        scheduler_id: str,
        store: JobStore,
        events: JobEvents,
        registry: NodeRegistry,
        penalties: PenaltyBox,
        penalty_store: PenaltyStore,
        relay: ProgressRelay,
    ) -> None:
        self._settings = settings
        self._retry_policy = RetryPolicy(
            max_attempts=settings.max_attempts, stages=len(settings.retry_delays)
        )
        self._scheduler_id = scheduler_id
        self._store = store
        self._events = events
        self._registry = registry
        self._penalties = penalties
        self._penalty_store = penalty_store
        self._relay = relay
        # Deliveries arriving together begin their attempts in one statement.
        self._begin: Coalescer[tuple[uuid.UUID, str], OpenedAttempt | None] = Coalescer(
            lambda items: store.begin_attempts(items, scheduler_id), name="begin-attempts"
        )
        # Results verified together are finalised (and billed) in one statement.
        self._finalisations: Coalescer[tuple[uuid.UUID, SignedOutcome, int], bool] = Coalescer(
            store.finalise_successes, name="finalisations"
        )
        self._prices = Prices(
            per_1k_prompt_tokens=settings.price_per_1k_prompt_tokens,
            per_1k_completion_tokens=settings.price_per_1k_completion_tokens,
        )

    # -- deliveries -------------------------------------------------------------------

    async def handle_delivery(self, route: str, message: aiormq.abc.DeliveredMessage) -> Verdict:
        envelope = job_pb2.Job()
        envelope.ParseFromString(message.body)
        job_id = envelope.job_id
        headers = message.header.properties.headers or {}
        trace_id = str(headers.get(HEADER_REQUEST_ID, ""))
        retries = headers.get(HEADER_RETRIES, 0)
        retries = retries if isinstance(retries, int) else 0
        bound = log.bind(job_id=job_id, trace_id=trace_id, route=route)

        if self._registry.runs_job(job_id):
            # A duplicate of a delivery we are running right now (a double publish, or a
            # redelivery racing the original): the original settles the job.
            bound.info("duplicate delivery of a running job; dropping it")
            return ACK
        expires_at = envelope.expires_at.ToDatetime(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            # Per-message TTL is enforced only at the queue head; check again here.
            await self._end(job_id, JobState.EXPIRED, "TTL_EXPIRED", "TTL ran out while queued")
            return ACK

        needs = JobNeeds.from_spec(envelope.spec)
        session = await self._registry.reserve(
            route, wait=self._settings.defer_delay.total_seconds(), needs=needs
        )
        if session is None:
            if not self._registry.eligible(route, needs):
                why = "; ".join(self._registry.why_not(route, needs)) or "no node"
                bound.info("no eligible node; deferring", why=why)
                await self._store.note_deferral(
                    uuid.UUID(job_id), f"no connected node can run it ({why})"
                )
            else:
                bound.info("no free slot; deferring")
            await asyncio.sleep(self._settings.defer_delay.total_seconds())
            return REQUEUE
        reservation = Reservation(session)
        try:
            return await self._attempt(reservation, envelope, expires_at, trace_id, retries, bound)
        finally:
            await self._registry.release(reservation.session)

    async def _attempt(
        self,
        reservation: Reservation,
        envelope: job_pb2.Job,
        expires_at: datetime,
        trace_id: str,
        retries: int,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Verdict:
        job_id = envelope.job_id
        session = reservation.session
        opened = await self._begin((uuid.UUID(job_id), session.node_id))
        if opened is None:
            bound.info("job is final or unknown; dropping delivery")
            return ACK
        attempt, digest = opened.number, opened.request_digest
        if attempt > self._settings.max_attempts:
            # Attempts that ended without an outcome (a crash in between) count too.
            decision = give_up(attempt, AttemptOutcome.LOST, "no attempt finished")
            return await self._execute(decision, session.node_id, uuid.UUID(job_id), attempt, bound)
        await self._publish_state(job_id, JobState.DISPATCHED)

        run = JobRun(job_id=job_id, attempt=attempt, session=session)
        session.runs[(job_id, attempt)] = run
        try:
            dispatch = nodes_pb2.Dispatch(
                job_id=job_id,
                attempt=attempt,
                spec=envelope.spec,
                request_digest=digest,
                trace_id=trace_id,
            )
            dispatch.deadline.FromDatetime(expires_at)
            await session.send(nodes_pb2.NodeStreamResponse(dispatch=dispatch))
            bound.info("dispatched", node_id=session.node_id, attempt=attempt)
            outcome = await self._follow(run, expires_at)
        except Exception as err:  # the stream broke while sending
            outcome = Lost(f"dispatch failed: {err}")
        finally:
            # After a reconnect the run lives on the node's new session.
            session = run.session or session
            reservation.session = session
            session.runs.pop((job_id, attempt), None)
        await self._chunks_relayed(job_id)
        if outcome is None:
            with contextlib.suppress(Exception):  # best effort: the node may be gone
                await session.send(
                    nodes_pb2.NodeStreamResponse(
                        cancel=nodes_pb2.Cancel(
                            job_id=job_id, attempt=attempt, reason="TTL expired"
                        )
                    )
                )
            decision = settle(
                Ending.DEADLINE_PASSED,
                attempt=attempt,
                stages_passed=retries,
                policy=self._retry_policy,
            )
            return await self._execute(decision, session.node_id, uuid.UUID(job_id), attempt, bound)
        return await self._settle(
            session,
            job_id,
            attempt,
            digest,
            envelope,
            outcome,
            retries,
            bound,
        )

    async def _follow(self, run: JobRun, expires_at: datetime) -> Outcome | None:
        """Waits for Accept (dispatch timeout) and then the outcome (until the job's
        deadline). None when the deadline passed first."""
        try:
            await asyncio.wait_for(
                asyncio.shield(run.accepted), self._settings.dispatch_timeout.total_seconds()
            )
        except TimeoutError:
            return DispatchTimedOut()
        if run.started and not run.outcome.done():
            # A result already in hand makes the job final next: RUNNING would be a write
            # nobody can observe (DISPATCHED -> SUCCEEDED is a legal move).
            await self._mark_running(run)
        remaining = (expires_at - datetime.now(UTC)).total_seconds()
        try:
            return await asyncio.wait_for(asyncio.shield(run.outcome), max(remaining, 0.001))
        except TimeoutError:
            return None

    async def _mark_running(self, run: JobRun) -> None:
        """Records that the node accepted the attempt. Best effort: a job may go from
        DISPATCHED straight to its final state, so a backend hiccup here costs nothing."""
        try:
            await self._store.mark_running(uuid.UUID(run.job_id), run.attempt)
        except BackendUnavailable:
            log.warning("RUNNING not recorded", job_id=run.job_id, attempt=run.attempt)
            return
        except Exception:  # never mistake a running job for a lost one
            log.exception("RUNNING not recorded", job_id=run.job_id, attempt=run.attempt)
            return
        await self._publish_state(run.job_id, JobState.RUNNING)

    async def _settle(
        self,
        session: NodeSession,
        job_id: str,
        attempt: int,
        digest: bytes,
        envelope: job_pb2.Job,
        outcome: Outcome,
        retries: int,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Verdict:
        """Classifies how the attempt ended (verifying and finalising a result on the
        way), lets ``settlement.settle`` decide, and executes the decision."""
        jid = uuid.UUID(job_id)
        reason = message = ""
        if isinstance(outcome, nodes_pb2.Result):
            finalised = await self._finalise(session, jid, digest, envelope.spec.model, outcome)
            if finalised:
                bound.info("job succeeded", node_id=session.node_id, attempt=attempt)
            ending = Ending.BAD_SIGNATURE if finalised is None else Ending.SUCCEEDED
        elif isinstance(outcome, nodes_pb2.Failure):
            reason, message = outcome.reason, outcome.message
            if outcome.reason == "CANCELLED":
                ending = Ending.CANCELLED  # the job was already made CANCELLED by the bridge
            else:
                ending = Ending.FAILED_RETRYABLE if outcome.retryable else Ending.FAILED
        elif isinstance(outcome, nodes_pb2.Reject):
            ending, reason = Ending.REJECTED, outcome.reason
        elif isinstance(outcome, DispatchTimedOut):
            ending = Ending.DISPATCH_TIMEOUT
        else:
            ending = Ending.LEASE_EXPIRED if outcome.lease_expired else Ending.LOST
            reason = outcome.reason
        decision = settle(
            ending,
            attempt=attempt,
            stages_passed=retries,
            policy=self._retry_policy,
            reason=reason,
            message=message,
        )
        if ending is Ending.BAD_SIGNATURE:
            bound.warning("bad result signature; penalising node", node_id=session.node_id)
        elif ending in (Ending.LOST, Ending.LEASE_EXPIRED):
            bound.warning("node lost mid-job; requeueing", node_id=session.node_id, why=reason)
        return await self._execute(decision, session.node_id, jid, attempt, bound)

    async def _execute(
        self,
        decision: Settlement,
        node_id: str,
        job_id: uuid.UUID,
        attempt: int,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Verdict:
        """Carries out a settlement: charges the offence, ends the attempt with the job's
        next state, announces it, and tells the consumer what to do with the delivery. A
        job that moved on meanwhile (cancelled, expired) is only acked."""
        if decision.offence is not None:
            await self.penalise(node_id, decision.offence, job_id, attempt)
        if decision.step is Step.ACK:
            return ACK
        if decision.step is Step.EXPIRE:
            await self._end(str(job_id), JobState.EXPIRED, decision.reason, decision.message)
            return ACK
        state = _NEXT_STATE[decision.step]
        moved = await self._store.end_attempt(
            job_id,
            attempt,
            attempt_outcome=str(decision.attempt_outcome),
            job_state=state,
            reason=decision.reason,
            message=decision.message,
        )
        if not moved:
            return ACK  # the job moved on meanwhile: nothing to retry or record
        await self._publish_state(str(job_id), state)
        if decision.step is Step.FAIL:
            bound.info("job failed", reason=decision.reason)
            return ACK
        if decision.step is Step.DEAD_LETTER:
            bound.warning("job dead-lettered", attempts=attempt, last_error=decision.last_error)
            return Verdict(Action.DEAD_LETTER, reason=decision.last_error)
        if decision.step is Step.REQUEUE:
            return REQUEUE
        bound.info("retrying after a delay", stage=decision.stage + 1, reason=decision.reason)
        return Verdict(Action.RETRY_STAGE, stage=decision.stage, reason=decision.reason)

    async def _finalise(
        self,
        session: NodeSession,
        job_id: uuid.UUID,
        digest: bytes,
        model: str,
        result: nodes_pb2.Result,
    ) -> bool | None:
        """Verifies ``result`` against the node's key and the job's request digest and, if
        it holds, makes the job SUCCEEDED. None: the signature does not verify; False: it
        does, but the job had moved on (a duplicate or a superseded attempt)."""
        facts = signing.ResultFacts(
            job_id=str(job_id),
            attempt=result.attempt,
            node_id=session.node_id,
            model=model,
            request_digest=digest,
            output_digest=signing.output_digest(result.output),
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            finished_at_unix_ms=result.finished_at_unix_ms,
        )
        if not signing.verify(session.public_key, signing.result_bytes(facts), result.signature):
            return None
        timings = result.timings
        usage = result.usage
        amount = self._prices.cost(usage.prompt_tokens, usage.completion_tokens)
        outcome = SignedOutcome(
            attempt=result.attempt,
            node_id=session.node_id,
            output=result.output,
            finish_reason=result.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            timings={
                "queue_ms": timings.queue_ms,
                "time_to_first_token_ms": timings.time_to_first_token_ms,
                "total_ms": timings.total_ms,
                "tokens_per_second": timings.tokens_per_second,
            },
            signature=bytes(result.signature),
            public_key=session.public_key,
            key_id=session.key_id,
            finished_at_ms=result.finished_at_unix_ms,
        )
        finalised = await self._finalisations((job_id, outcome, amount))
        if finalised:
            await self._publish_state(str(job_id), JobState.SUCCEEDED)
            if timings.time_to_first_token_ms:
                session.recent_ttft_ms.append(timings.time_to_first_token_ms)
        return finalised

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
            await self.penalise(session.node_id, Offence.UNEXPECTED_RESULT, job_id, result.attempt)
            return
        row = await self._store.get_job(job_id)
        if row is None:
            return
        await self._chunks_relayed(result.job_id)
        spec = job_pb2.JobSpec()
        spec.ParseFromString(bytes(row["spec"]))
        finalised = await self._finalise(
            session, job_id, bytes(row["request_digest"]), spec.model, result
        )
        if finalised is None:
            await self.penalise(session.node_id, Offence.BAD_SIGNATURE, job_id, result.attempt)
        log.info(
            "announced result",
            job_id=result.job_id,
            attempt=result.attempt,
            node_id=session.node_id,
            finalised=bool(finalised),
        )

    async def _dispatched_to(self, job_id: uuid.UUID, attempt: int, session: NodeSession) -> bool:
        """Whether attempt ``attempt`` of the job was dispatched to the session's node."""
        return any(
            a["attempt"] == attempt and a["node_id"] == session.node_id
            for a in await self._store.attempts_of(job_id)
        )

    async def _end(self, job_id: str, state: JobState, reason: str, message: str) -> None:
        row = await self._store.end_job(uuid.UUID(job_id), state, reason=reason, message=message)
        if row is not None and row["state"] == state:
            await self._publish_state(job_id, state)

    async def _publish_state(self, job_id: str, state: JobState) -> None:
        """Queues the (committed) state change for the job's event stream; the relay
        writes it in a batch with others."""
        self._relay.submit(job_id, StateEvent(state))

    # -- node messages ----------------------------------------------------------------

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
            self._relay_progress(session, message.progress)
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
            await self.penalise(
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

    def _relay_progress(self, session: NodeSession, progress: nodes_pb2.Progress) -> None:
        """Hands the chunk to the relay; the read loop does not wait for Redis."""
        if session.run_of(progress.job_id, progress.attempt) is None:
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

    async def _chunks_relayed(self, job_id: str) -> None:
        """Waits until the chunks its node sent so far are in the job's stream, so that any
        state published next (above all the final one) comes after them."""
        if not await self._relay.flushed(RELAY_WAIT_S):
            log.warning("settling a job before its token chunks reached redis", job_id=job_id)

    async def penalise(
        self, node_id: str, offence: Offence, job_id: uuid.UUID | None, attempt: int | None
    ) -> None:
        """Adds the offence to the node's standing and records it; past the threshold the
        node gets no work for the cooldown."""
        excluded = self._penalties.penalise(node_id, offence)
        until = datetime.now(UTC) + self._settings.penalty_cooldown if excluded else None
        if excluded:
            log.warning("node excluded", node_id=node_id, offence=offence.value, until=until)
        try:
            await self._penalty_store.record(
                node_id=node_id,
                offence=offence.value,
                points=POINTS[offence],
                job_id=job_id,
                attempt=attempt,
                excluded_until=until,
                scheduler_id=self._scheduler_id,
            )
        except BackendUnavailable:
            log.warning("penalty not recorded", node_id=node_id, offence=offence.value)

    async def cancel_job(self, job_id: str) -> None:
        """Asks the node running ``job_id`` (if it is ours) to abort it."""
        for session in self._registry.sessions:
            for run in session.runs_of_job(job_id):
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
                    log.warning("cancel not sent", job_id=job_id, error=str(err))
                run.resolve(
                    nodes_pb2.Failure(job_id=job_id, attempt=run.attempt, reason="CANCELLED")
                )


def _job_uuid(raw: str) -> uuid.UUID | None:
    """A node-supplied job id as a UUID; None when it is not one (it names no job)."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
